//! Neural-network building blocks on burn tensors: linear layers over dense or storage-format
//! weights, RMSNorm, rotary embeddings, attention over a KV cache.

pub mod attention;
pub mod kv_cache;
pub mod linear;
pub mod norm;
pub mod rope;

pub use kv_cache::KvCache;
pub use linear::{Embedding, Linear, LinearWeight};
