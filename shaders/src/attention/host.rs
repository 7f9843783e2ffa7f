//! The fused attention on host memory (the CPU backend's kernel): forward and the
//! FlashAttention-2 backward over f32 slices, rows split across rayon's threads.
//!
//! Layout (row-major, contiguous): `q`, `o`, `d_o` `[B, H, S, hd]`; own keys and values `k`, `v`
//! `[B, KVH, S, hd]`; the optional shared prefix `pk`, `pv` `[1, KVH, P, hd]`. Query head `h` reads
//! kv head `h / (H / KVH)`. Key `j` of batch row `b` is prefix key `j` for `j < P`, else own key
//! `j - P`; query `i` sees keys `0 ..= P + i` (the prefix and its own causal past).
//!
//! Scores are made for a tile of [`ROWS`] query rows at a time against every key that row tile
//! can see, in a scratch row per query (`L = P + S` floats: the memory of one score row, never a
//! `[S, L]` matrix), from a transposed copy of the keys so that the inner loop is an `axpy` over
//! keys (vectorized, four query rows per key load). The softmax of a row is exact (max, exp,
//! sum over the row); only its log-sum-exp is kept for the backward, which recomputes the
//! probabilities from it:
//!
//! - pass A, per query row tile: `dP = dO Vᵀ`, `dS = P ∘ (dP − D)` with `D_i = dO_i · O_i`,
//!   `dQ = scale · dS K`;
//! - pass B, per key tile of [`ROWS`] keys (columns), over every query row of the kv head's group
//!   that sees them: `dV = Pᵀ dO`, `dK = scale · dSᵀ Q`, from transposed copies of the scaled
//!   queries and of `dO`.
//!
//! Each output row is written by one task, so there are no atomics and results do not depend on
//! the thread count. The prefix's gradients are summed over the batch rows at the end.

use rayon::prelude::*;

use crate::host::{exp_f32, lane_max, lane_sum};
use crate::multiversion;

/// Query rows (forward, pass A) or key columns (pass B) per tile.
pub const ROWS: usize = 8;

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

/// Per `(b, kv head)`: the keys and values of the row (prefix then own) as rows `[L, hd]` and
/// transposed `[hd, L]`.
struct KeyTables {
    k_rows: Vec<f32>,
    k_t: Vec<f32>,
    v_rows: Vec<f32>,
    v_t: Vec<f32>,
}

impl KeyTables {
    fn new(d: Dims, k: &[f32], v: &[f32], prefix: Option<(&[f32], &[f32])>, need_v_t: bool) -> Self {
        let (l, hd) = (d.keys(), d.head_dim);
        let n = d.batch * d.kv_heads;
        let mut k_rows = vec![0.0f32; n * l * hd];
        let mut v_rows = vec![0.0f32; n * l * hd];
        for b in 0..d.batch {
            for g in 0..d.kv_heads {
                let dst = (b * d.kv_heads + g) * l * hd;
                if let Some((pk, pv)) = prefix {
                    let src = g * d.prefix * hd;
                    k_rows[dst..dst + d.prefix * hd].copy_from_slice(&pk[src..src + d.prefix * hd]);
                    v_rows[dst..dst + d.prefix * hd].copy_from_slice(&pv[src..src + d.prefix * hd]);
                }
                let src = (b * d.kv_heads + g) * d.seq * hd;
                let own = dst + d.prefix * hd;
                k_rows[own..own + d.seq * hd].copy_from_slice(&k[src..src + d.seq * hd]);
                v_rows[own..own + d.seq * hd].copy_from_slice(&v[src..src + d.seq * hd]);
            }
        }
        let k_t = transpose_blocks(&k_rows, n, l, hd);
        let v_t = if need_v_t {
            transpose_blocks(&v_rows, n, l, hd)
        } else {
            Vec::new()
        };
        KeyTables {
            k_rows,
            k_t,
            v_rows,
            v_t,
        }
    }
}

