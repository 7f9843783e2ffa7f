//! `sealong study` end to end: `study n` and `study scorers` on a real `eval --n 4` output (the
//! default models, a few questions of the shipped GSM8K file and the L-Eval fixture, 8-token
//! answers) agree with eval's own table (MBR@N, random@N, oracle@k, greedy); a hand-made
//! predictions file gives hand-checked numbers; files that differ in questions and files
//! without samples are refused; `study prompts` evaluates each strategy with eval's code,
//! resumes, and refuses an unknown strategy naming the five.

use std::path::{Path, PathBuf};

use sealong_tests::{data_file, golden_dir, sealong};
use serde_json::{Value, json};

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).expect("json")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The table's cell of `row` in `column`.
fn cell<'a>(table: &'a Value, row: &str, column: &str) -> &'a Value {
    let col = table["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .position(|c| c == column)
        .unwrap_or_else(|| panic!("column {column} in {}", table["columns"]));
    let r = table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == row)
        .unwrap_or_else(|| panic!("row {row}"));
    &r["cells"][col]
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a.as_f64().unwrap_or_else(|| panic!("{what}: {a}"));
    assert!((a - b).abs() < 1e-9, "{what}: {a} vs {b}");
}

/// Every cell's interval holds its mean.
fn intervals_hold_means(table: &Value) {
    for r in table["rows"].as_array().expect("rows") {
        for c in r["cells"].as_array().expect("cells") {
            let (lo, m, hi) = (c["lo"].as_f64(), c["mean"].as_f64(), c["hi"].as_f64());
            assert!(lo <= m && m <= hi, "{r}");
        }
    }
}

fn leval() -> PathBuf {
    golden_dir().join("evalfiles/leval_synthetic.jsonl")
}

