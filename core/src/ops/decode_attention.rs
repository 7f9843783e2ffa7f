//! Attention of one new position per stream over a long shared prefix (split-K, "flash
//! decoding" on the CPU).
//!
//! Decoding N streams over one prompt gives, per key/value head, `N × group` query rows that all
//! read the same prefix keys and values. GEMM libraries pack the `[prefix, hd]` key matrix again
//! on every call, which costs as much as the multiply for a few dozen rows, and splitting the
//! work by head leaves one of two cores idle when there are three heads. Here the prefix is cut
//! into key chunks; every (head, chunk) task computes its scores, a chunk-local softmax (max,
//! sum) and the weighted value sum for all rows while the chunk sits in cache, and the partial
//! results are merged exactly with the usual log-sum-exp rescaling. Keys of the prefix are
//! stored transposed (`[hd, len]`), so a block of 16 keys is one vector and the scores need no
//! horizontal reductions.

use rayon::prelude::*;

/// Keys per task: 256 keys × 64 dims × 4 bytes × (k + v) = 128 KiB, an L2-resident chunk.
const KEY_CHUNK: usize = 256;

/// A chunk's softmax statistics and unnormalized output for `rows` query rows.
struct Part {
    /// Row maxima of the scores.
    max: Vec<f32>,
    /// Row sums of `exp(score - max)`.
    sum: Vec<f32>,
    /// `[rows, hd]`: `Σ_j exp(score_j - max) v_j`.
    out: Vec<f32>,
}

/// Keys and values one kv head attends to.
pub struct HeadKv<'a> {
    /// Shared prefix keys, transposed: `hd` rows of `prefix_len` keys, `prefix_ld` floats apart.
    pub prefix_kt: &'a [f32],
    /// Row stride of `prefix_kt`; not a multiple of 4 KiB, so that the 64 rows one key block
    /// reads do not all fall into the same L1 cache set.
    pub prefix_ld: usize,
    /// Shared prefix values: `[prefix_len, hd]`.
    pub prefix_v: &'a [f32],
    /// Each stream's own keys and values: `[own_len, hd]` row-major.
    pub own_k: Vec<&'a [f32]>,
    pub own_v: Vec<&'a [f32]>,
}

/// Attention for `streams` streams of one new position each, for every kv head.
///
/// `q[kv]` holds the scaled queries of kv head `kv`, `[streams * group, hd]` with the rows of
/// stream `b` at `b * group..(b + 1) * group`. Returns, per kv head, the `[streams * group, hd]`
/// attention outputs.
pub fn attend(q: &[Vec<f32>], heads: &[HeadKv<'_>], streams: usize, group: usize, hd: usize) -> Vec<Vec<f32>> {
    let rows = streams * group;
    // Tasks: every prefix chunk of every head, and every stream's own keys of every head.
    enum Task {
        Prefix { kv: usize, j0: usize, j1: usize },
        Own { kv: usize, b: usize },
    }
    let mut tasks = Vec::new();
    for (kv, h) in heads.iter().enumerate() {
        let len = h.prefix_v.len() / hd;
        for c in 0..len.div_ceil(KEY_CHUNK) {
            tasks.push(Task::Prefix {
                kv,
                j0: c * KEY_CHUNK,
                j1: ((c + 1) * KEY_CHUNK).min(len),
            });
        }
        for b in 0..streams {
            if !h.own_k[b].is_empty() {
                tasks.push(Task::Own { kv, b });
            }
        }
    }
    let parts: Vec<Part> = tasks
        .par_iter()
        .map(|t| match *t {
            Task::Prefix { kv, j0, j1 } => {
                let h = &heads[kv];
                let mut scores = vec![0.0f32; rows * (j1 - j0)];
                scores_transposed(&q[kv], rows, h.prefix_kt, h.prefix_ld, j0, j1, hd, &mut scores);
                softmax_part(&mut scores, rows, j1 - j0, &h.prefix_v[j0 * hd..j1 * hd], hd)
            }
            Task::Own { kv, b } => {
                let h = &heads[kv];
                let (k, v) = (h.own_k[b], h.own_v[b]);
                let n = k.len() / hd;
                let qb = &q[kv][b * group * hd..(b + 1) * group * hd];
                let mut scores = vec![0.0f32; group * n];
                for r in 0..group {
                    let qr = &qb[r * hd..(r + 1) * hd];
                    for (j, kj) in k.chunks_exact(hd).enumerate() {
                        scores[r * n + j] = crate::quant::kernels::dot_f32(qr, kj);
                    }
                }
                softmax_part(&mut scores, group, n, v, hd)
            }
        })
        .collect();
    // Merge: out = Σ_p e^{m_p - M} o_p / Σ_p e^{m_p - M} l_p, row by row.
    let mut acc: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..heads.len())
        .map(|_| {
            (
                vec![f32::NEG_INFINITY; rows],
                vec![0.0f32; rows],
                vec![0.0f32; rows * hd],
            )
        })
        .collect();
    for (t, p) in tasks.iter().zip(&parts) {
        let (kv, row0) = match *t {
            Task::Prefix { kv, .. } => (kv, 0),
            Task::Own { kv, b } => (kv, b * group),
        };
        let (m, l, o) = &mut acc[kv];
        for (r, &pm) in p.max.iter().enumerate() {
            let row = row0 + r;
            let new_m = m[row].max(pm);
            if new_m == f32::NEG_INFINITY {
                continue;
            }
            let a = (m[row] - new_m).exp();
            let bscale = (pm - new_m).exp();
            l[row] = l[row] * a + p.sum[r] * bscale;
            for (oo, po) in o[row * hd..(row + 1) * hd].iter_mut().zip(&p.out[r * hd..(r + 1) * hd]) {
                *oo = *oo * a + po * bscale;
            }
            m[row] = new_m;
        }
    }
    acc.into_iter()
        .map(|(_, l, mut o)| {
            for (row, &lr) in l.iter().enumerate() {
                let inv = 1.0 / lr;
                o[row * hd..(row + 1) * hd].iter_mut().for_each(|v| *v *= inv);
            }
            o
        })
        .collect()
}

