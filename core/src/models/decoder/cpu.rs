//! The CPU inference engine: the same decoder as [`super::model::Decoder`] computed on host
//! buffers with sealong's kernels, without burn's per-operation dispatch. Profiling showed that
//! on the CPU a decode step of a small model is some 1,200 tiny tensor operations whose fixed
//! cost (allocation, dispatch, layout checks) took a third of the time; here a layer is a
//! handful of loops over preallocated rows. The burn decoder remains the implementation for
//! GPUs and training and this engine's twin: the tests compare both against the goldens.
//!
//! The KV cache keeps an optional shared prefix (one prompt, stored once) and per-stream
//! positions after it, like [`crate::nn::KvCache`]; N samples of one prompt prefill it once and
//! decode as one batch, each step's attention reading the shared prefix once for all N streams.

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::loading::weight::{Weight, WeightData};
use crate::models::decoder::config::DecoderConfig;
use crate::models::decoder::weights::DecoderWeights;
use crate::nn::linear::Precision;
use crate::ops::decode_attention::{self, HeadKv};
use crate::ops::host::{self, HostMatrix};
use crate::quant::kernels::dot_f32;

struct Layer {
    input_norm: Vec<f32>,
    /// q, k and v stacked (`[(h + 2 kvh) hd, d]`).
    qkv: Projection,
    qkv_bias: Option<Vec<f32>>,
    o: Projection,
    post_norm: Vec<f32>,
    /// gate and up stacked (`[2 i, d]`).
    gate_up: Projection,
    down: Projection,
}

/// A weight product with LoRA adapters kept beside the weight: `y = x W^T + s (x A^T) B^T` on
/// each adapter's output rows. Merging `s B A` into a quantized `W` would make it f32, and a
/// decode step streams every weight once: Q4_1 → f32 is 6.4× the bytes, which made a merged
/// adapter decode over twice as slow. The two thin products cost `2 r (in + out)` per row.
struct Projection {
    w: HostMatrix,
    lora: Vec<LowRank>,
}

/// One adapter on output rows `row0..row0 + out` of a (stacked) projection.
struct LowRank {
    /// `[r, in]`.
    a: Vec<f32>,
    /// PEFT's `lora_B` (`[out, r]`) times the adapter's scaling, stored transposed
    /// (`[r, out]`): the decode path adds `t_j` times row `j` to the output.
    bt: Vec<f32>,
    r: usize,
    row0: usize,
    out: usize,
}

impl Projection {
    fn new(w: HostMatrix) -> Self {
        Projection { w, lora: Vec::new() }
    }

    /// `[m, rows]` for `x` of `[m, cols]`.
    fn matmul(&self, x: &[f32], m: usize, precision: Precision) -> Vec<f32> {
        let mut y = self.w.matmul(x, m, precision);
        let (rows, cols) = (self.w.rows(), self.w.cols());
        for l in &self.lora {
            if m > 16 {
                let t = host::gemm_xwt(x, m, &l.a, l.r, cols);
                let mut d = vec![0.0f32; m * l.out];
                host::gemm_raw(m, l.out, l.r, &mut d, l.out, &t, l.r, false, &l.bt, l.out, false);
                for (yr, dr) in y.chunks_exact_mut(rows).zip(d.chunks_exact(l.out)) {
                    yr[l.row0..l.row0 + l.out].iter_mut().zip(dr).for_each(|(y, d)| *y += d);
                }
                continue;
            }
            // Decode steps: a GEMM call's set-up costs more than these few dot products.
            let mut t = vec![0.0f32; l.r];
            for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
                for (tj, aj) in t.iter_mut().zip(l.a.chunks_exact(cols)) {
                    *tj = dot_f32(xr, aj);
                }
                let yo = &mut yr[l.row0..l.row0 + l.out];
                for (&tj, bj) in t.iter().zip(l.bt.chunks_exact(l.out)) {
                    yo.iter_mut().zip(bj).for_each(|(y, b)| *y += tj * b);
                }
            }
        }
        y
    }
}

