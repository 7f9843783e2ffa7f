//! A tiny random BERT sentence encoder as the bytes of a sentence-transformers directory
//! (config.json, tokenizer.json, model.safetensors, pooling, modules), so the web crate's loading
//! and scoring run in tests without the real model (the browser tests cannot read files).

use sealong_web::ModelFiles;
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "dog", "ran", "a", "paris", "is", "answer", "ada", "bob", "capital", "of",
    "france", "it", "was", "designed", "by", ".", ",", "##s", "##ed",
];
const SPECIALS: &[&str] = &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const HIDDEN: usize = 32;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const INTER: usize = 64;
const POSITIONS: usize = 64;

fn vocab_size() -> usize {
    SPECIALS.len() + WORDS.len()
}

fn config() -> Value {
    json!({
        "model_type": "bert", "vocab_size": vocab_size(), "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": INTER,
        "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2, "pad_token_id": 0
    })
}

fn tokenizer() -> Value {
    let vocab: serde_json::Map<String, Value> = SPECIALS
        .iter()
        .chain(WORDS)
        .enumerate()
        .map(|(i, w)| ((*w).to_string(), json!(i)))
        .collect();
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let special = |name: &str| json!({"SpecialToken": {"id": name, "type_id": 0}});
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Every tensor of the encoder with its shape; values from a fixed LCG (LayerNorm weights near 1).
fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut state: u64 = 0x5EA1_0C0D;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, ones: bool| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| if ones { 1.0 + next() } else { next() }).collect();
        out.push((name, shape, v));
    };
    let h = HIDDEN;
    add("embeddings.word_embeddings.weight".into(), vec![vocab_size(), h], false);
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, h],
        false,
    );
    add("embeddings.token_type_embeddings.weight".into(), vec![2, h], false);
    add("embeddings.LayerNorm.weight".into(), vec![h], true);
    add("embeddings.LayerNorm.bias".into(), vec![h], false);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        for m in ["query", "key", "value"] {
            add(format!("{p}attention.self.{m}.weight"), vec![h, h], false);
            add(format!("{p}attention.self.{m}.bias"), vec![h], false);
        }
        add(format!("{p}attention.output.dense.weight"), vec![h, h], false);
        add(format!("{p}attention.output.dense.bias"), vec![h], false);
        add(format!("{p}attention.output.LayerNorm.weight"), vec![h], true);
        add(format!("{p}attention.output.LayerNorm.bias"), vec![h], false);
        add(format!("{p}intermediate.dense.weight"), vec![INTER, h], false);
        add(format!("{p}intermediate.dense.bias"), vec![INTER], false);
        add(format!("{p}output.dense.weight"), vec![h, INTER], false);
        add(format!("{p}output.dense.bias"), vec![h], false);
        add(format!("{p}output.LayerNorm.weight"), vec![h], true);
        add(format!("{p}output.LayerNorm.bias"), vec![h], false);
    }
    out
}

/// The safetensors format by hand: u64 header length, JSON header, little-endian f32 data.
fn safetensors() -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors() {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name,
            json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("header");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// `(relative path, bytes)` of the whole directory.
pub fn files() -> Vec<(String, Vec<u8>)> {
    let js = |v: Value| serde_json::to_vec(&v).expect("json");
    vec![
        ("config.json".into(), js(config())),
        ("tokenizer.json".into(), js(tokenizer())),
        ("model.safetensors".into(), safetensors()),
        (
            "1_Pooling/config.json".into(),
            js(json!({"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": true})),
        ),
        ("sentence_bert_config.json".into(), js(json!({"max_seq_length": 32}))),
        (
            "modules.json".into(),
            js(json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            ])),
        ),
    ]
}

pub fn model_files() -> ModelFiles {
    let mut m = ModelFiles::new();
    for (name, bytes) in files() {
        m.add(&name, bytes);
    }
    m
}

/// Answers of one question: two near-duplicates and outliers, so chosen is clear.
pub fn answers() -> Vec<String> {
    [
        "Paris is the capital of France.",
        "The capital of France is Paris.",
        "It was designed by Ada.",
        "The dog ran on the mat.",
        "Paris.",
    ]
    .map(String::from)
    .to_vec()
}

/// Answers longer than the tiny model's 32-token window: each short answer after a shared
/// reasoning of about 60 tokens, so each needs three windows.
pub fn long_answers() -> Vec<String> {
    let reasoning = "The passages name the city and the river and compare them step by step. ".repeat(4);
    answers().iter().map(|a| format!("{reasoning}{a}")).collect()
}
