//! `sealong bench train`: one LoRA ORPO optimizer step on the CPU, measured as the torch + peft
//! peer (bench/peers/torch_orpo_step.py) measures it: the same GGUF, the same text, a 512-token
//! prompt with two different 128-token responses cut from the corpus tokens, LoRA r = 16,
//! alpha = 32, no dropout, on all seven projections, AdamW (lr 1e-4, weight decay 0.01 as
//! torch's default), no clipping. Tokens/s counts 2 × 640 tokens a step, as the peer runs them;
//! sealong computes the prompt once for both responses (768 positions), which is part of what is
//! measured. Median of `--runs` steps after one warm-up; peak RSS during the steps.

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
use crate::commands::bench::{default_text, figure, load1, peak_rss_mib};

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
}

const PROMPT: usize = 512;
const RESPONSE: usize = 128;

/// Resets the peak-RSS counter (Linux `clear_refs` 5), so the peak covers only what follows.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn train(a: BenchTrainArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let path = crate::provision::resolve_model(&a.model.model)?;
    let model = ModelPath::detect(&path)?;
    let assets = TextAssets::load(&model)?;
    let text = match &a.text {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => default_text()?,
    };
    let ids = assets.tokenizer.encode(&text, false)?;
    if ids.len() < 4 * PROMPT + RESPONSE {
        bail!(
            "the text has {} tokens; the benchmark needs {}",
            ids.len(),
            4 * PROMPT + RESPONSE
        );
    }
    let example = Example {
        id: "bench".into(),
        prompt: ids[..PROMPT].to_vec(),
        chosen: ids[PROMPT..PROMPT + RESPONSE].to_vec(),
        rejected: Some(ids[4 * PROMPT..4 * PROMPT + RESPONSE].to_vec()),
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
        ..TrainConfig::default()
    };
    config.adam.weight_decay = 0.01;
    let out = tempfile::tempdir()?;
    let mut trainer = Trainer::new(decoder, config, vec![example], out.path(), false)?;
    reset_peak_rss();
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
        "threads": crate::commands::bench::rayon_threads(),
        "tokens_per_step": tokens,
        "positions_computed": PROMPT + 2 * RESPONSE,
        "lora_r": a.lora_r,
        "load_s": (load_s * 100.0).round() / 100.0,
        "losses": losses,
        "figures": {
            "orpo_lora_step_tok_s": figure(tokens as f64 / median, "tok/s", runs),
            "orpo_peak_rss_steps_mib": {"value": peak_rss_mib(), "unit": "MiB", "note": "peak RSS during the steps"},
        },
    });
    println!("{ours}");
    if let Some(p) = &a.peer {
        crate::commands::bench::print_ratios(&ours, p)?;
    }
    Ok(())
}
