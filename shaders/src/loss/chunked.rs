//! The vocabulary-chunked label log-probability, as a backend extension with its own backward.
//!
//! Forward, per row `t` of `hidden` (`[T, H]`) against `lm_head` (`[V, H]`):
//! `logp_t = z_t,label_t - logsumexp_v z_tv` with `z = hidden · lm_headᵀ`. The label logit is one
//! row dot product (`hidden ⊙ lm_head[labels]` summed); the log-sum-exp is an online one over
//! vocabulary chunks of `chunk` columns: per chunk the `[T, chunk]` logits, their row maximum
//! `m_c`, then `m ← max(m, m_c)` and `s ← s·exp(m_old − m) + Σ exp(z − m)`. So no `[T, V]` tensor
//! ever exists; the peak is one chunk of logits and its exponentials.
//!
//! Backward, with `g_t` the incoming gradient of `logp_t` and `p_tv = exp(z_tv − lse_t)`
//! recomputed per chunk from the saved per-row `lse`:
//! - `d hidden_t = g_t · (W[label_t] − Σ_v p_tv W_v)`,
//! - `d W_v = Σ_t g_t · ([v = label_t] − p_tv) · hidden_t`,
//!
//! the label terms done once (a row gather and a scatter-add), the softmax terms chunk by chunk.
//!
//! Written against burn's backend primitives, so the same code runs on every backend (flex,
//! wgpu); the `Autodiff` implementation registers the backward with burn's autodiff graph.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{IndexingUpdateOp, Shape, Slice};

/// The fused loss's backend operations. Every backend gets the chunked burn-ops bodies below;
/// `Autodiff` adds the chunked backward.
#[backend_extension(Cube: cfg(feature = "wgpu"), Flex, Autodiff)]
pub trait FusedLossOps: Backend {
    /// `logp` (`[T]`): the log-probability of each row's label, vocabulary chunked.
    fn fused_label_logprob(
        hidden: FloatTensor<Self>,
        lm_head: FloatTensor<Self>,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        chunked_forward::<Self>(hidden, lm_head, labels, chunk).0
    }

    /// `(logp, lse)` (both `[T]`): the label log-probabilities and each row's log-sum-exp, which
    /// the backward keeps to recompute the softmax chunk by chunk.
    fn fused_label_logprob_lse(
        hidden: FloatTensor<Self>,
        lm_head: FloatTensor<Self>,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        chunked_forward::<Self>(hidden, lm_head, labels, chunk)
    }
}

impl FusedLossOps for Flex {}

/// On cubecl (wgpu) devices the per-chunk online log-sum-exp step is the cubecl kernel of
/// `kernel.rs` (one launch per chunk instead of five); the rest is the shared chunked code.
#[cfg(feature = "wgpu")]
impl FusedLossOps for burn::backend::Cube {
    fn fused_label_logprob(
        hidden: FloatTensor<Self>,
        lm_head: FloatTensor<Self>,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        Self::fused_label_logprob_lse(hidden, lm_head, labels, chunk).0
    }

    fn fused_label_logprob_lse(
        hidden: FloatTensor<Self>,
        lm_head: FloatTensor<Self>,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        use super::kernel::{NEG_START, online_lse_step};
        use burn::backend::ops::FloatTensorOps;
        let t = hidden.shape()[0];
        let device = hidden.device();
        let dtype = hidden.dtype();
        chunked_forward_with::<Self>(hidden, lm_head, labels, chunk, |z, state| {
            let (m, s) = state.unwrap_or_else(|| {
                let zeros = || Self::float_zeros(Shape::new([t, 1]), &device, dtype.into());
                (Self::float_add_scalar(zeros(), NEG_START.into()), zeros())
            });
            online_lse_step(z, m, s)
        })
    }
}

