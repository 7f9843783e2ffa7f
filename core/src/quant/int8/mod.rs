//! The `int8` precision: activations quantized per block of 32 to int8 with an f32 scale (as
//! llama.cpp's Q8 activation blocks), weights used as stored, and each block's dot product done
//! in integers (`vpdpbusd` on AVX-512 VNNI), scaled and summed in f32. Three to four times fewer
//! instructions than the exact f32 path at the cost of activation rounding (about 0.4% per
//! element): the same trade llama.cpp makes. The `exact` precision stays the default; this one
//! is opt-in (`--precision int8`) and measured against the goldens in the tests.
//!
//! Decoding Q4_K, Q5_K and Q6_K rows takes the activations rounded per super-block of 256
//! instead, as llama.cpp's Q8_K ([`supers`]): those rows then sum a whole super-block in
//! integers. Prompts (the GEMM) keep the blocks of 32 for every format.
//!
//! Per block, with activations `x_j ~ dx * a_j` (`a_j` in -127..=127, `sa = sum a_j`):
//! - Q4_1 (`w = d q + m`, q in 0..16): `d dx sum(q a) + m dx sa`
//! - Q4_0 (`w = d (q - 8)`):           `d dx (sum(q a) - 8 sa)`
//! - Q8_0 (`w = d q`, q in -128..128): `d dx (sum((q + 128) a) - 128 sa)` (the offset makes the
//!   weight the unsigned operand `vpdpbusd` needs)

use rayon::prelude::*;

use super::{BLOCK, QuantMatrix, WeightFormat};

pub mod gemm;
pub mod supers;

/// Activation rows up to which the product runs as row dot kernels; more rows (prompts) run
/// as the tiled GEMM of [`gemm`] where it covers the format.
pub const ROW_KERNEL_MAX_ROWS: usize = 16;

/// Rows of activations quantized per block.
#[derive(Debug, Clone)]
pub struct QuantizedActs {
    pub rows: usize,
    pub cols: usize,
    /// `rows * cols` quantized values.
    pub q: Vec<i8>,
    /// Per row, per block: the scale `dx`.
    pub d: Vec<f32>,
    /// Per row, per block: the sum of the quantized values.
    pub sum: Vec<i32>,
    /// Per row, per block: `dx * sum` (the factor of the format's `sum(a)` correction).
    pub dsum: Vec<f32>,
    /// Per row, per 4 values: `-16 * (a_4j + a_4j+1 + a_4j+2 + a_4j+3)`, laid out as the i32
    /// lanes `vpdpbusd` fills: the start value that folds Q5_0's `-16` offset into its integer
    /// dot product.
    pub neg16_sum4: Vec<i32>,
    /// The same rows rounded per super-block of 256, for the K-quant row kernels
    /// ([`supers`]); made where those run (AVX-512 VNNI, up to [`ROW_KERNEL_MAX_ROWS`] rows,
    /// `cols` a multiple of 256).
    pub supers: Option<supers::SuperActs>,
}

/// Quantizes `x` (`[rows, cols]`, `cols` a multiple of 32): `dx = max|x| / 127`,
/// `a = round(x / dx)` (half to even).
pub fn quantize_acts(x: &[f32], rows: usize, cols: usize) -> QuantizedActs {
    let nb = cols / BLOCK;
    let mut q = vec![0i8; rows * cols];
    let mut d = vec![0.0f32; rows * nb];
    let mut sum = vec![0i32; rows * nb];
    let neg16 = |c: &[i8]| -16 * c.iter().map(|&v| i32::from(v)).sum::<i32>();
    // A prompt's rows in parallel, 64 at a time; a few rows (decoding) on this thread.
    const ROWS_PER_TASK: usize = 64;
    let neg16_sum4 = if rows > ROWS_PER_TASK {
        x.par_chunks(ROWS_PER_TASK * cols)
            .zip(q.par_chunks_mut(ROWS_PER_TASK * cols))
            .zip(
                d.par_chunks_mut(ROWS_PER_TASK * nb)
                    .zip(sum.par_chunks_mut(ROWS_PER_TASK * nb)),
            )
            .for_each(|((x, q), (d, s))| quantize_blocks(x, q, d, s));
        q.par_chunks_exact(4).map(neg16).collect()
    } else {
        quantize_blocks(x, &mut q, &mut d, &mut sum);
        q.chunks_exact(4).map(neg16).collect()
    };
    let dsum = d.iter().zip(&sum).map(|(&d, &s)| d * s as f32).collect();
    let supers = (rows <= ROW_KERNEL_MAX_ROWS && cols.is_multiple_of(super::k_quants::QK_K) && has_vnni())
        .then(|| supers::quantize(x, rows, cols));
    QuantizedActs {
        rows,
        cols,
        q,
        d,
        sum,
        dsum,
        neg16_sum4,
        supers,
    }
}

