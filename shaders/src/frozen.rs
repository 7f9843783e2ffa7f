//! Products with a frozen weight kept in its storage format (QLoRA's idea, with the formats users
//! already have): `y = x Wᵀ` and, in the backward, `dx = dy W`, both read from the stored blocks.
//!
//! The weight is any [`FrozenMatrix`] (the core's GGUF block matrices implement it). The host
//! kernel walks `W` in blocks of rows (at most [`BLOCK_FLOATS`] floats), dequantizes a block into a
//! scratch buffer (rows in parallel) and multiplies it with the parallel GEMM of
//! [`crate::host::gemm`]. So the f32 copy of the weight never exists whole, and nothing of the
//! weight is kept for the backward but the stored matrix itself. Without a gradient to track, the
//! op is the same product; no weight gradient is ever computed (the weight is frozen: LoRA trains
//! beside it).
//!
//! Backends: the CPU backend runs the host kernel on its own buffers (no copy when the input is
//! contiguous). On cubecl (wgpu) devices a matrix that lends its storage
//! ([`FrozenMatrix::stored`]) stays in it there too: the kernels of [`crate::stored`] dequantize
//! it on the device a block of rows at a time for the backend's matmul, or read it directly for a
//! few activation rows (decoding). Other matrices are expanded into a dense tensor on the device.

use std::fmt::Debug;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, TensorData};
use rayon::prelude::*;

use crate::flex;
use crate::host::{Operand, gemm};

/// A frozen `[rows, cols]` matrix in a storage format, read a row at a time.
pub trait FrozenMatrix: Send + Sync + Debug {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// Row `r` as f32 into `out` (`out.len() == cols`).
    fn dequantize_row(&self, r: usize, out: &mut [f32]);
    /// The storage as the device kernels read it ([`crate::stored`]), where the matrix is in a
    /// layout they know; `None` sends cubecl devices the dense f32 matrix instead.
    fn stored(&self) -> Option<crate::stored::Stored<'_>> {
        None
    }
}

/// A shared handle on a frozen matrix (what the backend op carries).
#[derive(Clone, Debug)]
pub struct Frozen(pub Arc<dyn FrozenMatrix>);

impl Frozen {
    /// The whole matrix as f32, row-major (the dense fallback of devices without the kernel).
    pub fn to_f32(&self) -> Vec<f32> {
        dequantize_all(&*self.0)
    }
}

/// The whole matrix as f32, row-major, rows in parallel.
pub fn dequantize_all(w: &dyn FrozenMatrix) -> Vec<f32> {
    let mut out = vec![0.0f32; w.rows() * w.cols()];
    dequantize_rows(w, 0, &mut out);
    out
}

/// Floats of one dequantized block of rows (4 MiB).
pub const BLOCK_FLOATS: usize = 1 << 20;

/// Rows of `w` per block: a multiple of 16, at least 16, at most all of them.
fn rows_per_block(w: &dyn FrozenMatrix) -> usize {
    let by_size = (BLOCK_FLOATS / w.cols().max(1)) / 16 * 16;
    by_size.max(16).min(w.rows().max(1))
}

/// Rows `r0..r0 + out.len() / cols` of `w` into `out`, in parallel.
pub(crate) fn dequantize_rows(w: &dyn FrozenMatrix, r0: usize, out: &mut [f32]) {
    let cols = w.cols();
    if cols == 0 {
        return;
    }
    const ROWS_PER_TASK: usize = 16;
    out.par_chunks_mut(cols * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (i, row) in chunk.chunks_exact_mut(cols).enumerate() {
                w.dequantize_row(r0 + t * ROWS_PER_TASK + i, row);
            }
        });
}

std::thread_local! {
    /// The dequantized block's buffer, kept between calls (a fresh 4 MiB buffer a call cost a
    /// zeroing pass and page faults).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of at least `len` floats (a fresh one when the
/// thread's buffer is in use further up the stack).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0f32; len]),
    })
}

