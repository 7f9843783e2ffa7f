//! Fused causal grouped-query attention with its own backward (FlashAttention-2 style), with
//! its plain-burn reference twin.
//!
//! Inputs (shared by both paths), with `scale = 1 / sqrt(hd)`:
//! - `q` `[B, H, S, hd]`, rotary already applied;
//! - own keys and values `k`, `v` `[B, KVH, S, hd]` (query head `h` reads kv head
//!   `h / (H / KVH)`, as HF repeats kv heads), causal: query `i` sees own keys `0..=i`;
//! - optionally a shared prefix `pk`, `pv` `[1, KVH, P, hd]` (a prompt's keys and values shared
//!   by several responses) that every query sees in full, before its own keys. Its gradient is
//!   the sum over the batch rows.
//!
//! Right padding needs no mask: with causal attention a real position never sees a later one.
//!
//! Two paths, one contract:
//! - [`flash_attention`] (fused): per query row, one row of scores at a time and an exact
//!   softmax over it; only the output and each row's log-sum-exp are kept, and the backward
//!   recomputes the probabilities tile by tile from the log-sum-exp (`host.rs` on the CPU,
//!   `cube.rs` on cubecl devices). No `[S, P + S]` matrix exists in either direction: memory is
//!   linear in the sequence length.
//! - [`attention_reference`] (twin): the materialized `softmax(q kᵀ · scale + mask) v` in plain
//!   burn ops; autodiff works through it as through any burn expression (and keeps the whole
//!   probability matrix for its backward).
//!
//! Both run on every backend and under autodiff.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType};

#[cfg(feature = "wgpu")]
mod cube;
pub mod host;
mod ops;

pub use ops::FlashAttentionOps;

/// Why the attention refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionError(pub String);

impl std::fmt::Display for AttentionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attention: {}", self.0)
    }
}

impl std::error::Error for AttentionError {}

fn as_f32(t: Tensor<4>) -> Tensor<4> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// Checks the shapes; returns the prefix length.
fn check(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    prefix: Option<&(Tensor<4>, Tensor<4>)>,
) -> Result<usize, AttentionError> {
    let [b, h, s, hd] = q.dims();
    let [kb, kvh, ks, khd] = k.dims();
    let bad = |m: String| Err(AttentionError(m));
    if v.dims() != k.dims() {
        return bad(format!("k {:?} and v {:?} differ", k.dims(), v.dims()));
    }
    if kb != b || ks != s || khd != hd {
        return bad(format!("q {:?} and own keys {:?} disagree", q.dims(), k.dims()));
    }
    if kvh == 0 || h % kvh != 0 {
        return bad(format!("{h} query heads are not a multiple of {kvh} kv heads"));
    }
    if b == 0 || s == 0 || hd == 0 {
        return bad(format!("empty input {:?}", q.dims()));
    }
    match prefix {
        None => Ok(0),
        Some((pk, pv)) => {
            let [pb, pkvh, p, phd] = pk.dims();
            if pv.dims() != pk.dims() || pb != 1 || pkvh != kvh || phd != hd {
                return bad(format!(
                    "prefix k {:?} / v {:?} must be [1, {kvh}, P, {hd}]",
                    pk.dims(),
                    pv.dims()
                ));
            }
            Ok(p)
        }
    }
}

/// Fused attention (see the module docs): `[B, H, S, hd]`.
pub fn flash_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    prefix: Option<(Tensor<4>, Tensor<4>)>,
) -> Result<Tensor<4>, AttentionError> {
    let p = check(&q, &k, &v, prefix.as_ref())?;
    let (q, k, v) = (
        as_f32(q).into_dispatch(),
        as_f32(k).into_dispatch(),
        as_f32(v).into_dispatch(),
    );
    let (o, _lse) = match prefix {
        Some((pk, pv)) if p > 0 => <Dispatch as FlashAttentionOps>::flash_attention_prefixed(
            q,
            k,
            v,
            as_f32(pk).into_dispatch(),
            as_f32(pv).into_dispatch(),
        ),
        _ => <Dispatch as FlashAttentionOps>::flash_attention(q, k, v),
    };
    Ok(Tensor::<4>::from_dispatch(o))
}

/// The twin: materialized scores, mask and softmax in plain burn ops. Same contract as
/// [`flash_attention`].
pub fn attention_reference(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    prefix: Option<(Tensor<4>, Tensor<4>)>,
) -> Result<Tensor<4>, AttentionError> {
    let p = check(&q, &k, &v, prefix.as_ref())?;
    let [b, h, s, hd] = q.dims();
    let kvh = k.dims()[1];
    let group = h / kvh;
    let device = q.device();
    let (k, v) = match prefix {
        Some((pk, pv)) if p > 0 => (
            Tensor::cat(vec![pk.expand([b, kvh, p, hd]), k], 2),
            Tensor::cat(vec![pv.expand([b, kvh, p, hd]), v], 2),
        ),
        _ => (k, v),
    };
    let l = p + s;
    // Repeat each kv head for its group of query heads: [B, KVH, L, hd] -> [B, H, L, hd].
    let rep = |t: Tensor<4>| {
        t.reshape([b, kvh, 1, l, hd])
            .expand([b, kvh, group, l, hd])
            .reshape([b, h, l, hd])
    };
    let scores = q.matmul(rep(k).swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
    let mut mask = vec![false; s * l];
    for i in 0..s {
        for j in p + i + 1..l {
            mask[i * l + j] = true;
        }
    }
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [s, l]), &device)
        .reshape([1, 1, s, l])
        .expand([b, h, s, l]);
    Ok(softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3).matmul(rep(v)))
}
