//! `sealong run --config FILE.toml`: SEALONG rounds in one output directory:
//! synth -> sample -> score -> eval (before) -> train -> eval (after) -> report; with
//! `rounds = K`, rounds 2..K follow before the report (synth -> sample -> score -> train ->
//! eval (after)), each with the previous round's merged model.
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
//! (predictions.jsonl, metrics.json), report.html, summary.json. Round k >= 2 writes its own
//! questions.jsonl, samples.jsonl, scored.jsonl, pairs.jsonl, train/ and eval/after/ under
//! `round-k/`; the evaluation files and eval/before/ are shared by every round. With a
//! short-context check (`[eval] short`, `short_inputs`): eval/before_short/ and, per round,
//! eval/after_short/. effects/ holds `sealong study round`'s tables (study.json, .md, .html):
//! every before/after and scorer difference with its paired bootstrap interval.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::commands::report::{round_dir, rounds_in};

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
    /// Rounds of self-improvement (default 1). Round k+1 samples, scores and trains with round
    /// k's merged model (`train/merged`), on the next `synth.n` questions of the same seeded
    /// order (no question twice), with seed + k for its sampling, scoring and training; every
    /// round is evaluated on the same files with the same evaluation seed.
    #[serde(default = "default_rounds")]
    rounds: usize,
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

