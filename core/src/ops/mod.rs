//! Operations outside burn: host-slice versions of the decoder's ops for the CPU engine.

pub mod host;
