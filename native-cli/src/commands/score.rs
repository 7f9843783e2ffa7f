//! `sealong score`: MBR scoring of each question's N samples (SEALONG stage 3). Writes the
//! sample record plus `method`, `scores`, `chosen`, `rejected` (and `sub_em` per sample when
//! gold answers are present, for diagnostics only), optionally the preference pairs, and the
//! summary the reference prints (SubEM x 100 of oracle, random, average, MBR, chosen,
//! rejected), with how many answers were longer than the embedder's window (and cut, under
//! `--long-text truncate`) and how many pairs were left out because chosen and rejected are the
//! same text. Both outputs are appended record by record and resumed by id.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sealong::data::jsonl::{self, Appender};
use sealong::data::samples::{self, SampleSet};
use sealong::eval::sub_em;
use sealong::mbr::judge::{self, Judge};
use sealong::mbr::{self, Method, Selection, long_text, method};
use sealong::models::encoder::SentenceEmbedder;
use sealong::rng;
use serde_json::{Value, json};

use crate::args::{DeviceArgs, LongText, ScoreMethod, SeedArgs, long_text_parser, method_parser};
use crate::commands::subem::with_suffix;
use crate::decode::LoadedDecoder;
use crate::provision::{DEFAULT_DECODER, DEFAULT_EMBEDDER};
use crate::{progress, provision};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Samples JSONL (stage 2, from `sealong sample`).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Scored JSONL (stage 3); appended to and resumed.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Scoring method.
    #[arg(long, value_parser = method_parser(&ScoreMethod::ALL), default_value_t = ScoreMethod::Embedding)]
    pub method: ScoreMethod,
    /// Sentence embedder for --method embedding: a default name or a sentence-transformers directory.
    #[arg(long, default_value = DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// What MBR reads of an answer longer than the embedder's window (embedding, rouge-l and
    /// chrf; the text utilities have no window, so only answer-span changes what they compare).
    #[arg(long, value_parser = long_text_parser(), default_value_t = LongText::default())]
    pub long_text: LongText,
    /// Judge decoder for the self-eval methods: a default name or a path.
    #[arg(long, default_value = DEFAULT_DECODER)]
    pub judge: String,
    /// Most tokens of a reference-free judge's explanation and rating.
    #[arg(long, default_value_t = 256)]
    pub judge_max_new_tokens: usize,
    /// Also write preference pairs (SEALONG / TRL schema: prompt, chosen, rejected, messages).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Where to write the summary JSON (default: OUT with .summary.json in place of .jsonl).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// The loaded scorer of a run: the models a method needs (core's `mbr::method` ranks).
