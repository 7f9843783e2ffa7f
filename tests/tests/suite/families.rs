//! The supported families against transformers on tiny random models it made
//! (`tests/golden/family_models/`, see `generate_families.py` and PROVENANCE.md): Llama-3 style
//! (llama3 RoPE scaling, GQA, untied and tied heads), Qwen2 style (q/k/v biases, tied head,
//! YaRN; and one with `use_sliding_window` / `max_window_layers`) and Mistral (sliding window
//! of 8 positions, shorter than the 40-token sequence). Each as f32 and bf16 safetensors, the
//! Llama and Qwen ones also as F32 GGUF written by gguf-py.
//!
//! Checked on the CPU engine: prefill logits (one forward, and two chunks), cached decode (the
//! logits of every step), and batched decode (two sequences of different lengths in one batch:
//! forked from a shared prompt, and as a batch of two from the start), each row against
//! transformers' logits for that sequence alone. The burn decoder (GPUs, training) is checked
//! on the models without a window, and must refuse a sequence longer than a window.

use burn::prelude::*;
use sealong::loading::ModelPath;
use sealong::models::decoder::config::{DecoderConfig, RopeScaling};
use sealong::models::decoder::weights::DecoderWeights;
use sealong::models::decoder::{CpuDecoder, Decoder, Family};
use sealong_tests::golden_dir;
use serde_json::{Value, json};

/// Max |logit - transformers| for f32 weights (safetensors and GGUF): f32 arithmetic on logits of
/// magnitude ~5 (transformers' own prefill and cached decode differ by up to 2e-5).
const TOL_F32: f32 = 1e-4;
/// The same for bf16 files. transformers' logits for them are computed in f32 from the same
/// bf16-rounded weights (loaded with dtype=float32), and the engine keeps bf16 matrices and
/// widens them exactly, so the f32 bound holds; the 1e-2 would allow far more.
const TOL_BF16: f32 = 1e-4;

struct Golden {
    a: Vec<u32>,
    b: Vec<u32>,
    prefix: usize,
    logits: Vec<u8>,
}

impl Golden {
    fn load() -> Golden {
        let dir = golden_dir().join("family_models");
        let meta: Value =
            serde_json::from_slice(&std::fs::read(dir.join("families.json")).expect("families.json")).expect("json");
        let ids = |k: &str| -> Vec<u32> {
            meta[k]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        };
        Golden {
            a: ids("a"),
            b: ids("b"),
            prefix: meta["prefix"].as_u64().expect("prefix") as usize,
            logits: std::fs::read(dir.join("logits.safetensors")).expect("logits"),
        }
    }

    /// Rows of `{variant}.{what}` (`prefill`, `decode`, `prefill_b`).
    fn rows(&self, variant: &str, what: &str) -> Vec<Vec<f32>> {
        let st = safetensors::SafeTensors::deserialize(&self.logits).expect("safetensors");
        let t = st.tensor(&format!("{variant}.{what}")).expect("golden tensor");
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        v.chunks_exact(t.shape()[1]).map(<[f32]>::to_vec).collect()
    }
}

fn max_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Worst |d| over rows, with the row of the worst one.
fn worst(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len(), "row count");
    got.iter().zip(want).map(|(g, w)| max_diff(g, w)).fold(0.0, f32::max)
}

fn path(rel: &str) -> ModelPath {
    ModelPath::detect(&golden_dir().join("family_models").join(rel)).expect("model path")
}

fn cpu(rel: &str) -> CpuDecoder {
    let (config, mut w) = DecoderWeights::load(&path(rel)).expect("weights");
    let m = CpuDecoder::from_weights(config, &mut w).expect("cpu engine");
    w.finish().expect("every weight used");
    m
}

/// Logits of every position of `ids`, run in forwards of the given lengths.
fn cpu_prefill(m: &CpuDecoder, ids: &[u32], chunks: &[usize]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1);
    let mut rows = Vec::new();
    let mut at = 0;
    for &n in chunks
        .iter()
        .chain(std::iter::once(&(ids.len() - chunks.iter().sum::<usize>())))
    {
        if n == 0 {
            continue;
        }
        let part = ids[at..at + n].to_vec();
        let hidden = m.forward_hidden(&[part], &mut cache).expect("forward");
        rows.extend(
            m.logits(&hidden, n)
                .chunks_exact(m.config.vocab_size)
                .map(<[f32]>::to_vec),
        );
        at += n;
    }
    rows
}

