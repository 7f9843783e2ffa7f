//! `sealong synth` on the shipped data: same seed gives byte-identical files, resuming gives the
//! same file as one run, and every record keeps the invariants (supporting passages present,
//! length within the target, LongBench schema, token count right).

use std::collections::HashMap;
use std::path::Path;

use sealong::data::records::{LongBenchRecord, read_longbench, read_musique};
use sealong::loading::{ModelPath, TextAssets};
use sealong_tests::{data_file, sealong, smollm_path};

fn synth(out: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let input = data_file("musique/train.jsonl");
    let pool = data_file("musique/paragraphs.jsonl");
    let model = smollm_path();
    let mut args = vec![
        "synth",
        "--input",
        input.to_str().expect("utf8"),
        "--pool",
        pool.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--model",
        model.to_str().expect("utf8"),
        "--min-k",
        "1",
        "--max-k",
        "6",
    ];
    args.extend_from_slice(extra);
    sealong(&args)
}

#[test]
fn same_seed_same_bytes_and_resume_equals_one_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let c = dir.path().join("c.jsonl");
    synth(&a, &["-n", "12", "--seed", "7"]).expect("synth a");
    synth(&b, &["-n", "12", "--seed", "7"]).expect("synth b");
    let bytes_a = std::fs::read(&a).expect("a");
    assert_eq!(
        bytes_a,
        std::fs::read(&b).expect("b"),
        "same seed must give identical bytes"
    );
    // A run stopped after 5 questions, then resumed, writes the same file.
    synth(&c, &["-n", "5", "--seed", "7"]).expect("synth c part 1");
    // Simulate a kill in the middle of the next record.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&c)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"_id\": \"half"))
        .expect("append partial");
    synth(&c, &["-n", "12", "--seed", "7"]).expect("synth c resumed");
    assert_eq!(bytes_a, std::fs::read(&c).expect("c"), "resumed run must equal one run");
    let other = dir.path().join("d.jsonl");
    synth(&other, &["-n", "12", "--seed", "8"]).expect("synth d");
    assert_ne!(bytes_a, std::fs::read(&other).expect("d"), "another seed should differ");
}

#[test]
fn records_keep_the_invariants() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("q.jsonl");
    synth(&out, &["-n", "30", "--seed", "42"]).expect("synth");
    let records = read_longbench(&out).expect("read back");
    assert_eq!(records.len(), 30);
    let tok = TextAssets::load(&ModelPath::detect(&smollm_path()).expect("detect"))
        .expect("assets")
        .tokenizer;
    let source: HashMap<String, _> = read_musique(&data_file("musique/train.jsonl"))
        .expect("musique")
        .into_iter()
        .map(|l| (l.value.id.clone(), l.value))
        .collect();
    let mut used_pool = 0;
    for l in &records {
        let r: &LongBenchRecord = &l.value;
        let src = source.get(&r.id).expect("id comes from the input");
        assert!(src.answerable);
        assert_eq!(r.input, src.question);
        assert_eq!(r.answers, vec![src.answer.clone()]);
        assert_eq!(r.answer_aliases, src.answer_aliases);
        assert_eq!(r.dataset, "musique");
        let target = r.target_tokens.expect("target");
        assert!(
            target.is_multiple_of(1024) && (1024..=6 * 1024).contains(&target),
            "target {target}"
        );
        let n = r.num_tokens.expect("num_tokens");
        assert_eq!(
            n,
            tok.count(&r.context).expect("count"),
            "num_tokens is the context's count"
        );
        assert_eq!(r.length, r.context.split_whitespace().count());
        // Passages are numbered 1..=k in order.
        let passages: Vec<&str> = r.context.split("Passage ").filter(|p| !p.is_empty()).collect();
        for (i, p) in passages.iter().enumerate() {
            assert!(
                p.starts_with(&format!("{}:\n", i + 1)),
                "passage {} header in {}",
                i + 1,
                r.id
            );
        }
        // Every supporting paragraph is present, at the numbers the record says.
        let supporting: Vec<&str> = src
            .paragraphs
            .iter()
            .filter(|p| p.is_supporting)
            .map(|p| p.paragraph_text.trim())
            .collect();
        for text in &supporting {
            assert!(r.context.contains(text), "{}: supporting paragraph missing", r.id);
        }
        assert_eq!(r.supporting_passages.len(), supporting.len());
        for &k in &r.supporting_passages {
            let body = passages[k - 1];
            assert!(
                supporting.iter().any(|t| body.contains(t)),
                "{}: passage {k} is not supporting",
                r.id
            );
        }
        let support_tokens: usize = supporting.iter().map(|t| tok.count(t).expect("count")).sum();
        assert!(
            n <= target || support_tokens > target,
            "{}: {n} tokens > target {target}",
            r.id
        );
        // First-fit gets close to the target unless the support alone overflows it.
        if support_tokens < target {
            assert!(n + 600 >= target, "{}: {n} tokens is far below target {target}", r.id);
        }
        let own: Vec<&str> = src.paragraphs.iter().map(|p| p.paragraph_text.trim()).collect();
        if passages.iter().any(|p| !own.iter().any(|t| p.contains(t))) {
            used_pool += 1;
        }
    }
    assert!(used_pool > 0, "targets above the own paragraphs must draw on the pool");
}