/// `x Wᵀ`: `x` `[m, cols]` -> `[m, rows]`.
pub fn host_xwt(x: &[f32], m: usize, w: &dyn FrozenMatrix) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "frozen linear: input is not [{m}, {k}]");
    let mut y = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let nb = rows_per_block(w);
    with_scratch(nb * k, |buf| {
        for r0 in (0..n).step_by(nb) {
            let rows = nb.min(n - r0);
            let block = &mut buf[..rows * k];
            dequantize_rows(w, r0, block);
            gemm(
                (m, rows, k),
                &mut y[r0..],
                n,
                false,
                Operand::rows(x, k),
                Operand::transposed(block, k),
                1.0,
                true,
            );
        }
    });
    y
}

/// `dy W`: `dy` `[m, rows]` -> `[m, cols]` (the input gradient of [`host_xwt`]).
pub fn host_dyw(dy: &[f32], m: usize, w: &dyn FrozenMatrix) -> Vec<f32> {
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(dy.len(), m * n, "frozen linear backward: gradient is not [{m}, {n}]");
    let mut dx = vec![0.0f32; m * k];
    if m == 0 || n == 0 || k == 0 {
        return dx;
    }
    let nb = rows_per_block(w);
    with_scratch(nb * k, |buf| {
        for r0 in (0..n).step_by(nb) {
            let rows = nb.min(n - r0);
            let block = &mut buf[..rows * k];
            dequantize_rows(w, r0, block);
            gemm(
                (m, k, rows),
                &mut dx,
                k,
                r0 > 0,
                Operand::rows(&dy[r0..], n),
                Operand::rows(block, k),
                1.0,
                true,
            );
        }
    });
    dx
}

/// The shapes of a frozen product with a LoRA adapter beside it.
#[derive(Debug, Clone, Copy)]
struct LoraDims {
    m: usize,
    n: usize,
    k: usize,
    r: usize,
}

/// `(y, t)` with `t = xd Aᵀ` `[m, r]` and `y = x Wᵀ + scale · t Bᵀ` `[m, n]`: the frozen product
/// and a LoRA adapter (`a` `[r, k]`, `b` `[n, r]`) on the dropped-out input `xd` in one output.
pub fn host_lora_forward(
    x: &[f32],
    xd: &[f32],
    m: usize,
    w: &dyn FrozenMatrix,
    (a, b): (&[f32], &[f32]),
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (n, k) = (w.rows(), w.cols());
    let r = a.len() / k.max(1);
    assert!(
        a.len() == r * k && b.len() == n * r && xd.len() == m * k,
        "frozen LoRA: shapes disagree"
    );
    let mut y = host_xwt(x, m, w);
    let mut t = vec![0.0f32; m * r];
    if m > 0 && r > 0 {
        gemm(
            (m, r, k),
            &mut t,
            r,
            false,
            Operand::rows(xd, k),
            Operand::transposed(a, k),
            1.0,
            true,
        );
        gemm(
            (m, n, r),
            &mut y,
            n,
            true,
            Operand::rows(&t, r),
            Operand::transposed(b, r),
            scale,
            true,
        );
    }
    (y, t)
}

/// The gradients of [`host_lora_forward`]'s `y` given `dy` `[m, n]`: `(dx, dxd, da, db)`. With
/// `merged` (`xd` is `x` itself) `dx` holds both inputs' gradients and `dxd` is empty.
#[allow(clippy::too_many_arguments)]
pub fn host_lora_backward(
    xd: &[f32],
    t: &[f32],
    m: usize,
    w: &dyn FrozenMatrix,
    (a, b): (&[f32], &[f32]),
    scale: f32,
    dy: &[f32],
    merged: bool,
) -> [Vec<f32>; 4] {
    let (n, k) = (w.rows(), w.cols());
    let r = a.len() / k.max(1);
    let d = LoraDims { m, n, k, r };
    let mut dx = host_dyw(dy, m, w);
    let (mut dt, mut da, mut db) = (
        vec![0.0f32; d.m * d.r],
        vec![0.0f32; d.r * d.k],
        vec![0.0f32; d.n * d.r],
    );
    let mut dxd = if merged { Vec::new() } else { vec![0.0f32; d.m * d.k] };
    if d.m > 0 && d.r > 0 {
        // dB = scale · dyᵀ t; dt = scale · dy B; dA = dtᵀ xd; dxd = dt A.
        gemm(
            (n, r, m),
            &mut db,
            r,
            false,
            Operand::transposed(dy, n),
            Operand::rows(t, r),
            scale,
            true,
        );
        gemm(
            (m, r, n),
            &mut dt,
            r,
            false,
            Operand::rows(dy, n),
            Operand::rows(b, r),
            scale,
            true,
        );
        gemm(
            (r, k, m),
            &mut da,
            k,
            false,
            Operand::transposed(&dt, r),
            Operand::rows(xd, k),
            1.0,
            true,
        );
        let (dst, accumulate) = if merged { (&mut dx, true) } else { (&mut dxd, false) };
        gemm(
            (m, k, r),
            dst,
            k,
            accumulate,
            Operand::rows(&dt, r),
            Operand::rows(a, k),
            1.0,
            true,
        );
    }
    [dx, dxd, da, db]
}

