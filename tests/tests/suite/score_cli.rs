//! `sealong score` and `sealong embed` end to end: the golden MBR groups wrapped as stage-2
//! records give the reference's scores and chosen index through the CLI (embedding and
//! ROUGE-L), rejected always from the bottom half, the pairs schema, the summary, resuming a
//! killed run to the same bytes, the self-eval judges on the default decoder, and bad input
//! (N = 0 or 1, missing fields, malformed lines) failing with the file and line, writing nothing.

use std::path::{Path, PathBuf};

use sealong_tests::{golden_json, sealong};
use serde_json::{Value, json};

/// The golden groups of `file` as stage-2 records; gold answer = the first word of answer 0.
fn samples_file(dir: &Path, file: &str) -> (PathBuf, Vec<Value>) {
    let g = golden_json(file);
    let groups = if file == "rouge.json" {
        g["mbr"]["groups"].clone()
    } else {
        g["groups"].clone()
    };
    let groups = groups.as_array().expect("groups").clone();
    let mut text = String::new();
    for (k, gr) in groups.iter().enumerate() {
        let question = gr["question"].as_str().expect("question");
        let answers: Vec<&str> = gr["answers"]
            .as_array()
            .expect("answers")
            .iter()
            .map(|a| a.as_str().expect("a"))
            .collect();
        let gold = answers[0].split_whitespace().next().unwrap_or("x");
        let rec = json!({
            "id": format!("g{k}"), "dataset": "golden", "question": question, "answers": [gold],
            "prompt": format!("\nPassage 1:\nSome context.\n\n{question}\nLet's think."),
            "samples": answers.iter().map(|a| json!({"text": a, "num_tokens": 1, "finish_reason": "stop"})).collect::<Vec<_>>(),
        });
        text.push_str(&format!("{rec}\n"));
    }
    let p = dir.join(format!("samples_{}.jsonl", file.trim_end_matches(".json")));
    std::fs::write(&p, text).expect("write samples");
    (p, groups)
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn score(input: &Path, out: &Path, method: &str, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec![
        "score",
        "--device",
        "cpu",
        "--method",
        method,
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    sealong(&args)
}

fn check_against_golden(recs: &[Value], groups: &[Value], tol: f64) {
    assert_eq!(recs.len(), groups.len());
    for (r, g) in recs.iter().zip(groups) {
        let got: Vec<f64> = r["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        let want: Vec<f64> = g["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= tol, "{}: score {a} vs {b}", r["id"]);
        }
        assert_eq!(r["chosen"], g["chosen"], "{}", r["id"]);
        assert_eq!(r["rejected_pool"], g["rejected_pool"], "{}", r["id"]);
        let pool: Vec<u64> = g["rejected_pool"]
            .as_array()
            .expect("pool")
            .iter()
            .map(|v| v.as_u64().expect("u"))
            .collect();
        assert!(pool.contains(&r["rejected"].as_u64().expect("rejected")));
        assert_eq!(r["sub_em"].as_array().expect("sub_em").len(), got.len());
    }
}

#[test]
fn embedding_scores_match_the_reference_and_pairs_follow_the_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, groups) = samples_file(dir.path(), "mbr_embedding.json");
    let out = dir.path().join("scored.jsonl");
    let pairs = dir.path().join("pairs.jsonl");
    score(&input, &out, "embedding", &["--pairs", pairs.to_str().expect("utf8")]).expect("score");
    let recs = read_jsonl(&out);
    // MiniLM here vs sentence-transformers there: scores within 1e-4 (issue), same chosen and pool.
    check_against_golden(&recs, &groups, 1e-4);
    for r in &recs {
        assert_eq!(r["method"], "embedding");
        assert!(
            r["prompt"].is_string() && r["samples"].is_array(),
            "stage-2 fields pass through"
        );
    }
    let ps = read_jsonl(&pairs);
    assert_eq!(ps.len(), recs.len());
    for (p, r) in ps.iter().zip(&recs) {
        let samples = r["samples"].as_array().expect("samples");
        let c = r["chosen"].as_u64().expect("c") as usize;
        let j = r["rejected"].as_u64().expect("j") as usize;
        assert_eq!(p["prompt"], r["prompt"]);
        assert_eq!(p["chosen"], samples[c]["text"]);
        assert_eq!(p["rejected"], samples[j]["text"]);
        assert_eq!(
            p["messages"],
            json!([{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": samples[c]["text"]}])
        );
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("scored.summary.json")).expect("summary"))
            .expect("json");
    assert_eq!(summary["questions"], recs.len());
    for k in [
        "sub_em_max",
        "sub_em_random",
        "sub_em_average",
        "sub_em_prediction",
        "sub_em_chosen",
        "sub_em_rejected",
    ] {
        let v = summary[k].as_f64().unwrap_or_else(|| panic!("{k}"));
        assert!((0.0..=100.0).contains(&v), "{k} = {v}");
    }
    assert!(summary["sub_em_max"].as_f64() >= summary["sub_em_average"].as_f64());
}

#[test]
fn rouge_l_scores_match_rouge_score() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, groups) = samples_file(dir.path(), "rouge.json");
    let out = dir.path().join("scored.jsonl");
    score(&input, &out, "rouge-l", &[]).expect("score");
    check_against_golden(&read_jsonl(&out), &groups, 1e-9);
}

