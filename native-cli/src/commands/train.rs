//! `sealong train`: LoRA (or full) ORPO / SFT on a pairs file with SEALONG's recipe; metrics to
//! DIR/metrics.jsonl, checkpoints under DIR/checkpoints (resumable with `--resume`), and at the
//! end a PEFT adapter (DIR/adapter) and, unless `--no-merge`, a merged HF model (DIR/merged).
//!
//! The recipe comes from, in increasing priority: SEALONG's defaults, `--config recipe.toml`
//! (keys named as the long flags with `_`, e.g. `lr = 5e-5`, `lora_r = 128`), the flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use sealong::data::pairs::read_pairs;
use sealong::loading::{ModelPath, TextAssets};
use sealong::models::decoder::Decoder;
use sealong::train::{
    ExportDtype, LoraConfig, LoraTarget, Method, StepMetrics, TrainConfig, TrainMode, Trainer, prepare_examples,
    save_merged, save_peft_adapter,
};
use serde::Deserialize;
use serde_json::json;

use crate::args::{DeviceArgs, ModelArgs};
use crate::progress;

/// The recipe's settable values; each is a flag and a TOML key.
#[derive(Debug, Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// orpo (default) or sft.
    #[arg(long)]
    pub method: Option<String>,
    /// Peak learning rate (default 5e-5; the paper uses 5e-6 for full fine-tuning).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Epochs over the pairs (default 1).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Pairs per optimizer step (default 8).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Pairs per forward/backward; changes memory, not the update (default 1).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Tokens per sequence, prompt included (default 32768, capped by the model's context).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// ORPO's beta (the help names core's one default, `sealong::train::DEFAULT_BETA`; the flag
    /// stays an `Option` so a config file's value is not overridden by a clap default).
    #[arg(long, help = format!("ORPO's beta (default {})", sealong::train::DEFAULT_BETA))]
    pub beta: Option<f64>,
    /// Warm-up fraction of the steps (default 0.05).
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// AdamW weight decay (default 0.1).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// AdamW beta1 (default 0.9).
    #[arg(long)]
    pub adam_beta1: Option<f64>,
    /// AdamW beta2 (default 0.999).
    #[arg(long)]
    pub adam_beta2: Option<f64>,
    /// AdamW epsilon (default 1e-8).
    #[arg(long)]
    pub adam_eps: Option<f64>,
    /// Global gradient-norm clip; 0 turns it off (default 1.0).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// LoRA rank (default 128).
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA alpha (default 128).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA dropout (default 0.05).
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// LoRA target modules, comma-separated (default all seven projections).
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Option<Vec<String>>,
    /// Train every weight instead of LoRA adapters.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub full: Option<bool>,
    /// Seed of the data order, LoRA init and dropout (default 42).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint every K optimizer steps; 0 only at the end (default 50).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints to keep; 0 keeps all (default 2).
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Stop after this many optimizer steps in total.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Vocabulary columns per chunk of the fused loss (default 8192).
    #[arg(long)]
    pub loss_chunk: Option<usize>,
    /// Keep only each layer's input and recompute the layer in the backward (default true;
    /// `false` keeps every activation: faster, memory grows several times faster with length).
    #[arg(long)]
    pub activation_checkpointing: Option<bool>,
    /// With checkpointing: a pair whose layers' activations fit in this many MiB keeps them
    /// instead of recomputing (default 1024; 0 always recomputes).
    #[arg(long)]
    pub eager_activation_mib: Option<u64>,
    /// Cut the middle of a prompt too long for --max-length instead of skipping its pair.
    #[arg(long)]
    pub truncate_prompt_middle: Option<bool>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Pairs JSONL (`sealong score --pairs`, or SEALONG / TRL preference records).
    #[arg(long, short = 'p')]
    pub pairs: PathBuf,
    /// Output directory (metrics, checkpoints, adapter, merged model).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// A TOML recipe; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: Recipe,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Do not write the merged model (the adapter is always written for LoRA).
    #[arg(long)]
    pub no_merge: bool,
    /// Weights dtype of the merged model: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub merged_dtype: String,
}

