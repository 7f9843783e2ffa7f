//! The import order of the two layered crates, checked: core's floors (which top-level modules
//! each module may import; ARCHITECTURE.md, "Core's floors") and native-cli's layers (each
//! module imports only modules on lower layers; ARCHITECTURE.md, "native-cli"). Review alone let
//! edges creep in (core's `nn` reached into the decoder for `Weight`, `quant` into the GGUF
//! parser; native-cli once had a cycle of ten files), so both maps are tests: an import outside
//! them fails here with the file and line. One scanner reads both crates: comments and string
//! contents are not imports, and use trees (`crate::{a, b::{c}}`) are read whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealong_tests::repo_root;

/// Each top-level module and the others it may import (`crate::X` in code, comments aside;
/// `crate::{Error, Result}`, the root's re-exports of `error`, count as `error`).
const CORE_FLOORS: &[(&str, &[&str])] = &[
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

/// The layers, bottom first: a module may import only modules of earlier entries. A module is a
/// top-level file (`args`), a command (`commands::score`, a file or a directory under
/// `commands/`), `commands` itself (commands/mod.rs) or `crate` (lib.rs, main.rs).
const CLI_LAYERS: &[&[&str]] = &[
    // The crate's edges to the terminal, threads, devices and the model cache.
    &["output", "progress", "pool", "device", "provision"],
    // The settings-sidecar check; the flag groups the commands share.
    &["resume", "args"],
    // Loading a decoder and its answers, what generate/sample/eval/bench share.
    &["decode"],
    // The OpenAI-compatible backend and its flags (`BackendArgs`), used by sample and eval.
    &["openai"],
    // Helpers commands share: the bench figures, SubEM's file naming and prediction fields.
    &["commands::bench_common", "commands::subem"],
    // The commands.
    &[
        "commands::bench_scoring",
        "commands::bench_train",
        "commands::embed",
        "commands::eval",
        "commands::generate",
        "commands::models",
        "commands::report",
        "commands::sample",
        "commands::score",
        "commands::synth",
        "commands::tokenize",
        "commands::train",
        "commands::view",
    ],
    // Commands made of commands: `bench` dispatches to its parts, `run` builds on the stages
    // (and is handed the CLI's `run_line` instead of importing it), `study prompts` runs eval.
    &["commands::bench", "commands::run", "commands::study"],
    &["commands"],
    // `Cli`, `Command` and the dispatch.
    &["cli"],
    &["crate"],
];

fn cli_layer(module: &str) -> Option<usize> {
    CLI_LAYERS.iter().position(|l| l.contains(&module))
}

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

/// The native-cli module a file under src/ belongs to.
fn cli_module_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => "crate".into(),
        [one] => one.clone(),
        [dir, file] if file == "mod" => dir.clone(),
        [dir, rest @ ..] if dir == "commands" => format!("commands::{}", rest[0]),
        [dir, ..] => dir.clone(),
        [] => unreachable!("empty path"),
    }
}

