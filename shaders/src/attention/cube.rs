//! The fused attention as cubecl kernels on burn's cubecl (wgpu) backend: the forward and the
//! FlashAttention-2 backward, on the device, with the same contract as the host kernels of
//! `host.rs` (see the module docs of `attention`). Nothing is read back to the host.
//!
//! Three jobs in two kernel functions (`forward_kernel` also does dq), each a grid of cubes of
//! [`rows`] units, one unit per row:
//! - **forward**: a cube per (query block, head, batch row); each unit owns one query row, keeps
//!   its (pre-scaled) query, running maximum, running sum and output accumulator in registers,
//!   and walks the keys in tiles staged in shared memory by the cube: the prefix's keys (all
//!   visible), then its own keys up to the block's last row (causal). It writes the output row
//!   and the row's log-sum-exp.
//! - **dq**: the same walk; per key it recomputes `p = exp(s − lse)` and adds
//!   `p (dO·v − D) · k` to the row's dq, where `D = dO·O` is the row's own dot product.
//! - **dk/dv**: a cube per (key block, kv head, batch row); each unit owns one key row, keeps its
//!   key, value, dk and dv in registers, and walks the query rows that see it (every query head
//!   of its kv head's group; queries at or after it for own keys; every query of every batch row
//!   for a prefix key) in tiles of staged `q`, `dO`, `lse` and `D`. It adds `p · dO` to dv and
//!   `p (dO·v − D) · q` to dk.
//!
//! dq and dk/dv are separate kernels so that each output row has one writer: no atomics, and the
//! sums run in a fixed order (the result does not depend on scheduling). `p` is computed twice,
//! once per kernel, as in FlashAttention-2's separate-kernel variant. No `[S, S]` buffer exists.
//!
//! The running maximum starts at `-3e38`, not `-inf` (WGSL may replace runtime infinities). Every
//! query row sees at least its own key, so its sum is at least 1.
//!
//! Loops over the head dimension are unrolled (`hd` is a compile-time constant of each kernel).
//! Besides saving the loop overhead, this keeps the loop count of an invocation near the number
//! of keys it visits: lavapipe (llvmpipe) ends a shader after 65,535 loop iterations an
//! invocation, and with rolled loops rows past about 450 keys at hd = 64 were never written.
//!
//! Shared memory: the forward and dq stage `2 · rows · hd` floats, dk/dv `2 · rows · (hd + 1)`;
//! [`rows`] keeps that at or under 8 KiB for `hd ≥ 32`, inside WebGPU's 16 KiB default.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::DType;
use cubecl::{CubeCount, CubeDim};

use device::{dkdv_kernel, forward_kernel};

/// Where a running maximum starts (a finite stand-in for `-inf`).
const NEG_START: f32 = -3.0e38;

/// Rows of a tile (and units of a cube) for head size `hd`: 1,024 / hd, within 4..=32.
pub(crate) fn rows(hd: usize) -> usize {
    (1024 / hd.max(1)).clamp(4, 32)
}

/// The device code, apart so cubecl's `Tensor` does not meet burn's.
mod device {
    use cubecl::prelude::*;

    /// Stages row `row` of `[B, KVH, L, hd]` tensor `t` (batch row `b`, kv head `kh`) at
    /// `dst[slot · hd ..]`, times `mul`.
    #[cube]
    fn stage(
        t: &Tensor<f32>,
        b: usize,
        kh: usize,
        row: usize,
        dst: &mut Shared<[f32]>,
        slot: usize,
        mul: f32,
        #[comptime] hd: usize,
    ) {
        let base = b * t.stride(0) + kh * t.stride(1) + row * t.stride(2);
        let sd = t.stride(3);
        #[unroll]
        for d in 0..hd {
            dst[slot * hd + d] = t[base + d * sd] * mul;
        }
    }