impl<B: Backend + FusedLossOps, C: CheckpointStrategy> FusedLossOps for Autodiff<B, C> {
    fn fused_label_logprob(
        hidden: FloatTensor<Self>,
        lm_head: FloatTensor<Self>,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LabelLogprob;

        impl<B: Backend> Backward<B, 2> for LabelLogprob {
            /// hidden, lm_head, labels, per-row lse, chunk.
            type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, FloatTensor<B>, usize);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_hidden, node_lm_head] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (hidden, lm_head, labels, lse, chunk) = ops.state;
                let (grad_hidden, grad_lm_head) = chunked_backward::<B>(
                    hidden,
                    lm_head,
                    labels,
                    lse,
                    grad,
                    chunk,
                    node_hidden.is_some(),
                    node_lm_head.is_some(),
                );
                if let (Some(node), Some(g)) = (node_hidden, grad_hidden) {
                    grads.register::<B>(node.id, g);
                }
                if let (Some(node), Some(g)) = (node_lm_head, grad_lm_head) {
                    grads.register::<B>(node.id, g);
                }
            }
        }

        let node_hidden = hidden.node();
        let node_lm_head = lm_head.node();
        match LabelLogprob
            .prepare::<C>([node_hidden, node_lm_head])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let hidden = hidden.into_primitive();
                let lm_head = lm_head.into_primitive();
                let (logp, lse) = B::fused_label_logprob_lse(hidden.clone(), lm_head.clone(), labels.clone(), chunk);
                prep.finish((hidden, lm_head, labels, lse, chunk), logp)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_label_logprob(
                hidden.into_primitive(),
                lm_head.into_primitive(),
                labels,
                chunk,
            )),
        }
    }

    fn fused_label_logprob_lse(
        hidden: FloatTensor<Self>,
        lm_head: FloatTensor<Self>,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Only the first output is differentiable; the lse is a constant for the caller.
        let lse = B::fused_label_logprob_lse(
            hidden.primitive().clone(),
            lm_head.primitive().clone(),
            labels.clone(),
            chunk,
        )
        .1;
        let logp = Self::fused_label_logprob(hidden, lm_head, labels, chunk);
        (logp, <Self as AutodiffBackend>::from_inner(lse))
    }
}

/// The vocabulary chunks `[c0, c1)` of width `chunk` (the last one shorter).
pub(crate) fn chunks(vocab: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..vocab).step_by(chunk).map(move |c0| (c0, (c0 + chunk).min(vocab)))
}

/// `(logp, lse)` (`[T]` each) in backend primitives, with the burn-ops online step
/// ([`online_lse_step`]); see the module docs.
pub(crate) fn chunked_forward<B: Backend>(
    hidden: FloatTensor<B>,
    lm_head: FloatTensor<B>,
    labels: IntTensor<B>,
    chunk: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    chunked_forward_with::<B>(hidden, lm_head, labels, chunk, online_lse_step::<B>)
}

/// One online log-sum-exp step in burn ops (the twin of the cubecl kernel): folds chunk `z`
/// (`[T, C]`) into the running `(m, s)` (`[T, 1]` each; `None` before the first chunk).
pub(crate) fn online_lse_step<B: Backend>(
    z: FloatTensor<B>,
    state: Option<(FloatTensor<B>, FloatTensor<B>)>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let m_c = B::float_max_dim(z.clone(), 1); // [T, 1]
    match state {
        None => {
            let s = B::float_sum_dim(B::float_exp(B::float_sub(z, m_c.clone())), 1);
            (m_c, s)
        }
        Some((m, s)) => {
            // m_new = m + max(m_c − m, 0): rescale the old sum by exp(m − m_new).
            let up = B::float_clamp_min(B::float_sub(m_c, m.clone()), 0.0f32.into());
            let m_new = B::float_add(m, up.clone());
            let rescale = B::float_exp(B::float_neg(up));
            let s_c = B::float_sum_dim(B::float_exp(B::float_sub(z, m_new.clone())), 1);
            (m_new, B::float_add(B::float_mul(s, rescale), s_c))
        }
    }
}

