//! `sealong bench decode`: prefill and decode speed of the decoder on the same measurements the
//! llama.cpp peer script makes (bench/peers/llamacpp_decode.sh), best of `--runs`, printed as
//! one JSON object; with `--peer FILE` (that script's JSON line) also the ratios.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::args::{DeviceArgs, ModelArgs};
use crate::commands::bench_common::{best, default_text, figure, peak_rss_mib, print_ratios, rayon_threads};
use crate::commands::bench_scoring::{BenchEmbedArgs, BenchMbrArgs, BenchRougeArgs};
use crate::decode::LoadedDecoder;
use sealong::generate::{self, GenerateOptions, SamplingParams};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Prefill tok/s at 1k and 4k, decode tok/s, N = 8 samples over a shared 4k prompt vs 8
    /// independent generations, peak memory.
    Decode(BenchDecodeArgs),
    /// Sentence embeddings/s (512 x 30 words, batch 32) and single-sentence latency.
    Embed(BenchEmbedArgs),
    /// Batched embedding MBR (scores + argmax) for questions x N x d random unit vectors.
    Mbr(BenchMbrArgs),
    /// ROUGE-L MBR seconds per question at N = 8 and 32 answers of 200 words.
    Rouge(BenchRougeArgs),
    /// One LoRA ORPO training step (512-token prompt, two 128-token responses) on the CPU.
    Train(crate::commands::bench_train::BenchTrainArgs),
}

#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Text to cut prompts from (default: the shipped MuSiQue paragraphs). The peer scripts
    /// use `python3 bench/peers/_peers.py > corpus.txt`.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the 8 independent generations (the slowest part).
    #[arg(long)]
    pub skip_independent: bool,
    /// Only load and one-stream decode (no prefill or sample figures): for models too large
    /// to time the 4k figures in reasonable time (the peer's `DECODE_ONLY=1`).
    #[arg(long)]
    pub decode_only: bool,
    /// A peer's JSON line (bench/peers/llamacpp_decode.sh output): print speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Decode(a) => decode(a),
        BenchCommand::Embed(a) => crate::commands::bench_scoring::embed(a),
        BenchCommand::Mbr(a) => crate::commands::bench_scoring::mbr(a),
        BenchCommand::Rouge(a) => crate::commands::bench_scoring::rouge(a),
        BenchCommand::Train(a) => crate::commands::bench_train::train(a),
    }
}

fn decode(a: BenchDecodeArgs) -> Result<()> {
    let t = Instant::now();
    let dec = LoadedDecoder::load(&a.model.model, &a.device)?;
    let load_s = t.elapsed().as_secs_f64();
    // VmRSS and VmHWM right after loading: what the weights hold, and the loader's peak.
    let (rss_load, peak_load) = (sealong::mem::rss_mib(), peak_rss_mib());
    let text = match &a.text {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => default_text()?,
    };
    // The peer cuts the corpus (repeated as needed) to exactly n tokens.
    let toks = dec.text.tokenizer.encode(&text, false)?;
    if toks.is_empty() {
        bail!("the benchmark text has no tokens");
    }
    let prompt = |n: usize| -> Vec<u32> { toks.iter().copied().cycle().take(n).collect() };
    let model = &dec.model;
    let mut figures = serde_json::Map::new();
    let runs = a.runs.max(1);
    let say = |name: &str, v: &Value| errln!("# {name} = {} {}", v["value"], v["unit"].as_str().unwrap_or(""));
    let f = figure(load_s, "s", vec![(load_s * 1000.0).round() / 1000.0]);
    say("load_s", &f);
    figures.insert("load_s".into(), f);
    figures.insert("rss_after_load_mib".into(), json!({"value": rss_load, "unit": "MiB"}));
    figures.insert(
        "peak_rss_during_load_mib".into(),
        json!({"value": peak_load, "unit": "MiB"}),
    );
    let prefill_lengths: &[usize] = if a.decode_only { &[] } else { &[1024, 4096] };
    for &n in prefill_lengths {
        let p = prompt(n);
        let (t, all) = best(runs, || {
            let t = Instant::now();
            generate::in_pool(|| generate::prefill(model, &p))?;
            Ok(t.elapsed().as_secs_f64())
        })?;
        let f = figure(n as f64 / t, "tok/s", all);
        say(&format!("prefill_{n}_tok_s"), &f);
        figures.insert(format!("prefill_{n}_tok_s"), f);
    }
    let no_stop = |sampling| GenerateOptions {
        sampling,
        max_new_tokens: 256,
        stop_ids: Vec::new(),
    };
    let greedy = no_stop(SamplingParams::greedy());
    let p64 = prompt(64);
    let (t, all) = best(runs, || {
        generate::in_pool(|| -> Result<f64> {
            let (cache, logits) = generate::prefill(model, &p64)?;
            let t = Instant::now();
            let mut rngs = vec![sealong::rng::for_item(0, "bench")];
            generate::decode(model, cache, logits, &greedy, &mut rngs, |_| {})?;
            Ok(t.elapsed().as_secs_f64())
        })
    })?;
    let f = figure(256.0 / t, "tok/s", all);
    say("decode_1x256_tok_s", &f);
    figures.insert("decode_1x256_tok_s".into(), f.clone());
    if !a.decode_only {
        let sampled = no_stop(SamplingParams {
            temperature: 0.7,
            top_p: 1.0,
            top_k: 0,
        });
        let p4k = prompt(4096);
        let rngs =
            |tag: &str| -> Vec<sealong::rng::Rng> { (0..8).map(|i| sealong::rng::for_item(1000 + i, tag)).collect() };
        let (t, all) = best(runs, || {
            let t = Instant::now();
            let mut r = rngs("batched");
            generate::generate(model, &p4k, &sampled, &mut r, |_| {})?;
            Ok(t.elapsed().as_secs_f64())
        })?;
        let batched = t;
        let f = figure(t, "s", all);
        say("samples_8x256_p4096_batched_s", &f);
        figures.insert("samples_8x256_p4096_batched_s".into(), f);
        if !a.skip_independent {
            // 8 independent generations: each prefills the prompt itself (one run; it is long).
            let t = Instant::now();
            for (i, mut r) in rngs("independent").into_iter().enumerate() {
                let _ = i;
                generate::generate(model, &p4k, &sampled, std::slice::from_mut(&mut r), |_| {})?;
            }
            let t = t.elapsed().as_secs_f64();
            let f = figure(t, "s", vec![(t * 1000.0).round() / 1000.0]);
            say("samples_8x256_p4096_independent_s", &f);
            figures.insert("samples_8x256_p4096_independent_s".into(), f);
            figures.insert(
                "shared_prefix_speedup".into(),
                json!({"value": (t / batched * 100.0).round() / 100.0, "unit": "x", "how": "independent_s / batched_s"}),
            );
        }
    }
    figures.insert("peak_rss_mib".into(), json!({"value": peak_rss_mib(), "unit": "MiB"}));
    let out = json!({
        "bench": "sealong_decode",
        "model": dec.path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "device": crate::device::describe(&dec.device),
        "precision": a.device.precision,
        "threads": rayon_threads(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "text_tokens": toks.len(),
        "kernel_isa": format!("{:?}", sealong::quant::kernels::isa()),
        "figures": figures,
    });
    if let Some(peer) = &a.peer {
        print_ratios(&out, peer)?;
    }
    outln!("{}", serde_json::to_string(&out)?)?;
    Ok(())
}