#[test]
fn study_n_and_scorers_agree_with_eval_on_the_same_predictions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ev = tmp.path().join("eval");
    let gsm = data_file("gsm8k/test.jsonl");
    // Questions the small model answers within a few tokens, so some samples are right.
    let easy = tmp.path().join("easy.jsonl");
    let facts = [
        (
            "1",
            "Paris is the capital of France.",
            "What is the capital of France?",
            "Paris",
        ),
        (
            "2",
            "The sky on a clear day is blue.",
            "What colour is the sky on a clear day?",
            "blue",
        ),
        (
            "3",
            "Marta keeps a black cat named Soot.",
            "What is the name of Marta's cat?",
            "Soot",
        ),
        ("4", "Two plus two is four.", "What is two plus two?", "four"),
    ];
    let lines: String = facts
        .iter()
        .map(|(id, c, q, a)| json!({"_id": id, "context": c, "input": q, "answers": [a]}).to_string() + "\n")
        .collect();
    std::fs::write(&easy, lines).expect("easy");
    sealong(&[
        "eval",
        "--device",
        "cpu",
        "--limit",
        "3",
        "--max-new-tokens",
        "10",
        "-n",
        "4",
        "--temperature",
        "1.0",
        "--strategy",
        "direct_answer",
        "--out",
        &s(&ev),
        "--input",
        &s(&gsm),
        &s(&easy),
    ])
    .expect("eval");
    let metrics = read_json(&ev.join("metrics.json"));
    let preds = ev.join("predictions.jsonl");

    let out = tmp.path().join("n");
    sealong(&["study", "n", "-p", &s(&preds), "--out", &s(&out), "--resamples", "500"]).expect("study n");
    let st = read_json(&out.join("study.json"));
    assert_eq!(st["study"], "n");
    let part = &st["parts"][0];
    let t = &part["table"];
    assert_eq!(t["columns"], json!(["easy", "gsm8k", "average"]));
    assert_eq!(t["baseline"], "random@4");
    intervals_hold_means(t);
    let mut columns: Vec<(String, &Value)> = metrics["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|r| (r["task"].as_str().expect("task").to_string(), r))
        .collect();
    columns.push(("average".into(), &metrics["average"]));
    for (col, want) in &columns {
        close(
            &cell(t, "MBR@4", col)["mean"],
            want["mbr"].as_f64().expect("mbr"),
            "MBR@4",
        );
        close(
            &cell(t, "random@4", col)["mean"],
            want["random"].as_f64().expect("random"),
            "random",
        );
        for k in 1..=4 {
            let o = want["oracle_curve"][k - 1].as_f64().expect("curve");
            close(&cell(t, &format!("oracle@{k}"), col)["mean"], o, "oracle@k");
        }
        // MBR@1 is every sample alone: random.
        close(
            &cell(t, "MBR@1", col)["mean"],
            want["random"].as_f64().expect("random"),
            "MBR@1",
        );
        assert!(cell(t, "MBR@2", col)["vs_baseline"]["p_not_better"].is_f64());
        assert!(cell(t, "oracle@2", col).get("vs_baseline").is_none());
    }
    // Some samples are right and some wrong, so the comparisons are not all zero.
    let oracle = cell(t, "oracle@4", "average")["mean"].as_f64().expect("oracle");
    let random = cell(t, "random@4", "average")["mean"].as_f64().expect("random");
    assert!(oracle > random && random > 0.0, "oracle {oracle}, random {random}");
    let notes = part["notes"].to_string();
    assert!(notes.contains("recorded on 6 of 6 questions"), "{notes}");
    let md = std::fs::read_to_string(out.join("study.md")).expect("md");
    assert!(md.contains("| MBR@4 | ") && md.contains("MBR@4 − random@4"), "{md}");
    let html = std::fs::read_to_string(out.join("study.html")).expect("html");
    assert!(html.contains("<svg") && html.contains("MBR@k 95% low"));

    // Scorers, with self-eval reading the contexts from the inputs eval recorded.
    let out = tmp.path().join("scorers");
    sealong(&[
        "study",
        "scorers",
        "-p",
        &s(&preds),
        "--out",
        &s(&out),
        "--resamples",
        "500",
        "--device",
        "cpu",
        "--judge-max-new-tokens",
        "4",
    ])
    .expect("study scorers");
    let st = read_json(&out.join("study.json"));
    let t = &st["parts"][0]["table"];
    let names: Vec<&str> = t["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "greedy",
            "random@4",
            "MBR@4 embedding",
            "MBR@4 ROUGE-L",
            "MBR@4 chrF",
            "self-eval@4",
            "oracle@4"
        ]
    );
    intervals_hold_means(t);
    for (col, want) in &columns {
        close(
            &cell(t, "greedy", col)["mean"],
            want["greedy"].as_f64().expect("greedy"),
            "greedy",
        );
        close(
            &cell(t, "MBR@4 embedding", col)["mean"],
            want["mbr"].as_f64().expect("mbr"),
            "embedding",
        );
        close(
            &cell(t, "oracle@4", col)["mean"],
            want["oracle"].as_f64().expect("oracle"),
            "oracle",
        );
        assert!(cell(t, "random@4", col).get("vs_baseline").is_none());
        for r in ["greedy", "MBR@4 ROUGE-L", "self-eval@4", "oracle@4"] {
            let d = &cell(t, r, col)["vs_baseline"];
            let diff =
                cell(t, r, col)["mean"].as_f64().expect("m") - cell(t, "random@4", col)["mean"].as_f64().expect("r");
            close(&d["diff"], diff, "paired difference");
        }
    }
    assert!(st["parts"][0]["notes"].to_string().contains("replies held no rating"));

    // Without the contexts, self-eval is refused with what to do; --no-self-eval leaves it out.
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).expect("dir");
    std::fs::copy(&preds, lone.join("predictions.jsonl")).expect("copy");
    let e = sealong(&[
        "study",
        "scorers",
        "-p",
        &s(&lone.join("predictions.jsonl")),
        "--out",
        &s(&tmp.path().join("x")),
        "--device",
        "cpu",
    ])
    .expect_err("no contexts");
    assert!(
        format!("{e:#}").contains("--input") && format!("{e:#}").contains("--no-self-eval"),
        "{e:#}"
    );
    let out = tmp.path().join("scorers2");
    sealong(&[
        "study",
        "scorers",
        "-p",
        &s(&lone.join("predictions.jsonl")),
        "--out",
        &s(&out),
        "--resamples",
        "100",
        "--no-self-eval",
    ])
    .expect("no self-eval");
    let st = read_json(&out.join("study.json"));
    assert_eq!(st["parts"][0]["table"]["rows"].as_array().expect("rows").len(), 6);
}

/// A predictions record as eval writes it (the fields the studies read).
fn record(task: &str, id: &str, greedy: bool, samples: &[(&str, bool)]) -> String {
    let mut v = json!({"key": format!("{task}/{id}"), "id": id, "task": task, "sub_em": greedy});
    if !samples.is_empty() {
        v["samples"] = json!(samples.iter().map(|s| s.0).collect::<Vec<_>>());
        v["samples_sub_em"] = json!(samples.iter().map(|s| s.1).collect::<Vec<_>>());
    }
    v.to_string() + "\n"
}

