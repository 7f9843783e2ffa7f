//! `sealong bench embed|mbr|rouge`: the scoring side's speed on the same inputs the peer scripts
//! use (bench/peers/st_embed.sh, bench/peers/rouge_mbr.py), each printed as one JSON object;
//! with `--peer FILE` (that script's JSON line) also the ratios, printed and put in the JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::RngExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::commands::bench_common::{best, default_text, figure, load1, peak_rss_mib, rayon_threads};
use crate::device::DeviceChoice;
use sealong::text::pystr;

#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// Sentence embedder: a default model's name or a sentence-transformers directory.
    #[arg(long, default_value = crate::provision::DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Text to cut the sentences from (default: the shipped MuSiQue paragraphs). The peer uses
    /// `python3 bench/peers/_peers.py > corpus.txt`.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Timed runs of the 512 sentences; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The peer's JSON line (bench/peers/st_embed.sh output): print and record speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchMbrArgs {
    /// Questions per batch.
    #[arg(long, default_value_t = 1000)]
    pub questions: usize,
    /// Answers per question.
    #[arg(long, short = 'n', default_value_t = 32)]
    pub n: usize,
    /// Embedding width (d = 384 is measured as well).
    #[arg(long, default_value_t = 1024)]
    pub dim: usize,
    /// Runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the GPU kernel runs besides the CPU path (a GPU device adds a `gpu` figure).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Seed of the random unit vectors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The peer's JSON line (bench/peers/rouge_mbr.py output): print and record speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchRougeArgs {
    /// Text to draw the answers from (default: the shipped MuSiQue paragraphs). The peer uses
    /// `python3 bench/peers/_peers.py > corpus.txt`.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Runs per figure; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The peer's JSON line (bench/peers/rouge_mbr.py output): print and record speed ratios.
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

/// One line of a figure on stderr, as the peers print theirs.
fn say(name: &str, v: &Value) {
    errln!(
        "# {name} = {} {} (load1 {:.2})",
        v["value"],
        v["unit"].as_str().unwrap_or(""),
        load1()
    );
}

/// The smallest of `runs` timings of `f` (seconds) and all of them, unrounded (the figures here
/// are milliseconds and below, where [`best`]'s rounding to 1 ms would erase them).
fn best_exact(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, Vec<f64>)> {
    let all = (0..runs).map(|_| f()).collect::<Result<Vec<f64>>>()?;
    Ok((all.iter().copied().fold(f64::INFINITY, f64::min), all))
}

/// `v` to 4 significant digits.
fn sig4(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let p = 10f64.powi(3 - v.abs().log10().floor() as i32);
    (v * p).round() / p
}

/// A figure in `unit` whose runs are given in the same unit (`runs`, not `runs_s`).
fn figure_in(value: f64, unit: &str, runs: &[f64]) -> Value {
    json!({"value": sig4(value), "unit": unit, "load1": load1(), "runs": runs.iter().map(|&r| sig4(r)).collect::<Vec<_>>()})
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// The benchmark text: `--text FILE` (the peers' corpus: `python3 bench/peers/_peers.py`), else
/// the shipped MuSiQue paragraphs; and its `text_id` as the peers compute it (sha256 of the
/// corpus, the one newline `print` adds removed, first 12 hex digits).
fn read_text(path: Option<&Path>) -> Result<(String, String)> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => default_text()?,
    };
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let digest = Sha256::digest(body.as_bytes());
    let id: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok((text, id))
}

/// Python's `str.split()` of the text: the peers' `words()`.
fn words(text: &str) -> Vec<&str> {
    pystr::split_whitespace(text).collect()
}

