//! The `int8` precision's product for many activation rows (prompts): a register-tiled GEMM on
//! AVX-512 VNNI, with the same integers as the row kernels of [`super`] (and llama.cpp's), in
//! tiles of 4 activation rows × 32 weight rows instead of one dot product at a time.
//!
//! Weights are unpacked once per call into panels of 32 rows: per row, the unsigned quants `u`
//! `vpdpbusd` multiplies, and per sub-block of `S` weights (32; 16 for Q6_K) a scale `s` and,
//! for the formats with mins, a min `mn`, so that `w = s (u − o) + mn` with `o` the format's
//! offset. A panel stores four consecutive quants of its 32 rows side by side, so one 64-byte
//! load holds them for 16 rows. Activations are the int8 blocks of [`super::quantize_acts`]
//! (per 32 values: `dx`, quants `a`). Per sub-block,
//!
//! ```text
//! Σ w x ≈ s dx (Σ u a − o Σ a) + mn dx Σ a
//! ```
//!
//! The integer sums start at `−o Σa` and are filled by `vpdpbusd` with four activation bytes
//! broadcast to the 16 lanes; at the end of each sub-block they are scaled into f32
//! accumulators. 4 × 32 outputs stay in 8 f32 registers over the whole row.
//!
//! The unpacked panels take one byte a weight (the dequantizing f32 path they replace takes
//! four), and only during the call.

use rayon::prelude::*;

use super::{QuantizedActs, has_vnni};
use crate::quant::k_quants::scale_min_k4;
use crate::quant::{BLOCK, QuantMatrix, WeightFormat, f16_at, q5_pairs};

/// Weight rows per panel: two 16-lane registers.
const NR: usize = 32;
/// Activation rows per tile.
const MR: usize = 4;

/// How a format's weights unpack: `w = s (u − offset) + mn` per sub-block of `sub` weights.
#[derive(Debug, Clone, Copy)]
struct Unpacked {
    sub: usize,
    offset: i32,
    mins: bool,
}

fn unpacked(format: WeightFormat) -> Option<Unpacked> {
    let (sub, offset, mins) = match format {
        WeightFormat::Q8_0 => (32, 128, false),
        WeightFormat::Q4_0 => (32, 8, false),
        WeightFormat::Q4_1 => (32, 0, true),
        WeightFormat::Q5_0 => (32, 16, false),
        WeightFormat::Q5_1 => (32, 0, true),
        WeightFormat::Q4K | WeightFormat::Q5K => (32, 0, true),
        WeightFormat::Q6K => (16, 32, false),
        _ => return None,
    };
    Some(Unpacked { sub, offset, mins })
}

/// Whether [`matmul`] computes with `format` on this CPU (AVX-512 VNNI, and a format whose
/// blocks unpack to one scale per 16 or 32 weights).
pub fn supports(format: WeightFormat) -> bool {
    has_vnni() && unpacked(format).is_some()
}

