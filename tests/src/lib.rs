//! Shared helpers for the end-to-end, parity and CLI tests: where the golden files and shipped
//! data are, reading them, and the provisioned default models.

use std::path::{Path, PathBuf};

pub mod eager;
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

/// The python of the llama-cpp-python[server] venv (`SEALONG_OPENAI_SERVER_PYTHON`, which
/// scripts/test.sh sets, else the peers' default venv): the remote backend's test server and
/// llama.cpp's quantizer. Missing is a failure, not a skip.
pub fn llama_cpp_python() -> PathBuf {
    const ENV: &str = "SEALONG_OPENAI_SERVER_PYTHON";
    let p = std::env::var_os(ENV).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/peers-venv/llamacpp-server/bin/python")
    });
    assert!(
        p.exists(),
        "{} does not exist: install it with `bash bench/peers/_venv.sh llamacpp-server -- -c pass` \
         (scripts/test.sh does) or point {ENV} at a python that has llama-cpp-python[server]",
        p.display()
    );
    p
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
    let cli = sealong_cli::cli::Cli::try_parse_from(argv)?;
    sealong_cli::run(cli)
}

/// This test binary re-run for one `#[ignore]`d child test, as the tests that kill a process
/// mid-run or measure a process's peak memory need. `module` is the caller's `module_path!()`:
/// the suite is one binary, so the child's full name is `module::name` (the crate's own name,
/// the path's first segment, is not part of it).
pub fn child_test(module: &str, name: &str) -> std::process::Command {
    let module = module.split_once("::").map_or("", |(_, m)| m);
    let full = if module.is_empty() {
        name.to_string()
    } else {
        format!("{module}::{name}")
    };
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([full.as_str(), "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    cmd
}

/// The default wgpu device (Mesa lavapipe where there is no GPU), opened and probed as the CLI's
/// `--device gpu` does; no adapter is a failure, never a skip. The CLI's lazy constructor, not
/// an explicit `wgpu_options().init()`: the suite is one process, burn registers a device's
/// runtime once, and an explicit init fails once any other test has opened the device.
pub fn wgpu_device() -> burn::tensor::Device {
    static GPU: std::sync::OnceLock<burn::tensor::Device> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        sealong_cli::device::select(sealong_cli::device::DeviceChoice::Gpu).unwrap_or_else(|e| panic!("{e:#}"))
    })
    .clone()
}

/// A golden f32 tensor's shape and values (little-endian, as the generators write them); a
/// missing tensor is a test failure naming it.
pub fn tensor_f32(st: &safetensors::SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

/// Largest `|a_i - b_i|`; slices of different lengths are a test failure.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// splitmix64: a tiny seeded generator for test inputs, the same on every run and platform.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym() * scale).collect()
    }
}

/// Answers longer than MiniLM's 256-token window that differ only at the end: a shared
/// ~400-token reasoning, then "Therefore, the answer is {ending}." for each ending (the
/// long-text readings' tests in score_cli and study_cli).
pub fn long_answers(endings: &[&str]) -> Vec<String> {
    let reasoning = "The passages describe several European capitals and their rivers, and each step \
                     compares one fact with another before the final step. "
        .repeat(14);
    endings
        .iter()
        .map(|c| format!("{reasoning}Therefore, the answer is {c}."))
        .collect()
}
