//! What the `sealong bench` commands share: best-of-runs timing, the figure record, the load
//! average beside each figure, the default text, and the ratios against a peer's JSON line.
//! Imported by `bench.rs`, `bench_scoring.rs` and `bench_train.rs`; it imports none of them.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

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