/// The products as a backend extension (see the module docs).
#[backend_extension(Cube: cfg(feature = "wgpu"), Flex, Autodiff)]
pub trait FrozenLinearOps: Backend {
    /// `x Wᵀ`: `x` `[m, cols]` -> `[m, rows]`.
    fn frozen_linear(x: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        dense_xwt::<Self>(x, &w)
    }

    /// `dy W`: `dy` `[m, rows]` -> `[m, cols]`.
    fn frozen_linear_backward(dy: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        dense_dyw::<Self>(dy, &w)
    }

    /// `(y, t)`: `t = xd Aᵀ` `[m, r]`, `y = x Wᵀ + scale · t Bᵀ` `[m, rows]` (a LoRA adapter `a`
    /// `[r, cols]`, `b` `[rows, r]` beside the frozen weight, on the dropped-out input `xd`).
    fn frozen_lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        w: Frozen,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let t = Self::float_matmul(xd, Self::float_transpose(a));
        let lora = Self::float_mul_scalar(Self::float_matmul(t.clone(), Self::float_transpose(b)), scale.into());
        (Self::float_add(Self::frozen_linear(x, w), lora), t)
    }

    /// `(dx, dxd, da, db)` of `Σ dy ∘ y` for [`frozen_lora_linear`](FrozenLinearOps::frozen_lora_linear);
    /// with `merged` (`xd` is `x`) `dx` holds both and `dxd` is an empty `[0, cols]` tensor.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn frozen_lora_linear_backward(
        xd: FloatTensor<Self>,
        t: FloatTensor<Self>,
        w: Frozen,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
        dy: FloatTensor<Self>,
        merged: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let device = dy.device();
        let db = Self::float_mul_scalar(Self::float_matmul(Self::float_transpose(dy.clone()), t), scale.into());
        let dt = Self::float_mul_scalar(Self::float_matmul(dy.clone(), b), scale.into());
        let da = Self::float_matmul(Self::float_transpose(dt.clone()), xd);
        let dxd = Self::float_matmul(dt, a);
        let dx = Self::frozen_linear_backward(dy, w.clone());
        if merged {
            let empty = empty_rows::<Self>(w.0.cols(), &device);
            (Self::float_add(dx, dxd), empty, da, db)
        } else {
            (dx, dxd, da, db)
        }
    }
}

/// `x Wᵀ` through the dense matrix on `x`'s device.
fn dense_xwt<B: Backend>(x: FloatTensor<B>, w: &Frozen) -> FloatTensor<B> {
    let dense = dense_of::<B>(w, &x.device());
    B::float_matmul(x, B::float_transpose(dense))
}

/// `dy W` through the dense matrix on `dy`'s device.
fn dense_dyw<B: Backend>(dy: FloatTensor<B>, w: &Frozen) -> FloatTensor<B> {
    let dense = dense_of::<B>(w, &dy.device());
    B::float_matmul(dy, dense)
}

/// An empty `[0, cols]` tensor.
fn empty_rows<B: Backend>(cols: usize, device: &B::Device) -> FloatTensor<B> {
    flex::from_vec::<B>(Vec::new(), [0, cols], device)
}

