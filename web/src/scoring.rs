//! MBR scoring as the page runs it, with the code `sealong score` runs: the core encoder embeds
//! a question's answers and core's `mbr::method` ranks them (the f64 similarity matrix on the
//! CPU backends, the cubecl MBR kernel on WebGPU, as `sealong score --device gpu`), or ranks the
//! texts by a pairwise utility (ROUGE-L, chrF), with the same per-question random stream
//! (`method::score_stream`, seed and `"{id}#score"`), so the page reproduces the native file's
//! numbers.

use burn::tensor::Device;
use sealong::mbr::long_text::{self, LongText};
use sealong::mbr::{Method, Ranked, method};
use sealong::models::encoder::{EncoderFiles, SentenceEmbedder};
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
    /// `embedding`, `rouge-l` or `chrf` (the names `sealong score` writes as `method`).
    pub utility: &'static str,
    pub n: usize,
    /// Row-major `[n, n]` utility matrix.
    pub matrix: Vec<f64>,
    pub scores: Vec<f64>,
    pub chosen: usize,
    pub rejected: usize,
    pub rejected_pool: Vec<usize>,
    /// How answers longer than the embedder's window were read (`sealong score --long-text`).
    pub long_text: &'static str,
    /// Answers longer than the embedder's window (embedding; under `answer-span`, the spans).
    pub over_window: usize,
    /// Of those, the answers the embedder saw only the beginning of (`truncate`).
    pub cut: usize,
}

impl Scored {
    fn new(method: Method, n: usize, r: Ranked, reading: LongText) -> Self {
        Scored {
            utility: method.name(),
            n,
            matrix: r.matrix,
            scores: r.selection.scores,
            chosen: r.selection.chosen,
            rejected: r.selection.rejected,
            rejected_pool: r.selection.rejected_pool,
            long_text: reading.name(),
            over_window: 0,
            cut: 0,
        }
    }
}

/// MBR of one question by a pairwise text utility (`sealong score --method rouge-l|chrf
/// --long-text READING`: only `answer-span` changes what they compare). No model needed; a
/// method that needs one is an error.
pub fn text_utility(
    method: Method,
    id: &str,
    texts: &[String],
    seed: u64,
    reading: LongText,
) -> Result<Scored, WebError> {
    let ranked = method::rank_texts(method, &reading.texts(texts), &mut method::score_stream(seed, id))?;
    Ok(Scored::new(method, texts.len(), ranked, reading))
}

/// ROUGE-L F1 MBR of one question (`sealong score --method rouge-l`).
pub fn rouge_l(id: &str, texts: &[String], seed: u64, reading: LongText) -> Result<Scored, WebError> {
    text_utility(Method::RougeL, id, texts, seed, reading)
}

/// chrF MBR of one question (`sealong score --method chrf`).
pub fn chrf(id: &str, texts: &[String], seed: u64, reading: LongText) -> Result<Scored, WebError> {
    text_utility(Method::Chrf, id, texts, seed, reading)
}

/// The embedding scorer: a loaded encoder on one backend.
#[derive(Debug)]
pub struct Scorer {
    embedder: SentenceEmbedder,
    backend: Backend,
    source: String,
    /// The WebGPU device, where the MBR kernel runs (`None`: the host's f64 path).
    gpu: Option<Device>,
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
        let gpu = (backend == Backend::WebGpu).then(|| on.cloned()).flatten();
        Ok(Scorer {
            embedder,
            backend,
            source: source.to_string(),
            gpu,
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

    /// Embedding MBR of one question (`sealong score --method embedding --long-text READING`):
    /// answers longer than the embedder's window are read as `sealong score` reads them, and
    /// counted.
    pub async fn embedding(
        &self,
        id: &str,
        texts: &[String],
        seed: u64,
        reading: LongText,
    ) -> Result<Scored, WebError> {
        let emb = long_text::embed_async(&self.embedder, texts, reading).await?;
        let ranked =
            method::rank_embeddings_async(&emb.vectors, self.gpu.as_ref(), &mut method::score_stream(seed, id)).await?;
        Ok(Scored {
            over_window: emb.over_window,
            cut: emb.cut,
            ..Scored::new(Method::Embedding, texts.len(), ranked, reading)
        })
    }
}

/// Opens burn-wgpu on the browser's WebGPU once per worker (a wgpu runtime can be initialised
/// only once; later calls reuse the device).
#[cfg(feature = "webgpu")]
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

/// The CPU module (built without the `webgpu` feature) has no WebGPU: the page's worker loads
/// the WebGPU module (`pkg-gpu/`, web/build.sh) for that.
#[cfg(not(feature = "webgpu"))]
pub async fn webgpu_device() -> Result<Device, WebError> {
    Err(WebError::new(
        "WebGPU is not in this module: it is the page's CPU module, built without the `webgpu` feature \
         (the page loads pkg-gpu/ for WebGPU)",
    ))
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
    fn text_utility_selections_are_the_native_ones() {
        use sealong::mbr::{chrf::chrf_matrix, rouge::rouge_l_f1_matrix};
        let texts: Vec<String> = ["the cat sat", "the cat sat down", "a dog"].map(String::from).into();
        type Score = fn(&str, &[String], u64, LongText) -> Result<Scored, WebError>;
        let cases: [(Score, Vec<f64>, &str); 2] = [
            (rouge_l, rouge_l_f1_matrix(&texts), "rouge-l"),
            (chrf, chrf_matrix(&texts), "chrf"),
        ];
        for (score, m, name) in cases {
            let s = score("q1", &texts, 42, LongText::Windowed).expect(name);
            let mut r = sealong::rng::for_item(42, "q1#score");
            let want = sealong::mbr::select_from_matrix(&m, 3, &mut r).expect("select");
            assert_eq!(
                (s.chosen, s.rejected, &s.scores, s.utility),
                (want.chosen, want.rejected, &want.scores, name)
            );
            assert_eq!(s.matrix, m);
            assert!(score("q", &texts[..1], 42, LongText::Windowed).is_err());
            // Answer spans: what `sealong score --long-text answer-span` compares.
            let long: Vec<String> = ["I think so. Answer: Ada", "Maybe. Answer: Ada", "No idea. Answer: Bob"]
                .map(String::from)
                .into();
            let s = score("q1", &long, 42, LongText::AnswerSpan).expect(name);
            let spans = LongText::AnswerSpan.texts(&long);
            let spans: Vec<String> = spans.iter().map(|t| t.to_string()).collect();
            let m = if name == "rouge-l" {
                rouge_l_f1_matrix(&spans)
            } else {
                chrf_matrix(&spans)
            };
            assert_eq!((s.matrix, s.long_text), (m, "answer-span"));
        }
        assert!(text_utility(Method::Embedding, "q", &texts, 42, LongText::Windowed).is_err());
        assert!(Backend::parse("tpu").is_err());
    }
}
