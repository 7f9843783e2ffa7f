//! The encoder on burn (any backend: wgpu for GPUs and the browser's WebGPU, flex on the CPU),
//! the twin of the host engine in `cpu.rs`. A batch is right-padded to its longest sentence;
//! pad keys get `-inf` before the softmax (weight exactly 0) and pad rows are left out of the
//! pooling, so padding does not change a sentence's vector.

use burn::prelude::*;
use burn::tensor::activation::{gelu, relu, softmax};

use crate::models::encoder::config::{EncoderConfig, Pooling};
use crate::models::encoder::weights::EncoderWeights;

#[derive(Debug, Clone)]
struct Layer {
    /// Linear weights stored transposed, `[in, out]`, for `x.matmul(w)`.
    qkv: Tensor<2>,
    qkv_bias: Tensor<1>,
    attn_out: Tensor<2>,
    attn_out_bias: Tensor<1>,
    attn_norm: (Tensor<1>, Tensor<1>),
    inter: Tensor<2>,
    inter_bias: Tensor<1>,
    out: Tensor<2>,
    out_bias: Tensor<1>,
    out_norm: (Tensor<1>, Tensor<1>),
}

#[derive(Debug, Clone)]
pub struct BurnEncoder {
    pub config: EncoderConfig,
    word: Tensor<2>,
    position: Tensor<2>,
    token_type0: Tensor<1>,
    embed_norm: (Tensor<1>, Tensor<1>),
    layers: Vec<Layer>,
    device: Device,
}

fn t1(v: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// `[out, in]` row-major -> `[in, out]` tensor.
fn t2t(v: &[f32], out: usize, inp: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(v.to_vec(), [out, inp]), device).transpose()
}

/// LayerNorm over the last dimension (biased variance, as torch).
fn layer_norm<const D: usize>(x: Tensor<D>, (w, b): &(Tensor<1>, Tensor<1>), eps: f64) -> Tensor<D> {
    let mean = x.clone().mean_dim(D - 1);
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(D - 1);
    let normed = centered * (var + eps).sqrt().recip();
    let d = w.dims()[0];
    let mut shape = [1usize; D];
    shape[D - 1] = d;
    normed * w.clone().reshape(shape) + b.clone().reshape(shape)
}

impl BurnEncoder {
    pub fn new(config: EncoderConfig, w: &EncoderWeights, device: &Device) -> Self {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let layers = w
            .layers
            .iter()
            .map(|l| Layer {
                qkv: t2t(&l.qkv, 3 * h, h, device),
                qkv_bias: t1(&l.qkv_bias, device),
                attn_out: t2t(&l.attn_out, h, h, device),
                attn_out_bias: t1(&l.attn_out_bias, device),
                attn_norm: (t1(&l.attn_norm.0, device), t1(&l.attn_norm.1, device)),
                inter: t2t(&l.inter, i, h, device),
                inter_bias: t1(&l.inter_bias, device),
                out: t2t(&l.out, h, i, device),
                out_bias: t1(&l.out_bias, device),
                out_norm: (t1(&l.out_norm.0, device), t1(&l.out_norm.1, device)),
            })
            .collect();
        BurnEncoder {
            word: Tensor::from_data(TensorData::new(w.word.clone(), [config.vocab_size, h]), device),
            position: Tensor::from_data(
                TensorData::new(w.position.clone(), [config.max_position_embeddings, h]),
                device,
            ),
            token_type0: t1(&w.token_type0, device),
            embed_norm: (t1(&w.embed_norm.0, device), t1(&w.embed_norm.1, device)),
            layers,
            config,
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Pooled sentence vectors `[batch, hidden]` (before any normalization).
    pub fn pooled(&self, seqs: &[Vec<u32>], pooling: Pooling) -> Tensor<2> {
        let c = &self.config;
        let dev = &self.device;
        let (b, h, nh, hd) = (seqs.len(), c.hidden_size, c.num_attention_heads, c.head_dim());
        let l = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![c.pad_token_id as i32; b * l];
        let mut keep = vec![0.0f32; b * l];
        for (s, seq) in seqs.iter().enumerate() {
            for (p, &id) in seq.iter().enumerate() {
                ids[s * l + p] = id as i32;
                keep[s * l + p] = 1.0;
            }
        }
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [b * l]), dev);
        let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, l]), dev);
        let off = c.position_offset();
        let pos = self.position.clone().narrow(0, off, l).reshape([1, l, h]);
        let x = self.word.clone().select(0, ids).reshape([b, l, h]) + pos + self.token_type0.clone().reshape([1, 1, h]);
        let mut x = layer_norm(x, &self.embed_norm, c.layer_norm_eps);
        // Additive key mask: 0 for tokens, -inf for padding.
        let pad = keep.clone().equal_elem(0.0).reshape([b, 1, 1, l]);
        let scale = 1.0 / (hd as f64).sqrt();
        for ly in &self.layers {
            let qkv = x.clone().matmul(ly.qkv.clone().unsqueeze()) + ly.qkv_bias.clone().reshape([1, 1, 3 * h]);
            let split = |k: usize| {
                qkv.clone()
                    .slice([0..b, 0..l, k * h..(k + 1) * h])
                    .reshape([b, l, nh, hd])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let scores = (q * scale)
                .matmul(k.swap_dims(2, 3))
                .mask_fill(pad.clone().expand([b, nh, l, l]), f32::NEG_INFINITY);
            let ctx = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, l, h]);
            let a = ctx.matmul(ly.attn_out.clone().unsqueeze()) + ly.attn_out_bias.clone().reshape([1, 1, h]);
            let a = layer_norm(a + x, &ly.attn_norm, c.layer_norm_eps);
            let f = a.clone().matmul(ly.inter.clone().unsqueeze())
                + ly.inter_bias.clone().reshape([1, 1, c.intermediate_size]);
            let f = match c.hidden_act.as_str() {
                "relu" => relu(f),
                "gelu" => gelu(f),
                // The tanh approximation.
                _ => {
                    let inner = (f.clone() + f.clone().powf_scalar(3.0) * 0.044_715) * 0.797_884_6;
                    f * (inner.tanh() + 1.0) * 0.5
                }
            };
            let o = f.matmul(ly.out.clone().unsqueeze()) + ly.out_bias.clone().reshape([1, 1, h]);
            x = layer_norm(o + a, &ly.out_norm, c.layer_norm_eps);
        }
        match pooling {
            Pooling::Cls => x.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            Pooling::Mean => {
                let m = keep.clone().reshape([b, l, 1]);
                let sum = (x * m).sum_dim(1).reshape([b, h]);
                let count = keep.sum_dim(1).clamp_min(1e-9);
                sum / count
            }
            Pooling::Max => {
                let m = keep.reshape([b, l, 1]).equal_elem(0.0).expand([b, l, h]);
                x.mask_fill(m, f32::NEG_INFINITY).max_dim(1).reshape([b, h])
            }
        }
    }
}
