//! cubecl kernels (similarity/MBR, fused losses) with plain-burn reference twins; knows no model.
//!
//! Every kernel has a twin with the same signature written in plain burn tensor ops, which runs
//! on any device (the CPU backend `flex` included); the tests compare the two. An `*_auto`
//! function picks the kernel on a cubecl (wgpu) device and the twin elsewhere.

pub mod mbr;

pub use mbr::{MbrError, MbrOutput, embeddings_from_data, mbr_scores, mbr_scores_auto, mbr_scores_reference};
