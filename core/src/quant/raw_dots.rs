//! Fused dot products of the raw-block formats (the K-quants, Q5_0 and Q5_1) with an f32 row:
//! each block's quants are widened and multiplied into the sum in registers, with no
//! dequantized row in between. Activations stay f32 (as in [`super::kernels`]), so a dot equals
//! the dequantized-f32 product up to f32 rounding.
//!
//! Per scale group (32 or 16 weights) with `w = dl * q - ml`:
//! `sum x w = dl * sum(x q) - ml * sum(x)`. The `sum(x)` of each group ("x sums", per
//! [`xsum_group`] weights) are computed once per row of `x` by the caller, the `dl * x q` terms
//! go into a 64-lane accumulator (independent chains for the vector units), and the mins'
//! term into one scalar.
//!
//! The loops are written so LLVM vectorizes them; [`dot_raw`] runs a copy compiled for
//! AVX-512 or AVX2+FMA when the CPU has it (the hand-written intrinsics of Q4_K and Q6_K, the
//! formats of most published GGUFs, are in [`x86`]), and the portable copy elsewhere (wasm).

use super::k_quants::{self, QK_K};
use super::{BLOCK, WeightFormat, f16_at};
use sealong_shaders::host::Isa;

/// Weights per group whose `x` sum a format's dot needs (its min or offset terms): 16 for
/// Q2_K, 32 for Q4_K, Q5_K, Q5_0 and Q5_1, 0 for the formats without.
pub fn xsum_group(format: WeightFormat) -> usize {
    match format {
        WeightFormat::Q2K => 16,
        WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q5_0 | WeightFormat::Q5_1 => 32,
        _ => 0,
    }
}

/// The x sums a format's dot needs, per [`xsum_group`] weights of `x` (empty when it needs none).
pub fn xsums(format: WeightFormat, x: &[f32]) -> Vec<f32> {
    match xsum_group(format) {
        0 => Vec::new(),
        g => x.chunks_exact(g).map(|c| c.iter().sum()).collect(),
    }
}

/// Lanes of the accumulator (four 16-lane vectors).
const LANES: usize = 64;

/// The eight 6-bit scales and mins of a Q4_K / Q5_K super-block ([`k_quants::scale_min_k4`]),
/// as f32.
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (sc, mn) = k_quants::scale_min_k4(s);
    (sc.map(f32::from), mn.map(f32::from))
}

/// Adds `dl_lo * x[l] q[l]` (l < 16) and `dl_hi * x[l] q[l]` (l >= 16) for 32 weights into
/// `acc[..32]`.
#[inline(always)]
fn fma32(acc: &mut [f32], x: &[f32], q: &[f32; 32], dl_lo: f32, dl_hi: f32) {
    let (acc, x) = (&mut acc[..32], &x[..32]);
    for l in 0..16 {
        acc[l] += dl_lo * (x[l] * q[l]);
    }
    for l in 16..32 {
        acc[l] += dl_hi * (x[l] * q[l]);
    }
}

/// One Q4_K super-block; returns the mins' term (to subtract).
#[inline(always)]
fn q4_k(b: &[u8], x: &[f32], xs: &[f32], acc: &mut [f32; LANES]) -> f32 {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    let mut mins = 0.0f32;
    for c in 0..4 {
        let q = &qs[c * 32..][..32];
        let mut lo = [0.0f32; 32];
        let mut hi = [0.0f32; 32];
        for l in 0..32 {
            lo[l] = f32::from(q[l] & 0x0F);
            hi[l] = f32::from(q[l] >> 4);
        }
        let (da, db) = (d * sc[2 * c], d * sc[2 * c + 1]);
        fma32(&mut acc[..32], &x[c * 64..], &lo, da, da);
        fma32(&mut acc[32..], &x[c * 64 + 32..], &hi, db, db);
        mins += mn[2 * c] * xs[2 * c] + mn[2 * c + 1] * xs[2 * c + 1];
    }
    dmin * mins
}

/// One Q5_K super-block; returns the mins' term.
#[inline(always)]
fn q5_k(b: &[u8], x: &[f32], xs: &[f32], acc: &mut [f32; LANES]) -> f32 {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    let mut mins = 0.0f32;
    for c in 0..4 {
        let q = &qs[c * 32..][..32];
        let mut lo = [0.0f32; 32];
        let mut hi = [0.0f32; 32];
        for l in 0..32 {
            let h = u32::from(qh[l]) >> (2 * c);
            lo[l] = (u32::from(q[l] & 0x0F) | ((h & 1) << 4)) as f32;
            hi[l] = (u32::from(q[l] >> 4) | ((h & 2) << 3)) as f32;
        }
        let (da, db) = (d * sc[2 * c], d * sc[2 * c + 1]);
        fma32(&mut acc[..32], &x[c * 64..], &lo, da, da);
        fma32(&mut acc[32..], &x[c * 64 + 32..], &hi, db, db);
        mins += mn[2 * c] * xs[2 * c] + mn[2 * c + 1] * xs[2 * c + 1];
    }
    dmin * mins
}

