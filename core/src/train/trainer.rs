//! The training loop of SEALONG's recipe: ORPO (or SFT) on LoRA adapters or all weights, AdamW,
//! global-norm clipping, linear warm-up then cosine decay, gradient accumulation over
//! micro-batches, checkpoints with exact resume, a stop on a non-finite loss.
//!
//! Loss normalization follows XTuner's setting of one pair per device batch: every pair's loss
//! is its own (token-mean NLL of its chosen response, its own log odds), and an optimizer step
//! minimizes the mean over its pairs. So the micro-batch size is a memory knob only: 1×8 and 8×1
//! give the same update.
//!
//! Each pair runs its prompt once and both responses against the shared prefix
//! ([`shared_prompt_hidden`]), and the loss goes through the fused vocabulary-chunked kernel of
//! the shaders crate, so no `[tokens, vocab]` logits exist.
//!
//! Determinism: the data order of epoch `e` is a seeded shuffle of (seed, e); LoRA dropout is
//! keyed by (seed, position of the pair in the run); the learning rate is a function of the
//! step. A checkpoint therefore needs only the step number besides tensors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde_json::{Value, json};

use crate::data::jsonl::Appender;
use crate::data::pairs::PreferencePair;
use crate::error::{Error, Result};
use crate::loading::TextAssets;
use crate::models::decoder::Decoder;
use crate::nn::LinearWeight;
use crate::train::batch::tokenize_pair;
use crate::train::checkpoint;
use crate::train::lora::{TrainMode, prepare_training};
use crate::train::loss::{ResponseHidden, shared_prompt_hidden};
use crate::train::optim::{AdamW, AdamWConfig, GradAccumulator, clip_factor};
use crate::train::orpo::{self, OrpoStats};
use crate::train::recompute;
use crate::train::schedule::Schedule;

/// What the model is trained to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Odds-ratio preference optimization on (chosen, rejected) pairs (SEALONG's default).
    Orpo,
    /// Supervised fine-tuning on the chosen responses.
    Sft,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "orpo" => Ok(Method::Orpo),
            "sft" => Ok(Method::Sft),
            _ => Err(Error::Invalid(format!("unknown method {s:?} (expected orpo or sft)"))),
        }
    }
}

/// The recipe (defaults: SEALONG's, see SEALONG.md; batch 8 pairs per step as the paper says).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub mode: TrainMode,
    /// ORPO's beta.
    pub beta: f64,
    /// Peak learning rate.
    pub lr: f64,
    pub adam: AdamWConfig,
    /// Global-norm clipping threshold; 0 turns clipping off.
    pub max_grad_norm: f64,
    pub warmup_ratio: f64,
    pub epochs: usize,
    /// Pairs per optimizer step.
    pub batch_size: usize,
    /// Pairs per forward/backward (a memory knob; does not change the update).
    pub micro_batch: usize,
    /// Tokens per sequence (prompt + response); longer sequences lose the end of the response,
    /// as XTuner truncates, and pairs whose prompt leaves no response token are skipped.
    pub max_length: usize,
    pub seed: u64,
    /// Checkpoint every this many optimizer steps (0: only at the end).
    pub checkpoint_every: usize,
    /// How many checkpoints to keep (0: all).
    pub keep_checkpoints: usize,
    /// Stop after this many optimizer steps in total (`None`: the epochs decide).
    pub max_steps: Option<usize>,
    /// Vocabulary columns per chunk of the fused loss.
    pub loss_chunk: usize,
    /// Keep only each decoder layer's input and recompute the layer in the backward
    /// (`train::recompute`): memory per token falls from every layer's activations to one
    /// hidden state per layer, for about one more forward of compute.
    #[serde(default = "yes")]
    pub activation_checkpointing: bool,
    /// With activation checkpointing: a step whose layers' whole graphs (predicted per example
    /// by [`eager_layers`]) fit in this many MiB keeps them, as without checkpointing, and is
    /// not recomputed; longer steps recompute every layer. `0` always recomputes.
    #[serde(default = "default_eager_mib")]
    pub eager_activation_mib: u64,
    /// A prompt that leaves no room for its responses within `max_length` loses the middle of
    /// its tokens (the context's middle, as sampling's `--truncate-middle` does) instead of the
    /// pair being skipped.
    #[serde(default)]
    pub truncate_prompt_middle: bool,
}

fn yes() -> bool {
    true
}

