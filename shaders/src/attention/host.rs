//! The fused attention on host memory (the CPU backend's kernel): forward and the
//! FlashAttention-2 backward over f32 slices, tiles split across rayon's threads.
//!
//! Layout (row-major, contiguous): `q`, `o`, `d_o` `[B, H, S, hd]`; own keys and values `k`, `v`
//! `[B, KVH, S, hd]`; the optional shared prefix `pk`, `pv` `[1, KVH, P, hd]`. Query head `h` reads
//! kv head `h / (H / KVH)`. Key `j` of batch row `b` is prefix key `j` for `j < P`, else own key
//! `j - P`; query `i` sees keys `0 ..= P + i` (the prefix and its own causal past).
//!
//! The work is cut into tiles of [`TILE`] query rows; a tile's products are GEMMs (the `gemm`
//! crate's AVX-512 / AVX2 kernels) against every key the tile can see, so the scratch of a task
//! is `TILE × (P + S)` scores: a slab of rows, never the `[S, P + S]` matrix. The softmax of a
//! row is exact (max, exp, sum over the row); only its log-sum-exp is kept for the backward,
//! which recomputes the probabilities (FlashAttention-2's five products a tile):
//!
//! `S = Q Kᵀ`, `P = exp(S − lse)`, `dP = dO Vᵀ`, `dS = P ∘ (dP − D)` with `D_i = dO_i · O_i`,
//! `dQ = scale · dS K`, and `dV += Pᵀ dO`, `dK += dSᵀ (scale · Q)`.
//!
//! The backward cuts each (batch row, kv head)'s query rows into at most [`QUERY_CHUNKS`]
//! chunks of whole tiles (a count fixed by the shapes); a task owns one chunk's dQ and a partial
//! dK/dV of the keys the chunk sees, and the partials are summed in chunk order. So there are no
//! atomics and the result does not depend on the thread count (resumed runs rely on that). The
//! prefix's gradients are summed over the batch rows at the end.

use rayon::prelude::*;

use crate::host::{Operand, exp_f32, gemm, lane_max};
use crate::multiversion;

/// Query rows per tile.
pub const TILE: usize = 128;

/// Chunks of query rows per (batch row, kv head) in the backward: each has its own partial dK
/// and dV (at most `QUERY_CHUNKS × (P + S) × hd` floats of each per kv head).
pub const QUERY_CHUNKS: usize = 8;

/// Shapes of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Query (and own key) positions per row.
    pub seq: usize,
    /// Shared prefix positions (0: none).
    pub prefix: usize,
    pub head_dim: usize,
}