/// `scores[r, j - j0] = q_r · k_j` for keys `j0..j1` of a transposed key matrix `kt` (`hd` rows
/// `len` floats apart).
#[allow(clippy::too_many_arguments)]
fn scores_transposed(q: &[f32], rows: usize, kt: &[f32], len: usize, j0: usize, j1: usize, hd: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::kernels::isa() == crate::quant::kernels::Isa::Avx512 {
        // SAFETY: AVX-512 (F and BW) was detected at run time.
        unsafe { scores_transposed_avx512(q, rows, kt, len, j0, j1, hd, out) };
        return;
    }
    scores_rect(q, (0, rows), kt, len, (j0, j1), j0, hd, out, j1 - j0);
}

/// `scores[r, j - j0] = q_r · k_j` over rows `r0..r1` and keys `ja..jb` (plain loops; the
/// portable path and the edges the vector kernel leaves).
#[allow(clippy::too_many_arguments)]
fn scores_rect(
    q: &[f32],
    (r0, r1): (usize, usize),
    kt: &[f32],
    len: usize,
    (ja, jb): (usize, usize),
    j0: usize,
    hd: usize,
    out: &mut [f32],
    w: usize,
) {
    for r in r0..r1 {
        let o = &mut out[r * w + (ja - j0)..r * w + (jb - j0)];
        o.iter_mut().for_each(|x| *x = 0.0);
        for d in 0..hd {
            let qv = q[r * hd + d];
            for (x, k) in o.iter_mut().zip(&kt[d * len + ja..d * len + jb]) {
                *x = qv.mul_add(*k, *x);
            }
        }
    }
}

/// Tiles of 4 query rows × 64 keys in 16 vector accumulators: per dimension, four key vectors
/// are loaded and four query values broadcast for 16 FMAs (half a load per FMA). Rows left
/// over (a single stream has only `group` rows) take 1-row tiles, keys left over 16-key tiles,
/// and the last few keys the plain loops. (Written with intrinsics: the auto-vectorized loop
/// assembled the key vectors from 128-bit pieces.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_transposed_avx512(
    q: &[f32],
    rows: usize,
    kt: &[f32],
    len: usize,
    j0: usize,
    j1: usize,
    hd: usize,
    out: &mut [f32],
) {
    let w = j1 - j0;
    assert!(q.len() >= rows * hd && hd > 0 && kt.len() >= (hd - 1) * len + j1 && j1 <= len && out.len() >= rows * w);
    let mut j = j0;
    // Key blocks outside, row tiles inside: a 64-key block (16 KiB at 64 dims) is loaded from
    // L2 once and reused by every row tile from L1.
    // SAFETY (both block loops): every row r < rows, keys j..j + 16 JV <= j1 <= len and d < hd,
    // within the asserted bounds.
    while j + 64 <= j1 {
        unsafe { scores_key_block::<4>(q, rows, kt, len, j, hd, out, w, j - j0) };
        j += 64;
    }
    while j + 16 <= j1 {
        unsafe { scores_key_block::<1>(q, rows, kt, len, j, hd, out, w, j - j0) };
        j += 16;
    }
    scores_rect(q, (0, rows), kt, len, (j, j1), j0, hd, out, w);
}

