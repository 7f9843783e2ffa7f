//! `sealong sample`: N answers per question (SEALONG stage 2), the prompt prefilled once and the
//! N streams decoded as one batch; one record per question, appended and flushed, resumable.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use sealong::data::jsonl::{self, Appender};
use sealong::data::records;
use sealong::generate::{self, GenerateOptions, SamplingParams};
use sealong::text::Strategy;
use serde_json::json;

use crate::args::SampleArgs;
use crate::commands::decode::LoadedDecoder;
use crate::progress;

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
    let mut questions = records::read_longbench(&args.input)?;
    if let Some(limit) = args.limit {
        questions.truncate(limit);
    }
    let done = jsonl::existing_ids(&args.out, "id")?;
    let todo: Vec<_> = questions.iter().filter(|l| !done.contains(&l.value.id)).collect();
    if !done.is_empty() {
        eprintln!(
            "resuming {}: {} of {} questions already sampled",
            args.out.display(),
            questions.len() - todo.len(),
            questions.len()
        );
    }
    if todo.is_empty() {
        return Ok(());
    }
    let dec = LoadedDecoder::load(&args.model.model, &args.device)?;
    let options = GenerateOptions {
        sampling,
        max_new_tokens: args.decode.max_new_tokens,
        stop_ids: dec.stop_ids.clone(),
    };
    let budget = dec.prompt_budget(args.decode.max_new_tokens);
    let mut out = Appender::open(&args.out)?;
    let bar = progress::bar(todo.len() as u64, "questions");
    let start = Instant::now();
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
        })?;
        let samples = res.iter().map(|c| dec.sample_record(c)).collect::<Result<Vec<_>>>()?;
        out.append(&json!({
            "id": q.id, "dataset": q.dataset, "question": q.input, "answers": q.answers,
            "prompt": prompt.user_message, "prompt_tokens": prompt.ids.len(),
            "truncated_tokens": prompt.truncated_tokens, "strategy": strategy.name(), "model": dec.name,
            "sampling": {"n": args.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                         "top_k": sampling.top_k, "max_new_tokens": args.decode.max_new_tokens, "seed": args.seed.seed},
            "samples": samples,
        }))?;
        bar.inc(1);
    }
    bar.finish();
    eprintln!(
        "wrote {} ({:.1} tok/s overall)",
        args.out.display(),
        tokens as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
