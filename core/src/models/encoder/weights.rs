//! The encoder's weights as plain f32 arrays, taken by HF name from a safetensors checkpoint.
//! Both engines (the host one in `cpu.rs` and the burn one in `model.rs`) are built from this.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::loading::safetensors::{DenseTensor, read_dense};
use crate::models::encoder::config::EncoderConfig;

/// One transformer layer. Linear weights are `[out, in]` row-major as HF stores them.
#[derive(Debug, Clone)]
pub struct EncoderLayerWeights {
    /// Query, key and value stacked: `[3 hidden, hidden]`, bias `[3 hidden]`.
    pub qkv: Vec<f32>,
    pub qkv_bias: Vec<f32>,
    pub attn_out: Vec<f32>,
    pub attn_out_bias: Vec<f32>,
    pub attn_norm: (Vec<f32>, Vec<f32>),
    pub inter: Vec<f32>,
    pub inter_bias: Vec<f32>,
    pub out: Vec<f32>,
    pub out_bias: Vec<f32>,
    pub out_norm: (Vec<f32>, Vec<f32>),
}

#[derive(Debug, Clone)]
pub struct EncoderWeights {
    /// `[vocab, hidden]`.
    pub word: Vec<f32>,
    /// `[max_positions, hidden]`.
    pub position: Vec<f32>,
    /// Row 0 of the token-type table (sentence embedders feed one segment).
    pub token_type0: Vec<f32>,
    pub embed_norm: (Vec<f32>, Vec<f32>),
    pub layers: Vec<EncoderLayerWeights>,
}

/// Tensors this encoder reads but does not use: BERT's pooler (sentence-transformers pools
/// itself) and the stored `position_ids` buffer.
fn ignored(name: &str) -> bool {
    name.contains("pooler.") || name.ends_with("position_ids")
}

impl EncoderWeights {
    /// Reads one or more safetensors files (`(label, bytes)`), checking every shape; a missing,
    /// mis-shaped or unused tensor is an error naming it.
    pub fn from_safetensors(files: &[(String, &[u8])], c: &EncoderConfig, source: &str) -> Result<Self> {
        let mut tensors: BTreeMap<String, DenseTensor> = BTreeMap::new();
        for (label, bytes) in files {
            for t in read_dense(bytes, label, ignored)? {
                tensors.insert(t.name.clone(), t);
            }
        }
        // Checkpoints saved from a task model carry a `bert.` / `roberta.` prefix.
        let prefix = ["", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| Error::Model {
                path: source.into(),
                message: "tensor \"embeddings.word_embeddings.weight\" is missing (not a BERT-family checkpoint?)"
                    .into(),
            })?
            .to_string();
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let t = tensors.remove(&full).ok_or_else(|| Error::Model {
                path: source.into(),
                message: format!("tensor {full:?} is missing"),
            })?;
            if t.shape != shape {
                return Err(Error::Model {
                    path: source.into(),
                    message: format!("tensor {full:?} has shape {:?}, expected {shape:?}", t.shape),
                });
            }
            Ok(t.data)
        };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let word = take("embeddings.word_embeddings.weight", &[c.vocab_size, h])?;
        let position = take("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h])?;
        let token_type = take("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])?;
        let embed_norm = (
            take("embeddings.LayerNorm.weight", &[h])?,
            take("embeddings.LayerNorm.bias", &[h])?,
        );
        // The layer count is a header field: reserve no more than a real model has; a
        // larger count fails at its first missing tensor.
        let mut layers = Vec::with_capacity(c.num_hidden_layers.min(256));
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let mut qkv = take(&format!("{p}attention.self.query.weight"), &[h, h])?;
            qkv.extend(take(&format!("{p}attention.self.key.weight"), &[h, h])?);
            qkv.extend(take(&format!("{p}attention.self.value.weight"), &[h, h])?);
            let mut qkv_bias = take(&format!("{p}attention.self.query.bias"), &[h])?;
            qkv_bias.extend(take(&format!("{p}attention.self.key.bias"), &[h])?);
            qkv_bias.extend(take(&format!("{p}attention.self.value.bias"), &[h])?);
            layers.push(EncoderLayerWeights {
                qkv,
                qkv_bias,
                attn_out: take(&format!("{p}attention.output.dense.weight"), &[h, h])?,
                attn_out_bias: take(&format!("{p}attention.output.dense.bias"), &[h])?,
                attn_norm: (
                    take(&format!("{p}attention.output.LayerNorm.weight"), &[h])?,
                    take(&format!("{p}attention.output.LayerNorm.bias"), &[h])?,
                ),
                inter: take(&format!("{p}intermediate.dense.weight"), &[i, h])?,
                inter_bias: take(&format!("{p}intermediate.dense.bias"), &[i])?,
                out: take(&format!("{p}output.dense.weight"), &[h, i])?,
                out_bias: take(&format!("{p}output.dense.bias"), &[h])?,
                out_norm: (
                    take(&format!("{p}output.LayerNorm.weight"), &[h])?,
                    take(&format!("{p}output.LayerNorm.bias"), &[h])?,
                ),
            });
        }
        if let Some(name) = tensors.keys().next() {
            return Err(Error::Model {
                path: source.into(),
                message: format!(
                    "{} tensor(s) were not used by the encoder, first {name:?} (more layers than config.json says?)",
                    tensors.len()
                ),
            });
        }
        Ok(EncoderWeights {
            word,
            position,
            token_type0: token_type[..h].to_vec(),
            embed_norm,
            layers,
        })
    }
}
