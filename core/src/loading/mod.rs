//! Loading model files: GGUF containers, safetensors, HF config/tokenizer files, and telling a
//! model path's kind apart.

pub mod gguf;
pub mod model_files;
pub mod safetensors;

pub use model_files::{ModelPath, TextAssets};
