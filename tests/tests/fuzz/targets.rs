//! The parsers, their seeds and their bounds. A bound is `per_byte × input + fixed` on the peak
//! heap while one input is parsed; the reason for each is next to it.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Value, json};

use sealong::data::evalfiles::{self, EvalFormat};
use sealong::data::{pairs, records, samples};
use sealong::eval::Metric;
use sealong::eval::report::Part;
use sealong::loading::gguf::{Gguf, GgufValue};
use sealong::loading::model_files::{ModelPath, TextAssets};
use sealong::loading::safetensors::{read_dense, read_tensors};
use sealong::models::decoder::DecoderConfig;
use sealong::models::encoder::config::{EncoderConfig, SentenceConfig};
use sealong::quant::GgmlType;
use sealong::text::{ChatTemplate, Message, Strategy, Tokenizer};
use sealong_tests::{SplitMix, golden_dir, repo_root};

use crate::mutate::{self, pick};
use crate::{Case, Kind, Target, check};

const MIB: usize = 1 << 20;

/// Peak heap per input byte of a parser that reads JSON into a `serde_json::Value` tree first:
/// a `Value` is 80 bytes here (`preserve_order` makes objects index maps), and the worst text is
/// nested one-element arrays, where `[` `]` (2 bytes) become a 4-slot `Vec` (320 bytes): 160
/// bytes per byte, plus the text itself. Checked by `json_value_size_behind_the_bound`.
const JSON_TREE: usize = 200;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn one(name: &str, bytes: Vec<u8>) -> Case {
    vec![(name.to_string(), bytes)]
}

fn read(rel: &str) -> Vec<u8> {
    let p = repo_root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("a Value serializes")
}

/// The first `n` records of a shipped JSONL file, each record's lists cut to `keep` items (small
/// seeds keep a case fast; the mutations grow them again).
fn jsonl_seed(rel: &str, n: usize, keep: usize) -> Vec<u8> {
    let text = String::from_utf8(read(rel)).expect("UTF-8");
    let mut out = String::new();
    for line in text.lines().take(n) {
        let mut v: Value = serde_json::from_str(line).expect("shipped JSONL parses");
        if let Value::Object(m) = &mut v {
            for x in m.values_mut() {
                if let Value::Array(a) = x {
                    a.truncate(keep);
                }
                if let Value::String(s) = x
                    && s.len() > 2000
                {
                    *s = s.chars().take(2000).collect();
                }
            }
        }
        out.push_str(&serde_json::to_string(&v).expect("serializes"));
        out.push('\n');
    }
    out.into_bytes()
}

