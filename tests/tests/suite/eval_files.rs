//! Evaluation files as users have them (`sealong::data::evalfiles`): L-Eval, LongBench-v2
//! multiple choice (JSONL and its JSON-array `data.json`) and GSM8K read from fixtures in their
//! exact schemas (tests/golden/evalfiles/, see PROVENANCE.md there) and the shipped GSM8K
//! questions; every bad input names the file, the line (or record) and the field; prompts of
//! every format fit the model's window or are cut in the middle; `sealong eval` scores each
//! format with its metric end to end; `synth --eval --supporting-only` builds the short task; a
//! run config's short-context keys are checked.

use std::path::{Path, PathBuf};

use sealong::data::evalfiles::{self, AnswerKind, EvalFormat, EvalQuestion, Place};
use sealong::eval::{Metric, numeric};
use sealong::loading::{ModelPath, TextAssets};
use sealong::text::Strategy;
use sealong_tests::{data_file, golden_dir, repo_root, sealong, smollm_path};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    golden_dir().join("evalfiles").join(name)
}

fn questions(path: &Path) -> (EvalFormat, Vec<(Place, EvalQuestion)>) {
    evalfiles::read(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_readers_read_the_fixtures_and_the_shipped_gsm8k() {
    // L-Eval: one question per (instruction, output) pair, over the record's `input`.
    let (f, qs) = questions(&fixture("leval_synthetic.jsonl"));
    assert_eq!(f, EvalFormat::LEval);
    let got: Vec<(String, &str, AnswerKind)> = qs
        .iter()
        .map(|(p, q)| (format!("{p:?} {}", q.id), q.answers[0].as_str(), q.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("Line(1) 1.0".to_string(), "False", AnswerKind::Text),
            ("Line(1) 1.1".to_string(), "True", AnswerKind::Text),
            ("Line(1) 1.2".to_string(), "a silver medal", AnswerKind::Text),
            ("Line(2) 2.0".to_string(), "B", AnswerKind::Choice),
            (
                "Line(2) 2.1".to_string(),
                "(C) He became the station master.",
                AnswerKind::Text
            ),
        ]
    );
    assert!(qs[0].1.context.starts_with("The lighthouse keeper") && qs[3].1.context.starts_with("Chapter 1."));
    assert!(qs[3].1.question.contains("(B) The miners"));

    // LongBench-v2: the JSONL and the JSON array hold the same two questions.
    let (f, lines) = questions(&fixture("longbench_v2_synthetic.jsonl"));
    assert_eq!(f, EvalFormat::LongBenchV2);
    let (f2, array) = questions(&fixture("data.json"));
    assert_eq!(f2, EvalFormat::LongBenchV2);
    assert_eq!(
        lines.iter().map(|(_, q)| q).collect::<Vec<_>>(),
        array.iter().map(|(_, q)| q).collect::<Vec<_>>()
    );
    assert_eq!((lines[1].0, array[1].0), (Place::Line(2), Place::Record(2)));
    let q = &lines[0].1;
    assert_eq!(q.id, "66f36490821e116aacb2cc22");
    assert_eq!(q.choices.len(), 4);
    assert_eq!(q.choices[1], "The schooner Halcyon");
    assert_eq!(
        (q.answers.as_slice(), q.kind),
        (&["B".to_string()][..], AnswerKind::Choice)
    );

    // GSM8K as it comes: 500 questions, ids are lines, the gold is the number after `####`.
    let (f, qs) = questions(&data_file("gsm8k/test.jsonl"));
    assert_eq!(f, EvalFormat::Gsm8k);
    assert_eq!(qs.len(), 500);
    assert_eq!(qs[0].1.id, "1");
    assert!(qs[0].1.question.starts_with("Janet\u{2019}s ducks lay 16 eggs"));
    assert_eq!(qs[0].1.answers, ["18"]);
    assert!(
        qs.iter()
            .all(|(_, q)| q.kind == AnswerKind::Number && q.context.is_empty())
    );
    // Every reference solution, read as a model's output, scores correct against its own
    // final answer (its last number is N), and against no other question's different answer.
    let text = std::fs::read_to_string(data_file("gsm8k/test.jsonl")).expect("gsm8k");
    for (line, (_, q)) in text.lines().zip(&qs) {
        let solution: Value = serde_json::from_str(line).expect("json");
        let solution = solution["answer"].as_str().expect("answer");
        assert!(numeric::correct(solution, &q.answers[0]), "{solution}");
        assert!(Metric::Numeric.score(solution, &q.answers));
    }
    let (a, b) = (&qs[0].1, &qs[1].1);
    assert_ne!(a.answers, b.answers);
    assert!(!numeric::correct(&format!("#### {}", a.answers[0]), &b.answers[0]));
}

/// The error of reading `bytes` as a file named `name` (format detected unless given).
fn read_err(name: &str, bytes: &str, format: Option<EvalFormat>) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    let e = evalfiles::read(&p, format)
        .expect_err("bad input must fail")
        .to_string();
    e.replace(&dir.path().display().to_string(), "DIR")
}

#[test]
fn bad_files_name_the_file_the_line_and_the_field() {
    let v2 = r#"{"_id":"a","question":"q","choice_A":"1","choice_B":"2","choice_C":"3","choice_D":"4","answer":"B","context":"c"}"#;
    let cases: Vec<(&str, String, Option<EvalFormat>, &str)> = vec![
        // L-Eval
        (
            "l.jsonl",
            "{\"instructions\":[\"q\"],\"outputs\":[\"a\"],\"input\":\"d\"}\n{\"instructions\":[\"q\"],\"input\":\"d\"}\n".into(),
            Some(EvalFormat::LEval),
            "DIR/l.jsonl:2: missing field `outputs`",
        ),
        (
            "l.jsonl",
            "{\"instructions\":[\"q\",\"r\"],\"outputs\":[\"a\"],\"input\":\"d\"}\n".into(),
            None,
            "DIR/l.jsonl:1: 2 `instructions` but 1 `outputs`",
        ),
        (
            "l.jsonl",
            "{\"instructions\":[],\"outputs\":[],\"input\":\"d\"}\n".into(),
            None,
            "DIR/l.jsonl:1: field `instructions` is empty",
        ),
        (
            "l.jsonl",
            "{\"instructions\":[\"q\"],\"outputs\":[\" \"],\"input\":\"d\"}\n".into(),
            None,
            "DIR/l.jsonl:1: `outputs[0]` is empty",
        ),
        (
            "l.jsonl",
            "{\"instructions\":[\"q\"],\"outputs\":[\"a\"],\"input\":7}\n".into(),
            None,
            "DIR/l.jsonl:1: invalid type: integer `7`, expected a string",
        ),
        // LongBench-v2
        (
            "v.jsonl",
            format!("{v2}\n{}\n", v2.replace(r#""answer":"B""#, r#""answer":"E""#)),
            None,
            "DIR/v.jsonl:2: field `answer` is \"E\"",
        ),
        (
            "v.jsonl",
            format!("{v2}\n\n{}\n", v2.replace(r#""choice_C":"3","#, "")),
            None,
            "DIR/v.jsonl:3: missing field `choice_C`",
        ),
        (
            "data.json",
            format!("[{v2}, {}]", v2.replace(r#","context":"c""#, "")),
            None,
            "DIR/data.json: record 2: missing field `context`",
        ),
        ("data.json", format!("[{v2}, 5]"), None, "DIR/data.json: record 2: expected a JSON object"),
        ("data.json", format!("[{v2}"), None, "DIR/data.json: not a JSON array of records"),
        // GSM8K
        (
            "g.jsonl",
            "{\"question\":\"q\",\"answer\":\"#### 4\"}\n{\"question\":\"q\",\"answer\":\"four\"}\n".into(),
            None,
            "DIR/g.jsonl:2: field `answer` does not end in `#### N`",
        ),
        (
            "g.jsonl",
            "{\"question\":\"q\",\"answer\":\"#### 4\"}\n{\"answer\":\"#### 4\"}\n".into(),
            None,
            "DIR/g.jsonl:2: missing field `question`",
        ),
        // LongBench
        (
            "b.jsonl",
            "{\"_id\":\"a\",\"input\":\"q\",\"context\":\"c\",\"answers\":[]}\n".into(),
            None,
            "DIR/b.jsonl:1: field `answers` is empty",
        ),
        // Detection, and a format named that the file is not.
        ("x.jsonl", "{\"text\":\"hello\"}\n".into(), None, "DIR/x.jsonl:1: cannot tell the evaluation format"),
        ("x.jsonl", "\n\n".into(), None, "DIR/x.jsonl: the file has no records"),
        (
            "x.jsonl",
            "{\"_id\":\"a\",\"input\":\"q\",\"context\":\"c\",\"answers\":[\"x\"]}\n".into(),
            Some(EvalFormat::Gsm8k),
            "DIR/x.jsonl:1: missing field `question`",
        ),
        ("x.jsonl", "{\"question\": \"q\", \"answer\n".into(), None, "DIR/x.jsonl:1: malformed JSON"),
    ];
    for (name, bytes, format, want) in cases {
        let e = read_err(name, &bytes, format);
        assert!(e.starts_with(want), "want {want:?}\n got {e:?}");
    }
}

#[test]
fn eval_refuses_bad_files_before_loading_a_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\":\"q\",\"answer\":\"#### 4\"}\n{\"question\":\"q\"}\n",
    )
    .expect("write");
    let out = dir.path().join("eval");
    let s = |p: &Path| p.display().to_string();
    let e = sealong(&["eval", "--model", "no-such-model", "-i", &s(&bad), "--out", &s(&out)])
        .expect_err("a bad file is refused");
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&format!("{}:2: missing field `answer`", bad.display())),
        "{msg}"
    );
    // An L-Eval output that SubEM would match everywhere.
    let leval = dir.path().join("leval.jsonl");
    std::fs::write(
        &leval,
        "{\"instructions\":[\"q\"],\"outputs\":[\"!!!\"],\"input\":\"d\"}\n",
    )
    .expect("write");
    let e = sealong(&["eval", "-i", &s(&leval), "--out", &s(&out)]).expect_err("refused");
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&format!("{}:1: question 1.0", leval.display())) && msg.contains("every answer would match"),
        "{msg}"
    );
    // --format names the schema; a mismatch is an error naming the missing field.
    let e = sealong(&[
        "eval",
        "--format",
        "leval",
        "-i",
        &s(&data_file("gsm8k/test.jsonl")),
        "--out",
        &s(&out),
    ])
    .expect_err("refused");
    assert!(
        format!("{e:#}").contains("test.jsonl:1: missing field `instructions`"),
        "{e:#}"
    );
}

#[test]
fn every_formats_prompt_fits_the_window_or_is_cut_in_the_middle() {
    let assets = TextAssets::load(&ModelPath::detect(&smollm_path()).expect("model")).expect("assets");
    let (_, v2) = questions(&fixture("longbench_v2_synthetic.jsonl"));
    let mut q = v2[0].1.clone();
    // A context far over a 400-token budget: head and tail marked.
    q.context = format!("HEAD MARK. {} TAIL MARK.", q.context.repeat(40)).into();
    let build = |q: &EvalQuestion, budget: usize, cut: bool| {
        sealong::generate::prompt::build_with(
            &assets,
            &q.id,
            &q.context,
            |c| q.message(c, Strategy::PlanAndSolve),
            budget,
            cut,
        )
    };
    let e = build(&q, 400, false).expect_err("over the budget").to_string();
    assert!(
        e.contains("question 66f36490821e116aacb2cc22") && e.contains("--truncate-middle"),
        "{e}"
    );
    let p = build(&q, 400, true).expect("cut in the middle");
    assert!(p.ids.len() <= 400 && p.truncated_tokens > 0, "{} ids", p.ids.len());
    let m = &p.user_message;
    assert!(m.contains("HEAD MARK") && m.contains("TAIL MARK"), "{m}");
    assert!(m.contains("(B) The schooner Halcyon") && m.contains("The correct answer is (X)"));
    assert!(m.contains("Which ship ran aground"));
    // L-Eval and LongBench keep the SEALONG message; the budget check is the same.
    let (_, le) = questions(&fixture("leval_synthetic.jsonl"));
    let p = build(&le[2].1, 4096, false).expect("fits");
    assert_eq!(p.truncated_tokens, 0);
    assert!(p.user_message.contains(Strategy::PlanAndSolve.suffix()));
    let p = build(&le[3].1, 4096, false).expect("fits");
    assert!(p.user_message.contains("The correct answer is (X)") && !p.user_message.contains("Choices:"));
    // GSM8K has no context to cut: over the budget is an error even when cutting is allowed.
    let (_, g) = questions(&data_file("gsm8k/test.jsonl"));
    let p = build(&g[0].1, 4096, false).expect("fits");
    assert!(p.user_message.contains("step by step") && p.user_message.contains("Janet"));
    let e = build(&g[0].1, 20, true).expect_err("cannot fit").to_string();
    assert!(e.contains("question 1: cannot fit the prompt into 20 tokens"), "{e}");
}

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn eval_scores_each_format_with_its_metric() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("eval");
    let s = |p: PathBuf| p.display().to_string();
    let inputs = [
        s(data_file("gsm8k/test.jsonl")),
        s(fixture("longbench_v2_synthetic.jsonl")),
        s(fixture("leval_synthetic.jsonl")),
    ];
    let mut argv = vec![
        "eval",
        "--device",
        "cpu",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--out",
    ];
    let out_s = out.display().to_string();
    argv.push(&out_s);
    argv.push("--input");
    argv.extend(inputs.iter().map(String::as_str));
    sealong(&argv).expect("sealong eval");
    let preds = read_lines(&out.join("predictions.jsonl"));
    // --limit counts questions: two of each file.
    assert_eq!(preds.len(), 6);
    let mut tasks = std::collections::BTreeMap::new();
    for p in &preds {
        let task = p["task"].as_str().expect("task").to_string();
        let prediction = p["prediction"].as_str().expect("prediction");
        let golds: Vec<String> = serde_json::from_value(p["answers"].clone()).expect("answers");
        let metric = match p["metric"].as_str() {
            None => Metric::SubEm,
            Some("choice_accuracy") => Metric::Choice,
            Some("numeric_final_answer") => Metric::Numeric,
            Some(m) => panic!("unknown metric {m}"),
        };
        assert_eq!(p["sub_em"].as_bool(), Some(metric.score(prediction, &golds)), "{p}");
        if metric != Metric::SubEm {
            assert_eq!(p["extracted"], serde_json::json!(metric.extracted(prediction)), "{p}");
        }
        tasks.entry(task).or_insert_with(Vec::new).push(metric);
    }
    assert_eq!(tasks["gsm8k"], [Metric::Numeric; 2]);
    assert_eq!(tasks["longbench_v2_synthetic"], [Metric::Choice; 2]);
    assert_eq!(tasks["leval_synthetic"], [Metric::SubEm; 2]);
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).expect("metrics")).expect("json");
    let names: Vec<&str> = metrics["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["task"].as_str())
        .collect();
    assert_eq!(names, ["gsm8k", "leval_synthetic", "longbench_v2_synthetic"]);
    for t in metrics["tasks"].as_array().expect("tasks") {
        let mine: Vec<&Value> = preds.iter().filter(|p| p["task"] == t["task"]).collect();
        let greedy = 100.0 * mine.iter().filter(|p| p["sub_em"] == true).count() as f64 / mine.len() as f64;
        assert!((t["greedy"].as_f64().expect("greedy") - greedy).abs() < 1e-9, "{t}");
    }
}

