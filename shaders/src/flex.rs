//! Moving values between host `Vec<f32>`s and backend tensors, for the host kernels of the
//! backend extensions.

use std::borrow::Cow;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex};
use burn::tensor::{Shape, TensorData};

/// A CPU-backend tensor's f32 values: borrowed when contiguous, else a contiguous copy.
pub(crate) fn values(t: &FloatTensor<Flex>) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor")
                .to_vec(),
        ),
    }
}

/// `values` as a tensor of `shape` on `device` (the vector becomes the tensor's buffer on the
/// CPU backend: no copy).
pub(crate) fn from_vec<B: Backend>(values: Vec<f32>, shape: impl Into<Shape>, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(values, shape.into()), device)
}
