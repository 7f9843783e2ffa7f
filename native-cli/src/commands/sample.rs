//! `sealong sample`: N answers per question (SEALONG stage 2); one record per question,
//! appended and flushed in input order, resumable. Two backends write the same record:
//! - local: the prompt prefilled once and the N streams decoded as one batch;
//! - openai: an OpenAI-compatible server, `--concurrency` questions in flight (openai.rs).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use sealong::data::jsonl::{self, Appender, Line};
use sealong::data::records::{self, LongBenchRecord};
use sealong::generate::{self, GenerateOptions, SamplingParams};
use sealong::text::{Strategy, prompts};
use serde_json::{Value, json};

use crate::args::{DecodeArgs, DeviceArgs, ModelArgs, SeedArgs};
use crate::decode::{LoadedDecoder, SampleText};
use crate::openai::BackendArgs;
use crate::{openai, pool, progress};

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Questions (LongBench schema, e.g. from `sealong synth`).
    #[arg(long, short = 'i')]
    pub input: std::path::PathBuf,
    /// Samples JSONL; appended to and resumed (ids already written are skipped).
    #[arg(long, short = 'o')]
    pub out: std::path::PathBuf,
    /// Samples per question.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub n: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Only the first this many questions.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// What one question's record says beyond its samples.