    /// The forward (`dq = false`) or the dq kernel (`dq = true`): see the module docs. In the
    /// dq kernel `o_or_dq` is written with dq and `d_o`, `o_in`, `lse_in` are read; in the
    /// forward `o_or_dq` gets the output and `lse_out` the log-sum-exp.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_kernel(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        pk: &Tensor<f32>,
        pv: &Tensor<f32>,
        o_in: &Tensor<f32>,
        d_o: &Tensor<f32>,
        lse_in: &Tensor<f32>,
        o_or_dq: &mut Tensor<f32>,
        lse_out: &mut Tensor<f32>,
        prefix_len: u32,
        scale: f32,
        neg_start: f32,
        #[comptime] hd: usize,
        #[comptime] rows: usize,
        #[comptime] dq: bool,
    ) {
        let blk = CUBE_POS_X as usize;
        let h = CUBE_POS_Y as usize;
        let b = CUBE_POS_Z as usize;
        let u = UNIT_POS_X as usize;
        let s = q.shape(2);
        let group = q.shape(1) / k.shape(1);
        let kh = h / group;
        let p = prefix_len as usize;
        let i = blk * rows + u;
        let active = i < s;

        // The unit's query row (pre-scaled), and in dq its dO row, lse and D = dO·O.
        let mut qv = Array::<f32>::new(hd);
        let mut acc = Array::<f32>::new(hd);
        let mut dov = Array::<f32>::new(hd);
        let mut lse_i = 0.0f32;
        let mut delta = 0.0f32;
        #[unroll]
        for d in 0..hd {
            qv[d] = 0.0f32;
            acc[d] = 0.0f32;
            dov[d] = 0.0f32;
        }
        if active {
            let qb = b * q.stride(0) + h * q.stride(1) + i * q.stride(2);
            #[unroll]
            for d in 0..hd {
                qv[d] = q[qb + d * q.stride(3)] * scale;
            }
            if dq {
                let ob = b * o_in.stride(0) + h * o_in.stride(1) + i * o_in.stride(2);
                let gb = b * d_o.stride(0) + h * d_o.stride(1) + i * d_o.stride(2);
                #[unroll]
                for d in 0..hd {
                    let g = d_o[gb + d * d_o.stride(3)];
                    dov[d] = g;
                    delta += g * o_in[ob + d * o_in.stride(3)];
                }
                lse_i = lse_in[b * lse_in.stride(0) + h * lse_in.stride(1) + i * lse_in.stride(2)];
            }
        }
        let mut m = neg_start;
        let mut l = 0.0f32;

        let mut ks = Shared::<[f32]>::new_slice(rows * hd);
        let mut vs = Shared::<[f32]>::new_slice(rows * hd);
        let prefix_tiles = p.div_ceil(rows);
        // Own keys up to the block's last row: tiles 0..=blk.
        let tiles = prefix_tiles + blk + 1;
        for t in 0..tiles {
            let from_prefix = t < prefix_tiles;
            let mut first = t * rows;
            let mut count = p;
            if !from_prefix {
                first = (t - prefix_tiles) * rows;
                count = s;
            }
            let j = first + u;
            if j < count {
                if from_prefix {
                    stage(pk, 0, kh, j, &mut ks, u, 1.0f32, hd);
                    stage(pv, 0, kh, j, &mut vs, u, 1.0f32, hd);
                } else {
                    stage(k, b, kh, j, &mut ks, u, 1.0f32, hd);
                    stage(v, b, kh, j, &mut vs, u, 1.0f32, hd);
                }
            }
            sync_cube();
            if active {
                for jj in 0..rows {
                    let j = first + jj;
                    let mut visible = j < count;
                    if !from_prefix {
                        visible = j <= i;
                    }
                    if visible {
                        let mut sc = 0.0f32;
                        #[unroll]
                        for d in 0..hd {
                            sc += qv[d] * ks[jj * hd + d];
                        }
                        if dq {
                            let pr = (sc - lse_i).exp();
                            let mut dp = 0.0f32;
                            #[unroll]
                            for d in 0..hd {
                                dp += dov[d] * vs[jj * hd + d];
                            }
                            let ds = pr * (dp - delta);
                            #[unroll]
                            for d in 0..hd {
                                acc[d] += ds * ks[jj * hd + d];
                            }
                        } else {
                            if sc > m {
                                let f = (m - sc).exp();
                                l = l * f + 1.0f32;
                                #[unroll]
                                for d in 0..hd {
                                    acc[d] = acc[d] * f + vs[jj * hd + d];
                                }
                                m = sc;
                            } else {
                                let pr = (sc - m).exp();
                                l += pr;
                                #[unroll]
                                for d in 0..hd {
                                    acc[d] += pr * vs[jj * hd + d];
                                }
                            }
                        }
                    }
                }
            }
            // Nobody restages the tile before everyone has read it.
            sync_cube();
        }

        if active {
            let heads = q.shape(1);
            let ob = ((b * heads + h) * s + i) * hd;
            if dq {
                #[unroll]
                for d in 0..hd {
                    o_or_dq[ob + d] = acc[d] * scale;
                }
            } else {
                let inv = 1.0f32 / l;
                #[unroll]
                for d in 0..hd {
                    o_or_dq[ob + d] = acc[d] * inv;
                }
                lse_out[(b * heads + h) * s + i] = m + l.ln();
            }
        }
    }

    /// The dk/dv kernel (see the module docs). `keys`, `values` are the own `[B, KVH, S, hd]` or,
    /// with `prefix`, the shared `[1, KVH, P, hd]`; `dk`, `dv` are contiguous in their shape.
    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dkdv_kernel(
        q: &Tensor<f32>,
        o: &Tensor<f32>,
        d_o: &Tensor<f32>,
        lse: &Tensor<f32>,
        keys: &Tensor<f32>,
        values: &Tensor<f32>,
        dk: &mut Tensor<f32>,
        dv: &mut Tensor<f32>,
        scale: f32,
        #[comptime] hd: usize,
        #[comptime] rows: usize,
        #[comptime] prefix: bool,
    ) {
        let blk = CUBE_POS_X as usize;
        let kh = CUBE_POS_Y as usize;
        let kb = CUBE_POS_Z as usize;
        let u = UNIT_POS_X as usize;
        let batch = q.shape(0);
        let heads = q.shape(1);
        let s = q.shape(2);
        let kv_heads = keys.shape(1);
        let n_keys = keys.shape(2);
        let group = heads / kv_heads;
        let j = blk * rows + u;
        let active = j < n_keys;

        let mut kv = Array::<f32>::new(hd);
        let mut vv = Array::<f32>::new(hd);
        let mut dkv = Array::<f32>::new(hd);
        let mut dvv = Array::<f32>::new(hd);
        #[unroll]
        for d in 0..hd {
            kv[d] = 0.0f32;
            vv[d] = 0.0f32;
            dkv[d] = 0.0f32;
            dvv[d] = 0.0f32;
        }
        if active {
            let kb_ = kb * keys.stride(0) + kh * keys.stride(1) + j * keys.stride(2);
            let vb = kb * values.stride(0) + kh * values.stride(1) + j * values.stride(2);
            #[unroll]
            for d in 0..hd {
                kv[d] = keys[kb_ + d * keys.stride(3)];
                vv[d] = values[vb + d * values.stride(3)];
            }
        }

        let mut qs = Shared::<[f32]>::new_slice(rows * hd);
        let mut gs = Shared::<[f32]>::new_slice(rows * hd);
        let mut lses = Shared::<[f32]>::new_slice(rows);
        let mut deltas = Shared::<[f32]>::new_slice(rows);
        // A prefix key is seen by every query of every batch row; an own key by the queries at
        // or after it in its batch row (query tiles from the key's block on).
        let mut b_first = kb;
        let mut b_end = kb + 1;
        let mut t_first = blk;
        if prefix {
            b_first = 0;
            b_end = batch;
            t_first = 0;
        }
        let q_tiles = s.div_ceil(rows);
        for bb in b_first..b_end {
            for g in 0..group {
                let h = kh * group + g;
                for t in t_first..q_tiles {
                    let i = t * rows + u;
                    if i < s {
                        stage(q, bb, h, i, &mut qs, u, scale, hd);
                        stage(d_o, bb, h, i, &mut gs, u, 1.0f32, hd);
                        let ob = bb * o.stride(0) + h * o.stride(1) + i * o.stride(2);
                        let mut delta = 0.0f32;
                        #[unroll]
                        for d in 0..hd {
                            delta += gs[u * hd + d] * o[ob + d * o.stride(3)];
                        }
                        deltas[u] = delta;
                        lses[u] = lse[bb * lse.stride(0) + h * lse.stride(1) + i * lse.stride(2)];
                    }
                    sync_cube();
                    if active {
                        for ii in 0..rows {
                            let i = t * rows + ii;
                            let mut visible = i < s;
                            if !prefix {
                                visible = visible && i >= j;
                            }
                            if visible {
                                let mut sc = 0.0f32;
                                let mut dp = 0.0f32;
                                #[unroll]
                                for d in 0..hd {
                                    sc += qs[ii * hd + d] * kv[d];
                                    dp += gs[ii * hd + d] * vv[d];
                                }
                                let pr = (sc - lses[ii]).exp();
                                let ds = pr * (dp - deltas[ii]);
                                #[unroll]
                                for d in 0..hd {
                                    dvv[d] += pr * gs[ii * hd + d];
                                    dkv[d] += ds * qs[ii * hd + d];
                                }
                            }
                        }
                    }
                    sync_cube();
                }
            }
        }

        if active {
            let ob = ((kb * kv_heads + kh) * n_keys + j) * hd;
            #[unroll]
            for d in 0..hd {
                dk[ob + d] = dkv[d];
                dv[ob + d] = dvv[d];
            }
        }
    }
}

