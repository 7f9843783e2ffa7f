//! Decoder weights from a GGUF file or an HF directory, under HF tensor names, with 2-D weights
//! kept in their storage format where the CPU kernels compute with it (Q8_0/Q4_0/Q4_1) and
//! everything else as f32. A missing, unused or mis-shaped tensor is an error naming it.
//!
//! GGUF Q/K row order: llama.cpp's converter permutes the rows of `attn_q` / `attn_k` for the
//! `llama` architecture so that, inside each head of `head_dim` rows, rotary pairs are
//! interleaved (GPT-J / llama.cpp "normal" RoPE). We undo it at load time and use HF's
//! rotate-half RoPE everywhere: HF row `h*hd + j*hd/2 + i` = GGUF row `h*hd + 2i + j`
//! (`i < hd/2`, `j` in {0, 1}), as transformers' `LlamaTensorProcessor` does. Qwen2 GGUFs are
//! not permuted (llama.cpp runs them with NeoX RoPE).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::loading::ModelPath;
use crate::loading::gguf::GgufTensorInfo;
use crate::loading::model_files::{GgufFile, map_file};
use crate::loading::safetensors::{LoadedTensor, TensorValues, read_tensors};
use crate::loading::weight::{Weight, WeightData};
use crate::models::decoder::config::DecoderConfig;
use crate::models::files::safetensors_files;
use crate::quant::{QuantMatrix, WeightFormat, dequantize};

/// All weights of a decoder, taken out one by one while the model is built.
pub struct DecoderWeights {
    source: String,
    tensors: BTreeMap<String, Weight>,
}

/// HF name for a GGUF tensor name (`blk.N.*` per layer), or `None` for a name we do not know.
/// One table for the format (DESIGN convention 4).
fn gguf_to_hf(name: &str) -> Option<String> {
    const GLOBAL: &[(&str, &str)] = &[
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    const LAYER: &[(&str, &str)] = &[
        ("attn_norm.weight", "input_layernorm.weight"),
        ("attn_q.weight", "self_attn.q_proj.weight"),
        ("attn_q.bias", "self_attn.q_proj.bias"),
        ("attn_k.weight", "self_attn.k_proj.weight"),
        ("attn_k.bias", "self_attn.k_proj.bias"),
        ("attn_v.weight", "self_attn.v_proj.weight"),
        ("attn_v.bias", "self_attn.v_proj.bias"),
        ("attn_output.weight", "self_attn.o_proj.weight"),
        ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("ffn_gate.weight", "mlp.gate_proj.weight"),
        ("ffn_up.weight", "mlp.up_proj.weight"),
        ("ffn_down.weight", "mlp.down_proj.weight"),
    ];
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == name) {
        return Some((*hf).to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = LAYER.iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{hf}"))
}

/// HF row r of a permuted Q/K matrix is GGUF row `perm[r]`.
fn unpermute_rows(n_heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut perm = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..half {
                perm.push(h * head_dim + 2 * i + j);
            }
        }
    }
    perm
}

fn permute_dense_rows(v: &[f32], cols: usize, perm: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(v.len());
    for &src in perm {
        out.extend_from_slice(&v[src * cols..(src + 1) * cols]);
    }
    out
}

impl DecoderWeights {
    /// Loads config and weights from a .gguf file or an HF directory.
    pub fn load(model: &ModelPath) -> Result<(DecoderConfig, DecoderWeights)> {
        match model {
            ModelPath::Gguf(p) => Self::from_gguf(&GgufFile::open(p)?),
            ModelPath::HfDir(d) => Self::from_hf_dir(d),
        }
    }