/// The whole matrix as a dense tensor on `device` (the fallback of devices without a kernel).
pub(crate) fn dense_of<B: Backend>(w: &Frozen, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(w.to_f32(), [w.0.rows(), w.0.cols()]), device)
}

impl FrozenLinearOps for Flex {
    fn frozen_linear(x: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        let [m, _] = x.shape().dims::<2>();
        let y = host_xwt(&flex::values(&x), m, &*w.0);
        flex::from_vec::<Flex>(y, [m, w.0.rows()], &x.device())
    }

    fn frozen_linear_backward(dy: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        let [m, _] = dy.shape().dims::<2>();
        let dx = host_dyw(&flex::values(&dy), m, &*w.0);
        flex::from_vec::<Flex>(dx, [m, w.0.cols()], &dy.device())
    }

    fn frozen_lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        w: Frozen,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [m, _] = x.shape().dims::<2>();
        let r = a.shape().dims::<2>()[0];
        let (a_v, b_v) = (flex::values(&a), flex::values(&b));
        let (y, t) = host_lora_forward(&flex::values(&x), &flex::values(&xd), m, &*w.0, (&a_v, &b_v), scale);
        let device = x.device();
        (
            flex::from_vec::<Flex>(y, [m, w.0.rows()], &device),
            flex::from_vec::<Flex>(t, [m, r], &device),
        )
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn frozen_lora_linear_backward(
        xd: FloatTensor<Self>,
        t: FloatTensor<Self>,
        w: Frozen,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
        dy: FloatTensor<Self>,
        merged: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let [m, _] = dy.shape().dims::<2>();
        let (ra, ca) = (a.shape().dims::<2>()[0], w.0.cols());
        let (a_v, b_v) = (flex::values(&a), flex::values(&b));
        let [dx, dxd, da, db] = host_lora_backward(
            &flex::values(&xd),
            &flex::values(&t),
            m,
            &*w.0,
            (&a_v, &b_v),
            scale,
            &flex::values(&dy),
            merged,
        );
        let device = dy.device();
        let rows_dxd = if merged { 0 } else { m };
        (
            flex::from_vec::<Flex>(dx, [m, ca], &device),
            flex::from_vec::<Flex>(dxd, [rows_dxd, ca], &device),
            flex::from_vec::<Flex>(da, [ra, ca], &device),
            flex::from_vec::<Flex>(db, [w.0.rows(), ra], &device),
        )
    }
}

/// On cubecl devices a matrix that lends its storage is read there in it (see the module docs).
#[cfg(feature = "wgpu")]
impl FrozenLinearOps for burn::backend::Cube {
    fn frozen_linear(x: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        use crate::stored;
        use burn::backend::ops::FloatTensorOps;
        let Some(dev) = stored::on_device(&w, &x) else {
            return dense_xwt::<Self>(x, &w);
        };
        let [m, _] = x.shape().dims::<2>();
        if m <= stored::XWT_MAX_M {
            return stored::xwt(&x, &dev);
        }
        let parts = stored::row_blocks(&dev)
            .into_iter()
            .map(|(part, r0, n)| {
                let block = stored::dequantize_rows(&dev, part, r0, n);
                Self::float_matmul(x.clone(), Self::float_transpose(block))
            })
            .collect();
        stored::join(parts, 1)
    }

    fn frozen_linear_backward(dy: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        use crate::stored;
        use burn::backend::ops::FloatTensorOps;
        use burn::tensor::Slice;
        let Some(dev) = stored::on_device(&w, &dy) else {
            return dense_dyw::<Self>(dy, &w);
        };
        let [m, _] = dy.shape().dims::<2>();
        let mut dx: Option<FloatTensor<Self>> = None;
        for (part, r0, n) in stored::row_blocks(&dev) {
            let block = stored::dequantize_rows(&dev, part, r0, n);
            let r0 = dev.parts[part].row0 + r0;
            let dy_rows = if n == dev.rows {
                dy.clone()
            } else {
                Self::float_slice(dy.clone(), &[Slice::from(0..m), Slice::from(r0..r0 + n)])
            };
            let term = Self::float_matmul(dy_rows, block);
            dx = Some(match dx {
                Some(acc) => Self::float_add(acc, term),
                None => term,
            });
        }
        dx.unwrap_or_else(|| dense_dyw::<Self>(dy, &w))
    }
}