#[test]
fn hand_made_predictions_give_hand_checked_numbers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("predictions.jsonl");
    // Two samples agree and are wrong; the odd one out is right. ROUGE-L MBR picks the consensus.
    let q1 = [("the cat sat", false), ("the cat sat", false), ("a dog ran far", true)];
    // The consensus is right.
    let q2 = [("blue sky", true), ("red apple pie", false), ("blue sky", true)];
    std::fs::write(&p, record("t", "1", true, &q1) + &record("t", "2", false, &q2)).expect("write");
    let out = tmp.path().join("n");
    sealong(&["study", "n", "-p", &s(&p), "--out", &s(&out), "--method", "rouge-l"]).expect("study n");
    let t = read_json(&out.join("study.json"))["parts"][0]["table"].clone();
    // random: (1/3 + 2/3) / 2; MBR@3: 0 and 1; oracle@3: both; MBR@2 over all three pairs:
    // q1 {0,1}→0 ✗, {0,2}→0 ✗ (tie, first), {1,2}→1 ✗; q2 {0,1}→0 ✓, {0,2}→0 ✓, {1,2}→1 ✗.
    close(&cell(&t, "random@3", "t")["mean"], 50.0, "random");
    close(&cell(&t, "MBR@3", "t")["mean"], 50.0, "MBR@3");
    close(&cell(&t, "MBR@2", "t")["mean"], 100.0 / 3.0, "MBR@2");
    close(&cell(&t, "MBR@1", "t")["mean"], 50.0, "MBR@1");
    close(&cell(&t, "oracle@3", "t")["mean"], 100.0, "oracle@3");
    // oracle@1 = random, oracle@2 = 1 - C(N-c, 2)/C(3, 2): q1 (c=1) 2/3, q2 (c=2) 1.
    close(
        &cell(&t, "oracle@2", "t")["mean"],
        100.0 * (2.0 / 3.0 + 1.0) / 2.0,
        "oracle@2",
    );
    intervals_hold_means(&t);
    // A single task: the average is the task.
    assert_eq!(cell(&t, "MBR@2", "t"), cell(&t, "MBR@2", "average"));
    // `sealong report` on a study directory renders its page again from study.json.
    let page = std::fs::read(out.join("study.html")).expect("page");
    std::fs::remove_file(out.join("study.html")).expect("rm");
    sealong(&["report", &s(&out)]).expect("report");
    assert_eq!(std::fs::read(out.join("study.html")).expect("page again"), page);
}

#[test]
fn files_that_differ_in_questions_or_have_no_samples_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let two = [("a", true), ("b", false)];
    let a = tmp.path().join("a.jsonl");
    let b = tmp.path().join("b.jsonl");
    std::fs::write(&a, record("t", "q1", true, &two) + &record("t", "q2", true, &two)).expect("a");
    std::fs::write(&b, record("t", "q1", true, &two) + &record("t", "q3", true, &two)).expect("b");
    let out = tmp.path().join("out");
    for study in ["n", "scorers"] {
        let (sa, sb, so) = (s(&a), s(&b), s(&out));
        let mut argv = vec!["study", study, "-p", &sa, &sb, "--out", &so];
        if study == "scorers" {
            argv.push("--no-self-eval");
        }
        let e = sealong(&argv).expect_err("refused");
        let e = format!("{e:#}");
        assert!(
            e.contains("only in")
                && e.contains("\"q2\"")
                && e.contains("\"q3\"")
                && e.contains("a.jsonl")
                && e.contains("b.jsonl"),
            "{e}"
        );
    }
    assert!(!out.join("study.json").exists());
    let none = tmp.path().join("none.jsonl");
    std::fs::write(&none, record("t", "q1", true, &[])).expect("none");
    let e = sealong(&["study", "n", "-p", &s(&none), "--out", &s(&out), "--method", "chrf"]).expect_err("N = 0");
    assert!(
        format!("{e:#}").contains("none.jsonl:1: question \"t/q1\" has no samples (N = 0)"),
        "{e:#}"
    );
    let mixed = tmp.path().join("mixed.jsonl");
    std::fs::write(
        &mixed,
        record("t", "q1", true, &two) + &record("t", "q2", true, &[("x", true)]),
    )
    .expect("mixed");
    let e = sealong(&["study", "n", "-p", &s(&mixed), "--out", &s(&out), "--method", "chrf"]).expect_err("two N");
    assert!(format!("{e:#}").contains("mixed.jsonl:2"), "{e:#}");
}

