//! `sealong run --config FILE.toml`: one SEALONG round in one output directory:
//! synth -> sample -> score -> eval (before) -> train -> eval (after) -> report.
//!
//! Every stage is the same command a user would run by hand (built as a command line and parsed
//! by clap, so defaults and checks are the commands' own), and every stage resumes: a killed run
//! rerun with the same config continues where it stopped. The config is copied into the output
//! directory; a different config for an existing directory is refused, so two recipes never mix
//! in one set of files.
//!
//! Layout of DIR: config.toml, questions.jsonl, samples.jsonl, scored.jsonl (+ .summary.json),
//! pairs.jsonl, train/ (metrics.jsonl, checkpoints/, adapter/, merged/), eval_data/ (the
//! LongBench-style files built from the dev sets), eval/before/ and eval/after/
//! (predictions.jsonl, metrics.json), report.html, summary.json.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The round's config (see examples/quickstart.toml).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Output directory (overrides the config's `out`).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// A run config (`sealong run --config`), as parsed; read with [`parse_config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    out: Option<PathBuf>,
    #[serde(default = "default_model")]
    model: String,
    #[serde(default = "default_embedder")]
    embedder: String,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_seed")]
    seed: u64,
    synth: SynthStage,
    #[serde(default)]
    sample: SampleStage,
    #[serde(default)]
    score: ScoreStage,
    /// `sealong train` recipe keys (as in its `--config`).
    #[serde(default)]
    train: toml::Table,
    eval: EvalStage,
}

/// Parses a run config's text (unknown keys are errors naming them); `path` labels errors.
pub fn parse_config(text: &str, path: &Path) -> Result<RunConfig> {
    toml::from_str(text).with_context(|| format!("{}: not a valid run config", path.display()))
}

