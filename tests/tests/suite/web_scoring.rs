//! The web crate's scoring, compiled natively, on the real default embedder: the bytes the page
//! gets from `sealong view` (the model directory's files) give the reference MBR scores (within
//! 1e-4 of sentence-transformers) and chosen index, on the CPU engine and on burn flex, and the
//! same rejected draw as `sealong score` with the same seed.

use sealong::mbr::long_text::LongText;
use sealong_tests::{golden_json, minilm_path};
use sealong_web::{Backend, ModelFiles, Scorer};
use serde_json::{Value, json};

fn model_files() -> ModelFiles {
    let dir = minilm_path();
    let mut files = ModelFiles::new();
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "modules.json",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            files.add(
                name,
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            );
        }
    }
    files
}

/// A future of the CPU engines completes on its first poll.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a CPU scoring future waited"),
    }
}

#[test]
fn web_scoring_matches_the_reference_on_both_cpu_engines() {
    let files = model_files();
    let g = golden_json("mbr_embedding.json");
    for backend in [Backend::Cpu, Backend::Flex] {
        let scorer = Scorer::load(&files, "all-MiniLM-L6-v2", backend, None).expect("load");
        for (k, group) in g["groups"].as_array().expect("groups").iter().enumerate() {
            let texts: Vec<String> = group["answers"]
                .as_array()
                .expect("answers")
                .iter()
                .map(|a| a.as_str().expect("text").to_string())
                .collect();
            let id = format!("g{k}");
            let s = ready(scorer.embedding(&id, &texts, 42, LongText::Windowed)).expect("score");
            for (i, want) in group["scores"].as_array().expect("scores").iter().enumerate() {
                let want = want.as_f64().expect("f64");
                assert!(
                    (s.scores[i] - want).abs() <= 1e-4,
                    "{backend:?} {id} {i}: {} vs {want}",
                    s.scores[i]
                );
            }
            assert_eq!(
                s.chosen as u64,
                group["chosen"].as_u64().expect("chosen"),
                "{backend:?} {id}"
            );
            let pool: Vec<usize> = group["rejected_pool"]
                .as_array()
                .expect("pool")
                .iter()
                .map(|v| v.as_u64().expect("u") as usize)
                .collect();
            assert_eq!(s.rejected_pool, pool, "{backend:?} {id}");
            // `sealong score`'s draw: the same stream, (seed, "{id}#score").
            let mut rng = sealong::rng::for_item(42, &format!("{id}#score"));
            let sel = sealong::mbr::select(&s.scores, &mut rng).expect("select");
            assert_eq!(s.rejected, sel.rejected);
        }
    }
}

/// Issue 16, item 3 on the page: answers longer than MiniLM's 256-token window are read as the
/// scored file says (its records' `long_text`), so the page's scores are `sealong score`'s for
/// every reading, and the page reports how many answers were over the window and cut. The
/// answers share a ~400-token reasoning and differ only at the end.
#[test]
fn the_page_reads_long_answers_as_sealong_score_did() {
    let dir = tempfile::tempdir().expect("tmp");
    let long = sealong_tests::long_answers(&["Rome", "Berlin", "Paris", "Paris"]);
    let input = dir.path().join("samples.jsonl");
    let rec = json!({
        "id": "long", "question": "Which city?", "answers": ["Paris"],
        "prompt": "\nPassage 1:\nSome context.\n\nWhich city?\nLet's think.",
        "samples": long.iter().map(|a| json!({"text": a})).collect::<Vec<_>>(),
    });
    std::fs::write(&input, format!("{rec}\n")).expect("write");
    let files = model_files();
    let scorer = Scorer::load(&files, "all-MiniLM-L6-v2", Backend::Cpu, None).expect("load");
    // A samples file (no reading recorded) is read as `sealong score` reads by default.
    let plain = sealong_web::parse(&std::fs::read_to_string(&input).expect("read"), "samples.jsonl");
    assert_eq!(plain.records[0].long_text, LongText::default().name());
    for (reading, over, cut) in [("truncate", 4, 4), ("windowed", 4, 0), ("answer-span", 0, 0)] {
        let out = dir.path().join(format!("{reading}.jsonl"));
        let (i, o) = (input.to_str().expect("utf8"), out.to_str().expect("utf8"));
        sealong_tests::sealong(&[
            "score",
            "--device",
            "cpu",
            "--method",
            "embedding",
            "--long-text",
            reading,
            "--input",
            i,
            "--out",
            o,
        ])
        .expect("score");
        let text = std::fs::read_to_string(&out).expect("scored");
        let native: Value = serde_json::from_str(text.lines().next().expect("a record")).expect("json");
        let page = sealong_web::parse(&text, "scored.jsonl");
        let r = &page.records[0];
        assert_eq!(r.long_text, reading);
        let s = ready(scorer.embedding(&r.id, &r.texts, 42, LongText::from_name(r.long_text).expect("reading")))
            .expect("page scores");
        for (i, want) in native["scores"].as_array().expect("scores").iter().enumerate() {
            let want = want.as_f64().expect("f64");
            // The page's CPU engine is the CLI's: the same f32 vectors and f64 matrix.
            assert!(
                (s.scores[i] - want).abs() <= 1e-6,
                "{reading} {i}: {} vs {want}",
                s.scores[i]
            );
        }
        assert_eq!(s.chosen as u64, native["chosen"].as_u64().expect("chosen"), "{reading}");
        assert_eq!(
            s.rejected as u64,
            native["rejected"].as_u64().expect("rejected"),
            "{reading}"
        );
        assert_eq!((s.long_text, s.over_window, s.cut), (reading, over, cut));
        assert_eq!(
            (native["over_window"].as_u64(), native["cut"].as_u64()),
            (Some(over as u64), Some(cut as u64))
        );
    }
}