/// `_peers.chunks(n_words, count)`: `count` consecutive `n_words`-word pieces of the words,
/// wrapping around at the end.
fn chunks(words: &[&str], n_words: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            (0..n_words)
                .map(|j| words[(i * n_words + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The peer's JSON object: the last line of the file that starts with `{`.
fn read_peer(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON line in the peer file {}", path.display()))?;
    serde_json::from_str(line).with_context(|| format!("parsing the peer JSON in {}", path.display()))
}

/// Ratios of our figures to the peer's, one row per `(label, our figure, peer figure name)`.
/// Rates (higher is better) give ours / peer, times (`s`, `ms`: lower is better) peer / ours, so
/// above 1 means sealong is faster either way; ms and s are converted. Prints a table to stderr
/// and returns `{label: {ours, peer, peer_figure, ratio, ...}}`.
fn ratios(rows: &[(String, Value, String)], peer: &Value) -> Value {
    let pf = &peer["figures"];
    let mut out = Map::new();
    errln!(
        "{:<44} {:>12} {:>12} {:>9}  peer figure ({})",
        "figure",
        "sealong",
        "peer",
        "speedup",
        peer["bench"].as_str().unwrap_or("peer")
    );
    let unit = |v: &Value| v["unit"].as_str().unwrap_or("").to_string();
    let to_s = |u: &str| match u {
        "s" => Some(1.0),
        "ms" => Some(1e-3),
        _ => None,
    };
    for (label, f, peer_name) in rows {
        let p = &pf[peer_name.as_str()];
        let (Some(a), Some(b)) = (f["value"].as_f64(), p["value"].as_f64()) else {
            continue;
        };
        let (ua, ub) = (unit(f), unit(p));
        let ratio = match (to_s(&ua), to_s(&ub)) {
            (Some(sa), Some(sb)) => (b * sb) / (a * sa),
            (None, None) if ua == ub => a / b,
            _ => continue,
        };
        errln!("{label:<44} {a:>12.4} {b:>12.4} {ratio:>8.2}x  {peer_name}");
        out.insert(
            label.clone(),
            json!({
                "ours": a, "ours_unit": ua, "peer": b, "peer_unit": ub, "peer_figure": peer_name,
                "peer_load1": p["load1"], "ratio": round(ratio, 3),
                "how": if to_s(&ua).is_some() { "peer time / our time" } else { "our rate / peer rate" },
            }),
        );
    }
    Value::Object(out)
}

/// Rows for [`ratios`] comparing each of `names` with the peer figure of the same name.
fn same_names(out: &Value, names: &[&str]) -> Vec<(String, Value, String)> {
    names
        .iter()
        .filter_map(|n| {
            out["figures"]
                .get(*n)
                .map(|f| (n.to_string(), f.clone(), n.to_string()))
        })
        .collect()
}

/// Adds `peer` (bench, text_id, load averages) and `vs_peer` (the ratios) to the output.
fn add_peer(out: &mut Value, peer_path: &Path, names: &[&str]) -> Result<()> {
    let peer = read_peer(peer_path)?;
    let r = ratios(&same_names(out, names), &peer);
    let same_text = peer["text_id"].as_str().map(|id| Some(id) == out["text_id"].as_str());
    if same_text == Some(false) {
        errln!(
            "sealong: warning: the peer ran on another text (text_id {} vs ours {})",
            peer["text_id"],
            out["text_id"]
        );
    }
    out["peer"] = json!({
        "file": peer_path.display().to_string(),
        "bench": peer["bench"],
        "text_id": peer["text_id"],
        "same_text": same_text,
        "loadavg_start": peer["loadavg_start"],
        "loadavg_end": peer["loadavg_end"],
    });
    out["vs_peer"] = r;
    Ok(())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn embed(a: BenchEmbedArgs) -> Result<()> {
    let load1_start = load1();
    let dir = crate::provision::resolve_model(&a.embedder)?;
    let t = Instant::now();
    let emb = sealong::models::encoder::SentenceEmbedder::load_dir(&dir)?;
    let load_s = t.elapsed().as_secs_f64();
    let (text, text_id) = read_text(a.text.as_deref())?;
    let w = words(&text);
    if w.is_empty() {
        bail!("the benchmark text has no words");
    }
    // st_embed.sh: sents = chunks(30, 512); model.encode(sents, batch_size=32).
    let sents = chunks(&w, 30, 512);
    let refs: Vec<&str> = sents.iter().map(String::as_str).collect();
    let tokens: usize = refs
        .iter()
        .map(|s| emb.tokenize(s).map(|t| t.len()))
        .sum::<sealong::Result<usize>>()?;
    let encode_all = || -> Result<f64> {
        let t = Instant::now();
        for batch in refs.chunks(32) {
            std::hint::black_box(emb.embed(batch)?);
        }
        Ok(t.elapsed().as_secs_f64())
    };
    encode_all()?; // warm-up
    let runs = a.runs.max(1);
    let mut figures = Map::new();
    let (t, all) = best(runs, encode_all)?;
    let f = figure(512.0 / t, "embeddings/s", all);
    say("embed_512x30w_b32_per_s", &f);
    figures.insert("embed_512x30w_b32_per_s".into(), f);
    // Single-sentence latency: median of 50 after 5 warm-ups, sentences 0..55 as the peer.
    let mut lat = Vec::with_capacity(55);
    for s in refs.iter().take(55) {
        let t = Instant::now();
        std::hint::black_box(emb.embed(&[s])?);
        lat.push(t.elapsed().as_secs_f64());
    }
    let ms = 1000.0 * median(lat[5.min(lat.len())..].to_vec());
    let mut f = json!({"value": round(ms, 4), "unit": "ms", "load1": load1(), "runs": lat.len().saturating_sub(5)});
    if lat.len() < 55 {
        f["note"] = json!("fewer than 55 sentences");
    }
    say("embed_single_latency_ms", &f);
    figures.insert("embed_single_latency_ms".into(), f);
    figures.insert("peak_rss_mib".into(), json!({"value": peak_rss_mib(), "unit": "MiB"}));
    let mut out = json!({
        "bench": "sealong_embed",
        "load1_start": load1_start,
        "model": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "dim": emb.dim(),
        "max_seq_length": emb.sentence.max_seq_length,
        "device": "cpu",
        "threads": rayon_threads(),
        "cpus": cpus(),
        "load_s": round(load_s, 3),
        "sentences": refs.len(),
        "words_per_sentence": 30,
        "batch": 32,
        "tokens": tokens,
        "text_id": text_id,
        "figures": figures,
    });
    if let Some(p) = &a.peer {
        add_peer(&mut out, p, &["embed_512x30w_b32_per_s", "embed_single_latency_ms"])?;
    }
    outln!("{}", serde_json::to_string(&out)?)?;
    Ok(())
}

/// `[b, n, d]` standard-normal rows scaled to unit length, from the seeded stream.
fn unit_rows(seed: u64, b: usize, n: usize, d: usize) -> Vec<f32> {
    let mut rng = sealong::rng::for_item(seed, &format!("bench-mbr-{b}x{n}x{d}"));
    let mut e = vec![0.0f32; b * n * d];
    // Box-Muller: two normals per pair of uniforms.
    for pair in e.chunks_mut(2) {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        pair[0] = (r * th.cos()) as f32;
        if let Some(x) = pair.get_mut(1) {
            *x = (r * th.sin()) as f32;
        }
    }
    for row in e.chunks_exact_mut(d.max(1)) {
        sealong::models::encoder::normalize(row);
    }
    e
}

/// The first index of the largest value (`np.argmax`) of an f32 row.
fn first_argmax_f32(s: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in s.iter().enumerate() {
        if v > s[best] {
            best = i;
        }
    }
    best
}

/// CPU MBR of the whole batch: scores, then each question's first argmax.
fn mbr_cpu(e: &[f32], b: usize, n: usize, d: usize) -> Result<Vec<usize>> {
    let scores = sealong::mbr::embedding::batched_scores(e, b, n, d)?;
    Ok(scores.chunks_exact(n).map(first_argmax_f32).collect())
}

pub fn mbr(a: BenchMbrArgs) -> Result<()> {
    let load1_start = load1();
    let device = crate::device::select(a.device)?;
    let on_gpu = device != burn::tensor::Device::flex();
    let (b, n) = (a.questions, a.n);
    if b == 0 || n == 0 {
        bail!("--questions and --n must be at least 1");
    }
    let runs = a.runs.max(1);
    let mut dims = vec![a.dim];
    if a.dim != 384 {
        dims.push(384);
    }
    let mut figures = Map::new();
    let mut checks = Map::new();
    let mut gpu_note = Value::Null;
    for &d in &dims {
        let e = unit_rows(a.seed, b, n, d);
        let name = format!("emb_mbr_cpu_q{b}_n{n}_d{d}_ms");
        let reference = mbr_cpu(&e, b, n, d)?; // warm-up
        let (t, all) = best_exact(runs, || {
            let t = Instant::now();
            std::hint::black_box(mbr_cpu(&e, b, n, d)?);
            Ok(1000.0 * t.elapsed().as_secs_f64())
        })?;
        let f = figure_in(t, "ms", &all);
        say(&name, &f);
        figures.insert(name, f);
        if on_gpu {
            match gpu_mbr(&device, &e, b, n, d, runs, &reference) {
                Ok((f, agree)) => {
                    let name = format!("emb_mbr_gpu_q{b}_n{n}_d{d}_ms");
                    say(&name, &f);
                    figures.insert(name.clone(), f);
                    checks.insert(name, json!({"chosen_equal_to_cpu": agree}));
                }
                Err(err) => {
                    errln!("sealong: GPU MBR kernel failed: {err:#}");
                    gpu_note = json!(format!("GPU kernel failed: {err:#}"));
                }
            }
        }
    }
    let mut out = json!({
        "bench": "sealong_mbr",
        "load1_start": load1_start,
        "device": crate::device::describe(&device),
        "questions": b,
        "n": n,
        "dims": dims,
        "seed": a.seed,
        "how": "scores = E . mean(E) per question (= row means of E E^T), then first argmax; \
                f32; cpu: sealong::mbr::embedding::batched_scores on rayon; gpu: sealong_shaders::mbr_scores_auto \
                (similarity, scores and chosen; the chosen read back), upload excluded",
        "threads": rayon_threads(),
        "cpus": cpus(),
        "figures": figures,
    });
    if !checks.is_empty() {
        out["checks"] = Value::Object(checks);
    }
    if !gpu_note.is_null() {
        out["gpu_note"] = gpu_note;
    }
    if let Some(p) = &a.peer {
        // Every numpy figure at the same shape: gram (E E^T, what the brief asks) and centroid
        // (E mean(E), what we compute), OpenBLAS at 1 thread and at its default.
        let peer = read_peer(p)?;
        let mut rows = Vec::new();
        for &d in &dims {
            let shape = format!("_q{b}_n{n}_d{d}");
            let peer_names: Vec<String> = peer["figures"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter(|k| k.starts_with("emb_mbr_") && k.contains(&format!("{shape}_")))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for ours in ["cpu", "gpu"] {
                let name = format!("emb_mbr_{ours}{shape}_ms");
                let Some(f) = out["figures"].get(&name) else { continue };
                for k in &peer_names {
                    let kind = k
                        .trim_start_matches("emb_mbr_")
                        .trim_end_matches("_ms")
                        .replace(&shape, "");
                    rows.push((format!("{name} vs numpy_{kind}"), f.clone(), k.clone()));
                }
            }
        }
        let r = ratios(&rows, &peer);
        out["peer"] = json!({
            "file": p.display().to_string(),
            "bench": peer["bench"],
            "numpy": peer["numpy"],
            "blas": peer["blas"],
            "loadavg_start": peer["loadavg_start"],
            "loadavg_end": peer["loadavg_end"],
        });
        out["vs_peer"] = r;
    }
    outln!("{}", serde_json::to_string(&out)?)?;
    Ok(())
}

/// Times the shaders-crate kernel on `device`: best of `runs` (after a warm-up) of one batch's
/// `mbr_scores_auto` with the chosen indices read back; and whether they equal the CPU's.
fn gpu_mbr(
    device: &burn::tensor::Device,
    e: &[f32],
    b: usize,
    n: usize,
    d: usize,
    runs: usize,
    cpu: &[usize],
) -> Result<(Value, bool)> {
    use burn::tensor::TensorData;
    let t = sealong_shaders::embeddings_from_data(TensorData::new(e.to_vec(), [b, n, d]), device)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let once = || -> Result<Vec<i64>> {
        let out = sealong_shaders::mbr_scores_auto(t.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        out.chosen
            .try_into_vec_as::<i64>()
            .map_err(|e| anyhow::anyhow!("reading the chosen indices back: {e:?}"))
    };
    let chosen = once()?; // warm-up (compiles the shader)
    let agree = chosen.len() == cpu.len() && chosen.iter().zip(cpu).all(|(&g, &c)| g as usize == c);
    let (best_t, all) = best_exact(runs, || {
        let t = Instant::now();
        std::hint::black_box(once()?);
        Ok(1000.0 * t.elapsed().as_secs_f64())
    })?;
    Ok((figure_in(best_t, "ms", &all), agree))
}

pub fn rouge(a: BenchRougeArgs) -> Result<()> {
    let load1_start = load1();
    let (text, text_id) = read_text(a.text.as_deref())?;
    let w = words(&text);
    if w.len() <= 200 {
        bail!("the benchmark text needs more than 200 words, it has {}", w.len());
    }
    let runs = a.runs.max(1);
    let mut figures = Map::new();
    // rouge_mbr.py: for n, questions in ((8, 30), (32, 4)): answers(1000 * n + q, n).
    for (n, questions) in [(8usize, 30usize), (32, 4)] {
        let qs: Vec<Vec<String>> = (0..questions)
            .map(|q| {
                let mut rng = sealong::rng::for_item((1000 * n + q) as u64, "bench-rouge");
                sealong::mbr::rouge::bench_answers(&w, n, 200, 0.3, &mut rng)
            })
            .collect();
        let all_q = || -> Result<f64> {
            let t = Instant::now();
            for cands in &qs {
                std::hint::black_box(sealong::mbr::rouge::rouge_l_mbr_choice(cands));
            }
            Ok(t.elapsed().as_secs_f64() / questions as f64)
        };
        all_q()?; // warm-up
        let (t, all) = best_exact(runs, all_q)?;
        let mut f = figure_in(t, "s", &all);
        f["questions"] = json!(questions);
        f["pair_scores"] = json!(n * (n - 1) / 2);
        let name = format!("rougeL_mbr_n{n}_s_per_question");
        say(&name, &f);
        figures.insert(name, f);
    }
    let mut out = json!({
        "bench": "sealong_rouge",
        "load1_start": load1_start,
        "threads": rayon_threads(),
        "cpus": cpus(),
        "text_id": text_id,
        "answers": "as rouge_mbr.py builds them (sealong::mbr::rouge::bench_answers: a random 200-word window, \
                    each word swapped with p=0.3 for a random word of the text, seed 1000*n+q); the peer draws \
                    with Python's random, we with ChaCha8: same shape and distribution, not the same answers",
        "how": "sealong::mbr::rouge::rouge_l_mbr_choice (F1 matrix with each pair's LCS once, bit-parallel, \
                rows on rayon) per question; best of runs after a warm-up (the peer: one pass)",
        "figures": figures,
    });
    if let Some(p) = &a.peer {
        add_peer(
            &mut out,
            p,
            &["rougeL_mbr_n8_s_per_question", "rougeL_mbr_n32_s_per_question"],
        )?;
    }
    outln!("{}", serde_json::to_string(&out)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_wrap_like_the_peer() {
        let w = ["a", "b", "c", "d", "e"];
        assert_eq!(chunks(&w, 2, 4), ["a b", "c d", "e a", "b c"]);
        assert_eq!(words(" x\u{1c}y \n z "), ["x", "y", "z"]);
    }

    #[test]
    fn argmax_is_the_first_maximum() {
        assert_eq!(first_argmax_f32(&[0.1, 0.3, 0.3, 0.2]), 1);
        assert_eq!(first_argmax_f32(&[0.5]), 0);
    }

    #[test]
    fn unit_rows_are_unit_and_seeded() {
        let e = unit_rows(0, 2, 3, 5);
        assert_eq!(e, unit_rows(0, 2, 3, 5));
        assert_ne!(e, unit_rows(1, 2, 3, 5));
        for row in e.chunks_exact(5) {
            let norm: f32 = row.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn ratios_orient_times_and_rates() {
        let out = json!({"figures": {"r": {"value": 300.0, "unit": "embeddings/s"}, "t": {"value": 2.0, "unit": "ms"},
                          "s": {"value": 0.001, "unit": "s"}}});
        let peer = json!({"figures": {"r": {"value": 100.0, "unit": "embeddings/s"}, "t": {"value": 6.0, "unit": "ms"},
                          "s": {"value": 5.0, "unit": "ms"}}});
        let r = ratios(&same_names(&out, &["r", "t", "s", "missing"]), &peer);
        assert_eq!(r["r"]["ratio"], json!(3.0));
        assert_eq!(r["t"]["ratio"], json!(3.0));
        assert_eq!(r["s"]["ratio"], json!(5.0));
        assert!(r.get("missing").is_none());
    }
}