#[test]
fn eval_files_keep_each_records_own_paragraphs_with_titles() {
    let dir = tempfile::tempdir().expect("tmp");
    for (src, dataset) in [
        ("hotpotqa/dev.jsonl", "hotpotqa"),
        ("2wiki/dev.jsonl", "2wikimqa"),
        ("musique/dev.jsonl", "musique"),
    ] {
        let out = dir.path().join(format!("{dataset}.jsonl"));
        let input = data_file(src);
        sealong(&[
            "synth",
            "--eval",
            "-n",
            "10",
            "--input",
            input.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
            "--model",
            smollm_path().to_str().expect("utf8"),
        ])
        .expect("synth --eval");
        let recs = read_longbench(&out).expect("read");
        assert_eq!(recs.len(), 10);
        // A few real records name supporting titles their context lacks; most have them.
        let with_support = recs.iter().filter(|l| !l.value.supporting_passages.is_empty()).count();
        assert!(
            with_support >= 8,
            "{dataset}: only {with_support} of 10 records have supporting passages"
        );
        for l in recs {
            let r = l.value;
            assert_eq!(r.dataset, dataset);
            assert!(r.target_tokens.is_none());
            assert!(r.context.starts_with("Passage 1:\n"));
            let n_passages = r.context.matches("Passage ").count();
            assert!(
                n_passages >= 10 || dataset == "musique" && n_passages >= 2,
                "{dataset}: {n_passages} passages"
            );
        }
    }
}

#[test]
fn a_pool_too_small_for_the_target_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, "{\"title\": \"T\", \"text\": \"A short paragraph.\"}\n").expect("pool");
    let out = dir.path().join("q.jsonl");
    let input = data_file("musique/train.jsonl");
    let e = sealong(&[
        "synth",
        "-n",
        "2",
        "--min-k",
        "20",
        "--max-k",
        "20",
        "--input",
        input.to_str().expect("utf8"),
        "--pool",
        pool.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--model",
        smollm_path().to_str().expect("utf8"),
    ])
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("pool is too small") && msg.contains("20480"), "{msg}");
    // With --allow-short the same run succeeds.
    sealong(&[
        "synth",
        "-n",
        "2",
        "--min-k",
        "20",
        "--max-k",
        "20",
        "--allow-short",
        "--input",
        input.to_str().expect("utf8"),
        "--pool",
        pool.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--model",
        smollm_path().to_str().expect("utf8"),
    ])
    .expect("allow-short");
    assert_eq!(read_longbench(&out).expect("read").len(), 2);
}
