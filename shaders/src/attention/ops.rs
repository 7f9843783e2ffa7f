//! The fused attention as a backend extension with its own backward (burn's autodiff falls back
//! to the materialized `softmax(QKᵀ)V` and keeps it for the backward).
//!
//! The CPU backend runs the host kernels of `host.rs`; cubecl (wgpu) devices run the cubecl
//! kernels of `cube.rs`; any other backend gets the host kernels through a read-back (the
//! trait's default bodies). `Autodiff` saves `q`, `k`, `v` (and the prefix), the
//! output and the per-row log-sum-exp, and its backward is the FlashAttention-2 recomputation.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::Shape;

use super::host::{self, Dims};
use crate::flex;

/// The fused attention's backend operations.
#[backend_extension(Cube: cfg(feature = "wgpu"), Flex, Autodiff)]
pub trait FlashAttentionOps: Backend {
    /// `(o, lse)`: causal attention of `q` `[B, H, S, hd]` over its own keys `k`, `v`
    /// `[B, KVH, S, hd]`, and the per-row log-sum-exp `[B, H, S]` (a constant for autodiff).
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        host_forward::<Self>(q, k, v, None)
    }

    /// [`flash_attention`](FlashAttentionOps::flash_attention) with a shared prefix `pk`, `pv`
    /// `[1, KVH, P, hd]` that every query sees before its own keys.
    fn flash_attention_prefixed(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pk: FloatTensor<Self>,
        pv: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        host_forward::<Self>(q, k, v, Some((pk, pv)))
    }

    /// `(dq, dk, dv)` of `Σ d_o ∘ o` (not differentiable itself).
    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let g = host_backward::<Self>(q, k, v, None, o, lse, d_o);
        (g.0, g.1, g.2)
    }

    /// `(dq, dk, dv, dpk, dpv)` of the prefixed attention (the prefix's summed over the batch).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn flash_attention_prefixed_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pk: FloatTensor<Self>,
        pv: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let g = host_backward::<Self>(q, k, v, Some((pk, pv)), o, lse, d_o);
        let (dpk, dpv) = g.3.expect("a prefix was given");
        (g.0, g.1, g.2, dpk, dpv)
    }
}

impl FlashAttentionOps for Flex {}

/// On cubecl (wgpu) devices both directions are the cubecl kernels of `cube.rs`.
#[cfg(feature = "wgpu")]
impl FlashAttentionOps for burn::backend::Cube {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        super::cube::forward(q, k, v, None)
    }

    fn flash_attention_prefixed(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pk: FloatTensor<Self>,
        pv: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        super::cube::forward(q, k, v, Some((pk, pv)))
    }

    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let g = super::cube::backward(q, k, v, None, o, lse, d_o);
        (g.0, g.1, g.2)
    }

    fn flash_attention_prefixed_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pk: FloatTensor<Self>,
        pv: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let g = super::cube::backward(q, k, v, Some((pk, pv)), o, lse, d_o);
        let (dpk, dpv) = g.3.expect("a prefix was given");
        (g.0, g.1, g.2, dpk, dpv)
    }
}

/// The tensor's values as f32 on the host (a copy; cheap next to the attention itself).
fn to_host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let data = burn::tensor::try_read_sync(B::float_into_data(t))
        .expect("this platform reads tensors synchronously")
        .expect("reading an attention input");
    data.convert::<f32>().try_into_vec::<f32>().expect("f32 after convert")
}

fn dims_of(q: &Shape, k: &Shape, prefix: Option<&Shape>) -> Dims {
    Dims {
        batch: q[0],
        heads: q[1],
        kv_heads: k[1],
        seq: q[2],
        prefix: prefix.map_or(0, |p| p[2]),
        head_dim: q[3],
    }
}

fn host_forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    prefix: Option<(FloatTensor<B>, FloatTensor<B>)>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = q.device();
    let d = dims_of(&q.shape(), &k.shape(), prefix.as_ref().map(|p| p.0.shape()).as_ref());
    let (q, k, v) = (to_host::<B>(q), to_host::<B>(k), to_host::<B>(v));
    let prefix = prefix.map(|(pk, pv)| (to_host::<B>(pk), to_host::<B>(pv)));
    let (o, lse) = host::forward(d, &q, &k, &v, prefix.as_ref().map(|(a, b)| (&a[..], &b[..])));
    (
        flex::from_vec::<B>(o, [d.batch, d.heads, d.seq, d.head_dim], &device),
        flex::from_vec::<B>(lse, [d.batch, d.heads, d.seq], &device),
    )
}

type HostGrads<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<(FloatTensor<B>, FloatTensor<B>)>,
);