#[test]
fn chrf_scores_match_sacrebleu() {
    // The ROUGE fixture's groups: tests/golden/chrf/chrf.json holds sacrebleu's chrF MBR of
    // the same answers (sets named "rouge.json mbr group K").
    let dir = tempfile::tempdir().expect("tmp");
    let (input, groups) = samples_file(dir.path(), "rouge.json");
    let out = dir.path().join("scored.jsonl");
    score(&input, &out, "chrf", &[]).expect("score");
    let recs = read_jsonl(&out);
    let golden = golden_json("chrf/chrf.json");
    let sets: Vec<Value> = groups
        .iter()
        .map(|g| {
            let name = format!("rouge.json mbr group {}", g["index"]);
            golden["mbr"]
                .as_array()
                .expect("sets")
                .iter()
                .find(|s| s["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} not in chrf.json"))
                .clone()
        })
        .collect();
    for (r, s) in recs.iter().zip(&sets) {
        assert_eq!(r["method"], "chrf");
        assert_eq!(
            r["samples"].as_array().map(Vec::len),
            s["answers"].as_array().map(Vec::len)
        );
    }
    // Scores on sacrebleu's 0..100 scale: 1e-12 (the same f64 operations in the same order).
    check_against_golden(&recs, &sets, 1e-12);
}