enum Scorer {
    /// The embedder, and the GPU device that runs the MBR kernel (`None`: the host's f64 path).
    Embedding(Box<SentenceEmbedder>, Option<burn::tensor::Device>),
    /// A pairwise text utility (ROUGE-L, chrF): no model.
    Text,
    Judge(Box<LoadedDecoder>),
    Random,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    if args.out == args.input || args.pairs.as_ref() == Some(&args.input) {
        bail!("--out and --pairs must differ from --input (the input would be overwritten)");
    }
    let sets = samples::read(&args.input)?;
    // Check every record before any work, so a bad line fails fast and writes nothing.
    for l in &sets {
        let n = l.value.texts.len();
        if n < 2 {
            bail!(
                "{}:{}: record {:?} has {n} sample(s); MBR needs at least 2 (sample with --n 2 or more)",
                args.input.display(),
                l.line,
                l.value.id
            );
        }
        if args.method == Method::SelfEval && l.value.context().is_none() {
            bail!(
                "{}:{}: record {:?}: self-eval needs the question and its context, but the prompt does not end \
                 with the record's \"question\"",
                args.input.display(),
                l.line,
                l.value.id
            );
        }
        if args.method == Method::RefSelfEval && l.value.question.is_none() {
            bail!(
                "{}:{}: record {:?} has no \"question\"",
                args.input.display(),
                l.line,
                l.value.id
            );
        }
    }
    let mut seen = HashSet::new();
    for l in &sets {
        if !seen.insert(l.value.id.clone()) {
            bail!("{}:{}: id {:?} appears twice", args.input.display(), l.line, l.value.id);
        }
    }
    // One pass over the scored file: the questions done, and those whose chosen and rejected
    // are the same text (no pair by design).
    let (scored_done, no_pair) = scored_state(&args.out)?;
    let pairs_done = match &args.pairs {
        Some(p) => jsonl::existing_ids(p, "id")?,
        None => HashSet::new(),
    };
    let settings = record_settings(&args)?;
    crate::resume::check(&args.out, "score", &settings, !scored_done.is_empty())?;
    if let Some(p) = &args.pairs {
        crate::resume::check(p, "score", &settings, !pairs_done.is_empty())?;
    }
    let todo: Vec<_> = sets
        .iter()
        .filter(|l| {
            let id = &l.value.id;
            !scored_done.contains(id) || (args.pairs.is_some() && !pairs_done.contains(id) && !no_pair.contains(id))
        })
        .collect();
    if !scored_done.is_empty() {
        errln!(
            "resuming {}: {} of {} questions already scored",
            args.out.display(),
            sets.len() - todo.len(),
            sets.len()
        );
    }
    if !todo.is_empty() {
        let scorer = load_scorer(&args)?;
        let mut out = Appender::open(&args.out)?;
        let mut pairs = args.pairs.as_ref().map(|p| Appender::open(p)).transpose()?;
        let bar = progress::bar(todo.len() as u64, "questions");
        for l in todo {
            let set = &l.value;
            let (sel, extra) = score_one(&scorer, set, &args)
                .with_context(|| format!("{}:{} (id {:?})", args.input.display(), l.line, set.id))?;
            let (chosen, rejected) = (&set.texts[sel.chosen], &set.texts[sel.rejected]);
            // Equal texts teach nothing (ORPO's odds ratio is 0): no pair, counted in the summary.
            if let Some(p) = pairs.as_mut()
                && !pairs_done.contains(&set.id)
                && chosen != rejected
            {
                p.append(&json!({
                    "id": set.id, "prompt": set.prompt, "chosen": chosen, "rejected": rejected,
                    "messages": [{"role": "user", "content": set.prompt}, {"role": "assistant", "content": chosen}],
                }))?;
            }
            if !scored_done.contains(&set.id) {
                let mut rec = set.raw.clone();
                rec.insert("method".into(), json!(args.method.name()));
                rec.insert("scores".into(), json!(sel.scores));
                rec.insert("chosen".into(), json!(sel.chosen));
                rec.insert("rejected".into(), json!(sel.rejected));
                rec.insert("rejected_pool".into(), json!(sel.rejected_pool));
                rec.insert("same_text".into(), json!(chosen == rejected));
                if !set.answers.is_empty() {
                    let sub: Vec<bool> = set.texts.iter().map(|t| sub_em(t, &set.answers)).collect();
                    rec.insert("sub_em".into(), json!(sub));
                }
                for (k, v) in extra {
                    rec.insert(k, v);
                }
                out.append(&Value::Object(rec))?;
            }
            bar.inc(1);
        }
        out.sync()?;
        if let Some(p) = &pairs {
            p.sync()?;
        }
        bar.finish();
    }
    let summary = summarize(&args.out, args.seed.seed)?;
    let summary_path = args
        .summary
        .clone()
        .unwrap_or_else(|| with_suffix(&args.out, ".summary.json"));
    sealong::files::write_atomic(
        &summary_path,
        (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
    )?;
    print_summary(&summary)?;
    errln!("wrote {} and {}", args.out.display(), summary_path.display());
    Ok(())
}

/// The settings that shape scored records and pairs (recorded beside both, `resume::check`):
/// the method, the seed (the rejected draw), and the model that judges: the embedder's files
/// for `embedding`, the judge's files, its token budget and arithmetic for the self-eval
/// methods. The device is left out (the engines are held to each other by the parity tests).
fn record_settings(args: &ScoreArgs) -> Result<sealong::data::settings::Settings> {
    let mut s = crate::resume::settings([("method", json!(args.method.name())), ("seed", json!(args.seed.seed))]);
    if args.method.needs_embedder() {
        s.insert(
            "embedder_sha256".into(),
            json!(crate::resume::model_sha256(&args.embedder)?),
        );
    }
    if args.method.compares_texts() {
        s.insert("long_text".into(), json!(args.long_text.name()));
    }
    if args.method.needs_judge() {
        s.insert("judge_sha256".into(), json!(crate::resume::model_sha256(&args.judge)?));
        s.insert("judge_max_new_tokens".into(), json!(args.judge_max_new_tokens));
        s.insert("precision".into(), json!(args.device.precision));
    }
    Ok(s)
}

fn load_scorer(args: &ScoreArgs) -> Result<Scorer> {
    Ok(if args.method.needs_embedder() {
        let (e, gpu) = load_embedder(&args.embedder, args.device.device)?;
        Scorer::Embedding(Box::new(e), gpu)
    } else if args.method.needs_judge() {
        Scorer::Judge(Box::new(LoadedDecoder::load(&args.judge, &args.device)?))
    } else if args.method == Method::Random {
        Scorer::Random
    } else {
        Scorer::Text
    })
}

/// The embedder on `choice`'s device, and that device when it is a GPU (the encoder's burn
/// twin and the MBR kernel run there; on the CPU the host engine and the f64 MBR path run).
fn load_embedder(
    name: &str,
    choice: crate::device::DeviceChoice,
) -> Result<(SentenceEmbedder, Option<burn::tensor::Device>)> {
    let dir = provision::resolve_model(name)?;
    let device = crate::device::select(choice)?;
    let gpu = (!sealong::nn::linear::is_host_cpu(&device)).then_some(device);
    let e = SentenceEmbedder::load_dir_on(&dir, gpu.as_ref())
        .with_context(|| format!("loading the embedder {}", dir.display()))?;
    Ok((e, gpu))
}

/// Scores one question: the selection and any extra fields for its record.
fn score_one(scorer: &Scorer, set: &SampleSet, args: &ScoreArgs) -> Result<(Selection, Vec<(String, Value)>)> {
    let n = set.texts.len();
    let mut rng = method::score_stream(args.seed.seed, &set.id);
    let mut extra = Vec::new();
    let sel = match scorer {
        Scorer::Embedding(e, gpu) => {
            let emb = long_text::embed(e, &set.texts, args.long_text)?;
            extra.push(("embedder".to_string(), json!(args.embedder)));
            extra.push(("long_text".to_string(), json!(args.long_text.name())));
            extra.push(("over_window".to_string(), json!(emb.over_window)));
            extra.push(("cut".to_string(), json!(emb.cut)));
            method::rank_embeddings(&emb.vectors, gpu.as_ref(), &mut rng)?.selection
        }
        Scorer::Text => {
            extra.push(("long_text".to_string(), json!(args.long_text.name())));
            method::rank_texts(args.method, &args.long_text.texts(&set.texts), &mut rng)?.selection
        }
        Scorer::Judge(dec) => {
            let j = Judge {
                model: &dec.model,
                text: &dec.text,
                stop_ids: dec.stop_ids.clone(),
                max_new_tokens: args.judge_max_new_tokens,
            };
            let question = set.question.as_deref().unwrap_or_default();
            let out = if args.method == Method::SelfEval {
                let ctx = judge::context_of(set.context(), &set.id)?;
                let o = j.rate(ctx, question, &set.texts)?;
                let sel = mbr::select(&o.values, &mut rng)?;
                (sel, o)
            } else {
                let o = j.same_answer_matrix(question, &set.texts)?;
                let sel = mbr::select_from_matrix(&o.values, n, &mut rng)?;
                (sel, o)
            };
            extra.push(("judge".to_string(), json!(args.judge)));
            extra.push(("judge_calls".to_string(), json!(out.1.calls)));
            extra.push(("judge_unparsed".to_string(), json!(out.1.unparsed)));
            out.0
        }
        Scorer::Random => mbr::select_random(n, &mut rng)?,
    };
    Ok((sel, extra))
}

/// The reference's diagnostics over the whole scored file (so a resumed run reports all of it):
/// SubEM x 100 of the best sample (oracle@N), a random sample, the mean over samples, the
/// MBR-selected (highest score) sample, chosen and rejected.
pub fn summarize(path: &Path, seed: u64) -> Result<Value> {
    let lines = jsonl::read::<Value>(path)?;
    let (mut n, mut with_gold) = (0usize, 0usize);
    let mut sums = [0.0f64; 6];
    let mut method = Value::Null;
    let (mut over_window, mut cut, mut same_text) = (0u64, 0u64, 0usize);
    for l in &lines {
        n += 1;
        let r = &l.value;
        method = r.get("method").cloned().unwrap_or(Value::Null);
        let count = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        over_window += count("over_window");
        cut += count("cut");
        same_text += usize::from(r.get("same_text").and_then(Value::as_bool) == Some(true));
        let Some(sub) = r.get("sub_em").and_then(Value::as_array) else {
            continue;
        };
        let sub: Vec<bool> = sub.iter().map(|v| v.as_bool().unwrap_or(false)).collect();
        let scores: Vec<f64> = r
            .get("scores")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let idx = |k: &str| r.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let (Some(chosen), Some(rejected)) = (idx("chosen"), idx("rejected")) else {
            bail!("{}:{}: scored record without chosen/rejected", path.display(), l.line);
        };
        if sub.is_empty() || chosen >= sub.len() || rejected >= sub.len() || scores.len() != sub.len() {
            bail!("{}:{}: scored record with inconsistent lengths", path.display(), l.line);
        }
        let id = jsonl::id_string(r, "id").unwrap_or_default();
        let mut rr = rng::for_item(seed, &format!("{id}#random"));
        let random = rand::RngExt::random_range(&mut rr, 0..sub.len());
        let mbr_pick = mbr::select::first_argmax(&scores).unwrap_or(0);
        let f = |b: bool| f64::from(u8::from(b));
        with_gold += 1;
        sums[0] += f(sub.iter().any(|&b| b));
        sums[1] += f(sub[random]);
        sums[2] += sub.iter().map(|&b| f(b)).sum::<f64>() / sub.len() as f64;
        sums[3] += f(sub[mbr_pick]);
        sums[4] += f(sub[chosen]);
        sums[5] += f(sub[rejected]);
    }
    let pct = |s: f64| {
        if with_gold == 0 {
            Value::Null
        } else {
            json!((s / with_gold as f64 * 100.0 * 100.0).round() / 100.0)
        }
    };
    Ok(json!({
        "method": method, "questions": n, "questions_with_gold": with_gold,
        "sub_em_max": pct(sums[0]), "sub_em_random": pct(sums[1]), "sub_em_average": pct(sums[2]),
        "sub_em_prediction": pct(sums[3]), "sub_em_chosen": pct(sums[4]), "sub_em_rejected": pct(sums[5]),
        "samples_over_window": over_window, "samples_cut": cut, "pairs_skipped_same_text": same_text,
    }))
}

/// The ids of scored records whose chosen and rejected are the same text (no pair written).
/// The ids of a scored file's complete records (as `jsonl::existing_ids` counts them), and those
/// of the records marked `same_text`, in one read.
fn scored_state(scored: &Path) -> Result<(HashSet<String>, HashSet<String>)> {
    let (mut done, mut same) = (HashSet::new(), HashSet::new());
    for l in jsonl::complete_records(scored)? {
        let id = jsonl::id_string(&l.value, "id")
            .ok_or_else(|| sealong::Error::record(scored, l.line, "record has no \"id\" field".to_string()))?;
        if l.value.get("same_text").and_then(Value::as_bool) == Some(true) {
            same.insert(id.clone());
        }
        done.insert(id);
    }
    Ok((done, same))
}

fn print_summary(s: &Value) -> Result<()> {
    outln!(
        "{} questions scored by {} ({} with gold answers)",
        s["questions"],
        s["method"],
        s["questions_with_gold"]
    )?;
    if s["questions_with_gold"].as_u64().unwrap_or(0) > 0 {
        outln!("SubEM x100:")?;
        for (k, label) in [
            ("sub_em_max", "oracle@N (best sample)"),
            ("sub_em_random", "random sample"),
            ("sub_em_average", "average over samples"),
            ("sub_em_prediction", "MBR-selected"),
            ("sub_em_chosen", "chosen"),
            ("sub_em_rejected", "rejected"),
        ] {
            outln!("  {label:<24} {}", s[k])?;
        }
    }
    let (over, cut) = (
        s["samples_over_window"].as_u64().unwrap_or(0),
        s["samples_cut"].as_u64().unwrap_or(0),
    );
    if cut > 0 {
        outln!("{cut} answers longer than the embedder's window were cut to it (--long-text truncate)")?;
    } else if over > 0 {
        outln!("{over} answers longer than the embedder's window were read whole (windowed)")?;
    }
    let same = s["pairs_skipped_same_text"].as_u64().unwrap_or(0);
    if same > 0 {
        outln!("{same} questions have no pair: their chosen and rejected answers are the same text")?;
    }
    Ok(())
}
