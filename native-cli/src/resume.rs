//! What the stages share about resuming with the same settings: the fingerprint of a model as
//! recorded in an output's settings sidecar (core's `data::settings`), and the check itself with
//! its warnings printed. Which settings shape a stage's records is each stage's own decision,
//! written next to its records.

use std::path::Path;

use anyhow::{Context, Result};
use sealong::data::settings::{self, Recorded, Settings};

/// The sha256 of a `--model` / `--embedder` / `--adapter` value (a default name or a path).
pub fn model_sha256(spec: &str) -> Result<String> {
    let path = crate::provision::resolve_model(spec)?;
    sealong::loading::model_files::sha256_of(&path).with_context(|| format!("fingerprinting the model {spec}"))
}

/// Refuses a resume of `output` with settings other than those it was made with, or records
/// this run's settings; an older output without a sidecar is adopted with a warning.
pub fn check(output: &Path, stage: &str, settings: &Settings, has_records: bool) -> Result<()> {
    match settings::check_or_record(output, stage, settings, has_records)? {
        Recorded::Fresh | Recorded::Same => {}
        Recorded::Adopted => errln!(
            "warning: {} has no settings record (made by an older version); assuming it was made with \
             this run's settings and recording them in {}",
            output.display(),
            settings::sidecar_path(output).display()
        ),
        Recorded::Extended(keys) => errln!(
            "note: {}: recorded settings added by this version: {}",
            output.display(),
            keys.join(", ")
        ),
    }
    Ok(())
}

/// `name = value` pairs as settings.
pub fn settings<const N: usize>(pairs: [(&str, serde_json::Value); N]) -> Settings {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
