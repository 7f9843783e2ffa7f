//! Output buffers of the cubecl kernels: one place that makes a new contiguous tensor on a
//! device for a kernel to fill.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Shape};

/// A new contiguous tensor of `shape` and `dtype` on `like`'s device, uninitialized (the
/// kernel that receives it writes every element it promises). At least one element's bytes
/// are allocated, so an empty shape still has a buffer to bind.
pub(crate) fn empty(like: &CubeTensor, shape: &[usize], dtype: DType) -> CubeTensor {
    let bytes = shape.iter().product::<usize>().max(1) * dtype.size();
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape.to_vec()),
        like.client.empty(bytes),
        dtype,
    )
}
