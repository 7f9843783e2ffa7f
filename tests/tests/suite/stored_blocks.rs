//! Weights kept in their storage format on a cubecl (wgpu) device (`sealong_shaders::stored`;
//! Mesa lavapipe where there is no GPU), against the host and gguf-py:
//! - the device's dequantization of real blocks llama.cpp wrote equals gguf-py's values (the
//!   golden of `quant_golden.rs`), and for the layouts without such blocks (f16, bf16, Q4_1,
//!   Q8_K) the host's exact dequantization;
//! - products with 1 to 8 activation rows (the fused `xwt` kernel), with more (a block of rows
//!   dequantized, then the backend's matmul) and the backward `dy W`, for every layout, against
//!   f64 sums;
//! - a matrix larger than one dequantized block of rows, forward and backward.
//!
//! Tolerances: a dequantized weight within 1e-6 of its row's largest |w| (a device may contract
//! `d·q − m` into one rounding, a difference of an ulp; any wrong bit of a quant or scale moves a
//! weight by at least a quantization step, thousands of times that; lavapipe gives every value
//! bit for bit); a product within 1e-5 of the sum of |terms| (f32 sums in another order).

use burn::tensor::{Device, Tensor, TensorData};
use sealong::quant::{QuantMatrix, WeightFormat};
use sealong_shaders::frozen::{Frozen, frozen_linear};
use sealong_tests::SplitMix;

const DEQUANT_TOL: f32 = 1e-6;
const PRODUCT_TOL: f64 = 1e-5;

/// Every layout the device kernels read.
const FORMATS: [WeightFormat; 13] = [
    WeightFormat::F16,
    WeightFormat::BF16,
    WeightFormat::Q8_0,
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q5_0,
    WeightFormat::Q5_1,
    WeightFormat::Q2K,
    WeightFormat::Q3K,
    WeightFormat::Q4K,
    WeightFormat::Q5K,
    WeightFormat::Q6K,
    WeightFormat::Q8K,
];

/// A random `[rows, cols]` matrix of `format` from GGUF bytes: any bit pattern is a valid block;
/// the f16 (Q8_K: f32) scales are set to small finite values so products stay in range.
fn random_matrix(format: WeightFormat, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
    let mut r = SplitMix(seed);
    let mut bytes: Vec<u8> = (0..rows * format.row_bytes(cols)).map(|_| r.next_u64() as u8).collect();
    let scale = |r: &mut SplitMix| half::f16::from_f32(0.05 * r.sym()).to_le_bytes();
    if format.is_half() {
        for v in bytes.chunks_exact_mut(2) {
            let x = r.sym();
            v.copy_from_slice(&match format {
                WeightFormat::F16 => half::f16::from_f32(x).to_le_bytes(),
                _ => half::bf16::from_f32(x).to_le_bytes(),
            });
        }
    } else {
        let half_at: &[usize] = match format {
            WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q5_0 => &[0],
            WeightFormat::Q4_1 | WeightFormat::Q5_1 | WeightFormat::Q4K | WeightFormat::Q5K => &[0, 2],
            WeightFormat::Q2K => &[80, 82],
            WeightFormat::Q3K => &[108],
            WeightFormat::Q6K => &[208],
            _ => &[],
        };
        for b in bytes.chunks_exact_mut(format.row_bytes(format.block_weights())) {
            for &o in half_at {
                b[o..o + 2].copy_from_slice(&scale(&mut r));
            }
            if format == WeightFormat::Q8K {
                b[..4].copy_from_slice(&(0.001 + 0.01 * r.sym().abs()).to_le_bytes());
            }
        }
    }
    QuantMatrix::from_gguf_bytes(format, rows, cols, &bytes).expect("matrix")
}

fn tensor(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 values")
}

