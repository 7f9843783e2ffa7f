//! The flag groups several commands flatten into their Args (`ModelArgs`, `SeedArgs`,
//! `DeviceArgs`, `DecodeArgs`) and the scoring method `score` and `run` share. Each command's
//! own Args live in its module under `commands/`, the backend flags in `openai.rs`, and `Cli`
//! in `cli.rs`; this module imports none of them.

use clap::Args;

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

pub use sealong::mbr::LongText;
/// Scoring methods of `score`: core's MBR method (`sealong::mbr::Method`, its names and help).
pub use sealong::mbr::Method as ScoreMethod;

/// clap's parser of a `--long-text` flag: core's readings with their help lines.
pub fn long_text_parser() -> impl clap::builder::TypedValueParser<Value = LongText> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        LongText::ALL
            .iter()
            .map(|m| PossibleValue::new(m.name()).help(m.help())),
    )
    .try_map(|s| s.parse::<LongText>())
}

/// clap's parser of a `--method` flag over `allowed`: core's names, each listed with its help
/// line as a `ValueEnum` would be (core stays clap-free).
pub fn method_parser(allowed: &'static [ScoreMethod]) -> impl clap::builder::TypedValueParser<Value = ScoreMethod> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(allowed.iter().map(|m| PossibleValue::new(m.name()).help(m.help())))
        .try_map(|s| s.parse::<ScoreMethod>())
}