/// The decoder on host buffers.
pub struct CpuDecoder {
    pub config: DecoderConfig,
    layers: Vec<Layer>,
    embed: HostMatrix,
    norm: Vec<f32>,
    lm_head: HostMatrix,
    /// RoPE inverse frequencies (`head_dim / 2`) and the attention scaling that multiplies
    /// cos and sin. The cos/sin rows are computed per forward for the positions it covers
    /// ([`rope_rows`]), not as `[max_positions, hd]` tables: the context length is a header
    /// field, and a table of it would be sized by the file, not by the run.
    rope_inv_freq: Vec<f32>,
    rope_scaling: f32,
    pub precision: Precision,
}

/// cos and `sin_signed` rows (`[positions, hd]`, see `nn::rope`) for `positions`, each value
/// computed as the burn decoder's tables compute it.
fn rope_rows(inv_freq: &[f32], scaling: f32, positions: std::ops::Range<usize>) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let hd = 2 * half;
    let mut cos = vec![0.0f32; positions.len() * hd];
    let mut sin = vec![0.0f32; positions.len() * hd];
    for (row, pos) in positions.enumerate() {
        for (i, &f) in inv_freq.iter().enumerate() {
            let (s, co) = (pos as f32 * f).sin_cos();
            let (s, co) = (s * scaling, co * scaling);
            cos[row * hd + i] = co;
            cos[row * hd + half + i] = co;
            sin[row * hd + i] = -s;
            sin[row * hd + half + i] = s;
        }
    }
    (cos, sin)
}

impl std::fmt::Debug for CpuDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuDecoder")
            .field("config", &self.config)
            .field("precision", &self.precision)
            .finish()
    }
}

fn host_matrix(w: &Weight) -> HostMatrix {
    match &w.data {
        WeightData::Quant(q) => HostMatrix::Quant(Arc::new(q.clone())),
        WeightData::Dense(v) => HostMatrix::Dense {
            data: v.clone(),
            rows: w.shape[0],
            cols: w.shape[1],
        },
    }
}

/// Stacks weights along their output dimension: one matrix when they share format and width,
/// else the parts side by side, each in its own format (never widened to f32).
fn stack(parts: &[Weight]) -> HostMatrix {
    let quants: Option<Vec<&crate::quant::QuantMatrix>> = parts
        .iter()
        .map(|w| match &w.data {
            WeightData::Quant(q) => Some(q),
            WeightData::Dense(_) => None,
        })
        .collect();
    if let Some(qs) = quants
        && let Ok(m) = crate::quant::QuantMatrix::concat_rows(&qs)
    {
        return HostMatrix::Quant(Arc::new(m));
    }
    if parts.iter().all(|w| matches!(w.data, WeightData::Dense(_))) {
        let cols = parts[0].shape[1];
        let data: Vec<f32> = parts.iter().flat_map(|w| w.to_f32().to_vec()).collect();
        return HostMatrix::Dense {
            rows: data.len() / cols,
            data: data.into(),
            cols,
        };
    }
    HostMatrix::Parts(parts.iter().map(host_matrix).collect())
}

fn dense(w: &Weight) -> Vec<f32> {
    w.to_f32().to_vec()
}