/// The matrix dequantized on `device` through the product path: `I Wᵀ` with `I` the
/// `[cols, cols]` identity (every sum is one weight times 1 and zeros), transposed back.
fn dequantized_on(w: &QuantMatrix, device: &Device) -> Vec<f32> {
    let k = w.cols;
    let mut eye = vec![0.0f32; k * k];
    for i in 0..k {
        eye[i * k + i] = 1.0;
    }
    let wt = values(frozen_linear(
        tensor(eye, [k, k], device),
        &Frozen(std::sync::Arc::new(w.clone())),
    ));
    (0..w.rows * k).map(|i| wt[(i % k) * w.rows + i / k]).collect()
}

/// Each value within [`DEQUANT_TOL`] of its row's largest |w|.
fn assert_dequantized(got: &[f32], want: &[f32], cols: usize, what: &str) -> f32 {
    let mut worst = 0.0f32;
    for (r, (g, w)) in got.chunks_exact(cols).zip(want.chunks_exact(cols)).enumerate() {
        let top = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            let d = (a - b).abs();
            assert!(d <= DEQUANT_TOL * top, "{what}: row {r} col {j}: device {a} vs {b}");
            worst = worst.max(d / top.max(f32::MIN_POSITIVE));
        }
    }
    worst
}

#[test]
fn device_dequantizes_real_blocks_as_gguf_py_does() {
    let device = sealong_tests::wgpu_device();
    let manifest = sealong_tests::golden_json("kquants/kquants.json");
    let bytes = std::fs::read(sealong_tests::golden_dir().join("kquants/kquants.safetensors")).expect("golden");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut worst = 0.0f32;
    for case in manifest["cases"].as_array().expect("cases") {
        let key = sealong_tests::s(case, "key");
        let ty = sealong_tests::s(case, "type");
        let (rows, cols) = (
            case["rows"].as_u64().expect("rows") as usize,
            case["cols"].as_u64().expect("cols") as usize,
        );
        let format = crate::quant_golden::format_of(ty);
        let raw = st.tensor(&format!("{key}.bytes")).expect("bytes").data().to_vec();
        let want = sealong_tests::tensor_f32(&st, &format!("{key}.values")).1;
        let w = QuantMatrix::from_gguf_bytes(format, rows, cols, &raw).expect("matrix");
        worst = worst.max(assert_dequantized(&dequantized_on(&w, &device), &want, cols, key));
    }
    // The layouts llama.cpp's quantizer did not write here: against the host's dequantization
    // (exact to gguf-py / ggml, `quant_golden.rs` and core's unit tests).
    for format in [
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q4_1,
        WeightFormat::Q8K,
    ] {
        let w = random_matrix(format, 3, 512, 11);
        let what = format!("{format:?}");
        worst = worst.max(assert_dequantized(
            &dequantized_on(&w, &device),
            &w.to_f32(),
            512,
            &what,
        ));
    }
    eprintln!("device dequantization: worst |d| / row max = {worst:.2e}");
}

