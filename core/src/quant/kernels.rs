//! CPU matrix products with weights kept in their storage format: `y[i, r] = sum_k x[i, k] *
//! w[r, k]` with `x` in f32. Activations stay f32 (no activation quantization as llama.cpp
//! does), so the result equals the dequantized-f32 product up to f32 rounding, which is what
//! logits parity with transformers needs.
//!
//! For a block `w_j = d * q_j + m`: `sum_j x_j w_j = d * sum_j x_j q_j + m * sum_j x_j`; the
//! block sums of `x` are computed once per row of `x`. For one to three rows of `x` (decoding one
//! stream) each weight block is converted once and used in registers; for more rows (N streams
//! decoded together) a weight row is dequantized once into a scratch row and dotted with every
//! row of `x`. Rows of `w` are split across threads. x86-64 gets AVX-512 or AVX2+FMA paths
//! chosen at run time; other targets run the portable loops (which LLVM vectorizes partly).

use rayon::prelude::*;

use super::{BLOCK, QuantMatrix, WeightFormat, dequantize_packed, raw_dots};

/// Rows of `x` from which a weight row is dequantized once and reused.
const DEQUANT_ROWS: usize = 4;

pub use sealong_shaders::host::{Isa, isa};

/// Threads the kernels split work across (rayon's pool).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `x` is `[m, k]` row-major, `w` is `[n, k]`; returns `y` `[m, n]`.
pub fn matmul_xwt(x: &[f32], m: usize, w: &QuantMatrix) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), m * k, "x must be [m, k]");
    let isa = isa();
    // Per x row, per block: the block sum (for the `m` term of Q4_1).
    let xsums: Vec<f32> = if w.format == WeightFormat::Q4_1 {
        x.chunks_exact(BLOCK).map(|c| c.iter().sum()).collect()
    } else {
        Vec::new()
    };
    let raw_xsums = if w.format.is_raw_block() && m < DEQUANT_ROWS {
        raw_dots::xsums(w.format, x)
    } else {
        Vec::new()
    };
    let nb = k / BLOCK;
    // Enough tasks to balance the threads, few enough to keep scheduling cheap.
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = n.div_ceil(threads * 4).max(8).next_multiple_of(4);
    // yt[r * m + i] = y[i, r]: each task owns a contiguous slab of output rows of w.
    let mut yt = vec![0.0f32; n * m];
    yt.par_chunks_mut(rows_per_task * m)
        .enumerate()
        .for_each(|(task, out)| {
            let r0 = task * rows_per_task;
            let n_rows = out.len() / m;
            // Half rows: widened in registers.
            if m < DEQUANT_ROWS && w.format.is_half() {
                for (dr, out_r) in out.chunks_exact_mut(m).enumerate() {
                    let qs = w.row(r0 + dr).1;
                    for (i, o) in out_r.iter_mut().enumerate() {
                        *o = raw_dots::dot_half(isa, w.format, qs, &x[i * k..(i + 1) * k]);
                    }
                }
                return;
            }
            // The raw-block formats (K-quants, Q5_0, Q5_1) have fused dots of their own.
            if m < DEQUANT_ROWS && w.format.is_raw_block() {
                // x sums per row of x (none for the formats without mins or offsets).
                let per_row = raw_xsums.len() / m;
                // Advanced only by the x86-64 kernel below.
                #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
                let mut dr0 = 0;
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512 && matches!(w.format, WeightFormat::Q5_0 | WeightFormat::Q5_1) {
                    // Q5_0/Q5_1 (the 5-bit fallback of K-quant files): four rows at a time.
                    let q5_1 = w.format == WeightFormat::Q5_1;
                    let rb = w.format.row_bytes(k);
                    while dr0 + 4 <= n_rows {
                        let r = r0 + dr0;
                        let qs = &w.qs[r * rb..(r + 4) * rb];
                        for i in 0..m {
                            let xs = &raw_xsums[i * per_row..(i + 1) * per_row];
                            // SAFETY: AVX-512 was detected; `qs` holds four whole rows, x one
                            // row and `xs` its block sums.
                            let y4 = unsafe { raw_dots::x86::dot4_q5(q5_1, qs, nb, &x[i * k..(i + 1) * k], xs) };
                            for (j, v) in y4.into_iter().enumerate() {
                                out[(dr0 + j) * m + i] = v;
                            }
                        }
                        dr0 += 4;
                    }
                }
                for (dr, out_r) in out.chunks_exact_mut(m).enumerate().skip(dr0) {
                    let qs = w.row(r0 + dr).1;
                    for (i, o) in out_r.iter_mut().enumerate() {
                        let xs = &raw_xsums[i * per_row..(i + 1) * per_row];
                        *o = raw_dots::dot_raw(isa, w.format, qs, &x[i * k..(i + 1) * k], xs);
                    }
                }
                return;
            }
            // More rows: a weight row is widened once and dotted with each.
            if m >= DEQUANT_ROWS || !w.format.is_block() {
                // Advanced only by the x86-64 kernels above the portable loop.
                #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
                let mut dr0 = 0;
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512 && m >= 2 {
                    // Four weight rows dequantized at a time, then 2 x-rows x 4 w-rows tiles.
                    let mut tile = vec![0.0f32; 4 * k];
                    while dr0 + 4 <= n_rows {
                        for j in 0..4 {
                            let (scales, qs) = w.row(r0 + dr0 + j);
                            dequantize_row(isa, w.format, scales, qs, &mut tile[j * k..(j + 1) * k]);
                        }
                        let mut i = 0;
                        while i + 2 <= m {
                            let mut d = [0.0f32; 8];
                            // SAFETY: AVX-512 was detected by `isa()`.
                            unsafe {
                                x86::dots_2x4_avx512(
                                    &x[i * k..(i + 1) * k],
                                    &x[(i + 1) * k..(i + 2) * k],
                                    &tile,
                                    k,
                                    &mut d,
                                )
                            };
                            for j in 0..4 {
                                out[(dr0 + j) * m + i] = d[j];
                                out[(dr0 + j) * m + i + 1] = d[4 + j];
                            }
                            i += 2;
                        }
                        if i < m {
                            for j in 0..4 {
                                out[(dr0 + j) * m + i] =
                                    dot_f32_with(isa, &x[i * k..(i + 1) * k], &tile[j * k..(j + 1) * k]);
                            }
                        }
                        dr0 += 4;
                    }
                }
                let mut scratch = vec![0.0f32; k];
                for (dr, out_r) in out.chunks_exact_mut(m).enumerate().skip(dr0) {
                    let (scales, qs) = w.row(r0 + dr);
                    dequantize_row(isa, w.format, scales, qs, &mut scratch);
                    for (i, o) in out_r.iter_mut().enumerate() {
                        *o = dot_f32_with(isa, &x[i * k..(i + 1) * k], &scratch);
                    }
                }
                return;
            }
            // Advanced only by the x86-64 kernels above the portable loop.
            #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
            let mut dr = 0;
            // One Q8_0 row at a time for a single x row: with a byte a weight, decode there waits
            // on memory, and one sequential stream is read faster than four rows' interleaved
            // blocks (AMD EPYC Zen 4, decode only: the Q8_0 file 102 -> 111 tok/s, BENCHMARKS.md).
            // The four-row kernel stays for the 4-bit formats (Q4_1: 76 against 68 tok/s) and for
            // two or three x rows, which reuse each weight block from L1.
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && !(m == 1 && w.format == WeightFormat::Q8_0) {
                let (ns, qb) = (w.format.scales_per_block(), w.format.quant_bytes_per_block());
                while dr + 4 <= n_rows {
                    let r = r0 + dr;
                    let scales = &w.scales[r * nb * ns..(r + 4) * nb * ns];
                    let qs = &w.qs[r * nb * qb..(r + 4) * nb * qb];
                    for i in 0..m {
                        let xs = if xsums.is_empty() {
                            &[][..]
                        } else {
                            &xsums[i * nb..(i + 1) * nb]
                        };
                        // SAFETY: AVX-512 was detected; the slices hold four whole rows and one x row.
                        let y4 = unsafe { x86::dot4_avx512(w.format, scales, qs, nb, &x[i * k..(i + 1) * k], xs) };
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
                    let xs = if xsums.is_empty() {
                        &[][..]
                    } else {
                        &xsums[i * nb..(i + 1) * nb]
                    };
                    out[dr * m + i] = dot_row(isa, w.format, scales, qs, &x[i * k..(i + 1) * k], xs);
                }
            }
        });
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

/// Dequantizes one repacked row into `out` with the same arithmetic as
/// [`dequantize_packed`] (a multiply, then an add: bit-identical values).
pub fn dequantize_row(isa: Isa, format: WeightFormat, scales: &[f32], qs: &[u8], out: &mut [f32]) {
    match isa {
        // SAFETY: `isa()` detected the features; `out` holds the row's blocks.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if format.is_block() && out.len() >= scales.len() / format.scales_per_block().max(1) * BLOCK => unsafe {
            x86::dequantize_avx512(format, scales, qs, out)
        },
        _ => dequantize_packed(format, scales, qs, out),
    }
}

