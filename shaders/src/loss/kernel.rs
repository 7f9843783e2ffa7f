//! The per-chunk online log-sum-exp step as a cubecl kernel, on burn's cubecl (wgpu) backend.
//!
//! Given one chunk's logits `z` (`[T, C]`, the chunk's matmul output) and the running per-row
//! state `(m, s)` (`[T]` each: the maximum so far and `Σ exp(z − m)` so far), one launch updates
//! the state in place: `m' = max(m, max_c z)`, `s' = s·exp(m − m') + Σ_c exp(z − m')`. Its twin is
//! the burn-ops step in `chunked.rs` (row max, subtract, exp, row sum and the `[T]` rescaling: several
//! launches and two `[T, C]` temporaries per chunk), which every other backend runs.
//!
//! Launch shape: one cube of [`UNITS`] units per row (rows beyond 65,535 go on Y). Each unit walks
//! the row's columns `unit, unit + UNITS, …` keeping its own online `(max, sum)`; the cube then
//! combines the units' pairs through shared memory (unit 0, in unit order, so the result does not
//! depend on scheduling) and folds them into the running state. The running maximum starts at
//! `-3e38`, not `-inf`: WGSL may replace runtime infinities, so the kernel never relies on them
//! (`exp(-3e38 − m')` is 0 for any finite logit).

use burn::backend::wgpu::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use cube::online_lse_kernel;

/// Units per cube (one cube per row).
const UNITS: usize = 64;

/// Where the running maximum starts (a finite stand-in for `-inf`).
pub(super) const NEG_START: f32 = -3.0e38;

mod cube {
    use cubecl::prelude::*;

    #[cube(launch_unchecked)]
    pub(super) fn online_lse_kernel(
        z: &Tensor<f32>,
        m: &mut Tensor<f32>,
        s: &mut Tensor<f32>,
        neg_start: f32,
        #[comptime] units: usize,
    ) {
        let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        if row >= z.shape(0) {
            terminate!();
        }
        let c = z.shape(1);
        let base = row * z.stride(0);
        let sc = z.stride(1);
        let unit = UNIT_POS_X as usize;

        let mut local_max = neg_start;
        let mut local_sum = 0.0f32;
        let steps = c.div_ceil(units);
        for k in 0..steps {
            let j = k * units + unit;
            if j < c {
                let v = z[base + j * sc];
                if v > local_max {
                    local_sum = local_sum * (local_max - v).exp() + 1.0f32;
                    local_max = v;
                } else {
                    local_sum += (v - local_max).exp();
                }
            }
        }

        let mut maxes = Shared::<[f32]>::new_slice(units);
        let mut sums = Shared::<[f32]>::new_slice(units);
        maxes[unit] = local_max;
        sums[unit] = local_sum;
        sync_cube();

        if unit == 0 {
            let mut chunk_max = neg_start;
            for u in 0..units {
                let v = maxes[u];
                if v > chunk_max {
                    chunk_max = v;
                }
            }
            let mut chunk_sum = 0.0f32;
            for u in 0..units {
                chunk_sum += sums[u] * (maxes[u] - chunk_max).exp();
            }
            let old_max = m[row];
            let mut new_max = old_max;
            if chunk_max > old_max {
                new_max = chunk_max;
            }
            s[row] = s[row] * (old_max - new_max).exp() + chunk_sum * (chunk_max - new_max).exp();
            m[row] = new_max;
        }
    }
}

/// Updates the running `(m, s)` (contiguous `[T]` f32, owned by the caller) with chunk `z`
/// (`[T, C]` f32, any strides) in one launch.
pub(super) fn online_lse_step(z: CubeTensor, m: CubeTensor, s: CubeTensor) -> (CubeTensor, CubeTensor) {
    let t = z.meta.shape()[0];
    let client = z.client.clone();
    const MAX_CUBES_PER_AXIS: usize = 65_535;
    let cubes_x = t.clamp(1, MAX_CUBES_PER_AXIS);
    let cubes_y = t.div_ceil(cubes_x).max(1);
    // SAFETY: global reads are guarded by `row < T` and `j < C` against `z`'s own shape and go
    // through its strides; `m` and `s` are contiguous `[T]` and indexed by `row < T`; shared
    // indices stay below `units`.
    unsafe {
        online_lse_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes_x as u32, cubes_y as u32, 1),
            CubeDim::new_1d(UNITS as u32),
            z.into_tensor_arg(),
            m.clone().into_tensor_arg(),
            s.clone().into_tensor_arg(),
            NEG_START,
            UNITS,
        );
    }
    (m, s)
}