#[test]
fn study_prompts_evaluates_each_strategy_with_eval_and_resumes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("prompts");
    let e = sealong(&[
        "study",
        "prompts",
        "-i",
        &s(&leval()),
        "--out",
        &s(&out),
        "--strategies",
        "plan",
    ])
    .expect_err("unknown");
    assert!(
        format!("{e:#}").contains("\"plan\"") && format!("{e:#}").contains("fact_and_reflection"),
        "{e:#}"
    );
    let argv = [
        "study",
        "prompts",
        "-i",
        &s(&leval()),
        "--out",
        &s(&out),
        "--limit",
        "3",
        "--strategies",
        "direct_answer,plan_and_solve",
        "--resamples",
        "200",
        "--",
        "--device",
        "cpu",
        "--max-new-tokens",
        "6",
    ];
    sealong(&argv).expect("study prompts");
    let st = read_json(&out.join("study.json"));
    let t = &st["parts"][0]["table"];
    assert_eq!(t["baseline"], "plan_and_solve");
    for strategy in ["direct_answer", "plan_and_solve"] {
        let m = read_json(&out.join(strategy).join("metrics.json"));
        assert_eq!(m["strategy"], strategy);
        close(
            &cell(t, strategy, "average")["mean"],
            m["average"]["greedy"].as_f64().expect("g"),
            strategy,
        );
        assert_eq!(cell(t, strategy, "average")["questions"], 3);
    }
    assert!(cell(t, "direct_answer", "leval_synthetic")["vs_baseline"].is_object());
    assert!(
        cell(t, "plan_and_solve", "leval_synthetic")
            .get("vs_baseline")
            .is_none()
    );
    // A rerun resumes every strategy's eval and writes the same study.
    let before = std::fs::read(out.join("direct_answer/predictions.jsonl")).expect("preds");
    sealong(&argv).expect("resumed");
    assert_eq!(
        std::fs::read(out.join("direct_answer/predictions.jsonl")).expect("preds"),
        before
    );
    assert_eq!(read_json(&out.join("study.json")), st);
}

/// `study scorers --long-text truncate,windowed,answer-span` (issue 16, item 3's measurement):
/// one embedding row per reading and ROUGE-L / chrF rows on whole answers and on spans. Four
/// samples share a ~400-token reasoning (longer than MiniLM's 256-token window) and differ only
/// in the final answer (Rome, Berlin, Paris, Paris; Paris is right): truncated, the four are one
/// text and the tie picks Rome (wrong); windowed and the spans see the endings and pick Paris.
#[test]
fn scorers_compare_the_long_text_readings() {
    let tmp = tempfile::tempdir().expect("tmp");
    let texts = sealong_tests::long_answers(&["Rome", "Berlin", "Paris", "Paris"]);
    let q: Vec<(&str, bool)> = texts.iter().map(|t| (t.as_str(), t.ends_with("Paris."))).collect();
    let p = tmp.path().join("predictions.jsonl");
    std::fs::write(&p, record("t", "1", false, &q)).expect("write");
    let out = tmp.path().join("scorers");
    sealong(&[
        "study",
        "scorers",
        "-p",
        &s(&p),
        "--out",
        &s(&out),
        "--no-self-eval",
        "--long-text",
        "truncate,windowed,answer-span",
    ])
    .expect("study scorers");
    let study = read_json(&out.join("study.json"));
    assert_eq!(
        study["settings"]["long_text"],
        json!(["truncate", "windowed", "answer-span"])
    );
    let t = study["parts"][0]["table"].clone();
    close(&cell(&t, "MBR@4 embedding (truncate)", "t")["mean"], 0.0, "truncate");
    close(&cell(&t, "MBR@4 embedding (windowed)", "t")["mean"], 100.0, "windowed");
    close(
        &cell(&t, "MBR@4 embedding (answer-span)", "t")["mean"],
        100.0,
        "answer-span",
    );
    close(
        &cell(&t, "MBR@4 ROUGE-L (answer-span)", "t")["mean"],
        100.0,
        "ROUGE-L spans",
    );
    close(&cell(&t, "MBR@4 chrF (answer-span)", "t")["mean"], 100.0, "chrF spans");
    assert!(cell(&t, "MBR@4 ROUGE-L (whole)", "t")["mean"].is_number());
}
