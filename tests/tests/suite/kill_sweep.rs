//! Kill sweep: every appending stage (`sample`, `score`, `eval`, `train`, `run`) is killed with
//! SIGKILL at seeded random moments, rerun, and must end with the same files as an uninterrupted
//! run — byte for byte, except the wall-clock figures a run measures about itself (see
//! [`TIMING_KEYS`]), which are compared for presence, not value.
//!
//! How a sweep goes, per stage:
//! 1. The stage runs uninterrupted in its own directory (a child process, as every run here);
//!    its wall time `T` sets the range of the kill moments.
//! 2. A *chain* starts in a fresh directory: the stage is started, killed at a moment drawn
//!    uniformly from `[0, T)`, and started again (the same command line, as a user would rerun
//!    it; `train` adds `--resume` once a checkpoint exists, as its error message tells the user
//!    to) until a start runs to the end before its moment comes. The chain's files are then
//!    compared with the uninterrupted run's.
//! 3. Chains repeat until `SEALONG_KILL_MOMENTS` kills (default 20) have hit a running stage.
//!
//! Each kill records what the stage had written when it died (no output yet, part of it, all
//! of it), so the sweep shows where its moments landed. `scripts/kill-sweep.sh` runs 200 moments
//! per stage and appends the counts to a JSONL file (`SEALONG_KILL_REPORT`); RELIABILITY.md
//! holds the results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sealong_tests::{SplitMix, sealong};
use serde_json::{Value, json};

/// JSON keys whose values are the run's own clock and memory readings (and `runs`, how many
/// invocations a round's stage took, summed into its seconds): they differ between any two runs,
/// killed or not. A record must still carry them; only their values are not compared.
const TIMING_KEYS: [&str; 6] = [
    "seconds",
    "runs",
    "step_seconds",
    "tokens_per_second",
    "peak_rss_mib",
    "started",
];

const CHILD_ENV: &str = "SEALONG_KILL_ARGS";

#[test]
#[ignore = "the child process of the kill sweep"]
fn kill_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else { return };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    sealong(&argv).expect("the stage failed in the child");
}

/// A stage's command line for an output directory.
type CommandLine = Box<dyn Fn(&Path) -> Vec<String>>;

/// One stage under the sweep: its command line for an output directory, and how a rerun differs.
struct Stage {
    name: &'static str,
    args: CommandLine,
    /// Extra arguments of a rerun in a directory the stage has already written to.
    rerun: fn(&Path) -> Vec<String>,
    /// The files that tell how far the stage got when it was killed: one file (then its size
    /// against the finished one's says before / during / after), or a round's stage outputs in
    /// order (then the last that exists names the stage reached).
    progress: &'static [&'static str],
}

struct Outcome {
    kills: usize,
    chains: usize,
    landed: BTreeMap<String, usize>,
    straight_seconds: f64,
    sweep_seconds: f64,
}

