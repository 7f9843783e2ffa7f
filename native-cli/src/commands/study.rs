//! `sealong study`: the paper's studies, one command each, from `sealong eval` outputs. Each
//! writes DIR/study.json (every number), DIR/study.md (the tables, intervals as [lo, hi]) and
//! DIR/study.html (the tables and a chart), atomically; the tables and their bootstrap intervals
//! are core's (`sealong::eval::study`).
//!
//! - `study n`: oracle@k and MBR@k for k = 1..N from predictions with N samples.
//! - `study scorers`: at N, the SubEM of the answer each scorer picks (embedding, ROUGE-L and
//!   chrF MBR, the reference-free self-evaluation judge), random (expected), greedy and oracle.
//! - `study prompts`: greedy eval per answer strategy (eval's own code, resumable), the paper's
//!   Table 1.
//! - `study round`: a run directory's measured effect, from its evaluations' predictions (greedy
//!   before/after, MBR@N and oracle@N against random@N, the short-context check), each
//!   difference with its paired bootstrap interval; `sealong run` writes it as `effects/`.
//!
//! Several prediction files are several runs over the same questions (before and after a
//! round, say): each gets its own table, and files that differ in questions are refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use sealong::data::evalfiles;
use sealong::data::jsonl;
use sealong::eval::bootstrap::DEFAULT_RESAMPLES;
use sealong::eval::study::{self, Part, RowInput, Sampled, Study};
use sealong::mbr::judge::Judge;
use sealong::mbr::{self, LongText, Method, long_text, method};
use sealong::models::encoder::SentenceEmbedder;
use sealong::text::Strategy;
use serde_json::{Value, json};

use crate::args::{DeviceArgs, ModelArgs, long_text_parser, method_parser};
use crate::commands::eval::{self, EvalArgs};
use crate::decode::LoadedDecoder;
use crate::provision::{self, DEFAULT_EMBEDDER};

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// oracle@k and MBR@k curves for k = 1..N from eval predictions with N samples.
    N(NArgs),
    /// At N: the SubEM of each scorer's pick (embedding/ROUGE-L/chrF MBR, self-eval), random,
    /// greedy and oracle, in the paper's scorer-table layout.
    Scorers(ScorersArgs),
    /// Greedy eval per answer strategy, in the paper's Table 1 layout (rows strategies).
    Prompts(PromptsArgs),
    /// A `sealong run` directory's effects, from the predictions its evaluations wrote: greedy
    /// before vs after each round, MBR@N and oracle@N against random@N (and greedy), and the
    /// short-context check before vs after, each difference with its paired bootstrap CI.
    Round(RoundArgs),
}

#[derive(Debug, Args)]
pub struct RoundArgs {
    /// The run directory (`sealong run --out`): eval/before, eval/after, round-k/eval/after and
    /// their `_short` twins.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub out: StudyOut,
}

