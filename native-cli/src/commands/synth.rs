//! `sealong synth`: long-context questions in LongBench's schema from MuSiQue / HotpotQA / 2Wiki
//! records, appended record by record and resumed by id.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use sealong::data::jsonl::{self, Appender};
use sealong::data::records::{self, Paragraph};
use sealong::data::settings::Settings;
use sealong::data::synth::{self, PassageFormat, SourceQuestion, SynthConfig, Synthesizer, Target};
use sealong::loading::{ModelPath, TextAssets};
use serde_json::json;

use crate::args::{ModelArgs, SeedArgs};
use crate::progress;
use crate::provision;

/// Input dataset formats `synth` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceFormat {
    /// Detect from the first record.
    Auto,
    /// MuSiQue v1.0 (`paragraphs` with `is_supporting`).
    Musique,
    /// HotpotQA / 2WikiMultihopQA distractor format (`context`, `supporting_facts`).
    Multihop,
}

/// Passage layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PassageFormatArg {
    /// `Passage i:\n<text>` (SEALONG's training contexts).
    Sealong,
    /// `Passage i:\n<title>\n<text>` (LongBench's multi-document QA).
    Longbench,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Dataset records (e.g. data/musique/train.jsonl, data/hotpotqa/dev.jsonl).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Output questions file (JSONL, LongBench schema); appended to and resumed.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Format of --input.
    #[arg(long, value_enum, default_value_t = SourceFormat::Auto)]
    pub source: SourceFormat,
    /// Extra distractor paragraphs ({title, text} JSONL), used after a question's own ones.
    #[arg(long)]
    pub pool: Vec<PathBuf>,
    /// Model whose tokenizer counts tokens (default model name or path).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of questions (default: all answerable ones).
    #[arg(long, short = 'n')]
    pub n: Option<usize>,
    /// Leave out the first this many questions of the seeded order, then take `-n`: the next
    /// questions after an earlier file made with the same seed (`run`'s later rounds).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Smallest context target, in units of 1024 tokens.
    #[arg(long, default_value_t = 4)]
    pub min_k: u32,
    /// Largest context target, in units of 1024 tokens.
    #[arg(long, default_value_t = 31)]
    pub max_k: u32,
    /// No length target: each question keeps exactly its own paragraphs (LongBench-style eval).
    #[arg(long)]
    pub own_only: bool,
    /// How passages are written.
    #[arg(long, value_enum, default_value_t = PassageFormatArg::Sealong)]
    pub format: PassageFormatArg,
    /// Evaluation-file preset: --own-only --format longbench.
    #[arg(long)]
    pub eval: bool,
    /// Long evaluation files (with --eval): every question keeps its own paragraphs, padded with
    /// --pool passages to each of these lengths in the model's tokens (e.g. 4096,8192). One
    /// target writes --out; several write OUT-<tokens>.jsonl beside it.
    #[arg(long, value_delimiter = ',', requires = "eval")]
    pub target_tokens: Vec<usize>,
    /// Short evaluation files (with --eval): each question with only its supporting paragraphs
    /// (no distractors), the short-context check; the dataset is named `<dataset>-short`.
    /// Questions without a supporting paragraph are skipped.
    #[arg(long, requires = "eval", conflicts_with = "target_tokens")]
    pub supporting_only: bool,
    /// The `dataset` field of every record (default: musique, hotpotqa or 2wikimqa from the input).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Accept contexts shorter than the target when all paragraphs are used up.
    #[arg(long)]
    pub allow_short: bool,
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// Detects the input format from the first record's fields.
fn detect(path: &Path) -> Result<SourceFormat> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let lines = jsonl::parse_lines::<serde_json::Value>(&bytes, path)?;
    let first = lines
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: the file has no records", path.display()))?;
    let v = &first.value;
    if v.get("paragraphs").is_some() {
        Ok(SourceFormat::Musique)
    } else if v.get("context").is_some_and(serde_json::Value::is_array) {
        Ok(SourceFormat::Multihop)
    } else if v.get("context").is_some_and(serde_json::Value::is_string) {
        bail!(
            "{}:{}: this is already a LongBench-style file (string `context`); synth reads MuSiQue or HotpotQA/2Wiki records",
            path.display(),
            first.line
        )
    } else {
        bail!(
            "{}:{}: cannot tell the format (no `paragraphs` and no `context` list); pass --source",
            path.display(),
            first.line
        )
    }
}