fn jsonl_from(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend(serde_json::to_vec(r).expect("serializes"));
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// GGUF: a small valid file (llama metadata, a byte-level BPE tokenizer, a chat template, F32,
// Q8_0 and rope_freqs tensors), mutated field by field and then byte by byte.

/// A GGUF document: metadata in file order and tensors `(name, ne, ggml type id, data)`.
struct GgufDoc {
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn ggml_id(t: GgmlType) -> u32 {
    match t {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q5_0 => 6,
        GgmlType::Q5_1 => 7,
        GgmlType::Q8_0 => 8,
        GgmlType::Q8_1 => 9,
        GgmlType::Q2K => 10,
        GgmlType::Q3K => 11,
        GgmlType::Q4K => 12,
        GgmlType::Q5K => 13,
        GgmlType::Q6K => 14,
        GgmlType::Q8K => 15,
        GgmlType::BF16 => 30,
        GgmlType::Other(id) => id,
    }
}

fn enc_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn enc_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend(x.to_le_bytes()),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(x) => enc_str(out, x),
        GgufValue::Array(items) => {
            out.extend(items.first().map_or(4, type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|x| enc_value(out, x));
        }
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

impl GgufDoc {
    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            enc_str(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            enc_value(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, ne, ty, data) in &self.tensors {
            enc_str(&mut out, name);
            out.extend((ne.len() as u32).to_le_bytes());
            ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend(data);
            out.resize(out.len().div_ceil(32) * 32, 0);
        }
        out
    }

    /// Back from bytes that parse (the tensors' data as stored).
    fn parse(bytes: &[u8]) -> Option<GgufDoc> {
        let g = Gguf::parse(bytes, "fuzz").ok()?;
        Some(GgufDoc {
            kv: g.metadata.clone().into_iter().collect(),
            tensors: g
                .tensors
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.ne.clone(),
                        ggml_id(t.ggml_type),
                        g.tensor_bytes(bytes, t).to_vec(),
                    )
                })
                .collect(),
        })
    }
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + \
                      '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn gguf_seed(arch: &str, pre: &str) -> Vec<u8> {
    let strs = |v: &[&str]| GgufValue::Array(v.iter().map(|x| GgufValue::String((*x).to_string())).collect());
    let mut tokens = vec!["<|im_start|>", "<|im_end|>", "<|endoftext|>", "\u{120}", "\u{10a}"];
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    tokens.extend(letters.iter().map(String::as_str));
    tokens.extend(["\u{120}t", "he", "\u{120}the", "1", "2", "12"]);
    let mut types = vec![GgufValue::I32(3); 3];
    types.extend(std::iter::repeat_n(GgufValue::I32(1), tokens.len() - 3));
    let a = |k: &str| format!("{arch}.{k}");
    let kv = vec![
        ("general.architecture".to_string(), GgufValue::String(arch.into())),
        ("general.alignment".to_string(), GgufValue::U32(32)),
        (a("block_count"), GgufValue::U32(1)),
        (a("context_length"), GgufValue::U32(64)),
        (a("embedding_length"), GgufValue::U32(8)),
        (a("feed_forward_length"), GgufValue::U32(16)),
        (a("attention.head_count"), GgufValue::U32(2)),
        (a("attention.head_count_kv"), GgufValue::U32(1)),
        (a("rope.dimension_count"), GgufValue::U32(4)),
        (a("rope.freq_base"), GgufValue::F32(10_000.0)),
        (a("attention.layer_norm_rms_epsilon"), GgufValue::F32(1e-5)),
        ("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), strs(&tokens)),
        ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(types)),
        (
            "tokenizer.ggml.merges".to_string(),
            strs(&["\u{120} t", "h e", "\u{120}t he", "1 2"]),
        ),
        ("tokenizer.ggml.bos_token_id".to_string(), GgufValue::U32(2)),
        ("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U32(1)),
        ("tokenizer.ggml.add_bos_token".to_string(), GgufValue::Bool(false)),
        ("tokenizer.chat_template".to_string(), GgufValue::String(CHATML.into())),
    ];
    let f32s = |n: usize| -> Vec<u8> { (0..n).flat_map(|i| (1.0 + i as f32 * 0.01).to_le_bytes()).collect() };
    let vocab = tokens.len() as u64;
    // One Q8_0 block per row: an f16 scale and 32 bytes.
    let q8: Vec<u8> = (0..8).flat_map(|_| [0u8, 0x3c].into_iter().chain(0..32u8)).collect();
    GgufDoc {
        kv,
        tensors: vec![
            ("token_embd.weight".into(), vec![8, vocab], 0, f32s(8 * vocab as usize)),
            ("rope_freqs.weight".into(), vec![2], 0, f32s(2)),
            ("blk.0.attn_q.weight".into(), vec![32, 8], 8, q8),
            ("output_norm.weight".into(), vec![8], 0, f32s(8)),
        ],
    }
    .build()
}

/// A hostile metadata value of some type.
fn hostile_gguf_value(rng: &mut SplitMix) -> GgufValue {
    let big = *pick(rng, mutate::HOSTILE_U64);
    match rng.below(9) {
        0 => GgufValue::U32(big as u32),
        1 => GgufValue::U64(big),
        2 => GgufValue::I32((big as i32).wrapping_neg()),
        3 => GgufValue::F32(*pick(rng, &[f32::NAN, f32::INFINITY, -1.0, 0.0, 1e38, 1e-38])),
        4 => GgufValue::F64(*pick(rng, &[f64::NAN, f64::NEG_INFINITY, -1.0, 0.0, 1e308])),
        5 => GgufValue::String(
            pick(
                rng,
                &[
                    "",
                    "llama",
                    "qwen2",
                    "mistral",
                    "bert",
                    "yarn",
                    "linear",
                    "gpt2",
                    "smollm",
                    "llama-bpe",
                    "qwen2",
                    "\u{0}",
                ],
            )
            .to_string(),
        ),
        6 => GgufValue::Bool(true),
        7 => GgufValue::Array(vec![GgufValue::U32(big as u32); rng.below(5)]),
        _ => GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::String("x".into())])]),
    }
}

/// Field-level edits of a GGUF (hostile metadata values and types, dropped or duplicated keys,
/// tokenizer vocabularies with duplicates or mismatched lengths, template text, tensor shapes,
/// types and data lengths), then sometimes byte-level edits.
pub fn mutate_gguf(rng: &mut SplitMix, data: &mut Vec<u8>, others: &[&[u8]]) {
    let Some(mut doc) = GgufDoc::parse(data).filter(|_| rng.below(6) != 0) else {
        return mutate::mutate_bytes(rng, data, others, false);
    };
    for _ in 0..1 + rng.below(3) {
        let nk = doc.kv.len();
        let nt = doc.tensors.len();
        match rng.below(9) {
            0 | 1 if nk > 0 => {
                let i = rng.below(nk);
                doc.kv[i].1 = hostile_gguf_value(rng);
            }
            2 if nk > 0 => {
                doc.kv.remove(rng.below(nk));
            }
            3 if nk > 0 => {
                let i = rng.below(nk);
                let dup = doc.kv[i].clone();
                doc.kv.push(dup);
            }
            4 => {
                // Tokenizer arrays: a duplicate token, a short token_type, an unknown merge.
                if let Some((_, GgufValue::Array(a))) = doc.kv.iter_mut().find(|(k, _)| {
                    k == pick(
                        rng,
                        &[
                            "tokenizer.ggml.tokens",
                            "tokenizer.ggml.token_type",
                            "tokenizer.ggml.merges",
                        ],
                    )
                }) {
                    match rng.below(3) {
                        0 if !a.is_empty() => {
                            let x = a[rng.below(a.len())].clone();
                            a.push(x);
                        }
                        1 => {
                            a.pop();
                        }
                        _ => a.push(GgufValue::String(
                            pick(rng, &["zz q", "a", "", " ", "\u{120}"]).to_string(),
                        )),
                    }
                }
            }
            5 => {
                if let Some((_, GgufValue::String(t))) = doc.kv.iter_mut().find(|(k, _)| k == "tokenizer.chat_template")
                {
                    let mut case = json_bytes(&json!({"template": t, "messages": []}));
                    mutate::mutate_template_case(rng, &mut case, &[]);
                    if let Ok(v) = serde_json::from_slice::<Value>(&case) {
                        *t = v["template"].as_str().unwrap_or_default().to_string();
                    }
                }
            }
            6 if nt > 0 => {
                let i = rng.below(nt);
                let ne = &mut doc.tensors[i].1;
                let d = rng.below(ne.len() + 1);
                if d == ne.len() {
                    ne.push(*pick(rng, mutate::HOSTILE_U64));
                } else {
                    ne[d] = *pick(rng, mutate::HOSTILE_U64);
                }
            }
            7 if nt > 0 => {
                let i = rng.below(nt);
                doc.tensors[i].2 = *pick(rng, &[0u32, 1, 2, 3, 6, 7, 8, 9, 10, 12, 14, 15, 16, 20, 30, 39, 1000]);
            }
            _ if nt > 0 => {
                let i = rng.below(nt);
                let d = &mut doc.tensors[i].3;
                let n = rng.below(d.len() + 64);
                d.resize(n, 0x55);
            }
            _ => {}
        }
    }
    *data = doc.build();
    if rng.below(2) == 0 {
        mutate::mutate_bytes(rng, data, others, false);
    }
}