#[test]
fn synth_supporting_only_builds_the_short_task() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("hotpotqa-short.jsonl");
    let src = data_file("hotpotqa/dev.jsonl");
    sealong(&[
        "synth",
        "--eval",
        "--supporting-only",
        "--input",
        &src.display().to_string(),
        "--out",
        &out.display().to_string(),
        "-n",
        "6",
        "--model",
        &smollm_path().display().to_string(),
    ])
    .expect("synth --supporting-only");
    let dev: std::collections::HashMap<String, Value> = std::fs::read_to_string(&src)
        .expect("dev")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            (sealong::data::jsonl::id_string(&v, "_id").expect("id"), v)
        })
        .collect();
    let recs = read_lines(&out);
    assert_eq!(recs.len(), 6);
    for r in &recs {
        assert_eq!(r["dataset"], "hotpotqa-short");
        let src = &dev[r["_id"].as_str().expect("id")];
        let support: std::collections::HashSet<&str> = src["supporting_facts"]
            .as_array()
            .expect("facts")
            .iter()
            .filter_map(|f| f[0].as_str())
            .collect();
        let ctx = r["context"].as_str().expect("context");
        // One passage per supporting paragraph (identical ones once), and no other paragraph.
        let supporting: std::collections::HashSet<String> = src["context"]
            .as_array()
            .expect("paragraphs")
            .iter()
            .filter(|p| p[0].as_str().is_some_and(|t| support.contains(t)))
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ctx.matches("\nPassage ").count() + 1, supporting.len(), "{ctx}");
        for p in src["context"].as_array().expect("paragraphs") {
            let title = p[0].as_str().expect("title");
            assert_eq!(
                ctx.contains(&format!(":\n{title}\n")),
                support.contains(title),
                "{title}"
            );
        }
    }
    // The short task reads as a LongBench file; its task is its dataset.
    let (f, qs) = questions(&out);
    assert_eq!((f, qs[0].1.dataset.as_str()), (EvalFormat::LongBench, "hotpotqa-short"));
    // --supporting-only needs --eval and excludes --target-tokens.
    let e = sealong(&["synth", "--supporting-only", "-i", "x", "-o", "y"]).expect_err("needs --eval");
    assert!(format!("{e:#}").contains("--eval"), "{e:#}");
}

#[test]
fn run_configs_check_the_short_context_keys() {
    use sealong_cli::commands::run::{check_config, parse_config};
    let p = repo_root().join("examples/quickstart.toml");
    let text = std::fs::read_to_string(&p).expect("quickstart");
    assert!(text.contains("short = true") && text.contains("data/gsm8k/test.jsonl"));
    let cfg = parse_config(&text, &p).expect("parses");
    check_config(&cfg).expect("valid");
    // longbench files are used as they are: no padding targets, no short files built from them.
    let bad = text
        .replace("[eval]\n", "[eval]\nlongbench = true\n")
        .replace("target_tokens = [4096]\n", "");
    let e = check_config(&parse_config(&bad, &p).expect("parses")).expect_err("short with longbench");
    assert!(format!("{e:#}").contains("short_inputs"), "{e:#}");
    let typo = text.replace("short_limit", "shortlimit");
    let e = parse_config(&typo, &p).expect_err("unknown key");
    assert!(format!("{e:#}").contains("shortlimit"), "{e:#}");
}
