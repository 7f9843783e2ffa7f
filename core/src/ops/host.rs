//! The decoder's operations on plain host slices, for the CPU engine
//! ([`crate::models::decoder::cpu`]). Each has a twin in burn ops in `nn/` (rms_norm, rope,
//! attention, SwiGLU, linear) that runs on every backend; the tests compare the engines.
//!
//! Matrices are row-major `f32`. Products with weights go through [`HostMatrix::matmul`]:
//! quantized weights through the kernels of `quant`, dense ones through the `gemm` crate.

use std::sync::Arc;

use rayon::prelude::*;

use crate::nn::linear::Precision;
use crate::ops::vector;
use crate::quant::{QuantMatrix, int8, kernels, storage};

/// Activation rows up to which a weight row is streamed once per row of x by the dot kernels;
/// above it, the weight is dequantized and a GEMM runs (exact precision).
const DOT_KERNEL_MAX_ROWS: usize = 16;

/// A `[rows, cols]` weight on the host.
#[derive(Debug, Clone)]
pub enum HostMatrix {
    Quant(Arc<QuantMatrix>),
    Dense {
        data: Arc<[f32]>,
        rows: usize,
        cols: usize,
    },
    /// Matrices of one width stacked along the rows, each kept in its own format: a fused
    /// projection whose parts a GGUF stores in different types (Q4_K_M keeps q and k in Q4_K and
    /// v in Q6_K), so none of them is widened to f32.
    Parts(Vec<HostMatrix>),
}

impl HostMatrix {
    pub fn rows(&self) -> usize {
        match self {
            HostMatrix::Quant(q) => q.rows,
            HostMatrix::Dense { rows, .. } => *rows,
            HostMatrix::Parts(p) => p.iter().map(HostMatrix::rows).sum(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            HostMatrix::Quant(q) => q.cols,
            HostMatrix::Dense { cols, .. } => *cols,
            HostMatrix::Parts(p) => p.first().map_or(0, HostMatrix::cols),
        }
    }

    /// `y = x W^T`: `x` is `[m, cols]`, `y` is `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize, precision: Precision) -> Vec<f32> {
        self.matmul_sharing(x, m, precision, &mut None)
    }

    /// [`Self::matmul`], with `x` quantized (int8 precision) at most once for all parts.
    fn matmul_sharing(
        &self,
        x: &[f32],
        m: usize,
        precision: Precision,
        qx: &mut Option<int8::QuantizedActs>,
    ) -> Vec<f32> {
        match self {
            HostMatrix::Quant(q) => match precision {
                // Formats without int8 kernels here (half precision, some K-quants) run exact;
                // `int8::covers` says which (row kernels for a few rows, a tiled GEMM for more).
                Precision::Int8 if int8::covers(q.format, m) => {
                    int8::matmul(qx.get_or_insert_with(|| int8::quantize_acts(x, m, q.cols)), q)
                }
                _ if m <= DOT_KERNEL_MAX_ROWS => kernels::matmul_xwt(x, m, q),
                _ => gemm_xwt(x, m, &kernels::dequantize_matrix(q), q.rows, q.cols),
            },
            HostMatrix::Dense { data, rows, cols } => gemm_xwt(x, m, data, *rows, *cols),
            HostMatrix::Parts(parts) => {
                // Each part's product, placed at its column offset of y.
                let n = self.rows();
                let mut y = vec![0.0f32; m * n];
                let mut c0 = 0;
                for part in parts {
                    let np = part.rows();
                    let yp = part.matmul_sharing(x, m, precision, qx);
                    for (dst, src) in y.chunks_exact_mut(n).zip(yp.chunks_exact(np.max(1))) {
                        dst[c0..c0 + np].copy_from_slice(src);
                    }
                    c0 += np;
                }
                y
            }
        }
    }