fn default_eager_mib() -> u64 {
    DEFAULT_EAGER_ACTIVATION_MIB
}

/// The default of [`TrainConfig::eager_activation_mib`]: 1 GiB runs SmolLM2-135M's 2 × 640-token
/// pairs without recomputation (30 layers of about 26 MiB); longer pairs, and the quickstart's
/// with LoRA dropout, recompute every layer.
pub const DEFAULT_EAGER_ACTIVATION_MIB: u64 = 1024;

impl TrainConfig {
    /// The recipe less what may change between a run and its resumption without changing the
    /// result (checkpoint cadence and count, micro-batches, the loss's vocabulary chunk): what
    /// `--resume` compares with the checkpoint, and what `sealong train` records beside it.
    pub fn result_shaping(&self) -> TrainConfig {
        let mut c = self.clone();
        c.checkpoint_every = 0;
        c.keep_checkpoints = 0;
        c.micro_batch = 1;
        c.loss_chunk = 0;
        c
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Orpo,
            mode: TrainMode::Lora(crate::train::LoraConfig::default()),
            beta: crate::train::orpo::DEFAULT_BETA,
            lr: 5e-5,
            adam: AdamWConfig::default(),
            max_grad_norm: 1.0,
            warmup_ratio: 0.05,
            epochs: 1,
            batch_size: 8,
            micro_batch: 1,
            max_length: 32768,
            seed: 42,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            max_steps: None,
            loss_chunk: sealong_shaders::loss::DEFAULT_CHUNK,
            activation_checkpointing: true,
            eager_activation_mib: DEFAULT_EAGER_ACTIVATION_MIB,
            truncate_prompt_middle: false,
        }
    }
}

impl TrainConfig {
    /// Checks the values a user can get wrong.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("the learning rate must be positive, got {}", self.lr));
        }
        if self.batch_size == 0 || self.micro_batch == 0 {
            return bad("batch size and micro-batch size must be at least 1".into());
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("epochs must be at least 1".into());
        }
        if self.max_length < 2 {
            return bad(format!("max length {} leaves no room for a response", self.max_length));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!("warm-up ratio must be in [0, 1], got {}", self.warmup_ratio));
        }
        if !(0.0..1.0).contains(&self.adam.beta1) || !(0.0..1.0).contains(&self.adam.beta2) {
            return bad("AdamW betas must be in [0, 1)".into());
        }
        if self.max_grad_norm < 0.0 || self.beta < 0.0 || self.adam.weight_decay < 0.0 {
            return bad("max grad norm, beta and weight decay must not be negative".into());
        }
        Ok(())
    }
}

/// One tokenized training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub id: String,
    /// `template([user])` with the generation prompt.
    pub prompt: Vec<u32>,
    /// The chosen response's ids (after the prompt: response, end of turn, template tail).
    pub chosen: Vec<u32>,
    /// The rejected response's ids (ORPO).
    pub rejected: Option<Vec<u32>>,
    /// Whether a response was cut to fit `max_length`.
    pub truncated: bool,
}

impl Example {
    /// Tokens of the sequences as the reference runs them (prompt + each response).
    pub fn tokens(&self) -> usize {
        self.prompt.len() * (1 + usize::from(self.rejected.is_some()))
            + self.chosen.len()
            + self.rejected.as_ref().map_or(0, Vec::len)
    }
}

/// A pair left out of training, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub id: String,
    pub line: usize,
    pub reason: String,
}