/// Every row against the `16 JV` keys from `j` on: 4-row tiles, then 1-row tiles for the
/// rows left over.
///
/// # Safety
/// As [`scores_tile`], for all `rows` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_key_block<const JV: usize>(
    q: &[f32],
    rows: usize,
    kt: &[f32],
    len: usize,
    j: usize,
    hd: usize,
    out: &mut [f32],
    w: usize,
    col: usize,
) {
    const RT: usize = 4;
    let full_r = rows / RT * RT;
    // SAFETY: the caller's bounds cover rows 0..rows; each tile stays within them.
    unsafe {
        for r in (0..full_r).step_by(RT) {
            scores_tile::<RT, JV>(q, r, kt, len, j, hd, out, w, col);
        }
        for r in full_r..rows {
            scores_tile::<1, JV>(q, r, kt, len, j, hd, out, w, col);
        }
    }
}

/// `RT` rows × `16 JV` keys from key `j` on, written at column `col` of `out` (row stride `w`).
///
/// # Safety
/// AVX-512F; `r + RT` rows of `q` (`hd` each), keys `j..j + 16 JV` of every one of the `hd`
/// rows of `kt` (stride `len`), and `RT` rows of `w` outputs from `col + 16 JV` must exist.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_tile<const RT: usize, const JV: usize>(
    q: &[f32],
    r: usize,
    kt: &[f32],
    len: usize,
    j: usize,
    hd: usize,
    out: &mut [f32],
    w: usize,
    col: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the bounds above.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); JV]; RT];
        let kp = kt.as_ptr().add(j);
        let qp = q.as_ptr().add(r * hd);
        for d in 0..hd {
            let mut kv = [_mm512_setzero_ps(); JV];
            for (c, k) in kv.iter_mut().enumerate() {
                *k = _mm512_loadu_ps(kp.add(d * len + 16 * c));
            }
            for (ri, a) in acc.iter_mut().enumerate() {
                let qv = _mm512_set1_ps(*qp.add(ri * hd + d));
                for (x, k) in a.iter_mut().zip(&kv) {
                    *x = _mm512_fmadd_ps(qv, *k, *x);
                }
            }
        }
        for (ri, a) in acc.iter().enumerate() {
            let op = out.as_mut_ptr().add((r + ri) * w + col);
            for (c, x) in a.iter().enumerate() {
                _mm512_storeu_ps(op.add(16 * c), *x);
            }
        }
    }
}

/// Chunk-local softmax statistics and `Σ_j p_j v_j` for `rows` rows of `n` scores.
fn softmax_part(scores: &mut [f32], rows: usize, n: usize, v: &[f32], hd: usize) -> Part {
    let mut max = vec![f32::NEG_INFINITY; rows];
    let mut sum = vec![0.0f32; rows];
    for r in 0..rows {
        (max[r], sum[r]) = crate::ops::vector::exp_shift_row(&mut scores[r * n..(r + 1) * n]);
    }
    let mut out = vec![0.0f32; rows * hd];
    weighted_rows(scores, rows, n, v, hd, &mut out);
    Part { max, sum, out }
}

/// `out[r] = Σ_j p[r, j] v_j`.
fn weighted_rows(p: &[f32], rows: usize, n: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::kernels::isa() == crate::quant::kernels::Isa::Avx512 {
        // SAFETY: AVX-512 (F and BW) was detected at run time.
        unsafe { weighted_rows_avx512(p, rows, n, v, hd, out) };
        return;
    }
    weighted_rows_generic(p, rows, n, v, hd, out);
}

/// Tiles of 4 rows × 64 dims in 16 vector accumulators: per key, four value vectors are
/// loaded and four probabilities broadcast (16 FMAs). Other head sizes and leftover rows take
/// the portable path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_rows_avx512(p: &[f32], rows: usize, n: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    const RT: usize = 4;
    if hd != 64 {
        weighted_rows_generic(p, rows, n, v, hd, out);
        return;
    }
    assert!(p.len() >= rows * n && v.len() >= n * hd && out.len() >= rows * hd);
    let full_r = rows / RT * RT;
    for r in (0..full_r).step_by(RT) {
        // SAFETY: r + 3 < rows, j < n and 64 dims per row, within the asserted bounds.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 4 * RT];
            for j in 0..n {
                let vp = v.as_ptr().add(j * hd);
                let vv = [
                    _mm512_loadu_ps(vp),
                    _mm512_loadu_ps(vp.add(16)),
                    _mm512_loadu_ps(vp.add(32)),
                    _mm512_loadu_ps(vp.add(48)),
                ];
                for ri in 0..RT {
                    let pv = _mm512_set1_ps(*p.get_unchecked((r + ri) * n + j));
                    for c in 0..4 {
                        acc[4 * ri + c] = _mm512_fmadd_ps(pv, vv[c], acc[4 * ri + c]);
                    }
                }
            }
            for ri in 0..RT {
                for c in 0..4 {
                    _mm512_storeu_ps(out.as_mut_ptr().add((r + ri) * hd + 16 * c), acc[4 * ri + c]);
                }
            }
        }
    }
    let rest = rows - full_r;
    if rest > 0 {
        weighted_rows_generic(&p[full_r * n..], rest, n, v, hd, &mut out[full_r * hd..]);
    }
}

