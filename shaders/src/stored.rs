//! Frozen matrices kept in their storage format on cubecl (wgpu) devices: the ggml blocks (and
//! f16/bf16 rows) go to the device once, as their owner keeps them, and the kernels here read
//! them there. Nothing is expanded to f32 on the host, and the f32 copy of a whole matrix never
//! stays on the device.
//!
//! Two kernels, each a twin of the host code it stands in for:
//! - **dequantize** (one unit per weight): rows `r0 .. r0 + n` of the matrix into an f32
//!   `[n, cols]` tensor. Products with many activation rows (prefill, training's forward and
//!   backward, the frozen head) dequantize a block of rows at a time (at most
//!   [`BLOCK_FLOATS`]) and multiply it with the backend's matmul, as the host's `frozen.rs`
//!   does with its scratch buffer.
//! - **xwt** (decoding: at most [`XWT_MAX_M`] activation rows, a kernel compiled per row count):
//!   one cube of [`UNITS`] units per weight row; each unit walks the row's groups of 16 weights
//!   `unit, unit + UNITS, …`, decodes a group's scales once, dequantizes its weights in registers
//!   and adds their products with every activation row; the cube sums the units' partial sums
//!   in unit order (the result does not depend on scheduling). A decode step reads each weight
//!   once, in its stored size.
//!
//! The value of a weight is computed as the host dequantizers compute it (core's
//! `quant::dequantize` and `quant::k_quants`: gguf-py's formulas and operation order); a device
//! may contract `a·b + c` into one rounding, so the tests allow a few ulps.
//!
//! Storage as the kernels read it: `qs` is the owner's byte array as 32-bit little-endian
//! words (padded with zeros to a whole word), `scales` its f32 scales (the repacked Q8_0 / Q4_0
//! / Q4_1 keep their f16 scales widened to f32 apart from the quants; the other layouts keep
//! their scales inside the blocks and have none). `row_bytes` is the bytes of one row in `qs`.

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

/// The storage layouts the device kernels read (the owner's, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// f16 values, 2 bytes each.
    F16,
    /// bf16 values, 2 bytes each.
    BF16,
    /// Q8_0 repacked: 32 i8 quants a block in `qs`, `d` in `scales`.
    Q8_0,
    /// Q4_0 repacked: 16 bytes of nibbles a block in `qs`, `d` in `scales`.
    Q4_0,
    /// Q4_1 repacked: 16 bytes of nibbles a block in `qs`, `[d, m]` in `scales`.
    Q4_1,
    /// The remaining ggml blocks as stored (22, 24, 84, 110, 144, 176, 210 and 292 bytes).
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl Layout {
    /// The kernels' compile-time code for the layout.
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    fn code(self) -> u32 {
        self as u32
    }
}

/// A frozen matrix's storage, as [`crate::frozen::FrozenMatrix::stored`] lends it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub layout: Layout,
    /// The f32 scales (empty for the layouts that keep them in their blocks).
    pub scales: &'a [f32],
    /// The quants or blocks, `rows × row_bytes` bytes.
    pub qs: &'a [u8],
    /// Where the device copies of this storage are kept.
    pub copies: &'a DeviceCopies,
}

/// The device copies of one matrix's storage, made on first use on each device and kept as
/// long as the matrix (its owner holds this beside the host bytes).
#[derive(Default)]
pub struct DeviceCopies(Mutex<Vec<Box<dyn Any + Send + Sync>>>);

impl fmt::Debug for DeviceCopies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |v| v.len());
        write!(f, "DeviceCopies({n})")
    }
}

/// Floats of one dequantized block of rows on the device (64 MiB).
pub const BLOCK_FLOATS: usize = 1 << 24;

/// Bytes of one device buffer of a matrix's storage at most (whole rows): a device limits one
/// buffer binding (128 MiB on lavapipe), and a 128k-vocabulary head is larger.
pub const PART_BYTES: usize = 64 << 20;

/// Activation rows up to which products go through the fused `xwt` kernel.
pub const XWT_MAX_M: usize = 8;

/// Units per cube of the `xwt` kernel.
#[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
const UNITS: usize = 64;

#[cfg(feature = "wgpu")]
pub(crate) use device::{dequantize_all, dequantize_rows, join, on_device, row_blocks, xwt};

