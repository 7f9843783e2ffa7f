//! Operations outside burn: host-slice versions of the decoder's ops for the CPU engine, the
//! split-K decode attention over a shared prefix, and the vectorizable math both use.

pub mod decode_attention;
pub mod host;
pub mod vector;
