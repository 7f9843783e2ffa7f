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
//!
//! - Q5_0 (22 bytes): f16 `d`, u32 `qh` (the fifth bits), 16 bytes; `w = d * (q - 16)`.
//! - Q5_1 (24 bytes): f16 `d`, f16 `m`, u32 `qh`, 16 bytes; `w = (d * q) + m`.
//!
//! The K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K: super-blocks of 256 weights) are in
//! [`k_quants`]. A [`QuantMatrix`] keeps their super-blocks, and Q5_0/Q5_1 blocks, as stored
//! ("raw blocks": no f16 scales to widen into a separate array). Decoding (one to three rows of
//! activations) runs their fused dots ([`raw_dots`]); more rows go through the dequantizing
//! GEMM path, as for the other formats.

mod ggml_type;
pub mod int8;
pub mod k_quants;
pub mod kernels;
pub mod raw_dots;
pub mod storage;

use half::{bf16, f16};

use crate::error::{Error, Result};

pub use ggml_type::GgmlType;

/// The ggml types a model may be stored in, as the errors list them.
pub const SUPPORTED_TYPES: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

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
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
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
            GgmlType::Q5_0 => WeightFormat::Q5_0,
            GgmlType::Q5_1 => WeightFormat::Q5_1,
            GgmlType::Q2K => WeightFormat::Q2K,
            GgmlType::Q3K => WeightFormat::Q3K,
            GgmlType::Q4K => WeightFormat::Q4K,
            GgmlType::Q5K => WeightFormat::Q5K,
            GgmlType::Q6K => WeightFormat::Q6K,
            GgmlType::Q8K => WeightFormat::Q8K,
            other => {
                return Err(Error::Model {
                    path: tensor.to_string(),
                    message: format!(
                        "quantization type {} is not supported (supported: {SUPPORTED_TYPES})",
                        other.name()
                    ),
                });
            }
        })
    }

    /// Bytes for `n` weights (`n` a multiple of [`BLOCK`] for the block types, of
    /// [`k_quants::QK_K`] for the K-quants).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * n,
            WeightFormat::F16 | WeightFormat::BF16 => 2 * n,
            WeightFormat::Q8_0 => n / BLOCK * 34,
            WeightFormat::Q4_0 => n / BLOCK * 18,
            WeightFormat::Q4_1 => n / BLOCK * 20,
            raw => n / raw.block_weights() * raw.raw_block_bytes(),
        }
    }

    /// Weights per block: 1 for f32/f16/bf16, 32 for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, 256 for the
    /// K-quants.
    pub fn block_weights(self) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => 1,
            WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
                BLOCK
            }
            _ => k_quants::QK_K,
        }
    }

    /// Bytes of one block of the formats kept as raw blocks (0 for the others).
    fn raw_block_bytes(self) -> usize {
        match self {
            WeightFormat::Q5_0 => 22,
            WeightFormat::Q5_1 => 24,
            WeightFormat::Q2K => 84,
            WeightFormat::Q3K => 110,
            WeightFormat::Q4K => 144,
            WeightFormat::Q5K => 176,
            WeightFormat::Q6K => 210,
            WeightFormat::Q8K => 292,
            _ => 0,
        }
    }

    /// A format whose blocks a [`QuantMatrix`] keeps as stored (the K-quants, Q5_0, Q5_1); their
    /// dot kernels are in [`raw_dots`].
    pub fn is_raw_block(self) -> bool {
        self.raw_block_bytes() > 0
    }

    pub fn is_block(self) -> bool {
        matches!(self, WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q4_1)
    }

    /// f16 or bf16: kept 16-bit in a [`QuantMatrix`] (no scales; 64 bytes per 32 values).
    pub fn is_half(self) -> bool {
        matches!(self, WeightFormat::F16 | WeightFormat::BF16)
    }

    /// Bytes a tensor of this format and `shape` takes once a decoder has loaded it on the
    /// CPU: a [`QuantMatrix`] where it [stays stored](Self::stays_stored) (Q8_0/Q4_0/Q4_1 with
    /// their scales widened to f32, the others as stored), else f32 values.
    pub fn loaded_bytes(self, shape: &[usize]) -> u64 {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        if !self.stays_stored(shape) {
            4 * n
        } else if self.is_block() {
            n / BLOCK as u64 * (4 * self.scales_per_block() + self.quant_bytes_per_block()) as u64
        } else {
            shape[0] as u64 * self.row_bytes(shape[1]) as u64
        }
    }

    /// Whether a tensor of this format and `shape` stays in its stored form (a [`QuantMatrix`])
    /// when a decoder loads it: every 2-D block or K-quant tensor (a row that is not whole
    /// blocks is then an error naming it), and 2-D f16/bf16 matrices whose rows are whole
    /// blocks (others are widened to f32).
    pub fn stays_stored(self, shape: &[usize]) -> bool {
        shape.len() == 2 && (self.is_block() || self.is_raw_block() || self.is_half() && shape[1].is_multiple_of(BLOCK))
    }
}

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// A Q5 block (`qh` the u32 of fifth bits, `qs` 16 bytes): weight `j < 16` is the low nibble of
/// `qs[j]`, weight `j + 16` its high nibble, each with bit `j` (`j + 16`) of `qh` on top (gguf-py's
/// order). `f(j, q_j, q_{j+16})` gets both quants of byte `j` as i32 lanes, which vectorizes
/// (as u8 lanes, LLVM assembled the fifth bits a byte at a time).
#[inline(always)]
fn q5_pairs(qh: u32, qs: &[u8], mut f: impl FnMut(usize, i32, i32)) {
    for (j, &q) in qs[..16].iter().enumerate() {
        let lo = i32::from(q & 0x0F) | ((((qh >> j) & 1) as i32) << 4);
        let hi = i32::from(q >> 4) | ((((qh >> (j + 16)) & 1) as i32) << 4);
        f(j, lo, hi);
    }
}

