//! `sealong bench decode`: prefill and decode speed of the decoder on the same measurements the
//! llama.cpp peer script makes (bench/peers/llamacpp_decode.sh), best of `--runs`, printed as
//! one JSON object; with `--peer FILE` (that script's JSON line) also the ratios.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::args::BenchCommand;
use crate::commands::decode::LoadedDecoder;
use sealong::generate::{self, GenerateOptions, SamplingParams};

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Decode(a) => decode(a),
        BenchCommand::Embed(a) => crate::commands::bench_scoring::embed(a),
        BenchCommand::Mbr(a) => crate::commands::bench_scoring::mbr(a),
        BenchCommand::Rouge(a) => crate::commands::bench_scoring::rouge(a),
        BenchCommand::Train(a) => crate::commands::bench_train::train(a),
    }
}

pub use sealong::mem::peak_rss_mib;

pub(crate) fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The smallest of `runs` timings of `f` (seconds), and all of them.
pub(crate) fn best(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, Vec<f64>)> {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        all.push(f()?);
    }
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((min, all.iter().map(|t| (t * 1000.0).round() / 1000.0).collect()))
}

pub(crate) fn figure(value: f64, unit: &str, runs: Vec<f64>) -> Value {
    json!({"value": (value * 1e4).round() / 1e4, "unit": unit, "load1": load1(), "runs_s": runs})
}

fn decode(a: crate::args::BenchDecodeArgs) -> Result<()> {
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

pub(crate) fn rayon_threads() -> usize {
    sealong::generate::in_pool(sealong::quant::kernels::threads)
}

/// Built-in benchmark text when no --text is given: the shipped MuSiQue paragraphs.
pub(crate) fn default_text() -> Result<String> {
    let p = Path::new("data/musique/paragraphs.jsonl");
    let lines = sealong::data::records::read_paragraphs(p)
        .context("no --text given and data/musique/paragraphs.jsonl is not here (run from the repository root)")?;
    Ok(lines.into_iter().map(|l| l.value.text).collect::<Vec<_>>().join("\n"))
}

/// Prints ours / peer for every figure both have (tok/s: higher is better; s
/// and MiB: lower is better, so the ratio is peer / ours: above 1 means we are better either way).
pub(crate) fn print_ratios(ours: &Value, peer_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(peer_path).with_context(|| format!("reading {}", peer_path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line in the peer file")?;
    let peer: Value = serde_json::from_str(line).context("parsing the peer JSON")?;
    errln!(
        "{:<38} {:>12} {:>12} {:>9}",
        "figure",
        "sealong",
        peer["bench"].as_str().unwrap_or("peer"),
        "speedup"
    );
    let pf = &peer["figures"];
    for (name, f) in ours["figures"].as_object().into_iter().flatten() {
        let peer_name = if name == "samples_8x256_p4096_independent_s" {
            "samples_8x256_p4096_generate_s"
        } else {
            name
        };
        let (Some(a), Some(b)) = (f["value"].as_f64(), pf[peer_name]["value"].as_f64()) else {
            continue;
        };
        // Seconds and MiB: lower is better.
        let ratio = if f["unit"] == "s" || f["unit"] == "MiB" {
            b / a
        } else {
            a / b
        };
        errln!("{name:<38} {a:>12.2} {b:>12.2} {ratio:>8.2}x");
    }
    Ok(())
}
