//! The JavaScript surface (wasm32 only): thin wrappers over `records` and `scoring`, which hold
//! the logic and are tested natively. A separate module rather than `cfg_attr(wasm_bindgen)` on
//! those types because an exported async method must return a `'static` future: the scorer is
//! shared through an `Rc` and its methods hand back promises.
//!
//! Results cross the boundary as JSON text (the worker `JSON.parse`s them): one copy, no
//! per-field glue, and the same serialization the native tests check.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::WebError;
use crate::scoring::{self, Backend, ModelFiles, Scorer};
use sealong::mbr::long_text::LongText;

thread_local! {
    /// The last panic message: a panic aborts the wasm call with a bare "unreachable", so the
    /// worker asks for this to show the page what actually went wrong.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("panic in sealong-web: {info}");
        console_error(&message);
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(message));
    }));
}

/// The message of the last panic, if any (see `LAST_PANIC`).
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, WebError> {
    serde_json::to_string(v).map_err(|e| WebError::new(format!("serializing a result: {e}")))
}

/// Parses a samples or scored JSONL text; JSON of `records::ParsedFile`.
#[wasm_bindgen(js_name = parseJsonl)]
pub fn parse_jsonl(text: &str, name: &str) -> Result<String, WebError> {
    json(&crate::records::parse(text, name))
}

/// How long answers are read (`truncate`, `windowed` or `answer-span`; a record's `long_text`).
fn reading(long_text: &str) -> Result<LongText, WebError> {
    Ok(LongText::from_name(long_text)?)
}

/// ROUGE-L MBR of one question; JSON of `scoring::Scored`.
#[wasm_bindgen(js_name = rougeL)]
pub fn rouge_l(id: &str, texts: Vec<String>, seed: u64, long_text: &str) -> Result<String, WebError> {
    json(&scoring::rouge_l(id, &texts, seed, reading(long_text)?)?)
}

/// chrF MBR of one question; JSON of `scoring::Scored`.
#[wasm_bindgen]
pub fn chrf(id: &str, texts: Vec<String>, seed: u64, long_text: &str) -> Result<String, WebError> {
    json(&scoring::chrf(id, &texts, seed, reading(long_text)?)?)
}

/// SubEM of one answer against gold answers (the core metric).
#[wasm_bindgen(js_name = subEm)]
pub fn sub_em(prediction: &str, golds: Vec<String>) -> bool {
    crate::sub_em(prediction, &golds)
}

/// A model directory's files, added one by one from the page's fetches or picked folder.
#[wasm_bindgen(js_name = ModelFiles)]
#[derive(Default)]
pub struct JsModelFiles(ModelFiles);

#[wasm_bindgen(js_class = ModelFiles)]
impl JsModelFiles {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file under its path relative to the model directory (e.g. `1_Pooling/config.json`).
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) {
        self.0.add(name, bytes);
    }

    pub fn names(&self) -> Vec<String> {
        self.0.names()
    }
}

/// A loaded embedding scorer.
#[wasm_bindgen]
pub struct WebScorer {
    inner: Rc<Scorer>,
}

/// Loads the encoder on `backend` (`webgpu`, `cpu` or `flex`). For `webgpu` the browser's GPU
/// is opened first; an error there is returned (the page then starts a CPU worker).
#[wasm_bindgen(js_name = loadScorer)]
pub async fn load_scorer(files: JsModelFiles, source: String, backend: String) -> Result<WebScorer, WebError> {
    let backend = Backend::parse(&backend)?;
    let device = match backend {
        Backend::WebGpu => Some(scoring::webgpu_device().await?),
        _ => None,
    };
    let scorer = Scorer::load(&files.0, &source, backend, device.as_ref())?;
    Ok(WebScorer { inner: Rc::new(scorer) })
}

#[wasm_bindgen]
impl WebScorer {
    /// `webgpu`, `cpu` or `flex`: what actually runs.
    pub fn backend(&self) -> String {
        self.inner.backend().name().to_string()
    }

    pub fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Embedding MBR of one question, long answers read as `long_text` says: a promise of the
    /// JSON of `scoring::Scored`.
    pub fn embedding(&self, id: String, texts: Vec<String>, seed: u64, long_text: String) -> Promise {
        let scorer = Rc::clone(&self.inner);
        future_to_promise(async move {
            let scored = scorer.embedding(&id, &texts, seed, reading(&long_text)?).await?;
            Ok(JsValue::from_str(&json(&scored)?))
        })
    }
}
