//! Training pieces: prompt/response masking ([`batch`]), LoRA and the choice of trainable
//! parameters ([`lora`]), and the SFT/ORPO losses in plain burn ops ([`loss`]).

pub mod batch;
pub mod lora;
pub mod loss;

pub use batch::{IGNORE_INDEX, Tokenized, TokenizedPair, tokenize_pair, tokenize_response};
pub use lora::{LoraConfig, LoraTarget, ParamMut, TrainMode, apply_lora, merge_lora, prepare_training, set_trainable};
pub use loss::{
    OrpoLoss, OrpoMetrics, ResponseHidden, SequenceLogps, orpo_loss, pair_logps, response_hidden, response_logps,
    sft_loss,
};