/// Checks a parsed config the way its stages will read it, without running anything: the
/// `[train]` recipe resolves as `sealong train --config` resolves it, the strategies, scorer and
/// device are names the commands accept, the synth range is not empty, and long evaluation files
/// have a pool. Paths are not checked (an example names a model the user supplies).
pub fn check_config(cfg: &RunConfig) -> Result<()> {
    use std::str::FromStr;
    let (recipe, export) = split_export_keys(&cfg.train)?;
    if cfg.rounds == 0 {
        bail!("rounds = 0: a run has at least one round");
    }
    if cfg.rounds > 1 && export.iter().any(|f| f == "--no-merge") {
        bail!(
            "rounds = {} with [train] merge = false: round k+1 starts from round k's merged model; \
             leave merge at its default (true)",
            cfg.rounds
        );
    }
    let recipe: crate::commands::train::Recipe = toml::Value::Table(recipe)
        .try_into()
        .context("[train]: not a valid recipe")?;
    crate::commands::train::resolve(recipe).context("[train]")?;
    for (key, s) in [
        ("sample.strategy", &cfg.sample.strategy),
        ("eval.strategy", &cfg.eval.strategy),
    ] {
        sealong::text::prompts::Strategy::from_str(s).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    }
    sealong::mbr::Method::from_name(&cfg.score.method, true)
        .map_err(|e| anyhow::anyhow!("score.method {:?}: {e}", cfg.score.method))?;
    sealong::mbr::LongText::from_name(&cfg.score.long_text).map_err(|e| anyhow::anyhow!("score.long_text: {e}"))?;
    <crate::device::DeviceChoice as clap::ValueEnum>::from_str(&cfg.device, true)
        .map_err(|e| anyhow::anyhow!("device {:?}: {e}", cfg.device))?;
    let s = &cfg.synth;
    if s.n == 0 || s.min_k == 0 || s.min_k > s.max_k {
        bail!(
            "[synth]: n = {}, min_k = {}, max_k = {}: n and min_k must be positive and min_k <= max_k",
            s.n,
            s.min_k,
            s.max_k
        );
    }
    let e = &cfg.eval;
    if !e.target_tokens.is_empty() && (e.pool.is_empty() || e.longbench) {
        bail!("[eval]: target_tokens pads the dev sets' questions with `pool` passages: set pool, and not longbench");
    }
    if e.short && e.longbench {
        bail!(
            "[eval]: short builds the dev sets' questions with only their supporting paragraphs, but longbench = true \
             names LongBench files: list short-context files in short_inputs instead"
        );
    }
    Ok(())
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
fn default_rounds() -> usize {
    1
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
    /// `fail` (default) or `skip`: what a question the server rejects does (`--on-error`).
    on_error: Option<String>,
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
            ("--on-error", self.on_error.clone()),
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
    /// What MBR reads of an answer longer than the embedder's window (`sealong score
    /// --long-text`), in scoring and in the evaluations' MBR@N.
    long_text: String,
}

impl Default for ScoreStage {
    fn default() -> Self {
        ScoreStage {
            method: "embedding".into(),
            long_text: sealong::mbr::LongText::default().name().into(),
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
    /// Long evaluation files: each dev question's own paragraphs padded with `pool` passages to
    /// each of these lengths (`sealong synth --eval --target-tokens`); empty: own paragraphs only.
    #[serde(default)]
    target_tokens: Vec<usize>,
    /// The passages that pad long evaluation files.
    #[serde(default)]
    pool: Vec<PathBuf>,
    /// The short-context check: each dev question of `inputs` with only its supporting
    /// paragraphs (`sealong synth --eval --supporting-only`; tasks `<dataset>-short`), evaluated
    /// greedily before training and after each round, beside `short_inputs`.
    #[serde(default)]
    short: bool,
    /// Short-context files evaluated as they are, greedily, before training and after each
    /// round (e.g. the shipped GSM8K questions, data/gsm8k/test.jsonl; any format `sealong eval`
    /// reads).
    #[serde(default)]
    short_inputs: Vec<PathBuf>,
    /// Questions per short-context file (default: `limit`).
    short_limit: Option<usize>,
}

fn default_eval_tokens() -> usize {
    1024
}
fn default_strategy() -> String {
    "plan_and_solve".into()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Times a stage and records it in the summary. A resumed round adds to what the earlier
/// invocations recorded: `seconds` is the stage's wall time summed over every invocation that
/// worked on it, `runs` how many finished it (a finished stage that a rerun passes through counts
/// again, adding the moment it took to see there is nothing left). While a stage runs, its time so
/// far is written every [`HEARTBEAT`] with `"running": true`, so a round killed in a stage (or run
/// over several sessions) loses at most that much of its clock.
struct Stages {
    /// This invocation's stages, in the order they ran.
    log: Vec<Value>,
    /// What earlier invocations recorded; a stage not reached again is written after `log`.
    earlier: Vec<Value>,
    path: PathBuf,
    heartbeat: Duration,
}

/// How often a running stage's time so far reaches summary.json.
const HEARTBEAT: Duration = Duration::from_secs(30);

impl Stages {
    /// The summary at `path`, with the stages an earlier invocation recorded (an unreadable one
    /// is started afresh, with a note: it holds timings only).
    fn open(path: PathBuf) -> Stages {
        let earlier = match std::fs::read(&path) {
            Err(_) => Vec::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v["stages"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    errln!(
                        "note: {} is not JSON ({e}); its stage times start again",
                        path.display()
                    );
                    Vec::new()
                }
            },
        };
        Stages {
            log: Vec::new(),
            earlier,
            path,
            heartbeat: HEARTBEAT,
        }
    }

    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        self.run_counting(name, None, f)
    }

    /// Like [`Stages::run`]; the questions listed in `failures` (the stage's failures file:
    /// rejected by a server, `on_error = "skip"`) are counted in the summary as `failed`.
    fn run_counting(&mut self, name: &str, failures: Option<&Path>, f: impl FnOnce() -> Result<()>) -> Result<()> {
        errln!("== {name}");
        let mut entry = match self.earlier.iter().position(|e| e["stage"] == name) {
            Some(i) => self.earlier.remove(i),
            None => json!({"stage": name, "seconds": 0.0, "runs": 0}),
        };
        if let Some(obj) = entry.as_object_mut() {
            // An earlier invocation killed in this stage left it marked running.
            obj.remove("running");
        }
        let before = entry["seconds"].as_f64().unwrap_or(0.0);
        let t = Instant::now();
        // The heartbeat: the entry with its time so far, until the stage ends (`stop` dropped).
        let (stop, beats) = std::sync::mpsc::channel::<()>();
        let beat = {
            let (path, log, earlier, every) = (
                self.path.clone(),
                self.log.clone(),
                self.earlier.clone(),
                self.heartbeat,
            );
            let mut running = entry.clone();
            running["running"] = json!(true);
            // The first beat before the stage starts, so what the stage reads of summary.json
            // (the report shows it) does not depend on the thread's timing. A failed write is
            // only a lost reading: the stage's end writes again.
            let _ = write_stages(&path, &log, Some(&running), &earlier);
            std::thread::spawn(move || {
                while beats.recv_timeout(every) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                    running["seconds"] = json!(round1(before + t.elapsed().as_secs_f64()));
                    let _ = write_stages(&path, &log, Some(&running), &earlier);
                }
            })
        };
        let result = f().with_context(|| format!("stage {name}"));
        drop(stop);
        let _ = beat.join();
        entry["seconds"] = json!(round1(before + t.elapsed().as_secs_f64()));
        if result.is_ok() {
            entry["runs"] = json!(entry["runs"].as_u64().unwrap_or(0) + 1);
        }
        if let Some(obj) = entry.as_object_mut() {
            obj.remove("failed");
        }
        if let Some(p) = failures {
            let failed = std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
            if failed > 0 {
                entry["failed"] = json!(failed);
            }
        }
        match result {
            Ok(()) => {
                self.log.push(entry);
                write_stages(&self.path, &self.log, None, &self.earlier)
            }
            Err(e) => {
                // The time spent stays recorded for the rerun; the error is what the user sees.
                let _ = write_stages(&self.path, &self.log, Some(&entry), &self.earlier);
                Err(e)
            }
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// summary.json: this invocation's stages, the running one, then those only earlier
/// invocations reached.
fn write_stages(path: &Path, log: &[Value], running: Option<&Value>, earlier: &[Value]) -> Result<()> {
    let all: Vec<&Value> = log.iter().chain(running).chain(earlier).collect();
    let text = serde_json::to_string_pretty(&json!({"stages": all}))?;
    Ok(sealong::files::write_atomic(path, text.as_bytes())?)
}

/// Runs the round. `command_line` runs one `sealong` command line in this process
/// (`cli::run_line`, handed in because the CLI sits above the commands and this module does not
/// import it).
pub fn run(args: RunArgs, command_line: fn(Vec<String>) -> Result<()>) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = parse_config(&text, &args.config)?;
    check_config(&cfg).with_context(|| format!("{}: not a valid run config", args.config.display()))?;
    let Some(out) = args.out.clone().or(cfg.out.clone()) else {
        bail!(
            "no output directory: set `out` in {} or pass --out",
            args.config.display()
        );
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let copy = out.join("config.toml");
    match std::fs::read_to_string(&copy) {
        Ok(prev) if prev == text => errln!("continuing the run in {}", out.display()),
        Ok(prev) => {
            let diffs = config_differences(&prev, &text)
                .with_context(|| format!("{}: the copy of the run's config", copy.display()))?;
            if !diffs.is_empty() {
                bail!(
                    "{} holds a run with a different config ({}): {}. Resuming would mix two recipes in one \
                     set of files; use another output directory (--out or `out`), or delete {} to start afresh",
                    out.display(),
                    copy.display(),
                    diffs.join(", "),
                    out.display()
                );
            }
            // Only settings that change no result differ (device, transport, checkpoint cadence):
            // the copy becomes this config, so the directory records what ran last.
            errln!(
                "continuing the run in {} (with this config's device/transport settings)",
                out.display()
            );
            sealong::files::write_atomic(&copy, text.as_bytes())?;
        }
        Err(_) => sealong::files::write_atomic(&copy, text.as_bytes())?,
    }
    let seed = cfg.seed.to_string();
    let device = ["--device".to_string(), cfg.device.clone()];
    let mut stages = Stages::open(out.join("summary.json"));
    // Round k's model, seed and stage names: round 1 starts from the config's model with its
    // seed, and names its stages plainly (as a one-round run always has).
    let round_model = |k: usize| -> String {
        if k == 1 {
            cfg.model.clone()
        } else {
            s(&round_dir(&out, k - 1).join("train/merged"))
        }
    };
    let round_seed = |k: usize| (cfg.seed + k as u64 - 1).to_string();
    let label = |k: usize, name: &str| {
        if k == 1 {
            name.to_string()
        } else {
            format!("round {k} {name}")
        }
    };
    let paths = |k: usize| {
        let d = round_dir(&out, k);
        (
            d.join("questions.jsonl"),
            d.join("samples.jsonl"),
            d.join("scored.jsonl"),
            d.join("pairs.jsonl"),
        )
    };

    let synth = |k: usize| -> Result<()> {
        let (questions, ..) = paths(k);
        if let Some(dir) = questions.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
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
            // One seeded order for every round; round k takes its next n questions.
            "--seed".into(),
            seed.clone(),
        ];
        if k > 1 {
            a.extend(["--skip".into(), ((k - 1) * cfg.synth.n).to_string()]);
        }
        for p in &cfg.synth.pool {
            a.extend(["--pool".into(), s(p)]);
        }
        if cfg.synth.allow_short {
            a.push("--allow-short".into());
        }
        command_line(a)
    };

    let sp = &cfg.sample;
    let sample = |k: usize| -> Result<()> {
        let (questions, samples, ..) = paths(k);
        let mut a = vec![
            "sample".into(),
            "--model".into(),
            round_model(k),
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
            round_seed(k),
        ];
        match &sp.remote {
            // The server applies its own template and context limit; no local truncation.
            Some(r) => a.extend(r.args()),
            None => {
                a.push("--truncate-middle".into());
                a.extend(device.clone());
            }
        }
        command_line(a)
    };

    let score = |k: usize| -> Result<()> {
        let (_, samples, scored, pairs) = paths(k);
        let mut a = vec![
            "score".into(),
            "--input".into(),
            s(&samples),
            "--method".into(),
            cfg.score.method.clone(),
            "--long-text".into(),
            cfg.score.long_text.clone(),
            "--embedder".into(),
            cfg.embedder.clone(),
            "--out".into(),
            s(&scored),
            "--pairs".into(),
            s(&pairs),
            "--seed".into(),
            round_seed(k),
        ];
        a.extend(device.clone());
        command_line(a)
    };

    let samples_of = |k: usize| paths(k).1;
    stages.run("synth", || synth(1))?;
    stages.run_counting(
        "sample",
        Some(&crate::commands::sample::failures_path(&samples_of(1))),
        || sample(1),
    )?;
    stages.run("score", || score(1))?;
    // The evaluation files, built once from the dev sets (or LongBench files as they are).
    let eval_dir = out.join("eval_data");
    let mut eval_files = Vec::new();
    let mut short_files = cfg.eval.short_inputs.clone();
    // `synth --eval` of one dev set into `file`, plus `extra` flags.
    let synth_eval = |input: &Path, file: &Path, extra: &[String]| -> Result<()> {
        let mut a: Vec<String> = vec!["synth".into(), "--eval".into()];
        a.extend_from_slice(extra);
        a.extend([
            "--input".into(),
            s(input),
            "--out".into(),
            s(file),
            "--model".into(),
            cfg.model.clone(),
            "--seed".into(),
            seed.clone(),
        ]);
        command_line(a)
    };
    stages.run("eval data", || {
        std::fs::create_dir_all(&eval_dir)?;
        for input in &cfg.eval.inputs {
            let stem = input
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "eval".into());
            if cfg.eval.short {
                let file = eval_dir.join(format!("{stem}-short.jsonl"));
                synth_eval(input, &file, &["--supporting-only".into()])?;
                short_files.push(file);
            }
            if cfg.eval.longbench {
                eval_files.push(input.clone());
                continue;
            }
            let file = eval_dir.join(format!("{stem}.jsonl"));
            let targets = &cfg.eval.target_tokens;
            let mut extra = Vec::new();
            if !targets.is_empty() {
                let list: Vec<String> = targets.iter().map(usize::to_string).collect();
                extra.extend(["--target-tokens".into(), list.join(",")]);
                for p in &cfg.eval.pool {
                    extra.extend(["--pool".into(), s(p)]);
                }
            }
            synth_eval(input, &file, &extra)?;
            if targets.is_empty() {
                eval_files.push(file);
            } else {
                eval_files.extend(
                    targets
                        .iter()
                        .map(|&t| crate::commands::synth::target_path(&file, t, targets.len())),
                );
            }
        }
        Ok(())
    })?;

    let ev = &cfg.eval;
    // `short`: the short-context check (greedy, its own files and limit).
    let eval_on = |dir: &Path, adapter: Option<&Path>, model: &str, short: bool| -> Result<()> {
        let (files, n, limit) = if short {
            (&short_files, 0, ev.short_limit.or(ev.limit))
        } else {
            (&eval_files, ev.n, ev.limit)
        };
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
            n.to_string(),
            "--temperature".into(),
            sp.temperature.to_string(),
            "--embedder".into(),
            cfg.embedder.clone(),
            "--long-text".into(),
            cfg.score.long_text.clone(),
            "--seed".into(),
            seed.clone(),
            "--input".into(),
        ];
        a.extend(files.iter().map(|p| s(p)));
        if let Some(l) = limit {
            a.extend(["--limit".into(), l.to_string()]);
        }
        if ev.truncate_middle {
            a.push("--truncate-middle".into());
        }
        if let Some(ad) = adapter {
            a.extend(["--adapter".into(), s(ad)]);
        }
        a.extend(device.clone());
        command_line(a)
    };
    stages.run("eval before", || {
        eval_on(&out.join("eval/before"), None, &cfg.model, false)
    })?;
    if !short_files.is_empty() {
        stages.run("eval before (short)", || {
            eval_on(&out.join("eval/before_short"), None, &cfg.model, true)
        })?;
    }

    let train = |k: usize| -> Result<()> {
        let train_dir = round_dir(&out, k).join("train");
        let done_mark = train_dir.join("done.json");
        if done_mark.exists() {
            errln!("training already finished ({})", done_mark.display());
            return Ok(());
        }
        let (recipe_table, export) = split_export_keys(&cfg.train)?;
        let recipe = round_dir(&out, k).join("train_recipe.toml");
        sealong::files::write_atomic(&recipe, toml::to_string(&recipe_table)?.as_bytes())?;
        let mut a = vec![
            "train".into(),
            "--model".into(),
            round_model(k),
            "--pairs".into(),
            s(&paths(k).3),
            "--out".into(),
            s(&train_dir),
            "--config".into(),
            s(&recipe),
        ];
        a.extend(export);
        if !cfg.train.contains_key("seed") {
            a.extend(["--seed".into(), round_seed(k)]);
        }
        if train_dir.join("checkpoints").is_dir() && crate::commands::train::has_checkpoint(&train_dir) {
            a.push("--resume".into());
        }
        a.extend(device.clone());
        command_line(a)?;
        sealong::files::write_atomic(&done_mark, b"{\"done\": true}\n")?;
        Ok(())
    };

    // Round k's trained model on the evaluation files (`short`: the short-context ones): its
    // adapter over the model it started from, or (a full fine-tune) its merged weights.
    let eval_after = |k: usize, short: bool| -> Result<()> {
        let train_dir = round_dir(&out, k).join("train");
        let dir = round_dir(&out, k).join(if short { "eval/after_short" } else { "eval/after" });
        let adapter = train_dir.join("adapter");
        if adapter.join("adapter_config.json").is_file() {
            eval_on(&dir, Some(&adapter), &round_model(k), short)
        } else {
            eval_on(&dir, None, &s(&train_dir.join("merged")), short)
        }
    };

    stages.run("train", || train(1))?;
    stages.run("eval after", || eval_after(1, false))?;
    if !short_files.is_empty() {
        stages.run("eval after (short)", || eval_after(1, true))?;
    }
    for k in 2..=cfg.rounds {
        stages.run(&label(k, "synth"), || synth(k))?;
        stages.run_counting(
            &label(k, "sample"),
            Some(&crate::commands::sample::failures_path(&samples_of(k))),
            || sample(k),
        )?;
        stages.run(&label(k, "score"), || score(k))?;
        stages.run(&label(k, "train"), || train(k))?;
        stages.run(&label(k, "eval after"), || eval_after(k, false))?;
        if !short_files.is_empty() {
            stages.run(&label(k, "eval after (short)"), || eval_after(k, true))?;
        }
    }

    // The measured effect with paired bootstrap intervals (`sealong study round`).
    let effects = out.join("effects");
    stages.run("effects", || {
        command_line(vec![
            "study".into(),
            "round".into(),
            "--dir".into(),
            s(&out),
            "--out".into(),
            s(&effects),
            "--seed".into(),
            seed.clone(),
        ])
    })?;
    stages.run("report", || {
        let path = crate::commands::report::write_report(&out)?;
        errln!("report: {}", path.display());
        Ok(())
    })?;
    print_summary(&out)
}

/// Config keys that change no record, so a rerun may change them: where the run writes, the
/// device (the engines are held to each other by the parity tests), the number of rounds, how
/// the server is reached,
/// and the trainer's knobs that do not change the update (as `TrainConfig::result_shaping`).
const NOT_RECORD_SHAPING: &[&[&str]] = &[
    &["out"],
    // No round's files depend on how many rounds follow it: raising `rounds` continues a
    // finished run with more rounds, lowering it leaves the later rounds' files unused.
    &["rounds"],
    &["device"],
    &["sample", "remote", "base_url"],
    &["sample", "remote", "api_key_env"],
    &["sample", "remote", "concurrency"],
    &["sample", "remote", "request_timeout"],
    &["sample", "remote", "max_retries"],
    &["sample", "remote", "on_error"],
    &["train", "checkpoint_every"],
    &["train", "keep_checkpoints"],
    &["train", "micro_batch"],
    &["train", "loss_chunk"],
];

/// The differences between the config a run directory was made with and this one, as
/// `key = old (this config: new)`, leaving out [`NOT_RECORD_SHAPING`] keys and formatting.
fn config_differences(old: &str, new: &str) -> Result<Vec<String>> {
    let old: toml::Table = toml::from_str(old).context(
        "not valid TOML (cut off by an interrupted write of an older version?); restore it from the \
         config the run was started with",
    )?;
    let new: toml::Table = toml::from_str(new)?;
    let mut out = Vec::new();
    diff_tables(&old, &new, &mut Vec::new(), &mut out);
    Ok(out)
}

fn diff_tables(old: &toml::Table, new: &toml::Table, path: &mut Vec<String>, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        path.push(k.clone());
        let ignored = NOT_RECORD_SHAPING
            .iter()
            .any(|p| p.len() == path.len() && p.iter().zip(path.iter()).all(|(a, b)| a == b));
        if !ignored {
            match (old.get(k), new.get(k)) {
                (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => diff_tables(a, b, path, out),
                (a, b) if a == b => {}
                (a, b) => {
                    let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), ToString::to_string);
                    out.push(format!("{} = {} (this config: {})", path.join("."), show(a), show(b)));
                }
            }
        }
        path.pop();
    }
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

