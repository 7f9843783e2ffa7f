//! The fused loss's twin in plain burn ops: the eager `[T, V]` logits and `log_softmax`.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::log_softmax;

use super::{LossError, as_f32, check_inputs, labels_tensor, segment_sums};

/// Same contract as [`super::label_logprobs`], eagerly: `logits = hidden · lm_headᵀ` (`[T, V]`),
/// `log_softmax` over the vocabulary, gathered at the labels. Any device; autodiff works through
/// it as through any burn expression.
pub fn label_logprobs_reference(hidden: Tensor<2>, lm_head: Tensor<2>, labels: &[u32]) -> Result<Tensor<1>, LossError> {
    let (t, _, _) = check_inputs(&hidden, &lm_head, labels)?;
    let device = hidden.device();
    if t == 0 {
        return Ok(Tensor::<1>::zeros([0], (&device, DType::F32)));
    }
    let logits = as_f32(hidden).matmul(as_f32(lm_head).transpose());
    let index = labels_tensor(labels, &device).reshape([t, 1]);
    Ok(log_softmax(logits, 1).gather(1, index).reshape([t]))
}

/// Same contract as [`super::segment_logprob_sums`], through [`label_logprobs_reference`].
pub fn segment_logprob_sums_reference(
    hidden: Tensor<2>,
    lm_head: Tensor<2>,
    labels: &[u32],
    segments: &[Range<usize>],
) -> Result<Tensor<1>, LossError> {
    segment_sums(label_logprobs_reference(hidden, lm_head, labels)?, segments)
}
