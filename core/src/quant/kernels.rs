//! CPU matrix products with weights kept in their storage format: `y[i, r] = sum_k x[i, k] *
//! w[r, k]` with `x` in f32. Activations stay f32 (no activation quantization as llama.cpp
//! does), so the result equals the dequantized-f32 product up to f32 rounding, which is what
//! logits parity with transformers needs.
//!
//! For a block `w_j = d * q_j + m`: `sum_j x_j w_j = d * sum_j x_j q_j + m * sum_j x_j`; the
//! block sums of `x` are computed once per row of `x`. Rows of `w` are split across threads.
//! x86-64 with AVX2+FMA gets a SIMD path chosen at run time; everything else runs the portable
//! loop (which LLVM vectorizes partly).

use rayon::prelude::*;

use super::{BLOCK, QuantMatrix, WeightFormat, dequantize, f16_at};

/// Rows of `w` handled per parallel task (keeps task overhead small against the work).
const ROWS_PER_TASK: usize = 16;

/// `x` is `[m, k]` row-major, `w` is `[n, k]`; returns `y` `[m, n]`.
pub fn matmul_xwt(x: &[f32], m: usize, w: &QuantMatrix) -> Vec<f32> {
    let k = w.cols;
    let n = w.rows;
    assert_eq!(x.len(), m * k, "x must be [m, k]");
    let mut y = vec![0.0f32; m * n];
    // Per x row, per block: the block sum (for the `m` term of Q4_1).
    let xsums: Vec<f32> = if w.format == WeightFormat::Q4_1 {
        x.chunks_exact(BLOCK).map(|c| c.iter().sum()).collect()
    } else {
        Vec::new()
    };
    // yt[r * m + i] = y[i, r]: each task owns a contiguous slab of output rows of w.
    let mut yt = vec![0.0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let r0 = task * ROWS_PER_TASK;
            let mut scratch = vec![0.0f32; k];
            for (dr, out_r) in out.chunks_exact_mut(m).enumerate() {
                let r = r0 + dr;
                let row = w.row(r);
                if m >= 4 || !w.format.is_block() {
                    // Several x rows share one dequantized weight row.
                    dequantize(w.format, row, &mut scratch);
                    for (i, o) in out_r.iter_mut().enumerate() {
                        *o = dot_f32(&x[i * k..(i + 1) * k], &scratch);
                    }
                } else {
                    for (i, o) in out_r.iter_mut().enumerate() {
                        let xs = if xsums.is_empty() {
                            &[][..]
                        } else {
                            &xsums[i * k / BLOCK..(i + 1) * k / BLOCK]
                        };
                        *o = dot_block_row(w.format, row, &x[i * k..(i + 1) * k], xs);
                    }
                }
            }
        });
    for r in 0..n {
        for i in 0..m {
            y[i * n + r] = yt[r * m + i];
        }
    }
    y
}

/// Dot product of two f32 slices of equal length.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the features were detected at run time.
            return unsafe { x86::dot_f32(a, b) };
        }
    }
    dot_f32_portable(a, b)
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

/// One weight row in a block format against one x row (`xsums`: x's block sums, for Q4_1).
fn dot_block_row(format: WeightFormat, row: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the features were detected at run time.
            return unsafe {
                match format {
                    WeightFormat::Q4_1 => x86::dot_q4_1(row, x, xsums),
                    WeightFormat::Q4_0 => x86::dot_q4_0(row, x),
                    WeightFormat::Q8_0 => x86::dot_q8_0(row, x),
                    _ => unreachable_format(),
                }
            };
        }
    }
    match format {
        WeightFormat::Q4_1 => {
            let mut s = 0.0f32;
            for (bi, b) in row.chunks_exact(20).enumerate() {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let xb = &x[bi * BLOCK..(bi + 1) * BLOCK];
                let mut acc = 0.0f32;
                for j in 0..16 {
                    acc += xb[j] * f32::from(b[4 + j] & 15) + xb[j + 16] * f32::from(b[4 + j] >> 4);
                }
                s += d * acc + m * xsums[bi];
            }
            s
        }
        WeightFormat::Q4_0 => {
            let mut s = 0.0f32;
            for (bi, b) in row.chunks_exact(18).enumerate() {
                let d = f16_at(b, 0);
                let xb = &x[bi * BLOCK..(bi + 1) * BLOCK];
                let mut acc = 0.0f32;
                for j in 0..16 {
                    acc += xb[j] * f32::from(i16::from(b[2 + j] & 15) - 8)
                        + xb[j + 16] * f32::from(i16::from(b[2 + j] >> 4) - 8);
                }
                s += d * acc;
            }
            s
        }
        WeightFormat::Q8_0 => {
            let mut s = 0.0f32;
            for (bi, b) in row.chunks_exact(34).enumerate() {
                let d = f16_at(b, 0);
                let xb = &x[bi * BLOCK..(bi + 1) * BLOCK];
                let mut acc = 0.0f32;
                for j in 0..BLOCK {
                    acc += xb[j] * f32::from(b[2 + j] as i8);
                }
                s += d * acc;
            }
            s
        }
        _ => unreachable_format(),
    }
}