/// Before/after averages from the metrics files: before training, then after each round.
fn print_summary(out: &Path) -> Result<()> {
    let read = |p: PathBuf| -> Option<Value> { serde_json::from_slice(&std::fs::read(p).ok()?).ok() };
    let Some(before) = read(out.join("eval/before/metrics.json")) else {
        return Ok(());
    };
    let mut columns = vec![before];
    for k in 1..=rounds_in(out) {
        match read(round_dir(out, k).join("eval/after/metrics.json")) {
            Some(m) => columns.push(m),
            None => break,
        }
    }
    if columns.len() < 2 {
        return Ok(());
    }
    let heads: Vec<String> = (1..columns.len()).map(|k| format!("round {k}")).collect();
    errln!(
        "\nSubEM x 100 (average over tasks)   before -> {}",
        if heads.len() == 1 {
            "after".to_string()
        } else {
            heads.join(" -> ")
        }
    );
    for k in ["greedy", "mbr", "random", "oracle"] {
        let values: Option<Vec<f64>> = columns.iter().map(|m| m["average"][k].as_f64()).collect();
        if let Some(v) = values {
            let cells: Vec<String> = v.iter().map(|x| format!("{x:>6.1}")).collect();
            errln!("  {k:<32} {}", cells.join(" -> "));
        }
    }
    let last = round_dir(out, columns.len() - 1);
    if let (Some(b), Some(a)) = (
        read(out.join("eval/before_short/metrics.json")),
        read(last.join("eval/after_short/metrics.json")),
    ) {
        errln!("short-context check, greedy x 100    before -> after");
        for t in b["tasks"].as_array().into_iter().flatten() {
            let name = t["task"].as_str().unwrap_or_default();
            let after = a["tasks"].as_array().into_iter().flatten().find(|x| x["task"] == name);
            if let (Some(x), Some(y)) = (t["greedy"].as_f64(), after.and_then(|x| x["greedy"].as_f64())) {
                errln!("  {name:<32} {x:>6.1} -> {y:>6.1}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{RemoteSampling, Stages, config_differences, split_export_keys};

    /// Issue 17: questions a server rejected with `on_error = "skip"` were nowhere in the
    /// round's summary; `[sample.remote] on_error` reaches `sample`, and summary.json counts them.
    #[test]
    fn the_summary_counts_a_stages_failures_and_on_error_reaches_sample() {
        let r: RemoteSampling =
            toml::from_str("base_url = \"http://h/v1\"\napi_model = \"m\"\non_error = \"skip\"\n").expect("toml");
        let a = r.args();
        assert!(a.windows(2).any(|w| w == ["--on-error", "skip"]), "{a:?}");
        let dir = std::env::temp_dir().join(format!("sealong-run-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let failures = dir.join("samples.failures.jsonl");
        std::fs::write(&failures, "{\"id\": \"a\"}\n{\"id\": \"b\"}\n").expect("failures");
        let _ = std::fs::remove_file(dir.join("summary.json"));
        let mut stages = Stages::open(dir.join("summary.json"));
        stages
            .run_counting("sample", Some(&failures), || Ok(()))
            .expect("stage");
        stages
            .run_counting("score", Some(&dir.join("none.jsonl")), || Ok(()))
            .expect("stage");
        let read = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary")).expect("json")
        };
        let summary = read();
        assert_eq!(summary["stages"][0]["failed"], 2, "{summary}");
        assert!(summary["stages"][1].get("failed").is_none(), "{summary}");
        // A resumed round adds to the stage times recorded before: `runs` counts the
        // invocations, `seconds` sums them, and a stage not reached again keeps its entry.
        std::fs::write(&failures, "{\"id\": \"a\"}\n").expect("failures");
        // As a kill inside the stage leaves it: marked running, its time so far recorded.
        let mut killed = read();
        killed["stages"][0]["running"] = serde_json::json!(true);
        std::fs::write(dir.join("summary.json"), killed.to_string()).expect("killed summary");
        let mut again = Stages::open(dir.join("summary.json"));
        again.heartbeat = std::time::Duration::from_millis(50);
        let mut during = serde_json::Value::Null;
        again
            .run_counting("sample", Some(&failures), || {
                std::thread::sleep(std::time::Duration::from_millis(400));
                during = read();
                Ok(())
            })
            .expect("stage");
        // While it ran, the stage's time so far was on disk (a kill then loses at most a beat).
        let running = during["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|e| e["stage"] == "sample"))
            .expect("the running stage is in the summary");
        assert_eq!(running["running"], true, "{during}");
        assert!(running["seconds"].as_f64() >= Some(0.2), "{during}");
        let summary = read();
        let _ = std::fs::remove_dir_all(&dir);
        let stages = summary["stages"].as_array().expect("stages");
        assert_eq!(stages.len(), 2, "{summary}");
        assert_eq!(
            (stages[0]["runs"].as_u64(), stages[0]["failed"].as_u64()),
            (Some(2), Some(1))
        );
        assert!(stages[0]["seconds"].as_f64() >= Some(0.4), "{summary}");
        assert!(stages[0].get("running").is_none(), "{summary}");
        assert_eq!(
            (stages[1]["stage"].as_str(), stages[1]["runs"].as_u64()),
            (Some("score"), Some(1))
        );
    }

    /// Issue 17: the refusal named no difference; formatting, comments and the device made
    /// it refuse while changing no record.
    #[test]
    fn config_differences_name_the_key_and_ignore_what_changes_no_record() {
        let old = "seed = 1\ndevice = \"cpu\"\n[sample]\nn = 4\n[sample.remote]\nbase_url = \"http://a/v1\"\napi_model = \"m\"\n";
        let same = "# a comment\nseed = 1\ndevice = \"gpu\"\n[sample]\nn  =  4\n[sample.remote]\nbase_url = \"http://b/v1\"\napi_model = \"m\"\n";
        assert!(config_differences(old, same).expect("ok").is_empty());
        let other = "seed = 2\n[sample]\nn = 8\ntemperature = 1.0\n[sample.remote]\nbase_url = \"http://a/v1\"\napi_model = \"m2\"\n";
        assert_eq!(
            config_differences(old, other).expect("ok"),
            [
                "sample.n = 4 (this config: 8)",
                "sample.remote.api_model = \"m\" (this config: \"m2\")",
                "sample.temperature = (unset) (this config: 1.0)",
                "seed = 1 (this config: 2)",
            ]
        );
        let e = config_differences("seed = 1\n[sam", old).expect_err("torn copy");
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
    }

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
