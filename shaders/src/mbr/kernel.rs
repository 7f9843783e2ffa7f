//! The MBR cubecl kernel and its launch on burn's cubecl (wgpu) backend.
//!
//! Launch shape: one cube (workgroup) per question, 8 × 8 = 64 units. Doing a whole question
//! in one cube is what lets a single launch also produce `scores` and `chosen`: the row sums
//! and the argmax need every similarity of the question, and a cube is the largest group that
//! can synchronise (no grid-wide barrier, no float atomics in WGSL). MBR questions are small
//! (N ≤ ~64 samples) and many (B in the hundreds or thousands), so B cubes fill the device;
//! 64 units stays far below every adapter's workgroup limit (WebGPU guarantees 256).
//!
//! Inside a cube the `N × N` similarity matrix is computed in 32 × 32 blocks (one block for
//! the usual N ≤ 32). Unit `(uy, ux)` owns a 4 × 4 micro-tile of each block: rows
//! `ti·32 + 4·uy + a`, columns `tj·32 + 4·ux + c`. For each block pair the cube walks `D` in
//! slices of 32: all units stage the slice of the block's 32 row samples and 32 column samples
//! into shared memory as vec4s of 4 consecutive samples (each global element is read once per
//! block pair; consecutive units read consecutive elements), then every unit runs over the
//! slice with 2 vec4 loads per 16 FMAs (register blocking). Any `N` and `D` work:
//! out-of-range samples and elements are staged as zeros and their results never written.
//! This layout is also what makes the kernel usable on lavapipe, where each shared-memory load
//! of a non-uniform address costs one scalar load per lane: a scalar 1-output-per-unit version
//! ran 3-4× slower there.
//!
//! Row sums are accumulated in registers while the blocks of one block row are visited, then
//! reduced across `ux` through shared memory in a fixed order that is the same for every row,
//! so two identical samples get bit-identical scores. The argmax is a running one kept by
//! unit 0: after each block row it scans that block row's scores in index order and replaces
//! the best only on a strictly greater score, which is exactly "first argmax". Subgroup
//! ("plane") operations are not used: wgpu turns them off on CPU adapters like lavapipe, and
//! the serial scan over N scores is negligible next to the N²·D products. The similarity
//! matrix is symmetric, but the kernel computes both triangles: a mirrored write would need
//! the column sums too (a second cross-unit reduction), for a gain only when N > 32.
//!
//! Every unit evaluates the same loop bounds (they depend only on N and D), so all
//! `sync_cube()` barriers are reached in the same control flow by the whole cube. Indexing
//! goes through the input's strides, so non-contiguous burn views need no copy. Indices are
//! 32-bit (the launch's default address type); [`launch`] refuses batches that need more.

use burn::backend::wgpu::CubeTensor;
use burn::backend::{Cube, DispatchDevice};
use burn::prelude::{Device, Int, Tensor};
use burn::tensor::DType;
use cubecl::{CubeCount, CubeDim};

use super::{MbrError, MbrOutput, as_f32};
use cube::mbr_kernel;

/// Units per cube along each axis (the cube is UNITS × UNITS).
const UNITS: usize = 8;
/// Each unit computes MICRO × MICRO similarities of a block, so a block is 32 × 32. MICRO is
/// also the vector width of the shared slices (vec4), so it is 4.
const MICRO: usize = 4;
/// Width of the D-slice staged in shared memory per step.
const SLICE: usize = 32;
// The kernel's layout assumptions: vec4 micro-tiles, a slice staged in whole rounds of the
// cube's units, and enough units for one per block row in the score reduction.
const _: () = assert!(MICRO == 4 && (SLICE * UNITS).is_multiple_of(UNITS * UNITS) && UNITS * UNITS >= UNITS * MICRO);

/// The device code, apart so cubecl's `Tensor` does not meet burn's.
mod cube {
    use cubecl::prelude::*;

