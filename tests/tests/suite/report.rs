//! `sealong report` end to end on fake run directories with realistic content:
//! - a complete run: every chart is drawn (9 SVGs), every task is labelled, the numbers of the
//!   files appear in the tables, hostile strings from a task name, the config and the summary
//!   are escaped, nothing external is referenced; `--out` writes elsewhere; no temporary file
//!   is left behind;
//! - partial runs: what exists is shown, what is missing is named, no empty charts for missing
//!   stages;
//! - damaged files: a truncated scored line is skipped with its line number, an unreadable eval
//!   file is reported, the report is still written; a missing directory is an error;
//! - the browser: headless Chromium renders the complete report (whose Content-Security-Policy
//!   forbids every script and fetch, so what shows needs neither) to
//!   `target/report-artifacts/report.png`, which is decoded and must show the charts' colors.
//!
//! Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it): the browser
//! test fails, never skips, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealong_tests::{repo_root, sealong};
use serde_json::{Value, json};

const HOSTILE: &str = "<script>alert('x')</script>&\"";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A small deterministic generator (the data only has to look realistic).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

fn jsonl(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

const TASKS: [&str; 3] = ["hotpotqa", "2wikimqa", "musique"];
const QUESTIONS: usize = 24;
const N: usize = 8;

fn config_toml() -> String {
    format!(
        "# sealong run config\nname = \"{}\"\nseed = 42\n\n[synth]\nquestions = {QUESTIONS}\ncontext_tokens = 4096\n\n\
         [sample]\nn = {N}\ntemperature = 0.7\nstrategy = \"plan_and_solve\"\n\n[score]\nmethod = \"embedding\"\n\n\
         [train]\nloss = \"orpo\"\nepochs = 2\nlr = 5e-5\n\n[eval]\nn = {N}\n",
        HOSTILE.replace('"', "\\\"")
    )
}

fn questions() -> Vec<Value> {
    (0..QUESTIONS)
        .map(|i| {
            json!({"id": format!("q{i}"), "input": format!("Who founded the company in question {i}?"),
                   "context": "Passage 1:\nSome long context.", "answers": [format!("Person {i}")],
                   "dataset": TASKS[i % 3], "length": 4000})
        })
        .collect()
}

fn samples(rng: &mut Lcg) -> Vec<Value> {
    (0..QUESTIONS)
        .map(|i| {
            let s: Vec<Value> = (0..N)
                .map(|k| {
                    json!({"text": format!("Step 1 ... The answer is Person {}.", if rng.next() < 0.4 { i } else { k }),
                           "num_tokens": 60 + k, "finish_reason": "stop"})
                })
                .collect();
            json!({"id": format!("q{i}"), "prompt": "Passage 1: ...", "answers": [format!("Person {i}")], "samples": s})
        })
        .collect()
}

/// Scored records with scores around 0.75, correct samples scoring higher, chosen = argmax,
/// rejected from the bottom half.
fn scored(rng: &mut Lcg) -> Vec<Value> {
    (0..QUESTIONS)
        .map(|i| {
            let sub: Vec<bool> = (0..N).map(|_| rng.next() < 0.45).collect();
            let scores: Vec<f64> = sub
                .iter()
                .map(|&c| 0.62 + 0.2 * rng.next() + if c { 0.08 } else { 0.0 })
                .collect();
            let mut order: Vec<usize> = (0..N).collect();
            order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
            let chosen = order[N - 1];
            let rejected = order[(rng.next() * (N / 2) as f64) as usize];
            json!({"id": format!("q{i}"), "prompt": "Passage 1: ...", "answers": [format!("Person {i}")],
                   "samples": (0..N).map(|k| json!({"text": format!("answer {k}"), "num_tokens": 9, "finish_reason": "stop"})).collect::<Vec<_>>(),
                   "method": "embedding", "scores": scores, "chosen": chosen, "rejected": rejected, "sub_em": sub})
        })
        .collect()
}

fn train_metrics(steps: usize) -> Vec<Value> {
    (1..=steps)
        .map(|s| {
            let t = s as f64 / steps as f64;
            let warm = 3.0;
            let lr = if (s as f64) <= warm {
                1e-5 + (5e-5 - 1e-5) * s as f64 / warm
            } else {
                5e-5 * 0.5 * (1.0 + (std::f64::consts::PI * (s as f64 - warm) / (steps as f64 - warm)).cos())
            };
            let wobble = ((s * 7919) % 13) as f64 / 13.0 - 0.5;
            let nll = 1.9 - 0.6 * t + 0.08 * wobble;
            let odds = 0.69 - 0.25 * t + 0.05 * wobble;
            json!({"step": s, "total_steps": steps, "epoch": if t <= 0.5 { 1 } else { 2 }, "lr": lr,
                   "loss": nll + 0.1 * odds, "nll": nll, "chosen_reward": -0.8 + 0.3 * t, "rejected_reward": -1.0 - 0.2 * t,
                   "reward_accuracy": (0.45 + 0.45 * t + 0.2 * wobble).clamp(0.0, 1.0), "margin": 0.2 + 0.5 * t + 0.1 * wobble,
                   "log_odds": 0.4 + 1.2 * t, "grad_norm": 2.0 - t, "pairs": 4, "tokens": 17000 + s * 10,
                   "step_seconds": 12.5, "tokens_per_second": 1360.0})
        })
        .collect()
}

fn eval_metrics(after: bool) -> Value {
    let bump = if after { 6.25 } else { 0.0 };
    let names = [TASKS[0], TASKS[1], TASKS[2], HOSTILE];
    let base = [31.25, 27.5, 12.5, 18.75];
    let tasks: Vec<Value> = names
        .iter()
        .zip(base)
        .map(|(t, g)| {
            let g = g + bump;
            let curve: Vec<f64> = (1..=N)
                .map(|k| g - 3.0 + 25.0 * (1.0 - 0.7f64.powi(k as i32)))
                .collect();
            json!({"task": t, "questions": 16, "greedy": g, "mbr": g + 2.5, "random": g - 4.0,
                   "oracle": curve[N - 1], "oracle_curve": curve})
        })
        .collect();
    let avg = |k: &str| tasks.iter().map(|t| t[k].as_f64().expect("f64")).sum::<f64>() / tasks.len() as f64;
    let curve: Vec<f64> = (0..N)
        .map(|i| {
            tasks
                .iter()
                .map(|t| t["oracle_curve"][i].as_f64().expect("f64"))
                .sum::<f64>()
                / 4.0
        })
        .collect();
    json!({"model": "SmolLM2-135M-Instruct-Q4_1.gguf", "adapter": if after { json!("run/train/adapter") } else { Value::Null },
           "strategy": "plan_and_solve", "n": N, "max_new_tokens": 1024, "tasks": tasks,
           "average": {"greedy": avg("greedy"), "mbr": avg("mbr"), "random": avg("random"), "oracle": avg("oracle"), "oracle_curve": curve}})
}

fn run_summary() -> Value {
    json!({"config": "config.toml", "seed": 42, "stages": [
        {"stage": "synth", "status": "done", "seconds": 3.2},
        {"stage": "sample", "status": "done", "seconds": 301.7},
        {"stage": "score", "status": "done", "seconds": 12.9},
        {"stage": "train", "status": "done", "seconds": 500.0},
        {"stage": "eval", "status": "done", "seconds": 240.4, "note": HOSTILE}],
        "total_seconds": 1058.2})
}

/// A complete run directory; `skip` names files (relative paths) not to write.
fn fake_run(dir: &Path, skip: &[&str]) {
    let mut rng = Lcg(7);
    let scored = scored(&mut rng);
    let files: Vec<(&str, String)> = vec![
        ("config.toml", config_toml()),
        ("questions.jsonl", jsonl(&questions())),
        ("samples.jsonl", jsonl(&samples(&mut rng))),
        ("scored.jsonl", jsonl(&scored)),
        ("train/metrics.jsonl", jsonl(&train_metrics(40))),
        ("eval/before/metrics.json", eval_metrics(false).to_string()),
        ("eval/after/metrics.json", eval_metrics(true).to_string()),
        ("summary.json", run_summary().to_string()),
    ];
    for (rel, text) in files {
        if !skip.contains(&rel) {
            write(&dir.join(rel), &text);
        }
    }
    // The summary `sealong score` writes for these records.
    if !skip.contains(&"scored.summary.json") {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("scored.jsonl");
        write(&path, &jsonl(&scored));
        let summary = sealong_cli::commands::score::summarize(&path, 42).expect("summarize");
        write(&dir.join("scored.summary.json"), &format!("{summary:#}\n"));
    }
}

/// The number after `prefix` in `html` (up to the next `<`).
fn number_after(html: &str, prefix: &str) -> f64 {
    let at = html
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not in the report"))
        + prefix.len();
    let rest = &html[at..];
    rest[..rest.find('<').expect("end")].parse().expect("number")
}

fn report(dir: &Path) -> String {
    sealong(&["report", dir.to_str().expect("utf8")]).expect("sealong report");
    std::fs::read_to_string(dir.join("report.html")).expect("report.html")
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Nothing in the page loads anything or runs anything.
fn assert_self_contained(html: &str) {
    assert!(
        html.contains(
            r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">"#
        ),
        "the page forbids scripts and fetches"
    );
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script", "src=", "href=", "url(", "@import", "<link", "<iframe", "<object", "<img",
    ] {
        assert!(!lower.contains(bad), "the report contains {bad:?}");
    }
}

#[test]
fn complete_run_has_every_chart_and_escapes_file_text() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("run");
    fake_run(&dir, &[]);
    let path = sealong_cli::commands::report::write_report(&dir).expect("write_report");
    assert_eq!(path, dir.join("report.html"));
    let html = report(&dir);

    // Charts: 3 evaluation, 2 scoring, 4 training.
    assert_eq!(count(&html, "<svg"), 9, "SVG charts");
    for title in [
        "Greedy SubEM per task, before vs after training",
        "Selection methods (average over tasks)",
        "Oracle@k",
        "MBR scores of 192 samples (embedding)",
        "SubEM of the training answers (24 questions with gold)",
        "Loss",
        "Reward accuracy",
        "Reward margin",
        "Learning rate",
    ] {
        assert!(html.contains(&format!("<title>{title}")), "chart {title:?}");
    }
    // Every task is labelled (tables and bars), the average too.
    for t in TASKS {
        assert!(count(&html, &format!(">{t}<")) >= 2, "task {t}");
    }
    assert!(html.contains(">average<"));
    // The numbers: greedy before/after and the delta in the table; bars carry values.
    assert!(html.contains(">31.25<") && html.contains(">37.50<") && html.contains(">+6.25<"));
    assert!(html.contains("hotpotqa · before training: 31.25"), "bar tooltip");
    // The score summary's table shows `sealong score`'s numbers, and the chart computed from the
    // records agrees with them.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("scored.summary.json")).expect("summary"))
            .expect("json");
    for (key, label) in [
        ("sub_em_chosen", "chosen"),
        ("sub_em_rejected", "rejected"),
        ("sub_em_average", "all samples (mean)"),
        ("sub_em_max", "oracle (any)"),
    ] {
        let v = summary[key].as_f64().expect(key);
        assert!(
            html.contains(&format!("<td class=\"num\">{v:.2}</td>")),
            "{key} {v} in the summary table"
        );
        let bar = number_after(&html, &format!("<title>{label} · SubEM: "));
        assert!((bar - v).abs() < 0.006, "{label}: chart {bar} vs summary {v}");
    }
    assert!(html.contains("24 questions") && html.contains("192 samples scored by embedding"));
    assert!(html.contains("40 optimizer steps of 40"));
    assert!(html.contains("SmolLM2-135M-Instruct-Q4_1.gguf") && html.contains("plan_and_solve"));
    // The oracle curve: N points per run, each with a hover value.
    assert_eq!(count(&html, "<title>oracle@k before: x = "), N);
    assert_eq!(count(&html, "<title>oracle@k after: x = "), N);
    // Histogram: the legend counts chosen and rejected samples (one each per question).
    assert!(html.contains("chosen (24)") && html.contains("rejected (24)") && html.contains("other samples (144)"));
    // The training table: 40 steps x 4 pairs' tokens.
    let tokens: usize = (1..=40).map(|s| 17000 + s * 10).sum();
    assert!(html.contains(&format!(">{tokens}<")), "tokens {tokens}");
    // Hostile text (task name, config, summary) is escaped everywhere.
    assert_self_contained(&html);
    assert!(!html.contains(HOSTILE));
    let escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;";
    assert!(
        count(&html, escaped) >= 4,
        "escaped hostile task name in table, bars and summary"
    );
    assert!(html.contains("name = &quot;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\\&quot;&quot;"));
    // The config is collapsible, the run summary a table with a column per key.
    assert!(html.contains("<details><summary>config.toml (23 lines)</summary>"));
    assert!(html.contains("<th>stage</th><th>status</th><th>seconds</th><th>note</th>"));
    assert!(html.contains(">301.7<"));
    assert!(!html.contains("files missing"), "nothing is missing");
    // Written atomically: no temporary file is left next to it.
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn out_flag_writes_elsewhere() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("run");
    fake_run(&dir, &[]);
    let out = tmp.path().join("reports/nested/r.html");
    sealong(&[
        "report",
        dir.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ])
    .expect("report");
    assert!(out.is_file());
    assert!(!dir.join("report.html").exists());
    // Same content as the default location.
    let default = report(&dir);
    assert_eq!(std::fs::read_to_string(&out).expect("read"), default);
}

#[test]
fn partial_run_shows_what_exists_and_names_what_is_missing() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Stages 1-2 only.
    let dir = tmp.path().join("early");
    fake_run(
        &dir,
        &[
            "scored.jsonl",
            "scored.summary.json",
            "train/metrics.jsonl",
            "eval/before/metrics.json",
            "eval/after/metrics.json",
            "summary.json",
        ],
    );
    let html = report(&dir);
    assert_self_contained(&html);
    assert_eq!(count(&html, "<svg"), 0, "no charts without their data");
    assert!(html.contains("6 of 9 files missing"));
    assert!(
        html.contains(&format!("{QUESTIONS} questions"))
            && html.contains(&format!("{QUESTIONS} questions with samples"))
    );
    for f in [
        "scored.jsonl",
        "train/metrics.jsonl",
        "eval/before/metrics.json",
        "eval/after/metrics.json",
        "summary.json",
    ] {
        assert!(html.contains(&format!("<code>{f}</code> is missing")), "{f}");
    }

    // Trained and evaluated before, not yet after; no config.
    let dir = tmp.path().join("mid");
    fake_run(&dir, &["config.toml", "eval/after/metrics.json", "summary.json"]);
    let html = report(&dir);
    assert!(html.contains("3 of 9 files missing"));
    // 3 eval charts (before only) + 2 scoring + 4 training.
    assert_eq!(count(&html, "<svg"), 9);
    assert!(
        html.contains(">31.25<") && !html.contains(">+6.25<"),
        "no delta without after"
    );
    assert!(!html.contains("· after training"), "no after bars");
    assert!(html.contains("<code>eval/after/metrics.json</code> is missing"));
    assert!(html.contains("<code>config.toml</code> is missing"));

    // Nothing at all (an empty directory): still a report.
    let dir = tmp.path().join("empty");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let html = report(&dir);
    assert!(html.contains("9 of 9 files missing"));
    assert_eq!(count(&html, "<svg"), 0);
}