impl Dims {
    fn keys(&self) -> usize {
        self.prefix + self.seq
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// The query tile of rows `i0..i0 + rows` of query head row `bh` (`b · H + h`).
struct QueryTile {
    rows: usize,
    /// Keys its last row sees (the prefix and its causal past): the width of its score slab.
    n: usize,
    /// Keys each of its rows sees.
    visible: Vec<usize>,
    /// Its rows' values in `[B, H, S, hd]` tensors.
    span: std::ops::Range<usize>,
    /// Its rows in `[B, H, S]` tensors.
    at: std::ops::Range<usize>,
}

impl QueryTile {
    fn new(d: Dims, bh: usize, i0: usize) -> Self {
        let (s, hd) = (d.seq, d.head_dim);
        let rows = (s - i0).min(TILE);
        QueryTile {
            rows,
            n: d.prefix + i0 + rows,
            visible: (0..rows).map(|r| d.prefix + i0 + r + 1).collect(),
            span: (bh * s + i0) * hd..(bh * s + i0 + rows) * hd,
            at: bh * s + i0..bh * s + i0 + rows,
        }
    }
}

/// Per `(b, kv head)`: the keys and values of the row, prefix then own, as rows `[L, hd]`.
struct KeyTables {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KeyTables {
    fn new(d: Dims, k: &[f32], v: &[f32], prefix: Option<(&[f32], &[f32])>) -> Self {
        let (l, hd) = (d.keys(), d.head_dim);
        let n = d.batch * d.kv_heads;
        let mut kt = vec![0.0f32; n * l * hd];
        let mut vt = vec![0.0f32; n * l * hd];
        for b in 0..d.batch {
            for g in 0..d.kv_heads {
                let dst = (b * d.kv_heads + g) * l * hd;
                if let Some((pk, pv)) = prefix {
                    let src = g * d.prefix * hd;
                    kt[dst..dst + d.prefix * hd].copy_from_slice(&pk[src..src + d.prefix * hd]);
                    vt[dst..dst + d.prefix * hd].copy_from_slice(&pv[src..src + d.prefix * hd]);
                }
                let src = (b * d.kv_heads + g) * d.seq * hd;
                let own = dst + d.prefix * hd;
                kt[own..own + d.seq * hd].copy_from_slice(&k[src..src + d.seq * hd]);
                vt[own..own + d.seq * hd].copy_from_slice(&v[src..src + d.seq * hd]);
            }
        }
        KeyTables { k: kt, v: vt }
    }

    /// `(keys, values)` of `(b, kv head)` `bg`, `[L, hd]` each.
    fn of(&self, bg: usize, l: usize, hd: usize) -> (&[f32], &[f32]) {
        let r = bg * l * hd..(bg + 1) * l * hd;
        (&self.k[r.clone()], &self.v[r])
    }
}

#[inline(always)]
fn softmax_rows_impl(scores: &mut [f32], stride: usize, visible: &[usize], lse: &mut [f32], inv: &mut [f32]) {
    for (r, &n) in visible.iter().enumerate() {
        let row = &mut scores[r * stride..(r + 1) * stride];
        let m = lane_max(&row[..n]);
        // exp and its sum in one pass (16 lanes, as `lane_sum` adds).
        let mut acc = [0.0f32; 16];
        let mut chunks = row[..n].chunks_exact_mut(16);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
                *x = exp_f32(*x - m);
                *a += *x;
            }
        }
        let mut rest = 0.0f32;
        for x in chunks.into_remainder() {
            *x = exp_f32(*x - m);
            rest += *x;
        }
        row[n..].fill(0.0);
        let sum = acc.iter().sum::<f32>() + rest;
        lse[r] = m + sum.ln();
        inv[r] = 1.0 / sum;
    }
}

multiversion!(
    /// Rows of scores (`visible[r]` valid entries of row stride `stride`) replaced by
    /// `exp(s − max)` (zeros past the valid part), each row's log-sum-exp and the inverse of its
    /// sum. The caller scales the product with the values by that inverse: `hd` products a row
    /// instead of a pass over its scores.
    fn softmax_rows => softmax_rows_impl(scores: &mut [f32], stride: usize, visible: &[usize], lse: &mut [f32], inv: &mut [f32])
);

#[inline(always)]
fn probs_and_grads_impl(p: &mut [f32], dp: &mut [f32], stride: usize, visible: &[usize], lse: &[f32], dd: &[f32]) {
    for (r, &n) in visible.iter().enumerate() {
        let pr = &mut p[r * stride..(r + 1) * stride];
        let dpr = &mut dp[r * stride..(r + 1) * stride];
        for (x, y) in pr[..n].iter_mut().zip(dpr[..n].iter_mut()) {
            let pij = exp_f32(*x - lse[r]);
            *x = pij;
            *y = pij * (*y - dd[r]);
        }
        pr[n..].fill(0.0);
        dpr[n..].fill(0.0);
    }
}

multiversion!(
    /// Per row of a query tile (scores `p` and `dp = dO Vᵀ`, `visible[r]` valid entries of row
    /// stride `stride`): `P = exp(S − lse)` into `p` and `dS = P ∘ (dP − D)` into `dp`, zeros
    /// past each row's valid part.
    fn probs_and_grads => probs_and_grads_impl(p: &mut [f32], dp: &mut [f32], stride: usize, visible: &[usize], lse: &[f32], dd: &[f32])
);

/// Scaled queries (`q · scale`), so that a score is a plain dot product.
fn scaled(q: &[f32], scale: f32) -> Vec<f32> {
    q.par_iter().map(|&x| x * scale).collect()
}

/// `(o, lse)`: the attention output `[B, H, S, hd]` and each query row's log-sum-exp of its
/// scaled scores `[B, H, S]`.
pub fn forward(d: Dims, q: &[f32], k: &[f32], v: &[f32], prefix: Option<(&[f32], &[f32])>) -> (Vec<f32>, Vec<f32>) {
    let (s, l, hd) = (d.seq, d.keys(), d.head_dim);
    let tables = KeyTables::new(d, k, v, prefix);
    let qs = scaled(q, d.scale());
    let mut o = vec![0.0f32; q.len()];
    let mut lse = vec![0.0f32; d.batch * d.heads * s];
    o.par_chunks_mut(s * hd)
        .zip(lse.par_chunks_mut(s))
        .enumerate()
        .flat_map_iter(|(bh, (o, lse))| {
            o.chunks_mut(TILE * hd)
                .zip(lse.chunks_mut(TILE))
                .enumerate()
                .map(move |(t, (o, lse))| (bh, t, o, lse))
        })
        .for_each_init(
            || vec![0.0f32; TILE * l],
            |scores, (bh, t, o, lse)| {
                let b = bh / d.heads;
                let g = (bh % d.heads) / d.group();
                let QueryTile {
                    rows, n, visible, span, ..
                } = QueryTile::new(d, bh, t * TILE);
                let (kr, vr) = tables.of(b * d.kv_heads + g, l, hd);
                let qt = &qs[span];
                gemm(
                    (rows, n, hd),
                    scores,
                    n,
                    false,
                    Operand::rows(qt, hd),
                    Operand::transposed(kr, hd),
                    1.0,
                    false,
                );
                let mut inv = [0.0f32; TILE];
                softmax_rows(scores, n, &visible, lse, &mut inv);
                gemm(
                    (rows, hd, n),
                    o,
                    hd,
                    false,
                    Operand::rows(scores, n),
                    Operand::rows(vr, hd),
                    1.0,
                    false,
                );
                for (orow, &f) in o.chunks_exact_mut(hd).zip(&inv) {
                    orow.iter_mut().for_each(|x| *x *= f);
                }
            },
        );
    (o, lse)
}

/// Gradients `(dq, dk, dv, dpk, dpv)` of `Σ d_o ∘ o`; the prefix's are empty without a prefix.
pub struct Grads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    pub dpk: Vec<f32>,
    pub dpv: Vec<f32>,
}

