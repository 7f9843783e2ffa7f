//! The vocabulary-chunked label log-probability with the output head frozen in its storage format
//! (a GGUF block matrix or a half-precision one), as a backend extension with its own backward.
//!
//! The same quantities as `chunked.rs` (see its docs), for the head that LoRA training does not
//! train: per vocabulary chunk of `chunk` rows, those rows of `W` are dequantized into a scratch
//! buffer, `z = hidden · W_cᵀ` is one GEMM, and each row's online log-sum-exp takes it in. The
//! backward recomputes the chunk's `z` from the saved per-row `lse` and subtracts
//! `(g ∘ exp(z − lse)) · W_c` from `d hidden`, which starts as `g_t · W[label_t]` (the label rows,
//! dequantized one at a time). The head gets no gradient (it is frozen). So the f32 head never
//! exists whole: the step holds one chunk of rows (`chunk × H` floats) and one chunk of logits
//! (`T × chunk`). The dense head of a 128k-vocabulary model is 2 GiB in f32 at H = 4,096.
//!
//! Backends: the CPU backend runs the host kernels below. Others (cubecl) expand the head to a
//! dense tensor and run the dense chunked path: the frozen head stays stored on the CPU backend
//! only, as the frozen linear layers do (`frozen.rs`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use rayon::prelude::*;

use super::chunked::{chunked_backward, chunked_forward, chunks};
use crate::flex;
use crate::frozen::{Frozen, FrozenMatrix, dense_of, dequantize_rows};
use crate::host::{Operand, exp_f32, gemm, lane_max};
use crate::multiversion;

#[inline(always)]
fn exp_sum_impl(z: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = z.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += exp_f32(x - m);
        }
    }
    let rest: f32 = chunks.remainder().iter().map(|&x| exp_f32(x - m)).sum();
    acc.iter().sum::<f32>() + rest
}

multiversion!(
    /// `Σ exp(z − m)` in 16 lanes.
    fn exp_sum => exp_sum_impl(z: &[f32], m: f32) -> f32
);

#[inline(always)]
fn scaled_probs_impl(z: &mut [f32], lse: f32, g: f32) {
    for x in z.iter_mut() {
        *x = g * exp_f32(*x - lse);
    }
}

multiversion!(
    /// `z ← g · exp(z − lse)` (a row of `g_t p_tv`).
    fn scaled_probs => scaled_probs_impl(z: &mut [f32], lse: f32, g: f32)
);

/// The head's width `H`, after checking `hidden` is `[T, H]` and the labels are `T` rows of the
/// `[V, H]` head.
fn checked_width(hidden: &[f32], t: usize, w: &dyn FrozenMatrix, labels: &[u32]) -> usize {
    let (v, h) = (w.rows(), w.cols());
    assert_eq!(hidden.len(), t * h, "frozen-head loss: hidden is not [{t}, {h}]");
    assert_eq!(
        labels.len(),
        t,
        "frozen-head loss: {} labels for {t} rows",
        labels.len()
    );
    assert!(
        labels.iter().all(|&l| (l as usize) < v),
        "frozen-head loss: a label outside the vocabulary of {v} (checked by the caller)"
    );
    h
}

/// For each vocabulary chunk of `chunk` rows of `w` (`c` rows, the last one shorter): the rows
/// dequantized (`[c, H]`) and the logits `z = hidden · W_cᵀ` (`[T, c]`), given to
/// `f(c, rows, z)`. The two buffers are allocated once and reused.
fn for_each_chunk(
    hidden: &[f32],
    t: usize,
    w: &dyn FrozenMatrix,
    chunk: usize,
    mut f: impl FnMut(usize, &[f32], &mut [f32]),
) {
    let (v, h) = (w.rows(), w.cols());
    let chunk = chunk.clamp(1, v.max(1));
    let mut rows = vec![0.0f32; chunk * h];
    let mut z = vec![0.0f32; t * chunk];
    for (c0, c1) in chunks(v, chunk) {
        let c = c1 - c0;
        let (rows, z) = (&mut rows[..c * h], &mut z[..t * c]);
        dequantize_rows(w, c0, rows);
        gemm(
            (t, c, h),
            z,
            c,
            false,
            Operand::rows(hidden, h),
            Operand::transposed(rows, h),
            1.0,
            true,
        );
        f(c, rows, z);
    }
}