/// One Q6_K super-block.
#[inline(always)]
fn q6_k(b: &[u8], x: &[f32], acc: &mut [f32; LANES]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    // Weight `h·128 + s·32 + l`: low nibble `s / 2` of `ql[h·64 + (s % 2)·32 + l]`, high bits
    // `2s` of `qh[h·32 + l]`; scale `h·8 + s·2 + l / 16`.
    for h in 0..2 {
        for s in 0..4 {
            let lo = &ql[h * 64 + (s % 2) * 32..][..32];
            let hb = &qh[h * 32..][..32];
            let mut q = [0.0f32; 32];
            for l in 0..32 {
                let low = (u32::from(lo[l]) >> (4 * (s / 2))) & 0x0F;
                let high = (u32::from(hb[l]) >> (2 * s)) & 0x03;
                q[l] = ((low | (high << 4)) as i32 - 32) as f32;
            }
            let g = h * 8 + s * 2;
            let (d0, d1) = (d * f32::from(scales[g] as i8), d * f32::from(scales[g + 1] as i8));
            fma32(&mut acc[(s % 2) * 32..], &x[h * 128 + s * 32..], &q, d0, d1);
        }
    }
}

/// One Q3_K super-block.
#[inline(always)]
fn q3_k(b: &[u8], x: &[f32], acc: &mut [f32; LANES]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let dl = k_quants::q3_k_scales(sc, d);
    for h in 0..2 {
        for s in 0..4 {
            let qb = &qs[h * 32..][..32];
            let mut q = [0.0f32; 32];
            for l in 0..32 {
                let low = ((u32::from(qb[l]) >> (2 * s)) & 3) as i32;
                let high = ((u32::from(hmask[l]) >> (h * 4 + s)) & 1) as i32;
                q[l] = (low - 4 + 4 * high) as f32;
            }
            let g = h * 8 + s * 2;
            fma32(&mut acc[(s % 2) * 32..], &x[h * 128 + s * 32..], &q, dl[g], dl[g + 1]);
        }
    }
}

/// One Q2_K super-block; returns the mins' term.
#[inline(always)]
fn q2_k(b: &[u8], x: &[f32], xs: &[f32], acc: &mut [f32; LANES]) -> f32 {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut mins = 0.0f32;
    for (g, &sc) in scales.iter().enumerate() {
        mins += f32::from(sc >> 4) * xs[g];
    }
    for h in 0..2 {
        for s in 0..4 {
            let qb = &qs[h * 32..][..32];
            let mut q = [0.0f32; 32];
            for l in 0..32 {
                q[l] = ((u32::from(qb[l]) >> (2 * s)) & 3) as f32;
            }
            let g = h * 8 + s * 2;
            let (d0, d1) = (d * f32::from(scales[g] & 0x0F), d * f32::from(scales[g + 1] & 0x0F));
            fma32(&mut acc[(s % 2) * 32..], &x[h * 128 + s * 32..], &q, d0, d1);
        }
    }
    dmin * mins
}

/// One Q8_K super-block.
#[inline(always)]
fn q8_k(b: &[u8], x: &[f32], acc: &mut [f32; LANES]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for c in 0..8 {
        let mut q = [0.0f32; 32];
        for l in 0..32 {
            q[l] = f32::from(b[4 + c * 32 + l] as i8);
        }
        fma32(&mut acc[(c % 2) * 32..], &x[c * 32..], &q, d, d);
    }
}