/// `--device gpu` (lavapipe here): the encoder's burn twin embeds and the cubecl MBR kernel
/// ranks; the host path (`--device cpu`, f64 matrix) picks the same chosen and rejected, and
/// the scores agree within 1e-4 (the f32 kernel plus the burn twin's f32 embeddings, as the
/// encoder parity tests allow).
#[test]
fn embedding_on_the_gpu_ranks_as_the_host_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, _) = samples_file(dir.path(), "mbr_embedding.json");
    let cpu = dir.path().join("cpu.jsonl");
    score(&input, &cpu, "embedding", &[]).expect("score cpu");
    let gpu = dir.path().join("gpu.jsonl");
    let i = input.to_str().expect("utf8");
    let o = gpu.to_str().expect("utf8");
    sealong(&[
        "score",
        "--device",
        "gpu",
        "--method",
        "embedding",
        "--input",
        i,
        "--out",
        o,
    ])
    .expect("score gpu");
    let (cpu, gpu) = (read_jsonl(&cpu), read_jsonl(&gpu));
    assert_eq!(cpu.len(), gpu.len());
    for (c, g) in cpu.iter().zip(&gpu) {
        for k in ["chosen", "rejected", "rejected_pool"] {
            assert_eq!(c[k], g[k], "{}: {k}", c["id"]);
        }
        let f = |r: &Value| -> Vec<f64> { serde_json::from_value(r["scores"].clone()).expect("scores") };
        let (a, b) = (f(c), f(g));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4, "{}: cpu {x} vs gpu {y}", c["id"]);
        }
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_bytes_and_random_is_seeded() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, _) = samples_file(dir.path(), "rouge.json");
    let full = dir.path().join("full.jsonl");
    let full_pairs = dir.path().join("full_pairs.jsonl");
    score(
        &input,
        &full,
        "random",
        &["--seed", "3", "--pairs", full_pairs.to_str().expect("utf8")],
    )
    .expect("score");
    // A run killed while writing its second record: one full line and half of the next; the
    // pairs file got one line further.
    let text = std::fs::read_to_string(&full).expect("read");
    let first = text.find('\n').expect("line") + 1;
    let part = dir.path().join("part.jsonl");
    std::fs::write(&part, &text[..first + 10]).expect("write");
    let pairs_text = std::fs::read_to_string(&full_pairs).expect("read");
    let part_pairs = dir.path().join("part_pairs.jsonl");
    let two = pairs_text.match_indices('\n').nth(1).expect("two pairs").0 + 1;
    std::fs::write(&part_pairs, &pairs_text[..two]).expect("write");
    score(
        &input,
        &part,
        "random",
        &["--seed", "3", "--pairs", part_pairs.to_str().expect("utf8")],
    )
    .expect("resume");
    assert_eq!(std::fs::read_to_string(&part).expect("read"), text);
    assert_eq!(std::fs::read_to_string(&part_pairs).expect("read"), pairs_text);
    for r in read_jsonl(&full) {
        assert_ne!(r["chosen"], r["rejected"], "random picks two different samples");
    }
}

/// Issue 17: a last record that was whole but for its newline counted as done on resume, and
/// the appender then deleted it: the file ended one record short.
#[test]
fn a_last_record_without_its_newline_is_redone_on_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, groups) = samples_file(dir.path(), "rouge.json");
    assert_eq!(groups.len(), 3, "the golden has three questions");
    let full = dir.path().join("full.jsonl");
    score(&input, &full, "rouge-l", &[]).expect("score");
    let text = std::fs::read_to_string(&full).expect("read");
    assert_eq!(text.lines().count(), 3);
    // Two of the three records kept, the second without its newline.
    let second_end = text.match_indices('\n').nth(1).expect("two lines").0;
    let part = dir.path().join("part.jsonl");
    std::fs::write(&part, &text[..second_end]).expect("write");
    score(&input, &part, "rouge-l", &[]).expect("resume");
    assert_eq!(std::fs::read_to_string(&part).expect("read"), text);
}

#[test]
fn bad_samples_fail_with_file_and_line_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = json!({"id": "a", "prompt": "p", "samples": [{"text": "x"}, {"text": "y"}]});
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "one sample",
            format!(
                "{good}\n{}\n",
                json!({"id": "b", "prompt": "p", "samples": [{"text": "x"}]})
            ),
            ":2: record \"b\" has 1 sample",
        ),
        (
            "no samples",
            format!("{}\n", json!({"id": "b", "prompt": "p", "samples": []})),
            ":1: record \"b\" has 0 sample",
        ),
        (
            "missing field",
            format!("{good}\n{}\n", json!({"id": "b", "samples": ["x", "y"]})),
            ":2: record \"b\" has no \"prompt\"",
        ),
        (
            "sample without text",
            format!(
                "{}\n",
                json!({"id": "b", "prompt": "p", "samples": [{"txt": "x"}, {"text": "y"}]})
            ),
            "sample 0 has no \"text\"",
        ),
        (
            "malformed",
            format!("{good}\n{{\"id\": \"b\", \n"),
            ":2: malformed JSON",
        ),
        ("empty file", String::new(), "no records"),
        ("duplicate id", format!("{good}\n{good}\n"), "appears twice"),
    ];
    for (what, body, want) in cases {
        let input = dir.path().join("bad.jsonl");
        std::fs::write(&input, body).expect("write");
        let out = dir.path().join("out.jsonl");
        std::fs::write(&out, "").expect("write");
        let err = score(&input, &out, "rouge-l", &[]).expect_err(what);
        let msg = format!("{err:#}");
        assert!(msg.contains(want), "{what}: {msg}");
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            "",
            "{what}: nothing written"
        );
    }
}