/// `n` row-major `[rows, cols]` matrices, each transposed to `[cols, rows]`.
fn transpose_blocks(x: &[f32], n: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(rows * cols)
        .zip(x.par_chunks(rows * cols))
        .take(n)
        .for_each(|(o, m)| {
            for r in 0..rows {
                for c in 0..cols {
                    o[c * rows + r] = m[r * cols + c];
                }
            }
        });
    out
}

#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `out[r][0..n] = Σ_d a[r][d] · t[d][0..n]` for the `rows.len()` rows of `a` (`t` is
/// `[hd, stride]`): each `t` row is loaded once for all rows.
#[inline(always)]
fn rows_times_t(a: &[&[f32]], t: &[f32], stride: usize, n: usize, out: &mut [Vec<f32>]) {
    for o in out.iter_mut().take(a.len()) {
        o[..n].fill(0.0);
    }
    let hd = a.first().map_or(0, |r| r.len());
    // Blocks of keys, so that the rows' score blocks stay in L1 while `t` streams through.
    for j0 in (0..n).step_by(KEY_BLOCK) {
        let j1 = (j0 + KEY_BLOCK).min(n);
        for d in 0..hd {
            let trow = &t[d * stride + j0..d * stride + j1];
            for (r, ar) in a.iter().enumerate() {
                axpy(&mut out[r][j0..j1], ar[d], trow);
            }
        }
    }
}

/// Keys (or query rows, in pass B) per block of a score computation.
const KEY_BLOCK: usize = 256;

#[inline(always)]
fn forward_tile_impl(
    q_rows: &[&[f32]],
    visible: &[usize],
    keys: (&[f32], &[f32], usize),
    scores: &mut [Vec<f32>],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (k_t, v_rows, l) = keys;
    let hd = q_rows[0].len();
    let n_max = visible.iter().copied().max().unwrap_or(0);
    rows_times_t(q_rows, k_t, l, n_max, scores);
    for (r, &n) in visible.iter().enumerate() {
        let row = &mut scores[r][..n_max];
        row[n..].fill(f32::NEG_INFINITY);
        let m = lane_max(&row[..n]);
        row[..n].iter_mut().for_each(|s| *s = exp_f32(*s - m));
        row[n..].fill(0.0);
        let sum = lane_sum(&row[..n]);
        lse[r] = m + sum.ln();
        let inv = 1.0 / sum;
        row[..n].iter_mut().for_each(|p| *p *= inv);
    }
    out.fill(0.0);
    for j in 0..n_max {
        let vj = &v_rows[j * hd..(j + 1) * hd];
        for r in 0..visible.len() {
            let p = scores[r][j];
            if p != 0.0 {
                axpy(&mut out[r * hd..(r + 1) * hd], p, vj);
            }
        }
    }
}

multiversion!(
    fn forward_tile => forward_tile_impl(
        q_rows: &[&[f32]],
        visible: &[usize],
        keys: (&[f32], &[f32], usize),
        scores: &mut [Vec<f32>],
        out: &mut [f32],
        lse: &mut [f32],
    )
);

/// Scaled queries (`q · scale`), so that a score is a plain dot product.
fn scaled(q: &[f32], scale: f32) -> Vec<f32> {
    q.par_iter().map(|&x| x * scale).collect()
}