/// [`chunked_forward`] with the online step given (`step(z, state) -> state`).
pub(crate) fn chunked_forward_with<B: Backend>(
    hidden: FloatTensor<B>,
    lm_head: FloatTensor<B>,
    labels: IntTensor<B>,
    chunk: usize,
    mut step: impl FnMut(FloatTensor<B>, Option<(FloatTensor<B>, FloatTensor<B>)>) -> (FloatTensor<B>, FloatTensor<B>),
) -> (FloatTensor<B>, FloatTensor<B>) {
    let t = hidden.shape()[0];
    let h = hidden.shape()[1];
    let v = lm_head.shape()[0];

    // z_t,label_t = hidden_t · W[label_t]  ([T, 1]).
    let label_rows = B::float_select(lm_head.clone(), 0, labels);
    let label_logit = B::float_sum_dim(B::float_mul(hidden.clone(), label_rows), 1);

    // Online log-sum-exp over the chunks: running max m and running Σ exp(z − m).
    let lm_head_t = B::float_transpose(lm_head); // [H, V] view
    let mut state: Option<(FloatTensor<B>, FloatTensor<B>)> = None;
    for (c0, c1) in chunks(v, chunk) {
        let w_c = B::float_slice(lm_head_t.clone(), &[Slice::from(0..h), Slice::from(c0..c1)]);
        let z = B::float_matmul(hidden.clone(), w_c); // [T, C]
        state = Some(step(z, state.take()));
    }
    let (m, s) = state.expect("vocabulary is not empty (checked by the caller)");
    let lse = B::float_add(m, B::float_log(s));
    let logp = B::float_sub(label_logit, lse.clone());
    (
        B::float_reshape(logp, Shape::new([t])),
        B::float_reshape(lse, Shape::new([t])),
    )
}

/// Gradients of `Σ_t grad_t · logp_t` w.r.t. `hidden` and `lm_head` (each only when asked for);
/// see the module docs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunked_backward<B: Backend>(
    hidden: FloatTensor<B>,
    lm_head: FloatTensor<B>,
    labels: IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    chunk: usize,
    need_hidden: bool,
    need_lm_head: bool,
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    if !need_hidden && !need_lm_head {
        return (None, None);
    }
    let t = hidden.shape()[0];
    let h = hidden.shape()[1];
    let v = lm_head.shape()[0];
    let grad = B::float_reshape(grad, Shape::new([t, 1]));
    let lse = B::float_reshape(lse, Shape::new([t, 1]));

    // Label terms: + g_t W[label_t] and + g_t hidden_t scattered onto row label_t.
    let mut grad_hidden = need_hidden.then(|| {
        let label_rows = B::float_select(lm_head.clone(), 0, labels.clone());
        B::float_mul(label_rows, grad.clone())
    });
    let mut grad_lm_head =
        need_lm_head.then(|| B::float_zeros(Shape::new([v, h]), &hidden.device(), hidden.dtype().into()));

    let lm_head_t = B::float_transpose(lm_head.clone());
    for (c0, c1) in chunks(v, chunk) {
        let w_c_t = B::float_slice(lm_head_t.clone(), &[Slice::from(0..h), Slice::from(c0..c1)]); // [H, C]
        let z = B::float_matmul(hidden.clone(), w_c_t); // [T, C]
        // g_t p_tv for this chunk.
        let gp = B::float_mul(B::float_exp(B::float_sub(z, lse.clone())), grad.clone());
        if let Some(gh) = grad_hidden.take() {
            let w_c = B::float_slice(lm_head.clone(), &[Slice::from(c0..c1), Slice::from(0..h)]); // [C, H]
            grad_hidden = Some(B::float_sub(gh, B::float_matmul(gp.clone(), w_c)));
        }
        if let Some(gw) = grad_lm_head.take() {
            let gw_c = B::float_neg(B::float_matmul(B::float_transpose(gp), hidden.clone())); // [C, H]
            grad_lm_head = Some(B::float_slice_assign(
                gw,
                &[Slice::from(c0..c1), Slice::from(0..h)],
                gw_c,
            ));
        }
    }
    let grad_lm_head = grad_lm_head.map(|gw| {
        let rows = B::float_mul(hidden.clone(), grad.clone());
        B::float_select_assign(gw, 0, labels, rows, IndexingUpdateOp::Add)
    });
    (grad_hidden, grad_lm_head)
}