    #[cube(launch_unchecked)]
    pub(super) fn mbr_kernel(
        emb: &Tensor<f32>,
        similarity: &mut Tensor<f32>,
        scores: &mut Tensor<f32>,
        chosen: &mut Tensor<i32>,
        n_f32: f32,
        #[comptime] units: usize,
        #[comptime] micro: usize,
        #[comptime] slice: usize,
    ) {
        // The batch may exceed the 65535 cubes allowed along one axis; it is laid out on X then Y.
        let b = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        if b >= emb.shape(0) {
            // Whole cubes leave together, so the barriers below stay uniform.
            terminate!();
        }
        let n = emb.shape(1);
        let d = emb.shape(2);
        let base = b * emb.stride(0);
        let s_n = emb.stride(1);
        let s_d = emb.stride(2);
        let ux = UNIT_POS_X as usize;
        let uy = UNIT_POS_Y as usize;
        let unit = uy * units + ux;
        let n_units = units * units;
        let block = units * micro;

        // rows_v[k * units + g]: samples 4g..4g+4 of the block's rows at element k of the
        // current D-slice, as one vec4; cols_v the same for its columns. A unit's 4 rows (and
        // 4 columns) are one vec4, so the inner loop does two vector loads per 16 FMAs; the
        // units of a row (consecutive ux) load consecutive vec4s of cols_v and the same vec4
        // of rows_v (conflict-free on GPUs, a broadcast on lavapipe).
        let mut rows_v = Shared::<[Vector<f32, Const<4>>]>::new_slice(slice * units);
        let mut cols_v = Shared::<[Vector<f32, Const<4>>]>::new_slice(slice * units);
        // partial[r * units + ux]: unit column ux's share of the sum of block row r.
        let mut partial = Shared::<[f32]>::new_slice(block * units);
        // block_scores[r]: score of block row r.
        let mut block_scores = Shared::<[f32]>::new_slice(block);

        let n_blocks = n.div_ceil(block);
        let d_slices = d.div_ceil(slice);
        let out_base = b * n * n;

        // Running first-argmax, meaningful in unit 0 only.
        let mut best_score = 0.0f32;
        let mut best_index = 0u32;

        for ti in 0..n_blocks {
            // Unit (uy, ux) owns rows ti·block + 4·uy + a and columns tj·block + 4·ux + c
            // (a, c < 4) of every block pair (ti, tj).
            let mut row_sums = Array::<f32>::new(micro);
            #[unroll]
            for a in 0..micro {
                row_sums[a] = 0.0f32;
            }
            for tj in 0..n_blocks {
                // acc[a].c = similarity of the unit's row a and column c.
                let mut acc = Array::<Vector<f32, Const<4>>>::new(micro);
                #[unroll]
                for a in 0..micro {
                    acc[a] = Vector::<f32, Const<4>>::new(0.0f32);
                }
                for ks in 0..d_slices {
                    // Stage the slice: consecutive units read consecutive k of the same
                    // samples (coalesced); out-of-range samples and k are staged as zeros.
                    #[unroll]
                    for m in 0..slice * units / n_units {
                        let e = unit + m * n_units;
                        let g = e / slice;
                        let kl = e % slice;
                        let k = ks * slice + kl;
                        let mut rv = Vector::<f32, Const<4>>::new(0.0f32);
                        let mut cv = Vector::<f32, Const<4>>::new(0.0f32);
                        #[unroll]
                        for q in 0..micro {
                            let row = ti * block + g * micro + q;
                            if row < n && k < d {
                                rv.insert(q, emb[base + row * s_n + k * s_d]);
                            }
                            let col = tj * block + g * micro + q;
                            if col < n && k < d {
                                cv.insert(q, emb[base + col * s_n + k * s_d]);
                            }
                        }
                        rows_v[kl * units + g] = rv;
                        cols_v[kl * units + g] = cv;
                    }
                    sync_cube();
                    for kk in 0..slice {
                        let ra = rows_v[kk * units + uy];
                        let cb = cols_v[kk * units + ux];
                        #[unroll]
                        for a in 0..micro {
                            acc[a] += Vector::<f32, Const<4>>::new(ra.extract(a)) * cb;
                        }
                    }
                    // Nobody restages the slice before everyone has read it.
                    sync_cube();
                }
                #[unroll]
                for a in 0..micro {
                    let i = ti * block + uy * micro + a;
                    let row = acc[a];
                    #[unroll]
                    for c in 0..micro {
                        let j = tj * block + ux * micro + c;
                        if i < n && j < n {
                            let v = row.extract(c);
                            similarity[out_base + i * n + j] = v;
                            row_sums[a] += v;
                        }
                    }
                }
            }

            #[unroll]
            for a in 0..micro {
                partial[(uy * micro + a) * units + ux] = row_sums[a];
            }
            sync_cube();
            if unit < block {
                // Fixed summation order, the same for every row (columns by block, then by c,
                // then by ux): two identical samples get bit-identical scores, so exact ties
                // stay exact.
                let mut total = 0.0f32;
                for c in 0..units {
                    total += partial[unit * units + c];
                }
                let score = total / n_f32;
                block_scores[unit] = score;
                let i = ti * block + unit;
                if i < n {
                    scores[b * n + i] = score;
                }
            }
            sync_cube();
            if unit == 0 {
                let mut rows = n - ti * block;
                if rows > block {
                    rows = block;
                }
                for r in 0..rows {
                    let score = block_scores[r];
                    let first = ti == 0 && r == 0;
                    if first || score > best_score {
                        best_score = score;
                        best_index = (ti * block + r) as u32;
                    }
                }
            }
            // partial and block_scores are rewritten only after the next block row's first
            // barrier, which unit 0 reaches after its scan.
        }

        if unit == 0 {
            chosen[b] = best_index as i32;
        }
    }
}