/// One Q5_0 / Q5_1 block's quants (0..32) in weight order.
#[inline(always)]
fn q5_quants(qh: u32, qs: &[u8]) -> [f32; 32] {
    let mut q = [0.0f32; 32];
    for j in 0..16 {
        q[j] = (u32::from(qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) as f32;
        q[j + 16] = (u32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) as f32;
    }
    q
}

#[inline(always)]
fn dot_raw_impl(format: WeightFormat, qs: &[u8], x: &[f32], xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut minus = 0.0f32;
    let mut plus = 0.0f32;
    let bb = format.row_bytes(format.block_weights());
    // One loop per format, so each block function inlines into the compiled copies.
    macro_rules! super_blocks {
        (|$b:ident, $x:ident, $xs:ident| $body:expr) => {{
            let g = xsum_group(format).max(1);
            for (i, $b) in qs.chunks_exact(bb).enumerate() {
                let $x = &x[i * QK_K..(i + 1) * QK_K];
                let $xs = xs.get(i * QK_K / g..).unwrap_or(&[]);
                $body;
            }
        }};
    }
    match format {
        WeightFormat::Q4K => super_blocks!(|b, x, xs| minus += q4_k(b, x, xs, &mut acc)),
        WeightFormat::Q5K => super_blocks!(|b, x, xs| minus += q5_k(b, x, xs, &mut acc)),
        WeightFormat::Q6K => super_blocks!(|b, x, _xs| q6_k(b, x, &mut acc)),
        WeightFormat::Q3K => super_blocks!(|b, x, _xs| q3_k(b, x, &mut acc)),
        WeightFormat::Q2K => super_blocks!(|b, x, xs| minus += q2_k(b, x, xs, &mut acc)),
        WeightFormat::Q8K => super_blocks!(|b, x, _xs| q8_k(b, x, &mut acc)),
        WeightFormat::Q5_0 => {
            for (i, b) in qs.chunks_exact(22).enumerate() {
                let d = f16_at(b, 0);
                let mut q = q5_quants(u32::from_le_bytes([b[2], b[3], b[4], b[5]]), &b[6..22]);
                for v in &mut q {
                    *v -= 16.0;
                }
                fma32(&mut acc[(i % 2) * 32..], &x[i * BLOCK..], &q, d, d);
            }
        }
        WeightFormat::Q5_1 => {
            for (i, b) in qs.chunks_exact(24).enumerate() {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let q = q5_quants(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), &b[8..24]);
                fma32(&mut acc[(i % 2) * 32..], &x[i * BLOCK..], &q, d, d);
                plus += m * xs[i];
            }
        }
        _ => return f32::NAN,
    }
    acc.iter().sum::<f32>() - minus + plus
}

/// `sum_k x[k] w[k]` for one stored row of a raw-block format (`qs`: its whole blocks; `x`: as
/// many weights; `xs`: [`xsums`] of `x`), with the given instruction set (`isa` must be one
/// this CPU has: [`sealong_shaders::host::isa`] or lower).
pub fn dot_raw(isa: Isa, format: WeightFormat, qs: &[u8], x: &[f32], xs: &[f32]) -> f32 {
    let n = qs.len() / format.row_bytes(format.block_weights()).max(1) * format.block_weights();
    let g = xsum_group(format);
    assert!(
        x.len() >= n && (g == 0 || xs.len() >= n / g),
        "dot_raw: x (or its sums) shorter than the row"
    );
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
        fn avx512(format: WeightFormat, qs: &[u8], x: &[f32], xs: &[f32]) -> f32 {
            dot_raw_impl(format, qs, x, xs)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(format: WeightFormat, qs: &[u8], x: &[f32], xs: &[f32]) -> f32 {
            dot_raw_impl(format, qs, x, xs)
        }
        match isa {
            // SAFETY: the caller passes an instruction set this CPU has (see the doc above), and
            // the assertion above keeps x and its sums as long as the row's whole blocks.
            Isa::Avx512 => unsafe {
                return match format {
                    WeightFormat::Q4K => x86::dot_q4_k(qs, x, xs),
                    WeightFormat::Q6K => x86::dot_q6_k(qs, x),
                    WeightFormat::Q5_0 => x86::dot_q5(false, qs, x, xs),
                    WeightFormat::Q5_1 => x86::dot_q5(true, qs, x, xs),
                    _ => avx512(format, qs, x, xs),
                };
            },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(format, qs, x, xs) },
            Isa::Portable => {}
        }
    }
    let _ = isa;
    dot_raw_impl(format, qs, x, xs)
}

