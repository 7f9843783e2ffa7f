//! `sealong sample` and `sealong generate` end to end on the default model (CPU): the stage-2
//! record schema, seeded determinism (same seed, same bytes), and resuming a killed run.

use std::path::Path;

use sealong_tests::sealong;
use serde_json::Value;

fn questions(dir: &Path) -> std::path::PathBuf {
    let q = dir.join("questions.jsonl");
    let recs = [
        serde_json::json!({"_id": "q1", "input": "Where is the Eiffel Tower?", "context": "Passage 1:\nThe Eiffel Tower is in Paris.", "answers": ["Paris"], "dataset": "toy"}),
        serde_json::json!({"_id": "q2", "input": "What colour is the sky?", "context": "Passage 1:\nOn a clear day the sky is blue.", "answers": ["blue"], "dataset": "toy"}),
        serde_json::json!({"_id": "q3", "input": "Who wrote Hamlet?", "context": "Passage 1:\nHamlet is a tragedy by William Shakespeare.", "answers": ["Shakespeare"], "dataset": "toy"}),
    ];
    let text: String = recs.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&q, text).expect("write questions");
    q
}

fn run_sample(q: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "sample",
        "--device",
        "cpu",
        "-n",
        "3",
        "--max-new-tokens",
        "12",
        "--seed",
        "5",
        "--input",
        q.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    sealong(&args).expect("sample");
}

#[test]
fn sample_records_are_complete_seeded_and_resumable() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = questions(dir.path());
    let a = dir.path().join("a.jsonl");
    run_sample(&q, &a, &[]);
    let text = std::fs::read_to_string(&a).expect("read");
    let recs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert!(r["id"].is_string() && r["question"].is_string() && r["answers"].is_array());
        assert!(
            r["prompt"].as_str().expect("prompt").ends_with("step-by-step.\n"),
            "plan_and_solve user message"
        );
        assert_eq!(r["strategy"], "plan_and_solve");
        assert_eq!(r["sampling"]["n"], 3);
        assert_eq!(r["sampling"]["seed"], 5);
        let samples = r["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 3);
        for s in samples {
            assert!(s["text"].is_string());
            let n = s["num_tokens"].as_u64().expect("num_tokens");
            assert!((1..=12).contains(&n));
            let fr = s["finish_reason"].as_str().expect("finish_reason");
            assert!(fr == "stop" || fr == "length");
            assert_eq!(fr == "length", n == 12);
        }
    }
    // The same seed writes the same bytes.
    let b = dir.path().join("b.jsonl");
    run_sample(&q, &b, &[]);
    assert_eq!(text, std::fs::read_to_string(&b).expect("b"));
    // A run killed after one question (and in the middle of the second) resumes to the same file.
    let c = dir.path().join("c.jsonl");
    run_sample(&q, &c, &["--limit", "1"]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&c)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"id\": \"q2\", \"sam"))
        .expect("append");
    run_sample(&q, &c, &[]);
    assert_eq!(text, std::fs::read_to_string(&c).expect("c"));
    // Another seed samples differently.
    let d = dir.path().join("d.jsonl");
    sealong(&[
        "sample",
        "--device",
        "cpu",
        "-n",
        "3",
        "--max-new-tokens",
        "12",
        "--seed",
        "6",
        "--input",
        q.to_str().expect("utf8"),
        "--out",
        d.to_str().expect("utf8"),
    ])
    .expect("sample");
    assert_ne!(text, std::fs::read_to_string(&d).expect("d"));
}

#[test]
fn generate_writes_greedy_predictions() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = questions(dir.path());
    let out = dir.path().join("pred.jsonl");
    sealong(&[
        "generate",
        "--device",
        "cpu",
        "--max-new-tokens",
        "16",
        "--input",
        q.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ])
    .expect("generate");
    let recs: Vec<Value> = std::fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 3);
    assert!(
        recs.iter()
            .all(|r| r["prediction"].is_string() && r["answers"].is_array())
    );
    // The predictions file is SubEM-ready.
    sealong(&["subem", "--input", out.to_str().expect("utf8")]).expect("subem");
    // Issue 17: a rerun with another budget is refused (the records were cut at 16 tokens).
    let before = std::fs::read(&out).expect("out");
    let e = sealong(&[
        "generate",
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
        "--input",
        q.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ])
    .expect_err("another --max-new-tokens is refused");
    let e = format!("{e:#}");
    assert!(
        e.contains("max_new_tokens = 16 (this run: 8)") && e.contains("pred.jsonl.meta.json"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&out).expect("out"),
        before,
        "a refused rerun writes nothing"
    );
    sealong(&[
        "generate",
        "--device",
        "cpu",
        "--max-new-tokens",
        "4",
        "--prompt",
        "Say hi.",
    ])
    .expect("prompt");
}

/// Issue 17: a rerun with another `--n` or `--seed` appended records made differently to the
/// same file. Now it is refused, naming the field with both values, and the file is untouched;
/// the same settings resume; an output made before sidecars existed is adopted.
#[test]
fn a_rerun_with_other_settings_is_refused_and_the_same_settings_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let q = questions(dir.path());
    let out = dir.path().join("s.jsonl");
    run_sample(&q, &out, &["--limit", "1"]);
    let meta = dir.path().join("s.jsonl.meta.json");
    let recorded: Value = serde_json::from_slice(&std::fs::read(&meta).expect("sidecar")).expect("json");
    assert_eq!(recorded["stage"], "sample");
    assert_eq!(recorded["settings"]["n"], 3);
    assert_eq!(recorded["settings"]["seed"], 5);
    assert_eq!(
        recorded["settings"]["model_sha256"].as_str().expect("model hash").len(),
        64
    );
    let before = std::fs::read(&out).expect("out");
    let rerun = |n: &str, seed: &str| {
        sealong(&[
            "sample",
            "--device",
            "cpu",
            "-n",
            n,
            "--max-new-tokens",
            "12",
            "--seed",
            seed,
            "--input",
            q.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
        ])
    };
    let e = format!("{:#}", rerun("2", "5").expect_err("another --n is refused"));
    assert!(e.contains("n = 3 (this run: 2)"), "{e}");
    assert!(
        e.contains("s.jsonl.meta.json") && e.contains("another output path"),
        "{e}"
    );
    let e = format!("{:#}", rerun("3", "6").expect_err("another --seed is refused"));
    assert!(e.contains("seed = 5 (this run: 6)"), "{e}");
    assert_eq!(
        std::fs::read(&out).expect("out"),
        before,
        "a refused rerun writes nothing"
    );
    // The device is not a setting of the records: the same settings resume to all questions.
    run_sample(&q, &out, &[]);
    let text = std::fs::read_to_string(&out).expect("out");
    assert!(text.starts_with(std::str::from_utf8(&before).expect("utf8")));
    assert_eq!(text.lines().count(), 3);
    // An output without a sidecar (an older version's) is adopted with this run's settings.
    std::fs::remove_file(&meta).expect("rm");
    run_sample(&q, &out, &[]);
    assert!(meta.is_file(), "the sidecar is written on adoption");
    assert_eq!(std::fs::read_to_string(&out).expect("out"), text);
}