#[test]
fn self_eval_judges_run_on_the_default_decoder() {
    let dir = tempfile::tempdir().expect("tmp");
    let rec = json!({
        "id": "q", "question": "Where is the Eiffel Tower?", "answers": ["Paris"],
        "prompt": "\nPassage 1:\nThe Eiffel Tower is in Paris.\n\nWhere is the Eiffel Tower?\nLet's think.\n",
        "samples": [{"text": "It is in Paris."}, {"text": "It is in Rome."}, {"text": "Paris, France."}],
    });
    let input = dir.path().join("s.jsonl");
    std::fs::write(&input, format!("{rec}\n")).expect("write");
    let out = dir.path().join("ref.jsonl");
    score(&input, &out, "ref-self-eval", &[]).expect("ref-self-eval");
    let r = &read_jsonl(&out)[0];
    assert_eq!(r["judge_calls"], 6, "N (N - 1) judge calls");
    for s in r["scores"].as_array().expect("scores") {
        // Row means of a 0/1 matrix with a 1 on the diagonal.
        let v = s.as_f64().expect("f");
        assert!((1.0 / 3.0 - 1e-12..=1.0).contains(&v), "{v}");
    }
    let out = dir.path().join("free.jsonl");
    score(&input, &out, "self-eval", &["--judge-max-new-tokens", "48"]).expect("self-eval");
    let r = &read_jsonl(&out)[0];
    assert_eq!(r["judge_calls"], 3);
    for s in r["scores"].as_array().expect("scores") {
        let v = s.as_f64().expect("f");
        assert!([0.0, 1.0, 2.0, 3.0, 4.0, 5.0].contains(&v), "rating {v}");
    }
}

#[test]
fn embed_writes_jsonl_and_npy() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("t.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"text\": \"hello world\"}\n{\"id\": 2, \"text\": \"\"}\n",
    )
    .expect("write");
    let out = dir.path().join("e.jsonl");
    let args = [
        "embed",
        "--input",
        input.to_str().expect("u"),
        "--out",
        out.to_str().expect("u"),
    ];
    sealong(&args).expect("embed");
    let recs = read_jsonl(&out);
    assert_eq!(recs.len(), 2);
    let v: Vec<f64> = recs[0]["embedding"]
        .as_array()
        .expect("emb")
        .iter()
        .map(|x| x.as_f64().expect("f"))
        .collect();
    assert_eq!(v.len(), 384);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
    sealong(&args).expect("rerun skips done ids");
    assert_eq!(read_jsonl(&out).len(), 2);
    // Issue 17: the JSONL output records what shaped it; a rerun keyed by another field is
    // refused instead of appending a second set of embeddings under other ids.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("e.jsonl.meta.json")).expect("sidecar")).expect("json");
    assert_eq!(meta["stage"], "embed");
    assert_eq!(meta["settings"]["field"], "text");
    assert_eq!(meta["settings"]["embedder_sha256"].as_str().expect("hash").len(), 64);
    let mut other = args.to_vec();
    other.extend(["--id-field", "key"]);
    let e = format!("{:#}", sealong(&other).expect_err("another id field is refused"));
    assert!(e.contains("id_field = \"id\" (this run: \"key\")"), "{e}");
    assert_eq!(read_jsonl(&out).len(), 2);
    let npy = dir.path().join("e.npy");
    sealong(&[
        "embed",
        "--input",
        input.to_str().expect("u"),
        "--out",
        npy.to_str().expect("u"),
    ])
    .expect("npy");
    let bytes = std::fs::read(&npy).expect("npy");
    assert!(bytes.starts_with(b"\x93NUMPY"));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    assert_eq!(bytes.len(), 10 + header_len + 2 * 384 * 4);
    let missing = sealong(&[
        "embed",
        "--input",
        input.to_str().expect("u"),
        "--field",
        "nope",
        "--out",
        out.to_str().expect("u"),
    ]);
    assert!(format!("{:#}", missing.expect_err("missing field")).contains(":1: no \"nope\" field"));
}