/// `(o, lse)`: the attention output `[B, H, S, hd]` and each query row's log-sum-exp of its
/// scaled scores `[B, H, S]`.
pub fn forward(d: Dims, q: &[f32], k: &[f32], v: &[f32], prefix: Option<(&[f32], &[f32])>) -> (Vec<f32>, Vec<f32>) {
    let (s, l, hd) = (d.seq, d.keys(), d.head_dim);
    let tables = KeyTables::new(d, k, v, prefix, false);
    let qs = scaled(q, d.scale());
    let mut o = vec![0.0f32; q.len()];
    let mut lse = vec![0.0f32; d.batch * d.heads * s];
    let tiles = s.div_ceil(ROWS);
    o.par_chunks_mut(s * hd)
        .zip(lse.par_chunks_mut(s))
        .enumerate()
        .flat_map_iter(|(bh, (o, lse))| {
            o.chunks_mut(ROWS * hd)
                .zip(lse.chunks_mut(ROWS))
                .enumerate()
                .map(move |(t, (o, lse))| (bh, t, o, lse))
        })
        .for_each_init(
            || vec![vec![0.0f32; l]; ROWS],
            |scores, (bh, t, o, lse)| {
                let (b, h) = (bh / d.heads, bh % d.heads);
                let g = h / d.group();
                let i0 = t * ROWS;
                let rows = (s - i0).min(ROWS);
                debug_assert!(t < tiles);
                let q_rows: Vec<&[f32]> = (0..rows)
                    .map(|r| &qs[(bh * s + i0 + r) * hd..(bh * s + i0 + r + 1) * hd])
                    .collect();
                let visible: Vec<usize> = (0..rows).map(|r| d.prefix + i0 + r + 1).collect();
                let kv = (b * d.kv_heads + g) * l * hd;
                forward_tile(
                    &q_rows,
                    &visible,
                    (&tables.k_t[kv..kv + l * hd], &tables.v_rows[kv..kv + l * hd], l),
                    scores,
                    o,
                    lse,
                );
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

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dq_tile_impl(
    q_rows: &[&[f32]],
    do_rows: &[&[f32]],
    row_lse: &[f32],
    row_d: &[f32],
    visible: &[usize],
    keys: (&[f32], &[f32], &[f32], usize),
    scratch: &mut [Vec<f32>],
    dq: &mut [f32],
    scale: f32,
) {
    let (k_t, k_rows, v_t, l) = keys;
    let hd = q_rows[0].len();
    let n_max = visible.iter().copied().max().unwrap_or(0);
    let (p, dp) = scratch.split_at_mut(ROWS);
    rows_times_t(q_rows, k_t, l, n_max, p);
    rows_times_t(do_rows, v_t, l, n_max, dp);
    for (r, &n) in visible.iter().enumerate() {
        let (pr, dpr) = (&mut p[r][..n_max], &dp[r][..n_max]);
        for (pj, &dpj) in pr[..n].iter_mut().zip(&dpr[..n]) {
            // dS = P (dP − D), in place of P.
            *pj = exp_f32(*pj - row_lse[r]) * (dpj - row_d[r]);
        }
        pr[n..].fill(0.0);
    }
    dq.fill(0.0);
    for j in 0..n_max {
        let kj = &k_rows[j * hd..(j + 1) * hd];
        for r in 0..visible.len() {
            let ds = p[r][j];
            if ds != 0.0 {
                axpy(&mut dq[r * hd..(r + 1) * hd], ds * scale, kj);
            }
        }
    }
}

multiversion!(
    #[allow(clippy::too_many_arguments)]
    fn dq_tile => dq_tile_impl(
        q_rows: &[&[f32]],
        do_rows: &[&[f32]],
        row_lse: &[f32],
        row_d: &[f32],
        visible: &[usize],
        keys: (&[f32], &[f32], &[f32], usize),
        scratch: &mut [Vec<f32>],
        dq: &mut [f32],
        scale: f32,
    )
);

/// One key column tile's `dK` and `dV` rows (`cols × hd` each) over the query rows of one head
/// that see them. `q_t`, `do_t`: that head's scaled queries and `dO`, transposed `[hd, S]`;
/// `q_rows`, `do_rows`: the same, row-major; `first`: the first query row that sees each column.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dkv_tile_impl(
    k_cols: &[&[f32]],
    v_cols: &[&[f32]],
    first: &[usize],
    head: (&[f32], &[f32], &[f32], &[f32], usize),
    row_lse: &[f32],
    row_d: &[f32],
    scratch: &mut [Vec<f32>],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (q_t, do_t, q_rows, do_rows, s) = head;
    let hd = k_cols[0].len();
    let i0 = first.iter().copied().min().unwrap_or(s);
    if i0 >= s {
        return;
    }
    let n = s - i0;
    let (p, dp) = scratch.split_at_mut(ROWS);
    // Scores of the columns against rows i0.. (offset views of the transposed tables).
    let shift = |t: &[f32], out: &mut [Vec<f32>], cols: &[&[f32]]| {
        for o in out.iter_mut().take(cols.len()) {
            o[..n].fill(0.0);
        }
        for b0 in (0..n).step_by(KEY_BLOCK) {
            let b1 = (b0 + KEY_BLOCK).min(n);
            for d in 0..hd {
                let trow = &t[d * s + i0 + b0..d * s + i0 + b1];
                for (c, col) in cols.iter().enumerate() {
                    axpy(&mut out[c][b0..b1], col[d], trow);
                }
            }
        }
    };
    shift(q_t, p, k_cols);
    shift(do_t, dp, v_cols);
    for (c, &f) in first.iter().enumerate() {
        for idx in 0..n {
            let i = i0 + idx;
            if i < f {
                p[c][idx] = 0.0;
                dp[c][idx] = 0.0;
            } else {
                let pij = exp_f32(p[c][idx] - row_lse[i]);
                p[c][idx] = pij;
                dp[c][idx] = pij * (dp[c][idx] - row_d[i]);
            }
        }
    }
    for idx in 0..n {
        let i = i0 + idx;
        let (qi, doi) = (&q_rows[i * hd..(i + 1) * hd], &do_rows[i * hd..(i + 1) * hd]);
        for c in 0..first.len() {
            let (pc, dsc) = (p[c][idx], dp[c][idx]);
            if pc != 0.0 {
                axpy(&mut dv[c * hd..(c + 1) * hd], pc, doi);
            }
            if dsc != 0.0 {
                axpy(&mut dk[c * hd..(c + 1) * hd], dsc, qi);
            }
        }
    }
}

multiversion!(
    #[allow(clippy::too_many_arguments)]
    fn dkv_tile => dkv_tile_impl(
        k_cols: &[&[f32]],
        v_cols: &[&[f32]],
        first: &[usize],
        head: (&[f32], &[f32], &[f32], &[f32], usize),
        row_lse: &[f32],
        row_d: &[f32],
        scratch: &mut [Vec<f32>],
        dk: &mut [f32],
        dv: &mut [f32],
    )
);

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
    let tables = KeyTables::new(d, k, v, prefix, true);
    let qs = scaled(q, scale);
    // D_i = dO_i · O_i.
    let row_d: Vec<f32> = d_o
        .par_chunks(hd)
        .zip(o.par_chunks(hd))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect();

    // Pass A: dQ by query row tiles.
    let mut dq = vec![0.0f32; q.len()];
    dq.par_chunks_mut(s * hd)
        .enumerate()
        .flat_map_iter(|(bh, dq)| dq.chunks_mut(ROWS * hd).enumerate().map(move |(t, dq)| (bh, t, dq)))
        .for_each_init(
            || vec![vec![0.0f32; l]; 2 * ROWS],
            |scratch, (bh, t, dq)| {
                let (b, h) = (bh / d.heads, bh % d.heads);
                let g = h / group;
                let i0 = t * ROWS;
                let rows = (s - i0).min(ROWS);
                let at = |r: usize| (bh * s + i0 + r) * hd..(bh * s + i0 + r + 1) * hd;
                let q_rows: Vec<&[f32]> = (0..rows).map(|r| &qs[at(r)]).collect();
                let do_rows: Vec<&[f32]> = (0..rows).map(|r| &d_o[at(r)]).collect();
                let visible: Vec<usize> = (0..rows).map(|r| d.prefix + i0 + r + 1).collect();
                let kv = (b * d.kv_heads + g) * l * hd;
                let range = kv..kv + l * hd;
                dq_tile(
                    &q_rows,
                    &do_rows,
                    &lse[bh * s + i0..bh * s + i0 + rows],
                    &row_d[bh * s + i0..bh * s + i0 + rows],
                    &visible,
                    (
                        &tables.k_t[range.clone()],
                        &tables.k_rows[range.clone()],
                        &tables.v_t[range],
                        l,
                    ),
                    scratch,
                    dq,
                    scale,
                );
            },
        );

    // Pass B: dK, dV by key column tiles of each (b, kv head), over its group's query heads.
    let qs_t = transpose_blocks(&qs, d.batch * d.heads, s, hd);
    let do_t = transpose_blocks(d_o, d.batch * d.heads, s, hd);
    let mut dk_full = vec![0.0f32; d.batch * d.kv_heads * l * hd];
    let mut dv_full = vec![0.0f32; d.batch * d.kv_heads * l * hd];
    dk_full
        .par_chunks_mut(l * hd)
        .zip(dv_full.par_chunks_mut(l * hd))
        .enumerate()
        .flat_map_iter(|(bg, (dk, dv))| {
            dk.chunks_mut(ROWS * hd)
                .zip(dv.chunks_mut(ROWS * hd))
                .enumerate()
                .map(move |(t, (dk, dv))| (bg, t, dk, dv))
        })
        .for_each_init(
            || {
                (
                    vec![vec![0.0f32; s]; 2 * ROWS],
                    vec![0.0f32; ROWS * hd],
                    vec![0.0f32; ROWS * hd],
                )
            },
            |(scratch, dk_h, dv_h), (bg, t, dk, dv)| {
                let (b, g) = (bg / d.kv_heads, bg % d.kv_heads);
                let j0 = t * ROWS;
                let cols = (l - j0).min(ROWS);
                let base = bg * l * hd;
                let k_cols: Vec<&[f32]> = (0..cols)
                    .map(|c| &tables.k_rows[base + (j0 + c) * hd..base + (j0 + c + 1) * hd])
                    .collect();
                let v_cols: Vec<&[f32]> = (0..cols)
                    .map(|c| &tables.v_rows[base + (j0 + c) * hd..base + (j0 + c + 1) * hd])
                    .collect();
                // Key j is seen by query rows i with P + i >= j.
                let first: Vec<usize> = (0..cols).map(|c| (j0 + c).saturating_sub(d.prefix)).collect();
                dk.fill(0.0);
                dv.fill(0.0);
                for h in g * group..(g + 1) * group {
                    let bh = b * d.heads + h;
                    let rows = bh * s * hd..(bh + 1) * s * hd;
                    dk_h[..cols * hd].fill(0.0);
                    dv_h[..cols * hd].fill(0.0);
                    dkv_tile(
                        &k_cols,
                        &v_cols,
                        &first,
                        (
                            &qs_t[rows.clone()],
                            &do_t[rows.clone()],
                            &qs[rows.clone()],
                            &d_o[rows],
                            s,
                        ),
                        &lse[bh * s..(bh + 1) * s],
                        &row_d[bh * s..(bh + 1) * s],
                        scratch,
                        &mut dk_h[..cols * hd],
                        &mut dv_h[..cols * hd],
                    );
                    for (a, &x) in dk.iter_mut().zip(dk_h.iter()) {
                        *a += x;
                    }
                    for (a, &x) in dv.iter_mut().zip(dv_h.iter()) {
                        *a += x;
                    }
                }
            },
        );
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
        for (prefix, seq) in [(0, 9), (5, 7), (13, 1)] {
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
                // f32 scores and sums over at most 20 keys against f64: 1e-5 absolute.
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
}
