//! cubecl kernels (similarity/MBR, fused losses) with plain-burn reference twins; knows no model.
//!
//! Every kernel has a twin with the same signature written in plain burn tensor ops, which runs
//! on any device (the CPU backend `flex` included); the tests compare the two. An `*_auto`
//! function picks the kernel on a cubecl (wgpu) device and the twin elsewhere.

pub mod attention;
#[cfg(feature = "wgpu")]
mod cube_alloc;
mod flex;
pub mod frozen;
pub mod host;
pub mod loss;
pub mod mbr;
pub mod stored;
pub mod swiglu;

pub use loss::{
    DEFAULT_CHUNK, LossError, label_logprobs, label_logprobs_chunked, label_logprobs_reference, segment_logprob_sums,
    segment_logprob_sums_chunked, segment_logprob_sums_reference, segment_sums,
};
pub use mbr::{MbrError, MbrOutput, embeddings_from_data, mbr_scores, mbr_scores_auto, mbr_scores_reference};
