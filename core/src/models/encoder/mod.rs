//! The sentence encoder: a BERT-family transformer (BERT, MiniLM, RoBERTa, XLM-R) with
//! sentence-transformers' tokenization limits, pooling and normalization. MBR's default utility
//! is the cosine between these embeddings.
//!
//! Files come as bytes ([`EncoderFiles`]) so the browser build can load them the same way as
//! the CLI does from a directory.

pub mod config;
pub mod cpu;
pub mod model;
pub mod weights;

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::text::Tokenizer;

pub use config::{EncoderConfig, Pooling, SentenceConfig};
pub use cpu::CpuEncoder;
pub use model::BurnEncoder;
pub use weights::EncoderWeights;

/// The files of a sentence-transformers model directory, as bytes.
pub struct EncoderFiles<'a> {
    /// Where they came from (for error messages).
    pub source: String,
    pub config_json: &'a [u8],
    pub tokenizer_json: &'a [u8],
    /// `(label, bytes)` of each safetensors file.
    pub safetensors: Vec<(String, &'a [u8])>,
    pub pooling_json: Option<&'a [u8]>,
    pub sentence_config_json: Option<&'a [u8]>,
    pub modules_json: Option<&'a [u8]>,
    /// `tokenizer_config.json`: sentence-transformers 6 keeps `max_seq_length` there as
    /// `model_max_length`.
    pub tokenizer_config_json: Option<&'a [u8]>,
}

/// Turns texts into sentence vectors exactly as `SentenceTransformer.encode` does.
#[derive(Debug, Clone)]
pub struct SentenceEmbedder {
    pub sentence: SentenceConfig,
    /// Truncates at `max_seq_length`, as sentence-transformers does.
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation: windows and the over-window check.
    full: Tokenizer,
    engine: EncoderEngine,
}

/// The encoder as the device runs it best: host buffers on the CPU, burn on a GPU.
#[derive(Debug, Clone)]
pub enum EncoderEngine {
    Cpu(Box<CpuEncoder>),
    Burn(Box<BurnEncoder>),
}

/// Sentences per forward pass: bounds the activation memory (the batch is not padded, so the
/// size does not change results).
const FORWARD_BATCH: usize = 64;

/// The token windows one embedding call runs ([`SentenceEmbedder::plan`]).
#[derive(Debug, Clone, Default)]
pub struct EmbedPlan {
    /// Every window's ids, text after text.
    ids: Vec<Vec<u32>>,
    /// How many windows each text has.
    windows: Vec<usize>,
    /// Texts longer than the window.
    pub over_window: usize,
    /// Of those, the texts the embedder sees only the beginning of (truncated plans).
    pub cut: usize,
}

impl SentenceEmbedder {
    /// Loads the files for the CPU (host engine).
    pub fn from_files(files: &EncoderFiles<'_>) -> Result<Self> {
        Self::from_files_on(files, None)
    }

    /// Loads the files for the host engine (`None`) or for the burn encoder on `device` (how a
    /// GPU runs it; on the CPU backend it is the twin the tests compare with the host engine).
    pub fn from_files_on(files: &EncoderFiles<'_>, device: Option<&Device>) -> Result<Self> {
        let config = EncoderConfig::from_json(files.config_json, &files.source)?;
        let sentence = SentenceConfig::from_files(
            files.pooling_json,
            files.sentence_config_json,
            files.modules_json,
            files.tokenizer_config_json,
            &config,
            &files.source,
        )?;
        // sentence-transformers ignores the truncation/padding a tokenizer.json may carry
        // (MiniLM's says 128 and pads): no padding, truncation at max_seq_length, specials
        // included.
        let full = Tokenizer::from_json_bytes(files.tokenizer_json, format!("{}/tokenizer.json", files.source))?;
        let tokenizer = full.truncating(sentence.max_seq_length)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Model {
                path: files.source.clone(),
                message: format!(
                    "tokenizer has {} tokens but the model's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let weights = EncoderWeights::from_safetensors(&files.safetensors, &config, &files.source)?;
        let engine = match device {
            Some(d) => EncoderEngine::Burn(Box::new(BurnEncoder::new(config, &weights, d))),
            None => EncoderEngine::Cpu(Box::new(CpuEncoder::new(config, weights))),
        };
        Ok(SentenceEmbedder {
            sentence,
            tokenizer,
            full,
            engine,
        })
    }

    /// Loads a sentence-transformers (or plain HF BERT-family) directory.
    #[cfg(not(target_family = "wasm"))]
    pub fn load_dir(dir: &std::path::Path) -> Result<Self> {
        Self::load_dir_on(dir, None)
    }

    /// Loads a directory for `device` (see [`SentenceEmbedder::from_files_on`]).
    #[cfg(not(target_family = "wasm"))]
    pub fn load_dir_on(dir: &std::path::Path, device: Option<&Device>) -> Result<Self> {
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| Error::io(&p, e))
        };
        let optional = |name: &str| -> Result<Option<Vec<u8>>> {
            let p = dir.join(name);
            if p.is_file() { read(name).map(Some) } else { Ok(None) }
        };
        if !dir.is_dir() {
            return Err(Error::Model {
                path: dir.display().to_string(),
                message: "not a directory (an embedder is a sentence-transformers or HF model directory)".into(),
            });
        }
        let config_json = read("config.json")?;
        let tokenizer_json = read("tokenizer.json")?;
        let pooling = optional("1_Pooling/config.json")?;
        let st = optional("sentence_bert_config.json")?;
        let modules = optional("modules.json")?;
        let tokenizer_config = optional("tokenizer_config.json")?;
        let files = crate::models::files::safetensors_files(dir)?;
        let maps = files
            .iter()
            .map(|f| crate::loading::model_files::map_file(f))
            .collect::<Result<Vec<_>>>()?;
        let safetensors = files
            .iter()
            .zip(&maps)
            .map(|(f, m)| (f.display().to_string(), &m[..]))
            .collect();
        Self::from_files_on(
            &EncoderFiles {
                source: dir.display().to_string(),
                config_json: &config_json,
                tokenizer_json: &tokenizer_json,
                safetensors,
                pooling_json: pooling.as_deref(),
                sentence_config_json: st.as_deref(),
                modules_json: modules.as_deref(),
                tokenizer_config_json: tokenizer_config.as_deref(),
            },
            device,
        )
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.config().hidden_size
    }