/// What every study takes: where it writes and how its intervals are drawn.
#[derive(Debug, Args, Clone)]
pub struct StudyOut {
    /// Output directory (study.json, study.md, study.html).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = DEFAULT_RESAMPLES)]
    pub resamples: usize,
    /// Seed of the bootstrap (and of `study n`'s k-subsets).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The MBR utilities a study computes without a judge decoder.
const MBR_METHODS: [Method; 3] = [Method::Embedding, Method::RougeL, Method::Chrf];

#[derive(Debug, Args)]
pub struct NArgs {
    /// `sealong eval` predictions.jsonl files with N samples (`eval --n N`); several files are
    /// several runs over the same questions.
    #[arg(long, short = 'p', num_args = 1.., required = true)]
    pub predictions: Vec<PathBuf>,
    #[command(flatten)]
    pub out: StudyOut,
    /// The MBR utility.
    #[arg(long, value_parser = method_parser(&MBR_METHODS), default_value_t = Method::Embedding)]
    pub method: Method,
    /// Sentence embedder of --method embedding.
    #[arg(long, default_value = DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// What MBR reads of a sample longer than the embedder's window (as `eval --long-text`).
    #[arg(long, value_parser = long_text_parser(), default_value_t = LongText::default())]
    pub long_text: LongText,
    /// k-subsets per question for MBR@k: all of them when there are at most this many, else this
    /// many seeded uniform draws.
    #[arg(long, default_value_t = 32)]
    pub subsets: usize,
}

#[derive(Debug, Args)]
pub struct ScorersArgs {
    /// `sealong eval` predictions.jsonl files with N samples; several files are several runs
    /// over the same questions.
    #[arg(long, short = 'p', num_args = 1.., required = true)]
    pub predictions: Vec<PathBuf>,
    #[command(flatten)]
    pub out: StudyOut,
    /// The evaluation files the predictions answer (self-eval reads each question's context
    /// there); default: the `inputs` of the metrics.json beside each predictions file.
    #[arg(long, short = 'i', num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Leave out the self-evaluation row (it needs the decoder and the questions' contexts).
    #[arg(long)]
    pub no_self_eval: bool,
    /// The decoder that judges (self-eval): a default name or a path.
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Most tokens of the judge's explanation and rating.
    #[arg(long, default_value_t = 256)]
    pub judge_max_new_tokens: usize,
    /// Sentence embedder of embedding MBR.
    #[arg(long, default_value = DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// What MBR reads of a sample longer than the embedder's window, one or several
    /// (comma-separated: one embedding row per reading, and ROUGE-L / chrF rows for the whole
    /// answers and for the answer spans when answer-span is among them).
    #[arg(long, value_parser = long_text_parser(), value_delimiter = ',', default_values_t = [LongText::default()])]
    pub long_text: Vec<LongText>,
}

#[derive(Debug, Args)]
pub struct PromptsArgs {
    /// Evaluation files (as `sealong eval --input`).
    #[arg(long, short = 'i', num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    #[command(flatten)]
    pub out: StudyOut,
    /// The strategies, comma-separated (default: all five).
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Only the first this many questions of each file.
    #[arg(long)]
    pub limit: Option<usize>,
    /// More `sealong eval` flags for every strategy's run, after `--` (e.g. `-- --model M
    /// --max-new-tokens 256`).
    #[arg(last = true)]
    pub eval_args: Vec<String>,
}

pub fn run(c: StudyCommand) -> Result<()> {
    match c {
        StudyCommand::N(a) => run_n(a),
        StudyCommand::Scorers(a) => run_scorers(a),
        StudyCommand::Prompts(a) => run_prompts(a),
        StudyCommand::Round(a) => run_round(a),
    }
}

/// One question of a predictions file.
struct Pred {
    key: String,
    q: Sampled,
    texts: Vec<String>,
    /// The pick `eval` recorded (its MBR@N).
    mbr_choice: Option<usize>,
}

/// The records of an eval predictions file; `need_samples`: every question must have the same
/// N ≥ 1 samples.
fn read_predictions(path: &Path, need_samples: bool) -> Result<Vec<Pred>> {
    let mut out: Vec<Pred> = Vec::new();
    let mut seen = HashSet::new();
    for l in jsonl::read::<Value>(path)? {
        let (v, at) = (&l.value, format!("{}:{}", path.display(), l.line));
        let field = |k: &str| -> Result<String> {
            v[k].as_str()
                .map(String::from)
                .with_context(|| format!("{at}: field {k:?} is missing or not a string (an eval predictions file?)"))
        };
        let (key, task, id) = (field("key")?, field("task")?, field("id")?);
        if !seen.insert(key.clone()) {
            bail!("{at}: question {key:?} appears twice");
        }
        let greedy = v["sub_em"]
            .as_bool()
            .with_context(|| format!("{at}: field \"sub_em\" is missing or not a boolean"))?;
        let texts: Vec<String> = match &v["samples"] {
            Value::Null => Vec::new(),
            s => serde_json::from_value(s.clone()).with_context(|| format!("{at}: field \"samples\""))?,
        };
        let samples: Vec<bool> = match &v["samples_sub_em"] {
            Value::Null => Vec::new(),
            s => serde_json::from_value(s.clone()).with_context(|| format!("{at}: field \"samples_sub_em\""))?,
        };
        if texts.len() != samples.len() {
            bail!(
                "{at}: question {key:?} has {} samples but {} values in \"samples_sub_em\"",
                texts.len(),
                samples.len()
            );
        }
        if need_samples {
            if samples.is_empty() {
                bail!(
                    "{at}: question {key:?} has no samples (N = 0); this study needs `sealong eval --n N` predictions"
                );
            }
            if let Some(first) = out.first()
                && first.q.samples.len() != samples.len()
            {
                bail!(
                    "{at}: question {key:?} has {} samples, question {:?} has {}: a study needs one N",
                    samples.len(),
                    first.key,
                    first.q.samples.len()
                );
            }
        }
        out.push(Pred {
            key,
            q: Sampled {
                task,
                id,
                greedy,
                samples,
            },
            texts,
            mbr_choice: v["mbr_choice"].as_u64().map(|c| c as usize),
        });
    }
    Ok(out)
}

fn questions(preds: &[Pred]) -> study::Questions {
    let mut q = study::Questions::new();
    for p in preds {
        q.entry(p.q.task.clone()).or_default().insert(p.q.id.clone());
    }
    q
}

/// Every file's predictions; files that differ in questions from the first are refused.
fn read_all(paths: &[PathBuf], need_samples: bool) -> Result<Vec<(PathBuf, Vec<Pred>)>> {
    let files = paths
        .iter()
        .map(|p| Ok((p.clone(), read_predictions(p, need_samples)?)))
        .collect::<Result<Vec<_>>>()?;
    if let Some((first, fp)) = files.first() {
        let q0 = questions(fp);
        for (p, preds) in &files[1..] {
            study::same_questions(
                &first.display().to_string(),
                &q0,
                &p.display().to_string(),
                &questions(preds),
            )?;
        }
    }
    Ok(files)
}

/// Labels of the parts: the files' paths.
fn label(p: &Path) -> String {
    p.display().to_string()
}

/// MBR's pick in a `k × k` utility matrix: row means (numpy's summation) and the first argmax,
/// the select step of `score` and `eval`.
fn mbr_pick(m: &[f64], k: usize) -> sealong::Result<usize> {
    let scores = mbr::select::scores_from_matrix(m, k)?;
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(sealong::Error::Invalid(format!("MBR score of sample {i} is NaN")));
    }
    Ok(mbr::select::first_argmax(&scores).unwrap_or(0))
}

