//! The shipped training questions (`data/*/train*.jsonl`, issue 16 item 6): every record parses
//! with the readers `synth` uses, none shares an id or a normalized question with a record of any
//! held-out question file under `data/` (the dev sets, from which the evaluation and long
//! evaluation files are built, and any test file) or with another training record, `synth` turns
//! every one of them into a training question, and together they hold at least 1,000 questions.
//! `scripts/train-data.py check` runs the same checks without a build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sealong::data::jsonl;
use sealong::data::records::{read_longbench, read_multihop, read_musique};
use sealong_tests::{repo_root, sealong, smollm_path};
use serde_json::Value;

/// The total the issue asks for ("the paper shows about 1K is enough").
const MIN_TRAINING_QUESTIONS: usize = 1000;

/// Lowercase; every character that is not a letter or a digit becomes a space; whitespace
/// collapsed. Case, punctuation and spacing variants of one question are the same question.
fn normalize(question: &str) -> String {
    let mapped: String = question
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A question record as the overlap check sees it.
struct Question {
    /// `file:line`, for messages.
    at: String,
    id: String,
    question: String,
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo_root()).unwrap_or(path).display().to_string()
}

/// Every JSONL file under `data/` (one level of dataset directories).
fn data_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dirs = std::fs::read_dir(repo_root().join("data")).expect("data/");
    for dir in dirs.map(|e| e.expect("entry").path()).filter(|p| p.is_dir()) {
        for f in std::fs::read_dir(&dir).expect("dataset dir") {
            let p = f.expect("entry").path();
            if p.extension().is_some_and(|e| e == "jsonl") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_training_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("train"))
}