/// The block matrices are frozen weights of the shaders' storage-format products (LoRA training
/// reads them there, forward and backward, without an f32 copy of the whole weight).
impl sealong_shaders::frozen::FrozenMatrix for QuantMatrix {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (scales, qs) = self.row(r);
        dequantize_row(isa(), self.format, scales, qs, &mut out[..self.cols]);
    }
    fn stored(&self) -> Option<sealong_shaders::stored::Stored<'_>> {
        use sealong_shaders::stored::Layout;
        let layout = match self.format {
            WeightFormat::F32 => return None,
            WeightFormat::F16 => Layout::F16,
            WeightFormat::BF16 => Layout::BF16,
            WeightFormat::Q8_0 => Layout::Q8_0,
            WeightFormat::Q4_0 => Layout::Q4_0,
            WeightFormat::Q4_1 => Layout::Q4_1,
            WeightFormat::Q5_0 => Layout::Q5_0,
            WeightFormat::Q5_1 => Layout::Q5_1,
            WeightFormat::Q2K => Layout::Q2K,
            WeightFormat::Q3K => Layout::Q3K,
            WeightFormat::Q4K => Layout::Q4K,
            WeightFormat::Q5K => Layout::Q5K,
            WeightFormat::Q6K => Layout::Q6K,
            WeightFormat::Q8K => Layout::Q8K,
        };
        Some(sealong_shaders::stored::Stored {
            layout,
            scales: &self.scales,
            qs: &self.qs,
            copies: &self.device_copies,
        })
    }
}