impl CpuDecoder {
    /// Builds the engine, taking every weight it needs out of `weights`.
    pub fn from_weights(config: DecoderConfig, weights: &mut DecoderWeights) -> Result<Self> {
        let c = &config;
        let (d, hd) = (c.hidden_size, c.head_dim);
        let (qo, kvo) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        // The layer count is a header field: reserve no more than a real model has; a
        // larger count fails at its first missing tensor.
        let mut layers = Vec::with_capacity(c.num_hidden_layers.min(256));
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let q = weights.take(&format!("{p}.self_attn.q_proj.weight"), &[qo, d])?;
            let k = weights.take(&format!("{p}.self_attn.k_proj.weight"), &[kvo, d])?;
            let v = weights.take(&format!("{p}.self_attn.v_proj.weight"), &[kvo, d])?;
            let qkv_bias = if c.attention_bias {
                let mut b = dense(&weights.take(&format!("{p}.self_attn.q_proj.bias"), &[qo])?);
                b.extend(dense(&weights.take(&format!("{p}.self_attn.k_proj.bias"), &[kvo])?));
                b.extend(dense(&weights.take(&format!("{p}.self_attn.v_proj.bias"), &[kvo])?));
                Some(b)
            } else {
                None
            };
            let gate = weights.take(&format!("{p}.mlp.gate_proj.weight"), &[c.intermediate_size, d])?;
            let up = weights.take(&format!("{p}.mlp.up_proj.weight"), &[c.intermediate_size, d])?;
            layers.push(Layer {
                input_norm: dense(&weights.take(&format!("{p}.input_layernorm.weight"), &[d])?),
                qkv: Projection::new(stack(&[q, k, v])),
                qkv_bias,
                o: Projection::new(host_matrix(
                    &weights.take(&format!("{p}.self_attn.o_proj.weight"), &[d, qo])?,
                )),
                post_norm: dense(&weights.take(&format!("{p}.post_attention_layernorm.weight"), &[d])?),
                gate_up: Projection::new(stack(&[gate, up])),
                down: Projection::new(host_matrix(
                    &weights.take(&format!("{p}.mlp.down_proj.weight"), &[d, c.intermediate_size])?,
                )),
            });
        }
        let mut embed = host_matrix(&weights.take("model.embed_tokens.weight", &[c.vocab_size, d])?);
        let mut own_head = match weights.take_optional("lm_head.weight", &[c.vocab_size, d])? {
            Some(w) if !c.tie_word_embeddings => Some(host_matrix(&w)),
            Some(_) => {
                return Err(Error::Model {
                    path: weights.source().to_string(),
                    message: "tie_word_embeddings is set but the file also has lm_head.weight".into(),
                });
            }
            None => None,
        };
        // A decode step streams every weight: one region on 2 MiB pages, in the step's order.
        let mut order: Vec<&mut HostMatrix> = Vec::with_capacity(4 * layers.len() + 2);
        for l in layers.iter_mut() {
            order.extend([&mut l.qkv.w, &mut l.o.w, &mut l.gate_up.w, &mut l.down.w]);
        }
        order.extend(own_head.as_mut());
        order.push(&mut embed);
        host::pack(&mut order);
        let lm_head = own_head.unwrap_or_else(|| embed.clone());
        let norm = dense(&weights.take("model.norm.weight", &[d])?);
        let rope_inv_freq = c.rope_inv_freq();
        let rope_scaling = c.rope_attention_scaling();
        if 2 * rope_inv_freq.len() != hd {
            return Err(Error::Model {
                path: weights.source().to_string(),
                message: format!(
                    "RoPE has {} frequencies for a head dimension of {hd} (needs {})",
                    rope_inv_freq.len(),
                    hd / 2
                ),
            });
        }
        Ok(CpuDecoder {
            config,
            layers,
            embed,
            norm,
            lm_head,
            rope_inv_freq,
            rope_scaling,
            precision: Precision::Exact,
        })
    }

    /// A fresh cache for `batch` streams.
    pub fn new_cache(&self, batch: usize) -> CpuKvCache {
        CpuKvCache::new(&self.config, batch)
    }

    /// Runs `ids` (`batch` rows of equal length) through the model, appending to `cache`, and
    /// returns the final hidden states `[batch * seq_len, hidden]` (after the last norm).
    pub fn forward_hidden(&self, ids: &[Vec<u32>], cache: &mut CpuKvCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let batch = ids.len();
        let s = ids.first().map_or(0, Vec::len);
        if batch == 0 || s == 0 || ids.iter().any(|r| r.len() != s) {
            return Err(Error::Invalid(
                "forward needs a non-empty batch of equal-length rows".into(),
            ));
        }
        if batch != cache.batch {
            return Err(Error::Invalid(format!(
                "batch of {batch} rows does not match the cache's {} streams",
                cache.batch
            )));
        }
        if let Some(bad) = ids.iter().flatten().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary ({})",
                c.vocab_size
            )));
        }
        let start = cache.position();
        if start + s > c.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "{} positions exceed the model's maximum context of {} tokens",
                start + s,
                c.max_position_embeddings
            )));
        }
        let (d, h, kvh, hd) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rows = batch * s;
        let eps = c.rms_norm_eps as f32;
        let mut x = vec![0.0f32; rows * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(ids.iter().flatten()) {
            self.embed.row_f32(id as usize, row);
        }
        let (rope_cos, rope_sin) = rope_rows(&self.rope_inv_freq, self.rope_scaling, start..start + s);
        cache.reserve(cache.len + s);
        let own_start = cache.len;
        let qkv_w = (h + 2 * kvh) * hd;
        for (li, layer) in self.layers.iter().enumerate() {
            let xn = host::rms_norm_rows(&x, d, &layer.input_norm, eps);
            let mut qkv = layer.qkv.matmul(&xn, rows, self.precision);
            if let Some(b) = &layer.qkv_bias {
                for r in qkv.chunks_exact_mut(qkv_w) {
                    r.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            }
            // RoPE on q and k heads at each row's position, then k, v into the cache.
            for (r, row) in qkv.chunks_exact_mut(qkv_w).enumerate() {
                let p = r % s;
                let cos = &rope_cos[p * hd..(p + 1) * hd];
                let sin = &rope_sin[p * hd..(p + 1) * hd];
                for head in row[..(h + kvh) * hd].chunks_exact_mut(hd) {
                    host::rope_head(head, cos, sin);
                }
            }
            cache.write(li, &qkv, batch, s, own_start, h, kvh, hd);
            let attn = self.attention(&qkv, cache, li, batch, s, own_start, c.layer_window(li));
            let o = layer.o.matmul(&attn, rows, self.precision);
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let xn = host::rms_norm_rows(&x, d, &layer.post_norm, eps);
            let gu = layer.gate_up.matmul(&xn, rows, self.precision);
            let act = host::swiglu_rows(&gu, c.intermediate_size);
            let down = layer.down.matmul(&act, rows, self.precision);
            x.iter_mut().zip(&down).for_each(|(x, o)| *x += o);
        }
        cache.len += s;
        Ok(host::rms_norm_rows(&x, d, &self.norm, eps))
    }

    /// Adds a LoRA adapter to projection `module` (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj` or `down_proj`) of `layer`, kept unmerged: the layer computes
    /// `x W^T + scaling (x A^T) B^T` with `a` of `[r, in]` and `b` of `[out, r]` (PEFT's
    /// `lora_A` / `lora_B`).
    pub fn add_lora(&mut self, layer: usize, module: &str, a: &[f32], b: &[f32], r: usize, scaling: f32) -> Result<()> {
        let c = &self.config;
        let (hd, i) = (c.head_dim, c.intermediate_size);
        let (qo, kvo) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let n_layers = self.layers.len();
        let l = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Invalid(format!("LoRA for layer {layer}: the model has {n_layers} layers")))?;
        let (proj, row0, out) = match module {
            "q_proj" => (&mut l.qkv, 0, qo),
            "k_proj" => (&mut l.qkv, qo, kvo),
            "v_proj" => (&mut l.qkv, qo + kvo, kvo),
            "o_proj" => (&mut l.o, 0, c.hidden_size),
            "gate_proj" => (&mut l.gate_up, 0, i),
            "up_proj" => (&mut l.gate_up, i, i),
            "down_proj" => (&mut l.down, 0, c.hidden_size),
            other => return Err(Error::Invalid(format!("LoRA for an unknown projection {other:?}"))),
        };
        let cols = proj.w.cols();
        if r == 0 || a.len() != r * cols || b.len() != out * r {
            return Err(Error::Invalid(format!(
                "LoRA for layer {layer} {module}: A has {} values and B {} (want [{r}, {cols}] and [{out}, {r}])",
                a.len(),
                b.len()
            )));
        }
        let bt = (0..r * out).map(|k| b[(k % out) * r + k / out] * scaling).collect();
        proj.lora.push(LowRank {
            a: a.to_vec(),
            bt,
            r,
            row0,
            out,
        });
        Ok(())
    }

    /// Logits of `rows` hidden states (`[rows, hidden]` -> `[rows, vocab]`).
    pub fn logits(&self, hidden: &[f32], rows: usize) -> Vec<f32> {
        self.lm_head.matmul(hidden, rows, self.precision)
    }

    /// Logits of the last position of each row: `batch` vectors of `vocab`.
    pub fn forward_last(&self, ids: &[Vec<u32>], cache: &mut CpuKvCache) -> Result<Vec<Vec<f32>>> {
        let hidden = self.forward_hidden(ids, cache)?;
        let d = self.config.hidden_size;
        let s = ids[0].len();
        let last: Vec<f32> = (0..ids.len())
            .flat_map(|b| hidden[((b + 1) * s - 1) * d..(b + 1) * s * d].iter().copied())
            .collect();
        let logits = self.logits(&last, ids.len());
        let v = self.config.vocab_size;
        Ok(logits.chunks_exact(v).map(<[f32]>::to_vec).collect())
    }

    /// Attention of the new positions (q in `qkv`) over the cache of layer `li`; returns
    /// `[batch * s, heads * hd]`. With a sliding `window`, the query at position `p` sees only
    /// the keys at positions `j` with `p - j < window`.
    ///
    /// Per key/value head, the query rows of all its heads and streams are gathered into one
    /// matrix, so the shared prefix is multiplied once for every stream (`[rows, hd] x [hd,
    /// prefix]`), and each stream's own positions follow with a causal mask.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        qkv: &[f32],
        cache: &CpuKvCache,
        li: usize,
        batch: usize,
        s: usize,
        own_start: usize,
        window: Option<usize>,
    ) -> Vec<f32> {
        // Decoding (one new position per stream): split-K over the shared prefix. Prefill: GEMM.
        if s == 1 {
            return self.attention_decode(qkv, cache, li, batch, own_start, window);
        }
        let c = &self.config;
        let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let g = h / kvh;
        let qkv_w = (h + 2 * kvh) * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let lc = &cache.layers[li];
        let prefix_len = cache.prefix_len;
        let total = own_start + s;
        let per_head: Vec<Vec<f32>> = (0..kvh)
            .into_par_iter()
            .map(|kv| {
                // Query rows of this kv head: (stream b, head gi, position i), scaled.
                let rows_per_stream = g * s;
                let r_all = batch * rows_per_stream;
                let mut q = vec![0.0f32; r_all * hd];
                for b in 0..batch {
                    for gi in 0..g {
                        for i in 0..s {
                            let src = &qkv[(b * s + i) * qkv_w + (kv * g + gi) * hd..][..hd];
                            let dst = &mut q[((b * g + gi) * s + i) * hd..][..hd];
                            dst.iter_mut().zip(src).for_each(|(d, v)| *d = v * scale);
                        }
                    }
                }
                let cols = prefix_len + total;
                let mut scores = vec![0.0f32; r_all * cols];
                if let Some(p) = &lc.prefix {
                    let kpt = &p.kt[kv * hd * p.ld..(kv + 1) * hd * p.ld];
                    host::gemm_raw(
                        r_all,
                        prefix_len,
                        hd,
                        &mut scores,
                        cols,
                        &q,
                        hd,
                        false,
                        kpt,
                        p.ld,
                        false,
                    );
                }
                for b in 0..batch {
                    let ko = lc.own_k(b, kv, total);
                    let rows = &q[b * rows_per_stream * hd..(b + 1) * rows_per_stream * hd];
                    let dst = &mut scores[b * rows_per_stream * cols + prefix_len..];
                    host::gemm_raw(rows_per_stream, total, hd, dst, cols, rows, hd, false, ko, hd, true);
                    // Causal mask: position i sees own positions j <= own_start + i.
                    for gi in 0..g {
                        for i in 0..s {
                            let r = b * rows_per_stream + gi * s + i;
                            let row = &mut scores[r * cols + prefix_len..(r + 1) * cols];
                            row[own_start + i + 1..].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                        }
                    }
                }
                if let Some(w) = window {
                    // Query i is at position p = prefix_len + own_start + i; column c (prefix
                    // and own positions in order) is position c. Keep c > p - w.
                    for r in 0..r_all {
                        let p = prefix_len + own_start + r % s;
                        let lo = (p + 1).saturating_sub(w);
                        scores[r * cols..r * cols + lo]
                            .iter_mut()
                            .for_each(|v| *v = f32::NEG_INFINITY);
                    }
                }
                host::softmax_rows(&mut scores, cols);
                let mut out = vec![0.0f32; r_all * hd];
                if let Some(p) = &lc.prefix {
                    let vp = &p.v[kv * prefix_len * hd..(kv + 1) * prefix_len * hd];
                    host::gemm_raw(r_all, hd, prefix_len, &mut out, hd, &scores, cols, false, vp, hd, false);
                }
                for b in 0..batch {
                    let vo = lc.own_v(b, kv, total);
                    let probs = &scores[b * rows_per_stream * cols + prefix_len..];
                    let mut part = vec![0.0f32; rows_per_stream * hd];
                    host::gemm_raw(
                        rows_per_stream,
                        hd,
                        total,
                        &mut part,
                        hd,
                        probs,
                        cols,
                        false,
                        vo,
                        hd,
                        false,
                    );
                    out[b * rows_per_stream * hd..(b + 1) * rows_per_stream * hd]
                        .iter_mut()
                        .zip(&part)
                        .for_each(|(o, p)| *o += p);
                }
                out
            })
            .collect();
        // Back to [batch, s, heads * hd].
        let mut attn = vec![0.0f32; batch * s * h * hd];
        for (kv, out) in per_head.iter().enumerate() {
            for b in 0..batch {
                for gi in 0..g {
                    for i in 0..s {
                        let src = &out[((b * g + gi) * s + i) * hd..][..hd];
                        attn[(b * s + i) * h * hd + (kv * g + gi) * hd..][..hd].copy_from_slice(src);
                    }
                }
            }
        }
        attn
    }
}