/// The first `prefix` positions in one forward, then one token per forward.
fn cpu_decode(m: &CpuDecoder, ids: &[u32], prefix: usize) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1);
    let hidden = m
        .forward_hidden(&[ids[..prefix].to_vec()], &mut cache)
        .expect("prefill");
    let mut rows: Vec<Vec<f32>> = m
        .logits(&hidden, prefix)
        .chunks_exact(m.config.vocab_size)
        .map(<[f32]>::to_vec)
        .collect();
    for &t in &ids[prefix..] {
        rows.extend(m.forward_last(&[vec![t]], &mut cache).expect("step"));
    }
    rows
}

/// A and B (shorter) decoded together after their shared prompt (the first `prefix` tokens,
/// prefilled once and forked into two streams); when B ends its stream is dropped and A goes
/// on alone. Returns the logits of A's and B's steps (positions `prefix..`).
fn cpu_forked(m: &CpuDecoder, a: &[u32], b: &[u32], prefix: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    assert_eq!(a[..prefix], b[..prefix]);
    let mut cache = m.new_cache(1);
    m.forward_hidden(&[a[..prefix].to_vec()], &mut cache).expect("prompt");
    let mut cache = cache.fork(2).expect("fork");
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for i in prefix..b.len() {
        let mut out = m.forward_last(&[vec![a[i]], vec![b[i]]], &mut cache).expect("step");
        rb.push(out.pop().expect("B's logits"));
        ra.push(out.pop().expect("A's logits"));
    }
    cache.retain_rows(&[0]);
    for &t in &a[b.len()..] {
        ra.extend(m.forward_last(&[vec![t]], &mut cache).expect("step"));
    }
    (ra, rb)
}

/// A and B as a batch of two from the first position: `start` tokens of each in one forward,
/// then a token of each per step until B ends, then A alone. Returns all positions' logits.
fn cpu_batch_of_two(m: &CpuDecoder, a: &[u32], b: &[u32], start: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let v = m.config.vocab_size;
    let mut cache = m.new_cache(2);
    let hidden = m
        .forward_hidden(&[a[..start].to_vec(), b[..start].to_vec()], &mut cache)
        .expect("prefill");
    let logits = m.logits(&hidden, 2 * start);
    let rows: Vec<Vec<f32>> = logits.chunks_exact(v).map(<[f32]>::to_vec).collect();
    let (mut ra, mut rb) = (rows[..start].to_vec(), rows[start..].to_vec());
    for i in start..b.len() {
        let mut out = m.forward_last(&[vec![a[i]], vec![b[i]]], &mut cache).expect("step");
        rb.push(out.pop().expect("B's logits"));
        ra.push(out.pop().expect("A's logits"));
    }
    cache.retain_rows(&[0]);
    for &t in &a[b.len()..] {
        ra.extend(m.forward_last(&[vec![t]], &mut cache).expect("step"));
    }
    (ra, rb)
}

/// Every CPU-engine check of one model file against the golden rows of `variant`; returns the
/// worst |d| of each check.
fn check_cpu(rel: &str, variant: &str, tol: f32) -> Vec<(&'static str, f32)> {
    let g = Golden::load();
    let m = cpu(rel);
    let (pa, da, pb) = (
        g.rows(variant, "prefill"),
        g.rows(variant, "decode"),
        g.rows(variant, "prefill_b"),
    );
    let p = g.prefix;
    let (fa, fb) = cpu_forked(&m, &g.a, &g.b, p);
    let (ba, bb) = cpu_batch_of_two(&m, &g.a, &g.b, 16);
    let results = vec![
        ("prefill", worst(&cpu_prefill(&m, &g.a, &[]), &pa)),
        ("prefill in chunks 13+rest", worst(&cpu_prefill(&m, &g.a, &[13]), &pa)),
        ("cached decode", worst(&cpu_decode(&m, &g.a, p), &da)),
        ("forked batch: A", worst(&fa, &da[p..])),
        ("forked batch: B", worst(&fb, &pb[p..])),
        ("batch of two: A", worst(&ba, &pa)),
        ("batch of two: B", worst(&bb, &pb)),
        ("B alone, cached decode", worst(&cpu_decode(&m, &g.b, p), &pb)),
    ];
    for (what, d) in &results {
        eprintln!("{rel} cpu {what}: max |d| = {d:.3e}");
        assert!(*d <= tol, "{rel} cpu {what}: max |logit - transformers| = {d} > {tol}");
    }
    results
}

