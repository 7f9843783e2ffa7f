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

/// Issue 17: a rerun into the same file with another seed (or another length rule) would
/// append questions drawn differently; it is refused, naming the setting, and writes nothing.
#[test]
fn a_rerun_with_other_settings_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a.jsonl");
    synth(&a, &["-n", "2", "--seed", "7"]).expect("synth");
    let before = std::fs::read(&a).expect("a");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("a.jsonl.meta.json")).expect("sidecar")).expect("json");
    assert_eq!(meta["stage"], "synth");
    assert_eq!(meta["settings"]["target"], serde_json::json!({"min_k": 1, "max_k": 6}));
    let e = format!(
        "{:#}",
        synth(&a, &["-n", "2", "--seed", "8"]).expect_err("another seed")
    );
    assert!(
        e.contains("seed = 7 (this run: 8)") && e.contains("a.jsonl.meta.json"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        synth(&a, &["-n", "2", "--seed", "7", "--allow-short"]).expect_err("another length rule")
    );
    assert!(e.contains("allow_short = false (this run: true)"), "{e}");
    assert_eq!(std::fs::read(&a).expect("a"), before, "a refused rerun writes nothing");
    // More questions are not another setting: the selection is a prefix of one seeded order.
    synth(&a, &["-n", "3", "--seed", "7"]).expect("resume");
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

/// `synth --eval --target-tokens`: long evaluation files. Each record keeps every one of its own
/// paragraphs (as the plain eval file has them), is padded with pool passages to its target
/// (within the longest pool passage below it, never above), holds no pool passage whose title or
/// text is one of its own, records its target, and sits at seeded positions (same seed, same
/// bytes).
#[test]
fn long_eval_files_pad_own_paragraphs_to_each_target() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = data_file("hotpotqa/dev.jsonl");
    let pool = data_file("musique/paragraphs.jsonl");
    let run = |out: &Path, extra: &[&str]| {
        let model = smollm_path();
        let mut a = vec![
            "synth",
            "--eval",
            "-n",
            "8",
            "--input",
            input.to_str().expect("utf8"),
            "--out",
            out.to_str().expect("utf8"),
            "--model",
            model.to_str().expect("utf8"),
        ];
        a.extend_from_slice(extra);
        sealong(&a).expect("synth --eval");
    };
    let own = dir.path().join("own.jsonl");
    run(&own, &[]);
    let long = dir.path().join("long.jsonl");
    let pool_arg = pool.to_str().expect("utf8");
    run(&long, &["--target-tokens", "4096,8192", "--pool", pool_arg]);
    let again = dir.path().join("again.jsonl");
    run(&again, &["--target-tokens", "4096,8192", "--pool", pool_arg]);
    for t in [4096, 8192] {
        let a = std::fs::read(dir.path().join(format!("long-{t}.jsonl"))).expect("long file");
        let b = std::fs::read(dir.path().join(format!("again-{t}.jsonl"))).expect("long file");
        assert!(a == b, "{t}: the same seed gave other bytes");
    }
    assert!(!long.exists(), "two targets write OUT-<tokens>.jsonl, not OUT");

    let pool_docs: Vec<_> = sealong::data::records::read_paragraphs(&pool)
        .expect("pool")
        .into_iter()
        .map(|l| l.value)
        .collect();
    let assets = TextAssets::load(&ModelPath::detect(&smollm_path()).expect("model")).expect("tokenizer");
    let longest_pool_doc = pool_docs
        .iter()
        .map(|d| {
            assets
                .tokenizer
                .count(&format!("Passage 10:\n{}\n{}", d.title, d.text))
                .expect("count")
        })
        .max()
        .expect("pool");
    // A context's passages in order, by their numbered headers (a passage's text may itself
    // say "Passage").
    let passages = |ctx: &str| -> Vec<String> {
        let mut rest = ctx.strip_prefix("Passage 1:\n").expect("first passage header");
        let mut out = Vec::new();
        for i in 2.. {
            let marker = format!("\nPassage {i}:\n");
            match rest.find(&marker) {
                Some(k) => {
                    out.push(rest[..k].to_string());
                    rest = &rest[k + marker.len()..];
                }
                None => {
                    out.push(rest.to_string());
                    break;
                }
            }
        }
        out
    };
    let own_recs = read_longbench(&own).expect("own");
    for t in [4096usize, 8192] {
        let recs = read_longbench(&dir.path().join(format!("long-{t}.jsonl"))).expect("long");
        assert_eq!(recs.len(), own_recs.len());
        for (o, l) in own_recs.iter().zip(&recs) {
            let (o, r) = (&o.value, &l.value);
            assert_eq!((r.id.as_str(), r.dataset.as_str()), (o.id.as_str(), "hotpotqa"));
            assert_eq!(r.target_tokens, Some(t));
            let n = r.num_tokens.expect("num_tokens");
            assert_eq!(n, assets.tokenizer.count(&r.context).expect("count"), "{}", r.id);
            assert!(
                n <= t && n + longest_pool_doc >= t,
                "{} at {t}: {n} tokens (longest pool passage {longest_pool_doc})",
                r.id
            );
            let mine = passages(&r.context);
            let theirs = passages(&o.context);
            for p in &theirs {
                assert!(mine.contains(p), "{} at {t}: an own paragraph is missing", r.id);
            }
            // Every added passage is a pool document, none with an own title or text.
            let own_titles: Vec<&str> = theirs.iter().map(|p| p.split('\n').next().unwrap_or("")).collect();
            for p in mine.iter().filter(|p| !theirs.contains(p)) {
                let (title, text) = p.split_once('\n').expect("title line");
                assert!(
                    pool_docs
                        .iter()
                        .any(|d| d.title == title && d.text.trim() == text.trim()),
                    "{} at {t}: passage {title:?} is not from the pool",
                    r.id
                );
                assert!(
                    !own_titles.contains(&title),
                    "{} at {t}: pool passage repeats own title {title:?}",
                    r.id
                );
                assert!(
                    theirs.iter().all(|o| o.split_once('\n').map(|(_, x)| x) != Some(text)),
                    "{} at {t}: pool passage repeats an own paragraph",
                    r.id
                );
            }
            // The supporting passages' indices still point at the same paragraphs.
            let own_support: Vec<&String> = o.supporting_passages.iter().map(|&i| &theirs[i - 1]).collect();
            let long_support: Vec<&String> = r.supporting_passages.iter().map(|&i| &mine[i - 1]).collect();
            let (mut a, mut b) = (own_support, long_support);
            a.sort();
            b.sort();
            assert_eq!(a, b, "{} at {t}: supporting passages", r.id);
        }
    }
    // A target needs a pool; --target-tokens needs --eval.
    let x = dir.path().join("x.jsonl");
    let e = sealong(&[
        "synth",
        "--eval",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        x.to_str().expect("utf8"),
        "--target-tokens",
        "4096",
    ])
    .unwrap_err();
    assert!(format!("{e:#}").contains("--pool"), "{e:#}");
    let e = sealong(&[
        "synth",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        x.to_str().expect("utf8"),
        "--target-tokens",
        "4096",
    ])
    .unwrap_err();
    assert!(format!("{e:#}").contains("--eval"), "{e:#}");
}