/// The MBR utility of `study n` and `study scorers`, loaded once.
/// The embedder is shared by the readings of `study scorers`.
enum Utility {
    Embedding(Arc<SentenceEmbedder>, LongText),
    Text(Method, LongText),
}

impl Utility {
    fn load(m: Method, embedder: &str, reading: LongText) -> Result<Utility> {
        Ok(if m.needs_embedder() {
            Utility::Embedding(Arc::new(load_embedder(embedder)?), reading)
        } else {
            Utility::Text(m, reading)
        })
    }

    /// One question's `n × n` matrix (the host path `eval` and `score` take on the CPU).
    fn matrix(&self, texts: &[String]) -> Result<Vec<f64>> {
        if texts.len() == 1 {
            return Ok(vec![1.0]);
        }
        Ok(match self {
            Utility::Embedding(e, reading) => {
                mbr::embedding::similarity_matrix(&long_text::embed(e, texts, *reading)?.vectors)?
            }
            Utility::Text(m, reading) => m.text_matrix(&reading.texts(texts)).context("a text utility")?,
        })
    }
}

fn load_embedder(embedder: &str) -> Result<SentenceEmbedder> {
    let dir = provision::resolve_model(embedder)?;
    SentenceEmbedder::load_dir_on(&dir, None).with_context(|| format!("loading the embedder {}", dir.display()))
}

fn write_study(out: &Path, s: &Study) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md = study::markdown(s);
    let files = [
        ("study.json", serde_json::to_string_pretty(s)? + "\n"),
        ("study.md", md.clone()),
        ("study.html", sealong::eval::report::study::render(s)),
    ];
    for (name, text) in &files {
        sealong::files::write_atomic(&out.join(name), text.as_bytes())?;
    }
    outln!("{md}")?;
    errln!("wrote {}, study.md and study.html", out.join("study.json").display());
    Ok(())
}

