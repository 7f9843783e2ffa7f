//! The label log-probabilities that SFT and ORPO are built from, over response positions, fused
//! with the LM head and chunked over the vocabulary, with its plain-burn reference twin.
//!
//! Inputs (shared by both paths):
//! - `hidden` `[T, H]`: the final-normed hidden states at the `T` positions whose next token is a
//!   response label (the caller gathers them),
//! - `lm_head` `[V, H]`: the output (embedding) matrix,
//! - `labels` (`T` ids, each `< V`): the token that follows each position,
//! - `segments`: which rows belong to which sequence, as row ranges `start..end` of `hidden`.
//!
//! Two paths, one contract:
//! - [`label_logprobs`] / [`segment_logprob_sums`] (fused): `logp_t = log softmax(hidden_t ·
//!   lm_headᵀ)[label_t]` computed chunk by chunk over the vocabulary with an online
//!   log-sum-exp, so memory is `O(T × chunk)` instead of `O(T × V)`; its backward (registered
//!   with burn's autodiff as a custom op, see `chunked.rs`) recomputes each chunk's softmax from
//!   the saved per-row log-sum-exp, so no `[T, V]` tensor exists in either direction.
//! - [`label_logprobs_reference`] / [`segment_logprob_sums_reference`] (twin): the eager
//!   `log_softmax(hidden · lm_headᵀ)` gathered at the labels, in plain burn ops; autodiff
//!   works through it as through any burn expression.
//!
//! Both run on every backend (CPU `flex`, wgpu) and under autodiff; gradients flow to `hidden`
//! and to `lm_head` when they are tracked.
//!
//! The objective built from the per-segment sums (ORPO and SFT, SEALONG.md "ORPO loss") lives in
//! core (`sealong::train::orpo`): this crate keeps the kernels and their twins only.

use std::ops::Range;

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

mod chunked;
mod frozen_head;
#[cfg(feature = "wgpu")]
mod kernel;
mod reference;

pub use chunked::FusedLossOps;
pub use frozen_head::{
    FrozenHeadLossOps, host_backward as frozen_head_host_backward, host_forward as frozen_head_host_forward,
};
pub use reference::{label_logprobs_reference, segment_logprob_sums_reference};

/// The default vocabulary chunk of the fused path (columns of `[T, chunk]` logits at a time).
pub const DEFAULT_CHUNK: usize = 8192;

/// Why the loss refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossError {
    /// `hidden` and `lm_head` disagree on the hidden size.
    HiddenSize {
        /// `hidden`'s second dimension.
        hidden: usize,
        /// `lm_head`'s second dimension.
        lm_head: usize,
    },
    /// The number of labels is not the number of rows of `hidden`.
    LabelCount {
        /// Rows of `hidden`.
        rows: usize,
        /// Labels given.
        labels: usize,
    },
    /// A label is not a row of `lm_head`.
    LabelOutOfRange {
        /// Its position.
        position: usize,
        /// Its value.
        label: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The vocabulary is empty.
    EmptyVocab,
    /// A segment is not a range inside `0..T`.
    Segment {
        /// Which segment.
        index: usize,
        /// Its range.
        range: Range<usize>,
        /// Rows of `hidden`.
        rows: usize,
    },
}

impl std::fmt::Display for LossError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HiddenSize { hidden, lm_head } => {
                write!(f, "loss: hidden has size {hidden} but lm_head rows have size {lm_head}")
            }
            Self::LabelCount { rows, labels } => {
                write!(f, "loss: {labels} labels for {rows} hidden rows")
            }
            Self::LabelOutOfRange { position, label, vocab } => write!(
                f,
                "loss: label {label} at position {position} is outside the vocabulary of {vocab}"
            ),
            Self::EmptyVocab => write!(f, "loss: lm_head has no rows (empty vocabulary)"),
            Self::Segment { index, range, rows } => {
                write!(f, "loss: segment {index} ({range:?}) is not a range inside 0..{rows}")
            }
        }
    }
}

impl std::error::Error for LossError {}

/// Checks shapes and labels; returns `(T, H, V)`.
pub(crate) fn check_inputs(
    hidden: &Tensor<2>,
    lm_head: &Tensor<2>,
    labels: &[u32],
) -> Result<(usize, usize, usize), LossError> {
    check_shapes(hidden, lm_head.dims(), labels)
}

/// [`check_inputs`] against a head of shape `[v, hw]`.
fn check_shapes(hidden: &Tensor<2>, [v, hw]: [usize; 2], labels: &[u32]) -> Result<(usize, usize, usize), LossError> {
    let [t, h] = hidden.dims();
    if h != hw {
        return Err(LossError::HiddenSize { hidden: h, lm_head: hw });
    }
    if labels.len() != t {
        return Err(LossError::LabelCount {
            rows: t,
            labels: labels.len(),
        });
    }
    if v == 0 {
        return Err(LossError::EmptyVocab);
    }
    if let Some((position, &label)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= v) {
        return Err(LossError::LabelOutOfRange {
            position,
            label,
            vocab: v,
        });
    }
    Ok((t, h, v))
}

/// The labels as an int tensor on `device`.
pub(crate) fn labels_tensor(labels: &[u32], device: &Device) -> Tensor<1, Int> {
    let ids: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Tensor::<1, Int>::from_data(TensorData::new(ids, [labels.len()]), device)
}