fn default_model() -> String {
    crate::provision::DEFAULT_DECODER.into()
}
fn default_embedder() -> String {
    crate::provision::DEFAULT_EMBEDDER.into()
}
fn default_device() -> String {
    "auto".into()
}
fn default_seed() -> u64 {
    42
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SynthStage {
    /// Training questions' source records (e.g. data/musique/train.jsonl).
    input: PathBuf,
    #[serde(default)]
    pool: Vec<PathBuf>,
    n: usize,
    min_k: u32,
    max_k: u32,
    #[serde(default)]
    allow_short: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SampleStage {
    n: usize,
    temperature: f64,
    top_p: f64,
    max_new_tokens: usize,
    strategy: String,
    /// `[sample.remote]`: sample from an OpenAI-compatible server (`sealong sample --backend
    /// openai`) instead of the local engine. Only sampling goes remote: it is the round's cost,
    /// and the "after" evaluation needs the adapter this run trains, which a server lacks.
    remote: Option<RemoteSampling>,
}

impl Default for SampleStage {
    fn default() -> Self {
        SampleStage {
            n: 32,
            temperature: 0.7,
            top_p: 1.0,
            max_new_tokens: 1024,
            strategy: "plan_and_solve".into(),
            remote: None,
        }
    }
}

/// The server `[sample.remote]` names; unset keys take `sealong sample`'s defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSampling {
    base_url: String,
    api_model: String,
    api_key_env: Option<String>,
    concurrency: Option<usize>,
    request_timeout: Option<u64>,
    max_retries: Option<u32>,
}

impl RemoteSampling {
    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--backend".into(),
            "openai".into(),
            "--base-url".into(),
            self.base_url.clone(),
            "--api-model".into(),
            self.api_model.clone(),
        ];
        let opt = [
            ("--api-key-env", self.api_key_env.clone()),
            ("--concurrency", self.concurrency.map(|v| v.to_string())),
            ("--request-timeout", self.request_timeout.map(|v| v.to_string())),
            ("--max-retries", self.max_retries.map(|v| v.to_string())),
        ];
        for (flag, v) in opt {
            if let Some(v) = v {
                a.extend([flag.to_string(), v]);
            }
        }
        a
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScoreStage {
    method: String,
}

impl Default for ScoreStage {
    fn default() -> Self {
        ScoreStage {
            method: "embedding".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalStage {
    /// Dev-set records (MuSiQue / HotpotQA / 2Wiki) turned into LongBench-style files, or
    /// LongBench files used as they are (`longbench = true`).
    inputs: Vec<PathBuf>,
    #[serde(default)]
    longbench: bool,
    /// Questions per file.
    limit: Option<usize>,
    #[serde(default)]
    n: usize,
    #[serde(default = "default_eval_tokens")]
    max_new_tokens: usize,
    #[serde(default = "default_strategy")]
    strategy: String,
    #[serde(default)]
    truncate_middle: bool,
}

fn default_eval_tokens() -> usize {
    1024
}
fn default_strategy() -> String {
    "plan_and_solve".into()
}

/// Runs one `sealong` command line in this process.
fn sealong(argv: Vec<String>) -> Result<()> {
    use clap::Parser;
    let mut full = vec!["sealong".to_string()];
    full.extend(argv);
    let cli = crate::args::Cli::try_parse_from(&full).with_context(|| format!("internal command line {full:?}"))?;
    crate::run(cli)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Times a stage and records it in the summary.
struct Stages {
    log: Vec<Value>,
    path: PathBuf,
}

impl Stages {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        errln!("== {name}");
        let t = Instant::now();
        f().with_context(|| format!("stage {name}"))?;
        self.log
            .push(json!({"stage": name, "seconds": (t.elapsed().as_secs_f64() * 10.0).round() / 10.0}));
        let text = serde_json::to_string_pretty(&json!({"stages": self.log}))?;
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = parse_config(&text, &args.config)?;
    let Some(out) = args.out.clone().or(cfg.out.clone()) else {
        bail!(
            "no output directory: set `out` in {} or pass --out",
            args.config.display()
        );
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let copy = out.join("config.toml");
    match std::fs::read_to_string(&copy) {
        Ok(prev) if prev != text => bail!(
            "{} holds a run with a different config ({}); use another output directory",
            out.display(),
            copy.display()
        ),
        Ok(_) => errln!("continuing the run in {}", out.display()),
        Err(_) => std::fs::write(&copy, &text).with_context(|| format!("writing {}", copy.display()))?,
    }
    let seed = cfg.seed.to_string();
    let device = ["--device".to_string(), cfg.device.clone()];
    let mut stages = Stages {
        log: Vec::new(),
        path: out.join("summary.json"),
    };
    let (questions, samples, scored, pairs) = (
        out.join("questions.jsonl"),
        out.join("samples.jsonl"),
        out.join("scored.jsonl"),
        out.join("pairs.jsonl"),
    );

    stages.run("synth", || {
        let mut a = vec![
            "synth".into(),
            "--input".into(),
            s(&cfg.synth.input),
            "--out".into(),
            s(&questions),
            "--model".into(),
            cfg.model.clone(),
            "-n".into(),
            cfg.synth.n.to_string(),
            "--min-k".into(),
            cfg.synth.min_k.to_string(),
            "--max-k".into(),
            cfg.synth.max_k.to_string(),
            "--seed".into(),
            seed.clone(),
        ];
        for p in &cfg.synth.pool {
            a.extend(["--pool".into(), s(p)]);
        }
        if cfg.synth.allow_short {
            a.push("--allow-short".into());
        }
        sealong(a)
    })?;

    let sp = &cfg.sample;
    stages.run("sample", || {
        let mut a = vec![
            "sample".into(),
            "--model".into(),
            cfg.model.clone(),
            "--input".into(),
            s(&questions),
            "--out".into(),
            s(&samples),
            "-n".into(),
            sp.n.to_string(),
            "--temperature".into(),
            sp.temperature.to_string(),
            "--top-p".into(),
            sp.top_p.to_string(),
            "--max-new-tokens".into(),
            sp.max_new_tokens.to_string(),
            "--strategy".into(),
            sp.strategy.clone(),
            "--seed".into(),
            seed.clone(),
        ];
        match &sp.remote {
            // The server applies its own template and context limit; no local truncation.
            Some(r) => a.extend(r.args()),
            None => {
                a.push("--truncate-middle".into());
                a.extend(device.clone());
            }
        }
        sealong(a)
    })?;

    stages.run("score", || {
        let mut a = vec![
            "score".into(),
            "--input".into(),
            s(&samples),
            "--method".into(),
            cfg.score.method.clone(),
            "--embedder".into(),
            cfg.embedder.clone(),
            "--out".into(),
            s(&scored),
            "--pairs".into(),
            s(&pairs),
            "--seed".into(),
            seed.clone(),
        ];
        a.extend(device.clone());
        sealong(a)
    })?;

    // The evaluation files, built once from the dev sets (or LongBench files as they are).
    let eval_dir = out.join("eval_data");
    let mut eval_files = Vec::new();
    stages.run("eval data", || {
        std::fs::create_dir_all(&eval_dir)?;
        for input in &cfg.eval.inputs {
            if cfg.eval.longbench {
                eval_files.push(input.clone());
                continue;
            }
            let stem = input
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "eval".into());
            let file = eval_dir.join(format!("{stem}.jsonl"));
            sealong(vec![
                "synth".into(),
                "--eval".into(),
                "--input".into(),
                s(input),
                "--out".into(),
                s(&file),
                "--model".into(),
                cfg.model.clone(),
                "--seed".into(),
                seed.clone(),
            ])?;
            eval_files.push(file);
        }
        Ok(())
    })?;

    let ev = &cfg.eval;
    let eval = |dir: &Path, adapter: Option<&Path>, model: &str| -> Result<()> {
        let mut a = vec![
            "eval".into(),
            "--model".into(),
            model.to_string(),
            "--out".into(),
            s(dir),
            "--strategy".into(),
            ev.strategy.clone(),
            "--max-new-tokens".into(),
            ev.max_new_tokens.to_string(),
            "-n".into(),
            ev.n.to_string(),
            "--temperature".into(),
            sp.temperature.to_string(),
            "--embedder".into(),
            cfg.embedder.clone(),
            "--seed".into(),
            seed.clone(),
            "--input".into(),
        ];
        a.extend(eval_files.iter().map(|p| s(p)));
        if let Some(l) = ev.limit {
            a.extend(["--limit".into(), l.to_string()]);
        }
        if ev.truncate_middle {
            a.push("--truncate-middle".into());
        }
        if let Some(ad) = adapter {
            a.extend(["--adapter".into(), s(ad)]);
        }
        a.extend(device.clone());
        sealong(a)
    };
    stages.run("eval before", || eval(&out.join("eval/before"), None, &cfg.model))?;

    let train_dir = out.join("train");
    let done_mark = train_dir.join("done.json");
    stages.run("train", || {
        if done_mark.exists() {
            errln!("training already finished ({})", done_mark.display());
            return Ok(());
        }
        let (recipe_table, export) = split_export_keys(&cfg.train)?;
        let recipe = out.join("train_recipe.toml");
        std::fs::write(&recipe, toml::to_string(&recipe_table)?)?;
        let mut a = vec![
            "train".into(),
            "--model".into(),
            cfg.model.clone(),
            "--pairs".into(),
            s(&pairs),
            "--out".into(),
            s(&train_dir),
            "--config".into(),
            s(&recipe),
        ];
        a.extend(export);
        if !cfg.train.contains_key("seed") {
            a.extend(["--seed".into(), seed.clone()]);
        }
        if train_dir.join("checkpoints").is_dir() && crate::commands::train::has_checkpoint(&train_dir) {
            a.push("--resume".into());
        }
        a.extend(device.clone());
        sealong(a)?;
        std::fs::write(&done_mark, "{\"done\": true}\n")?;
        Ok(())
    })?;

    stages.run("eval after", || {
        let adapter = train_dir.join("adapter");
        if adapter.join("adapter_config.json").is_file() {
            eval(&out.join("eval/after"), Some(&adapter), &cfg.model)
        } else {
            eval(&out.join("eval/after"), None, &s(&train_dir.join("merged")))
        }
    })?;

    stages.run("report", || {
        let path = crate::commands::report::write_report(&out)?;
        errln!("report: {}", path.display());
        Ok(())
    })?;
    print_summary(&out)
}

/// Splits `[train]` into the recipe `sealong train --config` reads and the flags of the merged
/// export, which are `train`'s flags, not recipe keys: `merge` (default true) and `merged_dtype`.
/// The round evaluates a LoRA run through its adapter, so the merged copy is for deployment and
/// defaults to bf16 there (half of f32: 16 GB instead of 32 GB for an 8B model); a full
/// fine-tune is evaluated from the merged weights, and bf16 would round away updates of lr 5e-6
/// size, so it stays f32.
fn split_export_keys(train: &toml::Table) -> Result<(toml::Table, Vec<String>)> {
    let mut recipe = train.clone();
    let merge = match recipe.remove("merge") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(v) => bail!("[train] merge must be true or false, not {v}"),
    };
    let full = matches!(recipe.get("full"), Some(toml::Value::Boolean(true)));
    if full && !merge {
        bail!("[train] merge = false with full = true: a full fine-tune is evaluated from the merged model");
    }
    let dtype = match recipe.remove("merged_dtype") {
        None if full => "f32".to_string(),
        None => "bf16".to_string(),
        Some(toml::Value::String(d)) => d,
        Some(v) => bail!("[train] merged_dtype must be a string (f32, bf16 or f16), not {v}"),
    };
    let flags = if merge {
        vec!["--merged-dtype".into(), dtype]
    } else {
        vec!["--no-merge".into()]
    };
    Ok((recipe, flags))
}

/// Before/after averages from the two metrics files.
fn print_summary(out: &Path) -> Result<()> {
    let read = |p: PathBuf| -> Option<Value> { serde_json::from_slice(&std::fs::read(p).ok()?).ok() };
    let (Some(b), Some(a)) = (
        read(out.join("eval/before/metrics.json")),
        read(out.join("eval/after/metrics.json")),
    ) else {
        return Ok(());
    };
    errln!("\nSubEM x 100 (average over tasks)   before -> after");
    for k in ["greedy", "mbr", "random", "oracle"] {
        if let (Some(x), Some(y)) = (b["average"][k].as_f64(), a["average"][k].as_f64()) {
            errln!("  {k:<32} {x:>6.1} -> {y:>6.1}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_export_keys;

    fn split(t: &str) -> anyhow::Result<(toml::Table, Vec<String>)> {
        split_export_keys(&t.parse::<toml::Table>().expect("toml"))
    }

    #[test]
    fn export_keys_leave_the_recipe_and_default_by_mode() {
        let (recipe, flags) = split("lr = 1e-3\nmerge = true").expect("ok");
        assert_eq!(
            flags,
            ["--merged-dtype", "bf16"],
            "LoRA: the adapter is evaluated, merged is bf16"
        );
        assert!(!recipe.contains_key("merge") && recipe.contains_key("lr"));
        let (_, flags) = split("full = true").expect("ok");
        assert_eq!(
            flags,
            ["--merged-dtype", "f32"],
            "full fine-tune: evaluated from merged, f32"
        );
        let (recipe, flags) = split("merged_dtype = \"f16\"").expect("ok");
        assert_eq!(flags, ["--merged-dtype", "f16"]);
        assert!(recipe.is_empty());
        assert_eq!(split("merge = false").expect("ok").1, ["--no-merge"]);
        assert!(split("merge = false\nfull = true").is_err());
        assert!(split("merge = \"no\"").is_err());
        assert!(split("merged_dtype = 16").is_err());
    }
}