/// `b`'s values where set, else `a`'s.
fn overlay(a: Recipe, b: Recipe) -> Recipe {
    macro_rules! pick {
        ($($f:ident),*) => { Recipe { $($f: b.$f.or(a.$f)),* } };
    }
    pick!(
        method,
        lr,
        epochs,
        batch_size,
        micro_batch,
        max_length,
        beta,
        warmup_ratio,
        weight_decay,
        adam_beta1,
        adam_beta2,
        adam_eps,
        max_grad_norm,
        lora_r,
        lora_alpha,
        lora_dropout,
        lora_targets,
        full,
        seed,
        checkpoint_every,
        keep_checkpoints,
        max_steps,
        loss_chunk,
        activation_checkpointing,
        eager_activation_mib,
        truncate_prompt_middle
    )
}

/// Reads a TOML recipe (unknown keys are errors naming them).
pub fn read_recipe(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: not a valid recipe", path.display()))
}

/// The recipe applied to SEALONG's defaults.
pub fn resolve(r: Recipe) -> Result<TrainConfig> {
    let mut c = TrainConfig::default();
    if let Some(m) = &r.method {
        c.method = m.parse()?;
    }
    macro_rules! set {
        ($($src:ident => $($dst:ident).+),*) => { $(if let Some(v) = r.$src { c.$($dst).+ = v; })* };
    }
    set!(lr => lr, epochs => epochs, batch_size => batch_size, micro_batch => micro_batch,
         max_length => max_length, beta => beta, warmup_ratio => warmup_ratio,
         weight_decay => adam.weight_decay, adam_beta1 => adam.beta1, adam_beta2 => adam.beta2,
         adam_eps => adam.eps, max_grad_norm => max_grad_norm, seed => seed,
         checkpoint_every => checkpoint_every, keep_checkpoints => keep_checkpoints, loss_chunk => loss_chunk,
         activation_checkpointing => activation_checkpointing,
         eager_activation_mib => eager_activation_mib,
         truncate_prompt_middle => truncate_prompt_middle);
    c.max_steps = r.max_steps.or(c.max_steps);
    if r.full == Some(true) {
        if r.lora_r.is_some() || r.lora_alpha.is_some() || r.lora_dropout.is_some() || r.lora_targets.is_some() {
            bail!("--full trains every weight; LoRA settings do not apply");
        }
        c.mode = TrainMode::Full;
    } else {
        let mut l = LoraConfig::default();
        if let Some(v) = r.lora_r {
            l.r = v;
        }
        if let Some(v) = r.lora_alpha {
            l.alpha = v;
        }
        if let Some(v) = r.lora_dropout {
            l.dropout = v;
        }
        if let Some(t) = &r.lora_targets {
            l.targets = t
                .iter()
                .map(|s| s.trim().parse::<LoraTarget>())
                .collect::<sealong::Result<_>>()?;
        }
        c.mode = TrainMode::Lora(l);
    }
    c.check()?;
    Ok(c)
}

