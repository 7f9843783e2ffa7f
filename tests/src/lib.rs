//! Shared helpers for the end-to-end, parity and CLI tests: where the golden files and shipped
//! data are, reading them, and the provisioned default models.

use std::path::{Path, PathBuf};

pub mod tiny;

use serde_json::Value;

/// `tests/golden/` (copies of the reference vectors; see PROVENANCE.md there).
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A shipped data file, e.g. `data_file("musique/train.jsonl")`.
pub fn data_file(rel: &str) -> PathBuf {
    repo_root().join("data").join(rel)
}

/// Reads a golden JSON file.
pub fn golden_json(name: &str) -> Value {
    let path = golden_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The default decoder (SmolLM2-135M-Instruct Q4_1 GGUF), fetched into the cache if needed.
pub fn smollm_path() -> PathBuf {
    sealong_cli::provision::resolve_model(sealong_cli::provision::DEFAULT_DECODER)
        .unwrap_or_else(|e| panic!("the default decoder is not available (run `sealong models fetch`): {e:#}"))
}

/// The default embedder directory (all-MiniLM-L6-v2), fetched into the cache if needed.
pub fn minilm_path() -> PathBuf {
    sealong_cli::provision::resolve_model(sealong_cli::provision::DEFAULT_EMBEDDER)
        .unwrap_or_else(|e| panic!("the default embedder is not available (run `sealong models fetch`): {e:#}"))
}

/// `value[key]` as a string, panicking with the key's name.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("golden field {key:?} is not a string: {}", v[key]))
}

/// `value[key]` as a list of u32 ids.
pub fn ids(v: &Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("golden field {key:?} is not a list"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("non-integer id in {key:?}")) as u32)
        .collect()
}

/// Runs a `sealong` command line in-process (same code path as the binary after parsing).
pub fn sealong(args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let mut argv = vec!["sealong"];
    argv.extend_from_slice(args);
    let cli = sealong_cli::args::Cli::try_parse_from(argv)?;
    sealong_cli::run(cli)
}