#[cfg(feature = "wgpu")]
mod device {
    use std::sync::Arc;

    use burn::backend::wgpu::CubeTensor;
    use burn::tensor::{DType, Shape};
    use cubecl::{CubeCount, CubeDim};

    use super::{BLOCK_FLOATS, DeviceCopies, Layout, PART_BYTES, Stored, UNITS, XWT_MAX_M};
    use crate::frozen::Frozen;
    use kernels::{dequantize_kernel, xwt_kernel};

    /// A matrix's storage on one device, in parts of whole rows of at most [`PART_BYTES`]
    /// each (a device limits one buffer binding: 128 MiB on lavapipe, and a 128k-vocabulary
    /// head is larger). Shared (`Arc`) between the matrix's cache and the products that use it.
    pub(crate) struct OnDevice {
        pub parts: Vec<Part>,
        pub layout: Layout,
        pub rows: usize,
        pub cols: usize,
        pub row_bytes: usize,
    }

    /// Rows `row0 .. row0 + rows` of a matrix on the device: their bytes and scales.
    pub(crate) struct Part {
        pub row0: usize,
        pub rows: usize,
        pub qs: CubeTensor,
        pub scales: CubeTensor,
    }

    /// `w`'s storage on `like`'s device (uploaded on first use), or `None` when `w` lends no
    /// storage (its product then takes the dense path).
    pub(crate) fn on_device(w: &Frozen, like: &CubeTensor) -> Option<Arc<OnDevice>> {
        let stored: Stored<'_> = w.0.stored()?;
        let rows = w.0.rows();
        let cols = w.0.cols();
        let DeviceCopies(list) = stored.copies;
        let mut list = list.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for copy in list.iter() {
            if let Some(d) = copy.downcast_ref::<Arc<OnDevice>>()
                && d.parts.first().is_some_and(|p| p.qs.device == like.device)
            {
                return Some(d.clone());
            }
        }
        let row_bytes = stored.qs.len().checked_div(rows).unwrap_or(0);
        let row_scales = stored.scales.len().checked_div(rows).unwrap_or(0);
        let upload = |bytes: &[u8], dtype: DType| {
            // Whole 32-bit words, at least one.
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
            CubeTensor::new_contiguous(
                like.client.clone(),
                like.device.clone(),
                Shape::from(vec![padded.len() / 4]),
                like.client.create_from_slice(&padded),
                dtype,
            )
        };
        let per_part = (PART_BYTES / (row_bytes + 4 * row_scales).max(1)).max(1);
        let parts = (0..rows)
            .step_by(per_part)
            .map(|row0| {
                let n = per_part.min(rows - row0);
                let scales: Vec<u8> = stored.scales[row0 * row_scales..(row0 + n) * row_scales]
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect();
                Part {
                    row0,
                    rows: n,
                    qs: upload(&stored.qs[row0 * row_bytes..(row0 + n) * row_bytes], DType::U32),
                    scales: upload(&scales, DType::F32),
                }
            })
            .collect::<Vec<_>>();
        if parts.is_empty() {
            return None;
        }
        let copy = Arc::new(OnDevice {
            parts,
            layout: stored.layout,
            rows,
            cols,
            row_bytes,
        });
        list.push(Box::new(copy.clone()));
        Some(copy)
    }

    fn empty_f32(like: &CubeTensor, shape: &[usize]) -> CubeTensor {
        crate::cube_alloc::empty(like, shape, DType::F32)
    }

    /// `(part, first row in the part, rows)` of the blocks of at most [`BLOCK_FLOATS`] floats
    /// that a device product dequantizes at a time, in row order.
    pub(crate) fn row_blocks(w: &OnDevice) -> Vec<(usize, usize, usize)> {
        let per = (BLOCK_FLOATS / w.cols.max(1)).max(1);
        let mut out = Vec::new();
        for (pi, part) in w.parts.iter().enumerate() {
            for r0 in (0..part.rows).step_by(per) {
                out.push((pi, r0, per.min(part.rows - r0)));
            }
        }
        out
    }

