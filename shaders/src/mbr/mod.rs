//! Embedding-similarity MBR (minimum Bayes risk) scoring, batched over questions.
//!
//! For each question `b` with `N` sampled answers embedded as rows of `E_b` (`[N, D]`, rows
//! already L2-normalized, so a dot product is the cosine similarity):
//! - `similarity[b] = E_b · E_bᵀ` (`[N, N]`),
//! - `scores[b, i] = mean_j similarity[b, i, j]`, self included (SEALONG's MBR score),
//! - `chosen[b]` = the first index of the maximum score (lowest index on exact ties).
//!
//! Three entry points with one signature: [`mbr_scores`] (the cubecl kernel, one launch for the
//! whole batch; cubecl devices only), [`mbr_scores_reference`] (its twin in plain burn ops; any
//! device) and [`mbr_scores_auto`] (the kernel where it can run, the twin otherwise).
//!
//! Inputs must be finite: with a NaN in a question's scores its `chosen` is unspecified.

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

#[cfg(feature = "wgpu")]
mod kernel;
mod reference;

pub use reference::mbr_scores_reference;

/// What MBR scoring returns for `B` questions of `N` samples each.
#[derive(Debug, Clone)]
pub struct MbrOutput {
    /// `[B, N, N]` f32: `similarity[b, i, j] = e_bi · e_bj`.
    pub similarity: Tensor<3>,
    /// `[B, N]` f32: row means of `similarity`, self included.
    pub scores: Tensor<2>,
    /// `[B]` int (the device's default int dtype): first argmax of each row of `scores`.
    pub chosen: Tensor<1, Int>,
}

/// Why MBR scoring refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MbrError {
    /// The embeddings are not a rank-3 `[questions, samples, dims]` array.
    Rank {
        /// The rank that was given.
        rank: usize,
    },
    /// The embeddings are not floating point.
    NotFloat {
        /// The dtype that was given, as text.
        dtype: String,
    },
    /// `N = 0`: a question without samples has no MBR choice.
    NoSamples,
    /// `D = 0`: empty embeddings have no similarity.
    NoDims,
    /// The kernel addresses its buffers with 32-bit indices; this batch needs more.
    TooLarge {
        /// Which buffer is too large.
        buffer: &'static str,
        /// Its element count.
        elements: u128,
    },
    /// [`mbr_scores`] (the kernel) was given a tensor that is not on a cubecl device, or this
    /// build has no kernels (feature `wgpu` off). Use [`mbr_scores_auto`] to fall back.
    NotCubeDevice {
        /// The tensor's device, as text.
        device: String,
    },
}

impl std::fmt::Display for MbrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rank { rank } => write!(
                f,
                "MBR embeddings must have rank 3 [questions, samples, dims], got rank {rank}"
            ),
            Self::NotFloat { dtype } => write!(f, "MBR embeddings must be floating point, got {dtype}"),
            Self::NoSamples => write!(f, "MBR embeddings have no samples (N = 0)"),
            Self::NoDims => write!(f, "MBR embeddings have no dimensions (D = 0)"),
            Self::TooLarge { buffer, elements } => write!(
                f,
                "MBR kernel: the {buffer} buffer would hold {elements} elements, more than 32-bit indexing allows; \
                 split the batch"
            ),
            Self::NotCubeDevice { device } => write!(
                f,
                "the MBR kernel runs on cubecl (wgpu) devices only (this build: {}), got a tensor on {device}; \
                 use mbr_scores_auto or mbr_scores_reference",
                if cfg!(feature = "wgpu") {
                    "kernels on"
                } else {
                    "kernels off"
                }
            ),
        }
    }
}

impl std::error::Error for MbrError {}

/// Builds the `[B, N, D]` embeddings tensor from data of unknown shape (e.g. read from a file),
/// refusing anything but a rank-3 float array with `N > 0` and `D > 0`.
pub fn embeddings_from_data(data: TensorData, device: &Device) -> Result<Tensor<3>, MbrError> {
    let rank = data.shape().len();
    if rank != 3 {
        return Err(MbrError::Rank { rank });
    }
    if !data.dtype().is_float() {
        return Err(MbrError::NotFloat {
            dtype: format!("{:?}", data.dtype()),
        });
    }
    check_dims([data.shape()[0], data.shape()[1], data.shape()[2]])?;
    Ok(Tensor::<3>::from_data(data, (device, DType::F32)))
}

/// The MBR kernel: similarity, scores and chosen for the whole batch in one cubecl launch.
///
/// The tensor must live on a cubecl device (wgpu in this workspace), else
/// [`MbrError::NotCubeDevice`]. Non-f32 input is cast to f32 first. The outputs are plain
/// (non-autodiff) tensors: the kernel has no backward pass, so an autodiff input is detached;
/// use [`mbr_scores_reference`] where gradients must flow through the scores.
pub fn mbr_scores(embeddings: Tensor<3>) -> Result<MbrOutput, MbrError> {
    let [b, n, _] = check_dims(embeddings.dims())?;
    if b == 0 {
        return Ok(empty_output(n, &embeddings.device()));
    }
    #[cfg(feature = "wgpu")]
    {
        kernel::launch(embeddings)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        Err(MbrError::NotCubeDevice {
            device: format!("{:?}", embeddings.device()),
        })
    }
}

/// The kernel when the tensor is on a cubecl (wgpu) device and not tracked by autodiff, the
/// plain-burn twin otherwise (CPU `flex`, or a tracked tensor whose gradient must flow).
pub fn mbr_scores_auto(embeddings: Tensor<3>) -> Result<MbrOutput, MbrError> {
    #[cfg(feature = "wgpu")]
    if !embeddings.is_tracked() && kernel::on_cube_device(&embeddings.device()) {
        return mbr_scores(embeddings);
    }
    mbr_scores_reference(embeddings)
}

/// Checks `N > 0` and `D > 0` (`B = 0` is an empty batch, answered with empty outputs).
fn check_dims(dims: [usize; 3]) -> Result<[usize; 3], MbrError> {
    if dims[1] == 0 {
        return Err(MbrError::NoSamples);
    }
    if dims[2] == 0 {
        return Err(MbrError::NoDims);
    }
    Ok(dims)
}

/// The outputs for `B = 0`.
fn empty_output(n: usize, device: &Device) -> MbrOutput {
    MbrOutput {
        similarity: Tensor::<3>::zeros([0, n, n], (device, DType::F32)),
        scores: Tensor::<2>::zeros([0, n], (device, DType::F32)),
        chosen: Tensor::<1, Int>::zeros([0], device),
    }
}

/// f32 view of the embeddings (a no-op when they already are f32).
fn as_f32(embeddings: Tensor<3>) -> Tensor<3> {
    if embeddings.dtype() == DType::F32 {
        embeddings
    } else {
        embeddings.cast(FloatDType::F32)
    }
}
