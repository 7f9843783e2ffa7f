//! The Llama-family decoder on burn: RMSNorm, RoPE (with Llama-3 scaling), grouped-query
//! attention, SwiGLU, optional q/k/v biases (Qwen2), tied or untied output head.

use burn::prelude::*;
use sealong_shaders::swiglu::swiglu;

use crate::error::{Error, Result};
use crate::loading::ModelPath;
use crate::models::decoder::config::DecoderConfig;
use crate::models::decoder::weights::DecoderWeights;
use crate::nn::attention::attend;
use crate::nn::kv_cache::LayerCache;
use crate::nn::linear::Precision;
use crate::nn::linear::tensor_from_weight;
use crate::nn::norm::rms_norm;
use crate::nn::rope::RopeTables;
use crate::nn::{Embedding, KvCache, Linear, LinearWeight};
use crate::quant::QuantMatrix;

/// One transformer block.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub input_norm: Tensor<1>,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_norm: Tensor<1>,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// q, k and v stacked into one matrix, and gate and up likewise, when the weights are
    /// quantized on the host: one kernel call instead of three (two), so fewer thread
    /// synchronizations per decoded token. The separate projections stay for training/export.
    pub fused_qkv: Option<Linear>,
    pub fused_gate_up: Option<Linear>,
}

/// `parts` stacked along the output dimension, if all are host-quantized.
fn fuse(parts: &[&Linear]) -> Option<Linear> {
    let mats: Vec<&QuantMatrix> = parts
        .iter()
        .map(|l| match &l.weight {
            LinearWeight::Quant(q) => Some(q.as_ref()),
            LinearWeight::Dense(_) => None,
        })
        .collect::<Option<_>>()?;
    let fused = QuantMatrix::concat_rows(&mats).ok()?;
    let bias = if parts.iter().all(|l| l.bias.is_some()) {
        Some(Tensor::cat(parts.iter().filter_map(|l| l.bias.clone()).collect(), 0))
    } else if parts.iter().all(|l| l.bias.is_none()) {
        None
    } else {
        return None;
    };
    Some(Linear::new(LinearWeight::Quant(std::sync::Arc::new(fused)), bias))
}

/// The whole decoder. Weights are plain tensors (or host matrices, see [`LinearWeight`]);
/// training marks the ones it updates as autodiff leaves.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub config: DecoderConfig,
    pub embed: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: Tensor<1>,
    /// The output projection; for tied models this is the embedding matrix.
    pub lm_head: Linear,
    pub rope: RopeTables,
    pub device: Device,
    /// Attention through the fused kernel (`sealong_shaders::attention`: linear memory, its own
    /// backward) for every forward whose per-stream cache starts empty (a prompt, or responses
    /// against a shared prompt); the materialized burn-ops attention otherwise. Training turns
    /// it on; inference on burn devices keeps the materialized path.
    pub fused_attention: bool,
}

impl Decoder {
    /// Loads a .gguf file or HF directory onto `device`.
    pub fn load(model: &ModelPath, device: &Device) -> Result<Self> {
        let (config, mut weights) = DecoderWeights::load(model)?;
        let decoder = Self::from_weights(config, &mut weights, device)?;
        weights.finish()?;
        Ok(decoder)
    }