/// One Q5_0 block (22 bytes) into 32 weights.
#[inline(always)]
fn dequantize_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = y[..BLOCK].split_at_mut(16);
    q5_pairs(u32::from_le_bytes([b[2], b[3], b[4], b[5]]), &b[6..22], |j, l, h| {
        lo[j] = d * (l - 16) as f32;
        hi[j] = d * (h - 16) as f32;
    });
}

/// One Q5_1 block (24 bytes) into 32 weights.
#[inline(always)]
fn dequantize_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let (lo, hi) = y[..BLOCK].split_at_mut(16);
    q5_pairs(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), &b[8..24], |j, l, h| {
        lo[j] = d * l as f32 + m;
        hi[j] = d * h as f32 + m;
    });
}

#[inline(always)]
fn raw_blocks_impl(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    let (w, bb) = (format.block_weights(), format.raw_block_bytes());
    // One loop per format with a direct call, so each block function inlines into the
    // vectorized copies of `dequantize_raw_blocks` (through a function pointer it would not).
    macro_rules! blocks {
        ($f:path) => {
            for (o, b) in out.chunks_exact_mut(w).zip(bytes.chunks_exact(bb)) {
                $f(b, o);
            }
        };
    }
    match format {
        WeightFormat::Q5_0 => blocks!(dequantize_q5_0),
        WeightFormat::Q5_1 => blocks!(dequantize_q5_1),
        WeightFormat::Q2K => blocks!(k_quants::dequantize_q2_k),
        WeightFormat::Q3K => blocks!(k_quants::dequantize_q3_k),
        WeightFormat::Q4K => blocks!(k_quants::dequantize_q4_k),
        WeightFormat::Q5K => blocks!(k_quants::dequantize_q5_k),
        WeightFormat::Q6K => blocks!(k_quants::dequantize_q6_k),
        WeightFormat::Q8K => blocks!(k_quants::dequantize_q8_k),
        _ => {}
    }
}

