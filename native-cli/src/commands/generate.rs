//! `sealong generate`: one answer for a prompt, or for each question of a file (greedy unless
//! --temperature is set).

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use sealong::data::jsonl::{self, Appender};
use sealong::data::records;
use sealong::generate::{self, GenerateOptions, SamplingParams};
use sealong::text::Strategy;
use serde_json::json;

use crate::args::{DecodeArgs, DeviceArgs, ModelArgs, SeedArgs};
use crate::decode::LoadedDecoder;
use crate::progress;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// A user message (rendered with the model's chat template).
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    pub prompt: Option<String>,
    /// Questions (LongBench schema); writes one prediction per question to --out.
    #[arg(long, short = 'i')]
    pub input: Option<std::path::PathBuf>,
    /// Predictions JSONL (with --input); appended to and resumed.
    #[arg(long, short = 'o', requires = "input")]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[command(flatten)]
    pub seed: SeedArgs,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), merged
    /// into the model's weights at load.
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
    /// Debug: write the prompt's ids, the logits after its last token and the generated ids to
    /// this JSON file (for comparisons with other implementations, bench/peers/check_export.py).
    #[arg(long, hide = true, requires = "prompt")]
    pub dump_logits: Option<std::path::PathBuf>,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let strategy: Strategy = args.decode.strategy.parse()?;
    let dec = LoadedDecoder::load_with_adapter(&args.model.model, &args.device, args.adapter.as_deref())?;
    let options = GenerateOptions {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.decode.top_p,
            top_k: args.decode.top_k,
        },
        max_new_tokens: args.decode.max_new_tokens,
        stop_ids: dec.stop_ids.clone(),
    };
    if let Some(prompt) = &args.prompt {
        let (_, ids) = dec.text.chat_prompt(prompt)?;
        let mut rngs = vec![sealong::rng::for_item(args.seed.seed, "prompt")];
        let t = Instant::now();
        let out = generate::generate(&dec.model, &ids, &options, &mut rngs, |_| {})?;
        if let Some(path) = &args.dump_logits {
            let (_, logits) = generate::in_pool(|| generate::prefill(&dec.model, &ids))?;
            let dump = json!({
                "model": dec.name, "adapter": args.adapter, "engine": dec.model.name(),
                "prompt_ids": ids, "last_logits": logits, "generated_ids": out[0].ids,
            });
            sealong::files::write_atomic(path, &serde_json::to_vec(&dump)?)?;
        }
        let s = dec.sample_record(&out[0])?;
        outln!("{}", s.text)?;
        let new_tokens = out[0].ids.len();
        errln!(
            "({} prompt tokens, {new_tokens} new tokens, {:?}, {:.1} tok/s)",
            ids.len(),
            s.finish_reason,
            new_tokens as f64 / t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let input = args.input.as_ref().context("pass --prompt or --input")?;
    let out_path = args.out.clone().context("--input needs --out")?;
    let questions = records::read_longbench(input)?;
    let done = jsonl::existing_ids(&out_path, "_id")?;
    crate::resume::check(&out_path, "generate", &record_settings(&args)?, !done.is_empty())?;
    let todo: Vec<_> = questions.iter().filter(|l| !done.contains(&l.value.id)).collect();
    let mut out = Appender::open(&out_path)?;
    let bar = progress::bar(todo.len() as u64, "questions");
    let budget = dec.prompt_budget(args.decode.max_new_tokens);
    let start = Instant::now();
    let mut tokens = 0usize;
    for l in todo {
        let q = &l.value;
        let prompt = generate::prompt::build(&dec.text, q, strategy, budget, args.decode.truncate_middle)
            .with_context(|| format!("{}:{}", input.display(), l.line))?;
        let mut rngs = vec![sealong::rng::for_item(args.seed.seed, &q.id)];
        let res = generate::generate(&dec.model, &prompt.ids, &options, &mut rngs, |k| {
            tokens += k;
        })
        .with_context(|| format!("{}:{} (id {:?})", input.display(), l.line, q.id))?;
        let s = dec.sample_record(&res[0])?;
        let mut record = json!({
            "_id": q.id, "dataset": q.dataset, "input": q.input, "answers": q.answers,
            "prediction": s.text, "num_tokens": s.num_tokens, "finish_reason": s.finish_reason,
            "prompt_tokens": prompt.ids.len(), "truncated_tokens": prompt.truncated_tokens,
            "strategy": strategy.name(), "model": dec.name,
        });
        if let Some(a) = &args.adapter {
            record["adapter"] = json!(a);
        }
        out.append(&record)?;
        bar.set_message(format!("{:.1} tok/s", tokens as f64 / start.elapsed().as_secs_f64()));
        bar.inc(1);
    }
    out.sync()?;
    bar.finish();
    errln!("wrote {}", out_path.display());
    Ok(())
}

/// The settings that shape a generated record (recorded beside `--out`, `resume::check`): the
/// model's and the adapter's files, the prompt (strategy, truncation), the token budget, the
/// sampling settings and seed, and the arithmetic. Left out: the device (as in `sample`) and
/// `--dump-logits` (prompt mode only).
fn record_settings(args: &GenerateArgs) -> Result<sealong::data::settings::Settings> {
    let adapter = match &args.adapter {
        Some(a) => Some(sealong::loading::model_files::sha256_of(a)?),
        None => None,
    };
    Ok(crate::resume::settings([
        ("model_sha256", json!(crate::resume::model_sha256(&args.model.model)?)),
        ("adapter_sha256", json!(adapter)),
        ("strategy", json!(args.decode.strategy)),
        ("max_new_tokens", json!(args.decode.max_new_tokens)),
        ("truncate_middle", json!(args.decode.truncate_middle)),
        ("temperature", json!(args.temperature)),
        ("top_p", json!(args.decode.top_p)),
        ("top_k", json!(args.decode.top_k)),
        ("seed", json!(args.seed.seed)),
        ("precision", json!(args.device.precision)),
    ]))
}
