//! ggml block formats: dequantization to f32 exactly as gguf-py does it (the values transformers
//! holds after loading a GGUF), and the row-wise dot products the CPU decoder runs on weights
//! kept quantized.
//!
//! Formats (32 weights a block):
//! - Q8_0 (34 bytes): f16 `d`, 32 x i8 `q`; `w = d * q`.
//! - Q4_0 (18 bytes): f16 `d`, 16 bytes; `w[j] = d * ((qs[j] & 15) - 8)`, `w[j + 16] = d * ((qs[j] >> 4) - 8)`.
//! - Q4_1 (20 bytes): f16 `d`, f16 `m`, 16 bytes; `w[j] = d * (qs[j] & 15) + m`, `w[j + 16] = d * (qs[j] >> 4) + m`.
//!
//! All arithmetic is f32 after widening the f16 scales, in the order gguf-py uses (`(d * q) + m`).

pub mod kernels;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::loading::gguf::GgmlType;

/// Weights per block for the block-quantized types.
pub const BLOCK: usize = 32;

/// A storage format this crate can dequantize (and, for the block types, compute with directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl WeightFormat {
    /// The format of a ggml type, or an error naming the unsupported type and the tensor.
    pub fn from_ggml(t: GgmlType, tensor: &str) -> Result<Self> {
        Ok(match t {
            GgmlType::F32 => WeightFormat::F32,
            GgmlType::F16 => WeightFormat::F16,
            GgmlType::BF16 => WeightFormat::BF16,
            GgmlType::Q8_0 => WeightFormat::Q8_0,
            GgmlType::Q4_0 => WeightFormat::Q4_0,
            GgmlType::Q4_1 => WeightFormat::Q4_1,
            other => {
                return Err(Error::Model {
                    path: tensor.to_string(),
                    message: format!(
                        "quantization type {} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                        other.name()
                    ),
                });
            }
        })
    }

    /// Bytes for `n` weights (`n` a multiple of [`BLOCK`] for the block types).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * n,
            WeightFormat::F16 | WeightFormat::BF16 => 2 * n,
            WeightFormat::Q8_0 => n / BLOCK * 34,
            WeightFormat::Q4_0 => n / BLOCK * 18,
            WeightFormat::Q4_1 => n / BLOCK * 20,
        }
    }

    pub fn is_block(self) -> bool {
        matches!(self, WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q4_1)
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole rows of `format`) into `out` (`out.len()` weights).
pub fn dequantize(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    match format {
        WeightFormat::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightFormat::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightFormat::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        WeightFormat::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(BLOCK).zip(bytes.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (j, w) in o.iter_mut().enumerate() {
                    *w = d * f32::from(b[2 + j] as i8);
                }
            }
        }
        WeightFormat::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(BLOCK).zip(bytes.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    o[j] = d * f32::from(i16::from(q & 15) - 8);
                    o[j + 16] = d * f32::from(i16::from(q >> 4) - 8);
                }
            }
        }
        WeightFormat::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(BLOCK).zip(bytes.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    o[j] = d * f32::from(q & 15) + m;
                    o[j + 16] = d * f32::from(q >> 4) + m;
                }
            }
        }
    }
}

/// A 2-D weight `[rows, cols]` (row-major, `cols` the input dimension) in its storage format.
#[derive(Clone)]
pub struct QuantMatrix {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    /// `rows * format.row_bytes(cols)` bytes.
    pub data: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix({:?}, [{}, {}])", self.format, self.rows, self.cols)
    }
}

impl QuantMatrix {
    pub fn new(format: WeightFormat, rows: usize, cols: usize, data: std::sync::Arc<[u8]>) -> Result<Self> {
        if format.is_block() && !cols.is_multiple_of(BLOCK) {
            return Err(Error::Invalid(format!(
                "{format:?} rows need a multiple of {BLOCK} columns, got {cols}"
            )));
        }
        let need = rows * format.row_bytes(cols);
        if data.len() != need {
            return Err(Error::Invalid(format!(
                "{format:?} [{rows}, {cols}] needs {need} bytes, got {}",
                data.len()
            )));
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            data,
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.row_bytes();
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` as f32.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize(self.format, self.row(r), &mut out[..self.cols]);
    }

    /// The whole matrix as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        dequantize(self.format, &self.data, &mut out);
        out
    }

    /// The same matrix with its rows reordered: row `r` of the result is row `perm[r]` here.
    pub fn permute_rows(&self, perm: &[usize]) -> QuantMatrix {
        let n = self.row_bytes();
        let mut data = Vec::with_capacity(self.data.len());
        for &src in perm {
            data.extend_from_slice(&self.data[src * n..(src + 1) * n]);
        }
        QuantMatrix {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            data: data.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_and_q8_0_blocks() {
        // Q4_1 with d = 0.5, m = -1: nibble q gives 0.5*q - 1.
        let mut b = vec![];
        b.extend(f16::from_f32(0.5).to_le_bytes());
        b.extend(f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = [0.0f32; 32];
        dequantize(WeightFormat::Q4_1, &b, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[15], 6.5);
        assert_eq!(out[16], 6.5);
        assert_eq!(out[31], -1.0);
        let mut b = vec![];
        b.extend(f16::from_f32(0.25).to_le_bytes());
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        dequantize(WeightFormat::Q8_0, &b, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 3.75);
    }
}