/// Row `r` of `w` as unsigned quants (`u`, `w.cols` of them), scales and mins (`s`, `mn`: one
/// per sub-block).
fn unpack_row(w: &QuantMatrix, r: usize, u: &mut [u8], s: &mut [f32], mn: &mut [f32]) {
    let (scales, qs) = w.row(r);
    match w.format {
        WeightFormat::Q8_0 => {
            for ((ub, q), sb) in u
                .chunks_exact_mut(32)
                .zip(qs.chunks_exact(32))
                .zip(s.iter_mut().zip(scales))
            {
                // i8 + 128: the sign bit flipped.
                for (o, &q) in ub.iter_mut().zip(q) {
                    *o = q ^ 0x80;
                }
                *sb.0 = *sb.1;
            }
        }
        WeightFormat::Q4_0 | WeightFormat::Q4_1 => {
            let ns = w.format.scales_per_block();
            for (b, (ub, q)) in u.chunks_exact_mut(32).zip(qs.chunks_exact(16)).enumerate() {
                for j in 0..16 {
                    ub[j] = q[j] & 15;
                    ub[j + 16] = q[j] >> 4;
                }
                s[b] = scales[ns * b];
                if ns == 2 {
                    mn[b] = scales[2 * b + 1];
                }
            }
        }
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
            // Q5_0: d, qh, qs (22 bytes); Q5_1: d, m, qh, qs (24 bytes).
            let q5_1 = w.format == WeightFormat::Q5_1;
            let (bb, at) = if q5_1 { (24, 4) } else { (22, 2) };
            for (b, (ub, blk)) in u.chunks_exact_mut(32).zip(qs.chunks_exact(bb)).enumerate() {
                let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
                let (lo, hi) = ub.split_at_mut(16);
                q5_pairs(qh, &blk[at + 4..], |j, l, h| {
                    lo[j] = l as u8;
                    hi[j] = h as u8;
                });
                s[b] = f16_at(blk, 0);
                if q5_1 {
                    mn[b] = f16_at(blk, 2);
                }
            }
        }
        WeightFormat::Q4K | WeightFormat::Q5K => {
            // Sub-block `j = 2c + h` (32 weights): nibble `h` of `qs[c·32 + l]` (and for Q5_K
            // bit `j` of `qh[l]` on top); `w = (d·sc) q − dmin·m`.
            let q5 = w.format == WeightFormat::Q5K;
            let bb = if q5 { 176 } else { 144 };
            for (sb, (ub, blk)) in u.chunks_exact_mut(256).zip(qs.chunks_exact(bb)).enumerate() {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let (sc, m) = scale_min_k4(&blk[4..16]);
                let (qh, q) = if q5 {
                    (&blk[16..48], &blk[48..176])
                } else {
                    (&blk[..0], &blk[16..144])
                };
                for (j, out) in ub.chunks_exact_mut(32).enumerate() {
                    let (c, h) = (j / 2, j % 2);
                    for (l, o) in out.iter_mut().enumerate() {
                        let low = (q[c * 32 + l] >> (4 * h)) & 0x0F;
                        *o = if q5 { low | (((qh[l] >> j) & 1) << 4) } else { low };
                    }
                    s[8 * sb + j] = d * f32::from(sc[j]);
                    mn[8 * sb + j] = -(dmin * f32::from(m[j]));
                }
            }
        }
        WeightFormat::Q6K => {
            // Weight `h·128 + p·32 + half·16 + l`: low nibble `p / 2` of
            // `ql[h·64 + (p % 2)·32 + half·16 + l]`, bits `2p` of `qh[h·32 + half·16 + l]`;
            // its sub-block (16 weights) `h·8 + p·2 + half`; `w = (d·sc)(q − 32)`.
            for (sb, (ub, blk)) in u.chunks_exact_mut(256).zip(qs.chunks_exact(210)).enumerate() {
                let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
                let d = f16_at(blk, 208);
                for h in 0..2 {
                    for p in 0..4 {
                        for half in 0..2 {
                            let g = h * 8 + p * 2 + half;
                            let lo = &ql[h * 64 + (p % 2) * 32 + half * 16..][..16];
                            let hi = &qh[h * 32 + half * 16..][..16];
                            let out = &mut ub[16 * g..16 * (g + 1)];
                            for ((o, &lo), &hi) in out.iter_mut().zip(lo).zip(hi) {
                                *o = ((lo >> (4 * (p / 2))) & 0x0F) | (((hi >> (2 * p)) & 0x03) << 4);
                            }
                            s[16 * sb + g] = d * f32::from(sc[g] as i8);
                        }
                    }
                }
            }
        }
        other => unreachable!("{other:?} has no int8 unpacking (checked by `supports`)"),
    }
}