/// The `dataset` name LongBench uses for a source file.
fn default_dataset(path: &Path, format: SourceFormat) -> String {
    let p = path.display().to_string().to_lowercase();
    match format {
        SourceFormat::Musique => "musique".into(),
        _ if p.contains("2wiki") => "2wikimqa".into(),
        _ => "hotpotqa".into(),
    }
}

pub fn run(args: SynthArgs) -> Result<()> {
    let format = match args.source {
        SourceFormat::Auto => detect(&args.input)?,
        f => f,
    };
    let questions: Vec<SourceQuestion> = match format {
        SourceFormat::Musique => {
            let recs = records::read_musique(&args.input)?;
            let total = recs.len();
            let qs: Vec<_> = recs
                .iter()
                .filter(|l| l.value.answerable)
                .map(|l| SourceQuestion::from_musique(&l.value))
                .collect();
            if qs.len() < total {
                errln!("skipping {} unanswerable MuSiQue records", total - qs.len());
            }
            qs
        }
        SourceFormat::Multihop => records::read_multihop(&args.input)?
            .iter()
            .map(|l| SourceQuestion::from_multihop(&l.value))
            .collect(),
        SourceFormat::Auto => unreachable!("detected above"),
    };
    let own_only = args.own_only || args.eval;
    let questions = if args.supporting_only {
        // The short-context check: only what answers the question, no distractor.
        let before = questions.len();
        let kept: Vec<_> = questions
            .into_iter()
            .filter(|q| !q.supporting.is_empty())
            .map(|q| SourceQuestion {
                distractors: Vec::new(),
                ..q
            })
            .collect();
        if kept.len() < before {
            errln!(
                "skipping {} questions without a supporting paragraph",
                before - kept.len()
            );
        }
        kept
    } else if own_only {
        questions
    } else {
        // As the official construction drops questions whose supporting documents are missing.
        let before = questions.len();
        let kept: Vec<_> = questions.into_iter().filter(|q| !q.supporting.is_empty()).collect();
        if kept.len() < before {
            errln!(
                "skipping {} questions without a supporting paragraph",
                before - kept.len()
            );
        }
        kept
    };
    if questions.is_empty() {
        bail!("{}: no usable questions", args.input.display());
    }
    synth::check_unique_ids(&questions).with_context(|| format!("in {}", args.input.display()))?;
    let mut pool: Vec<Paragraph> = Vec::new();
    for p in &args.pool {
        pool.extend(records::read_paragraphs(p)?.into_iter().map(|l| l.value));
    }
    let passage_format = if args.eval {
        PassageFormat::LongBench
    } else {
        match args.format {
            PassageFormatArg::Sealong => PassageFormat::Sealong,
            PassageFormatArg::Longbench => PassageFormat::LongBench,
        }
    };
    if !args.target_tokens.is_empty() {
        if args.pool.is_empty() {
            bail!(
                "--target-tokens pads each question's own paragraphs with passages from --pool: pass one \
                 (e.g. --pool data/musique/paragraphs.jsonl)"
            );
        }
        if let Some(t) = args.target_tokens.iter().find(|&&t| t == 0) {
            bail!("--target-tokens {t}: a target must be a positive number of tokens");
        }
    }
    let config = SynthConfig {
        target: if own_only {
            Target::Own
        } else {
            Target::Range {
                min_k: args.min_k,
                max_k: args.max_k,
            }
        },
        seed: args.seed.seed,
        format: passage_format,
        dataset: args.dataset.clone().unwrap_or_else(|| {
            let name = default_dataset(&args.input, format);
            if args.supporting_only {
                format!("{name}-short")
            } else {
                name
            }
        }),
        allow_short: args.allow_short,
    };
    let model_path = provision::resolve_model(&args.model.model)?;
    let assets = TextAssets::load(&ModelPath::detect(&model_path)?).context("loading the tokenizer")?;
    let available = questions.len();
    let mut selected = synth::select_questions(questions, args.seed.seed, args.n.map(|n| n + args.skip));
    if args.skip > 0 {
        if args.skip >= selected.len() {
            bail!(
                "{}: --skip {} leaves no question ({available} usable in the file)",
                args.input.display(),
                args.skip
            );
        }
        selected.drain(..args.skip);
    }
    let settings = record_settings(&args, format, &model_path)?;
    if args.target_tokens.is_empty() {
        let mut settings = settings;
        settings.insert("target".into(), target_setting(&config.target));
        let mut synth = Synthesizer::new(&assets.tokenizer, pool, config)?;
        return write(&mut synth, &selected, &args.out, &settings);
    }
    for &tokens in &args.target_tokens {
        let out = target_path(&args.out, tokens, args.target_tokens.len());
        let config = SynthConfig {
            target: Target::Tokens(tokens),
            ..config.clone()
        };
        let mut settings = settings.clone();
        settings.insert("target".into(), target_setting(&config.target));
        let mut synth = Synthesizer::new(&assets.tokenizer, pool.clone(), config)?;
        write(&mut synth, &selected, &out, &settings)?;
    }
    Ok(())
}