/// The question records of a file: `question` (dataset records) or `input` (LongBench-style
/// files); files without questions (paragraph pools) give none.
fn questions_of(path: &Path) -> Vec<Question> {
    let lines: Vec<jsonl::Line<Value>> =
        jsonl::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let question_of = |v: &Value| {
        v.get("question")
            .or_else(|| v.get("input"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if lines.first().is_none_or(|l| question_of(&l.value).is_none()) {
        return Vec::new();
    }
    lines
        .iter()
        .map(|l| {
            let at = format!("{}:{}", rel(path), l.line);
            let id = jsonl::id_string(&l.value, "id")
                .or_else(|| jsonl::id_string(&l.value, "_id"))
                // GSM8K's records have no id (eval numbers them by line): the place stands in.
                .unwrap_or_else(|| at.clone());
            let question = question_of(&l.value).unwrap_or_else(|| panic!("{at}: record has no question"));
            Question { at, id, question }
        })
        .collect()
}

/// The training files, each with its record count after parsing with the reader `synth` picks
/// for it (MuSiQue when the records have `paragraphs`, else HotpotQA / 2Wiki).
fn training_files() -> Vec<(PathBuf, usize)> {
    data_files()
        .into_iter()
        .filter(|p| is_training_file(p))
        .map(|p| {
            let first = std::fs::read_to_string(&p).expect("read");
            let is_musique = first.lines().next().is_some_and(|l| l.contains("\"paragraphs\""));
            let n = if is_musique {
                let recs = read_musique(&p).unwrap_or_else(|e| panic!("{e}"));
                for l in &recs {
                    assert!(
                        l.value.answerable,
                        "{}:{}: unanswerable MuSiQue record",
                        rel(&p),
                        l.line
                    );
                    assert!(
                        l.value.paragraphs.iter().any(|x| x.is_supporting),
                        "{}:{}: no supporting paragraph",
                        rel(&p),
                        l.line
                    );
                }
                recs.len()
            } else {
                let recs = read_multihop(&p).unwrap_or_else(|e| panic!("{e}"));
                for l in &recs {
                    assert!(
                        !l.value.supporting_facts.is_empty(),
                        "{}:{}: no supporting facts",
                        rel(&p),
                        l.line
                    );
                }
                recs.len()
            };
            (p, n)
        })
        .collect()
}

#[test]
fn training_questions_parse_and_share_nothing_with_held_out_files() {
    let train = training_files();
    assert!(
        train.len() >= 3,
        "expected MuSiQue, HotpotQA and 2Wiki training files: {train:?}"
    );
    let held_out: Vec<Question> = data_files()
        .iter()
        .filter(|p| !is_training_file(p))
        .flat_map(|p| questions_of(p))
        .collect();
    // Every dev set is among them (the evaluation files, short and long, are built from these).
    for dev in ["musique/dev.jsonl", "hotpotqa/dev.jsonl", "2wiki/dev.jsonl"] {
        assert!(
            held_out.iter().any(|q| q.at.starts_with(&format!("data/{dev}:"))),
            "{dev} not read"
        );
    }
    let mut ids: HashMap<&str, &str> = HashMap::new();
    let mut texts: HashMap<String, &str> = HashMap::new();
    for q in &held_out {
        ids.entry(&q.id).or_insert(&q.at);
        texts.entry(normalize(&q.question)).or_insert(&q.at);
    }
    let mut problems = Vec::new();
    let mut train_ids: HashMap<String, String> = HashMap::new();
    let mut train_texts: HashMap<String, String> = HashMap::new();
    for (path, n) in &train {
        let qs = questions_of(path);
        assert_eq!(qs.len(), *n, "{}: every record is a question", rel(path));
        for q in qs {
            let norm = normalize(&q.question);
            if let Some(other) = ids.get(q.id.as_str()) {
                problems.push(format!("{}: id {:?} is also in {other}", q.at, q.id));
            }
            if let Some(other) = texts.get(&norm) {
                problems.push(format!("{}: question {:?} is also in {other}", q.at, q.question));
            }
            if let Some(other) = train_ids.insert(q.id.clone(), q.at.clone()) {
                problems.push(format!("{}: id {:?} repeats {other}", q.at, q.id));
            }
            if let Some(other) = train_texts.insert(norm, q.at.clone()) {
                problems.push(format!("{}: question {:?} repeats {other}", q.at, q.question));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn normalization_merges_case_punctuation_and_spacing() {
    assert_eq!(normalize("Who  wrote 'Hamlet'?"), "who wrote hamlet");
    assert_eq!(normalize("who wrote Hamlet"), normalize("Who wrote  Hamlet ?"));
    assert_eq!(normalize("Où est Zoë?"), "où est zoë");
    assert_ne!(normalize("Who wrote Hamlet?"), normalize("Who wrote Macbeth?"));
}

/// `synth` (the run's first stage) turns every training record into a training question: short
/// targets (1-2 x 1024 tokens) keep it quick, the supporting paragraphs are always kept.
#[test]
fn synth_accepts_every_training_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = smollm_path();
    let pool = repo_root().join("data/musique/paragraphs.jsonl");
    for (path, n) in training_files() {
        // One output per training file (`2wiki-train.jsonl`, `2wiki-train-rebuilt.jsonl`): synth
        // resumes an existing output, so two files of one dataset must not share a name.
        let out = dir.path().join(format!(
            "{}-{}.jsonl",
            path.parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str())
                .expect("dir"),
            path.file_stem().and_then(|s| s.to_str()).expect("stem")
        ));
        sealong(&[
            "synth",
            "--input",
            path.to_str().expect("utf8"),
            "--pool",
            pool.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
            "--model",
            model.to_str().expect("utf8"),
            "--min-k",
            "1",
            "--max-k",
            "2",
            "--allow-short",
        ])
        .unwrap_or_else(|e| panic!("synth {}: {e:#}", rel(&path)));
        let recs = read_longbench(&out).expect("read back");
        assert_eq!(recs.len(), n, "{}: one training question per record", rel(&path));
        assert!(
            recs.iter()
                .all(|l| !l.value.supporting_passages.is_empty() && !l.value.answers.is_empty()),
            "{}: every question keeps its supporting passages and answer",
            rel(&path)
        );
    }
}

/// At least 1,000 training questions in total (data/PROVENANCE.md says how many and where they
/// came from).
#[test]
fn at_least_a_thousand_training_questions() {
    let train = training_files();
    let total: usize = train.iter().map(|(_, n)| n).sum();
    assert!(
        total >= MIN_TRAINING_QUESTIONS,
        "{total} training questions in {:?}; at least {MIN_TRAINING_QUESTIONS} are required",
        train
            .iter()
            .map(|(p, n)| format!("{}: {n}", rel(p)))
            .collect::<Vec<_>>()
    );
}