struct Answered {
    user_message: String,
    prompt_tokens: Option<usize>,
    truncated_tokens: usize,
    samples: Vec<SampleText>,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let strategy: Strategy = args.decode.strategy.parse()?;
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.decode.top_p,
        top_k: args.decode.top_k,
    };
    sampling.validate()?;
    let client = args.backend.client(args.decode.top_k, args.decode.truncate_middle)?;
    let mut questions = records::read_longbench(&args.input)?;
    if let Some(limit) = args.limit {
        questions.truncate(limit);
    }
    let done = jsonl::existing_ids(&args.out, "id")?;
    crate::resume::check(&args.out, "sample", &record_settings(&args)?, !done.is_empty())?;
    let todo: Vec<_> = questions.iter().filter(|l| !done.contains(&l.value.id)).collect();
    if !done.is_empty() {
        errln!(
            "resuming {}: {} of {} questions already sampled",
            args.out.display(),
            questions.len() - todo.len(),
            questions.len()
        );
    }
    if todo.is_empty() {
        return Ok(());
    }
    let params = json!({"n": args.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                        "top_k": sampling.top_k, "max_new_tokens": args.decode.max_new_tokens, "seed": args.seed.seed});
    let record = |q: &LongBenchRecord, model: &str, a: Answered| -> Value {
        json!({
            "id": q.id, "dataset": q.dataset, "question": q.input, "answers": q.answers,
            "prompt": a.user_message, "prompt_tokens": a.prompt_tokens,
            "truncated_tokens": a.truncated_tokens, "strategy": strategy.name(), "model": model,
            "sampling": params, "samples": a.samples,
        })
    };
    let mut out = Appender::open(&args.out)?;
    let bar = progress::bar(todo.len() as u64, "questions");
    let start = Instant::now();

    if let Some(client) = client {
        let c = client.config();
        let model = c.model.clone();
        errln!(
            "sampling from {} (model {model:?}, {} requests in flight)",
            c.base_url,
            args.backend.concurrency
        );
        let remote = openai::Sampling {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            max_tokens: args.decode.max_new_tokens,
        };
        let mut failures = openai::Failures::start(failures_path(&args.out), args.backend.on_error)?;
        let answer = |l: &&Line<LongBenchRecord>, cancel: &_| {
            let q = &l.value;
            let user_message = prompts::user_message(&q.context, &q.input, strategy);
            let what = format!("{}:{} (question {})", args.input.display(), l.line, q.id);
            let seed = openai::request_seed(args.seed.seed, &q.id);
            openai::or_failed("sample", || {
                let got = client.complete(&user_message, args.n, remote, seed, &what, cancel)?;
                Ok(Answered {
                    user_message,
                    prompt_tokens: got.prompt_tokens,
                    truncated_tokens: 0,
                    samples: got.samples,
                })
            })
        };
        let outcome = pool::ordered(&todo, args.backend.concurrency, answer, |l, a| {
            match a {
                Ok(a) => out.append(&record(&l.value, &model, a))?,
                Err(f) => failures.record(&l.value.id, &format!("{}:{}", args.input.display(), l.line), &f)?,
            }
            bar.inc(1);
            Ok(())
        });
        out.sync()?;
        outcome?;
        failures.finish()?;
        bar.finish();
        errln!(
            "wrote {} ({:.2} questions/s)",
            args.out.display(),
            todo.len() as f64 / start.elapsed().as_secs_f64()
        );
        if failures.count > 0 {
            errln!(
                "{} of {} questions failed (rejected by the server), listed in {}; they are not in {} and a \
                 rerun retries them",
                failures.count,
                todo.len(),
                failures.path().display(),
                args.out.display()
            );
        }
        return Ok(());
    }

    let dec = LoadedDecoder::load(&args.model.model, &args.device)?;
    let options = GenerateOptions {
        sampling,
        max_new_tokens: args.decode.max_new_tokens,
        stop_ids: dec.stop_ids.clone(),
    };
    let budget = dec.prompt_budget(args.decode.max_new_tokens);
    let mut tokens = 0usize;
    for l in todo {
        let q = &l.value;
        let prompt = generate::prompt::build(&dec.text, q, strategy, budget, args.decode.truncate_middle)
            .with_context(|| format!("{}:{}", args.input.display(), l.line))?;
        let mut rngs: Vec<_> = (0..args.n)
            .map(|i| sealong::rng::for_item(args.seed.seed, &format!("{}#{i}", q.id)))
            .collect();
        let res = generate::generate(&dec.model, &prompt.ids, &options, &mut rngs, |k| {
            tokens += k;
            bar.set_message(format!("{:.1} tok/s", tokens as f64 / start.elapsed().as_secs_f64()));
        })
        .with_context(|| format!("{}:{} (id {:?})", args.input.display(), l.line, q.id))?;
        let samples = res.iter().map(|c| dec.sample_record(c)).collect::<Result<Vec<_>>>()?;
        let answered = Answered {
            user_message: prompt.user_message,
            prompt_tokens: Some(prompt.ids.len()),
            truncated_tokens: prompt.truncated_tokens,
            samples,
        };
        out.append(&record(q, &dec.name, answered))?;
        bar.inc(1);
    }
    out.sync()?;
    bar.finish();
    errln!(
        "wrote {} ({:.1} tok/s overall)",
        args.out.display(),
        tokens as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `OUT.failures.jsonl` (for `samples.jsonl`: `samples.failures.jsonl`).
pub fn failures_path(out: &std::path::Path) -> std::path::PathBuf {
    crate::commands::subem::with_suffix(out, ".failures.jsonl")
}

/// The settings that shape a sample record, recorded beside the output so that a resume with
/// other ones is refused (`resume::check`). Left out because they change no record: the device
/// (the CPU engine and the burn twin compute the same model, held to each other by the parity
/// tests, and moving a long run to another machine is a reason to resume), `--limit` (how many
/// questions, not how), and the remote transport (`--base-url`: a server restarted elsewhere
/// serves the same model; concurrency, timeouts, retries).
fn record_settings(args: &SampleArgs) -> Result<sealong::data::settings::Settings> {
    let mut s = crate::resume::settings([
        ("n", json!(args.n)),
        ("temperature", json!(args.temperature)),
        ("top_p", json!(args.decode.top_p)),
        ("top_k", json!(args.decode.top_k)),
        ("max_new_tokens", json!(args.decode.max_new_tokens)),
        ("strategy", json!(args.decode.strategy)),
        ("seed", json!(args.seed.seed)),
        ("truncate_middle", json!(args.decode.truncate_middle)),
        // Recorded on its own: each backend records its own model key, and a key one side
        // lacks is taken for a newer version's addition, not a difference.
        ("backend", json!(crate::openai::backend_name(args.backend.backend))),
    ]);
    match args.backend.backend {
        crate::openai::Backend::Local => {
            s.insert(
                "model_sha256".into(),
                json!(crate::resume::model_sha256(&args.model.model)?),
            );
            // int8 rounds activations: other numbers, other samples.
            s.insert("precision".into(), json!(args.device.precision));
        }
        crate::openai::Backend::Openai => {
            s.insert("api_model".into(), json!(args.backend.api_model));
        }
    }
    Ok(s)
}