    /// The quantized matrices this holds that nothing else shares, for [`pack`].
    fn quant_mut<'a>(&'a mut self, out: &mut Vec<&'a mut QuantMatrix>) {
        match self {
            HostMatrix::Quant(q) => out.extend(Arc::get_mut(q)),
            HostMatrix::Dense { .. } => {}
            HostMatrix::Parts(parts) => parts.iter_mut().for_each(|p| p.quant_mut(out)),
        }
    }

    /// Row `r` as f32 (embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        match self {
            HostMatrix::Quant(q) => q.dequantize_row(r, out),
            HostMatrix::Dense { data, cols, .. } => out.copy_from_slice(&data[r * cols..(r + 1) * cols]),
            HostMatrix::Parts(parts) => {
                let mut r = r;
                for part in parts {
                    if r < part.rows() {
                        return part.row_f32(r, out);
                    }
                    r -= part.rows();
                }
            }
        }
    }
}

/// Moves the quantized weights of `mats` into one region on 2 MiB pages, in the order given
/// (the order a decode step reads them): see [`crate::quant::storage`].
pub fn pack(mats: &mut [&mut HostMatrix]) {
    let mut quants = Vec::new();
    for m in mats.iter_mut() {
        m.quant_mut(&mut quants);
    }
    storage::pack(&mut quants);
}

/// `y = x W^T` with dense `w` (`[n, k]`), through `gemm` (parallel when large).
pub fn gemm_xwt(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    gemm_raw(m, n, k, &mut y, n, x, k, false, w, k, true);
    y
}

/// `dst[m, n] = a[m, k] b[k, n]` where `a` has row stride `lda`; `b` is given either as
/// `[k, n]` with row stride `ldb` or, with `b_transposed`, as `[n, k]` with row stride `ldb`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ldd: usize,
    a: &[f32],
    lda: usize,
    _a_transposed: bool,
    b: &[f32],
    ldb: usize,
    b_transposed: bool,
) {
    use sealong_shaders::host::{Operand, gemm};
    let b = if b_transposed {
        Operand::transposed(b, ldb)
    } else {
        Operand::rows(b, ldb)
    };
    gemm((m, n, k), dst, ldd, false, Operand::rows(a, lda), b, 1.0, true);
}

/// RMSNorm of each row of `x` (`[rows, d]`), in place of a copy: HF's
/// `w * (x * rsqrt(mean(x^2) + eps))`.
pub fn rms_norm_rows(x: &[f32], d: usize, weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = kernels::dot_f32(r, r) / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(r).zip(weight) {
            *o = w * (v * inv);
        }
    }
    out
}

/// Rotate-half RoPE on one head vector at the table row `cos`/`sin` (`hd` values each,
/// `sin_signed` with the first half negated, see `nn::rope`).
#[inline]
pub fn rope_head(x: &mut [f32], cos: &[f32], sin_signed: &[f32]) {
    let half = x.len() / 2;
    let mut rotated = [0.0f32; 512];
    let rot = &mut rotated[..x.len()];
    rot[..half].copy_from_slice(&x[half..]);
    rot[half..].copy_from_slice(&x[..half]);
    for i in 0..x.len() {
        x[i] = x[i] * cos[i] + rot[i] * sin_signed[i];
    }
}

/// `silu(gate) * up` for rows laid out `[gate (i) | up (i)]`; returns `[rows, i]`.
pub fn swiglu_rows(gate_up: &[f32], i: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; gate_up.len() / 2];
    out.par_chunks_mut(i.max(1) * 16)
        .zip(gate_up.par_chunks(2 * i.max(1) * 16))
        .for_each(|(o, gu)| {
            for (o, r) in o.chunks_exact_mut(i).zip(gu.chunks_exact(2 * i)) {
                let (g, u) = r.split_at(i);
                vector::swiglu(g, u, o);
            }
        });
    out
}