impl CpuDecoder {
    /// Attention of one new position per stream (see `ops::decode_attention`).
    /// With a sliding `window`, only the last `window` positions (the new one included) are
    /// read: the prefix and own keys are cut to them.
    fn attention_decode(
        &self,
        qkv: &[f32],
        cache: &CpuKvCache,
        li: usize,
        batch: usize,
        own_start: usize,
        window: Option<usize>,
    ) -> Vec<f32> {
        let c = &self.config;
        let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let g = h / kvh;
        let qkv_w = (h + 2 * kvh) * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let lc = &cache.layers[li];
        let pl = cache.prefix_len;
        let total = own_start + 1;
        // First position read: everything, or the window ending at this one (`pl + own_start`).
        let lo = window.map_or(0, |w| (pl + total).saturating_sub(w));
        let (pre_lo, own_lo) = (lo.min(pl), lo.saturating_sub(pl));
        let q: Vec<Vec<f32>> = (0..kvh)
            .map(|kv| {
                let mut q = vec![0.0f32; batch * g * hd];
                for b in 0..batch {
                    for gi in 0..g {
                        let src = &qkv[b * qkv_w + (kv * g + gi) * hd..][..hd];
                        q[(b * g + gi) * hd..][..hd]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d = v * scale);
                    }
                }
                q
            })
            .collect();
        let heads: Vec<HeadKv> = (0..kvh)
            .map(|kv| {
                let (prefix_kt, prefix_v, prefix_ld): (&[f32], &[f32], usize) = match &lc.prefix {
                    // Transposed keys from column `pre_lo` on: the same stride, fewer columns.
                    Some(p) => (
                        &p.kt[kv * hd * p.ld + pre_lo..(kv + 1) * hd * p.ld],
                        &p.v[(kv * pl + pre_lo) * hd..(kv + 1) * pl * hd],
                        p.ld,
                    ),
                    None => (&[], &[], 0),
                };
                HeadKv {
                    prefix_kt,
                    prefix_v,
                    prefix_ld,
                    own_k: (0..batch).map(|b| &lc.own_k(b, kv, total)[own_lo * hd..]).collect(),
                    own_v: (0..batch).map(|b| &lc.own_v(b, kv, total)[own_lo * hd..]).collect(),
                }
            })
            .collect();
        let out = decode_attention::attend(&q, &heads, batch, g, hd);
        let mut attn = vec![0.0f32; batch * h * hd];
        for (kv, o) in out.iter().enumerate() {
            for b in 0..batch {
                for gi in 0..g {
                    attn[b * h * hd + (kv * g + gi) * hd..][..hd].copy_from_slice(&o[(b * g + gi) * hd..][..hd]);
                }
            }
        }
        attn
    }
}