/// A new contiguous f32 tensor of `shape` on `like`'s device (every element is written by the
/// kernel that receives it).
fn empty(like: &CubeTensor, shape: &[usize]) -> CubeTensor {
    crate::cube_alloc::empty(like, shape, DType::F32)
}

fn dims4(t: &CubeTensor) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

/// Launches [`forward_kernel`]: the forward's `(o, lse)` (lse `[B, H, S]`), or with `dq_from`
/// = `(o, lse, d_o)` dq (and an unused stand-in).
fn launch_rows(
    q: &CubeTensor,
    k: &CubeTensor,
    v: &CubeTensor,
    prefix: Option<&(CubeTensor, CubeTensor)>,
    dq_from: Option<(&CubeTensor, &CubeTensor, &CubeTensor)>,
) -> (CubeTensor, CubeTensor) {
    let [b, h, s, hd] = dims4(q);
    let rows = rows(hd);
    let (pk, pv) = prefix.map_or((k, v), |(a, c)| (a, c));
    let p = prefix.map_or(0, |(a, _)| dims4(a)[2]);
    let out = empty(q, &[b, h, s, hd]);
    let is_dq = dq_from.is_some();
    // The forward's lse; in dq a 1-element stand-in that is never written.
    let lse_out = if is_dq { empty(q, &[1]) } else { empty(q, &[b, h, s]) };
    let (o_in, lse_in, d_o) = dq_from.map_or((q, q, q), |x| x);
    let client = q.client.clone();
    // SAFETY: global reads of q, k, v, pk, pv, o, d_o and lse are guarded by `i < S`, `j < S` or
    // `j < P` against the shapes checked by the caller and go through each tensor's strides;
    // writes go to `out` (`[B, H, S, hd]`, contiguous) and `lse_out` (`[B, H, S]`) at `i < S`;
    // shared indices stay below `rows · hd`.
    unsafe {
        forward_kernel::launch_unchecked(
            &client,
            CubeCount::Static(s.div_ceil(rows) as u32, h as u32, b as u32),
            CubeDim::new_1d(rows as u32),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            pk.clone().into_tensor_arg(),
            pv.clone().into_tensor_arg(),
            o_in.clone().into_tensor_arg(),
            d_o.clone().into_tensor_arg(),
            lse_in.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse_out.clone().into_tensor_arg(),
            p as u32,
            1.0 / (hd as f32).sqrt(),
            NEG_START,
            hd,
            rows,
            is_dq,
        );
    }
    (out, lse_out)
}

