//! Loading model files: GGUF containers, safetensors, HF config/tokenizer files, telling a
//! model path's kind apart, and the [`weight::Weight`] every loader hands over.

pub mod gguf;
pub mod model_files;
pub mod safetensors;
pub mod weight;

pub use model_files::{ModelPath, TextAssets};