fn burn_logits(m: &Decoder, ids: &[u32], prefix: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let read = |t: Tensor<3>| -> Vec<Vec<f32>> {
        let v: Vec<f32> = t.into_data().try_into_vec_as::<f32>().expect("read");
        v.chunks_exact(m.config.vocab_size).map(<[f32]>::to_vec).collect()
    };
    let mut cache = m.new_cache(1);
    let prefill = read(m.forward_all(&[ids.to_vec()], &mut cache).expect("forward"));
    let mut cache = m.new_cache(1);
    let mut decode = read(m.forward_all(&[ids[..prefix].to_vec()], &mut cache).expect("prefill"));
    for &t in &ids[prefix..] {
        decode.extend(read(m.forward_all(&[vec![t]], &mut cache).expect("step")));
    }
    (prefill, decode)
}

/// The burn decoder (the GPUs' and training's) on a model without a sliding window.
fn check_burn(rel: &str, variant: &str, tol: f32) {
    let g = Golden::load();
    let m = Decoder::load(&path(rel), &Device::flex()).expect("burn decoder");
    let (prefill, decode) = burn_logits(&m, &g.a, g.prefix);
    for (what, got, want) in [
        ("prefill", prefill, g.rows(variant, "prefill")),
        ("cached decode", decode, g.rows(variant, "decode")),
    ] {
        let d = worst(&got, &want);
        eprintln!("{rel} burn {what}: max |d| = {d:.3e}");
        assert!(d <= tol, "{rel} burn {what}: max |logit - transformers| = {d} > {tol}");
    }
}

#[test]
fn llama3_untied() {
    let c = cpu("llama3").config;
    assert_eq!(c.family, Family::Llama);
    assert!(matches!(c.rope_scaling, RopeScaling::Llama3(_)) && !c.tie_word_embeddings);
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (4, 2));
    check_cpu("llama3", "llama3", TOL_F32);
    check_cpu("llama3_bf16", "llama3_bf16", TOL_BF16);
    // llama.cpp's form: Q/K rows permuted, Llama-3 scaling as rope_freqs.weight divisors.
    let g = cpu("llama3.gguf").config;
    assert!(matches!(g.rope_scaling, RopeScaling::Factors(_)) && !g.tie_word_embeddings);
    check_cpu("llama3.gguf", "llama3", TOL_F32);
    check_burn("llama3", "llama3", TOL_F32);
    check_burn("llama3.gguf", "llama3", TOL_F32);
}

#[test]
fn llama3_tied() {
    assert!(cpu("llama3_tied").config.tie_word_embeddings);
    assert!(cpu("llama3_tied.gguf").config.tie_word_embeddings);
    check_cpu("llama3_tied", "llama3_tied", TOL_F32);
    check_cpu("llama3_tied_bf16", "llama3_tied_bf16", TOL_BF16);
    check_cpu("llama3_tied.gguf", "llama3_tied", TOL_F32);
    check_burn("llama3_tied_bf16", "llama3_tied_bf16", TOL_BF16);
}