/// `(o, lse)`: the forward on the device; lse is `[B, H, S]`.
pub(crate) fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    prefix: Option<(CubeTensor, CubeTensor)>,
) -> (CubeTensor, CubeTensor) {
    launch_rows(&q, &k, &v, prefix.as_ref(), None)
}

/// dk and dv of `keys`, `values` (own keys, or with `prefix` the shared ones).
#[allow(clippy::too_many_arguments)]
fn launch_dkdv(
    q: &CubeTensor,
    o: &CubeTensor,
    d_o: &CubeTensor,
    lse: &CubeTensor,
    keys: &CubeTensor,
    values: &CubeTensor,
    prefix: bool,
) -> (CubeTensor, CubeTensor) {
    let hd = dims4(q)[3];
    let [kb, kvh, n, _] = dims4(keys);
    let rows = rows(hd);
    let dk = empty(q, &[kb, kvh, n, hd]);
    let dv = empty(q, &[kb, kvh, n, hd]);
    let client = q.client.clone();
    // SAFETY: reads of q, o, d_o and lse are guarded by `i < S`, of keys and values by
    // `j < n_keys`, all through each tensor's strides; writes go to the contiguous dk, dv of the
    // keys' shape at `j < n_keys`; shared indices stay below `rows · hd` and `rows`.
    unsafe {
        dkdv_kernel::launch_unchecked(
            &client,
            CubeCount::Static(n.div_ceil(rows) as u32, kvh as u32, kb as u32),
            CubeDim::new_1d(rows as u32),
            q.clone().into_tensor_arg(),
            o.clone().into_tensor_arg(),
            d_o.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            keys.clone().into_tensor_arg(),
            values.clone().into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            1.0 / (hd as f32).sqrt(),
            hd,
            rows,
            prefix,
        );
    }
    (dk, dv)
}

/// The gradients on the device: `(dq, dk, dv, Some((dpk, dpv)) with a prefix)`.
#[allow(clippy::type_complexity)]
pub(crate) fn backward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    prefix: Option<(CubeTensor, CubeTensor)>,
    o: CubeTensor,
    lse: CubeTensor,
    d_o: CubeTensor,
) -> (CubeTensor, CubeTensor, CubeTensor, Option<(CubeTensor, CubeTensor)>) {
    let (dq, _) = launch_rows(&q, &k, &v, prefix.as_ref(), Some((&o, &lse, &d_o)));
    let (dk, dv) = launch_dkdv(&q, &o, &d_o, &lse, &k, &v, false);
    let prefix_grads = prefix
        .as_ref()
        .map(|(pk, pv)| launch_dkdv(&q, &o, &d_o, &lse, pk, pv, true));
    (dq, dk, dv, prefix_grads)
}
