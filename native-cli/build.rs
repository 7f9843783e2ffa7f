//! Embeds the browser page (`web/www`: its HTML, JS, CSS and the wasm-bindgen output of its two
//! modules in `pkg/` and `pkg-gpu/`) into the binary, so `sealong view` works from an installed
//! binary with no source tree.
//!
//! `pkg/` and `pkg-gpu/` are built by `bash web/build.sh` and is not committed, so a fresh clone's first `cargo
//! build` may run before it exists. Then the page is embedded without `pkg/` and `HAS_WASM` is
//! false; `sealong view` says how to fix it (build the wasm and rebuild, or pass `--www`). Watching the whole `web/www` directory (not
//! `pkg/`, which may be absent: cargo reruns a build script on every build while a watched path
//! is missing) re-embeds the page whenever web/build.sh or an edit changes it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let www = manifest.join("..").join("web").join("www");
    println!("cargo:rerun-if-changed={}", www.display());
    // The page's two modules (web/build.sh): `pkg/` the CPU module, which the page needs;
    // `pkg-gpu/` the WebGPU module, which its worker imports only for WebGPU (without it, the
    // page says WebGPU failed and computes on the CPU).
    let built = |dir: &str| {
        ["sealong_web.js", "sealong_web_bg.wasm"]
            .iter()
            .all(|f| www.join(dir).join(f).is_file())
    };
    let (has_wasm, has_gpu_wasm) = (built("pkg"), built("pkg-gpu"));
    let mut files = Vec::new();
    collect(&www, "", &mut files);
    // Without both halves of a module's wasm-bindgen output, none of it: a page that half loads
    // is worse than the clear message.
    files
        .retain(|(name, _)| (has_wasm || !name.starts_with("pkg/")) && (has_gpu_wasm || !name.starts_with("pkg-gpu/")));
    files.sort();
    let mut code = String::new();
    let _ = writeln!(
        code,
        "/// Whether `pkg/` (the page's wasm) was built when this binary compiled."
    );
    let _ = writeln!(code, "pub const HAS_WASM: bool = {has_wasm};");
    let _ = writeln!(
        code,
        "/// The page's files: name relative to `web/www` ('/'-separated), bytes."
    );
    let _ = writeln!(code, "pub static FILES: &[(&str, &[u8])] = &[");
    for (name, path) in &files {
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    let _ = writeln!(code, "];");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("page.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// Every regular file under `dir` (dot files skipped), as (name relative to the page, path).
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = format!("{prefix}{name}");
        if path.is_dir() {
            collect(&path, &format!("{rel}/"), out);
        } else if path.is_file() {
            out.push((rel, path));
        }
    }
}