/// What the loaders do with a GGUF's header: config, tokenizer (rebuilt from metadata and used),
/// template (compiled and rendered), and `models inspect` on the file.
fn run_gguf(case: &Case, dir: &Path) -> Result<(), String> {
    let bytes = &case[0].1;
    let g = Gguf::parse(bytes, "fuzz.gguf").map_err(s)?;
    let path = dir.join(&case[0].0);
    let report = sealong::models::inspect::inspect(&ModelPath::Gguf(path)).map_err(s)?;
    let _ = report.config.rope_inv_freq();
    let assets = TextAssets::from_gguf(&g, "fuzz.gguf").map_err(s)?;
    let ids = assets.tokenizer.encode("the 12 cat<|im_end|>", false).map_err(s)?;
    assets.tokenizer.decode(&ids, false).map_err(s)?;
    if let Some(t) = &assets.chat_template {
        t.render(&[Message::user("hi")], true).map_err(s)?;
    }
    DecoderConfig::from_gguf(&g, "fuzz.gguf", None).map_err(s)?;
    Ok(())
}

#[test]
fn gguf() {
    check(Target {
        name: "gguf",
        seeds: vec![
            one("m.gguf", gguf_seed("llama", "smollm")),
            one("m.gguf", gguf_seed("qwen2", "qwen2")),
            one("m.gguf", gguf_seed("llama", "llama-bpe")),
        ],
        kinds: vec![Kind::Gguf],
        // Metadata values take ~32 bytes each against at least 1 in the file, and the tokenizer
        // is rebuilt from them as tokenizer.json (again per token) plus the tokenizers crate's
        // maps and compiled pre-tokenizer regexes (a fixed few MiB).
        per_byte: 256,
        fixed: 32 * MIB,
        files: true,
        run: Box::new(run_gguf),
    });
}

// ---------------------------------------------------------------------------------------------
// safetensors: a small file with F32/F16/BF16 tensors, read widened and kept stored.

