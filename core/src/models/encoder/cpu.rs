//! The encoder on host buffers (the CPU engine), the twin of the burn encoder in `model.rs`.
//!
//! A batch is never padded: the token rows of all its sentences are stacked into one
//! `[tokens, hidden]` matrix for every linear layer (one large GEMM), and attention runs per
//! sentence over its own tokens. Padding therefore cannot change a result, and no work is spent
//! on pad positions.
//!
//! Speed (all-MiniLM-L6-v2, 512 sentences of 30 words at batch 32, 2 cores): the linear layers
//! are ~80% of the time, in the `gemm` crate at about its peak; everything else is written so
//! that it stays small:
//! - the linear weights are kept transposed (`[in, out]`): packing them is a contiguous copy;
//! - one set of activation buffers serves every layer (each product overwrites its output), so
//!   no per-layer allocation, zeroing or page faults;
//! - bias + GELU and bias + residual + LayerNorm are one pass per row; no libm calls in loops
//!   (GELU's erf is a rational approximation, softmax's exp a polynomial), reductions in 16
//!   lanes, so LLVM vectorizes them;
//! - attention takes one sequence per task, copies its heads' q, k, v out of the wide qkv rows
//!   once (K transposed), and runs scores and the weighted sum of V in register blocks.
//!
//! Those loops are compiled again for AVX2+FMA and for AVX-512 and picked at run time
//! (`ops::vector::multiversion!`; the crate is built for baseline x86-64, whose SSE2 is 4 lanes
//! wide). No loop sums in an order that
//! depends on the batch, so a sentence's vector is the same alone or batched.

use rayon::prelude::*;

use crate::models::encoder::config::{EncoderConfig, Pooling};
use crate::models::encoder::weights::EncoderWeights;
use crate::ops::host;
use crate::ops::vector::{exp_f32, lane_sum, multiversion};

multiversion!(fn attend => attend_impl(heads: &Heads<'_>, out: &mut [f32]));
multiversion!(fn bias_gelu => bias_gelu_impl(block: &mut [f32], bias: &[f32]));
multiversion!(fn bias_residual_norm => bias_residual_norm_impl(
    block: &mut [f32],
    res: &[f32],
    bias: &[f32],
    weight: &[f32],
    beta: &[f32],
    eps: f32,
));

/// One layer's linear weights transposed to `[in, out]` row-major (biases and norms stay in
/// [`EncoderWeights`]).
#[derive(Debug, Clone)]
struct LayerT {
    qkv: Vec<f32>,
    attn_out: Vec<f32>,
    inter: Vec<f32>,
    out: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct CpuEncoder {
    pub config: EncoderConfig,
    /// Embeddings, biases and norms; the layers' linear matrices are moved into `layers_t`.
    weights: EncoderWeights,
    layers_t: Vec<LayerT>,
}

/// `w` (`[rows, cols]` row-major) transposed to `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; w.len()];
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    t[c * rows + r] = w[r * cols + c];
                }
            }
        }
    }
    t
}

impl CpuEncoder {
    pub fn new(config: EncoderConfig, mut weights: EncoderWeights) -> Self {
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let layers_t = weights
            .layers
            .iter_mut()
            .map(|l| LayerT {
                qkv: transpose(&std::mem::take(&mut l.qkv), 3 * h, h),
                attn_out: transpose(&std::mem::take(&mut l.attn_out), h, h),
                inter: transpose(&std::mem::take(&mut l.inter), inter, h),
                out: transpose(&std::mem::take(&mut l.out), h, inter),
            })
            .collect();
        CpuEncoder {
            config,
            weights,
            layers_t,
        }
    }