/// [`NR`] rows of `w` unpacked (zero rows past the last row of `w`).
struct Panel {
    /// `cols / 4` groups of `NR` rows × 4 quants.
    u: Vec<u8>,
    /// Per sub-block, `NR` scales.
    s: Vec<f32>,
    /// As `s`, for the mins (empty for the formats without).
    mn: Vec<f32>,
}

impl Panel {
    fn new(w: &QuantMatrix, p: usize, layout: Unpacked) -> Panel {
        let k = w.cols;
        let nsb = k / layout.sub;
        let mut u = vec![0u8; NR * k];
        let mut s = vec![0.0f32; NR * nsb];
        let mut mn = vec![0.0f32; if layout.mins { NR * nsb } else { 0 }];
        let (mut ur, mut sr, mut mr) = (vec![0u8; k], vec![0.0f32; nsb], vec![0.0f32; nsb]);
        for row in 0..NR.min(w.rows - p * NR) {
            unpack_row(w, p * NR + row, &mut ur, &mut sr, &mut mr);
            for (g, q4) in ur.chunks_exact(4).enumerate() {
                u[(g * NR + row) * 4..][..4].copy_from_slice(q4);
            }
            for b in 0..nsb {
                s[b * NR + row] = sr[b];
                if layout.mins {
                    mn[b * NR + row] = mr[b];
                }
            }
        }
        Panel { u, s, mn }
    }
}

/// `y = x W^T` (`[x.rows, w.rows]`) for a `w.format` that [`supports`] accepts.
pub fn matmul(x: &QuantizedActs, w: &QuantMatrix) -> Vec<f32> {
    let (m, n, k) = (x.rows, w.rows, w.cols);
    assert_eq!(x.cols, k, "activation width must match the weight");
    let layout = match unpacked(w.format) {
        Some(l) if has_vnni() => l,
        _ => panic!("the int8 GEMM does not cover {:?} on this CPU", w.format),
    };
    let panels: Vec<Panel> = (0..n.div_ceil(NR))
        .into_par_iter()
        .map(|p| Panel::new(w, p, layout))
        .collect();
    let (nsb, nb) = (k / layout.sub, k / BLOCK);
    // Per activation row and sub-block: the integer sums' start `−o Σa`, and `dx Σa` (the
    // factor of the mins).
    let mut start = vec![0i32; m * nsb];
    let mut dxsa = vec![0.0f32; if layout.mins { m * nsb } else { 0 }];
    for i in 0..m {
        for b in 0..nsb {
            let sa = if layout.sub == BLOCK {
                x.sum[i * nb + b]
            } else {
                x.q[i * k + b * layout.sub..][..layout.sub]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum()
            };
            start[i * nsb + b] = -layout.offset * sa;
            if layout.mins {
                dxsa[i * nsb + b] = x.d[i * nb + b * layout.sub / BLOCK] * sa as f32;
            }
        }
    }
    let threads = rayon::current_num_threads().max(1);
    // Rows per task: enough tasks to balance the threads; at most 256 rows (their int8
    // activations stay in L2 while every panel passes over them).
    let rows_per_task = m.div_ceil(threads * 4).clamp(MR, 256).next_multiple_of(MR);
    let mut y = vec![0.0f32; m * n];
    y.par_chunks_mut(rows_per_task * n).enumerate().for_each(|(task, yc)| {
        let i0 = task * rows_per_task;
        let rows = yc.len() / n;
        let mut tile = [[0.0f32; NR]; MR];
        for (p, panel) in panels.iter().enumerate() {
            let cols = NR.min(n - p * NR);
            for ii in (0..rows).step_by(MR) {
                let mr = MR.min(rows - ii);
                let args = Tile {
                    u: &panel.u,
                    s: &panel.s,
                    mn: &panel.mn,
                    nsb,
                    sub: layout.sub,
                    x,
                    start: &start,
                    dxsa: &dxsa,
                    row0: i0 + ii,
                };
                run_tile(mr, &args, &mut tile);
                for (r, t) in tile.iter().enumerate().take(mr) {
                    yc[(ii + r) * n + p * NR..][..cols].copy_from_slice(&t[..cols]);
                }
            }
        }
    });
    y
}