fn print_metrics(m: &StepMetrics, method: Method) -> String {
    let mem = m
        .peak_rss_mib
        .map(|p| format!(" peak {:.2} GiB", p / 1024.0))
        .unwrap_or_default();
    match method {
        Method::Orpo => format!(
            "loss {:.4} nll {:.4} acc {:.2} margin {:+.4} lr {:.2e} {:.0} tok/s{mem}",
            m.loss, m.nll, m.reward_accuracy, m.margin, m.lr, m.tokens_per_second
        ),
        Method::Sft => format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s{mem}",
            m.loss, m.lr, m.tokens_per_second
        ),
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let file_recipe = match &args.config {
        Some(p) => read_recipe(p)?,
        None => Recipe::default(),
    };
    let mut config = resolve(overlay(file_recipe, args.recipe))?;
    let dtype: ExportDtype = args.merged_dtype.parse()?;

    let model_path = crate::provision::resolve_model(&args.model.model)?;
    let model = ModelPath::detect(&model_path)?;
    let assets = TextAssets::load(&model)?;
    let device: Device = crate::device::select(args.device.device)?.autodiff();
    let decoder = Decoder::load(&model, &device).with_context(|| format!("loading {}", model_path.display()))?;
    let context = decoder.rope.max_positions;
    if config.max_length > context {
        errln!(
            "max length {} exceeds the model's context; using {context}",
            config.max_length
        );
        config.max_length = context;
    }

    let pairs = read_pairs(&args.pairs, config.method == Method::Orpo)?;
    let (examples, skipped) = prepare_examples(
        &assets,
        &pairs,
        config.method,
        config.max_length,
        config.truncate_prompt_middle,
    )?;
    for s in &skipped {
        errln!(
            "skipping {}:{} (id {:?}): {}",
            args.pairs.display(),
            s.line,
            s.id,
            s.reason
        );
    }
    let truncated = examples.iter().filter(|e| e.truncated).count();
    if truncated > 0 {
        errln!("{truncated} responses cut to fit --max-length {}", config.max_length);
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    // The checkpoints are what a resume continues: their sidecar records the model's files and
    // the recipe (the trainer compares recipe and data with the checkpoint as well, but names no
    // field and cannot see the model). Without --resume an existing checkpoint is refused by
    // the trainer, so the record is left as it is.
    let has = has_checkpoint(&args.out);
    if args.resume || !has {
        let mut settings = match serde_json::to_value(config.result_shaping())? {
            serde_json::Value::Object(m) => m,
            _ => bail!("the recipe does not serialize to a table"),
        };
        settings.insert(
            "model_sha256".into(),
            json!(sealong::loading::model_files::sha256_of(&model_path)?),
        );
        crate::resume::check(&args.out.join("checkpoints"), "train", &settings, has && args.resume)?;
    }
    let mut trainer = Trainer::new(decoder, config.clone(), examples, &args.out, args.resume)?;
    let train_config = serde_json::to_string_pretty(&json!({
        "model": args.model.model, "pairs": args.pairs, "config": config,
        "examples": trainer.examples().len(), "skipped": skipped,
    }))?;
    sealong::files::write_atomic(&args.out.join("train_config.json"), train_config.as_bytes())?;
    if trainer.resumed_from() > 0 {
        errln!(
            "resuming {} at step {} of {}",
            args.out.display(),
            trainer.resumed_from(),
            trainer.total_steps()
        );
    }
    let bar = progress::bar(trainer.total_steps() as u64, "steps");
    bar.set_position(trainer.step as u64);
    let method = config.method;
    let outcome = trainer.run(&mut |m| {
        bar.set_position(m.step as u64);
        bar.set_message(print_metrics(m, method));
        if !console_is_tty() {
            errln!("step {}/{}: {}", m.step, m.total_steps, print_metrics(m, method));
        }
    });
    bar.finish();
    let outcome = outcome?;

    let base_name = args.model.model.clone();
    if let TrainMode::Lora(l) = &config.mode {
        let dir = args.out.join("adapter");
        save_peft_adapter(&trainer.decoder, l, &base_name, &dir)?;
        errln!("adapter: {}", dir.display());
    }
    if !args.no_merge {
        let dir = args.out.join("merged");
        save_merged(&trainer.decoder, &assets, &dir, dtype)?;
        errln!("merged model: {}", dir.display());
    }
    errln!(
        "trained {} steps ({} this run); metrics: {}",
        outcome.steps_done,
        outcome.steps_done - outcome.resumed_from,
        args.out.join("metrics.jsonl").display()
    );
    Ok(())
}

/// Whether `out` holds a checkpoint a `--resume` can continue from.
pub fn has_checkpoint(out: &Path) -> bool {
    sealong::train::checkpoint::list(out).is_ok_and(|l| !l.is_empty())
}

fn console_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
