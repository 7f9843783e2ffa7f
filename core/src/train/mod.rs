//! Training: prompt/response masking ([`batch`]), LoRA and the choice of trainable parameters
//! ([`lora`]), the shared-prompt pair forward ([`loss`]), the SFT/ORPO objective on the shaders
//! crate's fused log-prob sums ([`orpo`]), AdamW and clipping ([`optim`]), the learning-rate schedule
//! ([`schedule`]), checkpoints ([`checkpoint`]), the loop ([`trainer`]) and the files a trained
//! model is handed over in ([`export`]).

pub mod batch;
pub mod checkpoint;
pub mod export;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod orpo;
pub mod recompute;
pub mod schedule;
pub mod trainer;

pub use crate::loading::safetensors::ExportDtype;
pub use crate::models::decoder::adapter::{PeftAdapter, load_peft_adapter};
pub use batch::{IGNORE_INDEX, Tokenized, TokenizedPair, tokenize_pair, tokenize_response};
pub use export::{save_merged, save_peft_adapter};
pub use lora::{LoraConfig, LoraTarget, ParamMut, TrainMode, apply_lora, merge_lora, prepare_training, set_trainable};
pub use loss::{ResponseHidden, shared_prompt_hidden};
pub use orpo::{DEFAULT_BETA, OrpoOutput, OrpoStats};
pub use trainer::{Example, Method, Outcome, Skipped, StepMetrics, TrainConfig, Trainer, prepare_examples};