fn moments() -> usize {
    std::env::var("SEALONG_KILL_MOMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn seed() -> u64 {
    std::env::var("SEALONG_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(17)
}

fn spawn(args: &[String]) -> std::process::Child {
    sealong_tests::child_test(module_path!(), "kill_child")
        .env(CHILD_ENV, serde_json::to_string(args).expect("args json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the stage")
}

/// Runs the stage to its end in `dir`; a failure is a test failure with the child's stderr.
fn run_to_end(args: &[String]) -> Duration {
    let t = Instant::now();
    let out = spawn(args).wait_with_output().expect("wait for the stage");
    assert!(
        out.status.success(),
        "the stage failed ({}): {:?}\n{}",
        out.status,
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// Where a kill landed: for one progress file, before it existed, while it grew, or after it
/// was complete (the stage's closing steps: summaries, exports, renames); for a round, the last
/// stage output that existed.
fn landed(dir: &Path, progress: &[&str], complete_len: u64) -> String {
    if let [one] = progress {
        return match std::fs::metadata(dir.join(one)).map(|m| m.len()) {
            Ok(0) | Err(_) => "before_output",
            Ok(n) if n < complete_len => "during_output",
            Ok(_) => "after_output",
        }
        .to_string();
    }
    match progress.iter().rev().find(|f| dir.join(f).exists()) {
        Some(f) => format!("after {f}"),
        None => "before_output".to_string(),
    }
}

fn sweep(stage: &Stage, work: &Path) -> Outcome {
    let straight = work.join(format!("{}-straight", stage.name));
    let args = (stage.args)(&straight);
    // The moments' range: the uninterrupted run's wall time, lowered whenever a chain's first
    // start runs to its end faster (the suite runs tests side by side, so one reading is noisy,
    // and a range much longer than the work spends chains on starts that are never killed).
    let mut t = run_to_end(&args);
    let complete = std::fs::metadata(straight.join(stage.progress[0]))
        .unwrap_or_else(|e| panic!("{}: {e}", stage.progress[0]))
        .len();
    let mut rng = SplitMix(
        seed()
            ^ stage
                .name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    );
    let want = moments();
    let started = Instant::now();
    let mut out = Outcome {
        kills: 0,
        chains: 0,
        landed: BTreeMap::new(),
        straight_seconds: t.as_secs_f64(),
        sweep_seconds: 0.0,
    };
    while out.kills < want {
        out.chains += 1;
        let dir = work.join(format!("{}-chain{}", stage.name, out.chains));
        for start in 0.. {
            let first_start = start == 0;
            let mut args = (stage.args)(&dir);
            if !first_start {
                args.extend((stage.rerun)(&dir));
            }
            let at = Duration::from_secs_f64(t.as_secs_f64() * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64);
            let mut child = spawn(&args);
            let begun = Instant::now();
            let ended = loop {
                if let Some(status) = child.try_wait().expect("poll the stage") {
                    break Some(status);
                }
                if begun.elapsed() >= at {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2).min(at.saturating_sub(begun.elapsed())));
            };
            match ended {
                Some(status) => {
                    if first_start {
                        t = t.min(begun.elapsed());
                    }
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    assert!(
                        status.success(),
                        "{} chain {}: a rerun failed ({status}): {args:?}\n{err}",
                        stage.name,
                        out.chains
                    );
                    break;
                }
                None => {
                    let where_ = landed(&dir, stage.progress, complete);
                    child.kill().expect("SIGKILL");
                    child.wait().expect("reap");
                    out.kills += 1;
                    *out.landed.entry(where_).or_default() += 1;
                }
            }
        }
        compare_trees(&straight, &dir, stage.name, out.chains);
        std::fs::remove_dir_all(&dir).expect("remove the chain's directory");
    }
    out.sweep_seconds = started.elapsed().as_secs_f64();
    out
}

/// Every file of `a` is in `b` and the other way round, with the same bytes once `b`'s own path
/// is written as `a`'s (a round's config copy names its directory); JSON and JSONL files whose
/// bytes differ are compared as values with [`TIMING_KEYS`] masked.
fn compare_trees(a: &Path, b: &Path, stage: &str, chain: usize) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "{stage} chain {chain}: the killed-and-rerun directory holds other files than the uninterrupted one"
    );
    for (rel, pa) in &fa {
        let x = read(pa);
        let y = String::from_utf8(read(&fb[rel]))
            .map(|t| t.replace(&s(b), &s(a)).into_bytes())
            .unwrap_or_else(|e| e.into_bytes());
        if x == y {
            continue;
        }
        let ext = rel.extension().and_then(|e| e.to_str()).unwrap_or("");
        let same = match ext {
            "json" => masked_json(&x) == masked_json(&y),
            "jsonl" => masked_lines(&x) == masked_lines(&y),
            // The round's report shows its clock (stage seconds, tokens/s); every other number
            // in it is drawn from the JSON files compared above, so its text is compared with
            // each number masked.
            "html" => digits_masked(&x) == digits_masked(&y),
            _ => false,
        };
        assert!(
            same,
            "{stage} chain {chain}: {} differs between the uninterrupted run and the killed-and-rerun one{}",
            rel.display(),
            if ext == "html" {
                first_difference(&digits_masked(&x), &digits_masked(&y))
            } else {
                first_difference(&x, &y)
            }
        );
    }
}

/// Where two texts first part, with some context, for the failure message.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let show = |t: &[u8]| String::from_utf8_lossy(&t[at.saturating_sub(120)..(at + 120).min(t.len())]).into_owned();
    format!(
        " (sizes {} and {}; first difference at byte {at}):\n  uninterrupted: …{}…\n  rerun:         …{}…",
        a.len(),
        b.len(),
        show(a),
        show(b)
    )
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files(root: &Path) -> BTreeMap<PathBuf, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).expect("under root").to_path_buf(), p);
            }
        }
    }
    out
}

fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if TIMING_KEYS.contains(&k.as_str()) {
                    *x = Value::String("<timing>".into());
                } else {
                    mask(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

fn digits_masked(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    // A number is a digit followed by digits and points: "0" (a resumed stage's seconds) and
    // "12.5" both become one '#'.
    let mut in_number = false;
    for &b in bytes {
        if b.is_ascii_digit() || (in_number && b == b'.') {
            if !in_number {
                out.push(b'#');
            }
            in_number = true;
        } else {
            out.push(b);
            in_number = false;
        }
    }
    out
}

fn masked_json(bytes: &[u8]) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    mask(&mut v);
    Some(v)
}

fn masked_lines(bytes: &[u8]) -> Option<Vec<Value>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.is_empty() && !text.ends_with('\n') {
        return None;
    }
    text.lines().map(|l| masked_json(l.as_bytes())).collect()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn none(_: &Path) -> Vec<String> {
    Vec::new()
}

/// Six one-paragraph questions: enough records that most kills land between two of them.
fn questions(dir: &Path) -> PathBuf {
    let qa = [
        ("Where is the Eiffel Tower?", "The Eiffel Tower is in Paris.", "Paris"),
        ("What colour is the sky?", "On a clear day the sky is blue.", "blue"),
        (
            "Who wrote Hamlet?",
            "Hamlet is a tragedy by William Shakespeare.",
            "Shakespeare",
        ),
        (
            "What is the capital of Japan?",
            "Tokyo is the capital of Japan.",
            "Tokyo",
        ),
        (
            "What do bees make?",
            "Bees make honey from the nectar of flowers.",
            "honey",
        ),
        ("Which planet is called red?", "Mars is called the red planet.", "Mars"),
    ];
    let text: String = qa
        .iter()
        .enumerate()
        .map(|(i, (q, c, a))| {
            let rec = json!({"_id": format!("q{i}"), "input": q, "context": format!("Passage 1:\n{c}"),
                "answers": [a], "dataset": "toy"});
            format!("{rec}\n")
        })
        .collect();
    let p = dir.join("questions.jsonl");
    std::fs::write(&p, text).expect("write questions");
    p
}

/// `sample`'s command line: `n` samples of 12 tokens a question.
fn sample_args(q: &Path, out: &Path, n: usize) -> Vec<String> {
    let mut a = strings(&["sample", "--device", "cpu", "--max-new-tokens", "12", "--seed", "5"]);
    a.extend(["-n".into(), n.to_string()]);
    a.extend(["--input".into(), s(q), "--out".into(), s(&out.join("samples.jsonl"))]);
    a
}

fn report(stage: &str, o: &Outcome) {
    let line = json!({
        "stage": stage,
        "kills": o.kills,
        "chains": o.chains,
        "identical_chains": o.chains,
        "landed": o.landed,
        "straight_seconds": (o.straight_seconds * 100.0).round() / 100.0,
        "sweep_seconds": (o.sweep_seconds * 10.0).round() / 10.0,
        "seed": seed(),
        "label": std::env::var("SEALONG_KILL_LABEL").unwrap_or_default(),
    });
    eprintln!("kill sweep: {line}");
    if let Ok(path) = std::env::var("SEALONG_KILL_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        writeln!(f, "{line}").expect("write the report line");
    }
    assert!(o.kills >= moments(), "{stage}: only {} kills", o.kills);
}

#[test]
fn sample_survives_kills() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = questions(tmp.path());
    let stage = Stage {
        name: "sample",
        args: Box::new(move |out| sample_args(&q, out, 3)),
        rerun: none,
        progress: &["samples.jsonl"],
    };
    report("sample", &sweep(&stage, tmp.path()));
}