/// `x Wᵀ` in f64 from the host's dequantized weights, with each sum's Σ|terms|.
fn f64_xwt(x: &[f32], m: usize, w: &[f32], rows: usize, cols: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * rows);
    for i in 0..m {
        for r in 0..rows {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for j in 0..cols {
                let t = f64::from(x[i * cols + j]) * f64::from(w[r * cols + j]);
                s += t;
                a += t.abs();
            }
            out.push((s, a));
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[(f64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, (s, a))) in got.iter().zip(want).enumerate() {
        let d = (f64::from(*g) - s).abs();
        assert!(
            d <= PRODUCT_TOL * a.max(1e-30),
            "{what}: value {i}: {g} vs f64 {s} (Σ|terms| {a})"
        );
    }
}

#[test]
fn device_products_match_f64_sums_for_every_layout() {
    let device = sealong_tests::wgpu_device();
    let (rows, cols) = (37, 512);
    let mut r = SplitMix(5);
    for (n, format) in FORMATS.into_iter().enumerate() {
        let w = random_matrix(format, rows, cols, 100 + n as u64);
        let dense = w.to_f32();
        let frozen = Frozen(std::sync::Arc::new(w));
        // Up to XWT_MAX_M (8) rows: the fused kernel; 9 rows: a block dequantized, then matmul.
        assert_eq!(sealong_shaders::stored::XWT_MAX_M, 8);
        for m in [1, 3, 8, 9] {
            let x = r.vec(m * cols, 1.0);
            let got = values(frozen_linear(tensor(x.clone(), [m, cols], &device), &frozen));
            assert_close(
                &got,
                &f64_xwt(&x, m, &dense, rows, cols),
                &format!("{format:?} x Wᵀ, m = {m}"),
            );
        }
        // The backward under autodiff: d(Σ g ∘ y)/dx = g W.
        let ad = device.clone().autodiff();
        let m = 5;
        let x = tensor(r.vec(m * cols, 1.0), [m, cols], &ad).require_grad();
        let g = r.vec(m * rows, 1.0);
        let y = frozen_linear(x.clone(), &frozen);
        let grads = (y * tensor(g.clone(), [m, rows], &ad)).sum().backward();
        let dx = values(x.grad(&grads).expect("dx"));
        // g W = g (Wᵀ)ᵀ: the f64 product of g with the transposed weights.
        let wt: Vec<f32> = (0..cols * rows).map(|i| dense[(i % rows) * cols + i / rows]).collect();
        assert_close(&dx, &f64_xwt(&g, m, &wt, cols, rows), &format!("{format:?} dy W"));
    }
}

/// A matrix of more than one device buffer (`sealong_shaders::stored::PART_BYTES` of stored
/// bytes) and more than one dequantized block of rows (`BLOCK_FLOATS` floats): the products are
/// assembled from several parts and blocks, forward (fused kernel and blocks) and backward.
/// Checked on every 97th output row and column (f64 sums of all of a matrix this size take too
/// long).
#[test]
fn device_products_span_several_buffers_and_row_blocks() {
    use sealong_shaders::stored::{BLOCK_FLOATS, PART_BYTES};
    let device = sealong_tests::wgpu_device();
    let cols = 4096;
    let rows = PART_BYTES / (2 * cols) + 300;
    assert!(
        PART_BYTES / (2 * cols) * cols > BLOCK_FLOATS,
        "the first part spans two blocks"
    );
    let w = random_matrix(WeightFormat::F16, rows, cols, 77);
    let dense = w.to_f32();
    let frozen = Frozen(std::sync::Arc::new(w));
    let mut r = SplitMix(9);
    for m in [1, 10] {
        let x = r.vec(m * cols, 1.0);
        let y = values(frozen_linear(tensor(x.clone(), [m, cols], &device), &frozen));
        for i in 0..m {
            for row in (0..rows).step_by(97).chain([rows - 1]) {
                let want = f64_xwt(
                    &x[i * cols..(i + 1) * cols],
                    1,
                    &dense[row * cols..(row + 1) * cols],
                    1,
                    cols,
                );
                assert_close(&[y[i * rows + row]], &want, &format!("m = {m}: x Wᵀ [{i}, {row}]"));
            }
        }
    }
    let m = 10;
    let ad = device.clone().autodiff();
    let xt = tensor(r.vec(m * cols, 1.0), [m, cols], &ad).require_grad();
    let g = r.vec(m * rows, 1.0);
    let grads = (frozen_linear(xt.clone(), &frozen) * tensor(g.clone(), [m, rows], &ad))
        .sum()
        .backward();
    let dx = values(xt.grad(&grads).expect("dx"));
    for i in 0..m {
        for j in (0..cols).step_by(97).chain([cols - 1]) {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for row in 0..rows {
                let t = f64::from(g[i * rows + row]) * f64::from(dense[row * cols + j]);
                s += t;
                a += t.abs();
            }
            assert_close(&[dx[i * cols + j]], &[(s, a)], &format!("dy W [{i}, {j}]"));
        }
    }
}