/// Blocks of 32 activations: per block `dx`, `Σ a` and the quants. Rounds half to even (the
/// `_mm256_round_ps` llama.cpp's vector code uses), which compiles to vector instructions where
/// `f32::round` is a libm call per value.
#[inline(always)]
fn quantize_blocks_impl(x: &[f32], q: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
    let blocks = x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK));
    for ((xb, qb), (db, sb)) in blocks.zip(d.iter_mut().zip(sum.iter_mut())) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let dx = amax / 127.0;
        let inv = if dx > 0.0 { 1.0 / dx } else { 0.0 };
        let mut s = 0i32;
        for (o, &v) in qb.iter_mut().zip(xb) {
            let a = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            *o = a;
            s += i32::from(a);
        }
        *db = dx;
        *sb = s;
    }
}

sealong_shaders::multiversion!(
    /// [`quantize_blocks_impl`] compiled for this CPU's vector width.
    fn quantize_blocks => quantize_blocks_impl(x: &[f32], q: &mut [i8], d: &mut [f32], sum: &mut [i32])
);

/// Whether [`matmul`] computes with `format` on this CPU: the Q8_0/Q4_0/Q4_1 blocks
/// everywhere, and Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1 (the bulk of published K-quant GGUFs) where AVX-512
/// VNNI is (elsewhere those take the exact path, as the other K-quants do).
pub fn supports(format: WeightFormat) -> bool {
    format.is_block() || has_vnni() && raw_supported(format)
}

fn raw_supported(format: WeightFormat) -> bool {
    matches!(
        format,
        WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K | WeightFormat::Q5_0 | WeightFormat::Q5_1
    )
}

/// Whether the `int8` precision computes `m` activation rows times a `format` weight here (else
/// the exact path does): the row kernels ([`supports`]; the raw-block formats' up to
/// [`ROW_KERNEL_MAX_ROWS`] rows), or the tiled GEMM for more rows.
pub fn covers(format: WeightFormat, m: usize) -> bool {
    by_gemm(format, m) || supports(format) && (format.is_block() || m <= ROW_KERNEL_MAX_ROWS)
}

/// Whether [`matmul`] takes `m` rows times a `format` weight through the tiled GEMM.
fn by_gemm(format: WeightFormat, m: usize) -> bool {
    m > ROW_KERNEL_MAX_ROWS && gemm::supports(format)
}

/// `y = x W^T` with quantized activations: `[x.rows, w.rows]` (`w.format` and `x.rows` ones
/// that [`covers`] accepts).
pub fn matmul(x: &QuantizedActs, w: &QuantMatrix) -> Vec<f32> {
    if by_gemm(w.format, x.rows) {
        return gemm::matmul(x, w);
    }
    row_matmul(x, w)
}

