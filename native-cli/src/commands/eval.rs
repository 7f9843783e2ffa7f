//! `sealong eval`: the paper's evaluation. Greedy answers (temperature 0, 1,024 new tokens by
//! default) on evaluation files (LongBench, L-Eval, LongBench-v2 multiple choice, GSM8K; see
//! `sealong::data::evalfiles`) with each task's metric (SubEM; choice accuracy; GSM8K's numeric
//! final answer) per task and the unweighted average; with
//! `--n N`, also N samples per question and MBR@N (embedding MBR's pick), random@N and oracle@N
//! (with the oracle@k curve). Writes DIR/predictions.jsonl (one record per question, appended and
//! flushed, resumable) and DIR/metrics.json (the table, rewritten at the end).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use sealong::data::evalfiles::{self, AnswerKind, EvalFormat, EvalQuestion};
use sealong::data::jsonl::{self, Appender};
use sealong::eval::Metric;
use sealong::eval::tables::{self, Outcome};
use sealong::generate::{self, GenerateOptions, SamplingParams};
use sealong::mbr::{LongText, Method, long_text, method};
use sealong::models::encoder::SentenceEmbedder;
use sealong::text::Strategy;
use serde_json::{Value, json};

use crate::args::{DecodeArgs, DeviceArgs, ModelArgs, SeedArgs};
use crate::decode::{LoadedDecoder, SampleText};
use crate::openai::{Backend, BackendArgs};
use crate::{openai, pool, progress, provision};

#[derive(Debug, Args, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// A PEFT LoRA adapter directory merged into the model (e.g. `sealong train`'s DIR/adapter).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Evaluation files: LongBench-style (real LongBench, or `sealong synth --eval` output),
    /// L-Eval, LongBench-v2 multiple choice, or GSM8K JSONL (see --format). The task of a record
    /// is its `dataset` field (GSM8K: `gsm8k`), else the file's name (plus `-<K>k` for a long
    /// file's records; a LongBench-v2 `data.json`: `longbench-v2`).
    #[arg(long, short = 'i', num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// The files' format; `auto` detects it per file from the first record's fields.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Output directory (predictions.jsonl, metrics.json).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Samples per question for MBR@N, random@N and oracle@N (0: greedy only).
    #[arg(long, short = 'n', default_value_t = 0)]
    pub n: usize,
    /// Sampling temperature of the N samples.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// The utility of MBR@N.
    #[arg(long, value_parser = crate::args::method_parser(&EVAL_METHODS), default_value_t = Method::Embedding)]
    pub method: Method,
    /// Sentence embedder of MBR@N (--method embedding).
    #[arg(long, default_value = crate::provision::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// What MBR@N reads of a sample longer than the embedder's window (as `sealong score`).
    #[arg(long, value_parser = crate::args::long_text_parser(), default_value_t = LongText::default())]
    pub long_text: LongText,
    /// Only the first this many questions of each file.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// The MBR utilities of `eval --method`: the ones that need no judge decoder.
const EVAL_METHODS: [Method; 3] = [Method::Embedding, Method::RougeL, Method::Chrf];

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Auto,
    Longbench,
    Leval,
    #[value(name = "longbench-v2")]
    LongbenchV2,
    Gsm8k,
}

impl FormatArg {
    fn format(self) -> Option<EvalFormat> {
        match self {
            FormatArg::Auto => None,
            FormatArg::Longbench => Some(EvalFormat::LongBench),
            FormatArg::Leval => Some(EvalFormat::LEval),
            FormatArg::LongbenchV2 => Some(EvalFormat::LongBenchV2),
            FormatArg::Gsm8k => Some(EvalFormat::Gsm8k),
        }
    }
}

/// One question to evaluate.
struct Item {
    key: String,
    task: String,
    q: EvalQuestion,
    metric: Metric,
    source: String,
}

/// The metric of a kind of gold answer.
fn metric_of(kind: AnswerKind) -> Metric {
    match kind {
        AnswerKind::Text => Metric::SubEm,
        AnswerKind::Choice => Metric::Choice,
        AnswerKind::Number => Metric::Numeric,
    }
}

