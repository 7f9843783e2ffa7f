//! The Llama-family decoder: config, weights (GGUF / HF safetensors), the model on burn.

pub mod config;
pub mod model;
pub mod weights;

pub use config::DecoderConfig;
pub use model::Decoder;
