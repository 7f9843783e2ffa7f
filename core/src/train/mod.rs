//! Training: prompt/response masking ([`batch`]), LoRA and the choice of trainable parameters
//! ([`lora`]), the SFT/ORPO losses in plain burn ops ([`loss`]; the trainer uses the fused kernel
//! of the shaders crate), AdamW and clipping ([`optim`]), the learning-rate schedule
//! ([`schedule`]), checkpoints ([`checkpoint`]), the loop ([`trainer`]) and the files a trained
//! model is handed over in ([`export`]).

pub mod batch;
pub mod checkpoint;
pub mod export;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod recompute;
pub mod schedule;
pub mod trainer;

pub use batch::{IGNORE_INDEX, Tokenized, TokenizedPair, tokenize_pair, tokenize_response};
pub use export::{ExportDtype, PeftAdapter, load_peft_adapter, save_merged, save_peft_adapter};
pub use lora::{LoraConfig, LoraTarget, ParamMut, TrainMode, apply_lora, merge_lora, prepare_training, set_trainable};
pub use loss::{
    OrpoLoss, OrpoMetrics, ResponseHidden, SequenceLogps, orpo_loss, pair_logps, response_hidden, response_logps,
    sft_loss,
};
pub use trainer::{Example, Method, Outcome, Skipped, StepMetrics, TrainConfig, Trainer, prepare_examples};
