//! MBR scoring as the page runs it, with the code `sealong score` runs: the core encoder embeds
//! a question's answers, `mbr::embedding::similarity_matrix` builds the f64 utility matrix (or
//! `mbr::rouge::rouge_l_f1_matrix` the ROUGE-L one), and `mbr::select_from_matrix` gives
//! scores, chosen and rejected with the same per-question random stream (seed, `"{id}#score"`),
//! so the page reproduces the native file's numbers.

use burn::tensor::Device;
use sealong::mbr::{self, Selection, embedding, rouge};
use sealong::models::encoder::{EncoderFiles, SentenceEmbedder};
use sealong::rng;
use serde::Serialize;

use crate::error::WebError;

/// Where the encoder runs in the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// burn-wgpu on the browser's WebGPU (the encoder's burn twin).
    WebGpu,
    /// sealong's host engine compiled to wasm (what `sealong score --device cpu` runs).
    Cpu,
    /// burn's `flex` CPU backend running the burn twin (for comparing the two engines).
    Flex,
}

impl Backend {
    pub fn parse(name: &str) -> Result<Self, WebError> {
        match name {
            "webgpu" => Ok(Backend::WebGpu),
            "cpu" => Ok(Backend::Cpu),
            "flex" => Ok(Backend::Flex),
            other => Err(WebError::new(format!(
                "unknown backend {other:?} (webgpu, cpu or flex)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::WebGpu => "webgpu",
            Backend::Cpu => "cpu",
            Backend::Flex => "flex",
        }
    }
}

/// A sentence-transformers model directory as `(relative path, bytes)` pairs: `config.json`,
/// `tokenizer.json`, `*.safetensors`, and optionally `1_Pooling/config.json`,
/// `sentence_bert_config.json`, `modules.json` (the files `SentenceEmbedder::load_dir` reads).
/// A picked directory's names may carry the directory itself as a first component; it is
/// stripped.
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    files: Vec<(String, Vec<u8>)>,
}

impl ModelFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one file under its path relative to the model directory.
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) {
        self.files.push((name.replace('\\', "/"), bytes));
    }

