//! The web crate's scoring, compiled natively, on the real default embedder: the bytes the page
//! gets from `sealong view` (the model directory's files) give the reference MBR scores (within
//! 1e-4 of sentence-transformers) and chosen index, on the CPU engine and on burn flex, and the
//! same rejected draw as `sealong score` with the same seed.

use sealong_tests::{golden_json, minilm_path};
use sealong_web::{Backend, ModelFiles, Scorer};

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
            let s = ready(scorer.embedding(&id, &texts, 42)).expect("score");
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
