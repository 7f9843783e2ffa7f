//! Core's floors, checked: which top-level modules each module may import (ARCHITECTURE.md,
//! "Core's floors"). Review alone let edges creep in (`nn` reached into the decoder for `Weight`,
//! `quant` into the GGUF parser for `GgmlType`, the encoder into the decoder for the safetensors
//! finder), so the map is a test: an import outside it fails here with the file and line.

use std::path::{Path, PathBuf};

/// Each top-level module and the others it may import (`crate::X` in code, comments aside;
/// `crate::{Error, Result}`, the root's re-exports of `error`, count as `error`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("rng", &[]),
    ("mem", &[]),
    // Atomic whole-file writes: every module that writes an output whole goes through it.
    ("files", &["error"]),
    ("quant", &["error"]),
    // The tokenizer is rebuilt from GGUF metadata, and `TextAssets` loads tokenizer and template.
    ("text", &["error", "loading"]),
    // The safetensors writer (exports, checkpoints) writes through `files`.
    ("loading", &["error", "files", "quant", "text"]),
    ("nn", &["error", "loading", "quant", "rng"]),
    // `nn::linear::Precision` picks the host kernels.
    ("ops", &["error", "nn", "quant"]),
    ("models", &["error", "loading", "nn", "ops", "quant", "text"]),
    ("data", &["error", "files", "rng", "text"]),
    ("eval", &["error", "rng", "text"]),
    ("generate", &["data", "error", "loading", "models", "rng", "text"]),
    (
        "mbr",
        &["error", "generate", "loading", "models", "quant", "rng", "text"],
    ),
    (
        "train",
        &[
            "data", "error", "files", "loading", "mem", "models", "nn", "rng", "text",
        ],
    ),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            rust_files(&p, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a line of code names through `crate::`.
fn imported(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
            None => vec![rest],
        };
        for name in names {
            let name: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            found.push(if name == "Error" || name == "Result" {
                "error".into()
            } else {
                name
            });
        }
    }
    found
}

#[test]
fn core_modules_import_only_their_floors() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (module, allowed) in ALLOWED {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        rust_files(&src.join(format!("{module}.rs")), &mut files);
        assert!(!files.is_empty(), "module {module} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for to in imported(line) {
                    if to != *module && !allowed.contains(&to.as_str()) {
                        bad.push(format!("{}:{}: {module} -> {to}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports outside core's floors:\n{}", bad.join("\n"));
}

#[test]
fn every_top_level_module_has_a_floor() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("lib.rs");
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ").and_then(|m| m.strip_suffix(';')) {
            assert!(
                ALLOWED.iter().any(|(name, _)| *name == m),
                "module {m} is missing from ALLOWED"
            );
        }
    }
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    assert_eq!(imported("use crate::loading::gguf::GgmlType;"), ["loading"]);
    assert_eq!(imported("use crate::{Error, Result};"), ["error", "error"]);
    assert_eq!(
        imported("let f = crate::models::files::safetensors_files(crate::nn::x);"),
        ["models", "nn"]
    );
    assert!(imported("let x = 1;").is_empty());
}