/// Issue 17: a rerun with another method or seed appended records selected differently to the
/// scored and pairs files. Now both are refused naming the field; the summary is rewritten
/// whole (no temporary file left beside it) and the same settings resume.
#[test]
fn a_rerun_with_another_method_or_seed_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, _) = samples_file(dir.path(), "rouge.json");
    let out = dir.path().join("scored.jsonl");
    let pairs = dir.path().join("pairs.jsonl");
    let p = pairs.to_str().expect("utf8");
    score(&input, &out, "random", &["--seed", "3", "--pairs", p]).expect("score");
    let (scored, paired) = (
        std::fs::read(&out).expect("scored"),
        std::fs::read(&pairs).expect("pairs"),
    );
    let e = format!(
        "{:#}",
        score(&input, &out, "rouge-l", &["--seed", "3", "--pairs", p]).expect_err("method")
    );
    assert!(e.contains("method = \"random\" (this run: \"rouge-l\")"), "{e}");
    let e = format!(
        "{:#}",
        score(&input, &out, "random", &["--seed", "4", "--pairs", p]).expect_err("seed")
    );
    assert!(
        e.contains("seed = 3 (this run: 4)") && e.contains("scored.jsonl"),
        "{e}"
    );
    // The pairs file has its own record: a new scored file with the old pairs is refused too.
    let other = dir.path().join("other.jsonl");
    let e = format!(
        "{:#}",
        score(&input, &other, "random", &["--seed", "4", "--pairs", p]).expect_err("pairs")
    );
    assert!(e.contains("pairs.jsonl was made with other settings"), "{e}");
    assert_eq!(std::fs::read(&out).expect("scored"), scored);
    assert_eq!(std::fs::read(&pairs).expect("pairs"), paired);
    score(&input, &out, "random", &["--seed", "3", "--pairs", p]).expect("same settings resume");
    assert_eq!(std::fs::read(&out).expect("scored"), scored);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("scored.summary.json")).expect("summary"))
            .expect("whole JSON");
    assert_eq!(summary["method"], "random");
}

/// A stage-2 record of `answers` (gold answer `gold`).
fn record(id: &str, answers: &[String], gold: &str) -> Value {
    json!({
        "id": id, "dataset": "t", "question": "Which city?", "answers": [gold],
        "prompt": "\nPassage 1:\nSome context.\n\nWhich city?\nLet's think.",
        "samples": answers.iter().map(|a| json!({"text": a, "num_tokens": 1, "finish_reason": "stop"})).collect::<Vec<_>>(),
    })
}