impl<B: Backend + FrozenLinearOps, C: CheckpointStrategy> FrozenLinearOps for Autodiff<B, C> {
    fn frozen_linear(x: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FrozenProduct;

        impl<B: Backend + FrozenLinearOps> Backward<B, 1> for FrozenProduct {
            type State = Frozen;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [nx] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                if let Some(node) = nx {
                    grads.register::<B>(node.id, B::frozen_linear_backward(dy, ops.state));
                }
            }
        }

        match FrozenProduct.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::frozen_linear(x.into_primitive(), w.clone());
                prep.finish(w, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::frozen_linear(x.into_primitive(), w)),
        }
    }

    fn frozen_linear_backward(dy: FloatTensor<Self>, w: Frozen) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::frozen_linear_backward(dy.into_primitive(), w))
    }

    fn frozen_lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        w: Frozen,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct FrozenLora;

        /// xd, t, a, b, the weight, the scale, and whether `xd` is `x`.
        type State<B> = (
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            Frozen,
            f32,
            bool,
        );

        impl<B: Backend + FrozenLinearOps> Backward<B, 4> for FrozenLora {
            type State = State<B>;

            fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [nx, nxd, na, nb] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let (xd, t, a, b, w, scale, merged) = ops.state;
                let (dx, dxd, da, db) = B::frozen_lora_linear_backward(xd, t, w, a, b, scale, dy, merged);
                // Merged, `nxd` is `nx` and `dx` already holds both paths.
                let dxd = (!merged).then_some(dxd);
                for (node, g) in [(nx, Some(dx)), (nxd, dxd), (na, Some(da)), (nb, Some(db))] {
                    if let (Some(node), Some(g)) = (node, g) {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let merged = x.id() == xd.id();
        let nodes = [x.node(), xd.node(), a.node(), b.node()];
        match FrozenLora.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, xd) = (x.into_primitive(), xd.into_primitive());
                let (a, b) = (a.into_primitive(), b.into_primitive());
                let (y, t) = B::frozen_lora_linear(x, xd.clone(), w.clone(), a.clone(), b.clone(), scale);
                let out = prep.finish((xd, t.clone(), a, b, w, scale, merged), y);
                (out, <Self as AutodiffBackend>::from_inner(t))
            }
            OpsKind::UnTracked(prep) => {
                let (y, t) = B::frozen_lora_linear(
                    x.into_primitive(),
                    xd.into_primitive(),
                    w,
                    a.into_primitive(),
                    b.into_primitive(),
                    scale,
                );
                (prep.finish(y), <Self as AutodiffBackend>::from_inner(t))
            }
        }
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn frozen_lora_linear_backward(
        xd: FloatTensor<Self>,
        t: FloatTensor<Self>,
        w: Frozen,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
        dy: FloatTensor<Self>,
        merged: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        let (dx, dxd, da, db) =
            B::frozen_lora_linear_backward(inner(xd), inner(t), w, inner(a), inner(b), scale, inner(dy), merged);
        let wrap = <Self as AutodiffBackend>::from_inner;
        (wrap(dx), wrap(dxd), wrap(da), wrap(db))
    }
}

/// `x Wᵀ` with `W` frozen in its storage format: `x` `[m, cols]` -> `[m, rows]` (f32).
///
/// # Panics
/// When `x`'s width is not the matrix's `cols` (a caller's shape bug, like burn's matmul).
pub fn frozen_linear(x: Tensor<2>, w: &Frozen) -> Tensor<2> {
    let [_, k] = x.dims();
    assert_eq!(
        k,
        w.0.cols(),
        "frozen linear: input width {k} against a [{}, {}] weight",
        w.0.rows(),
        w.0.cols()
    );
    let x = if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    };
    Tensor::<2>::from_dispatch(<Dispatch as FrozenLinearOps>::frozen_linear(
        x.into_dispatch(),
        w.clone(),
    ))
}