#[test]
fn damaged_files_are_reported_and_the_rest_is_shown() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("run");
    fake_run(&dir, &[]);
    // A scored line cut off mid-write, and an eval file that is not JSON.
    let scored = dir.join("scored.jsonl");
    let mut text = std::fs::read_to_string(&scored).expect("read");
    text.push_str("{\"id\": \"q99\", \"scores\": [0.5, 0.");
    std::fs::write(&scored, text).expect("write");
    write(&dir.join("eval/after/metrics.json"), "{\"tasks\": [oops");
    let html = report(&dir);
    assert!(
        html.contains(&format!("scored.jsonl:{}: ", QUESTIONS + 1)),
        "the bad line is named"
    );
    assert!(html.contains("(line skipped)"));
    assert!(html.contains("192 samples scored"), "the good records are used");
    assert!(html.contains("unreadable") && html.contains("eval/after/metrics.json"));
    assert!(html.contains("No evaluation after training from <code>eval/after/metrics.json</code>"));
    // Before is still charted.
    assert!(html.contains("hotpotqa · before training: 31.25"));

    // A run directory that does not exist is an error, and writes nothing.
    let missing = tmp.path().join("nope");
    let err = sealong(&["report", missing.to_str().expect("utf8")]).expect_err("no dir");
    assert!(format!("{err:#}").contains("not a run directory"), "{err:#}");
    assert!(!missing.exists());
}