/// The whole matrix as f32 (row-major), dequantized with the fastest kernel, rows in parallel
/// (the shaders' frozen-matrix walk, through the `FrozenMatrix` impl above).
pub fn dequantize_matrix(w: &QuantMatrix) -> Vec<f32> {
    sealong_shaders::frozen::dequantize_all(w)
}

/// Dot product of two f32 slices of equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_with(isa(), a, b)
}

#[inline]
fn dot_f32_with(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    match isa {
        // SAFETY: `isa()` detected the features at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot_f32_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_f32_avx2(a, b) },
        Isa::Portable => dot_f32_portable(a, b),
    }
}

fn dot_f32_portable(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let LLVM vectorize and keep the FMA pipes busy.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// One repacked weight row against one x row (`xsums`: x's block sums, for Q4_1).
#[inline]
fn dot_row(isa: Isa, format: WeightFormat, scales: &[f32], qs: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
    let nb = scales.len() / format.scales_per_block().max(1);
    debug_assert!(x.len() >= nb * BLOCK && qs.len() >= nb * format.quant_bytes_per_block());
    match isa {
        // SAFETY: `isa()` detected the features at run time; the slices hold `nb` whole blocks
        // (checked by the debug assertion and by how `QuantMatrix::row` cuts them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            match format {
                WeightFormat::Q4_1 => x86::dot_q4_1_avx512(scales, qs, x, xsums),
                WeightFormat::Q4_0 => x86::dot_q4_0_avx512(scales, qs, x),
                WeightFormat::Q8_0 => x86::dot_q8_0_avx512(scales, qs, x),
                _ => f32::NAN,
            }
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            match format {
                WeightFormat::Q4_1 => x86::dot_q4_1_avx2(scales, qs, x, xsums),
                WeightFormat::Q4_0 => x86::dot_q4_0_avx2(scales, qs, x),
                WeightFormat::Q8_0 => x86::dot_q8_0_avx2(scales, qs, x),
                _ => f32::NAN,
            }
        },
        Isa::Portable => dot_row_portable(format, scales, qs, x, xsums),
    }
}