#[allow(clippy::too_many_arguments)]
fn host_backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    prefix: Option<(FloatTensor<B>, FloatTensor<B>)>,
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    d_o: FloatTensor<B>,
) -> HostGrads<B> {
    let device = q.device();
    let (qs, ks) = (q.shape(), k.shape());
    let ps = prefix.as_ref().map(|p| p.0.shape());
    let d = dims_of(&qs, &ks, ps.as_ref());
    let (q, k, v) = (to_host::<B>(q), to_host::<B>(k), to_host::<B>(v));
    let prefix = prefix.map(|(pk, pv)| (to_host::<B>(pk), to_host::<B>(pv)));
    let (o, lse, d_o) = (to_host::<B>(o), to_host::<B>(lse), to_host::<B>(d_o));
    let g = host::backward(
        d,
        &q,
        &k,
        &v,
        prefix.as_ref().map(|(a, b)| (&a[..], &b[..])),
        &o,
        &lse,
        &d_o,
    );
    let prefix_grads = ps.map(|ps| {
        (
            flex::from_vec::<B>(g.dpk, ps.clone(), &device),
            flex::from_vec::<B>(g.dpv, ps, &device),
        )
    });
    (
        flex::from_vec::<B>(g.dq, qs, &device),
        flex::from_vec::<B>(g.dk, ks.clone(), &device),
        flex::from_vec::<B>(g.dv, ks, &device),
        prefix_grads,
    )
}

/// Registers each gradient for its parent node when that node is tracked.
macro_rules! register {
    ($grads:expr, $B:ty, $($node:expr => $g:expr),+ $(,)?) => {
        $(if let Some(node) = $node {
            $grads.register::<$B>(node.id, $g);
        })+
    };
}

impl<B: Backend + FlashAttentionOps, C: CheckpointStrategy> FlashAttentionOps for Autodiff<B, C> {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct Attention;

        impl<B: Backend + FlashAttentionOps> Backward<B, 3> for Attention {
            /// q, k, v, o, lse.
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
            );

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [nq, nk, nv] = ops.parents;
                let d_o = grads.consume::<B>(&ops.node);
                let (q, k, v, o, lse) = ops.state;
                let (dq, dk, dv) = B::flash_attention_backward(q, k, v, o, lse, d_o);
                register!(grads, B, nq => dq, nk => dk, nv => dv);
            }
        }

        let nodes = [q.node(), k.node(), v.node()];
        match Attention.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let (o, lse) = B::flash_attention(q.clone(), k.clone(), v.clone());
                let out = prep.finish((q, k, v, o.clone(), lse.clone()), o);
                (out, <Self as AutodiffBackend>::from_inner(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (o, lse) = B::flash_attention(q.into_primitive(), k.into_primitive(), v.into_primitive());
                (prep.finish(o), <Self as AutodiffBackend>::from_inner(lse))
            }
        }
    }

    fn flash_attention_prefixed(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pk: FloatTensor<Self>,
        pv: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct Prefixed;

        type State<B> = (
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
        );

        impl<B: Backend + FlashAttentionOps> Backward<B, 5> for Prefixed {
            /// q, k, v, pk, pv, o, lse.
            type State = State<B>;

            fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [nq, nk, nv, npk, npv] = ops.parents;
                let d_o = grads.consume::<B>(&ops.node);
                let (q, k, v, pk, pv, o, lse) = ops.state;
                let (dq, dk, dv, dpk, dpv) = B::flash_attention_prefixed_backward(q, k, v, pk, pv, o, lse, d_o);
                register!(grads, B, nq => dq, nk => dk, nv => dv, npk => dpk, npv => dpv);
            }
        }

        let nodes = [q.node(), k.node(), v.node(), pk.node(), pv.node()];
        match Prefixed.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let (pk, pv) = (pk.into_primitive(), pv.into_primitive());
                let (o, lse) = B::flash_attention_prefixed(q.clone(), k.clone(), v.clone(), pk.clone(), pv.clone());
                let out = prep.finish((q, k, v, pk, pv, o.clone(), lse.clone()), o);
                (out, <Self as AutodiffBackend>::from_inner(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (o, lse) = B::flash_attention_prefixed(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    pk.into_primitive(),
                    pv.into_primitive(),
                );
                (prep.finish(o), <Self as AutodiffBackend>::from_inner(lse))
            }
        }
    }

    fn flash_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        let (dq, dk, dv) = B::flash_attention_backward(inner(q), inner(k), inner(v), inner(o), inner(lse), inner(d_o));
        let wrap = <Self as AutodiffBackend>::from_inner;
        (wrap(dq), wrap(dk), wrap(dv))
    }

    #[allow(clippy::type_complexity)]
    fn flash_attention_prefixed_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pk: FloatTensor<Self>,
        pv: FloatTensor<Self>,
        o: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_o: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        let (dq, dk, dv, dpk, dpv) = B::flash_attention_prefixed_backward(
            inner(q),
            inner(k),
            inner(v),
            inner(pk),
            inner(pv),
            inner(o),
            inner(lse),
            inner(d_o),
        );
        let wrap = <Self as AutodiffBackend>::from_inner;
        (wrap(dq), wrap(dk), wrap(dv), wrap(dpk), wrap(dpv))
    }
}