/// Tokenizes the records for `method` with the model's chat template (prompt/response masking as
/// XTuner does), right-truncating each sequence to `max_length` tokens. A pair whose prompt alone
/// reaches `max_length` is skipped (XTuner would produce a 0/0 loss and zero it).
///
/// With `truncate_middle`, a prompt too long for `max_length` keeps its first and last tokens
/// (the chat template's head and tail, the context's ends) and loses the middle, down to
/// `max_length` minus its longest response (at least half of `max_length`); the example is
/// marked truncated.
pub fn prepare_examples(
    assets: &TextAssets,
    pairs: &[PreferencePair],
    method: Method,
    max_length: usize,
    truncate_middle: bool,
) -> Result<(Vec<Example>, Vec<Skipped>)> {
    let mut examples = Vec::with_capacity(pairs.len());
    let mut skipped = Vec::new();
    for p in pairs {
        let rejected_text = match method {
            Method::Orpo => p
                .rejected
                .as_deref()
                .ok_or_else(|| Error::Invalid(format!("pair {:?} (line {}) has no rejected response", p.id, p.line)))?,
            // SFT tokenizes the chosen response twice rather than having a second code path.
            Method::Sft => &p.chosen,
        };
        let t = tokenize_pair(assets, &p.prompt, &p.chosen, rejected_text)
            .map_err(|e| Error::Invalid(format!("pair {:?} (line {}): {e}", p.id, p.line)))?;
        let longest = t.chosen.n_response().max(t.rejected.n_response());
        let mut prompt_ids = t.prompt_ids.clone();
        let mut cut_prompt = false;
        if truncate_middle && prompt_ids.len() + longest > max_length {
            let keep = max_length
                .saturating_sub(longest)
                .max(max_length / 2)
                .min(prompt_ids.len());
            prompt_ids = middle_cut(&prompt_ids, keep);
            cut_prompt = true;
        }
        let n_prompt = prompt_ids.len();
        if n_prompt >= max_length {
            skipped.push(Skipped {
                id: p.id.clone(),
                line: p.line,
                reason: format!(
                    "the prompt has {n_prompt} tokens, max length is {max_length} \
                     (--truncate-prompt-middle true keeps it with the middle of its context cut)"
                ),
            });
            continue;
        }
        let room = max_length - n_prompt;
        let cut = |ids: &[u32]| -> Vec<u32> { ids[..ids.len().min(room)].to_vec() };
        let chosen = cut(t.chosen.response_ids());
        let rejected = (method == Method::Orpo).then(|| cut(t.rejected.response_ids()));
        let truncated = cut_prompt
            || chosen.len() < t.chosen.n_response()
            || rejected.as_ref().is_some_and(|r| r.len() < t.rejected.n_response());
        examples.push(Example {
            id: p.id.clone(),
            prompt: prompt_ids,
            chosen,
            rejected,
            truncated,
        });
    }
    Ok((examples, skipped))
}

/// `ids` with its middle removed: the first `keep / 2` and the last `keep - keep / 2` ids.
fn middle_cut(ids: &[u32], keep: usize) -> Vec<u32> {
    let head = keep / 2;
    let tail = keep - head;
    let mut out = ids[..head].to_vec();
    out.extend_from_slice(&ids[ids.len() - tail..]);
    out
}

/// A fingerprint of the examples (ids and token ids), so `--resume` refuses different data.
fn fingerprint(examples: &[Example]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for e in examples {
        h.update(e.id.as_bytes());
        h.update([0]);
        for part in [Some(&e.prompt), Some(&e.chosen), e.rejected.as_ref()]
            .into_iter()
            .flatten()
        {
            h.update((part.len() as u64).to_le_bytes());
            for t in part {
                h.update(t.to_le_bytes());
            }
        }
    }
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// What one optimizer step logs (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    /// 1-based: the number of optimizer steps done after this one.
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub lr: f64,
    pub loss: f64,
    pub nll: f64,
    /// ORPO only (0 for SFT).
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub reward_accuracy: f64,
    pub margin: f64,
    pub log_odds: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub pairs: usize,
    /// Prompt + response tokens of the step's sequences, counted as the reference runs them.
    pub tokens: usize,
    pub step_seconds: f64,
    pub tokens_per_second: f64,
    /// The process's peak resident memory during this step, in MiB (`None` where the platform
    /// does not tell).
    pub peak_rss_mib: Option<f64>,
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub steps_done: usize,
    pub total_steps: usize,
    /// The step the run started from (0 for a fresh run).
    pub resumed_from: usize,
    pub last_checkpoint: Option<PathBuf>,
}

/// A training run over `examples`, writing into `out`.
pub struct Trainer {
    pub decoder: Decoder,
    pub config: TrainConfig,
    examples: Vec<Example>,
    optim: AdamW,
    schedule: Schedule,
    /// Optimizer steps done.
    pub step: usize,
    resumed_from: usize,
    out: PathBuf,
    fingerprint: String,
    last_checkpoint: Option<PathBuf>,
}

/// The output head as the fused loss reads it: the dense tensor, or the stored matrix of a head
/// kept in its storage format (frozen, LoRA on the CPU), which the loss reads a vocabulary chunk
/// of rows at a time and never expands whole. Built once per example and moved: the size
/// difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Head {
    Dense(Tensor<2>),
    Stored(sealong_shaders::frozen::Frozen),
}

