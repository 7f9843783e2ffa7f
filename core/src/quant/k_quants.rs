//! ggml's K-quants: super-blocks of [`QK_K`] = 256 weights, dequantized exactly as gguf-py's
//! `gguf.quants` does it (the values transformers holds after loading a GGUF), in f32 with the
//! same operation order, so the results are equal bit for bit.
//!
//! Layouts (byte offsets in a super-block; `d`/`dmin` are f16 unless noted), from ggml's
//! `block_q*_K` structs and gguf-py's `dequantize_blocks`:
//! - **Q2_K** (84 bytes): `scales[16]` @0 (low nibble: scale, high: min, per 16 weights),
//!   `qs[64]` @16 (2 bits), `d` @80, `dmin` @82. `w = (d·sc) q − dmin·m`.
//! - **Q3_K** (110 bytes): `hmask[32]` @0 (the third bit, inverted), `qs[64]` @32 (low 2 bits),
//!   `scales[12]` @96 (sixteen 6-bit scales, offset by 32), `d` @108. `w = (d·(sc − 32)) q` with
//!   `q = low − 4·(1 − high)`.
//! - **Q4_K** (144 bytes): `d` @0, `dmin` @2, `scales[12]` @4 (eight 6-bit scales and mins),
//!   `qs[128]` @16 (4 bits). `w = (d·sc) q − dmin·m` per 32 weights.
//! - **Q5_K** (176 bytes): as Q4_K with `qh[32]` @16 (the fifth bit) and `qs[128]` @48.
//! - **Q6_K** (210 bytes): `ql[128]` @0 (low 4 bits), `qh[64]` @128 (high 2 bits), `scales[16]`
//!   @192 (i8, per 16 weights), `d` @208. `w = (d·sc)(q − 32)`.
//! - **Q8_K** (292 bytes): `d` @0 (**f32**), `qs[256]` @4 (i8), `bsums[16]` @260 (i16, the
//!   sums of 16 quants each, for dot products; not needed to dequantize). `w = d q`. ggml uses
//!   it for activations; gguf-py has no dequantizer for it (ggml's `dequantize_row_q8_K` is the
//!   reference).

use half::f16;

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q2_K super-block `b` (84 bytes) into `y` (256 weights).
#[inline(always)]
pub fn dequantize_q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    // Weight `h·128 + s·32 + l` is bits `2s` of `qs[h·32 + l]`; its scale is the 16-weight
    // group's, `h·8 + s·2 + l / 16`.
    for h in 0..2 {
        for s in 0..4 {
            for half in 0..2 {
                let sc = scales[h * 8 + s * 2 + half];
                let dl = d * f32::from(sc & 0xF);
                let ml = dmin * f32::from(sc >> 4);
                let q = &qs[h * 32 + half * 16..][..16];
                let o = &mut y[h * 128 + s * 32 + half * 16..][..16];
                for (w, &q) in o.iter_mut().zip(q) {
                    *w = dl * f32::from((q >> (2 * s)) & 3) - ml;
                }
            }
        }
    }
}

