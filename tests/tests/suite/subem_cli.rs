//! `sealong subem` on a predictions file: records get `sub_em`, per-dataset means are right, and
//! bad records name their line.

use sealong_tests::sealong;
use serde_json::Value;

#[test]
fn writes_sub_em_and_metrics() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("preds.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"_id\":\"1\",\"dataset\":\"hotpotqa\",\"prediction\":\"It is Paris.\",\"answers\":[\"paris\"]}\n",
            "{\"_id\":\"2\",\"dataset\":\"hotpotqa\",\"prediction\":\"Rome\",\"answers\":[\"paris\"]}\n",
            "{\"_id\":\"3\",\"dataset\":\"musique\",\"prediction\":[\"x\",{\"text\":\"the Nile\"}],\"answers\":\"Nile\"}\n",
        ),
    )
    .expect("write");
    let out = dir.path().join("scored.jsonl");
    let metrics = dir.path().join("m.json");
    sealong(&[
        "subem",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--metrics",
        metrics.to_str().expect("utf8"),
    ])
    .expect("subem runs");
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["sub_em"], Value::Bool(true));
    assert_eq!(lines[1]["sub_em"], Value::Bool(false));
    assert_eq!(lines[2]["sub_em"], serde_json::json!([false, true]));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).expect("m")).expect("json");
    assert_eq!(m["hotpotqa"]["sub_em"].as_f64(), Some(50.0));
    assert_eq!(m["musique"]["sub_em"].as_f64(), Some(50.0));
    assert_eq!(m["avg"].as_f64(), Some(50.0));
}

#[test]
fn bad_records_name_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("p.jsonl");
    std::fs::write(
        &input,
        "{\"prediction\":\"a\",\"answers\":[\"a\"]}\n{\"prediction\":\"a\"}\n",
    )
    .expect("w");
    let e = sealong(&["subem", "--input", input.to_str().expect("utf8")]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("p.jsonl:2") && msg.contains("\"answers\""), "{msg}");
    std::fs::write(&input, "{\"prediction\":\"a\",\"answers\":[\"a\"]}\n{oops\n").expect("w");
    let msg = format!(
        "{:#}",
        sealong(&["subem", "--input", input.to_str().expect("utf8")]).unwrap_err()
    );
    assert!(msg.contains("p.jsonl:2: malformed JSON"), "{msg}");
    std::fs::write(&input, "").expect("w");
    let msg = format!(
        "{:#}",
        sealong(&["subem", "--input", input.to_str().expect("utf8")]).unwrap_err()
    );
    assert!(msg.contains("no records"), "{msg}");
    // Nothing was written for the failed runs.
    assert!(!dir.path().join("p.subem.jsonl").exists());
}