#[cold]
fn unreachable_format() -> f32 {
    // Callers dispatch only block formats here; returning NaN makes a misuse visible in
    // results instead of panicking inside a worker thread.
    f32::NAN
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::{BLOCK, f16_at};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        unsafe {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (l, acc_l) in acc.iter_mut().enumerate() {
                    let va = _mm256_loadu_ps(pa.add(i + 8 * l));
                    let vb = _mm256_loadu_ps(pb.add(i + 8 * l));
                    *acc_l = _mm256_fmadd_ps(va, vb, *acc_l);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
                i += 8;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut s = hsum(v);
            while i < n {
                s += a[i] * b[i];
                i += 1;
            }
            s
        }
    }

    /// 16 nibble-packed bytes -> (low nibbles as 16 f32 in two vectors, high nibbles likewise).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nibbles(p: *const u8) -> [__m256; 4] {
        unsafe {
            let bytes = _mm_loadu_si128(p as *const __m128i);
            let mask = _mm_set1_epi8(15);
            let lo = _mm_and_si128(bytes, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
            [
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
            ]
        }
    }

    /// sum_j x_j * q_j over one block, q given as 4 vectors (j 0-7, 8-15, 16-23, 24-31).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_dot(x: *const f32, q: [__m256; 4]) -> __m256 {
        unsafe {
            let a = _mm256_mul_ps(_mm256_loadu_ps(x), q[0]);
            let a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(8)), q[1], a);
            let a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(16)), q[2], a);
            _mm256_fmadd_ps(_mm256_loadu_ps(x.add(24)), q[3], a)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[f32], xsums: &[f32]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            let mut macc = 0.0f32;
            for (bi, b) in row.chunks_exact(20).enumerate() {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let q = nibbles(b.as_ptr().add(4));
                let part = block_dot(x.as_ptr().add(bi * BLOCK), q);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), part, acc);
                macc += m * xsums[bi];
            }
            hsum(acc) + macc
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            let eight = _mm256_set1_ps(8.0);
            for (bi, b) in row.chunks_exact(18).enumerate() {
                let d = f16_at(b, 0);
                let [q0, q1, q2, q3] = nibbles(b.as_ptr().add(2));
                let q = [
                    _mm256_sub_ps(q0, eight),
                    _mm256_sub_ps(q1, eight),
                    _mm256_sub_ps(q2, eight),
                    _mm256_sub_ps(q3, eight),
                ];
                let part = block_dot(x.as_ptr().add(bi * BLOCK), q);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), part, acc);
            }
            hsum(acc)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (bi, b) in row.chunks_exact(34).enumerate() {
                let d = f16_at(b, 0);
                let p = b.as_ptr().add(2);
                let q = [
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))),
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i))),
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(16) as *const __m128i))),
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(24) as *const __m128i))),
                ];
                let part = block_dot(x.as_ptr().add(bi * BLOCK), q);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), part, acc);
            }
            hsum(acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use rand::{RngExt, SeedableRng};

    fn random_matrix(format: WeightFormat, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut data = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            match format {
                WeightFormat::Q4_1 => {
                    data.extend(f16::from_f32(r.random_range(0.001..0.1)).to_le_bytes());
                    data.extend(f16::from_f32(r.random_range(-0.5..0.0)).to_le_bytes());
                    data.extend((0..16).map(|_| r.random::<u8>()));
                }
                WeightFormat::Q4_0 => {
                    data.extend(f16::from_f32(r.random_range(0.001..0.1)).to_le_bytes());
                    data.extend((0..16).map(|_| r.random::<u8>()));
                }
                WeightFormat::Q8_0 => {
                    data.extend(f16::from_f32(r.random_range(0.001..0.1)).to_le_bytes());
                    data.extend((0..32).map(|_| r.random::<u8>()));
                }
                _ => unreachable!(),
            }
        }
        QuantMatrix::new(format, rows, cols, data.into()).expect("matrix")
    }

    #[test]
    fn kernels_equal_dequantized_f64_products() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for format in [WeightFormat::Q4_1, WeightFormat::Q4_0, WeightFormat::Q8_0] {
            let (n, k) = (37, 96);
            let w = random_matrix(format, n, k, 2);
            let dense = w.to_f32();
            for m in [1, 3, 8] {
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