sealong_shaders::multiversion!(
    /// The raw-block formats' rows (whole blocks of `bytes`) into `out`, in a copy compiled
    /// for this CPU's vector width (the block loops vectorize; the values are the same).
    fn dequantize_raw_blocks => raw_blocks_impl(format: WeightFormat, bytes: &[u8], out: &mut [f32])
);

/// Dequantizes `bytes` (whole rows of `format`) into `out` (`out.len()` weights).
pub fn dequantize(format: WeightFormat, bytes: &[u8], out: &mut [f32]) {
    if format.is_raw_block() {
        dequantize_raw_blocks(format, bytes, out);
        return;
    }
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
        // The K-quants returned above.
        _ => {}
    }
}

/// A 2-D weight `[rows, cols]` (row-major, `cols` the input dimension) in a block format or in
/// f16/bf16 or a K-quant (then `qs` holds the values or super-blocks as stored and there are no
/// scales),
/// repacked for the kernels: the f16 scales widened to f32 in one array (`[d]` per block for
/// Q8_0/Q4_0, `[d, m]` for Q4_1) and the quants in another (16 bytes a block for Q4, 32 for Q8),
/// so the inner loops never convert f16. Values are exactly those of the GGUF blocks.
#[derive(Clone)]
pub struct QuantMatrix {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    /// `rows * blocks_per_row * scales_per_block` scales.
    pub scales: storage::Stored<f32>,
    /// `rows * blocks_per_row * quant_bytes_per_block` bytes.
    pub qs: storage::Stored<u8>,
    /// The copies of `scales` and `qs` on cubecl (wgpu) devices, made when a product first
    /// runs there (`sealong_shaders::stored`); shared by clones.
    pub device_copies: std::sync::Arc<sealong_shaders::stored::DeviceCopies>,
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
    /// values (GGUF's and safetensors' little-endian 16-bit layout) and K-quant super-blocks as
    /// they are.
    pub fn from_gguf_bytes(format: WeightFormat, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        if !(format.is_block() || format.is_half() || format.is_raw_block()) {
            return Err(Error::Invalid(format!(
                "{format:?} is not a block, K-quant or half format"
            )));
        }
        let per_block = format.block_weights().max(BLOCK);
        if cols == 0 {
            return Err(Error::Invalid(format!("{format:?} [{rows}, {cols}] has no columns")));
        }
        if !cols.is_multiple_of(per_block) {
            return Err(Error::Invalid(format!(
                "{format:?} rows need a multiple of {per_block} columns, got {cols}"
            )));
        }
        let need = rows * format.row_bytes(cols);
        if bytes.len() != need {
            return Err(Error::Invalid(format!(
                "{format:?} [{rows}, {cols}] needs {need} bytes, got {}",
                bytes.len()
            )));
        }
        if format.is_raw_block() || format.is_half() {
            // Kept as stored, copied once (from the slice; no intermediate Vec).
            return Ok(QuantMatrix {
                format,
                rows,
                cols,
                scales: Vec::new().into(),
                qs: bytes.into(),
                device_copies: Default::default(),
            });
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
            device_copies: Default::default(),
        })
    }

    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `r`'s scales and quants (a K-quant row: no scales and its super-blocks).
    pub fn row(&self, r: usize) -> (&[f32], &[u8]) {
        if self.format.is_raw_block() {
            let rb = self.format.row_bytes(self.cols);
            return (&[], &self.qs[r * rb..(r + 1) * rb]);
        }
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
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
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
            device_copies: Default::default(),
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
            device_copies: Default::default(),
        }
    }
}

/// Dequantizes one repacked row (the same values and arithmetic as [`dequantize`]).
pub fn dequantize_packed(format: WeightFormat, scales: &[f32], qs: &[u8], out: &mut [f32]) {
    match format {
        WeightFormat::F16 | WeightFormat::BF16 => dequantize(format, qs, out),
        k if k.is_raw_block() => dequantize(format, qs, out),
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