fn run_n(a: NArgs) -> Result<()> {
    if a.out.resamples == 0 || a.subsets == 0 {
        bail!("--resamples and --subsets must be at least 1");
    }
    let files = read_all(&a.predictions, true)?;
    let utility = Utility::load(a.method, &a.embedder, a.long_text)?;
    let mut parts = Vec::new();
    let mut n_all = 0;
    for (path, preds) in &files {
        let n = preds[0].q.samples.len();
        n_all = n;
        let bar = crate::progress::bar(preds.len() as u64, "questions");
        // Per question: MBR@k for k = 1..=N, and whether MBR@N's pick is eval's.
        let mut mbr_k: Vec<Vec<f64>> = Vec::with_capacity(preds.len());
        let (mut agree, mut recorded) = (0usize, 0usize);
        for p in preds {
            let m = utility
                .matrix(&p.texts)
                .with_context(|| format!("{} (question {})", path.display(), p.key))?;
            let mut row = Vec::with_capacity(n);
            for k in 1..=n {
                let subsets = study::k_subsets(n, k, a.subsets, &mut method::study_stream(a.out.seed, &p.key, k));
                row.push(study::mbr_at_k(&p.q, &m, &subsets, &mbr_pick)?);
            }
            if let Some(c) = p.mbr_choice {
                recorded += 1;
                agree += usize::from(c == if n == 1 { 0 } else { mbr_pick(&m, n)? });
            }
            mbr_k.push(row);
            bar.inc(1);
        }
        bar.finish();
        let qs: Vec<Sampled> = preds.iter().map(|p| p.q.clone()).collect();
        let mut rows = vec![RowInput::new(
            format!("random@{n}"),
            study::values_of(&qs, study::random_value),
        )];
        for k in 1..=n {
            rows.push(
                RowInput::new(
                    format!("oracle@{k}"),
                    study::values_of(&qs, |q| study::oracle_at_k(q, k)),
                )
                .on_curve("oracle", k),
            );
        }
        let index: HashMap<(&str, &str), usize> = preds
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.q.task.as_str(), p.q.id.as_str()), i))
            .collect();
        for k in 1..=n {
            let v = study::values_of(&qs, |q| mbr_k[index[&(q.task.as_str(), q.id.as_str())]][k - 1]);
            rows.push(RowInput::new(format!("MBR@{k}"), v).on_curve("MBR", k).compared());
        }
        let baseline = format!("random@{n}");
        let table = study::table(&rows, Some(baseline.as_str()), a.out.resamples, a.out.seed)?;
        let mut notes = vec![format!(
            "{} questions, N = {n}; MBR utility {}; MBR@k is the mean over a question's k-subsets of its \
             samples: all of them when there are at most {}, else {} seeded draws",
            preds.len(),
            a.method,
            a.subsets,
            a.subsets
        )];
        if recorded > 0 {
            notes.push(format!(
                "MBR@{n}'s pick equals the mbr_choice eval recorded on {agree} of {recorded} questions (eval on a GPU \
                 or with another --method may differ)"
            ));
        }
        parts.push(Part {
            label: label(path),
            table,
            notes,
        });
    }
    let s = Study {
        study: "n".into(),
        title: format!("oracle@k and MBR@k, k = 1..{n_all}"),
        settings: json!({
            "predictions": a.predictions, "method": a.method.name(),
            "embedder": a.method.needs_embedder().then_some(&a.embedder),
            "long_text": a.long_text.name(),
            "subsets": a.subsets, "seed": a.out.seed, "resamples": a.out.resamples,
        }),
        parts,
    };
    write_study(&a.out.out, &s)
}

/// Each question's context and question text, by eval's key (`task/id`), from the inputs.
fn contexts(inputs: &[PathBuf]) -> Result<HashMap<String, (Arc<str>, String)>> {
    let mut out = HashMap::new();
    for path in inputs {
        let (format, qs) = evalfiles::read(path, None)?;
        for (_, q) in qs {
            let key = format!("{}/{}", eval::task_of(&q, format, path), q.id);
            out.insert(key, (q.context.clone(), q.question.clone()));
        }
    }
    Ok(out)
}