/// A record's task: its `dataset`, else the file's name (a LongBench-v2 `data.json`:
/// `longbench-v2`); a long evaluation file's records (`synth --eval --target-tokens`, which keep
/// LongBench's dataset names) add their length, so the same questions at 4k and 8k tokens are two
/// tasks (`hotpotqa-4k`, `hotpotqa-8k`).
pub fn task_of(q: &EvalQuestion, format: EvalFormat, path: &Path) -> String {
    let name = if q.dataset.is_empty() {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if format == EvalFormat::LongBenchV2 && stem == "data" {
            "longbench-v2".into()
        } else {
            stem
        }
    } else {
        q.dataset.clone()
    };
    match q.target_tokens {
        Some(t) if t % 1024 == 0 => format!("{name}-{}k", t / 1024),
        Some(t) => format!("{name}-{t}"),
        None => name,
    }
}

fn read_items(args: &EvalArgs) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in &args.input {
        let (format, mut questions) = evalfiles::read(path, args.format.format())?;
        if let Some(limit) = args.limit {
            questions.truncate(limit);
        }
        for (place, q) in questions {
            let source = place.label(path);
            // A gold answer that SubEM normalizes to nothing (an L-Eval letter "A", or "(B)")
            // would count every output as correct.
            if format == EvalFormat::LEval
                && let Some(g) = q.answers.iter().find(|g| sealong::eval::normalize(g).is_empty())
            {
                bail!(
                    "{source}: question {}: the output {g:?} is empty after SubEM's normalization (articles and \
                     punctuation removed), so every answer would match it",
                    q.id
                );
            }
            let task = task_of(&q, format, path);
            let key = format!("{task}/{}", q.id);
            if !seen.insert(key.clone()) {
                bail!("{source}: question {key:?} appears twice in the inputs");
            }
            items.push(Item {
                key,
                task,
                metric: metric_of(q.kind),
                q,
                source,
            });
        }
    }
    Ok(items)
}

/// The table of the predictions file (only the keys of this evaluation). Public for the fuzz
/// test (tests/tests/fuzz).
pub fn outcomes(path: &Path, keys: &std::collections::HashSet<String>) -> Result<Vec<Outcome>> {
    Ok(read_outcomes(path, keys)?.0)
}

/// [`outcomes`] and, in the same read, over the records of `keys`: the samples longer than the
/// embedder's window, and of those the ones MBR@N read only the beginning of (`over_window`,
/// `cut`; absent in text-utility records).
fn read_outcomes(path: &Path, keys: &std::collections::HashSet<String>) -> Result<(Vec<Outcome>, (u64, u64))> {
    let lines = jsonl::read::<Value>(path)?;
    let mut out = Vec::new();
    let (mut over, mut cut) = (0, 0);
    for l in lines {
        let v = l.value;
        if !v["key"].as_str().is_some_and(|k| keys.contains(k)) {
            continue;
        }
        over += v.get("over_window").and_then(Value::as_u64).unwrap_or(0);
        cut += v.get("cut").and_then(Value::as_u64).unwrap_or(0);
        let bools = |k: &str| -> Vec<bool> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(Value::as_bool).collect())
                .unwrap_or_default()
        };
        out.push(Outcome {
            task: v["task"].as_str().unwrap_or_default().to_string(),
            greedy: v["sub_em"].as_bool().unwrap_or(false),
            samples: bools("samples_sub_em"),
            mbr_choice: v["mbr_choice"].as_u64().map(|c| c as usize),
        });
    }
    Ok((out, (over, cut)))
}