/// A shared prefix: keys transposed, `[kv_heads, hd, ld]` with the first `len` of each row used
/// (so decode attention reads a block of keys as one vector, see `ops::decode_attention`),
/// values `[kv_heads, len, hd]`.
#[derive(Debug)]
pub struct PrefixKv {
    pub kt: Vec<f32>,
    pub v: Vec<f32>,
    /// Row stride of `kt`: `len` rounded up to 16 floats, plus 16 so that it is never a multiple
    /// of 4 KiB (rows at such strides share one L1 set and evict each other).
    pub ld: usize,
}

fn prefix_ld(len: usize) -> usize {
    len.next_multiple_of(16) + 16
}

/// One layer's cache on the host.
#[derive(Debug, Clone)]
pub struct CpuLayerCache {
    pub prefix: Option<Arc<PrefixKv>>,
    /// `[batch, kv_heads, capacity, hd]`.
    k: Vec<f32>,
    v: Vec<f32>,
    capacity: usize,
    kv_heads: usize,
    hd: usize,
}

impl CpuLayerCache {
    fn own_k(&self, b: usize, kv: usize, len: usize) -> &[f32] {
        let at = ((b * self.kv_heads + kv) * self.capacity) * self.hd;
        &self.k[at..at + len * self.hd]
    }

