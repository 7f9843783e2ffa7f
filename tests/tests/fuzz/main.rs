//! Issue 17: every parser of outside input fuzzed, with no panic, no abort and no allocation
//! beyond a stated bound.
//!
//! Each test is one parser: valid seed files (built here or read from the repository, all small)
//! are mutated (structure-aware first: JSON trees, JSONL records, TOML lines, Jinja source, GGUF
//! fields; then byte-level) and handed to the parser's public entry point, through the same code
//! path the commands use (in memory, or files in a scratch directory for path-based readers).
//! Every case must return (an `Ok` or an error); a panic fails the test, and its input is kept
//! under `$CARGO_TARGET_TMPDIR/fuzz-failures/`. The counting allocator (`alloc.rs`) measures the
//! peak heap of each call, which must stay within the parser's stated bound
//! `per_byte × input bytes + fixed`.
//!
//! Cases per parser: `SEALONG_FUZZ_CASES` (default 2,000, what CI runs; `scripts/fuzz.sh` runs
//! 100,000). `SEALONG_FUZZ_SEED` changes the stream; `SEALONG_FUZZ_RESULTS` names a file that
//! gets one tab-separated line per parser (name, cases, ok, errors, panics, over-bound, largest
//! peak, its input, seconds).
//!
//! This is its own test binary (not a module of `suite`) because a global allocator applies to
//! the whole binary.

mod alloc;
mod mutate;
mod regressions;
mod targets;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sealong_tests::SplitMix;

/// One input: named files (most parsers read one).
pub type Case = Vec<(String, Vec<u8>)>;

/// How a parser's files are mutated.
#[derive(Clone, Copy)]
pub enum Kind {
    Binary,
    Json,
    Jsonl,
    Toml,
    Template,
    Gguf,
    /// Never mutated (a fixed companion file).
    Fixed,
}

/// A parser under fuzzing.
pub struct Target {
    pub name: &'static str,
    /// Valid inputs; each must parse (checked first).
    pub seeds: Vec<Case>,
    /// The mutation of each file, by index in the case.
    pub kinds: Vec<Kind>,
    /// Peak heap bound: `per_byte × input bytes + fixed`.
    pub per_byte: usize,
    pub fixed: usize,
    /// Whether the case's files are written to a scratch directory first (path-based readers).
    pub files: bool,
    /// Parses one case (files under the scratch directory when `files`). `Err` is a clean
    /// rejection.
    #[allow(clippy::type_complexity)]
    pub run: Box<dyn Fn(&Case, &Path) -> Result<(), String>>,
}