#[test]
fn score_survives_kills() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = questions(tmp.path());
    let samples_dir = tmp.path().join("samples");
    // Eight samples a question: more for the scorer to do.
    let a = sample_args(&q, &samples_dir, 8);
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    sealong(&argv).expect("sample for the scorer");
    let samples = samples_dir.join("samples.jsonl");
    let stage = Stage {
        name: "score",
        args: Box::new(move |out| {
            let mut a = strings(&["score", "--device", "cpu", "--method", "embedding", "--seed", "3"]);
            a.extend([
                "--input".into(),
                s(&samples),
                "--out".into(),
                s(&out.join("scored.jsonl")),
            ]);
            a.extend(["--pairs".into(), s(&out.join("pairs.jsonl"))]);
            a
        }),
        rerun: none,
        progress: &["scored.jsonl"],
    };
    report("score", &sweep(&stage, tmp.path()));
}

#[test]
fn eval_survives_kills() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The toy questions in LongBench's schema, as an evaluation file: six short records, so the
    // kills fall between records as often as during loading.
    let q = questions(tmp.path());
    let stage = Stage {
        name: "eval",
        args: Box::new(move |out| {
            let mut a = strings(&["eval", "--device", "cpu", "-n", "2", "--max-new-tokens", "6"]);
            a.extend(["--out".into(), s(out), "--input".into(), s(&q)]);
            a
        }),
        rerun: none,
        progress: &["predictions.jsonl"],
    };
    report("eval", &sweep(&stage, tmp.path()));
}

fn train_rerun(out: &Path) -> Vec<String> {
    if sealong_cli::commands::train::has_checkpoint(out) {
        vec!["--resume".into()]
    } else {
        Vec::new()
    }
}

#[test]
fn train_survives_kills() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pairs = crate::train_cli::write_pairs(tmp.path());
    let stage = Stage {
        name: "train",
        args: Box::new(move |out| crate::train_cli::train_args(&pairs, out, &[])),
        rerun: train_rerun,
        progress: &["metrics.jsonl"],
    };
    report("train", &sweep(&stage, tmp.path()));
}

#[test]
fn run_survives_kills() {
    let tmp = tempfile::tempdir().expect("tmp");
    let configs = tmp.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    let stage = Stage {
        name: "run",
        args: Box::new(move |out| {
            let name = out.file_name().expect("dir name").to_string_lossy().to_string();
            let cfg = configs.join(format!("{name}.toml"));
            if !cfg.exists() {
                // run_cli's tiny round with one training question and one evaluation file: the
                // sweep reruns the round dozens of times, and the stages' own sweeps above cover
                // them at more moments.
                let config = crate::run_cli::tiny_config(out);
                let config = config.replacen("n = 2\nmin_k", "n = 1\nmin_k", 1);
                let (head, tail) = config.split_once("inputs = [").expect("eval inputs");
                let (first, rest) = tail.split_once(", ").expect("two eval inputs");
                let rest = rest.split_once(']').expect("list end").1;
                let config = format!("{head}inputs = [{first}]{rest}");
                assert!(config.contains("n = 1\nmin_k") && !config.contains("2wiki"), "{config}");
                std::fs::write(&cfg, config).expect("config");
            }
            strings(&["run", "--config", &s(&cfg)])
        }),
        rerun: none,
        progress: &[
            "questions.jsonl",
            "samples.jsonl",
            "scored.jsonl",
            "eval/before/metrics.json",
            "train/metrics.jsonl",
            "train/adapter/adapter_model.safetensors",
            "eval/after/metrics.json",
            "report.html",
        ],
    };
    report("run", &sweep(&stage, tmp.path()));
}