fn lm_head(decoder: &Decoder) -> Head {
    match &decoder.lm_head.weight {
        LinearWeight::Dense(w) => Head::Dense(w.clone()),
        LinearWeight::Quant(q) => Head::Stored(sealong_shaders::frozen::Frozen(q.clone())),
    }
}

/// The loss of the response hidden states through the fused vocabulary-chunked kernel and the
/// objective ([`orpo`]), with the statistics the objective returns (what `metrics.jsonl` logs;
/// SFT fills only the loss and NLL, `lp_chosen = −NLL`, the rest 0).
fn loss_from_hidden(config: &TrainConfig, head: Head, id: &str, rh: ResponseHidden) -> Result<(Tensor<1>, OrpoStats)> {
    use sealong_shaders::loss as fused;
    let lossy = |e: fused::LossError| Error::Invalid(format!("example {id:?}: {e}"));
    let objective = |e: Error| match e {
        Error::Invalid(m) => Error::Invalid(format!("example {id:?}: {m}")),
        e => e,
    };
    let mut segments = Vec::new();
    let mut start = 0;
    for &c in &rh.counts {
        segments.push(start..start + c);
        start += c;
    }
    let sums = match head {
        Head::Dense(w) => fused::segment_logprob_sums_chunked(rh.hidden, w, &rh.labels, &segments, config.loss_chunk),
        Head::Stored(w) => {
            fused::segment_logprob_sums_frozen_head(rh.hidden, &w, &rh.labels, &segments, config.loss_chunk)
        }
    }
    .map_err(lossy)?;
    match config.method {
        Method::Orpo => {
            let out = orpo::orpo_loss(sums, &rh.counts, config.beta as f32).map_err(objective)?;
            let s = out.stats();
            Ok((out.loss, s))
        }
        Method::Sft => {
            let loss = orpo::sft_loss(sums, &rh.counts).map_err(objective)?;
            let v = f64::from(
                loss.clone()
                    .detach()
                    .into_data()
                    .iter::<f32>()
                    .next()
                    .unwrap_or(f32::NAN),
            );
            Ok((
                loss,
                OrpoStats {
                    loss: v,
                    nll: v,
                    lp_chosen: -v,
                    lp_rejected: 0.0,
                    chosen_reward: 0.0,
                    rejected_reward: 0.0,
                    reward_accuracy: 0.0,
                    margin: 0.0,
                    log_odds: 0.0,
                },
            ))
        }
    }
}

/// Bytes of one layer's autodiff graph per position, as multiples of the layer's widths: the
/// normed inputs, projections and their LoRA inputs, rotary halves, the attention's saved
/// q/k/v/output, the MLP's gate, up, SiLU and product. Calibrated against the measured peak RSS
/// of `sealong bench train` (BENCHMARKS.md, "Long-context training").
const GRAPH_PER_HIDDEN: f64 = 16.0;
const GRAPH_PER_INTERMEDIATE: f64 = 6.0;
const GRAPH_PER_KV: f64 = 6.0;

/// The predicted memory of a training step over `positions` computed positions (prompt plus
/// response inputs) with `response_tokens` labels, above the loaded model: with activation
/// checkpointing each layer's input (`L · d` floats per position) plus one layer's graph;
/// without, every layer's graph; plus the vocabulary chunk of the loss (its logits and, for a
/// head kept stored, its rows). Returns `(total,
/// per position)` in bytes.
pub fn step_bytes(
    c: &crate::models::decoder::config::DecoderConfig,
    positions: usize,
    response_tokens: usize,
    checkpointing: bool,
    loss_chunk: usize,
) -> (f64, f64) {
    let d = c.hidden_size as f64;
    let layer = 4.0
        * (GRAPH_PER_HIDDEN * d
            + GRAPH_PER_INTERMEDIATE * c.intermediate_size as f64
            + GRAPH_PER_KV * (c.num_key_value_heads * c.head_dim) as f64);
    let layers = c.num_hidden_layers as f64;
    let per_position = if checkpointing {
        4.0 * layers * d + layer
    } else {
        layers * layer
    };
    // The loss: a chunk of logits and its exponentials per response token, and a stored head's
    // chunk of rows dequantized.
    let chunk = loss_chunk.min(c.vocab_size) as f64;
    let loss = 12.0 * response_tokens as f64 * chunk + 4.0 * chunk * d;
    (per_position * positions as f64 + loss, per_position)
}