/// One question's answers, from either backend.
struct Answered {
    greedy: SampleText,
    samples: Vec<SampleText>,
    prompt_tokens: Option<usize>,
    truncated_tokens: usize,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let strategy: Strategy = args.decode.strategy.parse()?;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.decode.top_p,
        top_k: args.decode.top_k,
    };
    if args.n > 0 {
        sampling.validate()?;
    }
    let client = args.backend.client(args.decode.top_k, args.decode.truncate_middle)?;
    if client.is_some() && args.adapter.is_some() {
        bail!("--adapter applies to the local model; with --backend openai, serve the merged model instead");
    }
    let items = read_items(&args)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let preds = args.out.join("predictions.jsonl");
    let done = jsonl::existing_ids(&preds, "key")?;
    crate::resume::check(&preds, "eval", &record_settings(&args)?, !done.is_empty())?;
    let todo: Vec<&Item> = items.iter().filter(|i| !done.contains(&i.key)).collect();
    if !done.is_empty() {
        errln!(
            "resuming {}: {} of {} questions already evaluated",
            preds.display(),
            items.len() - todo.len(),
            items.len()
        );
    }
    let failures_file = args.out.join("failures.jsonl");
    let mut failures = openai::Failures::start(failures_file.clone(), args.backend.on_error)?;
    if !todo.is_empty() {
        // The embedder runs on the host; with a GPU device the MBR kernel runs there.
        let embedder = if args.n > 1 && args.method.needs_embedder() {
            let dir = provision::resolve_model(&args.embedder)?;
            let e = SentenceEmbedder::load_dir_on(&dir, None).with_context(|| format!("loading {}", dir.display()))?;
            let device = crate::device::select(args.device.device)?;
            Some((e, (!sealong::nn::linear::is_host_cpu(&device)).then_some(device)))
        } else {
            None
        };
        let mut out = Appender::open(&preds)?;
        let bar = progress::bar(todo.len() as u64, "questions");
        // The record of one question (the MBR pick is made here, on the writing thread).
        let mut write = |item: &Item, a: Answered| -> Result<()> {
            let q = &item.q;
            let m = item.metric;
            // `sub_em` holds the task's metric (SubEM, choice accuracy or the numeric answer;
            // `metric` names it), so the tables read every task alike.
            let mut rec = json!({
                "key": item.key, "id": q.id, "task": item.task, "answers": q.answers,
                "prompt_tokens": a.prompt_tokens, "truncated_tokens": a.truncated_tokens,
                "prediction": a.greedy.text, "finish_reason": a.greedy.finish_reason,
                "sub_em": m.score(&a.greedy.text, &q.answers),
            });
            if m != Metric::SubEm {
                rec["metric"] = json!(q.kind.metric_name());
                rec["extracted"] = json!(m.extracted(&a.greedy.text));
            }
            if args.n > 0 {
                let texts: Vec<String> = a.samples.into_iter().map(|s| s.text).collect();
                rec["samples"] = json!(texts);
                rec["samples_sub_em"] = json!(texts.iter().map(|t| m.score(t, &q.answers)).collect::<Vec<_>>());
                let mut pick = method::eval_stream(args.seed.seed, &item.key);
                let (scores, choice) = match &embedder {
                    Some((e, gpu)) => {
                        let emb = long_text::embed(e, &texts, args.long_text)?;
                        rec["over_window"] = json!(emb.over_window);
                        rec["cut"] = json!(emb.cut);
                        let sel = method::rank_embeddings(&emb.vectors, gpu.as_ref(), &mut pick)?.selection;
                        (sel.scores, sel.chosen)
                    }
                    None if texts.len() > 1 => {
                        let sel = method::rank_texts(args.method, &args.long_text.texts(&texts), &mut pick)?.selection;
                        (sel.scores, sel.chosen)
                    }
                    // One sample is its own consensus.
                    None => (vec![1.0], 0),
                };
                rec["mbr_scores"] = json!(scores);
                rec["mbr_choice"] = json!(choice);
            }
            out.append(&rec)?;
            bar.inc(1);
            Ok(())
        };
        match client {
            Some(client) => {
                errln!(
                    "evaluating through {} (model {:?}, {} requests in flight)",
                    client.config().base_url,
                    client.config().model,
                    args.backend.concurrency
                );
                let greedy = openai::Sampling {
                    temperature: 0.0,
                    top_p: 1.0,
                    max_tokens: args.decode.max_new_tokens,
                };
                let sampled = openai::Sampling {
                    temperature: sampling.temperature,
                    top_p: sampling.top_p,
                    max_tokens: args.decode.max_new_tokens,
                };
                let answer = |item: &&Item, cancel: &_| -> Result<std::result::Result<Answered, openai::Failed>> {
                    let q = &item.q;
                    let msg = q.message(&q.context, strategy);
                    let what = format!("{} (question {})", item.source, item.key);
                    let seed = openai::request_seed(args.seed.seed, &item.key);
                    let mut g = match openai::or_failed("eval greedy", || {
                        client.complete(&msg, 1, greedy, seed, &what, cancel)
                    })? {
                        Ok(g) => g,
                        Err(f) => return Ok(Err(f)),
                    };
                    let samples = if args.n > 0 {
                        match openai::or_failed("eval samples", || {
                            client.complete(&msg, args.n, sampled, seed.wrapping_add(1 << 20), &what, cancel)
                        })? {
                            Ok(s) => s.samples,
                            Err(f) => return Ok(Err(f)),
                        }
                    } else {
                        Vec::new()
                    };
                    Ok(Ok(Answered {
                        greedy: g.samples.remove(0),
                        samples,
                        prompt_tokens: g.prompt_tokens,
                        truncated_tokens: 0,
                    }))
                };
                let outcome = pool::ordered(&todo, args.backend.concurrency, answer, |item, a| match a {
                    Ok(a) => write(item, a),
                    Err(f) => {
                        failures.record(&item.key, &item.source, &f)?;
                        bar.inc(1);
                        Ok(())
                    }
                });
                out.sync()?;
                outcome?;
            }
            None => {
                let dec = LoadedDecoder::load_with_adapter(&args.model.model, &args.device, args.adapter.as_deref())?;
                let greedy = GenerateOptions {
                    sampling: SamplingParams {
                        temperature: 0.0,
                        top_p: 1.0,
                        top_k: 0,
                    },
                    max_new_tokens: args.decode.max_new_tokens,
                    stop_ids: dec.stop_ids.clone(),
                };
                let sampled = GenerateOptions {
                    sampling,
                    ..greedy.clone()
                };
                let budget = dec.prompt_budget(args.decode.max_new_tokens);
                let start = Instant::now();
                let mut tokens = 0usize;
                for item in todo {
                    let q = &item.q;
                    let prompt = generate::prompt::build_with(
                        &dec.text,
                        &q.id,
                        &q.context,
                        |c| q.message(c, strategy),
                        budget,
                        args.decode.truncate_middle,
                    )
                    .with_context(|| item.source.clone())?;
                    // The greedy answer and the N samples share one prefill of the prompt.
                    let mut greedy_rng = vec![sealong::rng::for_item(args.seed.seed, &format!("{}#greedy", item.key))];
                    let mut rngs: Vec<_> = (0..args.n)
                        .map(|i| sealong::rng::for_item(args.seed.seed, &format!("{}#{i}", item.key)))
                        .collect();
                    let mut runs: Vec<(&GenerateOptions, &mut [sealong::rng::Rng])> = vec![(&greedy, &mut greedy_rng)];
                    if args.n > 0 {
                        runs.push((&sampled, &mut rngs));
                    }
                    let res = generate::generate_runs(&dec.model, &prompt.ids, &mut runs, |k| tokens += k)
                        .with_context(|| format!("{} (question {})", item.source, item.key))?;
                    let mut texts = res
                        .iter()
                        .map(|run| run.iter().map(|c| dec.sample_record(c)).collect::<Result<Vec<_>>>());
                    let greedy_text = texts.next().transpose()?.and_then(|mut v| v.pop());
                    let samples = texts.next().transpose()?.unwrap_or_default();
                    write(
                        item,
                        Answered {
                            greedy: greedy_text.context("no greedy answer")?,
                            samples,
                            prompt_tokens: Some(prompt.ids.len()),
                            truncated_tokens: prompt.truncated_tokens,
                        },
                    )?;
                    bar.set_message(format!("{:.1} tok/s", tokens as f64 / start.elapsed().as_secs_f64()));
                }
                out.sync()?;
            }
        }
        failures.finish()?;
        bar.finish();
    }
    if failures.count > 0 && failures.count == items.len() {
        bail!(
            "every question failed (rejected by the server); see {}",
            failures_file.display()
        );
    }

    let keys: std::collections::HashSet<String> = items.iter().map(|i| i.key.clone()).collect();
    let (outcomes, (over, cut)) = read_outcomes(&preds, &keys)?;
    let table = tables::table(&outcomes);
    let model = match args.backend.backend {
        Backend::Local => json!(args.model.model),
        Backend::Openai => json!({"base_url": args.backend.base_url, "api_model": args.backend.api_model}),
    };
    let mut metrics = json!({
        "model": model, "adapter": args.adapter, "strategy": strategy.name(),
        "n": args.n, "max_new_tokens": args.decode.max_new_tokens, "temperature": args.temperature,
        "seed": args.seed.seed, "inputs": args.input,
        "tasks": table.tasks, "average": table.average,
        // Questions the server rejected (`--on-error skip`): not in the table, listed in the file.
        "failed": failures.count,
        "failures": (failures.count > 0).then(|| failures_file.clone()),
    });
    // The MBR utility is written when it is not the default (default runs keep their bytes).
    if args.n > 1 && args.method != Method::Embedding {
        metrics["method"] = json!(args.method.name());
    }
    if args.n > 1 {
        // What MBR@N read of samples longer than the embedder's window: never cut silently.
        metrics["long_text"] = json!(args.long_text.name());
        metrics["samples_over_window"] = json!(over);
        metrics["samples_cut"] = json!(cut);
        if cut > 0 {
            errln!(
                "note: {cut} samples were longer than the embedder's window and MBR@N read only their beginning \
                 (--long-text truncate)"
            );
        }
    }
    let path = args.out.join("metrics.json");
    sealong::files::write_atomic(&path, (serde_json::to_string_pretty(&metrics)? + "\n").as_bytes())?;
    print_table(&table, args.n)?;
    if failures.count > 0 {
        errln!(
            "{} of {} questions failed (rejected by the server) and are left out of the table; listed in {}, \
             retried by a rerun",
            failures.count,
            items.len(),
            failures_file.display()
        );
    }
    errln!("wrote {} and {}", preds.display(), path.display());
    Ok(())
}