/// Whether `device` (autodiff or not) is a cubecl device, i.e. one the kernel can run on.
pub(super) fn on_cube_device(device: &Device) -> bool {
    matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Cube(_))
}

/// Launches [`mbr_kernel`] over a validated, non-empty `[B, N, D]` batch.
pub(super) fn launch(embeddings: Tensor<3>) -> Result<MbrOutput, MbrError> {
    let [b, n, _] = embeddings.dims();
    let device = embeddings.device();
    // The kernel has no backward pass: it reads the values only.
    let embeddings = if embeddings.is_autodiff() {
        embeddings.without_autodiff()
    } else {
        embeddings
    };
    let input: CubeTensor = as_f32(embeddings)
        .try_into_primitive::<Cube>()
        .map_err(|_| MbrError::NotCubeDevice {
            device: format!("{device:?}"),
        })?;

    // The furthest element the kernel reads (through the view's strides) and the largest
    // output must be addressable with 32-bit indices.
    let shape = input.meta.shape().iter().copied();
    let furthest: u128 = shape
        .zip(input.meta.strides().iter())
        .map(|(s, &st)| (s as u128 - 1) * st as u128)
        .sum();
    for (buffer, elements) in [
        ("embeddings", furthest + 1),
        ("similarity", b as u128 * n as u128 * n as u128),
    ] {
        if elements > u32::MAX as u128 {
            return Err(MbrError::TooLarge { buffer, elements });
        }
    }

    let client = input.client.clone();
    let output = |shape: &[usize], dtype: DType| crate::cube_alloc::empty(&input, shape, dtype);
    let similarity = output(&[b, n, n], DType::F32);
    let scores = output(&[b, n], DType::F32);
    let chosen = output(&[b], DType::I32);

    const MAX_CUBES_PER_AXIS: usize = 65_535;
    let cubes_x = b.min(MAX_CUBES_PER_AXIS);
    let cubes_y = b.div_ceil(cubes_x);
    // SAFETY: every global access is guarded by `row < n`, `col < n`, `k < d`, `i < n && j < n` or
    // `b < B` against the tensors' own shapes, and shared indices stay below their comptime
    // sizes, so the unchecked launch (no per-access bounds checks) cannot read or write out of
    // bounds.
    unsafe {
        mbr_kernel::launch_unchecked(
            &client,
            CubeCount::Static(cubes_x as u32, cubes_y as u32, 1),
            CubeDim::new_2d(UNITS as u32, UNITS as u32),
            input.into_tensor_arg(),
            similarity.clone().into_tensor_arg(),
            scores.clone().into_tensor_arg(),
            chosen.clone().into_tensor_arg(),
            n as f32,
            UNITS,
            MICRO,
            SLICE,
        );
    }

    Ok(MbrOutput {
        similarity: Tensor::<3>::from_primitive::<Cube>(similarity),
        scores: Tensor::<2>::from_primitive::<Cube>(scores),
        chosen: Tensor::<1, Int>::from_primitive::<Cube>(chosen),
    })
}
