//! The MBR kernel's twin in plain burn tensor ops: runs on any device and under autodiff.

use burn::prelude::*;

use super::{MbrError, MbrOutput, as_f32, check_dims, empty_output};

/// Same contract as [`super::mbr_scores`], in plain burn ops (matmul, mean, max, min), on any
/// device. Autodiff-tracked inputs stay tracked through `similarity` and `scores`.
///
/// `chosen` does not use burn's `argmax`, whose tie-breaking is a backend detail: it takes the
/// row maximum, marks every position equal to it, and keeps the smallest marked index, so an
/// exact tie resolves to the first sample on every backend (as SEALONG's `np.argmax` does).
pub fn mbr_scores_reference(embeddings: Tensor<3>) -> Result<MbrOutput, MbrError> {
    let [b, n, _] = check_dims(embeddings.dims())?;
    let device = embeddings.device();
    if b == 0 {
        return Ok(empty_output(n, &device));
    }
    let e = as_f32(embeddings);
    let similarity = e.clone().matmul(e.swap_dims(1, 2));
    let scores: Tensor<2> = similarity.clone().mean_dim(2).squeeze_dim::<2>(2);

    let best = scores.clone().detach().max_dim(1).expand([b, n]);
    let is_best = scores.clone().detach().equal(best);
    let index = Tensor::<1, Int>::arange(0..n as i64, &device)
        .reshape([1, n])
        .expand([b, n]);
    let not_best = Tensor::<2, Int>::full([b, n], n as i64, &device);
    let chosen = not_best.mask_where(is_best, index).min_dim(1).squeeze_dim::<1>(1);

    Ok(MbrOutput {
        similarity,
        scores,
        chosen,
    })
}
