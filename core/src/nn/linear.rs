//! Linear layers and embeddings over either dense weights on the device or weights kept in their
//! storage format (the ggml blocks, f16/bf16). On the CPU backend, for a few rows of activations
//! (decoding) the stored weights are read by the kernels of `quant::kernels` and
//! `quant::raw_dots` (a quarter to an eighth of the memory traffic of f32); for many rows
//! (prefill, and training under autodiff) the shaders' frozen product walks the matrix in blocks
//! of rows, dequantized into a scratch buffer and multiplied by GEMM, forward and backward. On
//! cubecl (wgpu) devices the same product runs on a device copy of the blocks
//! (`sealong_shaders::stored`).

use std::sync::Arc;

use burn::prelude::*;

use sealong_shaders::frozen::{Frozen, frozen_linear, frozen_lora_linear};

use crate::loading::weight::{Weight, WeightData};
use crate::quant::{QuantMatrix, int8, kernels};

/// Activation rows up to which the quantized kernels beat dequantize + GEMM.
const QUANT_KERNEL_MAX_ROWS: usize = 16;

/// A `[out, in]` weight.
#[derive(Debug, Clone)]
// A handful of these exist per model and they are not moved in hot loops.
#[allow(clippy::large_enum_variant)]
pub enum LinearWeight {
    /// On the device (trainable when it is an autodiff leaf).
    Dense(Tensor<2>),
    /// In its storage format (frozen): on the host, and on a cubecl device a copy of the same
    /// bytes made on first use.
    Quant(Arc<QuantMatrix>),
}

impl LinearWeight {
    /// Places a loaded weight on `device`. Storage formats stay stored on every device: on the
    /// CPU backend our host kernels read them (under autodiff too: a frozen weight of a LoRA run
    /// is expanded to f32 only while its product is computed, so training keeps the base in its
    /// stored format; full fine-tuning expands it into f32 master weights, see
    /// [`LinearWeight::densify`]); on cubecl (wgpu) devices the blocks are copied there on first
    /// use and the kernels of `sealong_shaders::stored` read them. f32 weights become tensors.
    pub fn from_weight(w: &Weight, device: &Device) -> Self {
        match &w.data {
            WeightData::Quant(q) => LinearWeight::Quant(Arc::new(q.clone())),
            _ => LinearWeight::Dense(tensor_from_weight(w, device)),
        }
    }

    /// The weight as a dense tensor on `device` from now on (a quantized one is expanded).
    pub fn densify(&mut self, device: &Device) {
        if let LinearWeight::Quant(_) = self {
            *self = LinearWeight::Dense(self.to_dense(device));
        }
    }

    /// The same weight outside autodiff (shared storage).
    pub fn without_autodiff(&self) -> Self {
        match self {
            LinearWeight::Dense(t) => LinearWeight::Dense(t.clone().without_autodiff()),
            LinearWeight::Quant(q) => LinearWeight::Quant(q.clone()),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            LinearWeight::Dense(t) => t.dims(),
            LinearWeight::Quant(q) => [q.rows, q.cols],
        }
    }

    /// The weight as a dense `[out, in]` tensor on `device`.
    pub fn to_dense(&self, device: &Device) -> Tensor<2> {
        match self {
            LinearWeight::Dense(t) => t.clone(),
            LinearWeight::Quant(q) => {
                Tensor::from_data(TensorData::new(kernels::dequantize_matrix(q), [q.rows, q.cols]), device)
            }
        }
    }
}

/// True for the CPU (flex) backend without autodiff: where host kernels can stand in for ops.
pub fn is_host_cpu(device: &Device) -> bool {
    *device == Device::flex() && !device.is_autodiff()
}

/// A loaded weight as an f32 tensor of its shape.
pub fn tensor_from_weight<const D: usize>(w: &Weight, device: &Device) -> Tensor<D> {
    let values: Vec<f32> = w.to_f32().to_vec();
    Tensor::from_data(TensorData::new(values, w.shape.clone()), device)
}

/// How products with host-quantized weights are computed on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 activations: the dequantized-f32 product up to rounding (logits parity with
    /// transformers).
    #[default]
    Exact,
    /// Activations rounded to int8 per block and integer dot products, as llama.cpp computes
    /// (see `quant::int8`): faster, about 0.4% activation rounding.
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(Precision::Exact),
            "int8" => Ok(Precision::Int8),
            other => Err(crate::error::Error::Invalid(format!(
                "unknown precision {other:?} (expected exact or int8)"
            ))),
        }
    }
}

/// A LoRA adapter beside a frozen (or trainable) weight: `y += scaling * dropout(x) Aᵀ Bᵀ`,
/// in PEFT's layout (`lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `[r, in]`.
    pub a: Tensor<2>,
    /// `[out, r]`.
    pub b: Tensor<2>,
    /// `alpha / r`.
    pub scaling: f64,
    /// Dropout probability on the adapter's input (applied only while `dropout_key` is set).
    pub dropout: f64,
    /// `(run seed, step)` while training with dropout; the mask stream is derived from it and
    /// `name`, so a step's masks are reproducible. `None` = no dropout (evaluation).
    pub dropout_key: Option<(u64, u64)>,
    /// The adapted module's HF name (e.g. `model.layers.0.self_attn.q_proj`).
    pub name: String,
}