    /// Last hidden states of each sequence (`ids` include the special tokens), `[len, hidden]`.
    pub fn hidden_states(&self, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let w = &self.weights;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let eps = c.layer_norm_eps as f32;
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(seqs.iter().scan(0, |acc, s| {
                *acc += s.len();
                Some(*acc)
            }))
            .collect();
        let t = offsets[seqs.len()];
        // Embeddings: word + position + token type 0, then LayerNorm.
        let mut x = vec![0.0f32; t * h];
        for (s, ids) in seqs.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let row = &mut x[(offsets[s] + p) * h..(offsets[s] + p + 1) * h];
                let pos = c.position_offset() + p;
                let we = &w.word[id as usize * h..(id as usize + 1) * h];
                let pe = &w.position[pos * h..(pos + 1) * h];
                for (((o, a), b), tt) in row.iter_mut().zip(we).zip(pe).zip(&w.token_type0) {
                    *o = a + b + tt;
                }
            }
        }
        host::layer_norm_rows(&mut x, h, &w.embed_norm.0, &w.embed_norm.1, eps);
        // Activation buffers, reused by every layer (each product overwrites its output).
        let mut qkv = vec![0.0f32; t * 3 * h];
        let mut ctx = vec![0.0f32; t * h];
        let mut a = vec![0.0f32; t * h];
        let mut f = vec![0.0f32; t * inter];
        let mut o = vec![0.0f32; t * h];
        for (l, lt) in w.layers.iter().zip(&self.layers_t) {
            linear(&x, t, &lt.qkv, 3 * h, h, &mut qkv);
            self.attention(&qkv, &l.qkv_bias, &offsets, &mut ctx);
            linear(&ctx, t, &lt.attn_out, h, h, &mut a);
            bias_residual_norm_rows(&mut a, &l.attn_out_bias, &x, &l.attn_norm.0, &l.attn_norm.1, eps);
            linear(&a, t, &lt.inter, inter, h, &mut f);
            bias_activation_rows(&mut f, &l.inter_bias, &c.hidden_act);
            linear(&f, t, &lt.out, h, inter, &mut o);
            bias_residual_norm_rows(&mut o, &l.out_bias, &a, &l.out_norm.0, &l.out_norm.1, eps);
            std::mem::swap(&mut x, &mut o);
        }
        (0..seqs.len())
            .map(|s| x[offsets[s] * h..offsets[s + 1] * h].to_vec())
            .collect()
    }

    /// Self-attention of every sequence over its own tokens; `qkv` is `[tokens, 3 hidden]`
    /// before its bias `qkv_bias` (added here). A task is one sequence with all its heads (its
    /// rows then stay in cache), or with fewer heads when there are too few sequences to keep
    /// every thread busy.
    fn attention(&self, qkv: &[f32], qkv_bias: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let c = &self.config;
        let (h, nh, hd) = (c.hidden_size, c.num_attention_heads, c.head_dim());
        let scale = 1.0 / (hd as f32).sqrt();
        let seqs = offsets.len() - 1;
        let threads = rayon::current_num_threads().max(1);
        // Heads per task: all of them, or fewer so that there are about 2 tasks per thread.
        let per = if seqs >= 2 * threads {
            nh
        } else {
            nh.div_ceil((2 * threads).div_ceil(seqs.max(1))).max(1)
        };
        let tasks: Vec<(usize, usize, usize)> = (0..seqs)
            .flat_map(|s| (0..nh).step_by(per).map(move |h0| (s, h0, (h0 + per).min(nh))))
            .collect();
        let outs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(s, h0, h1)| {
                let (a, b) = (offsets[s], offsets[s + 1]);
                let heads = Heads {
                    qkv: &qkv[a * 3 * h..b * 3 * h],
                    bias: qkv_bias,
                    len: b - a,
                    h,
                    hd,
                    heads: h0..h1,
                    scale,
                };
                let mut out = vec![0.0f32; heads.len * (h1 - h0) * hd];
                attend(&heads, &mut out);
                out
            })
            .collect();
        for (&(s, h0, h1), out) in tasks.iter().zip(&outs) {
            let w = (h1 - h0) * hd;
            for (i, o) in out.chunks_exact(w).enumerate() {
                ctx[(offsets[s] + i) * h + h0 * hd..][..w].copy_from_slice(o);
            }
        }
    }

    /// Pooled sentence vectors (before any normalization).
    pub fn pooled(&self, seqs: &[Vec<u32>], pooling: Pooling) -> Vec<Vec<f32>> {
        let h = self.config.hidden_size;
        self.hidden_states(seqs)
            .into_iter()
            .map(|states| pool(&states, h, pooling))
            .collect()
    }
}

/// `y = x [m, k] · wt [k, n]` (`wt` is a weight `[n, k]` transposed); `y` is overwritten.
fn linear(x: &[f32], m: usize, wt: &[f32], n: usize, k: usize, y: &mut [f32]) {
    host::gemm_raw(m, n, k, y, n, x, k, false, wt, n, false);
}

/// Attention heads `heads` of one sequence: rows of `qkv` (`[len, 3 h]`, before `bias`).
struct Heads<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    len: usize,
    h: usize,
    hd: usize,
    heads: std::ops::Range<usize>,
    scale: f32,
}

/// Lanes of the register-blocked loops in attention (one AVX2 register of f32).
const LANES: usize = 8;