/// The settings that shape a prediction record (recorded beside predictions.jsonl,
/// `resume::check`): the model's files (or the server's model name), the adapter's files, the
/// prompt (strategy, truncation), the token budget, the arithmetic; with samples, their N,
/// temperature, top-p/k, seed and the MBR utility (its embedder). Left out: the device, `--limit`, the remote
/// transport (as in `sample`), and the sampling settings of a greedy-only run (unused).
fn record_settings(args: &EvalArgs) -> Result<sealong::data::settings::Settings> {
    let mut s = crate::resume::settings([
        ("strategy", json!(args.decode.strategy)),
        ("max_new_tokens", json!(args.decode.max_new_tokens)),
        ("truncate_middle", json!(args.decode.truncate_middle)),
        ("n", json!(args.n)),
        ("backend", json!(crate::openai::backend_name(args.backend.backend))),
    ]);
    match args.backend.backend {
        Backend::Local => {
            s.insert(
                "model_sha256".into(),
                json!(crate::resume::model_sha256(&args.model.model)?),
            );
            let adapter = match &args.adapter {
                Some(a) => Some(sealong::loading::model_files::sha256_of(a)?),
                None => None,
            };
            s.insert("adapter_sha256".into(), json!(adapter));
            s.insert("precision".into(), json!(args.device.precision));
        }
        Backend::Openai => {
            s.insert("api_model".into(), json!(args.backend.api_model));
        }
    }
    if args.n > 0 {
        s.insert("temperature".into(), json!(args.temperature));
        s.insert("top_p".into(), json!(args.decode.top_p));
        s.insert("top_k".into(), json!(args.decode.top_k));
        s.insert("seed".into(), json!(args.seed.seed));
    }
    if args.n > 1 {
        // The MBR utility: the embedder's files for the default (the key older outputs have),
        // null plus the method's name for a text utility, so a rerun with another method
        // differs in `embedder_sha256` or `method` whichever came first and is refused.
        let embedder = if args.method.needs_embedder() {
            Some(crate::resume::model_sha256(&args.embedder)?)
        } else {
            None
        };
        s.insert("embedder_sha256".into(), json!(embedder));
        if args.method != Method::Embedding {
            s.insert("method".into(), json!(args.method.name()));
        }
        s.insert("long_text".into(), json!(args.long_text.name()));
    }
    Ok(s)
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The table as the paper prints it (SubEM x 100).
pub fn print_table(t: &tables::Table, n: usize) -> Result<()> {
    if n > 0 {
        outln!(
            "{:<16} {:>5} {:>7} {:>7} {:>9} {:>9}",
            "task",
            "n_q",
            "greedy",
            format!("MBR@{n}"),
            format!("random@{n}"),
            format!("oracle@{n}")
        )?;
    } else {
        outln!("{:<16} {:>5} {:>7}", "task", "n_q", "greedy")?;
    }
    let line = |name: &str, q: String, r: &tables::Row| -> Result<()> {
        if n > 0 {
            outln!(
                "{name:<16} {q:>5} {:>7.1} {:>7} {:>9} {:>9}",
                r.greedy,
                fmt(r.mbr),
                fmt(r.random),
                fmt(r.oracle)
            )?;
        } else {
            outln!("{name:<16} {q:>5} {:>7.1}", r.greedy)?;
        }
        Ok(())
    };
    for t in &t.tasks {
        line(&t.task, t.questions.to_string(), &t.row)?;
    }
    line("average", String::new(), &t.average)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &str) -> EvalQuestion {
        let (_, mut qs) = evalfiles::read_bytes(line.as_bytes(), Path::new("t.jsonl"), None).expect("record");
        qs.remove(0).1
    }

    #[test]
    fn a_long_files_records_are_their_own_task() {
        let lb = EvalFormat::LongBench;
        let base = r#"{"_id": "a", "input": "q", "context": "c", "answers": ["x"]"#;
        let p = Path::new("dir/hotpot.jsonl");
        assert_eq!(
            task_of(&record(&format!(r#"{base}, "dataset": "hotpotqa"}}"#)), lb, p),
            "hotpotqa"
        );
        assert_eq!(task_of(&record(&format!("{base}}}")), lb, p), "hotpot");
        assert_eq!(
            task_of(
                &record(&format!(r#"{base}, "dataset": "hotpotqa", "target_tokens": 8192}}"#)),
                lb,
                p
            ),
            "hotpotqa-8k"
        );
        assert_eq!(
            task_of(
                &record(&format!(r#"{base}, "dataset": "hotpotqa", "target_tokens": 5000}}"#)),
                lb,
                p
            ),
            "hotpotqa-5000"
        );
    }

    #[test]
    fn other_formats_name_their_tasks() {
        let v2 = r#"{"_id":"x","question":"q","choice_A":"1","choice_B":"2","choice_C":"3","choice_D":"4","answer":"A","context":"c"}"#;
        let v2q = record(v2);
        assert_eq!(
            task_of(&v2q, EvalFormat::LongBenchV2, Path::new("lb2/data.json")),
            "longbench-v2"
        );
        assert_eq!(
            task_of(&v2q, EvalFormat::LongBenchV2, Path::new("lb2/hard.jsonl")),
            "hard"
        );
        let g = record("{\"question\":\"q\",\"answer\":\"#### 3\"}");
        assert_eq!(
            task_of(&g, EvalFormat::Gsm8k, Path::new("data/gsm8k/test.jsonl")),
            "gsm8k"
        );
        let l = record(r#"{"instructions":["q"],"outputs":["True"],"input":"doc"}"#);
        assert_eq!(
            task_of(&l, EvalFormat::LEval, Path::new("leval/sci_fi.jsonl")),
            "sci_fi"
        );
    }
}