// ---------- the browser ----------

/// Decodes a PNG into (width, height, RGBA8 pixels).
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).expect("open png");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0u8; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    let rgba: Vec<u8> = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| match channels {
            1 => [p[0], p[0], p[0], 255],
            2 => [p[0], p[0], p[0], p[1]],
            3 => [p[0], p[1], p[2], 255],
            _ => [p[0], p[1], p[2], p[3]],
        })
        .collect();
    (info.width, info.height, rgba)
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).expect("hex color");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// Runs Chromium headless on `html`, writing a screenshot to `png`; fails after 180 s.
fn screenshot(html: &Path, png: &Path, profile: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the report's browser test needs Debian's chromium \
         (apt-get install -y chromium; .ci/run installs it)"
    );
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,4000")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match child.try_wait().expect("waiting for chromium") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish the screenshot in 180 s");
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let out = child.wait_with_output().expect("chromium output");
    assert!(
        png.is_file(),
        "chromium wrote no screenshot ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn report_renders_in_headless_chromium_with_visible_charts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("run");
    fake_run(&dir, &[]);
    let html = sealong_cli::commands::report::write_report(&dir).expect("write_report");
    let artifacts: PathBuf = repo_root().join("target").join("report-artifacts");
    std::fs::create_dir_all(&artifacts).expect("target/report-artifacts");
    let png = artifacts.join("report.png");
    let _ = std::fs::remove_file(&png);
    screenshot(&html, &png, &tmp.path().join("chromium-profile"));

    let (w, h, rgba) = decode_png(&png);
    assert_eq!((w, h), (1280, 4000), "screenshot size");
    let pixels = rgba.chunks(4);
    let non_white = pixels
        .clone()
        .filter(|p| p[0] < 235 || p[1] < 235 || p[2] < 235)
        .count();
    let frac = non_white as f64 / (w as f64 * h as f64);
    assert!(
        frac > 0.05,
        "the page looks blank: {:.1}% non-white pixels",
        frac * 100.0
    );
    // The charts' series colors are on screen in quantity: before (blue), after (orange),
    // chosen (green), rejected (red) bars and lines.
    let near = |p: &[u8], c: [u8; 3]| (0..3).all(|i| (p[i] as i32 - c[i] as i32).abs() <= 6);
    for (name, color, min) in [
        ("before", "#4e79a7", 3000),
        ("after", "#f28e2b", 3000),
        ("chosen", "#59a14f", 1500),
        ("rejected", "#e15759", 500),
    ] {
        let c = hex(color);
        let n = pixels.clone().filter(|p| near(p, c)).count();
        assert!(n >= min, "{name} ({color}): {n} pixels, expected at least {min}");
    }
}