/// f32 view (a no-op when already f32).
pub(crate) fn as_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// Fused: `logp_t = log softmax(hidden_t · lm_headᵀ)[label_t]` (`[T]`), vocabulary chunked by
/// [`DEFAULT_CHUNK`]. See [`label_logprobs_chunked`].
pub fn label_logprobs(hidden: Tensor<2>, lm_head: Tensor<2>, labels: &[u32]) -> Result<Tensor<1>, LossError> {
    label_logprobs_chunked(hidden, lm_head, labels, DEFAULT_CHUNK)
}

/// Fused with an explicit vocabulary chunk (`chunk` columns of logits at a time; 0 counts as 1).
/// Never builds the `[T, V]` logits, forward or backward. Tracked inputs stay tracked: the
/// output's backward gives gradients to `hidden` and `lm_head`.
pub fn label_logprobs_chunked(
    hidden: Tensor<2>,
    lm_head: Tensor<2>,
    labels: &[u32],
    chunk: usize,
) -> Result<Tensor<1>, LossError> {
    let (t, _, _) = check_inputs(&hidden, &lm_head, labels)?;
    if t == 0 {
        return Ok(Tensor::<1>::zeros([0], (&hidden.device(), DType::F32)));
    }
    let labels = labels_tensor(labels, &hidden.device());
    let out = <Dispatch as FusedLossOps>::fused_label_logprob(
        as_f32(hidden).into_dispatch(),
        as_f32(lm_head).into_dispatch(),
        labels.into_dispatch(),
        chunk.max(1),
    );
    Ok(Tensor::<1>::from_dispatch(out))
}

/// [`label_logprobs_chunked`] with the output head frozen in its storage format (`head`
/// `[V, H]`, a GGUF block or half-precision matrix): the head is read a vocabulary chunk of rows
/// at a time, forward and backward, and never expanded whole; it gets no gradient. `hidden` stays
/// tracked. See `frozen_head.rs`.
pub fn label_logprobs_frozen_head(
    hidden: Tensor<2>,
    head: &crate::frozen::Frozen,
    labels: &[u32],
    chunk: usize,
) -> Result<Tensor<1>, LossError> {
    let (t, _, _) = check_shapes(&hidden, [head.0.rows(), head.0.cols()], labels)?;
    if t == 0 {
        return Ok(Tensor::<1>::zeros([0], (&hidden.device(), DType::F32)));
    }
    let labels = labels_tensor(labels, &hidden.device());
    let (logp, _lse) = <Dispatch as FrozenHeadLossOps>::frozen_head_logprob_lse(
        as_f32(hidden).into_dispatch(),
        head.clone(),
        labels.into_dispatch(),
        chunk.max(1),
    );
    Ok(Tensor::<1>::from_dispatch(logp))
}

/// [`segment_logprob_sums_chunked`] with the head frozen in its storage format
/// ([`label_logprobs_frozen_head`]).
pub fn segment_logprob_sums_frozen_head(
    hidden: Tensor<2>,
    head: &crate::frozen::Frozen,
    labels: &[u32],
    segments: &[Range<usize>],
    chunk: usize,
) -> Result<Tensor<1>, LossError> {
    segment_sums(label_logprobs_frozen_head(hidden, head, labels, chunk)?, segments)
}

/// Sums `logp` (`[T]`) over each segment (`[S]`), differentiably (one slice + sum per segment,
/// concatenated). Segment ranges must lie inside `0..T`; they may be empty (sum 0) or overlap.
pub fn segment_sums(logp: Tensor<1>, segments: &[Range<usize>]) -> Result<Tensor<1>, LossError> {
    let [t] = logp.dims();
    let device = logp.device();
    for (index, range) in segments.iter().enumerate() {
        if range.start > range.end || range.end > t {
            return Err(LossError::Segment {
                index,
                range: range.clone(),
                rows: t,
            });
        }
    }
    if segments.is_empty() {
        return Ok(Tensor::<1>::zeros([0], (&device, DType::F32)));
    }
    let parts = segments
        .iter()
        .map(|range| {
            if range.is_empty() {
                Tensor::<1>::zeros([1], (&device, DType::F32))
            } else {
                logp.clone().slice(range.clone()).sum()
            }
        })
        .collect();
    Ok(Tensor::cat(parts, 0))
}

/// Fused per-segment sums of the label log-probabilities (`[S]`); `lp = sum / length`.
pub fn segment_logprob_sums(
    hidden: Tensor<2>,
    lm_head: Tensor<2>,
    labels: &[u32],
    segments: &[Range<usize>],
) -> Result<Tensor<1>, LossError> {
    segment_sums(label_logprobs(hidden, lm_head, labels)?, segments)
}

/// [`segment_logprob_sums`] with an explicit vocabulary chunk.
pub fn segment_logprob_sums_chunked(
    hidden: Tensor<2>,
    lm_head: Tensor<2>,
    labels: &[u32],
    segments: &[Range<usize>],
    chunk: usize,
) -> Result<Tensor<1>, LossError> {
    segment_sums(label_logprobs_chunked(hidden, lm_head, labels, chunk)?, segments)
}
