//! The `int8` precision on Q4_K, Q5_K and Q6_K rows, as llama.cpp computes them: activations rounded
//! per super-block of 256 (ggml's Q8_K: one f32 scale, and the sums of each 16 quants), and
//! each super-block's dot product summed in integers, the 6-bit (Q4_K, Q5_K) or 8-bit (Q6_K) scales
//! included, with one conversion to f32 per 256 weights.
//!
//! With activations `x_j ~ dy * a_j` over a super-block and `S_g = sum of a_j` over its 16-value
//! groups `g` (`bsums`):
//! - Q4_K and Q5_K (`w = d sc_s q - dmin mn_s`, 32-weight sub-blocks `s`, `q` in 0..16 / 0..32):
//!   `d dy sum_s sc_s sum(q a) - dmin dy sum_s mn_s (S_2s + S_2s+1)`
//! - Q6_K (`w = d sc_g (q - 32)`, `q` in 0..64, `sc_g` an i8):
//!   `d dy (sum_g sc_g sum(q a) - 32 sum_g sc_g S_g)`
//!
//! The per-32 rounding of [`super::quantize_acts`] cost an f32 conversion, a multiply-add and
//! the scalar scale products every 32 weights; on a model of Llama-3.2-1B's shape that kept
//! int8 decode at 0.76x llama.cpp, bound by those instructions rather than by memory
//! (BENCHMARKS.md).

use super::super::k_quants::QK_K;

/// Values per activation group summed in [`SuperActs::bsums`].
const GROUP: usize = 16;

/// Rows of activations rounded per super-block of [`QK_K`] values.
#[derive(Debug, Clone)]
pub struct SuperActs {
    /// `rows * cols` quantized values.
    pub q: Vec<i8>,
    /// Per row, per super-block: the scale `dy`.
    pub d: Vec<f32>,
    /// Per row, per 16 values: the sum of the quantized values.
    pub bsums: Vec<i16>,
}

/// Rounds `x` (`[rows, cols]`, `cols` a multiple of 256) per super-block: `dy = max|x| / 127`,
/// `a = round(x / dy)` (half to even, as [`super::quantize_acts`]).
pub fn quantize(x: &[f32], rows: usize, cols: usize) -> SuperActs {
    debug_assert_eq!(cols % QK_K, 0);
    let mut q = vec![0i8; rows * cols];
    let mut d = vec![0.0f32; rows * cols / QK_K];
    let mut bsums = vec![0i16; rows * cols / GROUP];
    quantize_impl(&x[..rows * cols], &mut q, &mut d, &mut bsums);
    SuperActs { q, d, bsums }
}

#[inline(always)]
fn quantize_supers_impl(x: &[f32], q: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    let supers = x.chunks_exact(QK_K).zip(q.chunks_exact_mut(QK_K));
    for ((xs, qs), (ds, bs)) in supers.zip(d.iter_mut().zip(bsums.chunks_exact_mut(QK_K / GROUP))) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let dy = amax / 127.0;
        let inv = if dy > 0.0 { 1.0 / dy } else { 0.0 };
        for (o, &v) in qs.iter_mut().zip(xs) {
            *o = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        for (s, g) in bs.iter_mut().zip(qs.chunks_exact(GROUP)) {
            *s = g.iter().map(|&v| i16::from(v)).sum();
        }
        *ds = dy;
    }
}