    fn own_v(&self, b: usize, kv: usize, len: usize) -> &[f32] {
        let at = ((b * self.kv_heads + kv) * self.capacity) * self.hd;
        &self.v[at..at + len * self.hd]
    }
}

/// The KV cache of the CPU engine.
#[derive(Debug, Clone)]
pub struct CpuKvCache {
    pub layers: Vec<CpuLayerCache>,
    pub prefix_len: usize,
    pub len: usize,
    pub batch: usize,
}

impl CpuKvCache {
    fn new(c: &DecoderConfig, batch: usize) -> Self {
        CpuKvCache {
            layers: (0..c.num_hidden_layers)
                .map(|_| CpuLayerCache {
                    prefix: None,
                    k: Vec::new(),
                    v: Vec::new(),
                    capacity: 0,
                    kv_heads: c.num_key_value_heads,
                    hd: c.head_dim,
                })
                .collect(),
            prefix_len: 0,
            len: 0,
            batch,
        }
    }

    pub fn position(&self) -> usize {
        self.prefix_len + self.len
    }

    /// Makes room for `len` own positions per stream (doubling, so appends are amortized O(1)).
    fn reserve(&mut self, len: usize) {
        for l in &mut self.layers {
            if len <= l.capacity {
                continue;
            }
            let cap = len.max(2 * l.capacity).max(64);
            let (kvh, hd) = (l.kv_heads, l.hd);
            let mut k = vec![0.0f32; self.batch * kvh * cap * hd];
            let mut v = vec![0.0f32; self.batch * kvh * cap * hd];
            for bk in 0..self.batch * kvh {
                let old = bk * l.capacity * hd;
                let new = bk * cap * hd;
                let n = self.len * hd;
                k[new..new + n].copy_from_slice(&l.k[old..old + n]);
                v[new..new + n].copy_from_slice(&l.v[old..old + n]);
            }
            l.k = k;
            l.v = v;
            l.capacity = cap;
        }
    }