/// A file's text without comments (`//…` to the end of the line; `/* … */`), string contents
/// kept out of the way: a path written in a string or comment is not an import.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if let Some(hashes) = raw_string_at(b, i) {
            // A raw string r"…" or r#"…"# (br too): to the quote followed by as many hashes.
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            let end = text[body..].find(&close).map_or(b.len(), |e| body + e + close.len());
            out.extend(std::iter::repeat_n('\n', text[i..end].matches('\n').count()));
            out.push_str("\"\"");
            i = end;
        } else if b[i] == b'"' {
            // Strings: keep the newlines (for line numbers), drop the text.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A one-character literal such as '"' or '{'.
            out.push_str("' '");
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            let end = text[i + 2..].find('\'').map_or(b.len(), |e| i + 3 + e);
            out.push_str("' '");
            i = end;
        } else {
            let c = text[i..].chars().next().expect("char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether a raw string (`r"`, `r#"`, `br"`) starts at `i`, and its number of hashes.
fn raw_string_at(b: &[u8], i: usize) -> Option<usize> {
    let ident = |k: usize| b[k].is_ascii_alphanumeric() || b[k] == b'_';
    let starts = b[i] == b'r' && (i == 0 || !ident(i - 1) || (b[i - 1] == b'b' && (i < 2 || !ident(i - 2))));
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (starts && b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The paths of a use tree starting at `s` (after `crate::` or `super::`), as segment lists,
/// e.g. `commands::{bench, run as r}` gives `[commands, bench]` and `[commands, run]`.
fn use_paths(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < s.len() && s[*i].is_whitespace() {
                *i += 1;
            }
            if *i < s.len() && s[*i] == '{' {
                *i += 1;
                loop {
                    tree(s, i, &path, out);
                    while *i < s.len() && s[*i].is_whitespace() {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < s.len() && s[*i].is_whitespace() {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && (s[*i].is_alphanumeric() || s[*i] == '_' || s[*i] == '*') {
                *i += 1;
            }
            let name: String = s[start..*i].iter().collect();
            if !name.is_empty() && name != "self" && name != "*" {
                path.push(name);
            }
            if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
                *i += 2;
                continue;
            }
            if path.len() > prefix.len() || path.is_empty() {
                out.push(path);
            } else if !prefix.is_empty() {
                out.push(prefix.to_vec());
            }
            // Skip an `as name`.
            let rest: String = s[*i..].iter().take(4).collect();
            if rest.trim_start().starts_with("as ") {
                while *i < s.len() && s[*i].is_whitespace() {
                    *i += 1;
                }
                *i += 2;
                while *i < s.len() && s[*i].is_whitespace() {
                    *i += 1;
                }
                while *i < s.len() && (s[*i].is_alphanumeric() || s[*i] == '_') {
                    *i += 1;
                }
            }
            return;
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    tree(&chars, &mut 0, &[], &mut out);
    out
}

/// Which module a `crate::`-rooted path names: a command, a top-level module, or the crate root
/// (its own items and re-exports, e.g. `crate::run`). `outln!`/`errln!` are `output`'s macros.
fn cli_target(path: &[String], modules: &[String]) -> String {
    let first = path.first().map_or("", String::as_str);
    match first {
        "outln" | "errln" => "output".into(),
        "commands" => match path.get(1) {
            Some(c) if modules.contains(&format!("commands::{c}")) => format!("commands::{c}"),
            _ => "commands".into(),
        },
        m if modules.iter().any(|x| x == m) => m.into(),
        _ => "crate".into(),
    }
}

/// Every import in a native-cli file: (1-based line, module imported).
fn cli_imports(rel: &Path, text: &str, modules: &[String]) -> Vec<(usize, String)> {
    let code = code_of(text);
    let me = cli_module_of(rel);
    let mut found = Vec::new();
    for (root, is_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(k) = code[from..].find(root) {
            let at = from + k;
            from = at + root.len();
            // `$crate::` (in output's macros) is a macro's own path, not an import.
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            for path in use_paths(&code[from..]) {
                let to = if is_super {
                    // `super::x` from commands/y.rs names the sibling command x; otherwise it
                    // is the file's own parent (a test module's `use super::*`).
                    match (me.strip_prefix("commands::"), path.first()) {
                        (Some(_), Some(x)) if modules.contains(&format!("commands::{x}")) => {
                            format!("commands::{x}")
                        }
                        _ => continue,
                    }
                } else {
                    cli_target(&path, modules)
                };
                if to != me && !found.contains(&(line, to.clone())) {
                    found.push((line, to));
                }
            }
        }
    }
    found
}

/// The top-level core modules a core file imports (`crate::X`; the root's re-exports `Error`
/// and `Result` are `error`'s): (1-based line, module).
fn core_imports(text: &str) -> Vec<(usize, String)> {
    let code = code_of(text);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(k) = code[from..].find("crate::") {
        let at = from + k;
        from = at + "crate::".len();
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        for path in use_paths(&code[from..]) {
            let Some(first) = path.first() else { continue };
            let to = if first == "Error" || first == "Result" {
                "error".to_string()
            } else {
                first.clone()
            };
            if !found.contains(&(line, to.clone())) {
                found.push((line, to));
            }
        }
    }
    found
}

fn cli_sources() -> (PathBuf, Vec<PathBuf>, Vec<String>) {
    let src = repo_root().join("native-cli/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules: Vec<String> = files
        .iter()
        .map(|f| cli_module_of(f.strip_prefix(&src).expect("under src")))
        .collect();
    modules.sort();
    modules.dedup();
    (src, files, modules)
}

#[test]
fn core_modules_import_only_their_floors() {
    let src = repo_root().join("core/src");
    let mut bad = Vec::new();
    let mut seen = 0;
    for (module, allowed) in CORE_FLOORS {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        rust_files(&src.join(format!("{module}.rs")), &mut files);
        assert!(!files.is_empty(), "module {module} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (line, to) in core_imports(&text) {
                seen += 1;
                if to != *module && !allowed.contains(&to.as_str()) {
                    bad.push(format!("{}:{line}: {module} -> {to}", file.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports outside core's floors:\n{}", bad.join("\n"));
    assert!(seen > 100, "the check saw only {seen} imports in core");
}

#[test]
fn every_top_level_core_module_has_a_floor() {
    let lib = std::fs::read_to_string(repo_root().join("core/src/lib.rs")).expect("lib.rs");
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ").and_then(|m| m.strip_suffix(';')) {
            assert!(
                CORE_FLOORS.iter().any(|(name, _)| *name == m),
                "module {m} is missing from CORE_FLOORS"
            );
        }
    }
}

#[test]
fn core_imports_are_read_from_paths_and_groups() {
    let found = |t: &str| -> Vec<String> { core_imports(t).into_iter().map(|(_, m)| m).collect() };
    assert_eq!(found("use crate::loading::gguf::GgmlType;"), ["loading"]);
    assert_eq!(found("use crate::{Error, Result};"), ["error"]);
    assert_eq!(
        found("let f = crate::models::files::safetensors_files(crate::nn::x);"),
        ["models", "nn"]
    );
    assert_eq!(
        found("use crate::{\n    eval::x,\n    text::{a, b},\n};"),
        ["eval", "text"]
    );
    assert!(found("let x = 1; // crate::models\nlet s = \"crate::nn\";").is_empty());
}

#[test]
fn cli_modules_import_only_lower_layers() {
    let (src, files, modules) = cli_sources();
    let mut bad = Vec::new();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let me = cli_module_of(rel);
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (line, to) in cli_imports(rel, &text, &modules) {
            edges.entry(me.clone()).or_default().push(to.clone());
            match (cli_layer(&me), cli_layer(&to)) {
                (Some(a), Some(b)) if b < a => {}
                _ => bad.push(format!("{}:{line}: {me} -> {to}", file.display())),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against native-cli's layers (CLI_LAYERS in tests/tests/suite/import_order.rs, ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
    // The check sees the imports it should: a few known edges.
    for (from, to) in [
        ("cli", "commands::run"),
        ("commands::run", "commands::train"),
        ("openai", "decode"),
    ] {
        assert!(
            edges.get(from).is_some_and(|e| e.iter().any(|t| t == to)),
            "{from} -> {to} not found: {edges:?}"
        );
    }
}

#[test]
fn every_cli_module_has_a_layer() {
    let (_, _, modules) = cli_sources();
    for m in &modules {
        assert!(
            cli_layer(m).is_some(),
            "module {m} is missing from CLI_LAYERS (tests/tests/suite/import_order.rs)"
        );
    }
    for layer in CLI_LAYERS {
        for m in *layer {
            assert!(
                modules.iter().any(|x| x == m),
                "CLI_LAYERS names {m}, which has no file"
            );
        }
    }
}

#[test]
fn cli_imports_are_read_from_paths_trees_and_siblings() {
    let modules: Vec<String> = ["args", "cli", "output", "commands", "commands::run", "commands::train"]
        .map(String::from)
        .to_vec();
    let rel = Path::new("commands/run.rs");
    let found = |text: &str| -> Vec<String> { cli_imports(rel, text, &modules).into_iter().map(|(_, m)| m).collect() };
    assert_eq!(found("use crate::args::{DeviceArgs, ModelArgs};"), ["args"]);
    assert_eq!(
        found("use crate::{args, cli::{self, Cli}};\nlet x = crate::commands::train::resolve(r);"),
        ["args", "cli", "commands::train"]
    );
    assert_eq!(
        found("use crate::commands::{\n    run as r,\n    train,\n};"),
        ["commands::train"]
    );
    assert_eq!(found("crate::run(cli)"), ["crate"]);
    assert_eq!(
        found("use super::train::Recipe;\nuse super::*;\nuse super::{Stages, s};"),
        ["commands::train"]
    );
    assert_eq!(found("crate::outln!(\"x\")"), ["output"]);
    assert!(found("// crate::cli\n/* crate::cli */ let s = \"crate::cli\"; $crate::output::print(x)").is_empty());
    assert_eq!(
        found(
            "let s = r#\"a \"crate::cli\" b\"#; let c = '\"'; let d = br#\"crate::cli\"#; let r#type = crate::cli::x;"
        ),
        ["cli"]
    );
    assert_eq!(
        cli_imports(rel, "let a = 1;\n\nuse crate::cli::Cli;", &modules),
        [(3, "cli".to_string())]
    );
    assert_eq!(cli_module_of(Path::new("commands/mod.rs")), "commands");
    assert_eq!(cli_module_of(Path::new("commands/bench/parts.rs")), "commands::bench");
    assert_eq!(cli_module_of(Path::new("main.rs")), "crate");
}