/// Bytes per position of one decoder layer's whole graph on the current eager path (the
/// frozen product, fused attention and SwiGLU keep their inputs, the adapters' small products,
/// norms and residuals): `4 · (6 d + 3 intermediate + 4 kv)`. Calibrated on SmolLM2-135M at
/// 2 × 640 tokens (peak RSS with and without checkpointing, 1,214 − 441 MiB over 30 layers and
/// 768 positions: 34 KiB; the formula gives 34.5). With LoRA dropout each adapter's input also
/// keeps its mask and the dropped-out copy: `4 · 2 (6 d + intermediate)` more.
pub fn eager_layer_bytes(c: &crate::models::decoder::config::DecoderConfig, lora_dropout: bool) -> f64 {
    let (d, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let base = 4.0 * (6.0 * d + 3.0 * i + 4.0 * (c.num_key_value_heads * c.head_dim) as f64);
    if lora_dropout { base + 8.0 * (6.0 * d + i) } else { base }
}

/// How many of the first layers keep their graph for `positions` positions (see
/// [`TrainConfig::eager_activation_mib`]): all of them when their graphs together fit
/// `budget_mib`, else none. A partial eager prefix (as many layers as fit) would add the whole
/// budget to every long run's peak for little speed there (5 of SmolLM2's 30 layers at 2,048
/// tokens: 1,078 MiB against 637), so the budget only decides whether a step needs
/// checkpointing at all.
pub fn eager_layers(
    c: &crate::models::decoder::config::DecoderConfig,
    positions: usize,
    budget_mib: u64,
    lora_dropout: bool,
) -> usize {
    let all = eager_layer_bytes(c, lora_dropout) * positions.max(1) as f64 * c.num_hidden_layers as f64;
    if all <= budget_mib as f64 * 1024.0 * 1024.0 {
        c.num_hidden_layers
    } else {
        0
    }
}

fn steps_per_epoch(n: usize, batch: usize) -> usize {
    n.div_ceil(batch)
}

impl Trainer {
    /// Sets up training of `decoder` (loaded on an autodiff device) on `examples`. With
    /// `resume`, continues from the newest checkpoint in `out` (an error if there is none, or if
    /// the config or data differ from the checkpoint's); without it, refuses an `out` that
    /// already holds checkpoints, so nothing is overwritten by accident.
    pub fn new(
        mut decoder: Decoder,
        config: TrainConfig,
        examples: Vec<Example>,
        out: &Path,
        resume: bool,
    ) -> Result<Self> {
        config.check()?;
        if examples.is_empty() {
            return Err(Error::Invalid(
                "no training examples (all skipped, or an empty file)".into(),
            ));
        }
        if config.method == Method::Orpo && examples.iter().any(|e| e.rejected.is_none()) {
            return Err(Error::Invalid(
                "ORPO needs a rejected response for every example".into(),
            ));
        }
        let max_positions = decoder.rope.max_positions;
        if let Some(e) = examples
            .iter()
            .find(|e| e.prompt.len() + e.chosen.len().max(e.rejected.as_ref().map_or(0, Vec::len)) > max_positions)
        {
            return Err(Error::Invalid(format!(
                "example {:?} needs {} positions but the model's context is {max_positions} tokens; lower --max-length",
                e.id,
                e.prompt.len() + e.chosen.len().max(e.rejected.as_ref().map_or(0, Vec::len))
            )));
        }
        prepare_training(&mut decoder, &config.mode, config.seed)?;
        decoder.fused_attention = true;
        let per_epoch = steps_per_epoch(examples.len(), config.batch_size);
        let total = config.max_steps.unwrap_or(per_epoch * config.epochs);
        let schedule = Schedule::new(config.lr, config.warmup_ratio, total);
        let fingerprint = fingerprint(&examples);
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        checkpoint::remove_partial(out)?;
        let mut trainer = Trainer {
            decoder,
            optim: AdamW::new(config.adam),
            config,
            examples,
            schedule,
            step: 0,
            resumed_from: 0,
            out: out.to_path_buf(),
            fingerprint,
            last_checkpoint: None,
        };
        let existing = checkpoint::list(out)?;
        match (existing.last(), resume) {
            (Some((_, dir)), true) => trainer.restore(&dir.clone())?,
            (None, true) => {
                return Err(Error::Invalid(format!(
                    "--resume: {} holds no checkpoint to resume from",
                    out.display()
                )));
            }
            (Some((step, dir)), false) => {
                return Err(Error::Invalid(format!(
                    "{} already holds a run (checkpoint at step {step}: {}); pass --resume to continue it or choose another output directory",
                    out.display(),
                    dir.display()
                )));
            }
            (None, false) => {
                // A fresh run: metrics of an earlier run that never checkpointed are stale.
                let metrics = out.join("metrics.jsonl");
                if metrics.exists() {
                    std::fs::remove_file(&metrics).map_err(|e| Error::io(&metrics, e))?;
                }
            }
        }
        Ok(trainer)
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        let (optim, loaded) = checkpoint::load(dir, &mut self.decoder)?;
        let state = &loaded.state;
        let saved_config: Option<TrainConfig> = state
            .get("config")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok());
        match saved_config {
            Some(c) if c.result_shaping() == self.config.result_shaping() => {}
            Some(c) => {
                return Err(Error::Invalid(format!(
                    "cannot resume from {}: it was trained with a different recipe ({}) than this run ({})",
                    dir.display(),
                    serde_json::to_string(&c).unwrap_or_default(),
                    serde_json::to_string(&self.config).unwrap_or_default()
                )));
            }
            None => {
                return Err(Error::Model {
                    path: dir.join("state.json").display().to_string(),
                    message: "no readable \"config\"".into(),
                });
            }
        }
        if state.get("data").and_then(Value::as_str) != Some(self.fingerprint.as_str()) {
            return Err(Error::Invalid(format!(
                "cannot resume from {}: the training data differ from the data it was trained on",
                dir.display()
            )));
        }
        self.optim = optim;
        self.step = loaded.step;
        self.resumed_from = loaded.step;
        self.last_checkpoint = Some(loaded.dir);
        self.truncate_metrics()?;
        Ok(())
    }

    /// Drops metric lines of steps after the checkpoint (they will be redone).
    fn truncate_metrics(&self) -> Result<()> {
        let path = self.out.join("metrics.jsonl");
        if !path.exists() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let keep: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(Value::as_u64))
                    .is_some_and(|s| s as usize <= self.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::files::write_atomic(&path, keep.as_bytes())
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.schedule.total_steps
    }

    /// The step the run started from.
    pub fn resumed_from(&self) -> usize {
        self.resumed_from
    }

    /// Examples in the run.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// Example indices of optimizer step `step` and its epoch.
    fn batch(&self, step: usize) -> (usize, Vec<usize>) {
        use rand::seq::SliceRandom;
        let n = self.examples.len();
        let bs = self.config.batch_size;
        let per_epoch = steps_per_epoch(n, bs);
        let epoch = step / per_epoch;
        let k = step % per_epoch;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut crate::rng::for_item(
            self.config.seed,
            &format!("train-order/{epoch}"),
        ));
        (epoch, order[k * bs..((k + 1) * bs).min(n)].to_vec())
    }

    /// The responses an example trains on (the chosen, and the rejected for ORPO) and the
    /// dropout key of its pass.
    fn example_inputs<'a>(&self, ex: &'a Example, key: u64) -> (Vec<&'a [u32]>, Option<(u64, u64)>) {
        let dropout = match &self.config.mode {
            TrainMode::Lora(l) if l.dropout > 0.0 => Some((self.config.seed, key)),
            _ => None,
        };
        let mut responses: Vec<&[u32]> = vec![&ex.chosen];
        if self.config.method == Method::Orpo
            && let Some(r) = &ex.rejected
        {
            responses.push(r);
        }
        (responses, dropout)
    }

    /// The loss of one example and its logged statistics, with the whole forward's graph kept
    /// (no activation checkpointing).
    fn example_loss(&mut self, ex: &Example, key: u64) -> Result<(Tensor<1>, OrpoStats)> {
        let (responses, dropout) = self.example_inputs(ex, key);
        let rh = shared_prompt_hidden(&mut self.decoder, &ex.prompt, &responses, dropout)?;
        loss_from_hidden(&self.config, lm_head(&self.decoder), &ex.id, rh)
    }

    /// Runs one optimizer step and appends its metrics. A non-finite loss or gradient norm is an
    /// error before any parameter changes.
    pub fn step_once(&mut self) -> Result<StepMetrics> {
        crate::mem::reset_peak_rss();
        let started = Instant::now();
        let (epoch, batch) = self.batch(self.step);
        let n = batch.len();
        let mut acc = GradAccumulator::default();
        let mut logged = Vec::with_capacity(n);
        let mut tokens = 0;
        for (m, micro) in batch.chunks(self.config.micro_batch).enumerate() {
            let mut total: Option<Tensor<1>> = None;
            for (j, &idx) in micro.iter().enumerate() {
                let ex = self.examples[idx].clone();
                tokens += ex.tokens();
                // A pair's place in the run keys its dropout masks.
                let key = (self.step * self.config.batch_size + m * self.config.micro_batch + j) as u64;
                if self.config.activation_checkpointing {
                    let (responses, dropout) = self.example_inputs(&ex, key);
                    let eager = eager_layers(
                        &self.decoder.config,
                        self.positions(&ex),
                        self.config.eager_activation_mib,
                        self.lora_dropout(),
                    );
                    let config = &self.config;
                    let values = recompute::shared_prompt_step(
                        &mut self.decoder,
                        &ex.prompt,
                        &responses,
                        dropout,
                        1.0 / n as f64,
                        eager,
                        &mut |d, rh| loss_from_hidden(config, lm_head(d), &ex.id, rh),
                        &mut acc,
                    )?;
                    if !values.loss.is_finite() {
                        return Err(self.non_finite(&format!("loss {} on example {:?}", values.loss, ex.id)));
                    }
                    logged.push(values);
                    continue;
                }
                let (loss, values) = self.example_loss(&ex, key)?;
                if !values.loss.is_finite() {
                    return Err(self.non_finite(&format!("loss {} on example {:?}", values.loss, ex.id)));
                }
                logged.push(values);
                let loss = loss.div_scalar(n as f64);
                total = Some(match total {
                    Some(t) => t + loss,
                    None => loss,
                });
            }
            if let Some(total) = total {
                let mut grads = total.backward();
                acc.add(&mut self.decoder, &mut grads);
            }
        }
        if acc.is_empty() {
            return Err(Error::Invalid(
                "the loss reached no trainable parameter (nothing to train)".into(),
            ));
        }
        let norm = acc.global_norm()?;
        if !norm.is_finite() {
            return Err(self.non_finite(&format!("gradient norm {norm}")));
        }
        if self.config.max_grad_norm > 0.0 {
            let f = clip_factor(norm, self.config.max_grad_norm);
            if f < 1.0 {
                acc.scale(f);
            }
        }
        let lr = self.schedule.lr(self.step);
        self.optim.step(&mut self.decoder, acc.take(), lr)?;
        self.step += 1;

        // Each pair's statistics are the objective's own (SFT's rewards are 0); a step logs their
        // means over its pairs.
        let mean = |f: fn(&OrpoStats) -> f64| logged.iter().map(f).sum::<f64>() / logged.len() as f64;
        let secs = started.elapsed().as_secs_f64();
        let metrics = StepMetrics {
            step: self.step,
            total_steps: self.total_steps(),
            epoch,
            lr,
            loss: mean(|s| s.loss),
            nll: mean(|s| s.nll),
            chosen_reward: mean(|s| s.chosen_reward),
            rejected_reward: mean(|s| s.rejected_reward),
            reward_accuracy: mean(|s| s.reward_accuracy),
            margin: mean(|s| s.margin),
            log_odds: mean(|s| s.log_odds),
            grad_norm: norm,
            pairs: n,
            tokens,
            step_seconds: secs,
            tokens_per_second: tokens as f64 / secs.max(1e-9),
            peak_rss_mib: crate::mem::peak_rss_mib(),
        };
        Appender::open(&self.out.join("metrics.jsonl"))?.append(&metrics)?;
        let every = self.config.checkpoint_every;
        if (every > 0 && self.step.is_multiple_of(every)) || self.step == self.total_steps() {
            self.save_checkpoint()?;
        }
        Ok(metrics)
    }

    fn non_finite(&self, what: &str) -> Error {
        let last = match &self.last_checkpoint {
            Some(dir) => format!(
                "the last good checkpoint is {} (resume with --resume, e.g. after lowering the learning rate)",
                dir.display()
            ),
            None => "no checkpoint was written yet".into(),
        };
        Error::Invalid(format!(
            "training stopped at step {}: non-finite {what}; nothing of this step was applied; {last}",
            self.step + 1
        ))
    }

    /// Writes a checkpoint of the current step (and prunes old ones).
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let state = json!({
            "config": self.config,
            "data": self.fingerprint,
            "examples": self.examples.len(),
            "total_steps": self.total_steps(),
        });
        let dir = checkpoint::save(&self.out, self.step, &mut self.decoder, &self.optim, state)?;
        checkpoint::prune(&self.out, self.config.keep_checkpoints)?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// Runs the remaining steps, calling `on_step` after each.
    pub fn run(&mut self, on_step: &mut dyn FnMut(&StepMetrics)) -> Result<Outcome> {
        self.check_memory()?;
        while self.step < self.total_steps() {
            let m = self.step_once()?;
            on_step(&m);
        }
        if self.last_checkpoint.is_none() || checkpoint::list(&self.out)?.last().map(|(s, _)| *s) != Some(self.step) {
            self.save_checkpoint()?;
        }
        Ok(Outcome {
            steps_done: self.step,
            total_steps: self.total_steps(),
            resumed_from: self.resumed_from,
            last_checkpoint: self.last_checkpoint.clone(),
        })
    }

    /// The predicted memory of one example's step above the loaded model and optimizer, in
    /// bytes, and the part of it that grows with each position (see [`step_bytes`]).
    pub fn predicted_step_bytes(&self, ex: &Example) -> (f64, f64) {
        let response_tokens = ex.chosen.len() + ex.rejected.as_ref().map_or(0, Vec::len);
        let positions = self.positions(ex);
        let (total, per_position) = step_bytes(
            &self.decoder.config,
            positions,
            response_tokens,
            self.config.activation_checkpointing,
            self.config.loss_chunk,
        );
        if !self.config.activation_checkpointing {
            return (total, per_position);
        }
        let c = &self.decoder.config;
        let dropout = self.lora_dropout();
        let eager = eager_layers(c, positions, self.config.eager_activation_mib, dropout) as f64;
        (
            total + eager * eager_layer_bytes(c, dropout) * positions as f64,
            per_position,
        )
    }

    /// Whether LoRA adapters train with dropout (their masks are part of an eager graph).
    fn lora_dropout(&self) -> bool {
        matches!(&self.config.mode, TrainMode::Lora(l) if l.dropout > 0.0)
    }

    /// The positions one example's step computes (the prompt once, each response's inputs).
    fn positions(&self, ex: &Example) -> usize {
        let responses = 1 + usize::from(self.config.method == Method::Orpo && ex.rejected.is_some());
        let response_tokens = ex.chosen.len() + ex.rejected.as_ref().map_or(0, Vec::len);
        ex.prompt.len() + response_tokens.saturating_sub(responses)
    }

    /// Refuses to start when the longest example's step is predicted not to fit in the memory
    /// available now (Linux's MemAvailable), naming the example, the lengths and a length
    /// that fits. Does nothing where the platform does not tell.
    pub fn check_memory(&self) -> Result<()> {
        match crate::mem::available_mib() {
            Some(avail) => self.check_memory_within(avail * 1024.0 * 1024.0),
            None => Ok(()),
        }
    }

    /// [`Trainer::check_memory`] against `avail` bytes.
    pub fn check_memory_within(&self, avail: f64) -> Result<()> {
        let Some(ex) = self.examples.iter().max_by_key(|e| e.tokens()) else {
            return Ok(());
        };
        let (need, per_position) = self.predicted_step_bytes(ex);
        if need <= avail {
            return Ok(());
        }
        let positions = ex.prompt.len() + ex.chosen.len().max(ex.rejected.as_ref().map_or(0, Vec::len));
        let over = (need - avail) / per_position.max(1.0);
        let fit = (positions as f64 - over * 1.1).max(0.0) as usize;
        let gib = |b: f64| b / (1u64 << 30) as f64;
        Err(Error::Invalid(format!(
            "example {:?} ({} prompt tokens, {positions} per sequence) would need about {:.1} GiB for a step \
             ({:.0} KiB per position{}) but {:.1} GiB is available: lower --max-length to about {fit}{}",
            ex.id,
            ex.prompt.len(),
            gib(need),
            per_position / 1024.0,
            if self.config.activation_checkpointing {
                ""
            } else {
                ", activation checkpointing off"
            },
            gib(avail),
            if self.config.activation_checkpointing {
                ""
            } else {
                " or turn activation checkpointing on"
            },
        )))
    }

    /// The directory the run writes into.
    pub fn out_dir(&self) -> &Path {
        &self.out
    }
}