#[test]
fn qwen2_biases_tied_yarn() {
    for rel in ["qwen2_yarn", "qwen2_yarn.gguf"] {
        let c = cpu(rel).config;
        assert_eq!(c.family, Family::Qwen2);
        assert!(c.attention_bias && c.tie_word_embeddings, "{rel}");
        let RopeScaling::Yarn(y) = &c.rope_scaling else {
            panic!("{rel}: {:?}", c.rope_scaling)
        };
        assert_eq!((y.factor, y.original_max_position_embeddings), (4.0, 16), "{rel}");
        // transformers' default attention factor: 0.1 ln(4) + 1.
        assert!((c.rope_attention_scaling() - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
        assert_eq!(c.sliding_window, None);
    }
    check_cpu("qwen2_yarn", "qwen2_yarn", TOL_F32);
    check_cpu("qwen2_yarn_bf16", "qwen2_yarn_bf16", TOL_BF16);
    check_cpu("qwen2_yarn.gguf", "qwen2_yarn", TOL_F32);
    check_burn("qwen2_yarn", "qwen2_yarn", TOL_F32);
    check_burn("qwen2_yarn.gguf", "qwen2_yarn", TOL_F32);
}

/// Mistral: a window of 8 on every layer; the sequence is 40 long, so most positions see only
/// part of it (checked to matter: transformers' logits without the window differ by up to 9).
#[test]
fn mistral_sliding_window() {
    let c = cpu("mistral").config;
    assert_eq!(c.family, Family::Mistral);
    let w = c.sliding_window.as_ref().expect("window");
    assert_eq!((w.size, w.layers.as_slice()), (8, &[true, true][..]));
    check_cpu("mistral", "mistral", TOL_F32);
    check_cpu("mistral_bf16", "mistral_bf16", TOL_BF16);
    refuses_past_the_window_on_burn("mistral", "mistral");
}

/// Qwen2 with `use_sliding_window` and `max_window_layers = 1`: layer 0 attends to everything,
/// layer 1 to a window of 8.
#[test]
fn qwen2_sliding_window_from_max_window_layers() {
    let c = cpu("qwen2_swa").config;
    assert_eq!((c.layer_window(0), c.layer_window(1)), (None, Some(8)));
    check_cpu("qwen2_swa", "qwen2_swa", TOL_F32);
    refuses_past_the_window_on_burn("qwen2_swa", "qwen2_swa");
}

/// The burn decoder does not implement sliding windows: it agrees with transformers while the
/// sequence fits in the window and refuses a longer one, naming the window.
fn refuses_past_the_window_on_burn(rel: &str, variant: &str) {
    let g = Golden::load();
    let m = Decoder::load(&path(rel), &Device::flex()).expect("burn decoder");
    let (prefill, decode) = burn_logits(&m, &g.a[..8], 3);
    let want = g.rows(variant, "prefill");
    assert!(worst(&prefill, &want[..8]) <= TOL_F32 && worst(&decode, &want[..8]) <= TOL_F32);
    let mut cache = m.new_cache(1);
    m.forward_all(&[g.a[..8].to_vec()], &mut cache)
        .expect("within the window");
    let e = m
        .forward_all(&[vec![g.a[8]]], &mut cache)
        .expect_err("past the window")
        .to_string();
    assert!(e.contains("sliding window of 8") && e.contains("CPU engine"), "{e}");
    let mut cache = m.new_cache(1);
    let e = m
        .forward_all(std::slice::from_ref(&g.a), &mut cache)
        .expect_err("past the window")
        .to_string();
    assert!(e.contains("40 positions") && e.contains("sliding window"), "{e}");
}

/// config.json written for an export reads back as the same model: families, windows, YaRN.
#[test]
fn exported_configs_read_back_the_same() {
    for rel in ["llama3", "llama3_tied", "qwen2_yarn", "qwen2_swa", "mistral"] {
        let c = cpu(rel).config;
        let v = c.to_hf_json().expect("to_hf_json");
        let back = DecoderConfig::from_hf_json(&v, "export").expect("reparse");
        assert_eq!(back, c, "{rel}: {v}");
        let arch = v["architectures"][0].as_str().expect("architecture");
        let want = match rel {
            "mistral" => "MistralForCausalLM",
            "qwen2_yarn" | "qwen2_swa" => "Qwen2ForCausalLM",
            _ => "LlamaForCausalLM",
        };
        assert_eq!(arch, want, "{rel}");
    }
}

fn config_json() -> Value {
    json!({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    })
}

#[test]
fn unknown_family_or_rope_type_names_the_key_and_the_supported_ones() {
    let mut v = config_json();
    v["model_type"] = json!("gpt_neox");
    let e = DecoderConfig::from_hf_json(&v, "cfg.json").unwrap_err().to_string();
    assert!(
        e.contains("cfg.json")
            && e.contains("\"model_type\"")
            && e.contains("gpt_neox")
            && e.contains("llama, qwen2, mistral"),
        "{e}"
    );
    for (key, scaling) in [
        (
            "rope_scaling.rope_type",
            json!({"rope_type": "longrope", "factor": 2.0}),
        ),
        ("rope_scaling.type", json!({"type": "dynamic", "factor": 2.0})),
    ] {
        let mut v = config_json();
        v["rope_scaling"] = scaling;
        let e = DecoderConfig::from_hf_json(&v, "cfg.json").unwrap_err().to_string();
        assert!(
            e.contains(key) && e.contains("not supported") && e.contains("default, linear, llama3, yarn"),
            "{e}"
        );
    }
    let mut v = config_json();
    v["rope_parameters"] = json!({"rope_type": "proportional", "rope_theta": 1e4});
    let e = DecoderConfig::from_hf_json(&v, "cfg.json").unwrap_err().to_string();
    assert!(
        e.contains("rope_parameters.rope_type") && e.contains("proportional"),
        "{e}"
    );
    // YaRN without a factor: transformers takes context / original context.
    let mut v = config_json();
    v["rope_scaling"] = json!({"type": "yarn", "original_max_position_embeddings": 16});
    let c = DecoderConfig::from_hf_json(&v, "cfg.json").expect("yarn");
    let RopeScaling::Yarn(y) = c.rope_scaling else {
        panic!("{:?}", c.rope_scaling)
    };
    assert_eq!((y.factor, y.beta_fast, y.beta_slow, y.truncate), (4.0, 32.0, 1.0, true));
    // A window that is not a positive number.
    let mut v = config_json();
    v["model_type"] = json!("mistral");
    v["sliding_window"] = json!(-3);
    let e = DecoderConfig::from_hf_json(&v, "cfg.json").unwrap_err().to_string();
    assert!(e.contains("sliding_window"), "{e}");
}

/// GGUF: an architecture or rope scaling type we do not run is named with what is supported.
#[test]
fn unknown_gguf_architecture_or_rope_type_is_named() {
    let src = std::fs::read(golden_dir().join("family_models/qwen2_yarn.gguf")).expect("gguf");
    let dir = tempfile::tempdir().expect("tmp");
    // Same-length replacements inside the metadata keep the file valid.
    let patch = |from: &[u8], to: &[u8]| -> std::path::PathBuf {
        assert_eq!(from.len(), to.len());
        let mut b = src.clone();
        let mut n = 0;
        let mut i = 0;
        while i + from.len() <= b.len() {
            if &b[i..i + from.len()] == from {
                b[i..i + from.len()].copy_from_slice(to);
                n += 1;
                i += from.len();
            } else {
                i += 1;
            }
        }
        assert!(n > 0, "{:?} not found", String::from_utf8_lossy(from));
        let p = dir.path().join(format!("{}.gguf", String::from_utf8_lossy(to)));
        std::fs::write(&p, b).expect("write");
        p
    };
    let load = |p: &std::path::Path| match DecoderWeights::load(&ModelPath::detect(p).expect("detect")) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e.to_string(),
    };
    // `qwen2` is the architecture value and the prefix of every `qwen2.*` key.
    let e = load(&patch(b"qwen2", b"qwen3"));
    assert!(
        e.contains("general.architecture") && e.contains("qwen3") && e.contains("llama, qwen2"),
        "{e}"
    );
    let e = load(&patch(b"yarn", b"ntkx"));
    assert!(
        e.contains("qwen2.rope.scaling.type") && e.contains("ntkx") && e.contains("yarn"),
        "{e}"
    );
}

/// YaRN frequencies and attention factor against transformers' `_compute_yarn_parameters` on
/// full-size settings (`yarn_cases.json`: Qwen2.5's, and ones with beta, mscale,
/// attention_factor and truncate set), where the ramp spans many dimensions. torch computes in
/// f32: relative error <= 1e-5.
#[test]
fn yarn_matches_transformers_on_full_size_settings() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(golden_dir().join("family_models/yarn_cases.json")).expect("yarn cases"))
            .expect("json");
    for case in cases.as_array().expect("cases") {
        let c = DecoderConfig::from_hf_json(&case["config"], "yarn case").expect("config");
        let want: Vec<f64> = case["inv_freq"]
            .as_array()
            .expect("inv_freq")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        let got = c.rope_inv_freq();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let rel = (f64::from(*g) - w).abs() / w.abs();
            assert!(
                rel <= 1e-5,
                "{}: inv_freq[{i}] {g} vs {w}",
                case["config"]["rope_scaling"]
            );
        }
        let att = case["attention_factor"].as_f64().expect("attention factor");
        assert!(
            (f64::from(c.rope_attention_scaling()) - att).abs() <= 1e-6,
            "{}: attention factor {} vs {att}",
            case["config"]["rope_scaling"],
            c.rope_attention_scaling()
        );
    }
}
