//! `sealong synth`: long-context questions in LongBench's schema from MuSiQue / HotpotQA / 2Wiki
//! records, appended record by record and resumed by id.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sealong::data::jsonl::{self, Appender};
use sealong::data::records::{self, Paragraph};
use sealong::data::synth::{self, PassageFormat, SourceQuestion, SynthConfig, Synthesizer, Target};
use sealong::loading::{ModelPath, TextAssets};

use crate::args::{PassageFormatArg, SourceFormat, SynthArgs};
use crate::progress;
use crate::provision;

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
    let selected = synth::select_questions(questions, args.seed.seed, args.n);
    if args.target_tokens.is_empty() {
        let mut synth = Synthesizer::new(&assets.tokenizer, pool, config)?;
        return write(&mut synth, &selected, &args.out);
    }
    for &tokens in &args.target_tokens {
        let out = target_path(&args.out, tokens, args.target_tokens.len());
        let config = SynthConfig {
            target: Target::Tokens(tokens),
            ..config.clone()
        };
        let mut synth = Synthesizer::new(&assets.tokenizer, pool.clone(), config)?;
        write(&mut synth, &selected, &out)?;
    }
    Ok(())
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
fn write(synth: &mut Synthesizer, selected: &[SourceQuestion], out_path: &Path) -> Result<()> {
    let done = jsonl::existing_ids(out_path, "_id")?;
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