/// Tiles of 4 rows × 64 dims (16 vector accumulators) when the head has 64 dims, else row by row.
#[inline(always)]
fn weighted_rows_generic(p: &[f32], rows: usize, n: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    const RT: usize = 4;
    const HD: usize = 64;
    let mut r = 0;
    if hd.is_multiple_of(HD) {
        while r + RT <= rows {
            for h0 in (0..hd).step_by(HD) {
                let mut acc = [[0.0f32; HD]; RT];
                for j in 0..n {
                    let vj: &[f32; HD] = v[j * hd + h0..j * hd + h0 + HD].try_into().expect("HD dims");
                    for (ri, a) in acc.iter_mut().enumerate() {
                        let pv = p[(r + ri) * n + j];
                        for (x, vv) in a.iter_mut().zip(vj) {
                            *x = pv.mul_add(*vv, *x);
                        }
                    }
                }
                for (ri, a) in acc.iter().enumerate() {
                    out[(r + ri) * hd + h0..][..HD].copy_from_slice(a);
                }
            }
            r += RT;
        }
    }
    for r in r..rows {
        let o = &mut out[r * hd..(r + 1) * hd];
        for j in 0..n {
            let pv = p[r * n + j];
            for (x, vv) in o.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                *x += pv * vv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain softmax attention in f64 over prefix ++ own keys.
    fn naive(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], hd: usize) -> Vec<f64> {
        let s: Vec<f64> = k
            .iter()
            .map(|kj| (0..hd).map(|d| f64::from(q[d]) * f64::from(kj[d])).sum())
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..hd)
            .map(|d| e.iter().zip(v).map(|(p, vj)| p * f64::from(vj[d])).sum::<f64>() / z)
            .collect()
    }

    #[test]
    fn matches_naive_softmax_attention() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(kvh, streams, group, hd, prefix, own) in &[
            (3, 8, 3, 64, 700, 5),
            (2, 1, 2, 64, 0, 9),
            (1, 3, 5, 24, 301, 1),
            (2, 2, 1, 128, 33, 0),
        ] {
            let mut r = |n: usize| (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect::<Vec<f32>>();
            let pk: Vec<Vec<f32>> = (0..kvh).map(|_| r(prefix * hd)).collect();
            let pv: Vec<Vec<f32>> = (0..kvh).map(|_| r(prefix * hd)).collect();
            let ok: Vec<Vec<Vec<f32>>> = (0..kvh).map(|_| (0..streams).map(|_| r(own * hd)).collect()).collect();
            let ov: Vec<Vec<Vec<f32>>> = (0..kvh).map(|_| (0..streams).map(|_| r(own * hd)).collect()).collect();
            let q: Vec<Vec<f32>> = (0..kvh).map(|_| r(streams * group * hd)).collect();
            let ld = prefix + 16;
            let kt: Vec<Vec<f32>> = pk
                .iter()
                .map(|k| {
                    let mut t = vec![f32::NAN; hd * ld];
                    for j in 0..prefix {
                        for d in 0..hd {
                            t[d * ld + j] = k[j * hd + d];
                        }
                    }
                    t
                })
                .collect();
            let heads: Vec<HeadKv> = (0..kvh)
                .map(|kv| HeadKv {
                    prefix_kt: &kt[kv],
                    prefix_ld: ld,
                    prefix_v: &pv[kv],
                    own_k: ok[kv].iter().map(Vec::as_slice).collect(),
                    own_v: ov[kv].iter().map(Vec::as_slice).collect(),
                })
                .collect();
            let got = attend(&q, &heads, streams, group, hd);
            for kv in 0..kvh {
                for b in 0..streams {
                    let keys: Vec<Vec<f32>> = pk[kv]
                        .chunks(hd)
                        .chain(ok[kv][b].chunks(hd))
                        .map(<[f32]>::to_vec)
                        .collect();
                    let vals: Vec<Vec<f32>> = pv[kv]
                        .chunks(hd)
                        .chain(ov[kv][b].chunks(hd))
                        .map(<[f32]>::to_vec)
                        .collect();
                    for gi in 0..group {
                        let row = b * group + gi;
                        let want = naive(&q[kv][row * hd..(row + 1) * hd], &keys, &vals, hd);
                        for d in 0..hd {
                            let g = f64::from(got[kv][row * hd + d]);
                            assert!(
                                (g - want[d]).abs() < 1e-5,
                                "kv {kv} row {row} dim {d}: {g} vs {}",
                                want[d]
                            );
                        }
                    }
                }
            }
        }
    }
}