    /// Writes the k, v heads of `qkv` rows (`[batch * s, (h + 2 kvh) hd]`) at own positions
    /// `start..start + s` of layer `li`.
    #[allow(clippy::too_many_arguments)]
    fn write(&mut self, li: usize, qkv: &[f32], batch: usize, s: usize, start: usize, h: usize, kvh: usize, hd: usize) {
        let l = &mut self.layers[li];
        let w = (h + 2 * kvh) * hd;
        for b in 0..batch {
            for i in 0..s {
                let row = &qkv[(b * s + i) * w..(b * s + i + 1) * w];
                for kv in 0..kvh {
                    let at = ((b * kvh + kv) * l.capacity + start + i) * hd;
                    l.k[at..at + hd].copy_from_slice(&row[(h + kv) * hd..(h + kv + 1) * hd]);
                    l.v[at..at + hd].copy_from_slice(&row[(h + kvh + kv) * hd..(h + kvh + kv + 1) * hd]);
                }
            }
        }
    }

    /// Turns a single-stream cache into the shared prefix of `n` new streams.
    pub fn fork(&self, n: usize) -> Result<CpuKvCache> {
        if self.batch != 1 {
            return Err(Error::Invalid("only a single-stream cache can be forked".into()));
        }
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let (kvh, hd) = (l.kv_heads, l.hd);
                let (pl, own) = (self.prefix_len, self.len);
                let total = pl + own;
                let ld = prefix_ld(total);
                let mut kt = vec![0.0f32; kvh * hd * ld];
                let mut v = Vec::with_capacity(kvh * total * hd);
                for kv in 0..kvh {
                    let dst = &mut kt[kv * hd * ld..(kv + 1) * hd * ld];
                    if let Some(p) = &l.prefix {
                        let src = &p.kt[kv * hd * p.ld..(kv + 1) * hd * p.ld];
                        for d in 0..hd {
                            dst[d * ld..d * ld + pl].copy_from_slice(&src[d * p.ld..d * p.ld + pl]);
                        }
                        v.extend_from_slice(&p.v[kv * pl * hd..(kv + 1) * pl * hd]);
                    }
                    for (j, row) in l.own_k(0, kv, own).chunks_exact(hd).enumerate() {
                        for (d, x) in row.iter().enumerate() {
                            dst[d * ld + pl + j] = *x;
                        }
                    }
                    v.extend_from_slice(l.own_v(0, kv, own));
                }
                CpuLayerCache {
                    prefix: Some(Arc::new(PrefixKv { kt, v, ld })),
                    k: Vec::new(),
                    v: Vec::new(),
                    capacity: 0,
                    kv_heads: kvh,
                    hd,
                }
            })
            .collect();
        Ok(CpuKvCache {
            layers,
            prefix_len: self.position(),
            len: 0,
            batch: n,
        })
    }

    /// Keeps only the streams `rows` (in that order).
    pub fn retain_rows(&mut self, rows: &[usize]) {
        for l in &mut self.layers {
            let block = l.kv_heads * l.capacity * l.hd;
            if block == 0 {
                continue;
            }
            let mut k = Vec::with_capacity(rows.len() * block);
            let mut v = Vec::with_capacity(rows.len() * block);
            for &r in rows {
                k.extend_from_slice(&l.k[r * block..(r + 1) * block]);
                v.extend_from_slice(&l.v[r * block..(r + 1) * block]);
            }
            l.k = k;
            l.v = v;
        }
        self.batch = rows.len();
    }
}
