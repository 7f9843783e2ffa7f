//! Operations outside burn: host-slice versions of the decoder's ops for the CPU engine, and
//! the split-K decode attention over a shared prefix.

pub mod decode_attention;
pub mod host;