/// A Q3_K super-block's sixteen scales times `d` (`sc`: its 12 scale bytes). Scale `j`: low
/// nibble of `sc[j]` (j < 8) or high nibble of `sc[j − 8]`, with bits `2 (j / 4)` of
/// `sc[8 + j % 4]` on top; minus 32.
#[inline(always)]
pub(crate) fn q3_k_scales(sc: &[u8], d: f32) -> [f32; 16] {
    let mut dl = [0.0f32; 16];
    for (j, dl) in dl.iter_mut().enumerate() {
        let low = (sc[j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        let scale = ((low | (high << 4)) as i8).wrapping_sub(32);
        *dl = d * f32::from(scale);
    }
    dl
}

/// Q3_K super-block `b` (110 bytes) into `y` (256 weights).
#[inline(always)]
pub fn dequantize_q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let dl = q3_k_scales(sc, d);
    // Weight `h·128 + s·32 + l`: low bits `2s` of `qs[h·32 + l]`, high bit `h·4 + s` of
    // `hmask[l]` (set: no offset; clear: −4).
    for h in 0..2 {
        for s in 0..4 {
            for half in 0..2 {
                let dlj = dl[h * 8 + s * 2 + half];
                let q = &qs[h * 32 + half * 16..][..16];
                let hm = &hmask[half * 16..][..16];
                let o = &mut y[h * 128 + s * 32 + half * 16..][..16];
                for ((w, &q), &hm) in o.iter_mut().zip(q).zip(hm) {
                    let low = ((q >> (2 * s)) & 3) as i8;
                    let high = ((hm >> (h * 4 + s)) & 1) ^ 1;
                    *w = dlj * f32::from(low - ((high << 2) as i8));
                }
            }
        }
    }
}

/// The eight 6-bit scales and mins of a Q4_K / Q5_K super-block (`s`: its 12 scale bytes).
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (d, m, md) = (&s[..4], &s[4..8], &s[8..12]);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for k in 0..4 {
        sc[k] = d[k] & 0x3F;
        sc[k + 4] = (md[k] & 0x0F) | ((d[k] >> 2) & 0x30);
        mn[k] = m[k] & 0x3F;
        mn[k + 4] = (md[k] >> 4) | ((m[k] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K super-block `b` (144 bytes) into `y` (256 weights).
#[inline(always)]
pub fn dequantize_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    // Sub-block `j = 2c + s` (32 weights): nibble `s` of `qs[c·32 + l]`.
    for (j, out) in y[..QK_K].chunks_exact_mut(32).enumerate() {
        let (c, s) = (j / 2, j % 2);
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        for (w, &q) in out.iter_mut().zip(&qs[c * 32..][..32]) {
            *w = dl * f32::from((q >> (4 * s)) & 0x0F) - ml;
        }
    }
}

/// Q5_K super-block `b` (176 bytes) into `y` (256 weights).
#[inline(always)]
pub fn dequantize_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    // Sub-block `j = 2c + s`: nibble `s` of `qs[c·32 + l]`, fifth bit `j` of `qh[l]`.
    for (j, out) in y[..QK_K].chunks_exact_mut(32).enumerate() {
        let (c, s) = (j / 2, j % 2);
        let dl = d * f32::from(sc[j]);
        let ml = dmin * f32::from(mn[j]);
        for ((w, &q), &h) in out.iter_mut().zip(&qs[c * 32..][..32]).zip(qh) {
            let q = ((q >> (4 * s)) & 0x0F) | (((h >> j) & 1) << 4);
            *w = dl * f32::from(q) - ml;
        }
    }
}

/// Q6_K super-block `b` (210 bytes) into `y` (256 weights).
#[inline(always)]
pub fn dequantize_q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    // Weight `h·128 + p` (`p = s·32 + half·16 + l`): low nibble `s / 2` of
    // `ql[h·64 + (s % 2)·32 + half·16 + l]`, high bits `2s` of `qh[h·32 + half·16 + l]`;
    // scale `h·8 + s·2 + half`.
    for h in 0..2 {
        for s in 0..4 {
            for half in 0..2 {
                let dl = d * f32::from(scales[h * 8 + s * 2 + half] as i8);
                let lo = &ql[h * 64 + (s % 2) * 32 + half * 16..][..16];
                let hi = &qh[h * 32 + half * 16..][..16];
                let o = &mut y[h * 128 + s * 32 + half * 16..][..16];
                for ((w, &lo), &hi) in o.iter_mut().zip(lo).zip(hi) {
                    let low = (lo >> (4 * (s / 2))) & 0x0F;
                    let high = (hi >> (2 * s)) & 0x03;
                    *w = dl * f32::from(((low | (high << 4)) as i8) - 32);
                }
            }
        }
    }
}

/// Q8_K super-block `b` (292 bytes) into `y` (256 weights).
#[inline(always)]
pub fn dequantize_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (w, &q) in y[..QK_K].iter_mut().zip(&b[4..260]) {
        *w = d * f32::from(q as i8);
    }
}