/// `(logp, lse)` (`[T]` each) of `hidden` `[T, H]` against the frozen head `w` `[V, H]`.
pub fn host_forward(
    hidden: &[f32],
    t: usize,
    w: &dyn FrozenMatrix,
    labels: &[u32],
    chunk: usize,
) -> (Vec<f32>, Vec<f32>) {
    let h = checked_width(hidden, t, w, labels);
    let mut m = vec![f32::NEG_INFINITY; t];
    let mut s = vec![0.0f32; t];
    for_each_chunk(hidden, t, w, chunk, |c, _, z| {
        z.par_chunks(c)
            .zip(m.par_iter_mut().zip(s.par_iter_mut()))
            .for_each(|(zr, (m, s))| {
                let m_new = m.max(lane_max(zr));
                // The first chunk: `exp(−inf) · 0`, no NaN (m_new is finite: z is).
                let rescale = if *m == f32::NEG_INFINITY {
                    0.0
                } else {
                    (*m - m_new).exp()
                };
                *s = *s * rescale + exp_sum(zr, m_new);
                *m = m_new;
            });
    });
    let lse: Vec<f32> = m.iter().zip(&s).map(|(&m, &s)| m + s.ln()).collect();
    let logp = hidden
        .par_chunks(h.max(1))
        .zip(labels.par_iter().zip(lse.par_iter()))
        .map_init(
            || vec![0.0f32; h],
            |row, (x, (&label, &lse))| {
                w.dequantize_row(label as usize, row);
                x.iter().zip(row.iter()).map(|(a, b)| a * b).sum::<f32>() - lse
            },
        )
        .collect();
    (logp, lse)
}

/// `d hidden` (`[T, H]`) of `Σ_t grad_t · logp_t` for [`host_forward`], from its `lse`.
pub fn host_backward(
    hidden: &[f32],
    t: usize,
    w: &dyn FrozenMatrix,
    labels: &[u32],
    lse: &[f32],
    grad: &[f32],
    chunk: usize,
) -> Vec<f32> {
    let h = checked_width(hidden, t, w, labels);
    assert!(
        lse.len() == t && grad.len() == t,
        "frozen-head loss backward: lse or grad is not [{t}]"
    );
    // The label terms: g_t · W[label_t].
    let mut dh = vec![0.0f32; t * h];
    dh.par_chunks_mut(h.max(1))
        .zip(labels.par_iter().zip(grad.par_iter()))
        .for_each(|(row, (&label, &g))| {
            w.dequantize_row(label as usize, row);
            row.iter_mut().for_each(|x| *x *= g);
        });
    for_each_chunk(hidden, t, w, chunk, |c, rows, z| {
        z.par_chunks_mut(c)
            .zip(lse.par_iter().zip(grad.par_iter()))
            .for_each(|(zr, (&lse, &g))| scaled_probs(zr, lse, g));
        // d hidden −= (g ∘ P_c) W_c.
        gemm(
            (t, h, c),
            &mut dh,
            h,
            true,
            Operand::rows(z, c),
            Operand::rows(rows, h),
            -1.0,
            true,
        );
    });
    dh
}

/// The loss with a frozen stored head as a backend extension (see the module docs).
#[backend_extension(Cube: cfg(feature = "wgpu"), Flex, Autodiff)]
pub trait FrozenHeadLossOps: Backend {
    /// `(logp, lse)` (both `[T]`): the label log-probabilities and each row's log-sum-exp.
    fn frozen_head_logprob_lse(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dense = dense_of::<Self>(&head, &hidden.device());
        chunked_forward::<Self>(hidden, dense, labels, chunk)
    }

    /// `d hidden` of `Σ_t grad_t · logp_t`.
    fn frozen_head_logprob_backward(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let dense = dense_of::<Self>(&head, &hidden.device());
        dense_hidden_grad::<Self>(hidden, dense, labels, lse, grad, chunk)
    }
}

/// `d hidden` through the dense chunked path, given the head as a dense tensor.
fn dense_hidden_grad<B: Backend>(
    hidden: FloatTensor<B>,
    dense: FloatTensor<B>,
    labels: IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    chunk: usize,
) -> FloatTensor<B> {
    chunked_backward::<B>(hidden, dense, labels, lse, grad, chunk, true, false)
        .0
        .expect("the hidden gradient was asked for")
}