/// Issue 16, item 3: answers longer than the embedder's window (MiniLM reads 256 tokens) are
/// never cut silently. Four answers share a ~400-token reasoning and differ only in the final
/// answer (Rome, Berlin, Paris, Paris): truncated, MiniLM sees four equal texts and the first
/// argmax of the tie (Rome) wins; windowed and answer-span see the ending, so a Paris answer,
/// the consensus, is chosen. The cut answers are counted in the records and the summary, the
/// reading is a recorded setting, and a question whose chosen and rejected are the same text
/// gets no pair (counted), also on resume.
#[test]
fn long_answers_are_windowed_or_spanned_and_never_cut_silently() {
    let dir = tempfile::tempdir().expect("tmp");
    let long = sealong_tests::long_answers(&["Rome", "Berlin", "Paris", "Paris"]);
    let same = vec!["Paris.".to_string(); 3];
    let input = dir.path().join("samples.jsonl");
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n",
            record("long", &long, "Paris"),
            record("same", &same, "Paris")
        ),
    )
    .expect("write");
    let mut chosen = std::collections::BTreeMap::new();
    for reading in ["truncate", "windowed", "answer-span"] {
        let out = dir.path().join(format!("{reading}.jsonl"));
        let pairs = dir.path().join(format!("{reading}.pairs.jsonl"));
        let p = pairs.to_str().expect("utf8");
        score(&input, &out, "embedding", &["--long-text", reading, "--pairs", p]).expect("score");
        let recs = read_jsonl(&out);
        assert_eq!(recs[0]["long_text"], reading);
        let (over, cut) = (recs[0]["over_window"].as_u64(), recs[0]["cut"].as_u64());
        match reading {
            "truncate" => assert_eq!((over, cut), (Some(4), Some(4))),
            "windowed" => assert_eq!((over, cut), (Some(4), Some(0))),
            _ => assert_eq!((over, cut), (Some(0), Some(0)), "spans fit the window"),
        }
        chosen.insert(reading, recs[0]["chosen"].as_u64().expect("chosen"));
        // `same_text` says whether chosen and rejected are one text (a tie of equal scores can
        // also draw the chosen answer itself from the bottom half, as the reference does).
        let mut paired = Vec::new();
        for r in &recs {
            let text = |k: &str| r["samples"][r[k].as_u64().expect("index") as usize]["text"].clone();
            let same = text("chosen") == text("rejected");
            assert_eq!(r["same_text"], same, "{}", r["id"]);
            if !same {
                paired.push(r["id"].clone());
            }
        }
        assert_eq!(recs[1]["same_text"], true, "three equal answers");
        let summary: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{reading}.summary.json"))).expect("summary"),
        )
        .expect("json");
        assert_eq!(summary["samples_cut"], if reading == "truncate" { 4 } else { 0 });
        assert_eq!(summary["pairs_skipped_same_text"], 2 - paired.len());
        let ps: Vec<Value> = read_jsonl(&pairs).into_iter().map(|p| p["id"].clone()).collect();
        assert_eq!(
            ps, paired,
            "questions whose chosen and rejected are one text have no pair"
        );
        // Resuming writes nothing more: the missing pair is by design, not left to do.
        let before = (std::fs::read(&out).expect("out"), std::fs::read(&pairs).expect("pairs"));
        score(&input, &out, "embedding", &["--long-text", reading, "--pairs", p]).expect("resume");
        assert_eq!(
            (std::fs::read(&out).expect("out"), std::fs::read(&pairs).expect("pairs")),
            before
        );
    }
    assert_eq!(chosen["truncate"], 0, "a tie of four equal truncated texts: the first");
    assert!(chosen["windowed"] >= 2, "windowed sees the endings: {chosen:?}");
    assert!(chosen["answer-span"] >= 2, "the spans agree on Paris: {chosen:?}");
    // The reading is recorded: another one on the same output is refused, naming both.
    let out = dir.path().join("truncate.jsonl");
    let e = format!(
        "{:#}",
        score(&input, &out, "embedding", &["--long-text", "windowed"]).expect_err("reading")
    );
    assert!(e.contains("long_text = \"truncate\" (this run: \"windowed\")"), "{e}");
    // ROUGE-L compares the spans under answer-span: the two Paris answers win there too.
    let out = dir.path().join("rouge.jsonl");
    score(&input, &out, "rouge-l", &["--long-text", "answer-span"]).expect("rouge");
    assert!(read_jsonl(&out)[0]["chosen"].as_u64() >= Some(2));
}
