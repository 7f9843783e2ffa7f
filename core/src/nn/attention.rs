//! Causal grouped-query attention of new positions against a KV cache with an optional shared
//! prefix (N sample streams over one prompt). Plain burn ops, so it runs on every backend and
//! under autodiff.
//!
//! Query heads are grouped by their key/value head (`h = kv * group + g`, as HF repeats KV
//! heads), so `[batch, heads, s, hd]` reshapes to `[batch, kv_heads, group * s, hd]` and one
//! batched matmul per KV head serves all its query heads without repeating K/V. Against the
//! shared prefix, the streams are folded into the rows as well: `[1, kv_heads, batch * group *
//! s, hd] x [1, kv_heads, hd, prefix_len]`, one GEMM reading the prefix once for all streams.

use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::nn::kv_cache::LayerCache;

/// With `fused` and an empty per-stream cache (`start == 0`: a prompt, or responses against a
/// shared prompt), the fused kernel of `sealong_shaders::attention` computes the same thing
/// without any `[seq_len, total]` score matrix, and with its own backward.
///
/// # Shapes
/// `q`: `[batch, heads, seq_len, hd]` (rotary applied); `k`, `v`: `[batch, kv_heads, seq_len, hd]`.
/// `start`: positions already in the per-stream cache. Returns `[batch, seq_len, heads * hd]`.
pub fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    cache: &mut LayerCache,
    start: usize,
    fused: bool,
) -> Tensor<3> {
    let [batch, heads, seq_len, hd] = q.dims();
    if fused && start == 0 {
        cache.append(k.clone(), v.clone(), 0);
        let out = sealong_shaders::attention::flash_attention(q, k, v, cache.prefix.clone())
            .expect("the decoder's q, k, v and cache prefix have consistent shapes");
        return out.swap_dims(1, 2).reshape([batch, seq_len, heads * hd]);
    }
    let kv_heads = k.dims()[1];
    let group = heads / kv_heads;
    let rows = group * seq_len;
    let (k_all, v_all) = cache.append(k, v, start);
    let total = start + seq_len;
    let q = (q * (1.0 / (hd as f64).sqrt())).reshape([batch, kv_heads, rows, hd]);
    let device = q.device();

    let mut own = q.clone().matmul(k_all.swap_dims(2, 3)); // [batch, kv_heads, rows, total]
    if seq_len > 1 {
        // Query i (row g*seq_len + i) sees own positions j <= start + i.
        let mut mask = vec![false; rows * total];
        for g in 0..group {
            for i in 0..seq_len {
                let r = g * seq_len + i;
                for j in start + i + 1..total {
                    mask[r * total + j] = true;
                }
            }
        }
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(mask, [1, 1, rows, total]), &device)
            .expand([batch, kv_heads, rows, total]);
        own = own.mask_fill(mask, f32::NEG_INFINITY);
    }

    let out = match &cache.prefix {
        None => softmax(own, 3).matmul(v_all),
        Some((pk, pv)) => {
            let prefix_len = pk.dims()[2];
            let fold = |t: Tensor<4>| -> Tensor<4> {
                if batch == 1 {
                    t
                } else {
                    let cols = t.dims()[3];
                    t.swap_dims(0, 1).reshape([1, kv_heads, batch * rows, cols])
                }
            };
            let unfold = |t: Tensor<4>, cols: usize| -> Tensor<4> {
                if batch == 1 {
                    t
                } else {
                    t.reshape([kv_heads, batch, rows, cols]).swap_dims(0, 1)
                }
            };
            let pre = unfold(fold(q).matmul(pk.clone().swap_dims(2, 3)), prefix_len);
            let probs = softmax(Tensor::cat(vec![pre, own], 3), 3);
            let p_pre = probs.clone().narrow(3, 0, prefix_len);
            let p_own = probs.narrow(3, prefix_len, total);
            let from_prefix = unfold(fold(p_pre).matmul(pv.clone()), hd);
            from_prefix + p_own.matmul(v_all)
        }
    };
    // [batch, kv_heads, group * seq_len, hd] -> [batch, heads, seq_len, hd] -> [batch, seq_len, heads * hd]
    out.reshape([batch, heads, seq_len, hd])
        .swap_dims(1, 2)
        .reshape([batch, seq_len, heads * hd])
}
