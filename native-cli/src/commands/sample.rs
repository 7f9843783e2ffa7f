//! `sealong sample`: N answers per question (SEALONG stage 2); one record per question,
//! appended and flushed in input order, resumable. Two backends write the same record:
//! - local: the prompt prefilled once and the N streams decoded as one batch;
//! - openai: an OpenAI-compatible server, `--concurrency` questions in flight (openai.rs).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use sealong::data::jsonl::{self, Appender, Line};
use sealong::data::records::{self, LongBenchRecord};
use sealong::generate::{self, GenerateOptions, SamplingParams};
use sealong::text::{Strategy, prompts};
use serde_json::{Value, json};

use crate::args::SampleArgs;
use crate::commands::decode::{LoadedDecoder, SampleText};
use crate::{openai, pool, progress};

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
        let answer = |l: &&Line<LongBenchRecord>, cancel: &_| -> Result<Answered> {
            let q = &l.value;
            let user_message = prompts::user_message(&q.context, &q.input, strategy);
            let what = format!("{}:{} (question {})", args.input.display(), l.line, q.id);
            let seed = openai::request_seed(args.seed.seed, &q.id);
            let got = client.complete(&user_message, args.n, remote, seed, &what, cancel)?;
            Ok(Answered {
                user_message,
                prompt_tokens: got.prompt_tokens,
                truncated_tokens: 0,
                samples: got.samples,
            })
        };
        pool::ordered(&todo, args.backend.concurrency, answer, |l, a| {
            out.append(&record(&l.value, &model, a))?;
            bar.inc(1);
            Ok(())
        })?;
        bar.finish();
        errln!(
            "wrote {} ({:.2} questions/s)",
            args.out.display(),
            todo.len() as f64 / start.elapsed().as_secs_f64()
        );
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
    bar.finish();
    errln!(
        "wrote {} ({:.1} tok/s overall)",
        args.out.display(),
        tokens as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
