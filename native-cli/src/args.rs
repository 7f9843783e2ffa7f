//! The flag groups several commands flatten into their Args (`ModelArgs`, `SeedArgs`,
//! `DeviceArgs`, `DecodeArgs`) and the scoring method `score` and `run` share. Each command's
//! own Args live in its module under `commands/`, the backend flags in `openai.rs`, and `Cli`
//! in `cli.rs`; this module imports none of them.

use clap::{Args, ValueEnum};

use crate::device::DeviceChoice;
use crate::provision::DEFAULT_DECODER;

/// Which model to use.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A default model name (fetched on first use) or a path: a .gguf file or an HF directory.
    #[arg(long, short = 'm', default_value = DEFAULT_DECODER)]
    pub model: String,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct SeedArgs {
    /// Seed for every random choice; the same seed and inputs give the same output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    /// Where the model runs: auto (a GPU if there is one), cpu, or gpu (any wgpu adapter).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// CPU arithmetic with quantized weights: exact (f32 activations, parity with transformers)
    /// or int8 (activations rounded per block as llama.cpp does; faster).
    #[arg(long, default_value = "exact")]
    pub precision: String,
}

/// Decoding flags shared by `generate` and `sample`.
#[derive(Debug, Args, Clone)]
pub struct DecodeArgs {
    /// Answer strategy (suffix after the question).
    #[arg(long, default_value = "plan_and_solve")]
    pub strategy: String,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Over the model's context, cut the middle of the context (as LongBench does) instead of failing.
    #[arg(long)]
    pub truncate_middle: bool,
    /// Top-p (nucleus) cut; 1.0 = off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Top-k cut; 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
}

/// Scoring methods of `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoreMethod {
    /// MBR with the cosine between sentence embeddings (the paper's default).
    Embedding,
    /// MBR with ROUGE-L F1 (rouge-score's tokenization, no stemmer).
    RougeL,
    /// The decoder rates each answer 1..5 given the context (reference-free, not MBR).
    SelfEval,
    /// MBR with the decoder judging whether two answers agree (True = 1, False = 0).
    RefSelfEval,
    /// A uniformly random chosen and rejected (baseline).
    Random,
}