    /// Rows `r0 .. r0 + n` of part `part` as a contiguous f32 `[n, cols]` tensor.
    pub(crate) fn dequantize_rows(w: &OnDevice, part: usize, r0: usize, n: usize) -> CubeTensor {
        let p = &w.parts[part];
        let out = empty_f32(&p.qs, &[n, w.cols]);
        let elems = n * w.cols;
        if elems == 0 {
            return out;
        }
        let cube_dim = CubeDim::new_1d(256);
        let count = cubecl::calculate_cube_count_elemwise(&p.qs.client, elems, cube_dim);
        // SAFETY: unit `i < n · cols` reads the bytes of the part's weight (r0 + i / cols,
        // i % cols), inside its row r0 + i / cols < part rows (part rows · row_bytes bytes,
        // padded to whole words) and, for the repacked layouts, its block's scales; it writes
        // `out[i]`.
        unsafe {
            dequantize_kernel::launch_unchecked(
                &p.qs.client,
                count,
                cube_dim,
                p.qs.clone().into_tensor_arg(),
                p.scales.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                r0 as u32,
                elems as u32,
                w.cols as u32,
                w.row_bytes as u32,
                w.layout.code(),
            );
        }
        out
    }

    /// Tensors of consecutive row blocks joined along `dim` (a lone block as it is).
    pub(crate) fn join(parts: Vec<CubeTensor>, dim: usize) -> CubeTensor {
        use burn::backend::ops::FloatTensorOps;
        type C = burn::backend::Cube;
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one part");
        }
        <C as FloatTensorOps<C>>::float_cat(parts, dim)
    }

    /// The whole matrix as a contiguous f32 `[rows, cols]` tensor on its device.
    pub(crate) fn dequantize_all(w: &OnDevice) -> CubeTensor {
        let blocks = row_blocks(w)
            .into_iter()
            .map(|(part, r0, n)| dequantize_rows(w, part, r0, n))
            .collect();
        join(blocks, 0)
    }

    /// `x Wᵀ` for `x` `[m, cols]` (any strides) with `m ≤ XWT_MAX_M`: `[m, rows]`, a launch per
    /// part.
    pub(crate) fn xwt(x: &CubeTensor, w: &OnDevice) -> CubeTensor {
        let m = x.meta.shape()[0];
        debug_assert!(m <= XWT_MAX_M);
        let out = empty_f32(x, &[m, w.rows]);
        if m == 0 || w.rows == 0 {
            return out;
        }
        const MAX_CUBES_PER_AXIS: usize = 65_535;
        for p in &w.parts {
            let cubes_x = p.rows.clamp(1, MAX_CUBES_PER_AXIS);
            let cubes_y = p.rows.div_ceil(cubes_x);
            // SAFETY: cube `row < part rows` reads the part's row `row` of `qs` (and its
            // scales) at weights `j < cols`, `x[i, j]` at `i < m`, `j < cols` through x's
            // strides, and writes `out[i, row0 + row]` (contiguous `[m, rows]`, row0 + row <
            // rows); shared indices stay below UNITS · m.
            unsafe {
                xwt_kernel::launch_unchecked(
                    &x.client,
                    CubeCount::Static(cubes_x as u32, cubes_y as u32, 1),
                    CubeDim::new_1d(UNITS as u32),
                    x.clone().into_tensor_arg(),
                    p.qs.clone().into_tensor_arg(),
                    p.scales.clone().into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    p.rows as u32,
                    p.row0 as u32,
                    w.rows as u32,
                    w.row_bytes as u32,
                    w.layout.code(),
                    UNITS,
                    m,
                );
            }
        }
        out
    }

    /// The device code (apart so cubecl's `Tensor` does not meet burn's).
    mod kernels {
        use cubecl::prelude::*;

        /// Byte `off` of `qs` (little-endian words).
        #[cube]
        fn byte(qs: &Tensor<u32>, off: usize) -> u32 {
            let shift = ((off % 4) * 8) as u32;
            (qs[off / 4] >> shift) & 0xFFu32
        }

        /// The little-endian u16 at byte `off`.
        #[cube]
        fn u16_at(qs: &Tensor<u32>, off: usize) -> u32 {
            byte(qs, off) | (byte(qs, off + 1) << 8u32)
        }

        /// An i8 as i32.
        #[cube]
        fn signed(b: u32) -> i32 {
            let v = b as i32;
            let mut out = v;
            if v > 127i32 {
                out = v - 256i32;
            }
            out
        }

        /// The f16 at byte `off`, widened exactly (subnormals included).
        #[cube]
        #[allow(unused_assignments)]
        fn f16_at(qs: &Tensor<u32>, off: usize) -> f32 {
            let h = u16_at(qs, off);
            let sign = (h & 0x8000u32) << 16u32;
            let exp = (h >> 10u32) & 0x1Fu32;
            let mant = h & 0x3FFu32;
            let mut out = 0.0f32;
            if exp == 0u32 {
                // mant · 2⁻²⁴, exact in f32.
                let mag = f32::cast_from(mant) * 5.960_464_5e-8f32;
                out = mag;
                if sign != 0u32 {
                    out = -mag;
                }
            } else if exp == 31u32 {
                out = f32::reinterpret(sign | 0x7F80_0000u32 | (mant << 13u32));
            } else {
                out = f32::reinterpret(sign | ((exp + 112u32) << 23u32) | (mant << 13u32));
            }
            out
        }

        /// The affine map of a group of 16 weights: weight `j` of the group is `a · q_j + b`
        /// with `q_j` from [`quant`]. Every layout's scales are shared by 16 weights at least.
        #[derive(CubeType)]
        pub(super) struct Group {
            a: f32,
            b: f32,
        }

        /// The map of group `g` (weights `16g .. 16g + 16`) of row `row`: the host
        /// dequantizers' `d·q`, `d·q + m` and `(d·sc)·q − dmin·m` as `a · q + b`, the same
        /// products and sums (`x − y` is `x + (−y)` in IEEE arithmetic; `+ 0` changes nothing).
        #[cube]
        #[allow(clippy::too_many_arguments, unused_assignments)]
        fn group(
            qs: &Tensor<u32>,
            scales: &Tensor<f32>,
            row: usize,
            g: usize,
            cols: usize,
            row_bytes: usize,
            #[comptime] layout: u32,
        ) -> Group {
            let mut a = 1.0f32;
            let mut b = 0.0f32;
            let col = g * 16;
            if comptime![layout <= 1] {
                // F16 / BF16: `quant` is the value.
            } else if comptime![layout <= 4] {
                // Repacked Q8_0 / Q4_0 / Q4_1: block gb of the whole matrix.
                let gb = row * (cols / 32) + col / 32;
                if comptime![layout == 4] {
                    a = scales[2 * gb];
                    b = scales[2 * gb + 1];
                } else {
                    a = scales[gb];
                }
            } else if comptime![layout <= 6] {
                // Q5_0 (22 bytes) / Q5_1 (24 bytes).
                if comptime![layout == 5] {
                    a = f16_at(qs, row * row_bytes + (col / 32) * 22);
                } else {
                    let base = row * row_bytes + (col / 32) * 24;
                    a = f16_at(qs, base);
                    b = f16_at(qs, base + 2);
                }
            } else {
                let j = col % 256;
                let sb = col / 256;
                if comptime![layout == 7] {
                    // Q2_K (84 bytes): scale group h·8 + s·2 + l/16.
                    let base = row * row_bytes + sb * 84;
                    let sc = byte(qs, base + (j / 128) * 8 + ((j % 128) / 32) * 2 + (j % 32) / 16);
                    a = f16_at(qs, base + 80) * f32::cast_from(sc & 15u32);
                    b = -(f16_at(qs, base + 82) * f32::cast_from(sc >> 4u32));
                } else if comptime![layout == 8] {
                    // Q3_K (110 bytes).
                    let base = row * row_bytes + sb * 110;
                    let idx = (j / 128) * 8 + ((j % 128) / 32) * 2 + (j % 32) / 16;
                    let low = (byte(qs, base + 96 + idx % 8) >> ((4 * (idx / 8)) as u32)) & 15u32;
                    let high = (byte(qs, base + 104 + idx % 4) >> ((2 * (idx / 4)) as u32)) & 3u32;
                    let scale = (low | (high << 4u32)) as i32 - 32i32;
                    a = f16_at(qs, base + 108) * f32::cast_from(scale);
                } else if comptime![layout <= 10] {
                    // Q4_K (144 bytes) / Q5_K (176 bytes): sub-block j2 of 32.
                    let mut bb = 144usize;
                    if comptime![layout == 10] {
                        bb = 176usize;
                    }
                    let base = row * row_bytes + sb * bb;
                    let j2 = j / 32;
                    let mut sc = 0u32;
                    let mut mn = 0u32;
                    if j2 < 4 {
                        sc = byte(qs, base + 4 + j2) & 63u32;
                        mn = byte(qs, base + 8 + j2) & 63u32;
                    } else {
                        let k = j2 - 4;
                        let md = byte(qs, base + 12 + k);
                        sc = (md & 15u32) | ((byte(qs, base + 4 + k) >> 2u32) & 48u32);
                        mn = (md >> 4u32) | ((byte(qs, base + 8 + k) >> 2u32) & 48u32);
                    }
                    a = f16_at(qs, base) * f32::cast_from(sc);
                    b = -(f16_at(qs, base + 2) * f32::cast_from(mn));
                } else if comptime![layout == 11] {
                    // Q6_K (210 bytes): scale h·8 + s·2 + half.
                    let base = row * row_bytes + sb * 210;
                    let p = j % 128;
                    let sc = signed(byte(qs, base + 192 + (j / 128) * 8 + (p / 32) * 2 + (p % 32) / 16));
                    a = f16_at(qs, base + 208) * f32::cast_from(sc);
                } else {
                    // Q8_K (292 bytes; d is f32).
                    let base = row * row_bytes + sb * 292;
                    a = f32::reinterpret(u16_at(qs, base) | (u16_at(qs, base + 2) << 16u32));
                }
            }
            Group { a, b }
        }

        /// The quant of weight (row, col) with its layout's offset (f16/bf16: the value).
        #[cube]
        #[allow(clippy::too_many_arguments, unused_assignments)]
        fn quant(
            qs: &Tensor<u32>,
            row: usize,
            col: usize,
            cols: usize,
            row_bytes: usize,
            #[comptime] layout: u32,
        ) -> f32 {
            let mut q = 0.0f32;
            if comptime![layout == 0] {
                q = f16_at(qs, row * row_bytes + col * 2);
            } else if comptime![layout == 1] {
                q = f32::reinterpret(u16_at(qs, row * row_bytes + col * 2) << 16u32);
            } else if comptime![layout <= 4] {
                let gb = row * (cols / 32) + col / 32;
                let j = col % 32;
                if comptime![layout == 2] {
                    q = f32::cast_from(signed(byte(qs, gb * 32 + j)));
                } else {
                    let v = byte(qs, gb * 16 + j % 16);
                    let mut n = v & 15u32;
                    if j >= 16 {
                        n = v >> 4u32;
                    }
                    if comptime![layout == 3] {
                        q = f32::cast_from(n as i32 - 8i32);
                    } else {
                        q = f32::cast_from(n);
                    }
                }
            } else if comptime![layout <= 6] {
                let j = col % 32;
                let mut bb = 22usize;
                let mut qh_at = 2usize;
                if comptime![layout == 6] {
                    bb = 24usize;
                    qh_at = 4usize;
                }
                let base = row * row_bytes + (col / 32) * bb;
                let qh = u16_at(qs, base + qh_at) | (u16_at(qs, base + qh_at + 2) << 16u32);
                let v = byte(qs, base + qh_at + 4 + j % 16);
                let mut n = v & 15u32;
                if j >= 16 {
                    n = v >> 4u32;
                }
                n |= ((qh >> (j as u32)) & 1u32) << 4u32;
                if comptime![layout == 5] {
                    q = f32::cast_from(n as i32 - 16i32);
                } else {
                    q = f32::cast_from(n);
                }
            } else {
                let j = col % 256;
                let sb = col / 256;
                let h = j / 128;
                let s = (j % 128) / 32;
                let l = j % 32;
                if comptime![layout == 7] {
                    let base = row * row_bytes + sb * 84;
                    q = f32::cast_from((byte(qs, base + 16 + h * 32 + l) >> ((2 * s) as u32)) & 3u32);
                } else if comptime![layout == 8] {
                    let base = row * row_bytes + sb * 110;
                    let low = ((byte(qs, base + 32 + h * 32 + l) >> ((2 * s) as u32)) & 3u32) as i32;
                    let hb = (((byte(qs, base + l) >> ((h * 4 + s) as u32)) & 1u32) ^ 1u32) as i32;
                    q = f32::cast_from(low - 4i32 * hb);
                } else if comptime![layout <= 10] {
                    let j2 = j / 32;
                    let c = j2 / 2;
                    let sh = (4 * (j2 % 2)) as u32;
                    if comptime![layout == 9] {
                        let base = row * row_bytes + sb * 144;
                        q = f32::cast_from((byte(qs, base + 16 + c * 32 + l) >> sh) & 15u32);
                    } else {
                        let base = row * row_bytes + sb * 176;
                        let mut n = (byte(qs, base + 48 + c * 32 + l) >> sh) & 15u32;
                        n |= ((byte(qs, base + 16 + l) >> (j2 as u32)) & 1u32) << 4u32;
                        q = f32::cast_from(n);
                    }
                } else if comptime![layout == 11] {
                    let base = row * row_bytes + sb * 210;
                    let p = j % 128;
                    let half = (p % 32) / 16;
                    let l16 = p % 16;
                    let lo = byte(qs, base + h * 64 + (s % 2) * 32 + half * 16 + l16);
                    let hi = byte(qs, base + 128 + h * 32 + half * 16 + l16);
                    let low = (lo >> ((4 * (s / 2)) as u32)) & 15u32;
                    let high = (hi >> ((2 * s) as u32)) & 3u32;
                    q = f32::cast_from((low | (high << 4u32)) as i32 - 32i32);
                } else {
                    let base = row * row_bytes + sb * 292;
                    q = f32::cast_from(signed(byte(qs, base + 4 + j)));
                }
            }
            q
        }

        /// Weight (row, col) of the matrix (see the module docs for the layouts).
        #[cube]
        fn weight(
            qs: &Tensor<u32>,
            scales: &Tensor<f32>,
            row: usize,
            col: usize,
            cols: usize,
            row_bytes: usize,
            #[comptime] layout: u32,
        ) -> f32 {
            let p = group(qs, scales, row, col / 16, cols, row_bytes, layout);
            p.a * quant(qs, row, col, cols, row_bytes, layout) + p.b
        }

        #[cube(launch_unchecked)]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn dequantize_kernel(
            qs: &Tensor<u32>,
            scales: &Tensor<f32>,
            out: &mut Tensor<f32>,
            r0: u32,
            elems: u32,
            cols: u32,
            row_bytes: u32,
            #[comptime] layout: u32,
        ) {
            let i = ABSOLUTE_POS;
            if i >= elems as usize {
                terminate!();
            }
            let c = cols as usize;
            out[i] = weight(qs, scales, r0 as usize + i / c, i % c, c, row_bytes as usize, layout);
        }

        #[cube(launch_unchecked)]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn xwt_kernel(
            x: &Tensor<f32>,
            qs: &Tensor<u32>,
            scales: &Tensor<f32>,
            out: &mut Tensor<f32>,
            rows: u32,
            row0: u32,
            out_rows: u32,
            row_bytes: u32,
            #[comptime] layout: u32,
            #[comptime] units: usize,
            #[comptime] m: usize,
        ) {
            let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
            if row >= rows as usize {
                terminate!();
            }
            let cols = x.shape(1);
            let unit = UNIT_POS_X as usize;
            let mut acc = Array::<f32>::new(m);
            #[unroll]
            for i in 0..m {
                acc[i] = 0.0f32;
            }
            // Unit `unit` takes the groups of 16 weights `unit, unit + units, …`: the group's
            // scales once, then its weights.
            let groups = cols / 16;
            let steps = groups.div_ceil(units);
            for k in 0..steps {
                let g = k * units + unit;
                if g < groups {
                    let p = group(qs, scales, row, g, cols, row_bytes as usize, layout);
                    #[unroll]
                    for e in 0..16 {
                        let j = g * 16 + e;
                        let wv = p.a * quant(qs, row, j, cols, row_bytes as usize, layout) + p.b;
                        #[unroll]
                        for i in 0..m {
                            acc[i] += wv * x[i * x.stride(0) + j * x.stride(1)];
                        }
                    }
                }
            }
            let mut partial = Shared::<[f32]>::new_slice(units * m);
            #[unroll]
            for i in 0..m {
                partial[i * units + unit] = acc[i];
            }
            sync_cube();
            if unit < m {
                let mut sum = 0.0f32;
                for u in 0..units {
                    sum += partial[unit * units + u];
                }
                out[unit * (out_rows as usize) + row0 as usize + row] = sum;
            }
        }
    }
}