/// AVX-512 kernels of the formats published GGUFs are mostly made of (Q4_K_M and Q5_K_M keep
/// 256-wide rows in Q4_K/Q5_K/Q6_K and fall back to Q5_0/Q5_1/Q8_0 for other widths). Each needs
/// AVX-512 F and BW, a row of whole blocks, `x` as long as the row and its x sums.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::scale_min_k4;

    /// The f16 at `b[i..i + 2]` as f32, with F16C (which AVX-512 F implies), inlined: `half`'s
    /// conversion checks the CPU at run time and is not inlined into the block loops.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// 16 u8 (i8) lanes as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    fn u8_ps(v: __m128i) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    fn i8_ps(v: __m128i) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
    }

    fn reduce(acc: [__m512; 4]) -> f32 {
        // SAFETY: only called from the AVX-512 kernels below.
        unsafe {
            _mm512_reduce_add_ps(_mm512_add_ps(
                _mm512_add_ps(acc[0], acc[1]),
                _mm512_add_ps(acc[2], acc[3]),
            ))
        }
    }

    /// Bytes ahead of the block being read that [`prefetch_ahead`] asks for: a decode step
    /// streams every weight once from memory, and the hardware prefetcher alone left the
    /// kernels waiting on it (this row's later blocks, or the next row's: rows are contiguous).
    const PREFETCH_DISTANCE: usize = 2048;

    /// Prefetches the cache lines of the block `len` bytes long that starts
    /// [`PREFETCH_DISTANCE`] bytes after `p` (a hint: an address past the matrix does not fault).
    #[inline(always)]
    pub(crate) fn prefetch_ahead(p: *const u8, len: usize) {
        let q = p.wrapping_add(PREFETCH_DISTANCE);
        let mut o = 0;
        while o < len {
            // SAFETY: prefetching is a hint and never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(o) as *const i8) };
            o += 64;
        }
    }

    /// 16 halves at `p` as f32 (bf16: the bits moved up; f16: F16C).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    unsafe fn half16(bf16: bool, p: *const u8) -> __m512 {
        // SAFETY: the caller passes 32 readable bytes.
        let v = unsafe { _mm256_loadu_si256(p as *const __m256i) };
        if bf16 {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16))
        } else {
            _mm512_cvtph_ps(v)
        }
    }

    /// A half row (whole 32-value groups, as [`QuantMatrix`] keeps them) against `x`.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn dot_half_avx512(bf16: bool, qs: &[u8], x: &[f32]) -> f32 {
        let n = qs.len() / 2;
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut k = 0;
        // SAFETY: every read below is of values k..k + 16 < n of the row and of x.
        unsafe {
            while k + 64 <= n {
                for (j, a) in acc.iter_mut().enumerate() {
                    let w = half16(bf16, qs.as_ptr().add(2 * (k + 16 * j)));
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(k + 16 * j)), w, *a);
                }
                k += 64;
            }
            while k + 16 <= n {
                let w = half16(bf16, qs.as_ptr().add(2 * k));
                acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(k)), w, acc[0]);
                k += 16;
            }
        }
        let tail: f32 = (k..n).map(|i| x[i] * super::half_value(bf16, qs, i)).sum();
        reduce(acc) + tail
    }

    /// The AVX2 twin of [`dot_half_avx512`] (8 lanes).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_half_avx2(bf16: bool, qs: &[u8], x: &[f32]) -> f32 {
        let n = qs.len() / 2;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut k = 0;
        // SAFETY: every read below is of values k..k + 8 < n of the row and of x.
        unsafe {
            let load = |i: usize| {
                let v = _mm_loadu_si128(qs.as_ptr().add(2 * i) as *const __m128i);
                if bf16 {
                    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
                } else {
                    _mm256_cvtph_ps(v)
                }
            };
            while k + 32 <= n {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(k + 8 * j)), load(k + 8 * j), *a);
                }
                k += 32;
            }
            while k + 8 <= n {
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(k)), load(k), acc[0]);
                k += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            _mm_cvtss_f32(h) + (k..n).map(|i| x[i] * super::half_value(bf16, qs, i)).sum::<f32>()
        }
    }

    /// One Q5_0 / Q5_1 block's `sum(x q)` in 16 lanes, before its scale (Q5_0: `q - 16`):
    /// `quants` its 16 quant bytes, `qh` its fifth bits, `x_lo` / `x_hi` its 32 activations.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    unsafe fn q5_block(q5_1: bool, quants: *const u8, qh: u32, x_lo: __m512, x_hi: __m512) -> __m512 {
        let sixteen = _mm512_set1_epi32(16);
        // Both nibbles of a byte sit in its 32-bit lane: a mask and a shift split them.
        // SAFETY: the caller passes 16 readable quant bytes.
        let v = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(quants as *const __m128i) });
        let (lo, hi) = (_mm512_and_si512(v, _mm512_set1_epi32(15)), _mm512_srli_epi32(v, 4));
        // The fifth bits as lane masks: weight j's is bit j of qh.
        let (lo, hi) = if q5_1 {
            (
                _mm512_mask_add_epi32(lo, qh as u16, lo, sixteen),
                _mm512_mask_add_epi32(hi, (qh >> 16) as u16, hi, sixteen),
            )
        } else {
            // q - 16: the nibble where the fifth bit is set, the nibble - 16 where not.
            (
                _mm512_mask_sub_epi32(lo, !qh as u16, lo, sixteen),
                _mm512_mask_sub_epi32(hi, !(qh >> 16) as u16, hi, sixteen),
            )
        };
        _mm512_fmadd_ps(
            x_hi,
            _mm512_cvtepi32_ps(hi),
            _mm512_mul_ps(x_lo, _mm512_cvtepi32_ps(lo)),
        )
    }

    /// Q5_0 (`w = d (q - 16)`) or Q5_1 (`w = d q + m`) rows: `d sum(x q)` in vectors
    /// ([`q5_block`]), Q5_1's `m` times the block's x sum in a scalar.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn dot_q5(q5_1: bool, qs: &[u8], x: &[f32], xs: &[f32]) -> f32 {
        let bb = if q5_1 { 24 } else { 22 };
        let (h, q) = if q5_1 { (4, 8) } else { (2, 6) };
        let mut acc = [_mm512_setzero_ps(); 4];
        // Four partial sums of the offsets, so consecutive blocks do not wait on each other.
        let mut off = [0.0f32; 4];
        for (i, b) in qs.chunks_exact(bb).enumerate() {
            prefetch_ahead(b.as_ptr(), 1);
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
            // SAFETY: the block's 16 quant bytes and x's 32 floats of block i are in bounds.
            unsafe {
                let xp = x.as_ptr().add(i * 32);
                let part = q5_block(
                    q5_1,
                    b.as_ptr().add(q),
                    qh,
                    _mm512_loadu_ps(xp),
                    _mm512_loadu_ps(xp.add(16)),
                );
                acc[i & 3] = _mm512_fmadd_ps(_mm512_set1_ps(d), part, acc[i & 3]);
            }
            if q5_1 {
                off[i & 3] += f16_at(b, 2) * *unsafe { xs.get_unchecked(i) };
            }
        }
        reduce(acc) + (off[0] + off[1]) + (off[2] + off[3])
    }

    /// Four consecutive Q5_0 or Q5_1 rows (`qs`: their blocks, row after row, `nb` a row)
    /// against one `x` row, block by block with [`q5_block`]: x is loaded once per block for
    /// the four rows, and the four rows' f16 scales of a block are widened together. Decode
    /// (one x row) on Zen 4: the Q4_K_M file at 73 tok/s against 62 with [`dot_q5`] row by row,
    /// the round running beside both (BENCHMARKS.md).
    ///
    /// Eight rows at a time measured the same per row (39 ns for a 576-wide Q5_0 row on a Zen 4
    /// core): what is left is the per-row unpacking, not x or the scales.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn dot4_q5(q5_1: bool, qs: &[u8], nb: usize, x: &[f32], xs: &[f32]) -> [f32; 4] {
        let bb = if q5_1 { 24 } else { 22 };
        let (h, q) = if q5_1 { (4, 8) } else { (2, 6) };
        debug_assert!(qs.len() >= 4 * nb * bb && x.len() >= nb * 32 && (!q5_1 || xs.len() >= nb));
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut off = [0.0f32; 4];
        let base = qs.as_ptr();
        // SAFETY: the caller passes four rows of `nb` whole blocks and x (and, for Q5_1, its
        // block sums) at least `nb` blocks long; every read below is of those.
        unsafe {
            for blk in 0..nb {
                let xp = x.as_ptr().add(blk * 32);
                let (x_lo, x_hi) = (_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)));
                let p: [*const u8; 4] = std::array::from_fn(|r| base.add((r * nb + blk) * bb));
                // The four rows' f16 values at byte `o` of this block, widened together.
                let halves = |o: usize| {
                    let mut v = [0.0f32; 4];
                    let h = p.map(|pr| (pr.add(o) as *const i16).read_unaligned());
                    _mm_storeu_ps(
                        v.as_mut_ptr(),
                        _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0)),
                    );
                    v
                };
                let d = halves(0);
                if q5_1 {
                    let m = halves(2);
                    let s = *xs.get_unchecked(blk);
                    for r in 0..4 {
                        off[r] += m[r] * s;
                    }
                }
                for r in 0..4 {
                    prefetch_ahead(p[r], 1);
                    let qh = (p[r].add(h) as *const u32).read_unaligned();
                    let part = q5_block(q5_1, p[r].add(q), qh, x_lo, x_hi);
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d[r]), part, acc[r]);
                }
            }
            std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]) + off[r])
        }
    }

    /// Q4_K rows: sub-block `2c` is the low nibbles of `qs[32c..32c + 32]`, `2c + 1` the high.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn dot_q4_k(qs: &[u8], x: &[f32], xs: &[f32]) -> f32 {
        let mask = _mm256_set1_epi8(15);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut mins = 0.0f32;
        for (i, b) in qs.chunks_exact(144).enumerate() {
            prefetch_ahead(b.as_ptr(), 144);
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (sc, mn) = scale_min_k4(&b[4..16]);
            let mut m = 0.0f32;
            for c in 0..4 {
                // SAFETY: the super-block's 32 quant bytes of chunk c and x's 64 floats are in
                // bounds (whole super-blocks, x as long as the row).
                unsafe {
                    let bytes = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(bytes, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
                    let xp = x.as_ptr().add(i * 256 + c * 64);
                    let pl = _mm512_fmadd_ps(
                        _mm512_loadu_ps(xp.add(16)),
                        u8_ps(_mm256_extracti128_si256(lo, 1)),
                        _mm512_mul_ps(_mm512_loadu_ps(xp), u8_ps(_mm256_castsi256_si128(lo))),
                    );
                    let ph = _mm512_fmadd_ps(
                        _mm512_loadu_ps(xp.add(48)),
                        u8_ps(_mm256_extracti128_si256(hi, 1)),
                        _mm512_mul_ps(_mm512_loadu_ps(xp.add(32)), u8_ps(_mm256_castsi256_si128(hi))),
                    );
                    let a = (c & 1) * 2;
                    acc[a] = _mm512_fmadd_ps(_mm512_set1_ps(d * sc[2 * c]), pl, acc[a]);
                    acc[a + 1] = _mm512_fmadd_ps(_mm512_set1_ps(d * sc[2 * c + 1]), ph, acc[a + 1]);
                    m += mn[2 * c] * *xs.get_unchecked(i * 8 + 2 * c)
                        + mn[2 * c + 1] * *xs.get_unchecked(i * 8 + 2 * c + 1);
                }
            }
            mins += dmin * m;
        }
        reduce(acc) - mins
    }

    /// Q6_K rows: per 128 weights, `ql` 64 bytes (two 32-byte halves, low then high nibbles)
    /// and `qh` 32 bytes (four 2-bit fields); quants `q - 32` as i8, scales per 16 weights.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn dot_q6_k(qs: &[u8], x: &[f32]) -> f32 {
        let m15 = _mm256_set1_epi8(15);
        let m3 = _mm256_set1_epi8(3);
        let m32 = _mm256_set1_epi8(32);
        let mut acc = [_mm512_setzero_ps(); 4];
        for (i, b) in qs.chunks_exact(210).enumerate() {
            prefetch_ahead(b.as_ptr(), 210);
            let d = f16_at(b, 208);
            let scales = &b[192..208];
            for h in 0..2 {
                // SAFETY: the super-block's bytes (ql at 64h, qh at 128 + 32h) and x's 128
                // floats of half h are in bounds.
                unsafe {
                    let qla = _mm256_loadu_si256(b.as_ptr().add(h * 64) as *const __m256i);
                    let qlb = _mm256_loadu_si256(b.as_ptr().add(h * 64 + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(b.as_ptr().add(128 + h * 32) as *const __m256i);
                    let lows = [
                        _mm256_and_si256(qla, m15),
                        _mm256_and_si256(qlb, m15),
                        _mm256_and_si256(_mm256_srli_epi16(qla, 4), m15),
                        _mm256_and_si256(_mm256_srli_epi16(qlb, 4), m15),
                    ];
                    // qh's field s, moved to bits 4..6.
                    let highs = [
                        _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4),
                    ];
                    for s in 0..4 {
                        let q = _mm256_sub_epi8(_mm256_or_si256(lows[s], highs[s]), m32);
                        let xp = x.as_ptr().add(i * 256 + h * 128 + s * 32);
                        let p0 = _mm512_mul_ps(_mm512_loadu_ps(xp), i8_ps(_mm256_castsi256_si128(q)));
                        let p1 = _mm512_mul_ps(_mm512_loadu_ps(xp.add(16)), i8_ps(_mm256_extracti128_si256(q, 1)));
                        let g = h * 8 + s * 2;
                        let (d0, d1) = (d * f32::from(scales[g] as i8), d * f32::from(scales[g + 1] as i8));
                        let a = (s & 1) * 2;
                        acc[a] = _mm512_fmadd_ps(_mm512_set1_ps(d0), p0, acc[a]);
                        acc[a + 1] = _mm512_fmadd_ps(_mm512_set1_ps(d1), p1, acc[a + 1]);
                    }
                }
            }
        }
        reduce(acc)
    }
}

