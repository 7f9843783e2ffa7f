//! The web crate's parsing and scoring on a tiny random encoder, natively (`cargo test -p
//! sealong-web`) and in headless Chromium inside a dedicated Web Worker, as the page runs it
//! (`bash web/test.sh`: wasm-bindgen-test-runner over chromedriver). The browser run also
//! loads the encoder on WebGPU (Chromium's SwiftShader adapter) through the JavaScript surface
//! and holds it to the CPU engine (with the `webgpu` feature, as web/test.sh builds it).

mod tiny;

use sealong::mbr;
use sealong::mbr::long_text::LongText;
use sealong::mbr::rouge;
use sealong_web::{Backend, Scored, Scorer};

#[cfg(target_family = "wasm")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// Runs a future that never waits (the CPU engines' futures resolve on first poll); natively the
/// tests need no executor beyond this.
#[cfg(not(target_family = "wasm"))]
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a CPU scoring future waited"),
    }
}

/// Declares a test that runs natively (`#[test]`) and in the browser (`#[wasm_bindgen_test]`).
macro_rules! both {
    ($name:ident, $body:expr) => {
        #[cfg(not(target_family = "wasm"))]
        #[test]
        fn $name() {
            ready($body);
        }
        #[cfg(target_family = "wasm")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        async fn $name() {
            $body.await;
        }
    };
}

fn close(a: &Scored, b: &Scored, tol: f64, what: &str) {
    assert_eq!(a.n, b.n, "{what}");
    for (x, y) in a.scores.iter().zip(&b.scores) {
        assert!((x - y).abs() <= tol, "{what}: score {x} vs {y}");
    }
    for (x, y) in a.matrix.iter().zip(&b.matrix) {
        assert!((x - y).abs() <= tol, "{what}: similarity {x} vs {y}");
    }
    assert_eq!(a.chosen, b.chosen, "{what}: chosen");
    assert_eq!(a.rejected_pool, b.rejected_pool, "{what}: rejected pool");
}

async fn parse_then_rouge() {
    let texts = tiny::answers();
    let good = serde_json::json!({"id": "q1", "question": "Capital?", "answers": ["Paris"],
        "prompt": "\nctx\n\nCapital?\nThink.", "samples": texts});
    let text = format!("{good}\n{{\"id\": 2,\n");
    let f = sealong_web::parse(&text, "up.jsonl");
    assert_eq!(f.records.len(), 1);
    assert_eq!(f.errors.len(), 1);
    assert!(
        f.errors[0].message.starts_with("up.jsonl:2: malformed JSON"),
        "{:?}",
        f.errors
    );
    let r = &f.records[0];
    assert_eq!(r.sub_em.as_deref(), Some(&[true, true, false, false, true][..]));
    let s = sealong_web::scoring::rouge_l("q1", &r.texts, 42, LongText::Windowed).expect("rouge");
    let m = rouge::rouge_l_f1_matrix(&r.texts);
    let want = mbr::select_from_matrix(&m, r.texts.len(), &mut sealong::rng::for_item(42, "q1#score")).expect("sel");
    assert_eq!(
        (s.chosen, s.rejected, &s.scores),
        (want.chosen, want.rejected, &want.scores)
    );
}
both!(parse_then_rouge_l_is_the_core_selection, parse_then_rouge());

async fn engines() {
    let files = tiny::model_files();
    let texts = tiny::answers();
    let cpu = Scorer::load(&files, "tiny", Backend::Cpu, None).expect("cpu");
    let flex = Scorer::load(&files, "tiny", Backend::Flex, None).expect("flex");
    let a = cpu
        .embedding("q", &texts, 42, LongText::Windowed)
        .await
        .expect("cpu scores");
    let b = flex
        .embedding("q", &texts, 42, LongText::Windowed)
        .await
        .expect("flex scores");
    assert_eq!(a.matrix.len(), texts.len() * texts.len());
    for i in 0..a.n {
        // Normalized vectors: self-similarity 1.
        assert!((a.matrix[i * a.n + i] - 1.0).abs() < 1e-6, "diag {i}");
    }
    // The host engine and burn's twin agree to f32 rounding (ARCHITECTURE: max |d| <= 1e-5).
    close(&a, &b, 1e-5, "cpu engine vs burn flex");
    assert!(a.rejected_pool.contains(&a.rejected));
    assert_eq!(
        (a.over_window, a.cut),
        (0, 0),
        "the short answers fit the 32-token window"
    );
    // Answers over the window: read in windows by both engines, counted, none cut.
    let long = tiny::long_answers();
    let a = cpu
        .embedding("q", &long, 42, LongText::Windowed)
        .await
        .expect("cpu windowed");
    let b = flex
        .embedding("q", &long, 42, LongText::Windowed)
        .await
        .expect("flex windowed");
    close(&a, &b, 1e-5, "windowed: cpu engine vs burn flex");
    assert_eq!((a.over_window, a.cut, b.over_window), (long.len(), 0, long.len()));
    let t = cpu
        .embedding("q", &long, 42, LongText::Truncate)
        .await
        .expect("cpu truncated");
    assert_eq!(
        (t.over_window, t.cut, t.long_text),
        (long.len(), long.len(), "truncate")
    );
}
both!(cpu_engine_and_burn_flex_agree, engines());

