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

pub mod int8;
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

    /// f16 or bf16: kept 16-bit in a [`QuantMatrix`] (no scales; 64 bytes per 32 values).
    pub fn is_half(self) -> bool {
        matches!(self, WeightFormat::F16 | WeightFormat::BF16)
    }

    /// Whether a tensor of this format and `shape` stays in its stored form (a [`QuantMatrix`])
    /// when a decoder loads it: every 2-D block tensor (a row that is not whole blocks is then
    /// an error naming it), and 2-D f16/bf16 matrices whose rows are whole blocks (others are
    /// widened to f32).
    pub fn stays_stored(self, shape: &[usize]) -> bool {
        shape.len() == 2 && (self.is_block() || self.is_half() && shape[1].is_multiple_of(BLOCK))
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
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

/// A 2-D weight `[rows, cols]` (row-major, `cols` the input dimension) in a block format or in
/// f16/bf16 (then `qs` holds the 16-bit values as stored and there are no scales),
/// repacked for the kernels: the f16 scales widened to f32 in one array (`[d]` per block for
/// Q8_0/Q4_0, `[d, m]` for Q4_1) and the quants in another (16 bytes a block for Q4, 32 for Q8),
/// so the inner loops never convert f16. Values are exactly those of the GGUF blocks.
#[derive(Clone)]
pub struct QuantMatrix {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    /// `rows * blocks_per_row * scales_per_block` scales.
    pub scales: std::sync::Arc<[f32]>,
    /// `rows * blocks_per_row * quant_bytes_per_block` bytes.
    pub qs: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix({:?}, [{}, {}])", self.format, self.rows, self.cols)
    }
}

impl WeightFormat {
    /// f32 scales per block in [`QuantMatrix`] (0 for non-block formats).
    pub fn scales_per_block(self) -> usize {
        match self {
            WeightFormat::Q4_1 => 2,
            WeightFormat::Q4_0 | WeightFormat::Q8_0 => 1,
            _ => 0,
        }
    }

    /// Quant bytes per block in [`QuantMatrix`].
    pub fn quant_bytes_per_block(self) -> usize {
        match self {
            WeightFormat::F16 | WeightFormat::BF16 => 2 * BLOCK,
            WeightFormat::Q8_0 => 32,
            WeightFormat::Q4_0 | WeightFormat::Q4_1 => 16,
            _ => 0,
        }
    }
}

impl QuantMatrix {
    /// Repacks GGUF block bytes (`rows * format.row_bytes(cols)` of them), or keeps f16/bf16
    /// values (GGUF's and safetensors' little-endian 16-bit layout) as they are.
    pub fn from_gguf_bytes(format: WeightFormat, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        if !(format.is_block() || format.is_half()) {
            return Err(Error::Invalid(format!("{format:?} is not a block or half format")));
        }
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::Invalid(format!(
                "{format:?} rows need a multiple of {BLOCK} columns, got {cols}"
            )));
        }
        let need = rows * format.row_bytes(cols);
        if bytes.len() != need {
            return Err(Error::Invalid(format!(
                "{format:?} [{rows}, {cols}] needs {need} bytes, got {}",
                bytes.len()
            )));
        }
        let blocks = rows * cols / BLOCK;
        let (ns, qb) = (format.scales_per_block(), format.quant_bytes_per_block());
        let block_bytes = format.row_bytes(BLOCK);
        let mut scales = Vec::with_capacity(blocks * ns);
        let mut qs = Vec::with_capacity(blocks * qb);
        for b in bytes.chunks_exact(block_bytes) {
            for s in 0..ns {
                scales.push(f16_at(b, 2 * s));
            }
            qs.extend_from_slice(&b[2 * ns..]);
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            scales: scales.into(),
            qs: qs.into(),
        })
    }

    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `r`'s scales and quants.
    pub fn row(&self, r: usize) -> (&[f32], &[u8]) {
        let nb = self.blocks_per_row();
        let (ns, qb) = (self.format.scales_per_block(), self.format.quant_bytes_per_block());
        (
            &self.scales[r * nb * ns..(r + 1) * nb * ns],
            &self.qs[r * nb * qb..(r + 1) * nb * qb],
        )
    }

    /// Row `r` as f32 (`out.len() >= cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (scales, qs) = self.row(r);
        dequantize_packed(self.format, scales, qs, &mut out[..self.cols]);
    }

    /// The whole matrix as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// The rows of several matrices of one format and width stacked (fused projections).
    pub fn concat_rows(parts: &[&QuantMatrix]) -> Result<QuantMatrix> {
        let first = parts
            .first()
            .ok_or_else(|| Error::Invalid("nothing to concatenate".into()))?;
        if parts.iter().any(|p| p.format != first.format || p.cols != first.cols) {
            return Err(Error::Invalid("fused matrices must share format and width".into()));
        }
        Ok(QuantMatrix {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect::<Vec<_>>()
                .into(),
            qs: parts
                .iter()
                .flat_map(|p| p.qs.iter().copied())
                .collect::<Vec<_>>()
                .into(),
        })
    }

    /// The same matrix with its rows reordered: row `r` of the result is row `perm[r]` here.
    pub fn permute_rows(&self, perm: &[usize]) -> QuantMatrix {
        let mut scales = Vec::with_capacity(self.scales.len());
        let mut qs = Vec::with_capacity(self.qs.len());
        for &src in perm {
            let (s, q) = self.row(src);
            scales.extend_from_slice(s);
            qs.extend_from_slice(q);
        }
        QuantMatrix {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            scales: scales.into(),
            qs: qs.into(),
        }
    }
}

/// Dequantizes one repacked row (the same values and arithmetic as [`dequantize`]).
pub fn dequantize_packed(format: WeightFormat, scales: &[f32], qs: &[u8], out: &mut [f32]) {
    match format {
        WeightFormat::F16 | WeightFormat::BF16 => dequantize(format, qs, out),
        WeightFormat::Q8_0 => {
            for ((o, q), &d) in out.chunks_exact_mut(BLOCK).zip(qs.chunks_exact(32)).zip(scales) {
                for (w, &b) in o.iter_mut().zip(q) {
                    *w = d * f32::from(b as i8);
                }
            }
        }
        WeightFormat::Q4_0 => {
            for ((o, q), &d) in out.chunks_exact_mut(BLOCK).zip(qs.chunks_exact(16)).zip(scales) {
                for j in 0..16 {
                    o[j] = d * f32::from(i16::from(q[j] & 15) - 8);
                    o[j + 16] = d * f32::from(i16::from(q[j] >> 4) - 8);
                }
            }
        }
        WeightFormat::Q4_1 => {
            for ((o, q), s) in out
                .chunks_exact_mut(BLOCK)
                .zip(qs.chunks_exact(16))
                .zip(scales.chunks_exact(2))
            {
                let (d, m) = (s[0], s[1]);
                for j in 0..16 {
                    o[j] = d * f32::from(q[j] & 15) + m;
                    o[j + 16] = d * f32::from(q[j] >> 4) + m;
                }
            }
        }
        _ => {}
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
        let m = QuantMatrix::from_gguf_bytes(WeightFormat::Q8_0, 1, 32, &b).expect("repack");
        assert_eq!(m.to_f32(), out.to_vec());
    }
}
