//! Shared by `generate` and `sample`: loading the decoder with its tokenizer on a device, and
//! turning continuations into text.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use sealong::generate::{Continuation, FinishReason};
use sealong::loading::{ModelPath, TextAssets};
use sealong::models::decoder::adapter::{engine_with_adapter, load_peft_adapter};
use sealong::models::decoder::{Engine, LanguageModel};
use sealong::nn::linear::Precision;
use serde::Serialize;

use crate::args::DeviceArgs;
use crate::device;
use crate::provision;

/// A decoder ready to generate.
pub struct LoadedDecoder {
    pub model: Engine,
    pub text: TextAssets,
    /// What `--model` said (a default name or a path), recorded in outputs.
    pub name: String,
    pub path: PathBuf,
    pub device: Device,
    /// Ids that end generation: the config's EOS list plus the tokenizer's EOS.
    pub stop_ids: Vec<u32>,
}

impl LoadedDecoder {
    pub fn load(spec: &str, args: &DeviceArgs) -> Result<Self> {
        Self::load_with_adapter(spec, args, None)
    }

    /// Like [`LoadedDecoder::load`], with a PEFT LoRA adapter directory merged into the weights
    /// before the engine is built, so the fast CPU engine (not the burn twin) runs the adapted
    /// model; the adapted matrices become f32.
    pub fn load_with_adapter(spec: &str, args: &DeviceArgs, adapter: Option<&Path>) -> Result<Self> {
        let precision: Precision = args.precision.parse()?;
        let path = provision::resolve_model(spec)?;
        let kind = ModelPath::detect(&path)?;
        let device = device::select(args.device)?;
        let text = TextAssets::load(&kind).context("loading the tokenizer and chat template")?;
        let model = match adapter {
            None => Engine::load(&kind, &device, precision).context("loading the decoder")?,
            Some(dir) => {
                let adapter = load_peft_adapter(dir)?;
                let engine = engine_with_adapter(&kind, &adapter, &device, precision)
                    .with_context(|| format!("loading the decoder with the adapter {}", dir.display()))?;
                tracing::info!(
                    "LoRA adapter {} (r = {}, alpha = {}, {} modules)",
                    dir.display(),
                    adapter.config.r,
                    adapter.config.alpha,
                    adapter.modules.len()
                );
                engine
            }
        };
        let mut stop_ids = model.config().eos_token_ids.clone();
        if let Some(e) = text.tokenizer.eos_id
            && !stop_ids.contains(&e)
        {
            stop_ids.push(e);
        }
        tracing::info!(
            "decoder {} on {} ({})",
            path.display(),
            device::describe(&device),
            model.name()
        );
        Ok(LoadedDecoder {
            model,
            text,
            name: spec.to_string(),
            path,
            device,
            stop_ids,
        })
    }

    /// Most prompt tokens that leave room for `max_new_tokens`.
    pub fn prompt_budget(&self, max_new_tokens: usize) -> usize {
        self.model
            .config()
            .max_position_embeddings
            .saturating_sub(max_new_tokens)
    }

    /// The answer text of a continuation (stop token and special tokens left out).
    pub fn sample_record(&self, c: &Continuation) -> Result<SampleText> {
        let body: &[u32] = match c.finish_reason {
            FinishReason::Stop => &c.ids[..c.ids.len().saturating_sub(1)],
            FinishReason::Length => &c.ids,
        };
        Ok(SampleText {
            text: self.text.tokenizer.decode(body, true)?,
            num_tokens: Some(c.ids.len()),
            finish_reason: c.finish_reason,
        })
    }
}

/// One sample as written in stage-2 records.
#[derive(Debug, Clone, Serialize)]
pub struct SampleText {
    pub text: String,
    /// New tokens including the stop token; unknown (null) for a remote server that reports
    /// only the total of several choices.
    pub num_tokens: Option<usize>,
    pub finish_reason: FinishReason,
}