    pub fn config(&self) -> &EncoderConfig {
        match &self.engine {
            EncoderEngine::Cpu(e) => &e.config,
            EncoderEngine::Burn(e) => &e.config,
        }
    }

    /// Which engine runs: "cpu-engine" or "burn".
    pub fn engine_name(&self) -> &'static str {
        match &self.engine {
            EncoderEngine::Cpu(_) => "cpu-engine",
            EncoderEngine::Burn(_) => "burn",
        }
    }

    /// The ids the model sees for `text`: `[CLS] ... [SEP]`, truncated to max_seq_length.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, true)
    }

    /// Sentence vectors of `texts` (normalized when the model's modules say so).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(FORWARD_BATCH) {
            let ids = chunk.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>>>()?;
            self.finish(self.pooled(&ids)?, &mut out);
        }
        Ok(out)
    }

    /// Sentence vectors of token id sequences as the model sees them (specials included, at
    /// most `max_seq_length` each), normalized when the model says so.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FORWARD_BATCH) {
            self.finish(self.pooled(chunk)?, &mut out);
        }
        Ok(out)
    }

    /// Pooled (not yet normalized) vectors of token id sequences.
    fn pooled(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        Ok(match &self.engine {
            EncoderEngine::Cpu(e) => e.pooled(ids, self.sentence.pooling),
            EncoderEngine::Burn(e) => rows(e.pooled(ids, self.sentence.pooling).into_data())?,
        })
    }

    /// Whether `text` is longer than the model's window (`max_seq_length` tokens, specials
    /// included), so that [`SentenceEmbedder::embed`] sees only its beginning.
    pub fn over_window(&self, text: &str) -> Result<bool> {
        Ok(self.full.encode(text, true)?.len() > self.sentence.max_seq_length)
    }

    /// The id sequences the windowed embedding runs for `text`: the truncated ids when the text
    /// fits the window; else its tokens cut into consecutive, non-overlapping windows of
    /// `max_seq_length` minus the special tokens, each wrapped in the special tokens as the
    /// tokenizer's post-processor wraps a text (`[CLS] ... [SEP]` for BERT).
    pub fn window_ids(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        let with = self.full.encode(text, true)?;
        if with.len() <= self.sentence.max_seq_length {
            return Ok(vec![with]);
        }
        let content = self.full.encode(text, false)?;
        // Where the content sits between the specials: the post-processor adds a fixed prefix
        // and suffix, found by where the content begins in the wrapped ids.
        let prefix = (0..=with.len().saturating_sub(content.len()))
            .find(|&i| with[i..].starts_with(&content))
            .ok_or_else(|| {
                Error::Invalid("the tokenizer's special tokens do not wrap the text; cannot window it".into())
            })?;
        let (head, tail) = (&with[..prefix], &with[prefix + content.len()..]);
        let room = self.sentence.max_seq_length.saturating_sub(head.len() + tail.len());
        if room == 0 {
            return Err(Error::Invalid(format!(
                "max_seq_length {} leaves no room for text between {} special tokens",
                self.sentence.max_seq_length,
                head.len() + tail.len()
            )));
        }
        Ok(content.chunks(room).map(|c| [head, c, tail].concat()).collect())
    }

    /// Sentence vectors that see the whole of each text: a text that fits the window is
    /// embedded exactly as [`SentenceEmbedder::embed`] does; a longer one is the mean of its
    /// windows' L2-normalized vectors ([`SentenceEmbedder::window_ids`]), normalized again when
    /// the model normalizes (so the MBR cosine stays a cosine). Returns the vectors and how many
    /// texts needed more than one window.
    pub fn embed_windowed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, usize)> {
        let plan = self.plan(texts, true)?;
        Ok((self.embed_planned(&plan)?, plan.over_window))
    }

    /// What one embedding call runs for `texts`: each text's windows (`whole`, as
    /// [`SentenceEmbedder::embed_windowed`]) or its truncated ids (as [`SentenceEmbedder::embed`]),
    /// with the count of texts over the window and of those cut. [`SentenceEmbedder::embed_planned`]
    /// and [`SentenceEmbedder::embed_planned_async`] run it, so the native CLI and the browser
    /// read long texts the same way.
    pub fn plan(&self, texts: &[&str], whole: bool) -> Result<EmbedPlan> {
        let mut plan = EmbedPlan::default();
        for t in texts {
            let windows = if whole {
                self.window_ids(t)?
            } else {
                if self.over_window(t)? {
                    plan.cut += 1;
                }
                vec![self.tokenize(t)?]
            };
            plan.over_window += usize::from(windows.len() > 1);
            plan.windows.push(windows.len());
            plan.ids.extend(windows);
        }
        if !whole {
            plan.over_window = plan.cut;
        }
        Ok(plan)
    }

    /// The vectors of a [`SentenceEmbedder::plan`], one per text.
    pub fn embed_planned(&self, plan: &EmbedPlan) -> Result<Vec<Vec<f32>>> {
        let mut pooled = Vec::with_capacity(plan.ids.len());
        for batch in plan.ids.chunks(FORWARD_BATCH) {
            pooled.extend(self.pooled(batch)?);
        }
        Ok(self.combine(plan, pooled))
    }

    /// [`SentenceEmbedder::embed_planned`] for callers that must not block on a device read: the
    /// browser's WebGPU only reads buffers back asynchronously (a synchronous read panics there).
    /// Same vectors.
    pub async fn embed_planned_async(&self, plan: &EmbedPlan) -> Result<Vec<Vec<f32>>> {
        let mut pooled = Vec::with_capacity(plan.ids.len());
        for batch in plan.ids.chunks(FORWARD_BATCH) {
            pooled.extend(match &self.engine {
                EncoderEngine::Cpu(e) => e.pooled(batch, self.sentence.pooling),
                EncoderEngine::Burn(e) => {
                    let data = e
                        .pooled(batch, self.sentence.pooling)
                        .into_data_async()
                        .await
                        .map_err(|e| Error::Invalid(format!("reading embeddings back from the device: {e:?}")))?;
                    rows(data)?
                }
            });
        }
        Ok(self.combine(plan, pooled))
    }

    /// One vector per text from its windows' pooled vectors: a single window is finished as
    /// [`SentenceEmbedder::embed`] finishes it; several are the renormalized mean of their unit
    /// vectors.
    fn combine(&self, plan: &EmbedPlan, pooled: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(plan.windows.len());
        let mut next = pooled.into_iter();
        for &k in &plan.windows {
            let vs: Vec<Vec<f32>> = next.by_ref().take(k).collect();
            if vs.len() == 1 {
                self.finish(vs, &mut out);
                continue;
            }
            let mut mean = vec![0f64; vs.first().map_or(0, Vec::len)];
            for mut v in vs {
                normalize(&mut v);
                mean.iter_mut().zip(&v).for_each(|(m, x)| *m += f64::from(*x));
            }
            let mut v: Vec<f32> = mean.iter().map(|m| (m / k as f64) as f32).collect();
            if self.sentence.normalize {
                normalize(&mut v);
            }
            out.push(v);
        }
        out
    }

    /// Normalizes (when the model says so) and appends a batch's pooled vectors.
    fn finish(&self, pooled: Vec<Vec<f32>>, out: &mut Vec<Vec<f32>>) {
        for mut v in pooled {
            if self.sentence.normalize {
                normalize(&mut v);
            }
            out.push(v);
        }
    }
}

/// The rows of a `[batch, hidden]` tensor read back from the device.
fn rows(data: burn::tensor::TensorData) -> Result<Vec<Vec<f32>>> {
    let d = data.shape().get(1).copied().unwrap_or(0).max(1);
    let flat: Vec<f32> = data
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Invalid(format!("reading embeddings back from the device: {e:?}")))?;
    Ok(flat.chunks_exact(d).map(<[f32]>::to_vec).collect())
}

/// `v / max(|v|, 1e-12)` (torch's `F.normalize`, which sentence-transformers' Normalize uses).
pub fn normalize(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    v.iter_mut().for_each(|x| *x = (f64::from(*x) / n) as f32);
}