/// Softmax of each row in place (max-subtracted; `-inf` entries become 0).
pub fn softmax_rows(x: &mut [f32], cols: usize) {
    x.par_chunks_mut(cols.max(1)).with_min_len(8).for_each(|row| {
        let (_, sum) = vector::exp_shift_row(row);
        if sum > 0.0 {
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    });
}

/// LayerNorm of each row of `x` (`[rows, d]`) in place: `(x - mean) / sqrt(var + eps) * w + b`
/// with the biased variance, as torch computes it.
pub fn layer_norm_rows(x: &mut [f32], d: usize, weight: &[f32], bias: &[f32], eps: f32) {
    x.par_chunks_mut(d * 64).for_each(|block| {
        for row in block.chunks_exact_mut(d) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    });
}

/// Adds `bias` (`[d]`) to every row of `x` (`[rows, d]`).
pub fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// `erf(x)` to about 1e-7 absolute (Abramowitz & Stegun 7.1.26 evaluated in f64): the exact
/// GELU of BERT needs it and Rust's std has no stable `erf`.
pub fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

/// Activation functions of encoder feed-forward layers, in place.
pub fn activation_rows(x: &mut [f32], act: &str) {
    x.par_chunks_mut(4096).for_each(|block| match act {
        // HF "gelu": the exact form 0.5 x (1 + erf(x / sqrt 2)).
        "gelu" => block
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2))),
        // "gelu_new" / "gelu_pytorch_tanh": the tanh approximation.
        "gelu_new" | "gelu_pytorch_tanh" => block.iter_mut().for_each(|v| {
            let x = *v;
            *v = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
        }),
        _ => block.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::gemm_xwt;
    use crate::quant::int8::gemm::tests::random_matrix;
    use crate::quant::int8::{gemm, has_vnni, quantize_acts, row_matmul, supports};
    use crate::quant::{WeightFormat, kernels};

    /// GFLOP/s of a prompt's products at SmolLM2's shapes: the int8 GEMM (activation
    /// quantization included) against the exact path's dequantize + f32 GEMM and the int8 row
    /// kernels (a development aid: `cargo test --workspace --lib --locked -- --ignored
    /// int8_gemm_speed --nocapture`, with `RAYON_NUM_THREADS` as wanted). It lives here, not in
    /// `quant`, because the f32 GEMM is an `ops` function and `quant` sits below `ops`.
    #[test]
    #[ignore]
    fn int8_gemm_speed() {
        if !has_vnni() {
            return;
        }
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let m = 1024;
        for (format, n, k) in [
            (WeightFormat::Q5_0, 1536, 576),
            (WeightFormat::Q5_1, 576, 576),
            (WeightFormat::Q4K, 576, 1536),
            (WeightFormat::Q6K, 576, 1536),
            (WeightFormat::Q8_0, 1536, 576),
        ] {
            let w = random_matrix(format, n, k, &mut r);
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let flops = 2.0 * (m * n * k) as f64;
            let mut best = [f64::MAX; 3];
            let mut sink = 0.0f32;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                sink += gemm::matmul(&quantize_acts(&x, m, k), &w)[7];
                best[0] = best[0].min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                sink += gemm_xwt(&x, m, &kernels::dequantize_matrix(&w), n, k)[7];
                best[1] = best[1].min(t.elapsed().as_secs_f64());
                if supports(format) {
                    let t = std::time::Instant::now();
                    let mut qx = quantize_acts(&x, m, k);
                    // More rows than decoding has: the K-quant row kernels' super-block rounding too.
                    if k.is_multiple_of(256) {
                        qx.supers = Some(crate::quant::int8::supers::quantize(&x, m, k));
                    }
                    sink += row_matmul(&qx, &w)[7];
                    best[2] = best[2].min(t.elapsed().as_secs_f64());
                }
            }
            let g = |t: f64| flops / t / 1e9;
            println!(
                "{format:?} [{m} x {k}] x [{n} x {k}]^T: int8 GEMM {:.0} GFLOP/s, f32 dequantize + GEMM {:.0}, int8 row kernels {:.0} ({sink})",
                g(best[0]),
                g(best[1]),
                g(best[2])
            );
        }
    }
}