fn cases() -> u64 {
    std::env::var("SEALONG_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2000)
}

fn base_seed() -> u64 {
    std::env::var("SEALONG_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x5EA1_0F17)
}

/// FNV-1a of the parser's name, so each parser has its own stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Case `i` of `t`: a seed with one to three of its files mutated.
pub fn make_case(t: &Target, i: u64) -> Case {
    let mut rng = SplitMix(base_seed() ^ name_hash(t.name) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut case = t.seeds[rng.below(t.seeds.len())].clone();
    let mutable: Vec<usize> = (0..case.len())
        .filter(|&f| !matches!(t.kinds[f], Kind::Fixed))
        .collect();
    for _ in 0..1 + rng.below(2) {
        let f = mutable[rng.below(mutable.len())];
        let others: Vec<&[u8]> = t
            .seeds
            .iter()
            .filter_map(|s| s.get(f))
            .map(|(_, b)| b.as_slice())
            .collect();
        let data = &mut case[f].1;
        match t.kinds[f] {
            Kind::Binary => mutate::mutate_bytes(&mut rng, data, &others, false),
            Kind::Json => mutate::mutate_json(&mut rng, data, &others),
            Kind::Jsonl => mutate::mutate_jsonl(&mut rng, data, &others),
            Kind::Toml => mutate::mutate_toml(&mut rng, data, &others),
            Kind::Template => mutate::mutate_template_case(&mut rng, data, &others),
            Kind::Gguf => targets::mutate_gguf(&mut rng, data, &others),
            Kind::Fixed => {}
        }
    }
    case
}

fn write_case(dir: &Path, case: &Case) {
    for (name, bytes) in case {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("scratch dir");
        }
        std::fs::write(&p, bytes).expect("scratch file");
    }
}

fn failure_dir(name: &str, i: u64) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(format!("{name}-{i}"))
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub cases: u64,
    pub ok: u64,
    pub errors: u64,
    pub panics: Vec<u64>,
    pub over_bound: Vec<(u64, usize, usize)>,
    /// The highest peak seen and the size of that input.
    pub max_peak: (usize, usize),
    pub seconds: f64,
}

/// Runs `t` on its seeds (each must parse) and `n` mutated cases.
pub fn fuzz(t: &Target, n: u64) -> Outcome {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut out = Outcome::default();
    let t0 = Instant::now();
    let bound = |input: usize| t.per_byte.saturating_mul(input).saturating_add(t.fixed);
    let mut one = |case: &Case, i: Option<u64>| -> Result<(), String> {
        let dir = scratch
            .path()
            .join(i.map_or_else(|| "seed".to_string(), |i| (i % 2).to_string()));
        if t.files {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            write_case(&dir, case);
        }
        let input: usize = case.iter().map(|(_, b)| b.len()).sum();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            alloc::measure(t.name, i.unwrap_or(u64::MAX), || (t.run)(case, &dir))
        }));
        let keep = |why: &str| {
            let d = failure_dir(t.name, i.unwrap_or(u64::MAX));
            let _ = std::fs::create_dir_all(&d);
            write_case(&d, case);
            eprintln!("fuzz {}: case {i:?} {why}; input kept in {}", t.name, d.display());
        };
        match r {
            Err(_) => {
                out.panics.push(i.unwrap_or(u64::MAX));
                keep("panicked");
                Err("panic".into())
            }
            Ok((result, usage)) => {
                if usage.peak > out.max_peak.0 {
                    out.max_peak = (usage.peak, input);
                }
                if usage.peak > bound(input) {
                    out.over_bound.push((i.unwrap_or(u64::MAX), usage.peak, input));
                    keep(&format!(
                        "peaked at {} bytes (largest allocation {}) on {input} input bytes, over the bound {}",
                        usage.peak,
                        usage.largest,
                        bound(input)
                    ));
                }
                result
            }
        }
    };
    for (k, seed) in t.seeds.iter().enumerate() {
        if let Err(e) = one(seed, None) {
            panic!("fuzz {}: seed {k} does not parse: {e}", t.name);
        }
    }
    for i in 0..n {
        let case = make_case(t, i);
        match one(&case, Some(i)) {
            Ok(()) => out.ok += 1,
            Err(_) => out.errors += 1,
        }
    }
    out.cases = n;
    out.seconds = t0.elapsed().as_secs_f64();
    out
}

/// Fuzzes one target, reports, and fails on a panic or an over-bound allocation.
pub fn check(t: Target) {
    // Panics print their message, never a backtrace: a parser's panic the code catches and
    // turns into an error (`Tokenizer`'s guard) would otherwise count the backtrace's
    // symbolization (tens of MB with RUST_BACKTRACE set) against the parser's bound.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    let n = cases();
    let o = fuzz(&t, n);
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\tper_byte={} fixed_mib={}",
        t.name,
        o.cases,
        o.ok,
        o.errors - o.panics.len() as u64,
        o.panics.len(),
        o.over_bound.len(),
        o.max_peak.0,
        o.max_peak.1,
        o.seconds,
        t.per_byte,
        t.fixed >> 20
    );
    println!("fuzz\t{line}");
    if let Ok(path) = std::env::var("SEALONG_FUZZ_RESULTS") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("results file");
        writeln!(f, "{line}").expect("results file");
    }
    assert!(
        o.panics.is_empty(),
        "{}: {} of {} cases panicked (first: case {}); inputs under {}",
        t.name,
        o.panics.len(),
        o.cases,
        o.panics[0],
        failure_dir(t.name, 0).parent().map(Path::display).expect("parent")
    );
    assert!(
        o.over_bound.is_empty(),
        "{}: {} cases allocated over the bound (first: case {}, peak {} bytes on {} input bytes)",
        t.name,
        o.over_bound.len(),
        o.over_bound[0].0,
        o.over_bound[0].1,
        o.over_bound[0].2
    );
    // The mutations must reach past the first check: some cases parse, some are rejected.
    if o.cases >= 500 {
        assert!(
            o.ok > 0,
            "{}: no mutated case parsed; the mutations are too coarse",
            t.name
        );
        assert!(o.errors > 0, "{}: no mutated case was rejected", t.name);
    }
}