/// The inputs `eval` recorded in the metrics.json beside `preds`.
fn recorded_inputs(preds: &Path) -> Result<Vec<PathBuf>> {
    let metrics = preds.with_file_name("metrics.json");
    let text = std::fs::read(&metrics).with_context(|| {
        format!(
            "self-eval needs each question's context: pass the evaluation files with --input (or --no-self-eval); \
             reading {}",
            metrics.display()
        )
    })?;
    let v: Value = serde_json::from_slice(&text).with_context(|| format!("{}", metrics.display()))?;
    let inputs: Vec<PathBuf> = serde_json::from_value(v["inputs"].clone())
        .with_context(|| format!("{}: field \"inputs\"", metrics.display()))?;
    if let Some(missing) = inputs.iter().find(|p| !p.exists()) {
        bail!(
            "{} names the evaluation file {} which is not there (relative to this directory); pass the files \
             with --input, or --no-self-eval",
            metrics.display(),
            missing.display()
        );
    }
    Ok(inputs)
}

fn run_scorers(a: ScorersArgs) -> Result<()> {
    if a.out.resamples == 0 {
        bail!("--resamples must be at least 1");
    }
    let files = read_all(&a.predictions, true)?;
    // The utilities: one embedding row per reading; ROUGE-L and chrF read whole answers, and
    // their spans too when answer-span is asked for (truncate and windowed are the same to them).
    let mut readings = a.long_text.clone();
    readings.dedup();
    let several = readings.len() > 1;
    let embedder = Arc::new(load_embedder(&a.embedder)?);
    let mut utilities: Vec<(String, String, Utility)> = Vec::new();
    for &r in &readings {
        let tag = if several { format!(" ({r})") } else { String::new() };
        utilities.push((
            format!("embedding{tag}"),
            format!("embedding{tag}"),
            Utility::Embedding(embedder.clone(), r),
        ));
    }
    let mut text_readings: Vec<LongText> = readings
        .iter()
        .map(|&r| {
            if r == LongText::AnswerSpan {
                r
            } else {
                LongText::Windowed
            }
        })
        .collect();
    text_readings.dedup();
    for m in [Method::RougeL, Method::Chrf] {
        for &r in &text_readings {
            let tag = match (text_readings.len() > 1, r) {
                (false, _) => String::new(),
                (true, LongText::AnswerSpan) => " (answer-span)".to_string(),
                (true, _) => " (whole)".to_string(),
            };
            let shown = if m == Method::RougeL { "ROUGE-L" } else { "chrF" };
            utilities.push((format!("{m}{tag}"), format!("{shown}{tag}"), Utility::Text(m, r)));
        }
    }
    let judge = if a.no_self_eval {
        None
    } else {
        Some(LoadedDecoder::load(&a.model.model, &a.device)?)
    };
    let mut parts = Vec::new();
    let mut n_all = 0;
    for (path, preds) in &files {
        let n = preds[0].q.samples.len();
        n_all = n;
        let ctx = match &judge {
            Some(_) => {
                let inputs = if a.input.is_empty() {
                    recorded_inputs(path)?
                } else {
                    a.input.clone()
                };
                let c = contexts(&inputs)?;
                if let Some(p) = preds.iter().find(|p| !c.contains_key(&p.key)) {
                    bail!(
                        "{}: question {:?} is in none of the evaluation files {} (self-eval needs its context)",
                        path.display(),
                        p.key,
                        inputs
                            .iter()
                            .map(|i| i.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                c
            }
            None => HashMap::new(),
        };
        // Per question: the pick of each scorer.
        let mut picks: Vec<BTreeMap<String, usize>> = Vec::with_capacity(preds.len());
        let (mut unparsed, mut calls) = (0usize, 0usize);
        let bar = crate::progress::bar(preds.len() as u64, "questions");
        for p in preds {
            let at = || format!("{} (question {})", path.display(), p.key);
            let mut pick = BTreeMap::new();
            for (name, _, u) in &utilities {
                let m = u.matrix(&p.texts).with_context(at)?;
                pick.insert(name.clone(), if n == 1 { 0 } else { mbr_pick(&m, n)? });
            }
            if let Some(dec) = &judge {
                let j = Judge {
                    model: &dec.model,
                    text: &dec.text,
                    stop_ids: dec.stop_ids.clone(),
                    max_new_tokens: a.judge_max_new_tokens,
                };
                let (context, question) = &ctx[&p.key];
                let o = j.rate(context, question, &p.texts).with_context(at)?;
                unparsed += o.unparsed;
                calls += o.calls;
                pick.insert("self-eval".into(), mbr::select::first_argmax(&o.values).unwrap_or(0));
            }
            picks.push(pick);
            bar.inc(1);
        }
        bar.finish();
        let qs: Vec<Sampled> = preds.iter().map(|p| p.q.clone()).collect();
        let index: HashMap<(&str, &str), usize> = preds
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.q.task.as_str(), p.q.id.as_str()), i))
            .collect();
        let picked = |scorer: &str| {
            study::values_of(&qs, |q| {
                let c = picks[index[&(q.task.as_str(), q.id.as_str())]][scorer];
                f64::from(u8::from(q.samples[c]))
            })
        };
        let random = format!("random@{n}");
        let mut rows = vec![
            RowInput::new("greedy", study::values_of(&qs, |q| f64::from(u8::from(q.greedy)))).compared(),
            RowInput::new(random.clone(), study::values_of(&qs, study::random_value)),
        ];
        for (name, shown, _) in &utilities {
            rows.push(RowInput::new(format!("MBR@{n} {shown}"), picked(name)).compared());
        }
        if judge.is_some() {
            rows.push(RowInput::new(format!("self-eval@{n}"), picked("self-eval")).compared());
        }
        rows.push(
            RowInput::new(
                format!("oracle@{n}"),
                study::values_of(&qs, |q| study::oracle_at_k(q, n)),
            )
            .compared(),
        );
        let table = study::table(&rows, Some(random.as_str()), a.out.resamples, a.out.seed)?;
        let mut notes = vec![format!(
            "{} questions, N = {n}; random@{n} is the expected SubEM of a uniformly drawn sample (the mean of the \
             samples); every MBR picks the first argmax of its row means",
            preds.len()
        )];
        if judge.is_some() {
            notes.push(format!(
                "self-eval: the reference-free judge ({}) rated each sample 1..5 given the context; the first \
                 highest rating is picked; {unparsed} of {calls} replies held no rating (counted as 0)",
                a.model.model
            ));
        } else {
            notes.push("self-eval left out (--no-self-eval)".into());
        }
        parts.push(Part {
            label: label(path),
            table,
            notes,
        });
    }
    let s = Study {
        study: "scorers".into(),
        title: format!("Scorers at N = {n_all}"),
        settings: json!({
            "predictions": a.predictions, "embedder": a.embedder,
            "long_text": readings.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "self_eval": (!a.no_self_eval).then(|| json!({
                "model": a.model.model, "max_new_tokens": a.judge_max_new_tokens, "inputs": a.input,
            })),
            "seed": a.out.seed, "resamples": a.out.resamples,
        }),
        parts,
    };
    write_study(&a.out.out, &s)
}

