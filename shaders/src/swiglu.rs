//! The gated MLP's activation, `silu(g) ∘ u`, as one op with its own backward.
//!
//! In burn ops it is four (`sigmoid`, two products and the autodiff bookkeeping of each), every
//! one a pass over `[tokens, intermediate]` floats with a fresh buffer, and libm's scalar `expf`.
//! Here it is one pass forward and one backward, in parallel, with the vectorizable
//! [`exp_f32`](crate::host::exp_f32). The backward saves only `g` and `u` (as burn's ops do):
//! with `s = σ(g)`, `du = dy ∘ g ∘ s` and `dg = dy ∘ u ∘ s ∘ (1 + g (1 − s))`.
//!
//! Backends: the CPU backend runs the host loops; others compose their own primitive ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use rayon::prelude::*;

use crate::flex;
use crate::host::exp_f32;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

#[inline(always)]
fn forward_imp(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g * u / (1.0 + exp_f32(-g));
    }
}
crate::multiversion!(fn forward_chunk => forward_imp(g: &[f32], u: &[f32], out: &mut [f32]));

#[inline(always)]
fn backward_imp(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    for i in 0..dg.len().min(g.len()).min(u.len()).min(dy.len()).min(du.len()) {
        let (gi, ui, d) = (g[i], u[i], dy[i]);
        let s = 1.0 / (1.0 + exp_f32(-gi));
        du[i] = d * gi * s;
        dg[i] = d * ui * s * (1.0 + gi * (1.0 - s));
    }
}
crate::multiversion!(fn backward_chunk => backward_imp(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]));

/// `silu(g) ∘ u` on the host.
pub fn host_forward(g: &[f32], u: &[f32]) -> Vec<f32> {
    assert_eq!(g.len(), u.len(), "swiglu: gate and up differ in size");
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| forward_chunk(g, u, o));
    out
}

/// `(dg, du)` of `Σ dy ∘ silu(g) ∘ u` on the host.
pub fn host_backward(g: &[f32], u: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(
        g.len() == u.len() && g.len() == dy.len(),
        "swiglu backward: sizes differ"
    );
    let (mut dg, mut du) = (vec![0.0f32; g.len()], vec![0.0f32; g.len()]);
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)))
        .for_each(|((dg, du), ((g, u), dy))| backward_chunk(g, u, dy, dg, du));
    (dg, du)
}

/// The activation as a backend extension (see the module docs).
#[backend_extension(Cube: cfg(feature = "wgpu"), Flex, Autodiff)]
pub trait SwigluOps: Backend {
    /// `silu(g) ∘ u` (same shapes).
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = Self::sigmoid(g.clone());
        Self::float_mul(Self::float_mul(g, s), u)
    }

    /// `(dg, du)` of `Σ dy ∘ silu(g) ∘ u`.
    fn swiglu_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let s = Self::sigmoid(g.clone());
        let gs = Self::float_mul(g.clone(), s.clone());
        let du = Self::float_mul(dy.clone(), gs.clone());
        // s (1 + g (1 - s)) = s + g s - g s².
        let ds = Self::float_sub(Self::float_add(s.clone(), gs.clone()), Self::float_mul(gs, s));
        let dg = Self::float_mul(Self::float_mul(dy, u), ds);
        (dg, du)
    }
}

impl SwigluOps for Flex {
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = g.shape();
        let out = host_forward(&flex::values(&g), &flex::values(&u));
        flex::from_vec::<Flex>(out, shape, &g.device())
    }

    fn swiglu_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (shape, device) = (g.shape(), g.device());
        let (dg, du) = host_backward(&flex::values(&g), &flex::values(&u), &flex::values(&dy));
        (
            flex::from_vec::<Flex>(dg, shape.clone(), &device),
            flex::from_vec::<Flex>(du, shape, &device),
        )
    }
}

#[cfg(feature = "wgpu")]
impl SwigluOps for burn::backend::Cube {}

impl<B: Backend + SwigluOps, C: CheckpointStrategy> SwigluOps for Autodiff<B, C> {
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Swiglu;

        impl<B: Backend + SwigluOps> Backward<B, 2> for Swiglu {
            /// g, u.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [ng, nu] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let (g, u) = ops.state;
                let (dg, du) = B::swiglu_backward(g, u, dy);
                if let Some(node) = ng {
                    grads.register::<B>(node.id, dg);
                }
                if let Some(node) = nu {
                    grads.register::<B>(node.id, du);
                }
            }
        }

        match Swiglu.prepare::<C>([g.node(), u.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (g, u) = (g.into_primitive(), u.into_primitive());
                let y = B::swiglu(g.clone(), u.clone());
                prep.finish((g, u), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(g.into_primitive(), u.into_primitive())),
        }
    }

    fn swiglu_backward(
        g: FloatTensor<Self>,
        u: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dg, du) = B::swiglu_backward(g.into_primitive(), u.into_primitive(), dy.into_primitive());
        let wrap = <Self as AutodiffBackend>::from_inner;
        (wrap(dg), wrap(du))
    }
}

fn as_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// `silu(g) ∘ u` as one op (see the module docs).
///
/// # Panics
/// When the shapes differ (a caller's shape bug, like burn's elementwise ops).
pub fn swiglu<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    assert_eq!(g.dims(), u.dims(), "swiglu: gate and up shapes differ");
    let (g, u) = (as_f32(g).into_dispatch(), as_f32(u).into_dispatch());
    Tensor::<D>::from_dispatch(<Dispatch as SwigluOps>::swiglu(g, u))
}

/// The twin in plain burn ops.
pub fn swiglu_reference<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(g) * u
}