impl LoraAdapter {
    /// The adapter's contribution.
    ///
    /// # Shapes
    /// `x`: `[m, in]` -> `[m, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.dropped(x)
            .matmul(self.a.clone().transpose())
            .matmul(self.b.clone().transpose())
            .mul_scalar(self.scaling)
    }

    /// The adapter's input: `x` after LoRA dropout, or `x` itself.
    pub fn dropped(&self, x: Tensor<2>) -> Tensor<2> {
        match self.dropout_key {
            Some((seed, step)) if self.dropout > 0.0 => {
                let [m, k] = x.dims();
                let mask = dropout_mask(m * k, self.dropout, seed, &format!("lora-dropout/{}/{step}", self.name));
                let mask = Tensor::<2>::from_data(TensorData::new(mask, [m, k]), &x.device());
                x * mask
            }
            _ => x,
        }
    }
}

/// Inverted-dropout multipliers (`0` with probability `p`, else `1 / (1 - p)`) from a seeded
/// stream.
fn dropout_mask(n: usize, p: f64, seed: u64, label: &str) -> Vec<f32> {
    use rand::RngExt;
    let mut rng = crate::rng::for_item(seed, label);
    let keep = (1.0 / (1.0 - p)) as f32;
    (0..n)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect()
}

/// `y = x W^T (+ b)` (+ an optional LoRA adapter's term).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor<1>>,
    pub precision: Precision,
    /// A LoRA adapter added to the product (training / adapted inference on burn).
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor<1>>) -> Self {
        Linear {
            weight,
            bias,
            precision: Precision::Exact,
            lora: None,
        }
    }

    /// The same layer outside autodiff (shared storage; the adapter keeps its dropout key).
    pub fn without_autodiff(&self) -> Linear {
        Linear {
            weight: self.weight.without_autodiff(),
            bias: self.bias.clone().map(Tensor::without_autodiff),
            precision: self.precision,
            lora: self.lora.as_ref().map(|a| LoraAdapter {
                a: a.a.clone().without_autodiff(),
                b: a.b.clone().without_autodiff(),
                ..a.clone()
            }),
        }
    }

    /// # Shapes
    /// `x`: `[batch, seq_len, in]` -> `[batch, seq_len, out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq_len, d_in] = x.dims();
        let [d_out, _] = self.weight.dims();
        let x2 = x.reshape([batch * seq_len, d_in]);
        let y = match (&self.weight, &self.lora) {
            // A frozen stored weight and its adapter in one op (training; prefill with an
            // adapter): one output, and a backward that reads the blocks again.
            (LinearWeight::Quant(q), Some(adapter))
                if self.precision == Precision::Exact
                    && (x2.is_autodiff() || batch * seq_len > QUANT_KERNEL_MAX_ROWS) =>
            {
                let xd = adapter.dropped(x2.clone());
                frozen_lora_linear(
                    x2,
                    xd,
                    &Frozen(q.clone()),
                    adapter.a.clone(),
                    adapter.b.clone(),
                    adapter.scaling as f32,
                )
            }
            (weight, lora) => {
                let y = match weight {
                    LinearWeight::Dense(w) => x2.clone().matmul(w.clone().transpose()),
                    LinearWeight::Quant(q) => quant_matmul(x2.clone(), q, self.precision),
                };
                match lora {
                    Some(adapter) => y + adapter.forward(x2),
                    None => y,
                }
            }
        };
        let y = match &self.bias {
            Some(b) => y + b.clone().reshape([1, d_out]),
            None => y,
        };
        y.reshape([batch, seq_len, d_out])
    }
}

/// `x W^T` with `W` in a storage format.
///
/// # Shapes
/// `x`: `[m, in]` -> `[m, out]`.
fn quant_matmul(x: Tensor<2>, w: &Arc<QuantMatrix>, precision: Precision) -> Tensor<2> {
    let device = x.device();
    let [m, k] = x.dims();
    if precision == Precision::Int8
        && int8::covers(w.format, m)
        && is_host_cpu(&device)
        && !x.is_autodiff()
        && let Ok(xs) = x.clone().into_data().try_into_vec_as::<f32>()
    {
        let y = int8::matmul(&int8::quantize_acts(&xs, m, k), w);
        return Tensor::from_data(TensorData::new(y, [m, w.rows]), &device);
    }
    if m <= QUANT_KERNEL_MAX_ROWS && is_host_cpu(&device) && !x.is_autodiff() {
        // A flex tensor's data is already on the host: this read is a copy of m rows.
        if let Ok(xs) = x.clone().into_data().try_into_vec_as::<f32>() {
            let y = kernels::matmul_xwt(&xs, m, w);
            return Tensor::from_data(TensorData::new(y, [m, w.rows]), &device);
        }
    }
    // Many rows, or under autodiff: the storage-format product of the shaders (blocks of `W`
    // dequantized into a scratch buffer, GEMM; its backward reads the blocks again).
    frozen_linear(x, &Frozen(w.clone()))
}

/// Token embeddings `[vocab, d]`, dense on the device or in a storage format on the host.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub table: LinearWeight,
}

impl Embedding {
    /// # Shapes
    /// `ids`: `batch` rows of `seq_len` token ids -> `[batch, seq_len, d]`.
    pub fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<3> {
        let batch = ids.len();
        let seq_len = ids.first().map_or(0, Vec::len);
        let [_, d] = self.table.dims();
        match &self.table {
            LinearWeight::Quant(q) => {
                let mut out = vec![0.0f32; batch * seq_len * d];
                for (row, &id) in out.chunks_exact_mut(d).zip(ids.iter().flatten()) {
                    q.dequantize_row(id as usize, row);
                }
                Tensor::from_data(TensorData::new(out, [batch, seq_len, d]), device)
            }
            LinearWeight::Dense(t) => {
                let flat: Vec<i32> = ids.iter().flatten().map(|&i| i as i32).collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(flat, [batch * seq_len]), device);
                t.clone().select(0, idx).reshape([batch, seq_len, d])
            }
        }
    }
}
