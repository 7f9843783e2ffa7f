//! RMSNorm as HF computes it: `weight * (x * rsqrt(mean(x^2) + eps))`, in f32.

use burn::prelude::*;

/// # Shapes
/// `x`: `[.., d]`, `weight`: `[d]` -> `[.., d]`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Tensor<D> {
    let variance = x.clone().square().mean_dim(D - 1);
    let normed = x * (variance + eps).sqrt().recip();
    let d = weight.dims()[0];
    let mut shape = [1usize; D];
    shape[D - 1] = d;
    normed * weight.clone().reshape(shape)
}