/// `x Wᵀ + scale · (xd Aᵀ) Bᵀ` in one op: the frozen product and a LoRA adapter (`a` `[r, cols]`,
/// `b` `[rows, r]`) on `xd` (the input after LoRA dropout, or `x` itself). Its backward computes
/// `dx = dy W (+ dt A)` from the stored blocks and the adapter's gradients, and keeps only
/// `xd`, `t = xd Aᵀ` (`[m, r]`) and the adapter for it.
///
/// # Panics
/// On shapes that disagree (a caller's shape bug).
pub fn frozen_lora_linear(
    x: Tensor<2>,
    xd: Tensor<2>,
    w: &Frozen,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f32,
) -> Tensor<2> {
    let ([m, k], [r, ka], [n, rb]) = (x.dims(), a.dims(), b.dims());
    assert!(
        k == w.0.cols() && ka == k && n == w.0.rows() && rb == r && xd.dims() == [m, k],
        "frozen LoRA: x {:?}, xd {:?}, A {:?}, B {:?} against a [{}, {}] weight",
        x.dims(),
        xd.dims(),
        a.dims(),
        b.dims(),
        w.0.rows(),
        w.0.cols()
    );
    let f = |t: Tensor<2>| {
        if t.dtype() == DType::F32 {
            t
        } else {
            t.cast(FloatDType::F32)
        }
        .into_dispatch()
    };
    let (y, _t) = <Dispatch as FrozenLinearOps>::frozen_lora_linear(f(x), f(xd), w.clone(), f(a), f(b), scale);
    Tensor::<2>::from_dispatch(y)
}

/// The twin: the matrix expanded to a dense tensor and burn's matmul (autodiff through burn).
pub fn frozen_linear_reference(x: Tensor<2>, w: &Frozen) -> Tensor<2> {
    let dense = Tensor::<2>::from_data(TensorData::new(w.to_f32(), [w.0.rows(), w.0.cols()]), &x.device());
    x.matmul(dense.transpose())
}

/// The twin of [`frozen_lora_linear`] in burn ops.
pub fn frozen_lora_linear_reference(
    x: Tensor<2>,
    xd: Tensor<2>,
    w: &Frozen,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f32,
) -> Tensor<2> {
    frozen_linear_reference(x, w) + xd.matmul(a.transpose()).matmul(b.transpose()).mul_scalar(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix whose rows come from a formula (stands in for a block format).
    #[derive(Debug)]
    struct Formula {
        rows: usize,
        cols: usize,
    }

    impl FrozenMatrix for Formula {
        fn rows(&self) -> usize {
            self.rows
        }
        fn cols(&self) -> usize {
            self.cols
        }
        fn dequantize_row(&self, r: usize, out: &mut [f32]) {
            for (c, o) in out.iter_mut().enumerate() {
                *o = (((r * 31 + c * 17) % 23) as f32 - 11.0) / 8.0;
            }
        }
    }

    fn naive(x: &[f32], m: usize, w: &Formula) -> Vec<f64> {
        let mut row = vec![0.0f32; w.cols];
        let mut y = vec![0.0f64; m * w.rows];
        for r in 0..w.rows {
            w.dequantize_row(r, &mut row);
            for i in 0..m {
                y[i * w.rows + r] = (0..w.cols).map(|c| x[i * w.cols + c] as f64 * row[c] as f64).sum();
            }
        }
        y
    }

    #[test]
    fn blocked_products_equal_naive_sums() {
        // 2,100 x 1,000: three blocks of rows (1,040 + 1,040 + 20) at BLOCK_FLOATS = 2^20.
        let w = Formula { rows: 2100, cols: 1000 };
        let m = 37;
        let x: Vec<f32> = (0..m * w.cols)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let y = host_xwt(&x, m, &w);
        for (a, b) in y.iter().zip(naive(&x, m, &w)) {
            assert!((*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // dx = dy W: check against the transpose identity <x Wᵀ, dy> = <x, dy W>.
        let dy: Vec<f32> = (0..m * w.rows)
            .map(|i| ((i * 104_729) % 89) as f32 / 44.0 - 1.0)
            .collect();
        let dx = host_dyw(&dy, m, &w);
        let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| *a as f64 * *b as f64).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