/// The settings that shape a built record (recorded beside each output, `resume::check`): the
/// source and pool files' contents (the selection and the padding draw from them), the seed,
/// the layout, the dataset name and the tokenizer's model files (lengths
/// are counted in its tokens); the target is added per output file. Left out: paths (a moved
/// file is the same file) and `-n` (the selection is a prefix of one seeded order, so a rerun
/// with a larger `-n` extends the file as one run would).
fn record_settings(args: &SynthArgs, format: SourceFormat, model_path: &Path) -> Result<Settings> {
    let mut pools = Vec::with_capacity(args.pool.len());
    for p in &args.pool {
        pools.push(sealong::loading::model_files::sha256_of(p)?);
    }
    Ok(crate::resume::settings([
        (
            "source_sha256",
            json!(sealong::loading::model_files::sha256_of(&args.input)?),
        ),
        ("source_format", json!(format!("{format:?}").to_lowercase())),
        ("pool_sha256", json!(pools)),
        ("seed", json!(args.seed.seed)),
        ("skip", json!(args.skip)),
        ("eval", json!(args.eval)),
        ("own_only", json!(args.own_only)),
        ("supporting_only", json!(args.supporting_only)),
        ("passage_format", json!(format!("{:?}", args.format).to_lowercase())),
        ("dataset", json!(args.dataset)),
        ("allow_short", json!(args.allow_short)),
        (
            "tokenizer_sha256",
            json!(sealong::loading::model_files::sha256_of(model_path)?),
        ),
    ]))
}

/// A length target as recorded: `"own"`, `{"min_k", "max_k"}` or `{"tokens"}`.
fn target_setting(target: &Target) -> serde_json::Value {
    match target {
        Target::Own => json!("own"),
        Target::Range { min_k, max_k } => json!({"min_k": min_k, "max_k": max_k}),
        Target::Tokens(t) => json!({"tokens": t}),
    }
}

/// Where the file for one of `count` token targets goes: `out` itself when there is one,
/// else `out` with `-<tokens>` before its extension.
pub fn target_path(out: &Path, tokens: usize, count: usize) -> std::path::PathBuf {
    if count == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match out.extension() {
        Some(ext) => format!("{stem}-{tokens}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{tokens}"),
    };
    out.with_file_name(name)
}

/// Builds every selected question not yet in `out` and appends it.
fn write(synth: &mut Synthesizer, selected: &[SourceQuestion], out_path: &Path, settings: &Settings) -> Result<()> {
    let done = jsonl::existing_ids(out_path, "_id")?;
    crate::resume::check(out_path, "synth", settings, !done.is_empty())?;
    let todo: Vec<&SourceQuestion> = selected.iter().filter(|q| !done.contains(&q.id)).collect();
    if !done.is_empty() {
        errln!(
            "resuming {}: {} of {} questions already written",
            out_path.display(),
            selected.len() - todo.len(),
            selected.len()
        );
    }
    let mut out = Appender::open(out_path)?;
    let bar = progress::bar(todo.len() as u64, "questions");
    let mut tokens = 0usize;
    for q in todo {
        let rec = synth.build(q)?;
        tokens += rec.num_tokens.unwrap_or(0);
        out.append(&rec)?;
        bar.set_message(format!("{tokens} context tokens"));
        bar.inc(1);
    }
    out.sync()?;
    bar.finish();
    errln!("wrote {} ({} questions)", out_path.display(), selected.len());
    Ok(())
}