/// `sealong eval`'s flags as clap parses them (its defaults and checks are its own).
#[derive(Debug, Parser)]
#[command(name = "eval")]
struct EvalLine {
    #[command(flatten)]
    args: EvalArgs,
}

fn run_prompts(a: PromptsArgs) -> Result<()> {
    if a.out.resamples == 0 {
        bail!("--resamples must be at least 1");
    }
    let strategies: Vec<Strategy> = if a.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        a.strategies
            .iter()
            .map(|s| s.trim().parse::<Strategy>())
            .collect::<sealong::Result<Vec<_>>>()?
    };
    for (i, s) in strategies.iter().enumerate() {
        if strategies[..i].contains(s) {
            bail!("--strategies names {} twice", s.name());
        }
    }
    if let Some(bad) = a.eval_args.iter().find(|f| {
        ["--strategy", "--out", "-o", "--input", "-i", "--n", "-n"].contains(&f.split('=').next().unwrap_or(""))
    }) {
        bail!("{bad} is set by `study prompts` itself; leave it out of the eval flags after --");
    }
    let mut rows = Vec::new();
    let mut first: Option<(String, study::Questions)> = None;
    for s in &strategies {
        let dir = a.out.out.join(s.name());
        let mut argv: Vec<String> = vec!["eval".into(), "--strategy".into(), s.name().into()];
        argv.extend(["--out".into(), dir.display().to_string(), "--input".into()]);
        argv.extend(a.input.iter().map(|p| p.display().to_string()));
        if let Some(l) = a.limit {
            argv.extend(["--limit".into(), l.to_string()]);
        }
        argv.extend(a.eval_args.iter().cloned());
        let line = EvalLine::try_parse_from(&argv).with_context(|| format!("the eval flags {:?}", &argv[1..]))?;
        errln!("strategy {}: sealong {}", s.name(), argv.join(" "));
        eval::run(line.args).with_context(|| format!("evaluating strategy {}", s.name()))?;
        let preds_path = dir.join("predictions.jsonl");
        let preds = read_predictions(&preds_path, false)?;
        let q = questions(&preds);
        match &first {
            None => first = Some((preds_path.display().to_string(), q)),
            Some((f, q0)) => study::same_questions(f, q0, &preds_path.display().to_string(), &q)?,
        }
        let qs: Vec<Sampled> = preds.into_iter().map(|p| p.q).collect();
        let row = RowInput::new(s.name(), study::values_of(&qs, |q| f64::from(u8::from(q.greedy))));
        rows.push(if *s == Strategy::PlanAndSolve {
            row
        } else {
            row.compared()
        });
    }
    let baseline = strategies
        .contains(&Strategy::PlanAndSolve)
        .then(|| Strategy::PlanAndSolve.name());
    let table = study::table(&rows, baseline, a.out.resamples, a.out.seed)?;
    let questions: usize = table.rows[0].cells.last().map_or(0, |c| c.questions);
    let mut notes = vec![format!(
        "greedy decoding, {questions} questions; each strategy's predictions in {}/<strategy>/",
        a.out.out.display()
    )];
    if baseline.is_none() {
        notes.push("plan_and_solve is not among the strategies: no paired comparisons".into());
    }
    let s = Study {
        study: "prompts".into(),
        title: "Answer strategies (greedy SubEM)".into(),
        settings: json!({
            "inputs": a.input, "strategies": strategies.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "limit": a.limit, "eval_args": a.eval_args, "seed": a.out.seed, "resamples": a.out.resamples,
        }),
        parts: vec![Part {
            label: "greedy SubEM per strategy".into(),
            table,
            notes,
        }],
    };
    write_study(&a.out.out, &s)
}