/// [`matmul`] one activation row at a time (against four weight rows where the format has a
/// four-row kernel).
pub(crate) fn row_matmul(x: &QuantizedActs, w: &QuantMatrix) -> Vec<f32> {
    let (m, n, k) = (x.rows, w.rows, w.cols);
    assert_eq!(x.cols, k, "activation width must match the weight");
    assert!(supports(w.format), "int8 products do not cover {:?} here", w.format);
    let nb = k / BLOCK;
    let vnni = has_vnni();
    #[cfg(target_arch = "x86_64")]
    if w.format.is_raw_block() {
        let mut yt = vec![0.0f32; n * m];
        let rows_per_task = n.div_ceil(rayon::current_num_threads().max(1) * 4).max(8);
        yt.par_chunks_mut(rows_per_task * m)
            .enumerate()
            .for_each(|(task, out)| {
                let r0 = task * rows_per_task;
                let n_rows = out.len() / m;
                let rb = w.format.row_bytes(k);
                let q5 = matches!(w.format, WeightFormat::Q5_0 | WeightFormat::Q5_1);
                // Q5_0/Q5_1: four rows at a time share each activation block's loads.
                let mut dr0 = 0;
                while q5 && dr0 + 4 <= n_rows {
                    let qs = &w.qs[(r0 + dr0) * rb..(r0 + dr0 + 4) * rb];
                    for i in 0..m {
                        let (a, ad, dsum) = (
                            &x.q[i * k..(i + 1) * k],
                            &x.d[i * nb..(i + 1) * nb],
                            &x.dsum[i * nb..(i + 1) * nb],
                        );
                        let n16 = &x.neg16_sum4[i * k / 4..(i + 1) * k / 4];
                        let q5_1 = w.format == WeightFormat::Q5_1;
                        // SAFETY: VNNI checked by `supports`; four whole rows, one activation row.
                        let y4 = unsafe { x86::dot4_q5_vnni(q5_1, qs, rb, a, ad, dsum, n16) };
                        for (j, v) in y4.into_iter().enumerate() {
                            out[(dr0 + j) * m + i] = v;
                        }
                    }
                    dr0 += 4;
                }
                if matches!(w.format, WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K) {
                    let s = x
                        .supers
                        .as_ref()
                        .expect("`quantize_acts` rounds per super-block wherever K-quant rows run");
                    let nsb = k / super::k_quants::QK_K;
                    let act = |i: usize| supers::x86::ActRow {
                        q: &s.q[i * k..(i + 1) * k],
                        d: &s.d[i * nsb..(i + 1) * nsb],
                        bsums: &s.bsums[i * k / 16..(i + 1) * k / 16],
                    };
                    for (dr, out_r) in out.chunks_exact_mut(m).enumerate() {
                        let qs = w.row(r0 + dr).1;
                        // Up to four activation rows (a batched step's streams) per pass over the
                        // weight row, which is unpacked once for them.
                        for (c, out4) in out_r.chunks_mut(4).enumerate() {
                            let i0 = c * 4;
                            // SAFETY: `supports` checked VNNI; the row holds `nsb` whole super-blocks
                            // and each activation row `k` values, `nsb` scales and `k / 16` sums.
                            unsafe {
                                match out4.len() {
                                    4 => k_rows::<4>(w.format, qs, &act, i0, out4),
                                    3 => k_rows::<3>(w.format, qs, &act, i0, out4),
                                    2 => k_rows::<2>(w.format, qs, &act, i0, out4),
                                    _ => k_rows::<1>(w.format, qs, &act, i0, out4),
                                }
                            }
                        }
                    }
                    return;
                }
                for (dr, out_r) in out.chunks_exact_mut(m).enumerate().skip(dr0) {
                    let qs = w.row(r0 + dr).1;
                    for (i, o) in out_r.iter_mut().enumerate() {
                        let (a, ad, dsum) = (
                            &x.q[i * k..(i + 1) * k],
                            &x.d[i * nb..(i + 1) * nb],
                            &x.dsum[i * nb..(i + 1) * nb],
                        );
                        let n16 = &x.neg16_sum4[i * k / 4..(i + 1) * k / 4];
                        // SAFETY: `supports` checked VNNI; the row holds whole blocks of `k` weights and
                        // the activation row `k` values and `k / 32` scales.
                        *o = unsafe { x86::dot_raw_vnni(w.format, qs, a, ad, dsum, n16) };
                    }
                }
            });
        return transpose(yt, m, n);
    }
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = n.div_ceil(threads * 4).max(8);
    let mut yt = vec![0.0f32; n * m];
    let rows_per_task = rows_per_task.next_multiple_of(4);
    yt.par_chunks_mut(rows_per_task * m)
        .enumerate()
        .for_each(|(task, out)| {
            let r0 = task * rows_per_task;
            let n_rows = out.len() / m;
            // Advanced only by the x86-64 kernels above the portable loop.
            #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
            let mut dr = 0;
            #[cfg(target_arch = "x86_64")]
            // One activation row of Q8_0 (a decode step): one weight row at a time. With a
            // byte a weight, one sequential stream is read faster than four rows' interleaved
            // blocks (as in `kernels::matmul_xwt`; BENCHMARKS.md, "Weights on 2 MiB pages").
            if vnni && !(m == 1 && w.format == WeightFormat::Q8_0) {
                let (ns, qb) = (w.format.scales_per_block(), w.format.quant_bytes_per_block());
                while dr + 4 <= n_rows {
                    let r = r0 + dr;
                    let scales = &w.scales[r * nb * ns..(r + 4) * nb * ns];
                    let qs = &w.qs[r * nb * qb..(r + 4) * nb * qb];
                    for i in 0..m {
                        let a = &x.q[i * k..(i + 1) * k];
                        let ad = &x.d[i * nb..(i + 1) * nb];
                        let dsum = &x.dsum[i * nb..(i + 1) * nb];
                        // SAFETY: VNNI was detected; four whole weight rows, one activation row.
                        let n16 = &x.neg16_sum4[i * k / 4..(i + 1) * k / 4];
                        let y4 = unsafe { x86::dot4_vnni(w.format, scales, qs, nb, a, ad, dsum, n16) };
                        for (j, v) in y4.into_iter().enumerate() {
                            out[(dr + j) * m + i] = v;
                        }
                    }
                    dr += 4;
                }
            }
            for dr in dr..n_rows {
                let (scales, qs) = w.row(r0 + dr);
                for i in 0..m {
                    let a = &x.q[i * k..(i + 1) * k];
                    let ad = &x.d[i * nb..(i + 1) * nb];
                    let asum = &x.sum[i * nb..(i + 1) * nb];
                    out[dr * m + i] = dot_row(vnni, w.format, scales, qs, a, ad, asum);
                }
            }
        });
    transpose(yt, m, n)
}