/// `out [len, heads × hd]` = softmax(q kᵀ · scale) v for each head.
///
/// One pass over the sequence's rows first copies every head's q, k, v (bias added) into
/// contiguous scratch, K transposed to `[hd, len]` (padded to whole lanes), so the head loops
/// read cache-resident memory sequentially rather than 128 bytes of each 4.6 KB row. Scores
/// and the weighted sum of V then run in `LANES`-wide register blocks; each score still sums
/// over d in order and each output over positions in order.
#[inline(always)]
fn attend_impl(heads: &Heads<'_>, out: &mut [f32]) {
    let Heads {
        qkv,
        bias,
        len,
        h,
        hd,
        scale,
        ..
    } = *heads;
    let nh = heads.heads.len();
    let w = nh * hd;
    let lenp = len.div_ceil(LANES) * LANES;
    let (qsz, ksz) = (len * hd, hd * lenp);
    let mut qs = vec![0.0f32; nh * qsz];
    let mut kt = vec![0.0f32; nh * ksz];
    let mut vs = vec![0.0f32; nh * qsz];
    for j in 0..len {
        let row = &qkv[j * 3 * h..(j + 1) * 3 * h];
        for (k, hh) in heads.heads.clone().enumerate() {
            let at = hh * hd;
            let q = &mut qs[k * qsz + j * hd..][..hd];
            for ((o, &x), &b) in q.iter_mut().zip(&row[at..at + hd]).zip(&bias[at..at + hd]) {
                *o = x + b;
            }
            let kk = &mut kt[k * ksz..(k + 1) * ksz];
            for (d, (&x, &b)) in row[h + at..h + at + hd]
                .iter()
                .zip(&bias[h + at..h + at + hd])
                .enumerate()
            {
                kk[d * lenp + j] = x + b;
            }
            let v = &mut vs[k * qsz + j * hd..][..hd];
            for ((o, &x), &b) in v
                .iter_mut()
                .zip(&row[2 * h + at..2 * h + at + hd])
                .zip(&bias[2 * h + at..2 * h + at + hd])
            {
                *o = x + b;
            }
        }
    }
    let mut p = vec![0.0f32; lenp];
    let full = hd / LANES * LANES;
    for k in 0..nh {
        let (qh, kh, vh) = (
            &qs[k * qsz..(k + 1) * qsz],
            &kt[k * ksz..(k + 1) * ksz],
            &vs[k * qsz..(k + 1) * qsz],
        );
        for (i, q) in qh.chunks_exact(hd).enumerate() {
            // Scores in blocks of up to 4 register-wide chunks of positions.
            let chunks = lenp / LANES;
            let mut c0 = 0;
            while c0 + 4 <= chunks {
                scores_block::<4>(q, kh, lenp, c0, &mut p);
                c0 += 4;
            }
            while c0 < chunks {
                scores_block::<1>(q, kh, lenp, c0, &mut p);
                c0 += 1;
            }
            let p = &mut p[..len];
            let m = p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
            p.iter_mut().for_each(|x| *x = exp_f32(*x * scale - m));
            let inv = 1.0 / lane_sum(p);
            let o = &mut out[i * w + k * hd..][..hd];
            // The weighted sum of V in blocks of up to 4 register-wide chunks of dimensions.
            let mut d0 = 0;
            while d0 + 4 * LANES <= full {
                weighted_block::<4>(p, vh, hd, d0, inv, o);
                d0 += 4 * LANES;
            }
            while d0 < full {
                weighted_block::<1>(p, vh, hd, d0, inv, o);
                d0 += LANES;
            }
            for d in full..hd {
                let mut acc = 0.0f32;
                for (&pj, vj) in p.iter().zip(vh.chunks_exact(hd)) {
                    acc += pj * vj[d];
                }
                o[d] = acc * inv;
            }
        }
    }
}

/// `p[c0 + c]` chunks (`C` of them, `LANES` positions each) of `q · kᵀ` from `kt` (`[hd,
/// lenp]`): `C` independent accumulators share each broadcast of `q[d]`.
#[inline(always)]
fn scores_block<const C: usize>(q: &[f32], kt: &[f32], lenp: usize, c0: usize, p: &mut [f32]) {
    let mut acc = [[0.0f32; LANES]; C];
    for (d, &qd) in q.iter().enumerate() {
        let row = &kt[d * lenp + c0 * LANES..][..C * LANES];
        for (a, k) in acc.iter_mut().zip(row.chunks_exact(LANES)) {
            for (a, &x) in a.iter_mut().zip(k) {
                *a += qd * x;
            }
        }
    }
    for (pc, a) in p[c0 * LANES..(c0 + C) * LANES].chunks_exact_mut(LANES).zip(&acc) {
        pc.copy_from_slice(a);
    }
}