/// The predictions of one evaluation of a run directory, if it ran to its end (its metrics.json
/// is written last).
fn finished_eval(dir: &Path) -> Result<Option<Vec<Pred>>> {
    if !dir.join("metrics.json").is_file() {
        return Ok(None);
    }
    Ok(Some(read_predictions(&dir.join("predictions.jsonl"), false)?))
}

impl AsRef<Sampled> for Pred {
    fn as_ref(&self) -> &Sampled {
        &self.q
    }
}

fn row_of(name: &str, preds: &[Pred], f: impl Fn(&Pred) -> f64) -> RowInput {
    RowInput::new(name, study::values_of(preds, f))
}

/// `random@N` (baseline), greedy, MBR@N (the pick `eval` recorded) and oracle@N of one
/// evaluation with N samples; `None` without samples.
fn at_n_rows(preds: &[Pred]) -> Result<Option<(usize, Vec<RowInput>)>> {
    let Some(n) = preds.first().map(|p| p.q.samples.len()).filter(|&n| n > 0) else {
        return Ok(None);
    };
    if let Some(p) = preds.iter().find(|p| p.q.samples.len() != n) {
        bail!(
            "question {:?} has {} samples, others {n}: one N per evaluation",
            p.key,
            p.q.samples.len()
        );
    }
    let mut rows = vec![
        row_of(&format!("random@{n}"), preds, |p| study::random_value(&p.q)),
        row_of("greedy", preds, |p| f64::from(u8::from(p.q.greedy))).compared(),
    ];
    if n > 1 {
        if let Some(p) = preds.iter().find(|p| p.mbr_choice.is_none_or(|c| c >= n)) {
            bail!(
                "question {:?} has no MBR pick among its {n} samples (\"mbr_choice\")",
                p.key
            );
        }
        rows.push(
            row_of(&format!("MBR@{n}"), preds, |p| {
                f64::from(u8::from(p.q.samples[p.mbr_choice.unwrap_or(0)]))
            })
            .compared(),
        );
    }
    rows.push(row_of(&format!("oracle@{n}"), preds, |p| study::oracle_at_k(&p.q, n)).compared());
    Ok(Some((n, rows)))
}

