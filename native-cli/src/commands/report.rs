//! `sealong report DIR`: reads what a run directory holds (every file may be missing: a partial
//! run is reported as far as it got), renders the core's self-contained HTML report and writes
//! it atomically (a temporary file in the same directory, renamed into place) to
//! DIR/report.html or `--out`. A `sealong study` directory (DIR/study.json) gets its study page
//! rendered again from study.json, to DIR/study.html or `--out`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sealong::eval::report::{self, Part, ReportData, ScoredRecord, ScoredStats, TrainStep, files};
use serde::de::DeserializeOwned;

/// `sealong report` flags.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run directory (`sealong run`'s output), or a `sealong study` output directory.
    pub dir: PathBuf,
    /// Where to write the HTML (default: DIR/report.html; a study's DIR/study.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How many problem lines of one file are listed before the rest are counted.
const MAX_WARNINGS_PER_FILE: usize = 5;

pub fn run(args: ReportArgs) -> Result<()> {
    let study = args.dir.join("study.json");
    if study.is_file() {
        let bytes = std::fs::read(&study).with_context(|| format!("reading {}", study.display()))?;
        let s: sealong::eval::study::Study =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not a study's JSON", study.display()))?;
        let out = args.out.unwrap_or_else(|| args.dir.join("study.html"));
        sealong::files::write_atomic(&out, report::study::render(&s).as_bytes())?;
        outln!("{}", out.display())?;
        return Ok(());
    }
    let out = args.out.unwrap_or_else(|| args.dir.join(files::REPORT));
    let path = write_report_to(&args.dir, &out)?;
    outln!("{}", path.display())?;
    Ok(())
}

/// Writes DIR/report.html for the run in `dir` and returns its path (what `sealong run` calls
/// at its end).
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    write_report_to(dir, &dir.join(files::REPORT))
}

/// Writes the report of the run in `dir` to `out`.
pub fn write_report_to(dir: &Path, out: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!(
            "{} is not a run directory (it does not exist or is not a directory)",
            dir.display()
        );
    }
    let data = collect(dir);
    for w in &data.warnings {
        tracing::warn!("{w}");
    }
    let html = report::render(&data);
    sealong::files::write_atomic(out, html.as_bytes())?;
    Ok(out.to_path_buf())
}

/// Where round `k` (1-based) writes: the run directory itself for round 1, `round-k/` after.
pub fn round_dir(out: &Path, k: usize) -> PathBuf {
    if k == 1 {
        out.to_path_buf()
    } else {
        out.join(format!("round-{k}"))
    }
}

/// How many rounds a run directory holds results of: 1 plus each `round-k/` (k = 2, 3, ...)
/// present in order.
pub fn rounds_in(out: &Path) -> usize {
    let mut k = 1;
    while round_dir(out, k + 1).is_dir() {
        k += 1;
    }
    k
}

/// Everything the report shows, read from `dir`; nothing here fails: a missing file is
/// `Missing`, a file that cannot be used is `Unreadable` with the reason.
pub fn collect(dir: &Path) -> ReportData {
    let mut warnings = Vec::new();
    let config = read_text(&dir.join(files::CONFIG));
    let questions = count_records(&dir.join(files::QUESTIONS));
    let samples = count_records(&dir.join(files::SAMPLES));
    let scored = match read_jsonl::<ScoredRecord>(&dir.join(files::SCORED), &mut warnings) {
        Part::Loaded(records) => Part::Loaded(ScoredStats::from_records(&records)),
        Part::Missing => Part::Missing,
        Part::Unreadable(e) => Part::Unreadable(e),
    };
    let train = read_jsonl::<TrainStep>(&dir.join(files::TRAIN_METRICS), &mut warnings);
    ReportData {
        run_dir: dir.display().to_string(),
        config,
        questions,
        samples,
        scored,
        score_summary: read_json(&dir.join(files::SCORE_SUMMARY)),
        train,
        eval_before: read_json(&dir.join(files::EVAL_BEFORE)),
        eval_after: read_json(&dir.join(files::EVAL_AFTER)),
        eval_short_before: read_json(&dir.join(files::EVAL_SHORT_BEFORE)),
        eval_short_after: read_json(&dir.join(files::EVAL_SHORT_AFTER)),
        later_rounds: (2..=rounds_in(dir))
            .map(|k| read_json(&round_dir(dir, k).join(files::EVAL_AFTER)))
            .collect(),
        run_summary: read_json(&dir.join(files::RUN_SUMMARY)),
        effects: read_json(&dir.join(files::EFFECTS)),
        warnings,
    }
}

fn missing_or(path: &Path, e: std::io::Error) -> Part<std::convert::Infallible> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Part::Missing
    } else {
        Part::Unreadable(format!("{}: {e}", path.display()))
    }
}

/// Re-types a `Missing`/`Unreadable` part.
fn retype<T>(p: Part<std::convert::Infallible>) -> Part<T> {
    match p {
        Part::Missing => Part::Missing,
        Part::Unreadable(e) => Part::Unreadable(e),
        Part::Loaded(never) => match never {},
    }
}

fn read_text(path: &Path) -> Part<String> {
    match std::fs::read(path) {
        Ok(bytes) => Part::Loaded(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => retype(missing_or(path, e)),
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Part<T> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Part::Loaded(v),
            Err(e) => Part::Unreadable(format!("{}: {e}", path.display())),
        },
        Err(e) => retype(missing_or(path, e)),
    }
}

/// Non-blank lines of a JSONL file (the records of a stage, not parsed: they can be large).
fn count_records(path: &Path) -> Part<usize> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return retype(missing_or(path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Part::Loaded(n),
            Ok(_) => n += usize::from(line.iter().any(|b| !b.is_ascii_whitespace())),
            Err(e) => return Part::Unreadable(format!("{}: {e}", path.display())),
        }
    }
}

/// The records of a JSONL file; a line that does not parse (e.g. one a running stage is still
/// writing) is skipped with a warning naming the file and line.
fn read_jsonl<T: DeserializeOwned>(path: &Path, warnings: &mut Vec<String>) -> Part<Vec<T>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return retype(missing_or(path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    let (mut records, mut bad) = (Vec::new(), 0usize);
    for line_no in 1.. {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Part::Unreadable(format!("{}:{line_no}: {e}", path.display())),
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<T>(&raw) {
            Ok(r) => records.push(r),
            Err(e) => {
                bad += 1;
                if bad <= MAX_WARNINGS_PER_FILE {
                    warnings.push(format!("{}:{line_no}: {e} (line skipped)", path.display()));
                }
            }
        }
    }
    if bad > MAX_WARNINGS_PER_FILE {
        warnings.push(format!(
            "{}: {} more malformed lines skipped",
            path.display(),
            bad - MAX_WARNINGS_PER_FILE
        ));
    }
    Part::Loaded(records)
}