sealong_shaders::multiversion!(
    /// [`quantize_supers_impl`] compiled for this CPU's vector width.
    fn quantize_impl => quantize_supers_impl(x: &[f32], q: &mut [i8], d: &mut [f32], bsums: &mut [i16])
);

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use crate::quant::raw_dots::x86::{f16_at, prefetch_ahead};

    /// A control for `vpshufb` that fills 128-bit lane `l` with copies of the i16 at index
    /// `pick[l]` of that lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn pick_i16(pick: [i32; 4]) -> __m512i {
        let p = |s: i32| (2 * s) | ((2 * s + 1) << 8) | ((2 * s) << 16) | ((2 * s + 1) << 24);
        let (a, b, c, d) = (p(pick[0]), p(pick[1]), p(pick[2]), p(pick[3]));
        _mm512_set_epi32(d, d, d, d, c, c, c, c, b, b, b, b, a, a, a, a)
    }

    /// One activation row of a [`super::SuperActs`]: its quants, super-block scales and 16-value
    /// sums.
    #[derive(Clone, Copy)]
    pub struct ActRow<'a> {
        pub q: &'a [i8],
        pub d: &'a [f32],
        pub bsums: &'a [i16],
    }

    /// One Q4_K row (`q5` false) or Q5_K row (`q5`: the fifth bits added from `qh`) against `R`
    /// activation rows: each super-block is unpacked once for all of them (a batched decode
    /// step's streams).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and VNNI must be present; `qs` holds whole super-blocks (144 bytes each,
    /// Q5_K 176) and each activation row as many values, scales and sums as the row has weights,
    /// super-blocks and 16-weight groups.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot_q4k_q5k<const R: usize>(q5: bool, qs: &[u8], rows: &[ActRow; R]) -> [f32; R] {
        let (bb, quants) = if q5 { (176, 48) } else { (144, 16) };
        let m15 = _mm256_set1_epi8(15);
        let sixteen = _mm512_set1_epi8(16);
        // Sub-block 2c's scale in the low 256 bits (its 32 weights' 16 pair sums), 2c + 1's in
        // the high; and the bit of `qh` that is their fifth.
        let picks = [
            pick_i16([0, 0, 1, 1]),
            pick_i16([2, 2, 3, 3]),
            pick_i16([4, 4, 5, 5]),
            pick_i16([6, 6, 7, 7]),
        ];
        let fifth = |c: i32| {
            _mm512_inserti64x4::<1>(
                _mm512_set1_epi8((1i32 << (2 * c)) as i8),
                _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8),
            )
        };
        let fifths = [fifth(0), fifth(1), fifth(2), fifth(3)];
        let mut acc = [_mm512_setzero_ps(); R];
        let mut acc_min = [_mm256_setzero_ps(); R];
        let nsb = qs.len() / bb;
        debug_assert!(
            rows.iter()
                .all(|r| r.q.len() >= nsb * 256 && r.d.len() >= nsb && r.bsums.len() >= nsb * 16)
        );
        // SAFETY (whole loop): `qs` holds `nsb` super-blocks of `bb` bytes, each activation row
        // `256 nsb` values, `nsb` scales and `16 nsb` sums, as the caller guarantees.
        unsafe {
            for i in 0..nsb {
                let blk = qs.get_unchecked(i * bb..(i + 1) * bb);
                prefetch_ahead(blk.as_ptr(), bb);
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let (sc, mn) = crate::quant::k_quants::scale_min_k4(&blk[4..16]);
                let (sc, mn) = (u64::from_le_bytes(sc), u64::from_le_bytes(mn));
                // The mins against the 32-value sums: mn_s (S_2s + S_2s+1) in eight i32 lanes.
                let mn = _mm_cvtsi64_si128(mn as i64);
                let mn2 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));
                for (r, row) in rows.iter().enumerate() {
                    let bs = _mm256_loadu_si256(row.bsums.as_ptr().add(i * 16) as *const __m256i);
                    let mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn2));
                    acc_min[r] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * *row.d.get_unchecked(i)), mins, acc_min[r]);
                }
                let scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                let qh = if q5 {
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i))
                } else {
                    _mm512_setzero_si512()
                };
                let mut isum = [_mm512_setzero_si512(); R];
                for c in 0..4 {
                    let bytes = _mm256_loadu_si256(blk.as_ptr().add(quants + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(bytes, m15);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), m15);
                    let mut w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    if q5 {
                        w = _mm512_mask_add_epi8(w, _mm512_test_epi8_mask(qh, fifths[c]), w, sixteen);
                    }
                    let sc_c = _mm512_shuffle_epi8(scales, picks[c]);
                    for (r, row) in rows.iter().enumerate() {
                        let x = _mm512_loadu_si512(row.q.as_ptr().add(i * 256 + 64 * c) as *const __m512i);
                        // u5 * i8 pair sums fit i16 (2 * 31 * 127).
                        isum[r] = _mm512_dpwssd_epi32(isum[r], _mm512_maddubs_epi16(w, x), sc_c);
                    }
                }
                for (r, row) in rows.iter().enumerate() {
                    let dr = _mm512_set1_ps(d * *row.d.get_unchecked(i));
                    acc[r] = _mm512_fmadd_ps(dr, _mm512_cvtepi32_ps(isum[r]), acc[r]);
                }
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]) - hsum256(acc_min[r]))
    }

    /// One Q6_K row against `R` activation rows (as [`dot_q4k_q5k`]).
    ///
    /// # Safety
    /// As [`dot_q4k_q5k`], with super-blocks of 210 bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot_q6k<const R: usize>(qs: &[u8], rows: &[ActRow; R]) -> [f32; R] {
        let m15 = _mm512_set1_epi8(15);
        let m30 = _mm512_set1_epi8(0x30);
        // A 128-weight half's `ql` (64 bytes) holds, in its low nibbles, weights 0..64 of the
        // half and, in its high nibbles, 64..128; their high two bits are in `qh` (32 bytes,
        // broadcast to both 256-bit halves) at bits 0-1 / 2-3 (low nibbles' first / second 32)
        // and 4-5 / 6-7 (high nibbles'). These shifts bring them to bits 4-5.
        let shift_lo = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
        let shift_hi = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
        // Each 128-bit lane of 64 weights is one 16-weight group: groups 0..4 of a half's eight
        // scales for the low nibbles, 4..8 for the high.
        let pick_lo = pick_i16([0, 1, 2, 3]);
        let pick_hi = pick_i16([4, 5, 6, 7]);
        let mut acc = [_mm512_setzero_ps(); R];
        let nsb = qs.len() / 210;
        debug_assert!(
            rows.iter()
                .all(|r| r.q.len() >= nsb * 256 && r.d.len() >= nsb && r.bsums.len() >= nsb * 16)
        );
        // SAFETY (whole loop): as in `dot_q4k_q5k`, with 210-byte super-blocks.
        unsafe {
            for i in 0..nsb {
                let blk = qs.get_unchecked(i * 210..(i + 1) * 210);
                prefetch_ahead(blk.as_ptr(), 210);
                let d = f16_at(blk, 208);
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.as_ptr().add(192) as *const __m128i));
                // -32 sum_g sc_g S_g starts each row's integer sum (eight i32 lanes of the sixteen).
                let mut isum: [__m512i; R] = std::array::from_fn(|r| {
                    let bs = _mm256_loadu_si256(rows[r].bsums.as_ptr().add(i * 16) as *const __m256i);
                    let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bs));
                    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offset))
                });
                for h in 0..2 {
                    let ql = _mm512_loadu_si512(blk.as_ptr().add(64 * h) as *const __m512i);
                    let qh =
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.as_ptr().add(128 + 32 * h) as *const __m256i));
                    let w_lo = _mm512_or_si512(
                        _mm512_and_si512(ql, m15),
                        _mm512_and_si512(_mm512_sllv_epi16(qh, shift_lo), m30),
                    );
                    let w_hi = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m15),
                        _mm512_and_si512(_mm512_srlv_epi16(qh, shift_hi), m30),
                    );
                    let half = if h == 0 {
                        _mm256_castsi256_si128(sc16)
                    } else {
                        _mm256_extracti128_si256::<1>(sc16)
                    };
                    let scales = _mm512_broadcast_i32x4(half);
                    let (sc_lo, sc_hi) = (
                        _mm512_shuffle_epi8(scales, pick_lo),
                        _mm512_shuffle_epi8(scales, pick_hi),
                    );
                    for (r, row) in rows.iter().enumerate() {
                        let x = row.q.as_ptr().add(i * 256 + 128 * h);
                        // u6 * i8 pair sums fit i16 (2 * 63 * 127).
                        let p_lo = _mm512_maddubs_epi16(w_lo, _mm512_loadu_si512(x as *const __m512i));
                        let p_hi = _mm512_maddubs_epi16(w_hi, _mm512_loadu_si512(x.add(64) as *const __m512i));
                        isum[r] = _mm512_dpwssd_epi32(isum[r], p_lo, sc_lo);
                        isum[r] = _mm512_dpwssd_epi32(isum[r], p_hi, sc_hi);
                    }
                }
                for (r, row) in rows.iter().enumerate() {
                    let dr = _mm512_set1_ps(d * *row.d.get_unchecked(i));
                    acc[r] = _mm512_fmadd_ps(dr, _mm512_cvtepi32_ps(isum[r]), acc[r]);
                }
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode steps' products at Llama-3.2-1B's shapes (`ffn_up`'s 8192 x 2048 as Q4_K,
    /// `ffn_down`'s 2048 x 8192 as Q6_K) for 1, 4 and 8 activation rows (streams), all threads:
    /// weight bytes read per second and ns per weight row and stream (a development aid:
    /// `cargo test --workspace --lib --locked -- --ignored super_rows_speed --nocapture`).
    #[test]
    #[ignore]
    fn super_rows_speed() {
        use crate::quant::WeightFormat;
        use crate::quant::int8::{has_vnni, matmul, quantize_acts};
        if !has_vnni() {
            return;
        }
        for (format, n, k) in [(WeightFormat::Q4K, 8192, 2048), (WeightFormat::Q6K, 2048, 8192)] {
            let w = crate::quant::raw_dots::tests::random_rows(format, n, k, 7);
            let bytes = (n * format.row_bytes(k)) as f64;
            for m in [1, 4, 8] {
                let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let qx = quantize_acts(&x, m, k);
                let mut best = f64::MAX;
                let mut sink = 0.0f32;
                for _ in 0..30 {
                    let t = std::time::Instant::now();
                    sink += matmul(&qx, &w)[3];
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "{format:?} [{n} x {k}], {m} rows: {:.2} ms, {:.1} GB/s of weights, {:.1} ns per row and stream ({sink})",
                    best * 1e3,
                    bytes / best / 1e9,
                    best * 1e9 / (n * m) as f64
                );
            }
        }
    }

    /// Super-block rounding: each value within half a step of `x`, the sums those of the quants.
    #[test]
    fn super_blocks_round_within_half_a_step() {
        let (rows, cols) = (3, 512);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.003)
            .collect();
        let s = quantize(&x, rows, cols);
        for (b, xs) in x.chunks_exact(QK_K).enumerate() {
            let dy = s.d[b];
            assert_eq!(dy, xs.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0);
            for (j, &v) in xs.iter().enumerate() {
                let a = f32::from(s.q[b * QK_K + j]);
                assert!(
                    (a * dy - v).abs() <= 0.5 * dy * (1.0 + 1e-6),
                    "value {j} of super-block {b}"
                );
            }
            for g in 0..QK_K / GROUP {
                let sum: i16 = s.q[b * QK_K + g * GROUP..][..GROUP].iter().map(|&v| i16::from(v)).sum();
                assert_eq!(s.bsums[b * QK_K / GROUP + g], sum);
            }
        }
    }
}