fn run_round(a: RoundArgs) -> Result<()> {
    if a.out.resamples == 0 {
        bail!("--resamples must be at least 1");
    }
    let (resamples, seed) = (a.out.resamples, a.out.seed);
    let dir = &a.dir;
    let rounds = crate::commands::report::rounds_in(dir);
    let after_dir = |k: usize, short: bool| {
        crate::commands::report::round_dir(dir, k).join(if short { "eval/after_short" } else { "eval/after" })
    };
    let mut parts = Vec::new();
    let mut read = Vec::new();
    for short in [false, true] {
        let what = if short {
            "the short-context check"
        } else {
            "the long evaluation"
        };
        let before_dir = dir.join(if short { "eval/before_short" } else { "eval/before" });
        let Some(before) = finished_eval(&before_dir)? else {
            if !short {
                bail!(
                    "{}: no finished evaluation before training (metrics.json); is {} a `sealong run` directory?",
                    before_dir.display(),
                    dir.display()
                );
            }
            continue;
        };
        read.push(before_dir.display().to_string());
        let greedy = |p: &Pred| f64::from(u8::from(p.q.greedy));
        let mut rows = vec![row_of("before", &before, greedy)];
        let mut afters = Vec::new();
        for k in 1..=rounds {
            let d = after_dir(k, short);
            if let Some(after) = finished_eval(&d)? {
                read.push(d.display().to_string());
                let name = if rounds > 1 {
                    format!("after round {k}")
                } else {
                    "after".to_string()
                };
                rows.push(row_of(&name, &after, greedy).compared());
                afters.push((name, after));
            }
        }
        let mut notes = vec![format!("{}: greedy SubEM × 100 of the same questions", what)];
        if afters.is_empty() {
            notes.push("no evaluation after training has finished yet".into());
        }
        let label = if short {
            "Short-context check: greedy, before vs after training"
        } else {
            "Greedy, before vs after training"
        };
        parts.push(Part {
            label: label.into(),
            table: study::table(&rows, Some("before"), resamples, seed)
                .with_context(|| format!("{what}: before and after"))?,
            notes,
        });
        if short {
            continue;
        }
        for (name, preds) in
            std::iter::once(("before".to_string(), &before)).chain(afters.iter().map(|(n, p)| (n.clone(), p)))
        {
            if let Some((n, rows)) = at_n_rows(preds).with_context(|| format!("the evaluation {name} training"))? {
                parts.push(Part {
                    label: format!("At N = {n}, {name} training: MBR and oracle against random"),
                    table: study::table(&rows, Some(&format!("random@{n}")), resamples, seed)?,
                    notes: vec![format!(
                        "random@{n} is the expected SubEM of one of the {n} samples drawn at random; MBR@{n} the \
                         sample the run's scorer picked (eval's `mbr_choice`)"
                    )],
                });
            }
        }
    }
    let s = Study {
        study: "round".into(),
        title: format!("The measured effect of the run {}", dir.display()),
        settings: json!({"dir": dir, "rounds": rounds, "evaluations": read, "resamples": resamples, "seed": seed}),
        parts,
    };
    write_study(&a.out.out, &s)
}