/// The backward of [`forward`]: gradients of `Σ d_o ∘ o` with respect to the queries, own keys
/// and values, and the prefix's keys and values (summed over the batch rows).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    prefix: Option<(&[f32], &[f32])>,
    o: &[f32],
    lse: &[f32],
    d_o: &[f32],
) -> Grads {
    let (s, l, hd, group) = (d.seq, d.keys(), d.head_dim, d.group());
    let scale = d.scale();
    let tables = KeyTables::new(d, k, v, prefix);
    let qs = scaled(q, scale);
    // D_i = dO_i · O_i.
    let row_d: Vec<f32> = d_o
        .par_chunks(hd)
        .zip(o.par_chunks(hd))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect();

    // One pass (FlashAttention-2's five products per tile). The query rows of each (b, kv
    // head) are cut into at most QUERY_CHUNKS chunks of whole tiles, a count that depends only on
    // the shapes, never on the thread count. A task takes one chunk of one (b, kv head) and, for
    // every query head of the group and every tile of the chunk, computes S, P, dP, dS against
    // all keys the tile sees, its rows' dQ (the task's own), and adds Pᵀ dO and dSᵀ Q into the
    // chunk's partial dV and dK. The partials are then summed over the chunks in chunk order:
    // the result is the same on any number of threads.
    let tiles = s.div_ceil(TILE);
    let chunks = tiles.min(QUERY_CHUNKS);
    let tiles_per_chunk = tiles.div_ceil(chunks);
    let chunks = tiles.div_ceil(tiles_per_chunk);
    let bgs = d.batch * d.kv_heads;
    // Query rows `r0..r1` of chunk `c`.
    let chunk_rows = |c: usize| {
        (
            (c * tiles_per_chunk * TILE).min(s),
            ((c + 1) * tiles_per_chunk * TILE).min(s),
        )
    };
    struct Part {
        /// dQ of the chunk's rows, `[group, rows, hd]`.
        dq: Vec<f32>,
        /// Partial dK, dV of the keys `0..keys` the chunk sees, `[keys, hd]`.
        dk: Vec<f32>,
        dv: Vec<f32>,
    }
    let parts: Vec<Part> = (0..bgs * chunks)
        .into_par_iter()
        .map_init(
            || (vec![0.0f32; TILE * l], vec![0.0f32; TILE * l]),
            |(p, dp), task| {
                let (bg, c) = (task / chunks, task % chunks);
                let (b, g) = (bg / d.kv_heads, bg % d.kv_heads);
                let (r0, r1) = chunk_rows(c);
                let keys = d.prefix + r1;
                let mut part = Part {
                    dq: vec![0.0f32; group * (r1 - r0) * hd],
                    dk: vec![0.0f32; keys * hd],
                    dv: vec![0.0f32; keys * hd],
                };
                let (kr, vr) = tables.of(bg, l, hd);
                for hi in 0..group {
                    let bh = b * d.heads + g * group + hi;
                    for i0 in (r0..r1).step_by(TILE) {
                        // r1 is a multiple of TILE or S: the tile ends where the chunk does.
                        let QueryTile {
                            rows,
                            n,
                            visible,
                            span,
                            at,
                        } = QueryTile::new(d, bh, i0);
                        let (qt, dot) = (&qs[span.clone()], &d_o[span]);
                        gemm(
                            (rows, n, hd),
                            p,
                            n,
                            false,
                            Operand::rows(qt, hd),
                            Operand::transposed(kr, hd),
                            1.0,
                            false,
                        );
                        gemm(
                            (rows, n, hd),
                            dp,
                            n,
                            false,
                            Operand::rows(dot, hd),
                            Operand::transposed(vr, hd),
                            1.0,
                            false,
                        );
                        // p <- P (zeros where hidden), dp <- dS.
                        probs_and_grads(p, dp, n, &visible, &lse[at.clone()], &row_d[at]);
                        let dq_at = (hi * (r1 - r0) + (i0 - r0)) * hd;
                        gemm(
                            (rows, hd, n),
                            &mut part.dq[dq_at..dq_at + rows * hd],
                            hd,
                            false,
                            Operand::rows(dp, n),
                            Operand::rows(kr, hd),
                            scale,
                            false,
                        );
                        gemm(
                            (n, hd, rows),
                            &mut part.dv,
                            hd,
                            true,
                            Operand::transposed(p, n),
                            Operand::rows(dot, hd),
                            1.0,
                            false,
                        );
                        gemm(
                            (n, hd, rows),
                            &mut part.dk,
                            hd,
                            true,
                            Operand::transposed(dp, n),
                            Operand::rows(qt, hd),
                            1.0,
                            false,
                        );
                    }
                }
                part
            },
        )
        .collect();

    let mut dq = vec![0.0f32; q.len()];
    for (task, part) in parts.iter().enumerate() {
        let (bg, c) = (task / chunks, task % chunks);
        let (b, g) = (bg / d.kv_heads, bg % d.kv_heads);
        let (r0, r1) = chunk_rows(c);
        for hi in 0..group {
            let bh = b * d.heads + g * group + hi;
            let src = hi * (r1 - r0) * hd;
            dq[(bh * s + r0) * hd..(bh * s + r1) * hd].copy_from_slice(&part.dq[src..src + (r1 - r0) * hd]);
        }
    }
    // Sum the chunks' partials in chunk order, (b, kv head)s in parallel.
    let mut dk_full = vec![0.0f32; bgs * l * hd];
    let mut dv_full = vec![0.0f32; bgs * l * hd];
    dk_full
        .par_chunks_mut(l * hd)
        .zip(dv_full.par_chunks_mut(l * hd))
        .enumerate()
        .for_each(|(bg, (dk, dv))| {
            for part in &parts[bg * chunks..(bg + 1) * chunks] {
                for (a, x) in dk.iter_mut().zip(&part.dk) {
                    *a += x;
                }
                for (a, x) in dv.iter_mut().zip(&part.dv) {
                    *a += x;
                }
            }
        });
    drop(parts);

    // Split the full-key gradients into the prefix's (summed over b) and the own keys'.
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    let mut dpk = vec![0.0f32; d.kv_heads * d.prefix * hd];
    let mut dpv = vec![0.0f32; d.kv_heads * d.prefix * hd];
    for b in 0..d.batch {
        for g in 0..d.kv_heads {
            let src = (b * d.kv_heads + g) * l * hd;
            let own = src + d.prefix * hd;
            let dst = (b * d.kv_heads + g) * s * hd;
            dk[dst..dst + s * hd].copy_from_slice(&dk_full[own..own + s * hd]);
            dv[dst..dst + s * hd].copy_from_slice(&dv_full[own..own + s * hd]);
            let p = g * d.prefix * hd;
            for (a, &x) in dpk[p..p + d.prefix * hd].iter_mut().zip(&dk_full[src..own]) {
                *a += x;
            }
            for (a, &x) in dpv[p..p + d.prefix * hd].iter_mut().zip(&dv_full[src..own]) {
                *a += x;
            }
        }
    }
    Grads { dq, dk, dv, dpk, dpv }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive f64 attention: `o` per query row.
    fn naive(d: Dims, q: &[f32], k: &[f32], v: &[f32], prefix: Option<(&[f32], &[f32])>) -> Vec<f64> {
        let (s, hd) = (d.seq, d.head_dim);
        let mut o = vec![0.0f64; q.len()];
        for b in 0..d.batch {
            for h in 0..d.heads {
                let g = h / d.group();
                for i in 0..s {
                    let key = |j: usize| -> (&[f32], &[f32]) {
                        if j < d.prefix {
                            let (pk, pv) = prefix.expect("prefix");
                            let at = (g * d.prefix + j) * hd;
                            (&pk[at..at + hd], &pv[at..at + hd])
                        } else {
                            let at = ((b * d.kv_heads + g) * s + j - d.prefix) * hd;
                            (&k[at..at + hd], &v[at..at + hd])
                        }
                    };
                    let qi = &q[((b * d.heads + h) * s + i) * hd..][..hd];
                    let n = d.prefix + i + 1;
                    let sc: Vec<f64> = (0..n)
                        .map(|j| {
                            let (kj, _) = key(j);
                            qi.iter()
                                .zip(kj)
                                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for (j, x) in sc.iter().enumerate() {
                        let (_, vj) = key(j);
                        for e in 0..hd {
                            o[((b * d.heads + h) * s + i) * hd + e] += (x - m).exp() / z * f64::from(vj[e]);
                        }
                    }
                }
            }
        }
        o
    }

    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_equals_naive_f64_with_gqa_and_prefix() {
        // The last cases span several tiles of queries and of keys.
        for (prefix, seq) in [(0, 9), (5, 7), (13, 1), (0, 150), (70, 131)] {
            let d = Dims {
                batch: 2,
                heads: 4,
                kv_heads: 2,
                seq,
                prefix,
                head_dim: 8,
            };
            let q = fill(2 * 4 * seq * 8, 1);
            let k = fill(2 * 2 * seq * 8, 2);
            let v = fill(2 * 2 * seq * 8, 3);
            let pk = fill(2 * prefix * 8, 4);
            let pv = fill(2 * prefix * 8, 5);
            let pre = (prefix > 0).then_some((&pk[..], &pv[..]));
            let (o, _) = forward(d, &q, &k, &v, pre);
            let want = naive(d, &q, &k, &v, pre);
            for (a, b) in o.iter().zip(&want) {
                // f32 scores and sums over at most 201 keys against f64: 1e-5 absolute.
                assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b} (prefix {prefix})");
            }
        }
    }

    /// Central finite differences of `Σ c ∘ o` (f64 naive) against the backward's gradients.
    #[test]
    fn backward_equals_finite_differences() {
        let d = Dims {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            seq: 5,
            prefix: 3,
            head_dim: 4,
        };
        let q = fill(2 * 4 * 5 * 4, 11);
        let k = fill(2 * 2 * 5 * 4, 12);
        let v = fill(2 * 2 * 5 * 4, 13);
        let pk = fill(2 * 3 * 4, 14);
        let pv = fill(2 * 3 * 4, 15);
        let c = fill(q.len(), 16);
        let (o, lse) = forward(d, &q, &k, &v, Some((&pk, &pv)));
        let g = backward(d, &q, &k, &v, Some((&pk, &pv)), &o, &lse, &c);
        let loss = |q: &[f32], k: &[f32], v: &[f32], pk: &[f32], pv: &[f32]| -> f64 {
            naive(d, q, k, v, Some((pk, pv)))
                .iter()
                .zip(&c)
                .map(|(a, &b)| a * f64::from(b))
                .sum()
        };
        let eps = 1e-2f32;
        let check = |name: &str, which: usize, grad: &[f32]| {
            let mut xs = [q.clone(), k.clone(), v.clone(), pk.clone(), pv.clone()];
            for idx in 0..grad.len() {
                let x0 = xs[which][idx];
                xs[which][idx] = x0 + eps;
                let up = loss(&xs[0], &xs[1], &xs[2], &xs[3], &xs[4]);
                xs[which][idx] = x0 - eps;
                let down = loss(&xs[0], &xs[1], &xs[2], &xs[3], &xs[4]);
                xs[which][idx] = x0;
                let fd = (up - down) / (2.0 * f64::from(eps));
                // Second-order error of the central difference at eps 1e-2 with f32 inputs: 2e-4.
                assert!(
                    (fd - f64::from(grad[idx])).abs() < 2e-4,
                    "{name}[{idx}]: fd {fd} vs {}",
                    grad[idx]
                );
            }
        };
        check("dq", 0, &g.dq);
        check("dk", 1, &g.dk);
        check("dv", 2, &g.dv);
        check("dpk", 3, &g.dpk);
        check("dpv", 4, &g.dpv);
    }

    /// 1,500 query rows: 12 tiles in chunks of two (several tiles a chunk, a short last tile), so
    /// the partial dK/dV of several chunks are summed; entries spread over the rows and keys
    /// against central differences of the naive f64 attention.
    #[test]
    fn chunked_backward_equals_finite_differences_at_1500_rows() {
        let d = Dims {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            seq: 1500,
            prefix: 37,
            head_dim: 8,
        };
        let (s, hd, p) = (d.seq, d.head_dim, d.prefix);
        let q = fill(2 * s * hd, 21);
        let k = fill(s * hd, 22);
        let v = fill(s * hd, 23);
        let pk = fill(p * hd, 24);
        let pv = fill(p * hd, 25);
        let c = fill(q.len(), 26);
        let (o, lse) = forward(d, &q, &k, &v, Some((&pk, &pv)));
        let g = backward(d, &q, &k, &v, Some((&pk, &pv)), &o, &lse, &c);
        let loss = |xs: &[Vec<f32>; 5]| -> f64 {
            naive(d, &xs[0], &xs[1], &xs[2], Some((&xs[3], &xs[4])))
                .iter()
                .zip(&c)
                .map(|(a, &b)| a * f64::from(b))
                .sum()
        };
        let eps = 1e-2f32;
        let mut xs = [q.clone(), k.clone(), v.clone(), pk.clone(), pv.clone()];
        let picks: [(&str, usize, usize, &[f32]); 8] = [
            ("dq", 0, 3, &g.dq),
            ("dq", 0, (s + 1450) * hd + 5, &g.dq),
            ("dk", 1, 70 * hd + 1, &g.dk),
            ("dk", 1, 1499 * hd + 7, &g.dk),
            ("dv", 2, 129 * hd + 2, &g.dv),
            ("dv", 2, 1020 * hd, &g.dv),
            ("dpk", 3, 36 * hd + 4, &g.dpk),
            ("dpv", 4, 3, &g.dpv),
        ];
        for (name, which, idx, grad) in picks {
            let x0 = xs[which][idx];
            xs[which][idx] = x0 + eps;
            let up = loss(&xs);
            xs[which][idx] = x0 - eps;
            let down = loss(&xs);
            xs[which][idx] = x0;
            let fd = (up - down) / (2.0 * f64::from(eps));
            // As above, plus f32 sums over up to 1,537 keys: 5e-4.
            assert!(
                (fd - f64::from(grad[idx])).abs() < 5e-4,
                "{name}[{idx}]: fd {fd} vs {}",
                grad[idx]
            );
        }
    }
}
