//! `sealong models inspect`: what a model file is, without loading its weights: the family and
//! shapes the decoder derives from it, context and RoPE, the storage type of every tensor, where
//! the chat template comes from, and the bytes the weights take once loaded on the CPU.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::loading::model_files::{GgufFile, map_file};
use crate::loading::{ModelPath, TextAssets};
use crate::models::decoder::config::DecoderConfig;
use crate::quant::{WeightFormat, dequantize};

/// One tensor as stored.
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<usize>,
    /// ggml's spelling of its type (`Q4_K`, `F32`, ...).
    pub dtype: String,
    pub stored_bytes: u64,
    /// Bytes once loaded on the CPU ([`WeightFormat::loaded_bytes`]).
    pub loaded_bytes: u64,
}

/// The tensors of one type, together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeSummary {
    pub tensors: usize,
    pub parameters: u64,
    pub stored_bytes: u64,
}

/// What [`inspect`] found.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub path: String,
    /// `gguf` or `hf-dir`.
    pub container: &'static str,
    pub config: DecoderConfig,
    /// Where the chat template comes from (`None`: the model has none).
    pub chat_template: Option<String>,
    pub types: BTreeMap<String, TypeSummary>,
    pub parameters: u64,
    pub stored_bytes: u64,
    pub loaded_bytes: u64,
    pub tensors: Vec<TensorReport>,
}

/// Reads `model`'s headers, config and tokenizer files (no weights beyond GGUF's small
/// `rope_freqs`).
pub fn inspect(model: &ModelPath) -> Result<ModelReport> {
    let (container, config, tensors, chat_template) = match model {
        ModelPath::Gguf(p) => {
            let file = GgufFile::open(p)?;
            let g = &file.header;
            let mut tensors = Vec::with_capacity(g.tensors.len());
            let mut rope_freqs = None;
            for t in &g.tensors {
                let shape = t.shape();
                let loaded = match WeightFormat::from_ggml(t.ggml_type, &t.name) {
                    Ok(f) => {
                        if t.name == "rope_freqs.weight" {
                            let mut v = vec![0.0; t.n_elements() as usize];
                            dequantize(f, g.tensor_bytes(&file.bytes, t), &mut v);
                            rope_freqs = Some(v);
                        }
                        f.loaded_bytes(&shape)
                    }
                    Err(_) => 0,
                };
                tensors.push(TensorReport {
                    name: t.name.clone(),
                    shape,
                    dtype: t.ggml_type.name(),
                    stored_bytes: t.n_bytes,
                    loaded_bytes: loaded,
                });
            }
            let mut config = DecoderConfig::from_gguf(g, &p.display().to_string(), rope_freqs)?;
            config.tie_word_embeddings = g.tensor("output.weight").is_none();
            // The template from the header already parsed (TextAssets::load would map and
            // parse the file again).
            let template = TextAssets::from_gguf(g, &p.display().to_string())?.template_source;
            ("gguf", config, tensors, template)
        }
        ModelPath::HfDir(dir) => {
            let config = DecoderConfig::from_hf_dir(dir)?;
            let mut tensors = Vec::new();
            for file in crate::models::files::safetensors_files(dir)? {
                let bytes = map_file(&file)?;
                let label = file.display().to_string();
                let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Safetensors {
                    path: label.clone(),
                    message: format!("{e} (corrupt or truncated file?)"),
                })?;
                let mut named: Vec<_> = meta.tensors().into_iter().collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, info) in named {
                    let format = crate::loading::safetensors::format_of(info.dtype);
                    let (start, end) = info.data_offsets;
                    tensors.push(TensorReport {
                        // safetensors' own spelling (`F32`, `BF16`), which is ggml's for these.
                        dtype: format!("{:?}", info.dtype),
                        loaded_bytes: format.map_or(0, |f| f.loaded_bytes(&info.shape)),
                        stored_bytes: end.saturating_sub(start) as u64,
                        shape: info.shape.clone(),
                        name,
                    });
                }
            }
            // Weights alone (no tokenizer.json) have no template; any other failure to read the
            // tokenizer files is an error.
            let template = if dir.join("tokenizer.json").is_file() {
                TextAssets::from_hf_dir(dir)?.template_source
            } else {
                None
            };
            ("hf-dir", config, tensors, template)
        }
    };
    let mut types: BTreeMap<String, TypeSummary> = BTreeMap::new();
    for t in &tensors {
        let s = types.entry(t.dtype.clone()).or_default();
        s.tensors += 1;
        s.parameters += t.shape.iter().map(|&d| d as u64).product::<u64>();
        s.stored_bytes += t.stored_bytes;
    }
    Ok(ModelReport {
        path: model.path().display().to_string(),
        container,
        chat_template,
        parameters: types.values().map(|s| s.parameters).sum(),
        stored_bytes: tensors.iter().map(|t| t.stored_bytes).sum(),
        loaded_bytes: tensors.iter().map(|t| t.loaded_bytes).sum(),
        config,
        types,
        tensors,
    })
}