/// A K-quant weight row against activation rows `i0..i0 + R` (`act(i)`: row `i`) into `out`
/// (the super-block kernels of [`supers`]).
///
/// # Safety
/// As [`supers::x86::dot_q4k_q5k`].
#[cfg(target_arch = "x86_64")]
unsafe fn k_rows<'a, const R: usize>(
    format: WeightFormat,
    qs: &[u8],
    act: &impl Fn(usize) -> supers::x86::ActRow<'a>,
    i0: usize,
    out: &mut [f32],
) {
    let rows: [supers::x86::ActRow; R] = std::array::from_fn(|j| act(i0 + j));
    // SAFETY: passed on from the caller.
    let y = unsafe {
        match format {
            WeightFormat::Q6K => supers::x86::dot_q6k(qs, &rows),
            f => supers::x86::dot_q4k_q5k(f == WeightFormat::Q5K, qs, &rows),
        }
    };
    out.copy_from_slice(&y);
}

/// `yt[r * m + i]` to `y[i * n + r]`.
fn transpose(yt: Vec<f32>, m: usize, n: usize) -> Vec<f32> {
    if m == 1 {
        return yt;
    }
    let mut y = vec![0.0f32; m * n];
    for r in 0..n {
        for i in 0..m {
            y[i * n + r] = yt[r * m + i];
        }
    }
    y
}