async fn missing_file() {
    let mut files = sealong_web::ModelFiles::new();
    for (name, bytes) in tiny::files() {
        if name != "tokenizer.json" {
            files.add(&name, bytes);
        }
    }
    let e = Scorer::load(&files, "picked", Backend::Cpu, None).expect_err("no tokenizer");
    assert!(e.to_string().contains("tokenizer.json is missing"), "{e}");
    let mut broken = sealong_web::ModelFiles::new();
    for (name, mut bytes) in tiny::files() {
        if name == "model.safetensors" {
            bytes.truncate(bytes.len() / 2);
        }
        broken.add(&name, bytes);
    }
    let e = Scorer::load(&broken, "cut", Backend::Cpu, None).expect_err("truncated weights");
    assert!(e.to_string().contains("safetensors"), "{e}");
}
both!(missing_or_broken_model_files_are_clear_errors, missing_file());

/// The JavaScript surface in the worker: WebGPU through `loadScorer`, the CPU engine through the
/// same call, results as the JSON the page parses.
#[cfg(target_family = "wasm")]
mod browser {
    use super::*;
    use sealong_web::bindings::{self, JsModelFiles};
    use serde_json::Value;
    use wasm_bindgen_futures::JsFuture;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn js_files() -> JsModelFiles {
        let mut f = JsModelFiles::new();
        for (name, bytes) in tiny::files() {
            f.add(&name, bytes);
        }
        f
    }

    async fn scored(backend: &str, texts: Vec<String>) -> (String, Value) {
        let scorer = bindings::load_scorer(js_files(), "tiny".into(), backend.into())
            .await
            .unwrap_or_else(|e| panic!("loading on {backend}: {:?}", wasm_bindgen::JsValue::from(e)));
        let v = JsFuture::from(scorer.embedding("q".into(), texts, 42, "windowed".into()))
            .await
            .unwrap_or_else(|e| panic!("scoring on {backend}: {e:?}"));
        let text = v.as_string().expect("JSON text");
        (scorer.backend(), serde_json::from_str(&text).expect("JSON"))
    }

    fn as_scored(v: &Value) -> Scored {
        let f = |k: &str| -> Vec<f64> { v[k].as_array().expect(k).iter().map(|x| x.as_f64().expect(k)).collect() };
        let u = |x: &Value| x.as_u64().expect("index") as usize;
        Scored {
            utility: "embedding",
            n: u(&v["n"]),
            matrix: f("matrix"),
            scores: f("scores"),
            chosen: u(&v["chosen"]),
            rejected: u(&v["rejected"]),
            rejected_pool: v["rejected_pool"].as_array().expect("pool").iter().map(u).collect(),
            long_text: "windowed",
            over_window: u(&v["over_window"]),
            cut: u(&v["cut"]),
        }
    }

    /// The WebGPU module's test (`web/test.sh` builds the tests with the `webgpu` feature).
    #[cfg(feature = "webgpu")]
    #[wasm_bindgen_test]
    async fn webgpu_in_a_worker_matches_the_cpu_engine() {
        for texts in [tiny::answers(), tiny::long_answers()] {
            let (cpu_backend, cpu) = scored("cpu", texts.clone()).await;
            assert_eq!(cpu_backend, "cpu");
            let (gpu_backend, gpu) = scored("webgpu", texts).await;
            assert_eq!(gpu_backend, "webgpu");
            // f32 on SwiftShader vs the host engine: rounding only; long answers in windows on both
            // (the device read-back is asynchronous, as the browser requires).
            close(&as_scored(&gpu), &as_scored(&cpu), 1e-4, "webgpu vs cpu engine");
            assert_eq!(gpu["over_window"], cpu["over_window"]);
            assert_eq!(gpu["long_text"], "windowed");
        }
    }

    #[wasm_bindgen_test]
    fn parse_and_rouge_through_the_js_surface() {
        let text = "{\"id\":\"a\",\"prompt\":\"p\",\"samples\":[\"x y\",\"x\"]}\nnot json\n";
        let v: Value = serde_json::from_str(&bindings::parse_jsonl(text, "f.jsonl").expect("parse")).expect("json");
        assert_eq!(v["records"].as_array().expect("records").len(), 1);
        assert_eq!(v["errors"][0]["line"], 2);
        let r: Value = serde_json::from_str(
            &bindings::rouge_l("a", vec!["x y".into(), "x".into()], 42, "windowed").expect("rouge"),
        )
        .expect("json");
        assert_eq!(r["n"], 2);
        assert_eq!(r["matrix"].as_array().expect("matrix").len(), 4);
        let e = bindings::rouge_l("a", vec!["x y".into(), "x".into()], 42, "head").expect_err("unknown reading");
        assert!(e.to_string().contains("windowed"), "{e}");
        assert!(bindings::last_panic().is_none());
    }
}