    /// Builds the decoder, taking every weight it needs out of `weights`.
    pub fn from_weights(config: DecoderConfig, weights: &mut DecoderWeights, device: &Device) -> Result<Self> {
        let c = &config;
        let (d, hd) = (c.hidden_size, c.head_dim);
        let q_out = c.num_attention_heads * hd;
        let kv_out = c.num_key_value_heads * hd;
        let linear = |weights: &mut DecoderWeights, name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            let w = weights.take(&format!("{name}.weight"), &[out, inp])?;
            let b = if bias {
                let b = weights.take(&format!("{name}.bias"), &[out])?;
                Some(tensor_from_weight::<1>(&b, device))
            } else {
                None
            };
            Ok(Linear::new(LinearWeight::from_weight(&w, device), b))
        };
        // The layer count is a header field: reserve no more than a real model has; a
        // larger count fails at its first missing tensor.
        let mut layers = Vec::with_capacity(c.num_hidden_layers.min(256));
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let q_proj = linear(weights, &format!("{p}.self_attn.q_proj"), q_out, d, c.attention_bias)?;
            let k_proj = linear(weights, &format!("{p}.self_attn.k_proj"), kv_out, d, c.attention_bias)?;
            let v_proj = linear(weights, &format!("{p}.self_attn.v_proj"), kv_out, d, c.attention_bias)?;
            let o_proj = linear(weights, &format!("{p}.self_attn.o_proj"), d, q_out, false)?;
            let gate_proj = linear(weights, &format!("{p}.mlp.gate_proj"), c.intermediate_size, d, false)?;
            let up_proj = linear(weights, &format!("{p}.mlp.up_proj"), c.intermediate_size, d, false)?;
            let down_proj = linear(weights, &format!("{p}.mlp.down_proj"), d, c.intermediate_size, false)?;
            let fused_qkv = fuse(&[&q_proj, &k_proj, &v_proj]);
            let fused_gate_up = fuse(&[&gate_proj, &up_proj]);
            layers.push(DecoderLayer {
                input_norm: tensor_from_weight(&weights.take(&format!("{p}.input_layernorm.weight"), &[d])?, device),
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                post_norm: tensor_from_weight(
                    &weights.take(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
                    device,
                ),
                gate_proj,
                up_proj,
                down_proj,
                fused_qkv,
                fused_gate_up,
            });
        }
        let embed_w = weights.take("model.embed_tokens.weight", &[c.vocab_size, d])?;
        let embed_table = LinearWeight::from_weight(&embed_w, device);
        let lm_head = match weights.take_optional("lm_head.weight", &[c.vocab_size, d])? {
            Some(w) if !c.tie_word_embeddings => Linear::new(LinearWeight::from_weight(&w, device), None),
            Some(_) => {
                return Err(Error::Model {
                    path: weights.source().to_string(),
                    message: "tie_word_embeddings is set but the file also has lm_head.weight".into(),
                });
            }
            None => Linear::new(embed_table.clone(), None),
        };
        let norm = tensor_from_weight(&weights.take("model.norm.weight", &[d])?, device);
        let rope = RopeTables::new(
            &c.rope_inv_freq(),
            c.rope_attention_scaling(),
            c.max_position_embeddings,
            device,
        );
        Ok(Decoder {
            embed: Embedding { table: embed_table },
            layers,
            norm,
            lm_head,
            rope,
            device: device.clone(),
            config,
            fused_attention: false,
        })
    }

    /// Runs `ids` (`batch` rows of equal length) through the model, appending to `cache`, and
    /// returns the final hidden states (after the last norm).
    ///
    /// # Shapes
    /// returns `[batch, seq_len, hidden]`.
    pub fn forward_hidden(&self, ids: &[Vec<u32>], cache: &mut KvCache) -> Result<Tensor<3>> {
        let start = cache.position();
        self.check_input(ids, start)?;
        let (batch, seq_len) = (ids.len(), ids[0].len());
        if batch != cache.batch {
            return Err(Error::Invalid(format!(
                "batch of {batch} rows does not match the cache's {} streams",
                cache.batch
            )));
        }
        let own_start = cache.len;
        let mut x = self.embed_ids(ids);
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.layer_forward(layer, x, lc, start, own_start);
        }
        cache.len += seq_len;
        Ok(self.final_norm(x))
    }

    /// Checks a forward's input: a non-empty batch of equal-length rows of ids inside the
    /// vocabulary, at positions from `start` that fit the model's context.
    pub fn check_input(&self, ids: &[Vec<u32>], start: usize) -> Result<()> {
        let batch = ids.len();
        let seq_len = ids.first().map_or(0, Vec::len);
        if batch == 0 || seq_len == 0 || ids.iter().any(|r| r.len() != seq_len) {
            return Err(Error::Invalid(
                "forward needs a non-empty batch of equal-length rows".into(),
            ));
        }
        let vocab = self.config.vocab_size as u32;
        if let Some(bad) = ids.iter().flatten().find(|&&t| t >= vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        if start + seq_len > self.config.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "{} positions exceed the model's maximum context of {} tokens",
                start + seq_len,
                self.config.max_position_embeddings
            )));
        }
        if start + seq_len > self.rope.max_positions {
            return Err(Error::Invalid(format!(
                "{} positions exceed the {} positions of the burn decoder's RoPE tables (at most {} values \
                 per table, nn::rope::MAX_TABLE_VALUES; the model's context is {} tokens); the CPU engine \
                 (--device cpu) has no such limit",
                start + seq_len,
                self.rope.max_positions,
                crate::nn::rope::MAX_TABLE_VALUES,
                self.config.max_position_embeddings
            )));
        }
        // The burn decoder (GPUs, training) attends to every earlier position: refuse a sequence
        // that reaches past a sliding window rather than compute something else.
        if let Some(w) = &self.config.sliding_window
            && start + seq_len > w.size
        {
            return Err(Error::Invalid(format!(
                "{} positions exceed the {} model's sliding window of {} positions, which the burn decoder \
                 (GPU inference and all training) does not implement; inference on the CPU engine \
                 (--device cpu) does, or keep sequences within the window",
                start + seq_len,
                self.config.family,
                w.size
            )));
        }
        Ok(())
    }

    /// The token embeddings of `ids` (`batch` rows of equal length): `[batch, seq_len, hidden]`.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Tensor<3> {
        self.embed.forward(ids, &self.device)
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        rms_norm(x, &self.norm, self.config.rms_norm_eps)
    }

    /// One decoder block over `x` (`[batch, seq_len, hidden]`) at sequence positions
    /// `pos..pos + seq_len`, its keys and values written into `lc` at per-stream position
    /// `own_start` (after a shared prefix, `pos = prefix_len + own_start`).
    pub fn layer_forward(
        &self,
        layer: &DecoderLayer,
        x: Tensor<3>,
        lc: &mut LayerCache,
        pos: usize,
        own_start: usize,
    ) -> Tensor<3> {
        let c = &self.config;
        let [batch, seq_len, _] = x.dims();
        let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let normed = rms_norm(x.clone(), &layer.input_norm, c.rms_norm_eps);
        let q = layer
            .q_proj
            .forward(normed.clone())
            .reshape([batch, seq_len, h, hd])
            .swap_dims(1, 2);
        let k = layer
            .k_proj
            .forward(normed.clone())
            .reshape([batch, seq_len, kvh, hd])
            .swap_dims(1, 2);
        let v = layer
            .v_proj
            .forward(normed)
            .reshape([batch, seq_len, kvh, hd])
            .swap_dims(1, 2);
        let q = self.rope.apply(q, pos);
        let k = self.rope.apply(k, pos);
        let attn = attend(q, k, v, lc, own_start, self.fused_attention);
        let x = x + layer.o_proj.forward(attn);
        let normed = rms_norm(x.clone(), &layer.post_norm, c.rms_norm_eps);
        let (gate, up) = match &layer.fused_gate_up {
            Some(f) => {
                let y = f.forward(normed);
                let i = c.intermediate_size;
                (y.clone().narrow(2, 0, i), y.narrow(2, i, i))
            }
            None => (layer.gate_proj.forward(normed.clone()), layer.up_proj.forward(normed)),
        };
        let mlp = swiglu(gate, up);
        x + layer.down_proj.forward(mlp)
    }

    /// A copy whose tensors are outside autodiff (shared storage, no copy of the data): a
    /// forward through it records no graph and keeps nothing for a backward. Activation
    /// checkpointing runs its first forward through this view.
    pub fn without_autodiff(&self) -> Decoder {
        let t1 = |t: &Tensor<1>| t.clone().without_autodiff();
        let layers = self
            .layers
            .iter()
            .map(|l| DecoderLayer {
                input_norm: t1(&l.input_norm),
                q_proj: l.q_proj.without_autodiff(),
                k_proj: l.k_proj.without_autodiff(),
                v_proj: l.v_proj.without_autodiff(),
                o_proj: l.o_proj.without_autodiff(),
                post_norm: t1(&l.post_norm),
                gate_proj: l.gate_proj.without_autodiff(),
                up_proj: l.up_proj.without_autodiff(),
                down_proj: l.down_proj.without_autodiff(),
                fused_qkv: l.fused_qkv.as_ref().map(Linear::without_autodiff),
                fused_gate_up: l.fused_gate_up.as_ref().map(Linear::without_autodiff),
            })
            .collect();
        Decoder {
            config: self.config.clone(),
            embed: Embedding {
                table: self.embed.table.without_autodiff(),
            },
            layers,
            norm: t1(&self.norm),
            lm_head: self.lm_head.without_autodiff(),
            rope: self.rope.without_autodiff(),
            device: self.device.clone().inner(),
            fused_attention: self.fused_attention,
        }
    }

    /// Logits of the last position of each row.
    ///
    /// # Shapes
    /// returns `[batch, vocab]`.
    pub fn forward_last(&self, ids: &[Vec<u32>], cache: &mut KvCache) -> Result<Tensor<2>> {
        let hidden = self.forward_hidden(ids, cache)?;
        let [batch, seq_len, _] = hidden.dims();
        let last = hidden.narrow(1, seq_len - 1, 1);
        Ok(self.lm_head.forward(last).reshape([batch, self.config.vocab_size]))
    }

    /// Logits from final hidden states.
    ///
    /// # Shapes
    /// `hidden`: `[batch, seq_len, hidden]` -> `[batch, seq_len, vocab]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.lm_head.forward(hidden)
    }

    /// Logits at every position.
    ///
    /// # Shapes
    /// returns `[batch, seq_len, vocab]`.
    pub fn forward_all(&self, ids: &[Vec<u32>], cache: &mut KvCache) -> Result<Tensor<3>> {
        let hidden = self.forward_hidden(ids, cache)?;
        Ok(self.lm_head.forward(hidden))
    }

    /// Sets how host-quantized products are computed (see [`Precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        for l in &mut self.layers {
            for lin in [
                &mut l.q_proj,
                &mut l.k_proj,
                &mut l.v_proj,
                &mut l.o_proj,
                &mut l.gate_proj,
                &mut l.up_proj,
                &mut l.down_proj,
            ] {
                lin.precision = precision;
            }
            for lin in [&mut l.fused_qkv, &mut l.fused_gate_up].into_iter().flatten() {
                lin.precision = precision;
            }
        }
        self.lm_head.precision = precision;
    }

    /// A fresh cache for `batch` streams.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, batch)
    }
}