/// `o[d0 .. d0 + C·LANES] = inv · Σ_j p_j v_j[d0 ..]` with `C` independent accumulators.
#[inline(always)]
fn weighted_block<const C: usize>(p: &[f32], v: &[f32], hd: usize, d0: usize, inv: f32, o: &mut [f32]) {
    let mut acc = [[0.0f32; LANES]; C];
    for (&pj, vj) in p.iter().zip(v.chunks_exact(hd)) {
        for (a, x) in acc.iter_mut().zip(vj[d0..d0 + C * LANES].chunks_exact(LANES)) {
            for (a, &x) in a.iter_mut().zip(x) {
                *a += pj * x;
            }
        }
    }
    for (oc, a) in o[d0..d0 + C * LANES].chunks_exact_mut(LANES).zip(&acc) {
        for (o, &a) in oc.iter_mut().zip(a) {
            *o = a * inv;
        }
    }
}

/// `erf(x)` in f32 as a rational function on [-4, 4] (Eigen's `generic_fast_erf_float`; absolute
/// error below 5e-7), vectorizable.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_5e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_2e-3;
    q = q * x2 - 1.426_473_9e-2;
    x * p / q
}

/// `x += bias` per row, then the activation (HF "gelu" is the exact erf form).
fn bias_activation_rows(x: &mut [f32], bias: &[f32], act: &str) {
    if act != "gelu" {
        host::add_bias_rows(x, bias);
        host::activation_rows(x, act);
        return;
    }
    let d = bias.len();
    x.par_chunks_mut(d * 16).for_each(|block| bias_gelu(block, bias));
}

#[inline(always)]
fn bias_gelu_impl(block: &mut [f32], bias: &[f32]) {
    for row in block.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            let x = *v + b;
            *v = 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// `y = LayerNorm(y + bias + residual)` per row of `d = bias.len()`.
fn bias_residual_norm_rows(y: &mut [f32], bias: &[f32], residual: &[f32], weight: &[f32], beta: &[f32], eps: f32) {
    let d = bias.len();
    y.par_chunks_mut(d * 16)
        .zip(residual.par_chunks(d * 16))
        .for_each(|(block, res)| bias_residual_norm(block, res, bias, weight, beta, eps));
}

#[inline(always)]
fn bias_residual_norm_impl(block: &mut [f32], res: &[f32], bias: &[f32], weight: &[f32], beta: &[f32], eps: f32) {
    let d = bias.len();
    for (row, r) in block.chunks_exact_mut(d).zip(res.chunks_exact(d)) {
        for ((v, &b), &r) in row.iter_mut().zip(bias).zip(r) {
            *v = *v + b + r;
        }
        let mean = lane_sum(row) / d as f32;
        let mut acc = [0.0f32; 16];
        let chunks = row.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += (v - mean) * (v - mean);
            }
        }
        let mut var = acc.iter().sum::<f32>();
        for &v in rest {
            var += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (var / d as f32 + eps).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(weight).zip(beta) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// Pools `[len, hidden]` token states into one vector (sentence-transformers' Pooling: mean
/// over the attended tokens, the first token, or the element-wise max).
pub fn pool(states: &[f32], h: usize, pooling: Pooling) -> Vec<f32> {
    let len = states.len() / h;
    match pooling {
        Pooling::Cls => states[..h].to_vec(),
        Pooling::Mean => {
            let mut v = vec![0.0f32; h];
            for row in states.chunks_exact(h) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            v.iter_mut().for_each(|a| *a /= len.max(1) as f32);
            v
        }
        Pooling::Max => {
            let mut v = vec![f32::NEG_INFINITY; h];
            for row in states.chunks_exact(h) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a = a.max(*b));
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_is_close_to_libm() {
        let mut worst_erf = 0.0f64;
        for i in -10_000..=10_000 {
            let x = i as f32 / 1000.0; // -10 .. 10
            worst_erf = worst_erf.max((f64::from(erf_f32(x)) - f64::from(host::erf(x))).abs());
        }
        assert!(worst_erf < 8e-7, "erf absolute error {worst_erf}");
    }

    #[test]
    fn transpose_is_exact() {
        let w: Vec<f32> = (0..35).map(|i| i as f32).collect();
        let t = transpose(&w, 5, 7);
        for r in 0..5 {
            for c in 0..7 {
                assert_eq!(t[c * 5 + r], w[r * 7 + c]);
            }
        }
    }
}