fn safetensors_seed(names: &[(&str, &[usize], safetensors::Dtype)]) -> Vec<u8> {
    let bufs: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = names
        .iter()
        .map(|(n, shape, dt)| {
            let count: usize = shape.iter().product();
            let size = match dt {
                safetensors::Dtype::F32 => 4,
                _ => 2,
            };
            let bytes = (0..count * size).map(|i| (i * 7 % 61) as u8).collect();
            ((*n).to_string(), shape.to_vec(), *dt, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bufs
        .iter()
        .map(|(n, shape, dt, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    use safetensors::Dtype::{BF16, F16, F32};
    vec![
        safetensors_seed(&[
            ("model.embed_tokens.weight", &[16, 8], F32),
            ("model.layers.0.self_attn.q_proj.weight", &[8, 8], F16),
            ("model.norm.weight", &[8], BF16),
        ]),
        safetensors_seed(&[("a", &[4], F32), ("b", &[2, 3], BF16), ("c", &[], F32)]),
    ]
}

#[test]
fn safetensors() {
    check(Target {
        name: "safetensors",
        seeds: safetensors_seeds()
            .into_iter()
            .map(|b| one("model.safetensors", b))
            .collect(),
        kinds: vec![Kind::Binary],
        // Widening f16/bf16 to f32 doubles the data; the header JSON and the crate's metadata
        // add a small multiple of the header.
        per_byte: 16,
        fixed: MIB,
        files: false,
        run: Box::new(|case, _| {
            let b = &case[0].1;
            read_dense(b, "fuzz.safetensors", |n| n.ends_with("inv_freq")).map_err(s)?;
            read_tensors(b, "fuzz.safetensors", |_| false, |_, _, _| true).map_err(s)?;
            Ok(())
        }),
    });
}

/// An HF directory read by `models inspect`: config.json, model.safetensors.index.json with two
/// shards, tokenizer files. The index, config and shards are mutated.
#[test]
fn safetensors_index() {
    let seeds = safetensors_seeds();
    let config = json_bytes(&json!({
        "model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": true
    }));
    let index = json_bytes(&json!({
        "metadata": {"total_size": 1000},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00001-of-00002.safetensors",
            "a": "model-00002-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"
        }
    }));
    let case: Case = vec![
        ("model.safetensors.index.json".into(), index),
        ("config.json".into(), config),
        ("model-00001-of-00002.safetensors".into(), seeds[0].clone()),
        ("model-00002-of-00002.safetensors".into(), seeds[1].clone()),
    ];
    check(Target {
        name: "safetensors_index",
        seeds: vec![case],
        kinds: vec![Kind::Json, Kind::Json, Kind::Binary, Kind::Binary],
        // Headers only: the index and config as JSON trees and each shard's header.
        per_byte: JSON_TREE,
        fixed: 4 * MIB,
        files: true,
        run: Box::new(|_, dir| {
            sealong::models::inspect::inspect(&ModelPath::HfDir(dir.to_path_buf())).map_err(s)?;
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// config.json: decoder (HF) and encoder (BERT family + sentence-transformers files).

#[test]
fn config_json() {
    let llama = json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 96,
        "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 12, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": false, "attention_bias": false,
        "bos_token_id": 1, "eos_token_id": [2, 3], "hidden_act": "silu",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    });
    let qwen = json!({
        "model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": true, "use_sliding_window": true, "sliding_window": 32,
        "max_window_layers": 1, "eos_token_id": 2,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    });
    let mistral = json!({
        "model_type": "mistral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
        "sliding_window": 16, "rope_scaling": {"rope_type": "linear", "factor": 2.0}
    });
    let golden = read("tests/golden/smollm_config.json");
    let mut seeds: Vec<Case> = [llama, qwen, mistral]
        .iter()
        .map(|v| one("config.json", json_bytes(v)))
        .collect();
    if serde_json::from_slice::<Value>(&golden).is_ok_and(|v| v.get("model_type").is_some()) {
        seeds.push(one("config.json", golden));
    }
    check(Target {
        name: "config_json",
        seeds,
        kinds: vec![Kind::Json],
        // The parsed JSON tree (~10x its text) and the RoPE tables of at most the validated
        // head dimension.
        per_byte: JSON_TREE,
        fixed: 4 * MIB,
        files: false,
        run: Box::new(|case, _| {
            let v: Value = serde_json::from_slice(&case[0].1).map_err(s)?;
            let c = DecoderConfig::from_hf_json(&v, "fuzz/config.json").map_err(s)?;
            let _ = c.rope_inv_freq();
            c.to_hf_json().map_err(s)?;
            Ok(())
        }),
    });
}

#[test]
fn encoder_config() {
    let dir = golden_dir().join("tiny_roberta");
    let f = |n: &str| std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    let case: Case = vec![
        ("config.json".into(), f("config.json")),
        ("1_Pooling/config.json".into(), f("1_Pooling/config.json")),
        ("sentence_bert_config.json".into(), f("sentence_bert_config.json")),
        ("modules.json".into(), f("modules.json")),
        ("tokenizer_config.json".into(), f("tokenizer_config.json")),
    ];
    let bert = json_bytes(&json!({
        "model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "intermediate_size": 1536,
        "num_hidden_layers": 6, "num_attention_heads": 12, "max_position_embeddings": 512,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0
    }));
    let mut case2 = case.clone();
    case2[0].1 = bert;
    case2[1].1 = json_bytes(
        &json!({"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
        "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}),
    );
    case2[2].1 = json_bytes(&json!({"max_seq_length": 256, "do_lower_case": false}));
    case2[3].1 = json_bytes(
        &json!([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]),
    );
    check(Target {
        name: "encoder_config",
        seeds: vec![case, case2],
        kinds: vec![Kind::Json; 5],
        // Five JSON trees, nothing sized by a number in them.
        per_byte: JSON_TREE,
        fixed: 4 * MIB,
        files: false,
        run: Box::new(|case, _| {
            let c = EncoderConfig::from_json(&case[0].1, "fuzz").map_err(s)?;
            let _ = (c.head_dim(), c.position_offset(), c.max_tokens());
            SentenceConfig::from_files(
                Some(&case[1].1),
                Some(&case[2].1),
                Some(&case[3].1),
                Some(&case[4].1),
                &c,
                "fuzz",
            )
            .map_err(s)?;
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json: a byte-level BPE (RoBERTa's, tiny), a WordPiece (BERT style) and the GGUF
// rebuild's shape.

fn wordpiece_seed() -> Vec<u8> {
    let mut vocab = serde_json::Map::new();
    for (i, t) in [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "sat", "on", "mat", ".", "1", "##2",
    ]
    .iter()
    .enumerate()
    {
        vocab.insert((*t).to_string(), json!(i));
    }
    let special = |id: u32, c: &str| {
        json!({"id": id, "content": c, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true})
    };
    json_bytes(&json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    }))
}

#[test]
fn tokenizer_json() {
    check(Target {
        name: "tokenizer_json",
        seeds: vec![
            one("tokenizer.json", read("tests/golden/tiny_roberta/tokenizer.json")),
            one("tokenizer.json", wordpiece_seed()),
        ],
        kinds: vec![Kind::Json],
        // The JSON (the crate buffers untagged parts as trees), the vocabulary maps and merges,
        // the compiled regexes of the pre-tokenizer (the fixed part) and a short encoding.
        per_byte: JSON_TREE,
        fixed: 16 * MIB,
        files: false,
        run: Box::new(|case, _| {
            let t = Tokenizer::from_json_bytes(&case[0].1, "fuzz/tokenizer.json").map_err(s)?;
            let ids = t
                .encode("The cats sat on the mat. 12 Überraschung 😀", true)
                .map_err(s)?;
            t.decode(&ids, true).map_err(s)?;
            let _ = (t.vocab_size(), t.special_ids());
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// Chat templates: the real Llama-3.1 and Qwen2.5 templates, SmolLM2's and ChatML, rendered with
// mutated messages.

fn template_seeds() -> Vec<Case> {
    let mut out = Vec::new();
    let messages = json!([
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"}
    ]);
    let mut add = |template: &str, bos: &str, eos: &str| {
        out.push(one(
            "template.json",
            serde_json::to_vec(&json!({"template": template, "messages": messages,
                "add_generation_prompt": true, "bos": bos, "eos": eos}))
            .expect("serializes"),
        ));
    };
    for fam in ["llama-3.1-instruct", "qwen2.5-instruct"] {
        let v: Value = serde_json::from_slice(&read(&format!("tests/golden/families/{fam}/tokenizer_config.json")))
            .expect("tokenizer_config.json parses");
        let t = v["chat_template"].as_str().expect("a template");
        add(
            t,
            v["bos_token"].as_str().unwrap_or(""),
            v["eos_token"].as_str().unwrap_or(""),
        );
    }
    let smol: Value = serde_json::from_slice(&read("tests/golden/smollm_chat.json")).expect("parses");
    if let Some(t) = smol["chat_template"].as_str() {
        add(t, "<|im_start|>", "<|im_end|>");
    }
    add(CHATML, "", "<|im_end|>");
    out
}

#[test]
fn chat_template() {
    check(Target {
        name: "chat_template",
        seeds: template_seeds(),
        kinds: vec![Kind::Template],
        // The case's own JSON tree, the compiled template and the render, which the template's
        // fuel holds to 16 MiB + 64 bytes per byte of template and messages (chat_template.rs).
        per_byte: JSON_TREE,
        fixed: 16 * MIB,
        files: false,
        run: Box::new(|case, _| {
            let v: Value = serde_json::from_slice(&case[0].1).map_err(s)?;
            let t = ChatTemplate::new(
                v["template"].as_str().unwrap_or_default(),
                v["bos"].as_str().unwrap_or_default(),
                v["eos"].as_str().unwrap_or_default(),
            )
            .map_err(s)?;
            let messages: Vec<Message> = serde_json::from_value(v["messages"].clone()).map_err(s)?;
            t.render(&messages, v["add_generation_prompt"].as_bool().unwrap_or(true))
                .map_err(s)?;
            Ok(())
        }),
    });
}

/// tokenizer_config.json (special tokens and the template) read from an HF directory.
#[test]
fn tokenizer_config() {
    let tok = read("tests/golden/tiny_roberta/tokenizer.json");
    let mut seeds = Vec::new();
    for fam in ["llama-3.1-instruct", "qwen2.5-instruct"] {
        let v: Value = serde_json::from_slice(&read(&format!("tests/golden/families/{fam}/tokenizer_config.json")))
            .expect("parses");
        // The template and special tokens; the added-token table is 50 KB of repetition.
        let small = json!({"chat_template": v["chat_template"], "bos_token": v["bos_token"],
            "eos_token": v["eos_token"], "pad_token": v["pad_token"], "model_max_length": v["model_max_length"]});
        seeds.push(vec![
            ("tokenizer.json".to_string(), tok.clone()),
            ("tokenizer_config.json".to_string(), json_bytes(&small)),
            (
                "special_tokens_map.json".to_string(),
                json_bytes(&json!({"eos_token": {"content": "</s>", "lstrip": false}})),
            ),
        ]);
    }
    check(Target {
        name: "tokenizer_config",
        seeds,
        kinds: vec![Kind::Fixed, Kind::Json, Kind::Json],
        per_byte: JSON_TREE,
        fixed: 16 * MIB,
        files: true,
        run: Box::new(|_, dir| {
            let a = TextAssets::from_hf_dir(dir).map_err(s)?;
            if let Some(t) = &a.chat_template {
                t.render(&[Message::user("hi")], true).map_err(s)?;
            }
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// PEFT adapter directories.

fn peft_weights(r: usize) -> Vec<u8> {
    let names: Vec<(String, Vec<usize>)> = ["q_proj", "v_proj"]
        .iter()
        .flat_map(|m| {
            [
                (
                    format!("base_model.model.model.layers.0.self_attn.{m}.lora_A.weight"),
                    vec![r, 8],
                ),
                (
                    format!("base_model.model.model.layers.0.self_attn.{m}.lora_B.weight"),
                    vec![8, r],
                ),
            ]
        })
        .collect();
    let refs: Vec<(&str, &[usize], safetensors::Dtype)> = names
        .iter()
        .map(|(n, sh)| (n.as_str(), sh.as_slice(), safetensors::Dtype::F32))
        .collect();
    safetensors_seed(&refs)
}

#[test]
fn peft_adapter() {
    let config = |r: usize, targets: Value| {
        json_bytes(&json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny",
            "r": r, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": targets, "bias": "none",
            "fan_in_fan_out": false, "use_dora": false, "use_rslora": false, "rank_pattern": {},
            "alpha_pattern": {}, "modules_to_save": null, "layers_to_transform": null
        }))
    };
    let seeds = vec![
        vec![
            (
                "adapter_config.json".to_string(),
                config(2, json!(["q_proj", "v_proj"])),
            ),
            ("adapter_model.safetensors".to_string(), peft_weights(2)),
        ],
        vec![
            (
                "adapter_config.json".to_string(),
                config(4, json!(["v_proj", "q_proj"])),
            ),
            ("adapter_model.safetensors".to_string(), peft_weights(4)),
        ],
    ];
    check(Target {
        name: "peft_adapter",
        seeds,
        kinds: vec![Kind::Json, Kind::Binary],
        // The config's JSON tree and the adapter's tensors widened to f32 (at most 2x).
        per_byte: JSON_TREE,
        fixed: 4 * MIB,
        files: true,
        run: Box::new(|_, dir| {
            sealong::models::decoder::adapter::load_peft_adapter(dir).map_err(s)?;
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// TOML: `sealong train` recipes and `sealong run` configs.

/// The `[train]` table of a run config as a recipe file.
fn train_table(run_config: &str) -> Vec<u8> {
    let mut out = String::new();
    let mut inside = false;
    for line in run_config.lines() {
        if line.starts_with('[') {
            inside = line.trim() == "[train]";
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

fn example_configs() -> Vec<String> {
    ["examples/quickstart.toml", "examples/paper.toml"]
        .iter()
        .map(|p| String::from_utf8(read(p)).expect("UTF-8"))
        .collect()
}

#[test]
fn train_recipe() {
    let seeds = example_configs()
        .iter()
        .map(|c| one("recipe.toml", train_table(c)))
        .collect();
    check(Target {
        name: "train_recipe",
        seeds,
        kinds: vec![Kind::Toml],
        // The TOML document and the recipe: a small multiple of the text.
        per_byte: 64,
        fixed: MIB,
        files: true,
        run: Box::new(|case, dir| {
            let r = sealong_cli::commands::train::read_recipe(&dir.join(&case[0].0)).map_err(s)?;
            sealong_cli::commands::train::resolve(r)
                .map_err(s)?
                .check()
                .map_err(s)?;
            Ok(())
        }),
    });
}

#[test]
fn run_config() {
    let seeds = example_configs()
        .into_iter()
        .map(|c| one("run.toml", c.into_bytes()))
        .collect();
    check(Target {
        name: "run_config",
        seeds,
        kinds: vec![Kind::Toml],
        per_byte: 64,
        fixed: MIB,
        files: false,
        run: Box::new(|case, _| {
            let text = std::str::from_utf8(&case[0].1).map_err(s)?;
            sealong_cli::commands::run::parse_config(text, Path::new("fuzz/run.toml")).map_err(s)?;
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// JSONL readers. Bound: each line is a JSON tree before it is typed (`JSON_TREE`), nothing
// sized by a number in a record.

fn jsonl_target(name: &'static str, seeds: Vec<Vec<u8>>, run: fn(&Path) -> Result<(), String>) -> Target {
    Target {
        name,
        seeds: seeds.into_iter().map(|b| one("data.jsonl", b)).collect(),
        kinds: vec![Kind::Jsonl],
        per_byte: JSON_TREE,
        fixed: MIB,
        files: true,
        run: Box::new(move |case, dir| run(&dir.join(&case[0].0))),
    }
}

fn longbench_records() -> Vec<Value> {
    vec![
        json!({"_id": "q1", "input": "Who wrote it?", "context": "Passage 1:\nA wrote it.", "answers": ["A"],
            "length": 4, "dataset": "hotpotqa", "language": "en", "all_classes": null, "num_tokens": 9,
            "target_tokens": 10, "supporting_passages": [1], "answer_aliases": ["a"]}),
        json!({"_id": 7, "input": "Where?", "context": "Paris is in France.", "answers": ["France", "FR"],
            "length": 4, "dataset": "2wikimqa"}),
    ]
}

#[test]
fn jsonl_questions() {
    check(jsonl_target(
        "jsonl_questions",
        vec![jsonl_from(&longbench_records())],
        |p| records::read_longbench(p).map(drop).map_err(s),
    ));
}

#[test]
fn jsonl_musique() {
    check(jsonl_target(
        "jsonl_musique",
        vec![jsonl_seed("data/musique/train.jsonl", 3, 4)],
        |p| records::read_musique(p).map(drop).map_err(s),
    ));
}

#[test]
fn jsonl_multihop() {
    check(jsonl_target(
        "jsonl_multihop",
        vec![
            jsonl_seed("data/hotpotqa/dev.jsonl", 3, 4),
            jsonl_seed("data/2wiki/dev.jsonl", 3, 4),
        ],
        |p| records::read_multihop(p).map(drop).map_err(s),
    ));
}

#[test]
fn jsonl_paragraphs() {
    check(jsonl_target(
        "jsonl_paragraphs",
        vec![
            jsonl_seed("data/musique/paragraphs.jsonl", 5, 4),
            jsonl_seed("data/2wiki/passages.jsonl", 5, 4),
        ],
        |p| records::read_paragraphs(p).map(drop).map_err(s),
    ));
}

/// An evaluation file read in `format` (detected when `None`), then every question's message
/// built and the hostile question text scored with the question's metric, as `eval` does.
fn eval_file(p: &Path, format: Option<EvalFormat>) -> Result<(), String> {
    let (_, questions) = evalfiles::read(p, format).map_err(s)?;
    for (_, q) in &questions {
        let _ = q.message(&q.context, Strategy::PlanAndSolve);
        for metric in [Metric::SubEm, Metric::Choice, Metric::Numeric] {
            let _ = metric.score(&q.question, &q.answers);
            let _ = metric.extracted(&q.question);
        }
    }
    Ok(())
}

#[test]
fn jsonl_leval() {
    check(jsonl_target(
        "jsonl_leval",
        vec![read("tests/golden/evalfiles/leval_synthetic.jsonl")],
        |p| eval_file(p, Some(EvalFormat::LEval)),
    ));
}

#[test]
fn jsonl_longbench_v2() {
    check(jsonl_target(
        "jsonl_longbench_v2",
        vec![read("tests/golden/evalfiles/longbench_v2_synthetic.jsonl")],
        |p| eval_file(p, Some(EvalFormat::LongBenchV2)),
    ));
}

/// LongBench-v2's `data.json`: one JSON array of records.
#[test]
fn json_longbench_v2() {
    check(Target {
        name: "json_longbench_v2",
        seeds: vec![one("data.json", read("tests/golden/evalfiles/data.json"))],
        kinds: vec![Kind::Json],
        per_byte: JSON_TREE,
        fixed: MIB,
        files: true,
        run: Box::new(|case, dir| eval_file(&dir.join(&case[0].0), None)),
    });
}

#[test]
fn jsonl_gsm8k() {
    check(jsonl_target(
        "jsonl_gsm8k",
        vec![jsonl_seed("data/gsm8k/test.jsonl", 4, 4)],
        |p| eval_file(p, Some(EvalFormat::Gsm8k)),
    ));
}

/// Format detection: any of the four schemas, told apart by the first record.
#[test]
fn jsonl_eval_detect() {
    check(jsonl_target(
        "jsonl_eval_detect",
        vec![
            read("tests/golden/evalfiles/leval_synthetic.jsonl"),
            read("tests/golden/evalfiles/longbench_v2_synthetic.jsonl"),
            jsonl_seed("data/gsm8k/test.jsonl", 2, 4),
            jsonl_from(&longbench_records()),
        ],
        |p| eval_file(p, None),
    ));
}

fn sample_records() -> Vec<Value> {
    vec![
        json!({"id": "q1", "question": "Who?", "prompt": "\nctx\n\nWho?\nThink.", "answers": ["A"],
            "samples": [{"text": "A", "num_tokens": 1, "finish_reason": "stop"}, {"text": "B"}], "strategy": "plan_and_solve"}),
        json!({"id": 2, "prompt": "p", "answers": "x", "samples": ["x", "y", "z"]}),
    ]
}

#[test]
fn jsonl_samples() {
    check(jsonl_target(
        "jsonl_samples",
        vec![jsonl_from(&sample_records())],
        |p| {
            for l in samples::read(p).map_err(s)? {
                let _ = l.value.context();
            }
            Ok(())
        },
    ));
}

fn scored_records() -> Vec<Value> {
    vec![
        json!({"id": "q1", "prompt": "p", "answers": ["A"], "samples": ["A", "B", "A"], "method": "embedding",
            "scores": [0.9, 0.1, 0.8], "chosen": 0, "rejected": 1, "sub_em": [true, false, true]}),
        json!({"id": "q2", "prompt": "p", "samples": ["x", "y"], "method": "rouge",
            "scores": [0.5, 0.5], "chosen": 1, "rejected": 0, "sub_em": [false, false]}),
    ]
}

#[test]
fn jsonl_scores() {
    check(jsonl_target("jsonl_scores", vec![jsonl_from(&scored_records())], |p| {
        sealong_cli::commands::score::summarize(p, 42).map(drop).map_err(s)
    }));
}

#[test]
fn jsonl_pairs() {
    let records = vec![
        json!({"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}),
        json!({"id": "b", "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "chosen": [{"role": "assistant", "content": "c"}], "rejected": [{"role": "assistant", "content": "r"}]}),
        json!({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "rejected": "x"}),
    ];
    check(jsonl_target("jsonl_pairs", vec![jsonl_from(&records)], |p| {
        pairs::read_pairs(p, true).map(drop).map_err(s)?;
        pairs::read_pairs(p, false).map(drop).map_err(s)
    }));
}

#[test]
fn jsonl_predictions() {
    let records = vec![
        json!({"key": "hotpotqa/q1", "id": "q1", "task": "hotpotqa", "answers": ["A"], "prompt_tokens": 10,
            "truncated_tokens": 0, "prediction": "A", "finish_reason": "stop", "sub_em": true,
            "samples": ["A", "B"], "samples_sub_em": [true, false], "mbr_scores": [0.9, 0.8], "mbr_choice": 0}),
        json!({"key": "2wikimqa/7", "id": 7, "task": "2wikimqa", "answers": ["F"], "prediction": "G", "sub_em": false}),
    ];
    check(jsonl_target("jsonl_predictions", vec![jsonl_from(&records)], |p| {
        let keys: HashSet<String> = ["hotpotqa/q1", "2wikimqa/7"].iter().map(|k| (*k).to_string()).collect();
        let outcomes = sealong_cli::commands::eval::outcomes(p, &keys).map_err(s)?;
        let _ = sealong::eval::tables::table(&outcomes);
        Ok(())
    }));
}

/// The browser view's reader (core's `jsonl::parse_line` + `SampleSet` per line, scores checked
/// against N), on the same records.
#[test]
fn jsonl_view() {
    let mut recs = sample_records();
    recs.extend(scored_records());
    check(Target {
        name: "jsonl_view",
        seeds: vec![one("samples.jsonl", jsonl_from(&recs))],
        kinds: vec![Kind::Jsonl],
        per_byte: JSON_TREE,
        fixed: MIB,
        files: false,
        run: Box::new(|case, _| {
            let text = String::from_utf8_lossy(&case[0].1);
            let parsed = sealong_web::records::parse(&text, "fuzz.jsonl");
            if parsed.records.is_empty() {
                return Err("no records".into());
            }
            Ok(())
        }),
    });
}

/// A run directory as `sealong report` reads it: scored records, training metrics, evaluation and
/// score summaries (each malformed part reported, never fatal), rendered to HTML.
#[test]
fn run_files() {
    let train = jsonl_from(&[
        json!({"step": 1, "total_steps": 2, "epoch": 0.5, "lr": 1e-5, "loss": 2.5, "nll": 2.0, "grad_norm": 1.5,
            "reward_accuracy": 0.5, "margin": 0.1, "pairs": 4, "tokens": 1000, "step_seconds": 3.0}),
        json!({"step": 2, "total_steps": 2, "loss": 2.0, "nll": 1.8}),
    ]);
    let eval = json_bytes(
        &json!({"model": "m", "strategy": "plan_and_solve", "n": 4, "max_new_tokens": 128,
        "tasks": [{"task": "hotpotqa", "questions": 10, "greedy": 50.0, "mbr": 55.0, "random": 45.0, "oracle": 70.0,
            "oracle_curve": [45.0, 60.0, 65.0, 70.0]}],
        "average": {"task": "average", "greedy": 50.0, "oracle_curve": [45.0, 70.0]}}),
    );
    let summary = json_bytes(&json!({"method": "embedding", "questions": 2, "questions_with_gold": 2,
        "sub_em_max": 100.0, "sub_em_chosen": 50.0}));
    use sealong::eval::report::files;
    let case: Case = vec![
        (files::SCORED.into(), jsonl_from(&scored_records())),
        (files::TRAIN_METRICS.into(), train),
        (files::EVAL_BEFORE.into(), eval.clone()),
        (files::EVAL_AFTER.into(), eval),
        (files::SCORE_SUMMARY.into(), summary.clone()),
        (files::RUN_SUMMARY.into(), summary),
    ];
    check(Target {
        name: "run_files",
        seeds: vec![case],
        kinds: vec![Kind::Jsonl, Kind::Jsonl, Kind::Json, Kind::Json, Kind::Json, Kind::Json],
        // The records as JSON trees and the HTML page, which grows with the records and the
        // warnings (at most 56 bytes per input byte more), not with a number in them.
        per_byte: JSON_TREE + 56,
        fixed: 4 * MIB,
        files: true,
        run: Box::new(|_, dir| {
            let data = sealong_cli::commands::report::collect(dir);
            let html = sealong::eval::report::render(&data);
            if html.is_empty() {
                return Err("empty page".into());
            }
            // A part that could not be used, or lines skipped, count as rejected.
            let unreadable = [
                matches!(data.scored, Part::Unreadable(_)),
                matches!(data.train, Part::Unreadable(_)),
                matches!(data.eval_before, Part::Unreadable(_)),
                matches!(data.score_summary, Part::Unreadable(_)),
            ];
            if unreadable.contains(&true) || !data.warnings.is_empty() {
                return Err("a part was unreadable or lines were skipped".into());
            }
            Ok(())
        }),
    });
}

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible chat-completions responses (the remote backend's bodies).

#[test]
fn openai_response() {
    let bodies = [
        json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": null}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}),
        json!({"choices": [{"message": {"content": "x"}, "finish_reason": "eos"}]}),
        json!({"error": {"message": "context too long", "type": "invalid_request_error", "code": 400}}),
        json!({"detail": [{"loc": ["body", "n"], "msg": "bad"}]}),
    ];
    check(Target {
        name: "openai_response",
        seeds: bodies.iter().map(|b| one("body.json", json_bytes(b))).collect(),
        kinds: vec![Kind::Json],
        // The body's JSON tree (twice: the error-message probe parses it too, one after the
        // other), the answers copied out, an error message clipped to a fixed length.
        per_byte: JSON_TREE,
        fixed: MIB,
        files: false,
        run: Box::new(|case, _| {
            let text = String::from_utf8_lossy(&case[0].1);
            let msg = sealong_cli::openai::server_message(&text);
            if msg.is_empty() && !text.trim().is_empty() {
                return Err("empty server message".into());
            }
            let v: Value = serde_json::from_str(&text).map_err(s)?;
            if v.get("choices").is_some() {
                sealong_cli::openai::parse_response(&v).map_err(s)?;
            }
            Ok(())
        }),
    });
}

/// The derivation of `JSON_TREE` holds for this build's `serde_json::Value`.
#[test]
fn json_value_size_behind_the_bound() {
    assert!(std::mem::size_of::<Value>() <= 80, "{}", std::mem::size_of::<Value>());
    assert!(4 * std::mem::size_of::<Value>() / 2 < JSON_TREE);
}

/// Deterministic: the same case index gives the same bytes (a failure can be replayed).
#[test]
fn cases_are_reproducible() {
    let t = Target {
        name: "jsonl_pairs",
        seeds: vec![one("a", jsonl_from(&sample_records()))],
        kinds: vec![Kind::Jsonl],
        per_byte: 1,
        fixed: 0,
        files: false,
        run: Box::new(|_, _| Ok(())),
    };
    for i in [0, 1, 17, 1999] {
        assert_eq!(crate::make_case(&t, i), crate::make_case(&t, i));
    }
    assert_ne!(crate::make_case(&t, 1), crate::make_case(&t, 2));
}