/// `tile[r][c]` for the first `mr` (1 to 4) activation rows of `t`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn run_tile(mr: usize, t: &Tile, tile: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `matmul` checked the CPU features; a tile holds a whole panel, and rows
    // `row0..row0 + mr` of the activations exist.
    unsafe {
        match mr {
            4 => x86::tile::<4>(t, tile),
            3 => x86::tile::<3>(t, tile),
            2 => x86::tile::<2>(t, tile),
            _ => x86::tile::<1>(t, tile),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the int8 GEMM runs on x86-64 only ({mr} rows, {} sub-blocks)", t.nsb);
}

/// One tile's operands: a panel, and activation rows from `row0` (read by the x86-64 kernel;
/// other targets never reach a tile, `matmul` refuses them first).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile<'a> {
    u: &'a [u8],
    s: &'a [f32],
    mn: &'a [f32],
    nsb: usize,
    sub: usize,
    x: &'a QuantizedActs,
    start: &'a [i32],
    dxsa: &'a [f32],
    row0: usize,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR, Tile};
    use crate::quant::BLOCK;

    /// `out[r][c]` = row `row0 + r` of the activations times panel row `c`, for `R` rows.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VNNI must be present; `t` must hold a whole panel and `R` activation
    /// rows from `t.row0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile<const R: usize>(t: &Tile, out: &mut [[f32; NR]; MR]) {
        let (k, nsb, sub) = (t.x.cols, t.nsb, t.sub);
        let nb = k / BLOCK;
        let mins = !t.mn.is_empty();
        let a: [*const u8; R] = std::array::from_fn(|r| t.x.q[(t.row0 + r) * k..].as_ptr().cast());
        let mut c0 = [_mm512_setzero_ps(); R];
        let mut c1 = [_mm512_setzero_ps(); R];
        // SAFETY (all pointer reads below): group `g < k / 4` of the panel is 128 bytes at
        // `g · 128`; activation row `r` holds `k` bytes; scales and mins `NR` per sub-block.
        unsafe {
            for b in 0..nsb {
                let mut acc0 = [_mm512_setzero_si512(); R];
                let mut acc1 = [_mm512_setzero_si512(); R];
                for r in 0..R {
                    let v = _mm512_set1_epi32(*t.start.get_unchecked((t.row0 + r) * nsb + b));
                    acc0[r] = v;
                    acc1[r] = v;
                }
                let g0 = b * sub / 4;
                for g in g0..g0 + sub / 4 {
                    let w0 = _mm512_loadu_si512(t.u.as_ptr().add(g * 4 * NR).cast());
                    let w1 = _mm512_loadu_si512(t.u.as_ptr().add(g * 4 * NR + 64).cast());
                    for r in 0..R {
                        let xb = _mm512_set1_epi32(a[r].add(4 * g).cast::<i32>().read_unaligned());
                        acc0[r] = _mm512_dpbusd_epi32(acc0[r], w0, xb);
                        acc1[r] = _mm512_dpbusd_epi32(acc1[r], w1, xb);
                    }
                }
                let s0 = _mm512_loadu_ps(t.s.as_ptr().add(b * NR));
                let s1 = _mm512_loadu_ps(t.s.as_ptr().add(b * NR + 16));
                for r in 0..R {
                    let dx = _mm512_set1_ps(*t.x.d.get_unchecked((t.row0 + r) * nb + b * sub / BLOCK));
                    c0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc0[r]), _mm512_mul_ps(s0, dx), c0[r]);
                    c1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc1[r]), _mm512_mul_ps(s1, dx), c1[r]);
                }
                if mins {
                    let m0 = _mm512_loadu_ps(t.mn.as_ptr().add(b * NR));
                    let m1 = _mm512_loadu_ps(t.mn.as_ptr().add(b * NR + 16));
                    for r in 0..R {
                        let f = _mm512_set1_ps(*t.dxsa.get_unchecked((t.row0 + r) * nsb + b));
                        c0[r] = _mm512_fmadd_ps(m0, f, c0[r]);
                        c1[r] = _mm512_fmadd_ps(m1, f, c1[r]);
                    }
                }
            }
            for r in 0..R {
                _mm512_storeu_ps(out[r].as_mut_ptr(), c0[r]);
                _mm512_storeu_ps(out[r].as_mut_ptr().add(16), c1[r]);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::quant::int8::{quantize_acts, row_matmul};

    /// A `[n, k]` matrix of random blocks with small scales (and mins), by the kernels' test
    /// helpers.
    pub(crate) fn random_matrix(format: WeightFormat, n: usize, k: usize, r: &mut impl rand::Rng) -> QuantMatrix {
        if format.is_raw_block() {
            crate::quant::raw_dots::tests::random_rows(format, n, k, r.random())
        } else {
            crate::quant::kernels::tests::random_matrix(format, n, k, r.random())
        }
    }

    /// Every format the GEMM covers, against the f64 product of the dequantized weights and the
    /// rounded activations (`a · dx`), and against the row kernels' int8 products of the same
    /// rows where they cover the format with the same rounding: equal up to f32 rounding, within 1e-5 of
    /// `Σ |a dx| (|w| + max |w|)` (the scale and min parts are summed apart, and each is at most
    /// that). Shapes with a partial panel (n = 45), a partial tile (m = 23) and a K-quant width.
    #[test]
    fn int8_gemm_equals_the_rounded_f64_product_and_the_row_kernels() {
        if !has_vnni() {
            eprintln!("no AVX-512 VNNI here: the int8 GEMM is not used");
            return;
        }
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        for format in [
            WeightFormat::Q8_0,
            WeightFormat::Q4_0,
            WeightFormat::Q4_1,
            WeightFormat::Q5_0,
            WeightFormat::Q5_1,
            WeightFormat::Q4K,
            WeightFormat::Q5K,
            WeightFormat::Q6K,
        ] {
            assert!(supports(format), "{format:?}");
            let (m, n, k) = (23, 45, 512);
            let w = random_matrix(format, n, k, &mut r);
            let dense = w.to_f32();
            let x: Vec<f32> = (0..m * k).map(|_| r.random_range(-2.0..2.0)).collect();
            let qx = quantize_acts(&x, m, k);
            let y = matmul(&qx, &w);
            // The K-quant row kernels round activations per super-block, not per block (their own
            // test checks them: `int8_raw_block_products_track_the_exact_ones`).
            let per_block_rows = !matches!(format, WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K);
            let rows3 = (per_block_rows && crate::quant::int8::supports(format))
                .then(|| row_matmul(&quantize_acts(&x[..3 * k], 3, k), &w));
            for j in 0..n {
                let wj = &dense[j * k..(j + 1) * k];
                let wmax = wj.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
                for i in 0..m {
                    let got = f64::from(y[i * n + j]);
                    let ax = |t: usize| f64::from(qx.q[i * k + t]) * f64::from(qx.d[(i * k + t) / BLOCK]);
                    let want: f64 = (0..k).map(|t| ax(t) * f64::from(wj[t])).sum();
                    let magnitude: f64 = (0..k).map(|t| ax(t).abs() * (f64::from(wj[t]).abs() + wmax)).sum();
                    let tol = 1e-5 * magnitude + 1e-6;
                    assert!((got - want).abs() <= tol, "{format:?} [{i}, {j}]: {got} vs {want}");
                    if let Some(y3) = &rows3
                        && i < 3
                    {
                        let row = f64::from(y3[i * n + j]);
                        assert!(
                            (got - row).abs() <= tol,
                            "{format:?} [{i}, {j}]: GEMM {got} vs row kernel {row}"
                        );
                    }
                }
            }
        }
    }
}