    pub fn names(&self) -> Vec<String> {
        self.files.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The file whose path is `rel` or ends with `/rel` (a picked folder's own name first).
    fn get(&self, rel: &str) -> Option<&[u8]> {
        let exact = self.files.iter().find(|(n, _)| n == rel);
        let nested = || {
            self.files
                .iter()
                .filter(|(n, _)| n.ends_with(&format!("/{rel}")))
                .min_by_key(|(n, _)| n.len())
        };
        exact.or_else(nested).map(|(_, b)| b.as_slice())
    }

    fn required(&self, rel: &str, source: &str) -> Result<&[u8], WebError> {
        self.get(rel).ok_or_else(|| {
            WebError::new(format!(
                "model {source}: {rel} is missing (a sentence-transformers model directory has config.json, \
                 tokenizer.json and model.safetensors; got {})",
                self.listing()
            ))
        })
    }

    fn listing(&self) -> String {
        if self.files.is_empty() {
            "no files".into()
        } else {
            self.names().join(", ")
        }
    }

    /// The model's weight files: `model.safetensors`, else every `*.safetensors` (shards) at the
    /// top of the directory (not in sub-modules such as `1_Pooling/`).
    fn safetensors(&self) -> Vec<(String, &[u8])> {
        let depth = |n: &str| n.matches('/').count();
        let top = self
            .files
            .iter()
            .filter(|(n, _)| n == "config.json" || n.ends_with("/config.json"))
            .map(|(n, _)| depth(n))
            .min()
            .unwrap_or(0);
        let mut st: Vec<(String, &[u8])> = self
            .files
            .iter()
            .filter(|(n, _)| n.ends_with(".safetensors") && depth(n) == top)
            .map(|(n, b)| (n.clone(), b.as_slice()))
            .collect();
        st.sort_by(|a, b| a.0.cmp(&b.0));
        // As `load_dir`: a single model.safetensors is the model; other files are shards.
        if let Some(single) = st
            .iter()
            .position(|(n, _)| n == "model.safetensors" || n.ends_with("/model.safetensors"))
        {
            return vec![st.swap_remove(single)];
        }
        st
    }
}

/// One question scored by one utility: what the page draws.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    /// `embedding` or `rouge-l` (the names `sealong score` writes as `method`).
    pub utility: &'static str,
    pub n: usize,
    /// Row-major `[n, n]` utility matrix.
    pub matrix: Vec<f64>,
    pub scores: Vec<f64>,
    pub chosen: usize,
    pub rejected: usize,
    pub rejected_pool: Vec<usize>,
}

impl Scored {
    fn new(utility: &'static str, n: usize, matrix: Vec<f64>, sel: Selection) -> Self {
        Scored {
            utility,
            n,
            matrix,
            scores: sel.scores,
            chosen: sel.chosen,
            rejected: sel.rejected,
            rejected_pool: sel.rejected_pool,
        }
    }
}

/// Selection with `sealong score`'s per-question random stream, so `rejected` matches too.
fn select(id: &str, matrix: &[f64], n: usize, seed: u64) -> Result<Selection, WebError> {
    let mut rng = rng::for_item(seed, &format!("{id}#score"));
    Ok(mbr::select_from_matrix(matrix, n, &mut rng)?)
}

/// ROUGE-L F1 MBR of one question (`sealong score --method rouge-l`). No model needed.
pub fn rouge_l(id: &str, texts: &[String], seed: u64) -> Result<Scored, WebError> {
    let n = texts.len();
    let m = rouge::rouge_l_f1_matrix(texts);
    let sel = select(id, &m, n, seed)?;
    Ok(Scored::new("rouge-l", n, m, sel))
}

/// The embedding scorer: a loaded encoder on one backend.
#[derive(Debug)]
pub struct Scorer {
    embedder: SentenceEmbedder,
    backend: Backend,
    source: String,
}

impl Scorer {
    /// Loads the encoder from `files` for `backend`. WebGPU must be opened first
    /// ([`webgpu_device`]); `device` is that device for `Backend::WebGpu`.
    pub fn load(files: &ModelFiles, source: &str, backend: Backend, device: Option<&Device>) -> Result<Self, WebError> {
        let config_json = files.required("config.json", source)?;
        let tokenizer_json = files.required("tokenizer.json", source)?;
        let safetensors = files.safetensors();
        if safetensors.is_empty() {
            return Err(WebError::new(format!(
                "model {source}: no .safetensors weights (got {})",
                files.listing()
            )));
        }
        let encoder_files = EncoderFiles {
            source: source.to_string(),
            config_json,
            tokenizer_json,
            safetensors,
            pooling_json: files.get("1_Pooling/config.json"),
            sentence_config_json: files.get("sentence_bert_config.json"),
            modules_json: files.get("modules.json"),
            tokenizer_config_json: files.get("tokenizer_config.json"),
        };
        let flex = Device::flex();
        let on = match backend {
            Backend::Cpu => None,
            Backend::Flex => Some(&flex),
            Backend::WebGpu => Some(device.ok_or_else(|| WebError::new("WebGPU was not opened before loading"))?),
        };
        let embedder = SentenceEmbedder::from_files_on(&encoder_files, on)?;
        Ok(Scorer {
            embedder,
            backend,
            source: source.to_string(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What the page shows about the model: backend, engine, source and width.
    pub fn describe(&self) -> String {
        let engine = match self.backend {
            Backend::WebGpu => "burn-wgpu on WebGPU",
            Backend::Cpu => "sealong's CPU engine (wasm)",
            Backend::Flex => "burn flex (CPU)",
        };
        format!("{} · {} · {}-dim embeddings", engine, self.source, self.embedder.dim())
    }

    /// Embedding MBR of one question (`sealong score --method embedding`).
    pub async fn embedding(&self, id: &str, texts: &[String], seed: u64) -> Result<Scored, WebError> {
        let n = texts.len();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let emb = self.embedder.embed_async(&refs).await?;
        let m = embedding::similarity_matrix(&emb)?;
        let sel = select(id, &m, n, seed)?;
        Ok(Scored::new("embedding", n, m, sel))
    }
}

/// Opens burn-wgpu on the browser's WebGPU once per worker (a wgpu runtime can be initialised
/// only once; later calls reuse the device).
pub async fn webgpu_device() -> Result<Device, WebError> {
    thread_local! {
        static GPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
    }
    if let Some(d) = GPU.with(|g| g.borrow().clone()) {
        return Ok(d);
    }
    let d = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| WebError::new(format!("WebGPU could not be opened: {e}")))?;
    GPU.with(|g| *g.borrow_mut() = Some(d.clone()));
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_files_find_nested_and_top_level_weights() {
        let mut f = ModelFiles::new();
        f.add("minilm/config.json", b"{}".to_vec());
        f.add("minilm/1_Pooling/config.json", b"{\"p\":1}".to_vec());
        f.add("minilm/model.safetensors", vec![1]);
        f.add("minilm/1_Pooling/extra.safetensors", vec![2]);
        assert_eq!(f.get("config.json"), Some(&b"{}"[..]));
        assert_eq!(f.get("1_Pooling/config.json"), Some(&b"{\"p\":1}"[..]));
        let st = f.safetensors();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].0, "minilm/model.safetensors");
        let e = f.required("tokenizer.json", "picked").expect_err("missing");
        assert!(e.to_string().contains("tokenizer.json is missing"), "{e}");
    }

    #[test]
    fn rouge_l_selection_is_the_native_one() {
        let texts: Vec<String> = ["the cat sat", "the cat sat down", "a dog"].map(String::from).into();
        let s = rouge_l("q1", &texts, 42).expect("rouge");
        let m = rouge::rouge_l_f1_matrix(&texts);
        let mut r = rng::for_item(42, "q1#score");
        let want = mbr::select_from_matrix(&m, 3, &mut r).expect("select");
        assert_eq!(
            (s.chosen, s.rejected, &s.scores),
            (want.chosen, want.rejected, &want.scores)
        );
        assert_eq!(s.matrix.len(), 9);
        assert!(rouge_l("q", &texts[..1], 42).is_err());
        assert!(Backend::parse("tpu").is_err());
    }
}