fn dot_row_portable(format: WeightFormat, scales: &[f32], qs: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
    let mut s = 0.0f32;
    match format {
        WeightFormat::Q4_1 => {
            for (bi, (q, sc)) in qs.chunks_exact(16).zip(scales.chunks_exact(2)).enumerate() {
                let xb = &x[bi * BLOCK..(bi + 1) * BLOCK];
                let mut acc = 0.0f32;
                for j in 0..16 {
                    acc += xb[j] * f32::from(q[j] & 15) + xb[j + 16] * f32::from(q[j] >> 4);
                }
                s += sc[0] * acc + sc[1] * xsums[bi];
            }
        }
        WeightFormat::Q4_0 => {
            for (bi, (q, &d)) in qs.chunks_exact(16).zip(scales).enumerate() {
                let xb = &x[bi * BLOCK..(bi + 1) * BLOCK];
                let mut acc = 0.0f32;
                for j in 0..16 {
                    acc +=
                        xb[j] * f32::from(i16::from(q[j] & 15) - 8) + xb[j + 16] * f32::from(i16::from(q[j] >> 4) - 8);
                }
                s += d * acc;
            }
        }
        WeightFormat::Q8_0 => {
            for (bi, (q, &d)) in qs.chunks_exact(32).zip(scales).enumerate() {
                let xb = &x[bi * BLOCK..(bi + 1) * BLOCK];
                let mut acc = 0.0f32;
                for j in 0..BLOCK {
                    acc += xb[j] * f32::from(q[j] as i8);
                }
                s += d * acc;
            }
        }
        _ => return f32::NAN,
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! SIMD kernels. Every function requires its target features (checked by the caller) and
    //! slices holding whole blocks.
    use std::arch::x86_64::*;

    use super::{BLOCK, WeightFormat};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load is within `0..n` of both slices.
        unsafe {
            while i + 32 <= n {
                for (l, acc_l) in acc.iter_mut().enumerate() {
                    *acc_l = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(i + 8 * l)),
                        _mm256_loadu_ps(pb.add(i + 8 * l)),
                        *acc_l,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
                i += 8;
            }
        }
        let mut s = hsum256(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dot_f32_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load is within `0..n` of both slices.
        unsafe {
            while i + 64 <= n {
                for (l, acc_l) in acc.iter_mut().enumerate() {
                    *acc_l = _mm512_fmadd_ps(
                        _mm512_loadu_ps(pa.add(i + 16 * l)),
                        _mm512_loadu_ps(pb.add(i + 16 * l)),
                        *acc_l,
                    );
                }
                i += 64;
            }
            while i + 16 <= n {
                acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc[0]);
                i += 16;
            }
        }
        let mut s = _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }

    /// Dot products of two activation rows with four weight rows (`w`: 4 rows of `k`) into
    /// `out[i * 4 + j]`: each 16-float step loads 2 + 4 vectors for 8 FMAs, where one dot at a
    /// time loads 2 per FMA (the load ports, not the FMA units, bounded the N-stream decode).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_2x4_avx512(x0: &[f32], x1: &[f32], w: &[f32], k: usize, out: &mut [f32; 8]) {
        assert!(x0.len() >= k && x1.len() >= k && w.len() >= 4 * k);
        let (p0, p1, pw) = (x0.as_ptr(), x1.as_ptr(), w.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut i = 0;
        // SAFETY: i + 16 <= k bounds every load by the assertion above.
        unsafe {
            while i + 16 <= k {
                let a0 = _mm512_loadu_ps(p0.add(i));
                let a1 = _mm512_loadu_ps(p1.add(i));
                for j in 0..4 {
                    let wj = _mm512_loadu_ps(pw.add(j * k + i));
                    acc[j] = _mm512_fmadd_ps(a0, wj, acc[j]);
                    acc[4 + j] = _mm512_fmadd_ps(a1, wj, acc[4 + j]);
                }
                i += 16;
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
        for t in i..k {
            for j in 0..4 {
                out[j] += x0[t] * w[j * k + t];
                out[4 + j] += x1[t] * w[j * k + t];
            }
        }
    }

    /// Low and high nibbles of 16 bytes as u8 vectors.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nibbles(p: *const u8) -> (__m128i, __m128i) {
        // SAFETY: the caller passes a pointer to 16 readable bytes.
        let bytes = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let mask = _mm_set1_epi8(15);
        (
            _mm_and_si128(bytes, mask),
            _mm_and_si128(_mm_srli_epi16(bytes, 4), mask),
        )
    }

    /// The 32 quant values of a Q4 block as 4 x 8 floats (`offset` subtracted).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_block_avx2(p: *const u8, offset: __m256) -> [__m256; 4] {
        // SAFETY: forwarded from the caller.
        let (lo, hi) = unsafe { nibbles(p) };
        let f = |v: __m128i| _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), offset);
        [f(lo), f(_mm_srli_si128(lo, 8)), f(hi), f(_mm_srli_si128(hi, 8))]
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_dot_avx2(x: *const f32, q: [__m256; 4]) -> __m256 {
        // SAFETY: the caller passes a pointer to 32 readable floats.
        unsafe {
            let a = _mm256_mul_ps(_mm256_loadu_ps(x), q[0]);
            let a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(8)), q[1], a);
            let a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(16)), q[2], a);
            _mm256_fmadd_ps(_mm256_loadu_ps(x.add(24)), q[3], a)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1_avx2(scales: &[f32], qs: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
        let nb = scales.len() / 2;
        let mut acc = _mm256_setzero_ps();
        let mut macc = 0.0f32;
        let zero = _mm256_setzero_ps();
        for b in 0..nb {
            // SAFETY: block b's 16 quant bytes and 32 floats of x are in bounds.
            let part =
                unsafe { block_dot_avx2(x.as_ptr().add(b * BLOCK), q4_block_avx2(qs.as_ptr().add(16 * b), zero)) };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[2 * b]), part, acc);
            macc += scales[2 * b + 1] * xsums[b];
        }
        hsum256(acc) + macc
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0_avx2(scales: &[f32], qs: &[u8], x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_ps(8.0);
        for (b, &d) in scales.iter().enumerate() {
            // SAFETY: block b's 16 quant bytes and 32 floats of x are in bounds.
            let part =
                unsafe { block_dot_avx2(x.as_ptr().add(b * BLOCK), q4_block_avx2(qs.as_ptr().add(16 * b), eight)) };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), part, acc);
        }
        hsum256(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0_avx2(scales: &[f32], qs: &[u8], x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, &d) in scales.iter().enumerate() {
            // SAFETY: block b's 32 quant bytes and 32 floats of x are in bounds.
            let part = unsafe {
                let p = qs.as_ptr().add(32 * b);
                let cvt =
                    |o: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(o) as *const __m128i)));
                block_dot_avx2(x.as_ptr().add(b * BLOCK), [cvt(0), cvt(8), cvt(16), cvt(24)])
            };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), part, acc);
        }
        hsum256(acc)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dequantize_avx512(format: WeightFormat, scales: &[f32], qs: &[u8], out: &mut [f32]) {
        let mask = _mm_set1_epi8(15);
        let o = out.as_mut_ptr();
        // SAFETY: the caller guarantees `out` holds every block of the row; block b reads 16 or
        // 32 quant bytes and writes 32 floats, all in bounds.
        unsafe {
            match format {
                WeightFormat::Q4_1 => {
                    for b in 0..scales.len() / 2 {
                        let bytes = _mm_loadu_si128(qs.as_ptr().add(16 * b) as *const __m128i);
                        let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
                        let hi =
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask)));
                        let (d, m) = (_mm512_set1_ps(scales[2 * b]), _mm512_set1_ps(scales[2 * b + 1]));
                        _mm512_storeu_ps(o.add(b * BLOCK), _mm512_add_ps(_mm512_mul_ps(d, lo), m));
                        _mm512_storeu_ps(o.add(b * BLOCK + 16), _mm512_add_ps(_mm512_mul_ps(d, hi), m));
                    }
                }
                WeightFormat::Q4_0 => {
                    let eight = _mm512_set1_ps(8.0);
                    for (b, &d) in scales.iter().enumerate() {
                        let bytes = _mm_loadu_si128(qs.as_ptr().add(16 * b) as *const __m128i);
                        let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
                        let hi =
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask)));
                        let d = _mm512_set1_ps(d);
                        _mm512_storeu_ps(o.add(b * BLOCK), _mm512_mul_ps(d, _mm512_sub_ps(lo, eight)));
                        _mm512_storeu_ps(o.add(b * BLOCK + 16), _mm512_mul_ps(d, _mm512_sub_ps(hi, eight)));
                    }
                }
                WeightFormat::Q8_0 => {
                    for (b, &d) in scales.iter().enumerate() {
                        let p = qs.as_ptr().add(32 * b);
                        let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)));
                        let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i)));
                        let d = _mm512_set1_ps(d);
                        _mm512_storeu_ps(o.add(b * BLOCK), _mm512_mul_ps(d, lo));
                        _mm512_storeu_ps(o.add(b * BLOCK + 16), _mm512_mul_ps(d, hi));
                    }
                }
                _ => {}
            }
        }
    }

    /// sum over one block: x[0..16] . q_lo + x[16..32] . q_hi, 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn block_dot_avx512(x: *const f32, lo: __m512, hi: __m512) -> __m512 {
        // SAFETY: the caller passes a pointer to 32 readable floats.
        unsafe { _mm512_fmadd_ps(_mm512_loadu_ps(x.add(16)), hi, _mm512_mul_ps(_mm512_loadu_ps(x), lo)) }
    }

    /// Sums each of four 16-lane vectors: `[sum(a), sum(b), sum(c), sum(d)]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn reduce4(v: [__m512; 4]) -> [f32; 4] {
        [
            _mm512_reduce_add_ps(v[0]),
            _mm512_reduce_add_ps(v[1]),
            _mm512_reduce_add_ps(v[2]),
            _mm512_reduce_add_ps(v[3]),
        ]
    }

    /// Four consecutive weight rows against one x row: x is loaded once per block, and the four
    /// independent accumulation chains keep the FMA units busy (a single short row is
    /// latency-bound).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dot4_avx512(
        format: WeightFormat,
        scales: &[f32],
        qs: &[u8],
        nb: usize,
        x: &[f32],
        xsums: &[f32],
    ) -> [f32; 4] {
        let mask = _mm_set1_epi8(15);
        let eight = _mm512_set1_ps(8.0);
        let (ns, qb) = (format.scales_per_block(), format.quant_bytes_per_block());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut macc = [0.0f32; 4];
        // SAFETY: the caller passes four rows of `nb` blocks each (scales and quants) and an x
        // row of `nb` blocks; every access below stays within them.
        unsafe {
            for b in 0..nb {
                let xp = x.as_ptr().add(b * BLOCK);
                let x_lo = _mm512_loadu_ps(xp);
                let x_hi = _mm512_loadu_ps(xp.add(16));
                for r in 0..4 {
                    let blk = r * nb + b;
                    let p = qs.as_ptr().add(qb * blk);
                    crate::quant::raw_dots::x86::prefetch_ahead(p, 1);
                    let (lo, hi) = match format {
                        WeightFormat::Q8_0 => (
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i))),
                        ),
                        _ => {
                            let bytes = _mm_loadu_si128(p as *const __m128i);
                            let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
                            let hi =
                                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask)));
                            if format == WeightFormat::Q4_0 {
                                (_mm512_sub_ps(lo, eight), _mm512_sub_ps(hi, eight))
                            } else {
                                (lo, hi)
                            }
                        }
                    };
                    let part = _mm512_fmadd_ps(x_hi, hi, _mm512_mul_ps(x_lo, lo));
                    let d = *scales.get_unchecked(ns * blk);
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d), part, acc[r]);
                    if ns == 2 {
                        macc[r] += *scales.get_unchecked(ns * blk + 1) * *xsums.get_unchecked(b);
                    }
                }
            }
        }
        let s = reduce4(acc);
        [s[0] + macc[0], s[1] + macc[1], s[2] + macc[2], s[3] + macc[3]]
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dot_q4_1_avx512(scales: &[f32], qs: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
        let nb = scales.len() / 2;
        // Two accumulators alternate between blocks so consecutive FMAs do not wait on each other.
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut macc = 0.0f32;
        let mask = _mm_set1_epi8(15);
        for b in 0..nb {
            // SAFETY: block b's 16 quant bytes and 32 floats of x are in bounds.
            let part = unsafe {
                let bytes = _mm_loadu_si128(qs.as_ptr().add(16 * b) as *const __m128i);
                let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
                let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask)));
                block_dot_avx512(x.as_ptr().add(b * BLOCK), lo, hi)
            };
            acc[b & 1] = _mm512_fmadd_ps(_mm512_set1_ps(scales[2 * b]), part, acc[b & 1]);
            macc += scales[2 * b + 1] * xsums[b];
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + macc
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dot_q4_0_avx512(scales: &[f32], qs: &[u8], x: &[f32]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 2];
        let mask = _mm_set1_epi8(15);
        let eight = _mm512_set1_ps(8.0);
        for (b, &d) in scales.iter().enumerate() {
            // SAFETY: block b's 16 quant bytes and 32 floats of x are in bounds.
            let part = unsafe {
                let bytes = _mm_loadu_si128(qs.as_ptr().add(16 * b) as *const __m128i);
                let lo = _mm512_sub_ps(
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask))),
                    eight,
                );
                let hi = _mm512_sub_ps(
                    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask))),
                    eight,
                );
                block_dot_avx512(x.as_ptr().add(b * BLOCK), lo, hi)
            };
            acc[b & 1] = _mm512_fmadd_ps(_mm512_set1_ps(d), part, acc[b & 1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dot_q8_0_avx512(scales: &[f32], qs: &[u8], x: &[f32]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 2];
        for (b, &d) in scales.iter().enumerate() {
            // SAFETY: block b's 32 quant bytes and 32 floats of x are in bounds.
            let part = unsafe {
                let p = qs.as_ptr().add(32 * b);
                let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)));
                let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i)));
                block_dot_avx512(x.as_ptr().add(b * BLOCK), lo, hi)
            };
            acc[b & 1] = _mm512_fmadd_ps(_mm512_set1_ps(d), part, acc[b & 1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use half::f16;
    use rand::{RngExt, SeedableRng};

    pub(crate) fn random_matrix(format: WeightFormat, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut data = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            data.extend(f16::from_f32(r.random_range(0.001..0.1)).to_le_bytes());
            if format == WeightFormat::Q4_1 {
                data.extend(f16::from_f32(r.random_range(-0.5..0.0)).to_le_bytes());
            }
            let nq = if format == WeightFormat::Q8_0 { 32 } else { 16 };
            data.extend((0..nq).map(|_| r.random::<u8>()));
        }
        QuantMatrix::from_gguf_bytes(format, rows, cols, &data).expect("matrix")
    }

    /// Every instruction set this CPU has (the kernel tests run each).
    pub(crate) fn isas() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    /// Every instruction set this CPU has, against an f64 product of the dequantized weights.
    #[test]
    fn kernels_equal_dequantized_f64_products() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let isas = isas();
        for format in [WeightFormat::Q4_1, WeightFormat::Q4_0, WeightFormat::Q8_0] {
            let (n, k) = (37, 96);
            let w = random_matrix(format, n, k, 2);
            let dense = w.to_f32();
            let x: Vec<f32> = (0..k).map(|_| r.random_range(-2.0..2.0)).collect();
            let xs: Vec<f32> = x.chunks_exact(BLOCK).map(|c| c.iter().sum()).collect();
            for &isa in &isas {
                for j in 0..n {
                    let exact: f64 = (0..k).map(|t| f64::from(x[t]) * f64::from(dense[j * k + t])).sum();
                    let (sc, q) = w.row(j);
                    let got = f64::from(dot_row(isa, format, sc, q, &x, &xs));
                    assert!(
                        (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                        "{isa:?} {format:?}: {got} vs {exact}"
                    );
                    let got = f64::from(dot_f32_with(isa, &x, &dense[j * k..(j + 1) * k]));
                    assert!(
                        (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                        "{isa:?} f32 dot: {got} vs {exact}"
                    );
                }
            }
            for &isa in &isas {
                for j in 0..n {
                    let (sc, q) = w.row(j);
                    let mut row = vec![0.0; k];
                    dequantize_row(isa, format, sc, q, &mut row);
                    assert_eq!(
                        row,
                        dense[j * k..(j + 1) * k],
                        "{isa:?} {format:?} dequantize must be bit-identical"
                    );
                }
            }
            assert_eq!(dequantize_matrix(&w), dense);
            for m in [1, 3, 4, 5, 8] {
                let x: Vec<f32> = (0..m * k).map(|_| r.random_range(-2.0..2.0)).collect();
                let y = matmul_xwt(&x, m, &w);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k)
                            .map(|t| f64::from(x[i * k + t]) * f64::from(dense[j * k + t]))
                            .sum();
                        let got = f64::from(y[i * n + j]);
                        assert!(
                            (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                            "{format:?} m={m}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}