    pub fn from_gguf(file: &GgufFile) -> Result<(DecoderConfig, DecoderWeights)> {
        let source = file.path.display().to_string();
        let g = &file.header;
        let bytes: &[u8] = &file.bytes;
        let err = |m: String| Error::Model {
            path: source.clone(),
            message: m,
        };
        let read_f32 = |t: &GgufTensorInfo| -> Result<Vec<f32>> {
            let format = WeightFormat::from_ggml(t.ggml_type, &t.name)?;
            let mut out = vec![0.0; t.n_elements() as usize];
            dequantize(format, g.tensor_bytes(bytes, t), &mut out);
            Ok(out)
        };
        let rope_freqs = match g.tensor("rope_freqs.weight") {
            Some(t) => Some(read_f32(t)?),
            None => None,
        };
        let mut config = DecoderConfig::from_gguf(g, &source, rope_freqs)?;
        config.tie_word_embeddings = g.tensor("output.weight").is_none();
        let permuted = config.family.gguf_qk_permuted();
        let mut tensors = BTreeMap::new();
        for t in &g.tensors {
            if t.name == "rope_freqs.weight" {
                continue;
            }
            let name = gguf_to_hf(&t.name).ok_or_else(|| {
                err(format!(
                    "tensor {:?} is not part of a {} decoder",
                    t.name, config.family
                ))
            })?;
            let shape = t.shape();
            let format = WeightFormat::from_ggml(t.ggml_type, &t.name)?;
            let n_heads = if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                Some(config.num_attention_heads)
            } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                Some(config.num_key_value_heads)
            } else {
                None
            };
            let perm = match n_heads {
                Some(h) if permuted => {
                    if shape[0] != h * config.head_dim {
                        return Err(err(format!(
                            "tensor {:?} has {} rows, expected {h} heads x {}",
                            t.name, shape[0], config.head_dim
                        )));
                    }
                    Some(unpermute_rows(h, config.head_dim))
                }
                _ => None,
            };
            let data = if format.stays_stored(&shape) {
                let stored = g.tensor_bytes(bytes, t);
                let m = QuantMatrix::from_gguf_bytes(format, shape[0], shape[1], stored)
                    .map_err(|e| err(format!("tensor {:?}: {e}", t.name)))?;
                // Copied: the mapped pages leave the RSS (loading peaks near the file's size).
                file.bytes.release(stored);
                WeightData::Quant(match &perm {
                    Some(p) => m.permute_rows(p),
                    None => m,
                })
            } else {
                let v = read_f32(t)?;
                file.bytes.release(g.tensor_bytes(bytes, t));
                let cols = if shape.len() == 2 { shape[1] } else { 1 };
                WeightData::Dense(match &perm {
                    Some(p) => permute_dense_rows(&v, cols, p).into(),
                    None => v.into(),
                })
            };
            tensors.insert(name.clone(), Weight { name, shape, data });
        }
        Ok((config, DecoderWeights { source, tensors }))
    }

    pub fn from_hf_dir(dir: &Path) -> Result<(DecoderConfig, DecoderWeights)> {
        let source = dir.display().to_string();
        let config = DecoderConfig::from_hf_dir(dir)?;
        let files = safetensors_files(dir)?;
        let mut tensors = BTreeMap::new();
        for file in files {
            let bytes = map_file(&file)?;
            let label = file.display().to_string();
            // 2-D f16/bf16 matrices stay half precision (widened a row block at a time in each
            // product), as GGUF blocks stay quantized.
            let read = read_tensors(
                &bytes,
                &label,
                |name| name.ends_with("rotary_emb.inv_freq"),
                |_, shape, format| format.stays_stored(shape),
            )?;
            for LoadedTensor { name, shape, values } in read {
                let data = match values {
                    TensorValues::F32(v) => WeightData::Dense(v.into()),
                    TensorValues::Stored(format, raw) => {
                        let m = QuantMatrix::from_gguf_bytes(format, shape[0], shape[1], raw).map_err(|e| {
                            Error::Safetensors {
                                path: label.clone(),
                                message: format!("tensor {name:?}: {e}"),
                            }
                        })?;
                        // Copied: the mapped pages leave the RSS (loading peaks near the file's size).
                        bytes.release(raw);
                        WeightData::Quant(m)
                    }
                };
                if tensors.contains_key(&name) {
                    return Err(Error::Safetensors {
                        path: label.clone(),
                        message: format!("tensor {name:?} appears in two files"),
                    });
                }
                tensors.insert(name.clone(), Weight { name, shape, data });
            }
        }
        let mut config = config;
        if !tensors.contains_key("lm_head.weight") {
            config.tie_word_embeddings = true;
        }
        Ok((config, DecoderWeights { source, tensors }))
    }

    /// Takes the weight `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Weight> {
        let w = self.tensors.remove(name).ok_or_else(|| Error::Model {
            path: self.source.clone(),
            message: format!("tensor {name:?} is missing"),
        })?;
        if w.shape != shape {
            return Err(Error::Model {
                path: self.source.clone(),
                message: format!("tensor {name:?} has shape {:?}, expected {shape:?}", w.shape),
            });
        }
        Ok(w)
    }

    /// Takes `name` if present (optional biases, untied heads).
    pub fn take_optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Weight>> {
        if self.tensors.contains_key(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The weight `name`, if loaded and not yet taken.
    pub fn get(&self, name: &str) -> Option<&Weight> {
        self.tensors.get(name)
    }

    /// The names of the weights loaded and not yet taken (HF names).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Puts `weight` in under its name, replacing one there (how an adapter is merged in
    /// before an engine is built); returns the replaced weight.
    pub fn insert(&mut self, weight: Weight) -> Option<Weight> {
        self.tensors.insert(weight.name.clone(), weight)
    }

    /// Fails if any weight was not used (a model with parts we would silently ignore).
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.tensors.keys().map(String::as_str).take(8).collect();
        Err(Error::Model {
            path: self.source,
            message: format!(
                "{} tensor(s) were not used by the decoder: {}{}",
                self.tensors.len(),
                names.join(", "),
                if self.tensors.len() > 8 { ", ..." } else { "" }
            ),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(
            gguf_to_hf("blk.12.ffn_down.weight").as_deref(),
            Some("model.layers.12.mlp.down_proj.weight")
        );
        assert_eq!(
            gguf_to_hf("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(gguf_to_hf("blk.x.attn_q.weight"), None);
        assert_eq!(gguf_to_hf("mystery.weight"), None);
    }

    #[test]
    fn unpermute_matches_the_reference_formula() {
        // HF row h*64 + j*32 + i = GGUF row h*64 + 2i + j.
        let p = unpermute_rows(3, 64);
        for h in 0..3 {
            for j in 0..2 {
                for i in 0..32 {
                    assert_eq!(p[h * 64 + j * 32 + i], h * 64 + 2 * i + j);
                }
            }
        }
    }
}