/// A CPU-backend int tensor's values as token ids.
fn ids(labels: &IntTensor<Flex>) -> Vec<u32> {
    let labels = labels.to_contiguous();
    if let Some(v) = labels.as_slice::<i64>() {
        v.iter().map(|&l| l as u32).collect()
    } else if let Some(v) = labels.as_slice::<i32>() {
        v.iter().map(|&l| l as u32).collect()
    } else {
        panic!("frozen-head loss: labels are neither i64 nor i32")
    }
}

impl FrozenHeadLossOps for Flex {
    fn frozen_head_logprob_lse(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let t = hidden.shape()[0];
        let device = hidden.device();
        let (logp, lse) = host_forward(&flex::values(&hidden), t, &*head.0, &ids(&labels), chunk);
        (
            flex::from_vec::<Flex>(logp, [t], &device),
            flex::from_vec::<Flex>(lse, [t], &device),
        )
    }

    fn frozen_head_logprob_backward(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let [t, h] = hidden.shape().dims::<2>();
        let dh = host_backward(
            &flex::values(&hidden),
            t,
            &*head.0,
            &ids(&labels),
            &flex::values(&lse),
            &flex::values(&grad),
            chunk,
        );
        flex::from_vec::<Flex>(dh, [t, h], &hidden.device())
    }
}

/// On cubecl devices a head that lends its storage is dequantized there, block of rows by block
/// of rows ([`crate::stored`]), for the dense chunked path: nothing of it crosses from the host
/// after the first upload, but the f32 head exists on the device for the op's duration.
#[cfg(feature = "wgpu")]
impl FrozenHeadLossOps for burn::backend::Cube {
    fn frozen_head_logprob_lse(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dense = device_dense(&head, &hidden);
        chunked_forward::<Self>(hidden, dense, labels, chunk)
    }

    fn frozen_head_logprob_backward(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let dense = device_dense(&head, &hidden);
        dense_hidden_grad::<Self>(hidden, dense, labels, lse, grad, chunk)
    }
}

/// The head as a dense f32 tensor on `like`'s device: dequantized there from its stored
/// layout, or expanded on the host where it lends none.
#[cfg(feature = "wgpu")]
fn device_dense(head: &Frozen, like: &FloatTensor<burn::backend::Cube>) -> FloatTensor<burn::backend::Cube> {
    match crate::stored::on_device(head, like) {
        Some(dev) => crate::stored::dequantize_all(&dev),
        None => dense_of::<burn::backend::Cube>(head, &like.device()),
    }
}

impl<B: Backend + FrozenHeadLossOps, C: CheckpointStrategy> FrozenHeadLossOps for Autodiff<B, C> {
    fn frozen_head_logprob_lse(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct FrozenHeadLogprob;

        impl<B: Backend + FrozenHeadLossOps> Backward<B, 1> for FrozenHeadLogprob {
            /// hidden, the head, labels, per-row lse, chunk.
            type State = (FloatTensor<B>, Frozen, IntTensor<B>, FloatTensor<B>, usize);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_hidden] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (hidden, head, labels, lse, chunk) = ops.state;
                if let Some(node) = node_hidden {
                    let g = B::frozen_head_logprob_backward(hidden, head, labels, lse, grad, chunk);
                    grads.register::<B>(node.id, g);
                }
            }
        }

        match FrozenHeadLogprob
            .prepare::<C>([hidden.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let hidden = hidden.into_primitive();
                let (logp, lse) = B::frozen_head_logprob_lse(hidden.clone(), head.clone(), labels.clone(), chunk);
                let out = prep.finish((hidden, head, labels, lse.clone(), chunk), logp);
                (out, <Self as AutodiffBackend>::from_inner(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (logp, lse) = B::frozen_head_logprob_lse(hidden.into_primitive(), head, labels, chunk);
                (prep.finish(logp), <Self as AutodiffBackend>::from_inner(lse))
            }
        }
    }

    fn frozen_head_logprob_backward(
        hidden: FloatTensor<Self>,
        head: Frozen,
        labels: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let inner = |t: FloatTensor<Self>| t.into_primitive();
        <Self as AutodiffBackend>::from_inner(B::frozen_head_logprob_backward(
            inner(hidden),
            head,
            labels,
            inner(lse),
            inner(grad),
            chunk,
        ))
    }
}