/// Value `i` of a little-endian f16 / bf16 row.
#[inline(always)]
fn half_value(bf16: bool, qs: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([qs[2 * i], qs[2 * i + 1]]);
    if bf16 {
        f32::from_bits(u32::from(bits) << 16)
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

/// `sum_k x[k] w[k]` for one stored f16 or bf16 row (`qs`: its little-endian values; `x` at
/// least as long): widened in registers, summed in f32. `isa` as for [`dot_raw`].
pub fn dot_half(isa: Isa, format: WeightFormat, qs: &[u8], x: &[f32]) -> f32 {
    let n = qs.len() / 2;
    assert!(
        x.len() >= n && format.is_half(),
        "dot_half: a half row and an x as long"
    );
    let bf16 = format == WeightFormat::BF16;
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the caller passes an instruction set this CPU has; `x` holds `n` values.
        Isa::Avx512 => return unsafe { x86::dot_half_avx512(bf16, qs, x) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { x86::dot_half_avx2(bf16, qs, x) },
        Isa::Portable => {}
    }
    let _ = isa;
    let mut acc = [0.0f32; 16];
    for (c, x) in x[..n].chunks_exact(16).enumerate() {
        for l in 0..16 {
            acc[l] += x[l] * half_value(bf16, qs, c * 16 + l);
        }
    }
    let tail: f32 = (n / 16 * 16..n).map(|k| x[k] * half_value(bf16, qs, k)).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::QuantMatrix;
    use rand::{RngExt, SeedableRng};

    /// Random bytes make valid blocks of every raw format (any bit pattern is a block; the f16
    /// scales are set to small finite values so sums stay in range).
    pub(crate) fn random_rows(format: WeightFormat, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bb = format.row_bytes(format.block_weights());
        let mut data: Vec<u8> = (0..rows * format.row_bytes(cols)).map(|_| r.random()).collect();
        let half_at: &[usize] = match format {
            WeightFormat::Q5_0 => &[0],
            WeightFormat::Q5_1 | WeightFormat::Q4K | WeightFormat::Q5K => &[0, 2],
            WeightFormat::Q2K => &[80, 82],
            WeightFormat::Q3K => &[108],
            WeightFormat::Q6K => &[208],
            _ => &[],
        };
        for b in data.chunks_exact_mut(bb) {
            for &o in half_at {
                let v = half::f16::from_f32(r.random_range(-0.05..0.05));
                b[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
            if format == WeightFormat::Q8K {
                b[..4].copy_from_slice(&r.random_range(0.001f32..0.01).to_le_bytes());
            }
        }
        QuantMatrix::from_gguf_bytes(format, rows, cols, &data).expect("matrix")
    }

    /// f16 and bf16 rows (odd widths included) on every instruction set this CPU has, and the
    /// decoder's product over them, against f64 sums; tolerance 1e-5 of the sum of |terms|.
    #[test]
    fn half_dots_equal_f64_products() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for format in [WeightFormat::F16, WeightFormat::BF16] {
            for k in [32, 96, 576] {
                let n = 5;
                let vals: Vec<f32> = (0..n * k).map(|_| r.random_range(-1.0..1.0)).collect();
                let bytes: Vec<u8> = vals
                    .iter()
                    .flat_map(|&v| match format {
                        WeightFormat::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                let w = QuantMatrix::from_gguf_bytes(format, n, k, &bytes).expect("matrix");
                let dense = w.to_f32();
                let x: Vec<f32> = (0..3 * k).map(|_| r.random_range(-2.0..2.0)).collect();
                let check = |got: f32, i: usize, j: usize, what: &str| {
                    let terms = (0..k).map(|t| f64::from(x[i * k + t]) * f64::from(dense[j * k + t]));
                    let (exact, scale) = terms.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                    assert!(
                        (f64::from(got) - exact).abs() <= 1e-5 * (1.0 + scale),
                        "{what} {format:?} k={k}: {got} vs {exact}"
                    );
                };
                for isa in crate::quant::kernels::tests::isas() {
                    for j in 0..n {
                        check(dot_half(isa, format, w.row(j).1, &x[..k]), 0, j, &format!("{isa:?}"));
                    }
                }
                for m in [1, 3] {
                    let y = crate::quant::kernels::matmul_xwt(&x[..m * k], m, &w);
                    for i in 0..m {
                        for j in 0..n {
                            check(y[i * n + j], i, j, "matmul_xwt");
                        }
                    }
                }
            }
        }
    }

    /// Every raw format on every instruction set this CPU has, against the f64 product of the
    /// gguf-exact dequantized row; tolerance 1e-4 relative (f32 rounding of 512-term sums).
    #[test]
    fn raw_dots_equal_dequantized_f64_products() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let isas = crate::quant::kernels::tests::isas();
        use WeightFormat::*;
        for format in [Q5_0, Q5_1, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K] {
            let (n, k) = (9, 512);
            let w = random_rows(format, n, k, 3);
            let dense = w.to_f32();
            assert!(dense.iter().all(|v| v.is_finite()));
            let x: Vec<f32> = (0..k).map(|_| r.random_range(-2.0..2.0)).collect();
            let xs = xsums(format, &x);
            for &isa in &isas {
                for j in 0..n {
                    let exact: f64 = (0..k).map(|t| f64::from(x[t]) * f64::from(dense[j * k + t])).sum();
                    let scale: f64 = (0..k)
                        .map(|t| (f64::from(x[t]) * f64::from(dense[j * k + t])).abs())
                        .sum();
                    let got = f64::from(dot_raw(isa, format, w.row(j).1, &x, &xs));
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + scale),
                        "{isa:?} {format:?} row {j}: {got} vs {exact}"
                    );
                }
            }
            // The decoder's product: fused dots below four rows, the dequantizing GEMM above.
            for m in [1, 2, 3, 5] {
                let xm: Vec<f32> = (0..m * k).map(|_| r.random_range(-2.0..2.0)).collect();
                let y = crate::quant::kernels::matmul_xwt(&xm, m, &w);
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|t| f64::from(xm[i * k + t]) * f64::from(dense[j * k + t]));
                        let (exact, scale) = terms.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                        let got = f64::from(y[i * n + j]);
                        assert!(
                            (got - exact).abs() <= 1e-5 * (1.0 + scale),
                            "{format:?} m={m}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::quant::kernels;

    /// Single-thread ns per row: fused dot vs dequantize-then-dot (a development aid:
    /// `RAYON_NUM_THREADS=1 cargo test --workspace --lib --locked -- --ignored raw_dot_speed
    /// --nocapture`; the dev and test profiles build the core at opt-level 3).
    #[test]
    #[ignore]
    fn raw_dot_speed() {
        use WeightFormat::*;
        for format in [Q4K, Q6K, Q5K, Q3K, Q2K, Q5_0, Q5_1] {
            // SmolLM2's shapes: ffn_down (K-quants) and the 576-wide rest (Q5_0/Q5_1).
            let (n, k) = if format.block_weights() == BLOCK {
                (1536, 576)
            } else {
                (576, 1536)
            };
            if format == Q5_0 {
                // The reference: Q8_0 of the same shape through its own (repacked) dot kernel.
                let (n, k) = (1536, 576);
                let q8 = crate::quant::kernels::tests::random_matrix(Q8_0, n, k, 5);
                let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
                let mut best = f64::MAX;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    let y = kernels::matmul_xwt(&x, 1, &q8);
                    best = best.min(t.elapsed().as_secs_f64());
                    assert!(y[0].is_finite());
                }
                println!("Q8_0 (matmul_xwt, all threads): {:.1} ns/row", best * 1e9 / n as f64);
            }
            let w = super::tests::random_rows(format, n, k, 5);
            let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
            let xs = xsums(format, &x);
            let isa = kernels::isa();
            let mut row = vec![0.0f32; k];
            let mut best = [f64::MAX; 4];
            let qx = crate::quant::int8::quantize_acts(&x, 1, k);
            let mut sink = 0.0f32;
            for _ in 0..20 {
                let t = std::time::Instant::now();
                for r in 0..n {
                    sink += dot_raw(isa, format, w.row(r).1, &x, &xs);
                }
                best[0] = best[0].min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                for r in 0..n {
                    kernels::dequantize_row(isa, format, &[], w.row(r).1, &mut row);
                    sink += kernels::dot_f32(&x, &row);
                }
                best[1] = best[1].min(t.elapsed().as_secs_f64());
                #[cfg(target_arch = "x86_64")]
                if isa == kernels::Isa::Avx512 && matches!(format, Q5_0 | Q5_1) {
                    let rb = format.row_bytes(k);
                    let t = std::time::Instant::now();
                    for r in (0..n).step_by(4) {
                        // SAFETY: AVX-512 was detected; four whole rows, x and its sums.
                        let y = unsafe { x86::dot4_q5(format == Q5_1, &w.qs[r * rb..(r + 4) * rb], k / 32, &x, &xs) };
                        sink += y[0] + y[3];
                    }
                    best[3] = best[3].min(t.elapsed().as_secs_f64());
                }
                if crate::quant::int8::supports(format) {
                    let t = std::time::Instant::now();
                    sink += crate::quant::int8::matmul(&qx, &w).iter().sum::<f32>();
                    best[2] = best[2].min(t.elapsed().as_secs_f64());
                }
            }
            println!(
                "{format:?}: fused {:.1} ns/row, four rows at a time {:.1} ns/row, dequantize+dot {:.1} ns/row, int8 (all threads) {:.1} ns/row ({sink})",
                best[0] * 1e9 / n as f64,
                best[3] * 1e9 / n as f64,
                best[1] * 1e9 / n as f64,
                best[2] * 1e9 / n as f64
            );
        }
    }
}
