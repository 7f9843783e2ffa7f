//! The settings sidecar of a resumable output: `OUT.meta.json` beside `OUT` records the settings
//! that shape the records (model fingerprint, N, temperature, seed, scorer, ...), so that a rerun
//! with other settings is refused instead of appending records made differently to the same file.
//!
//! Policy (each stage decides only *which* settings shape its records):
//! - no records yet: the sidecar is (re)written with this run's settings;
//! - records and a sidecar: every setting both know must be equal, else the error names each
//!   difference (field, the file's value, this run's value) and how to start afresh; settings
//!   the sidecar lacks (added by a newer version) are added to it;
//! - records without a sidecar (an output of a version before sidecars): adopted, the sidecar
//!   written with this run's settings and [`Recorded::Adopted`] returned so that the caller warns.
//!   Refusing would strand every old run, and the old records cannot be checked anyway.
//!
//! Settings that do not change a record (threads, progress, concurrency, the device of the same
//! model, the server's address) are left out by the stages, so they never cause a refusal.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Setting name -> value, as recorded.
pub type Settings = Map<String, Value>;

/// What [`check_or_record`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// No records yet; the sidecar holds this run's settings.
    Fresh,
    /// Records made with the same settings: resume.
    Same,
    /// Records without a sidecar (an older version's): adopted with this run's settings.
    Adopted,
    /// Same settings; these ones were missing from the sidecar and were added.
    Extended(Vec<String>),
}

/// `OUT.meta.json` for `OUT`.
pub fn sidecar_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".meta.json");
    output.with_file_name(name)
}

/// Compares this run's `settings` for `stage` with those recorded beside `output`, or records
/// them (see the module doc). `has_records` says whether `output` already holds work that a
/// resume would continue.
pub fn check_or_record(output: &Path, stage: &str, settings: &Settings, has_records: bool) -> Result<Recorded> {
    let sidecar = sidecar_path(output);
    let write = |s: &Settings| -> Result<()> {
        let v = json!({"stage": stage, "settings": s});
        let mut bytes = serde_json::to_vec_pretty(&v).map_err(|e| Error::Invalid(e.to_string()))?;
        bytes.push(b'\n');
        crate::files::write_atomic(&sidecar, &bytes)
    };
    if !has_records {
        write(settings)?;
        return Ok(Recorded::Fresh);
    }
    let bytes = match std::fs::read(&sidecar) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write(settings)?;
            return Ok(Recorded::Adopted);
        }
        Err(e) => return Err(Error::io(&sidecar, e)),
    };
    let old: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Invalid(format!(
            "{}: not valid JSON ({e}); it records the settings {} was made with. Restore it, or \
             delete it to adopt the output with this run's settings",
            sidecar.display(),
            output.display()
        ))
    })?;
    let (Some(old_stage), Some(old_settings)) = (old["stage"].as_str(), old["settings"].as_object()) else {
        return Err(Error::Invalid(format!(
            "{}: expected {{\"stage\": ..., \"settings\": {{...}}}}; delete it to adopt {} with this run's settings",
            sidecar.display(),
            output.display()
        )));
    };
    let mut diffs = Vec::new();
    if old_stage != stage {
        diffs.push(format!("stage = {old_stage:?} (this run: {stage:?})"));
    }
    let mut missing = Vec::new();
    for (k, new) in settings {
        match old_settings.get(k) {
            Some(v) if v == new => {}
            Some(v) => diffs.push(format!("{k} = {v} (this run: {new})")),
            None => missing.push(k.clone()),
        }
    }
    if !diffs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} was made with other settings: {}. Resuming would mix records made differently in one \
             file; to start afresh, delete {} and {}, or write to another output path",
            output.display(),
            diffs.join(", "),
            output.display(),
            sidecar.display()
        )));
    }
    if missing.is_empty() {
        return Ok(Recorded::Same);
    }
    let mut merged = old_settings.clone();
    for k in &missing {
        merged.insert(k.clone(), settings[k].clone());
    }
    write(&merged)?;
    Ok(Recorded::Extended(missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, Value)]) -> Settings {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn the_sidecar_sits_beside_the_output() {
        assert_eq!(
            sidecar_path(Path::new("runs/a/samples.jsonl")),
            PathBuf::from("runs/a/samples.jsonl.meta.json")
        );
    }

    /// Issue 17: a rerun with another N or seed appended records made differently to the same
    /// file. Now it is refused, naming each difference; the same settings resume.
    #[test]
    fn other_settings_are_refused_naming_the_field_and_same_settings_resume() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("samples.jsonl");
        let a = settings(&[("n", json!(4)), ("seed", json!(5)), ("model_sha256", json!("ab"))]);
        assert_eq!(
            check_or_record(&out, "sample", &a, false).expect("fresh"),
            Recorded::Fresh
        );
        assert_eq!(check_or_record(&out, "sample", &a, true).expect("same"), Recorded::Same);
        let b = settings(&[("n", json!(3)), ("seed", json!(6)), ("model_sha256", json!("ab"))]);
        let e = check_or_record(&out, "sample", &b, true)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("n = 4 (this run: 3)"), "{e}");
        assert!(e.contains("seed = 5 (this run: 6)"), "{e}");
        assert!(
            e.contains("samples.jsonl.meta.json") && e.contains("another output path"),
            "{e}"
        );
        // The refusal changed nothing: the first settings still resume.
        assert_eq!(check_or_record(&out, "sample", &a, true).expect("same"), Recorded::Same);
        // Another stage's output is refused too.
        let e = check_or_record(&out, "score", &a, true).expect_err("stage").to_string();
        assert!(e.contains("stage = \"sample\" (this run: \"score\")"), "{e}");
        // Without records, new settings simply replace the sidecar.
        assert_eq!(
            check_or_record(&out, "sample", &b, false).expect("fresh"),
            Recorded::Fresh
        );
        assert_eq!(check_or_record(&out, "sample", &b, true).expect("same"), Recorded::Same);
    }

    #[test]
    fn an_output_without_a_sidecar_is_adopted_and_new_settings_are_added() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("scored.jsonl");
        let a = settings(&[("method", json!("embedding"))]);
        assert_eq!(
            check_or_record(&out, "score", &a, true).expect("adopt"),
            Recorded::Adopted
        );
        assert!(sidecar_path(&out).is_file());
        let b = settings(&[("method", json!("embedding")), ("seed", json!(1))]);
        assert_eq!(
            check_or_record(&out, "score", &b, true).expect("extend"),
            Recorded::Extended(vec!["seed".into()])
        );
        let c = settings(&[("method", json!("embedding")), ("seed", json!(2))]);
        let e = check_or_record(&out, "score", &c, true)
            .expect_err("seed recorded")
            .to_string();
        assert!(e.contains("seed = 1 (this run: 2)"), "{e}");
        std::fs::write(sidecar_path(&out), "{not json").expect("write");
        let e = check_or_record(&out, "score", &a, true).expect_err("bad").to_string();
        assert!(e.contains("scored.jsonl.meta.json: not valid JSON"), "{e}");
    }
}
