//! `sealong bench train`: one LoRA ORPO optimizer step on the CPU, measured as the torch + peft
//! peer (bench/peers/torch_orpo_step.py) measures it: the same GGUF, the same text, a prompt of
//! `--prompt-tokens` (default 512) with two different `--response-tokens` (default 128)
//! responses cut from the corpus tokens (repeated when the text is too short), LoRA r = 16,
//! alpha = 32, no dropout, on all seven projections, AdamW (lr 1e-4, weight decay 0.01 as
//! torch's default), no clipping. Tokens/s counts 2 × (P + R) tokens a step, as the peer runs
//! them; sealong computes the prompt once for both responses (P + 2R positions), which is part of
//! what is measured. Median of `--runs` steps after one warm-up; peak RSS during the steps.
//!
//! Several prompt lengths (`--prompt-tokens 1024,2048,4096`) run one process each (this binary
//! again), so that each length's peak RSS is its own: the allocator keeps freed memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use sealong::loading::{ModelPath, TextAssets};
use sealong::models::decoder::Decoder;
use sealong::train::{Example, LoraConfig, LoraTarget, TrainConfig, TrainMode, Trainer};
use serde_json::json;

use crate::args::ModelArgs;
use crate::commands::bench_common::{default_text, figure, load1, peak_rss_mib};

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to cut the prompt and responses from (the peer's corpus:
    /// `python3 bench/peers/_peers.py > corpus.txt`).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Timed steps (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// LoRA rank (the peer uses 16).
    #[arg(long, default_value_t = 16)]
    pub lora_r: usize,
    /// The peer's JSON line (torch_orpo_step.py output): print the ratio.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Prompt tokens, or a comma-separated list (one child process per length).
    #[arg(long, default_value = "512", value_delimiter = ',')]
    pub prompt_tokens: Vec<usize>,
    /// Tokens of each of the two responses.
    #[arg(long, default_value_t = 128)]
    pub response_tokens: usize,
    /// Keep every activation instead of recomputing each layer in the backward.
    #[arg(long)]
    pub no_checkpointing: bool,
    /// With checkpointing: a pair whose activations fit in this many MiB is not recomputed (the
    /// recipe's `eager_activation_mib`; 0 always recomputes).
    #[arg(long, default_value_t = sealong::train::trainer::DEFAULT_EAGER_ACTIVATION_MIB)]
    pub eager_activation_mib: u64,
}

/// Runs this binary once per prompt length and prints each child's JSON line.
fn train_lengths(a: &BenchTrainArgs) -> Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    for &p in &a.prompt_tokens {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "train", "--model"])
            .arg(&a.model.model)
            .args(["--runs", &a.runs.to_string(), "--lora-r", &a.lora_r.to_string()])
            .args(["--prompt-tokens", &p.to_string()])
            .args(["--response-tokens", &a.response_tokens.to_string()]);
        if let Some(t) = &a.text {
            cmd.arg("--text").arg(t);
        }
        cmd.arg("--eager-activation-mib")
            .arg(a.eager_activation_mib.to_string());
        if a.no_checkpointing {
            cmd.arg("--no-checkpointing");
        }
        let out = cmd.output().with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "bench train at {p} prompt tokens failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        outln!("{}", text.lines().last().unwrap_or_default())?;
    }
    Ok(())
}

pub fn train(a: BenchTrainArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.prompt_tokens.len() > 1 {
        return train_lengths(&a);
    }
    let prompt_len = *a.prompt_tokens.first().context("--prompt-tokens is empty")?;
    let response_len = a.response_tokens;
    if prompt_len == 0 || response_len == 0 {
        bail!("--prompt-tokens and --response-tokens must be at least 1");
    }
    let path = crate::provision::resolve_model(&a.model.model)?;
    let model = ModelPath::detect(&path)?;
    let assets = TextAssets::load(&model)?;
    let text = match &a.text {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => default_text()?,
    };
    let mut ids = assets.tokenizer.encode(&text, false)?;
    if ids.is_empty() {
        bail!("the text has no tokens");
    }
    // The peer's layout: prompt, then the chosen response; the rejected one from 4 × P on. A
    // text too short for that is repeated (the peer's 512-token case never needs it).
    let need = 4 * prompt_len + response_len;
    while ids.len() < need {
        ids.extend_from_within(..ids.len().min(need - ids.len()));
    }
    let example = Example {
        id: "bench".into(),
        prompt: ids[..prompt_len].to_vec(),
        chosen: ids[prompt_len..prompt_len + response_len].to_vec(),
        rejected: Some(ids[4 * prompt_len..4 * prompt_len + response_len].to_vec()),
        truncated: false,
    };
    let tokens = example.tokens();
    let load_start = Instant::now();
    let decoder = Decoder::load(&model, &Device::flex().autodiff())?;
    let load_s = load_start.elapsed().as_secs_f64();
    let mut config = TrainConfig {
        mode: TrainMode::Lora(LoraConfig {
            r: a.lora_r,
            alpha: 2.0 * a.lora_r as f64,
            dropout: 0.0,
            targets: LoraTarget::ALL.to_vec(),
        }),
        lr: 1e-4,
        warmup_ratio: 0.0,
        max_grad_norm: 0.0,
        batch_size: 1,
        checkpoint_every: 0,
        max_steps: Some(a.runs + 100),
        max_length: prompt_len + response_len,
        activation_checkpointing: !a.no_checkpointing,
        eager_activation_mib: a.eager_activation_mib,
        ..TrainConfig::default()
    };
    config.adam.weight_decay = 0.01;
    let out = tempfile::tempdir()?;
    let mut trainer = Trainer::new(decoder, config, vec![example], out.path(), false)?;
    sealong::mem::reset_peak_rss();
    let mut times = Vec::with_capacity(a.runs + 1);
    let mut losses = Vec::with_capacity(a.runs + 1);
    for _ in 0..=a.runs {
        let t = Instant::now();
        let m = trainer.step_once()?;
        times.push(t.elapsed().as_secs_f64());
        losses.push((m.loss * 1e4).round() / 1e4);
    }
    let mut timed = times[1..].to_vec();
    timed.sort_by(f64::total_cmp);
    let median = timed[timed.len() / 2];
    let runs: Vec<f64> = times.iter().map(|t| (t * 1000.0).round() / 1000.0).collect();
    let ours = json!({
        "bench": "sealong_train_step",
        "load1_start": load1(),
        "model": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "threads": crate::commands::bench_common::rayon_threads(),
        "tokens_per_step": tokens,
        "prompt_tokens": prompt_len,
        "response_tokens": response_len,
        "activation_checkpointing": !a.no_checkpointing,
        "eager_activation_mib": a.eager_activation_mib,
        "positions_computed": prompt_len + 2 * response_len,
        "lora_r": a.lora_r,
        "load_s": (load_s * 100.0).round() / 100.0,
        "losses": losses,
        "figures": {
            "orpo_lora_step_tok_s": figure(tokens as f64 / median, "tok/s", runs),
            "orpo_peak_rss_steps_mib": {"value": peak_rss_mib(), "unit": "MiB", "note": "peak RSS during the steps"},
        },
    });
    outln!("{ours}")?;
    if let Some(p) = &a.peer {
        crate::commands::bench_common::print_ratios(&ours, p)?;
    }
    Ok(())
}