pub(crate) fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline]
fn dot_row(vnni: bool, format: WeightFormat, scales: &[f32], qs: &[u8], a: &[i8], ad: &[f32], asum: &[i32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if vnni {
        // SAFETY: the features were detected; the slices hold whole blocks of one row.
        return unsafe { x86::dot_row_vnni(format, scales, qs, a, ad, asum) };
    }
    let _ = vnni;
    dot_row_portable(format, scales, qs, a, ad, asum)
}

/// Integer block sums `sum(u * a)` with `u` the unsigned weight operand of each format.
fn dot_row_portable(format: WeightFormat, scales: &[f32], qs: &[u8], a: &[i8], ad: &[f32], asum: &[i32]) -> f32 {
    let nb = ad.len();
    let mut s = 0.0f32;
    for b in 0..nb {
        let ab = &a[b * BLOCK..(b + 1) * BLOCK];
        let dot: i32 = match format {
            WeightFormat::Q8_0 => (0..BLOCK)
                .map(|j| (i32::from(qs[32 * b + j] as i8) + 128) * i32::from(ab[j]))
                .sum(),
            _ => (0..16)
                .map(|j| {
                    let q = qs[16 * b + j];
                    i32::from(q & 15) * i32::from(ab[j]) + i32::from(q >> 4) * i32::from(ab[j + 16])
                })
                .sum(),
        };
        s += block_value(format, scales, b, dot, ad[b], asum[b]);
    }
    s
}

/// One block's contribution from its integer dot product.
#[inline]
fn block_value(format: WeightFormat, scales: &[f32], b: usize, dot: i32, dx: f32, sa: i32) -> f32 {
    match format {
        WeightFormat::Q4_1 => scales[2 * b] * dx * dot as f32 + scales[2 * b + 1] * dx * sa as f32,
        WeightFormat::Q4_0 => scales[b] * dx * (dot - 8 * sa) as f32,
        WeightFormat::Q8_0 => scales[b] * dx * (dot - 128 * sa) as f32,
        _ => f32::NAN,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, WeightFormat};

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn hsum_ps(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Unpacks one block's weights to the 32 unsigned bytes `vpdpbusd` multiplies.
    #[inline(always)]
    unsafe fn weights(format: WeightFormat, p: *const u8) -> __m256i {
        // SAFETY: the caller passes a pointer to the block's 16 (Q4) or 32 (Q8) bytes.
        unsafe {
            if format == WeightFormat::Q8_0 {
                _mm256_xor_si256(_mm256_loadu_si256(p as *const __m256i), _mm256_set1_epi8(-128))
            } else {
                let mask = _mm_set1_epi8(15);
                let bytes = _mm_loadu_si128(p as *const __m128i);
                _mm256_set_m128i(
                    _mm_and_si128(_mm_srli_epi16(bytes, 4), mask),
                    _mm_and_si128(bytes, mask),
                )
            }
        }
    }

    /// Four consecutive weight rows against one activation row: the activation block is loaded
    /// once for the four rows, and the four accumulation chains run independently. One copy per
    /// format, so no format test is left in the loop.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot4_vnni(
        format: WeightFormat,
        scales: &[f32],
        qs: &[u8],
        nb: usize,
        a: &[i8],
        ad: &[f32],
        dsum: &[f32],
        neg16_sum4: &[i32],
    ) -> [f32; 4] {
        // SAFETY: as `dot4`'s: the caller's contract, passed on.
        unsafe {
            match format {
                WeightFormat::Q8_0 => dot4::<Q8_0>(scales, qs, nb, a, ad, dsum, neg16_sum4),
                WeightFormat::Q4_0 => dot4::<Q4_0>(scales, qs, nb, a, ad, dsum, neg16_sum4),
                _ => dot4::<Q4_1>(scales, qs, nb, a, ad, dsum, neg16_sum4),
            }
        }
    }

    const Q8_0: u8 = 0;
    const Q4_0: u8 = 1;
    const Q4_1: u8 = 2;

    /// [`dot4_vnni`] for one format (`F`: [`Q8_0`], [`Q4_0`] or [`Q4_1`]). The integer offsets
    /// (Q8_0's −128 of the unsigned weights, Q4_0's −8) start each block's integer sum, from the
    /// activations' `−16 Σ a` per four values (as Q5_0's), so the f32 sum is of exact block dots;
    /// Q4_1's `m dx Σ a` is added per block in f32.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dot4<const F: u8>(
        scales: &[f32],
        qs: &[u8],
        nb: usize,
        a: &[i8],
        ad: &[f32],
        dsum: &[f32],
        neg16_sum4: &[i32],
    ) -> [f32; 4] {
        let format = match F {
            Q8_0 => WeightFormat::Q8_0,
            Q4_0 => WeightFormat::Q4_0,
            _ => WeightFormat::Q4_1,
        };
        let (ns, qb) = (format.scales_per_block(), format.quant_bytes_per_block());
        let mut acc = [_mm512_setzero_ps(); 4];
        // The start of a block's integer sum: its offset times Σ a, per four values.
        let start512 = |p: *const i32| {
            // SAFETY: the caller's activation row has 8 sums a block.
            let v = unsafe { _mm512_loadu_si512(p as *const _) };
            match F {
                Q8_0 => _mm512_slli_epi32(v, 3),
                Q4_0 => _mm512_srai_epi32(v, 1),
                _ => _mm512_setzero_si512(),
            }
        };
        let start256 = |p: *const i32| {
            // SAFETY: as above.
            let v = unsafe { _mm256_loadu_si256(p as *const __m256i) };
            match F {
                Q8_0 => _mm256_slli_epi32(v, 3),
                Q4_0 => _mm256_srai_epi32(v, 1),
                _ => _mm256_setzero_si256(),
            }
        };
        // SAFETY: the caller passes four rows of `nb` blocks (scales, quants) and an activation
        // row of `nb` blocks; every index below is within them.
        unsafe {
            // Two blocks a step in 512-bit registers (lanes 0..8 the first block, 8..16 the
            // second): half the instructions of a block a step in 256-bit ones.
            let mut b = 0;
            while b + 2 <= nb {
                let x = _mm512_loadu_si512(a.as_ptr().add(b * BLOCK) as *const _);
                let start = start512(neg16_sum4.as_ptr().add(b * 8));
                let (dx0, dx1) = (*ad.get_unchecked(b), *ad.get_unchecked(b + 1));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let blk = r * nb + b;
                    let p = qs.as_ptr().add(qb * blk);
                    // Each of the four rows is a stream from memory (a decode step reads every
                    // weight once); as in the exact kernels, the next cache lines are asked for
                    // ahead of time.
                    crate::quant::raw_dots::x86::prefetch_ahead(p, 2 * qb);
                    let w =
                        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(weights(format, p)), weights(format, p.add(qb)));
                    let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, w, x));
                    let s0 = *scales.get_unchecked(ns * blk) * dx0;
                    let s1 = *scales.get_unchecked(ns * (blk + 1)) * dx1;
                    let sv = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                    *acc_r = _mm512_fmadd_ps(sv, dot, *acc_r);
                }
                b += 2;
            }
            if b < nb {
                let x = _mm256_loadu_si256(a.as_ptr().add(b * BLOCK) as *const __m256i);
                let start = start256(neg16_sum4.as_ptr().add(b * 8));
                let dx = *ad.get_unchecked(b);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let blk = r * nb + b;
                    let w = weights(format, qs.as_ptr().add(qb * blk));
                    let dot = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(start, w, x));
                    let scale = *scales.get_unchecked(ns * blk) * dx;
                    let part = _mm256_mul_ps(_mm256_set1_ps(scale), dot);
                    *acc_r = _mm512_add_ps(*acc_r, _mm512_zextps256_ps512(part));
                }
            }
        }
        let mut out = [0.0f32; 4];
        for (r, o) in out.iter_mut().enumerate() {
            // Q4_1's mins: `m dx Σ a` per block.
            let mut corr = 0.0f32;
            if F == Q4_1 {
                for (b, &ds) in dsum.iter().enumerate().take(nb) {
                    corr += scales[2 * (r * nb + b) + 1] * ds;
                }
            }
            *o = _mm512_reduce_add_ps(acc[r]) + corr;
        }
        out
    }

    /// One weight row against one activation row. Each block's integer dot product stays in 8
    /// i32 lanes, is converted and scaled as a vector, and the row is summed horizontally once.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot_row_vnni(
        format: WeightFormat,
        scales: &[f32],
        qs: &[u8],
        a: &[i8],
        ad: &[f32],
        asum: &[i32],
    ) -> f32 {
        let nb = ad.len();
        let mask = _mm_set1_epi8(15);
        let flip = _mm256_set1_epi8(-128);
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); 2];
        // The `sum(a)` terms, summed in f32 per row.
        let mut corr = 0.0f32;
        for b in 0..nb {
            let dx = ad[b];
            // SAFETY: block b's weights (16 or 32 bytes) and 32 activations are in bounds.
            let p = unsafe {
                let w = match format {
                    WeightFormat::Q8_0 => {
                        _mm256_xor_si256(_mm256_loadu_si256(qs.as_ptr().add(32 * b) as *const __m256i), flip)
                    }
                    _ => {
                        let bytes = _mm_loadu_si128(qs.as_ptr().add(16 * b) as *const __m128i);
                        let lo = _mm_and_si128(bytes, mask);
                        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                        _mm256_set_m128i(hi, lo)
                    }
                };
                let x = _mm256_loadu_si256(a.as_ptr().add(b * BLOCK) as *const __m256i);
                _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, w, x))
            };
            let sa = asum[b] as f32;
            let scale = match format {
                WeightFormat::Q4_1 => {
                    corr += scales[2 * b + 1] * dx * sa;
                    scales[2 * b] * dx
                }
                WeightFormat::Q4_0 => {
                    corr -= 8.0 * scales[b] * dx * sa;
                    scales[b] * dx
                }
                _ => {
                    corr -= 128.0 * scales[b] * dx * sa;
                    scales[b] * dx
                }
            };
            acc[b & 1] = _mm256_fmadd_ps(_mm256_set1_ps(scale), p, acc[b & 1]);
        }
        hsum_ps(_mm256_add_ps(acc[0], acc[1])) + corr
    }

    /// A Q5_0 / Q5_1 block's 32 quants (0..32) as the unsigned bytes `vpdpbusd` multiplies: the
    /// nibbles with the fifth bits (`qh`, bit j for weight j) on top.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn q5_weights(blk: &[u8], q5_1: bool) -> __m256i {
        let (h, qo) = if q5_1 { (4, 8) } else { (2, 6) };
        let qh = u32::from_le_bytes([blk[h], blk[h + 1], blk[h + 2], blk[h + 3]]);
        let mask = _mm_set1_epi8(15);
        // SAFETY: the caller passes a whole block: its 16 quant bytes start at `qo`.
        let bytes = unsafe { _mm_loadu_si128(blk.as_ptr().add(qo) as *const __m128i) };
        let nib = _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16(bytes, 4), mask),
            _mm_and_si128(bytes, mask),
        );
        _mm256_or_si256(nib, _mm256_and_si256(_mm256_movm_epi8(qh), _mm256_set1_epi8(16)))
    }

    /// Four consecutive Q5_0 / Q5_1 rows (`qs`: their bytes, `rb` a row) against one activation
    /// row: each block's activations, scale, sums and Q5_0 start value are loaded once for the
    /// four rows, whose accumulation chains run independently.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot4_q5_vnni(
        q5_1: bool,
        qs: &[u8],
        rb: usize,
        a: &[i8],
        ad: &[f32],
        dsum: &[f32],
        neg16_sum4: &[i32],
    ) -> [f32; 4] {
        use crate::quant::raw_dots::x86::{f16_at, prefetch_ahead};
        let bb = if q5_1 { 24 } else { 22 };
        let nb = rb / bb;
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut corr = [0.0f32; 4];
        // SAFETY: the caller passes four rows of `nb` whole blocks and an activation row of
        // `nb` blocks (values, scales, sums, lane sums); every read below is within them.
        unsafe {
            for b in 0..nb {
                let x = _mm256_loadu_si256(a.as_ptr().add(b * BLOCK) as *const __m256i);
                let start = if q5_1 {
                    zero
                } else {
                    _mm256_loadu_si256(neg16_sum4.as_ptr().add(b * 8) as *const __m256i)
                };
                let (dx, ds) = (*ad.get_unchecked(b), *dsum.get_unchecked(b));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let blk = qs.get_unchecked(r * rb + b * bb..r * rb + (b + 1) * bb);
                    prefetch_ahead(blk.as_ptr(), 1);
                    let w = q5_weights(blk, q5_1);
                    let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(start, w, x));
                    *acc_r = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(blk, 0) * dx), p, *acc_r);
                    if q5_1 {
                        corr[r] += f16_at(blk, 2) * ds;
                    }
                }
            }
        }
        [
            hsum_ps(acc[0]) + corr[0],
            hsum_ps(acc[1]) + corr[1],
            hsum_ps(acc[2]) + corr[2],
            hsum_ps(acc[3]) + corr[3],
        ]
    }

    /// One Q5_0 / Q5_1 row against one activation row: each block's unsigned quants meet its
    /// activation block in `vpdpbusd`, the i32 lanes scaled as a vector; Q5_1's min goes through
    /// the activation sums (`dsum = dx * sum(a)`), Q5_0's `-16` starts the integer sum. (The
    /// K-quant rows are [`super::supers`]'.)
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot_raw_vnni(
        format: WeightFormat,
        qs: &[u8],
        a: &[i8],
        ad: &[f32],
        dsum: &[f32],
        neg16_sum4: &[i32],
    ) -> f32 {
        use crate::quant::raw_dots::x86::{f16_at, prefetch_ahead};
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); 4];
        // Four partial sums of the offsets and mins, so consecutive blocks do not wait on each other.
        let mut corr = [0.0f32; 4];
        // SAFETY (whole function): the caller passes whole blocks and an activation row as long
        // as the row (`a`: 32 values per block of 32 weights, `ad`/`dsum`: one per block).
        unsafe {
            let act = |blk: usize| _mm256_loadu_si256(a.as_ptr().add(blk * BLOCK) as *const __m256i);
            let dp = |w: __m256i, blk: usize| _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, w, act(blk)));
            match format {
                WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
                    let q5_1 = format == WeightFormat::Q5_1;
                    let bb = if q5_1 { 24 } else { 22 };
                    for (b, blk) in qs.chunks_exact(bb).enumerate() {
                        prefetch_ahead(blk.as_ptr(), 1);
                        let d = f16_at(blk, 0);
                        let w = q5_weights(blk, q5_1);
                        let dx = *ad.get_unchecked(b);
                        let p = if q5_1 {
                            corr[b & 3] += f16_at(blk, 2) * *dsum.get_unchecked(b);
                            dp(w, b)
                        } else {
                            // Q5_0's -16 starts the integer sum (no scalar correction).
                            let start = _mm256_loadu_si256(neg16_sum4.as_ptr().add(b * 8) as *const __m256i);
                            _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(start, w, act(b)))
                        };
                        acc[b & 3] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), p, acc[b & 3]);
                    }
                }
                _ => return f32::NAN,
            }
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        )) + (corr[0] + corr[1])
            + (corr[2] + corr[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// The raw-block formats' VNNI kernels (where this CPU has them) against the f64 product of
    /// the dequantized weights and the rounded activations (`a * dx`): equal up to f32 rounding
    /// (1e-5 of the sum of |terms|), and within the activation rounding (1%) of the exact one.
    #[test]
    fn int8_raw_block_products_track_the_exact_ones() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let formats = [
            WeightFormat::Q4K,
            WeightFormat::Q5K,
            WeightFormat::Q6K,
            WeightFormat::Q5_0,
            WeightFormat::Q5_1,
        ];
        // 1, 3 and 6 activation rows: the K-quant kernels take them 1, 3, and 4 + 2 at a time.
        for (format, m) in formats.into_iter().flat_map(|f| [(f, 1), (f, 3), (f, 6)]) {
            if !supports(format) {
                continue;
            }
            let (n, k) = (13, 512);
            let w = crate::quant::raw_dots::tests::random_rows(format, n, k, 4);
            let dense = w.to_f32();
            let x: Vec<f32> = (0..m * k).map(|_| r.random_range(-2.0..2.0)).collect();
            let qx = quantize_acts(&x, m, k);
            let y = matmul(&qx, &w);
            for i in 0..m {
                for j in 0..n {
                    let got = f64::from(y[i * n + j]);
                    // The K-quant rows take the activations rounded per super-block.
                    let supers = matches!(format, WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K);
                    let rounded = (0..k).map(|t| {
                        let a = match &qx.supers {
                            Some(s) if supers => f64::from(s.q[i * k + t]) * f64::from(s.d[(i * k + t) / 256]),
                            _ => f64::from(qx.q[i * k + t]) * f64::from(qx.d[(i * k + t) / BLOCK]),
                        };
                        a * f64::from(dense[j * k + t])
                    });
                    let (same, scale) = rounded.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                    assert!(
                        (got - same).abs() <= 1e-5 * scale + 1e-6,
                        "{format:?} row {j} of {m}: {got} vs {same}"
                    );
                    let terms = (0..k).map(|t| f64::from(x[i * k + t]) * f64::from(dense[j * k + t]));
                    let (exact, scale) = terms.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
                    assert!(
                        (got - exact).abs() <= 0.01 * scale + 1e-6,
                        "{format:?} row {j}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    /// A prompt's rows (quantized in parallel) come out as each row quantized alone.
    #[test]
    fn many_rows_quantize_as_each_row_alone() {
        let (rows, cols) = (130, 64);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.01)
            .collect();
        let all = quantize_acts(&x, rows, cols);
        let nb = cols / BLOCK;
        for r in 0..rows {
            let one = quantize_acts(&x[r * cols..(r + 1) * cols], 1, cols);
            assert_eq!(all.q[r * cols..(r + 1) * cols], one.q[..], "row {r}");
            assert_eq!(all.d[r * nb..(r + 1) * nb], one.d[..], "row {r}");
            assert_eq!(all.sum[r * nb..(r + 1) * nb], one.sum[..], "row {r}");
            assert_eq!(all.dsum[r * nb..(r + 1) * nb], one.dsum[..], "row {r}");
            assert_eq!(
                all.neg16_sum4[r * cols / 4..(r + 1) * cols / 4],
                one.neg16_sum4[..],
                "row {r}"
            );
        }
    }

    #[test]
    fn int8_products_track_the_exact_ones() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        // k = 160: an odd number of blocks (the four-row kernel's 256-bit tail).
        for (format, k) in [WeightFormat::Q4_1, WeightFormat::Q4_0, WeightFormat::Q8_0]
            .into_iter()
            .flat_map(|f| [(f, 128), (f, 160)])
        {
            let (n, m) = (19, 3);
            let w = crate::quant::kernels::tests::random_matrix(format, n, k, r.random());
            let dense = w.to_f32();
            let x: Vec<f32> = (0..m * k).map(|_| r.random_range(-2.0..2.0)).collect();
            let qx = quantize_acts(&x, m, k);
            let y = matmul(&qx, &w);
            // The SIMD and portable paths compute the same integers; only the f32 summation order differs.
            for i in 0..m {
                for j in 0..n {
                    let (sc, q) = w.row(j);
                    let nb = k / BLOCK;
                    let args = (
                        &qx.q[i * k..(i + 1) * k],
                        &qx.d[i * nb..(i + 1) * nb],
                        &qx.sum[i * nb..(i + 1) * nb],
                    );
                    let portable = dot_row_portable(format, sc, q, args.0, args.1, args.2);
                    // f32 sums in another order: within 1e-6 of a bound on the magnitude of what is summed,
                    // the blocks' integer dots and their sum(a) corrections (Q8_0's offset of
                    // 128 makes both far larger than the result).
                    let magnitude: f32 = (0..nb)
                        .map(|b| {
                            let d = args.1[b] * sc[b * format.scales_per_block()];
                            let corr = match format {
                                WeightFormat::Q8_0 => 128.0 * d,
                                WeightFormat::Q4_0 => 8.0 * d,
                                _ => sc[2 * b + 1] * args.1[b],
                            };
                            let dot: i32 = (0..BLOCK).map(|t| i32::from(args.0[b * BLOCK + t]).abs() * 255).sum();
                            d.abs() * dot as f32 + (corr * args.2[b] as f32).abs()
                        })
                        .sum();
                    let tol = 1e-5 * (1.0 + portable.abs()) + 1e-6 * magnitude;
                    assert!(
                        (y[i * n + j] - portable).abs() <= tol,
                        "{format:?}: SIMD {} vs portable {portable}",
                        y[i * n + j]
                    );
                    let exact: f64 = (0..k)
                        .map(|t| f64::from(x[i * k + t]) * f64::from(dense[j * k + t]))
                        .sum();
                    let scale: f64 = (0..k)
                        .map(|t| (f64::from(x[i * k + t]) * f64::from(dense[j * k + t])).abs())
                        .sum();
                    // Activation rounding: at most half a step (max|x|/254) per element.
                    assert!(
                        (f64::from(y[i * n + j]) - exact).abs() <= 0.01 * scale + 1e-6,
                        "{format:?}"
                    );
                }
            }
        }
    }
}
