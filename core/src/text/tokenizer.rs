//! Tokenizers: HF `tokenizer.json` through the `tokenizers` crate, and the tokenizer stored in
//! a GGUF file's metadata rebuilt as an equivalent `tokenizer.json`, so a bare .gguf works.
//!
//! GGUF pre-tokenizers: llama.cpp names the pre-tokenizer (`tokenizer.ggml.pre`) instead of
//! storing it. We map each supported name to the pre-tokenizer of the model's original
//! tokenizer.json. For `smollm` that is `Digits(individual_digits)` then `ByteLevel`: llama.cpp's
//! `smollm` splits digits too, while transformers' GGUF loader drops the digit split (see
//! tests/golden/PROVENANCE.md); the model was trained with the split, so we keep it.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::loading::gguf::{Gguf, GgufValue};

/// GPT-2's byte-level BPE split pattern, as `ByteLevel(use_regex=true)` applies it.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A text tokenizer plus the special tokens generation and chat templates need.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from, for error messages.
    source: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// Whether the model expects a BOS token prepended to raw text (chat templates write their
    /// own, so rendered prompts are always encoded without it).
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos_token)
            .field("eos", &self.eos_token)
            .finish()
    }
}

impl Tokenizer {
    /// Wraps a `tokenizers` tokenizer, removing any truncation or padding stored in the file
    /// (callers decide those; MiniLM's file carries 128-token truncation that must not apply).
    pub fn from_inner(mut inner: tokenizers::Tokenizer, source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        inner.with_truncation(None).map_err(|e| Error::tokenizer(&source, e))?;
        inner.with_padding(None);
        Ok(Tokenizer {
            inner,
            source,
            bos_token: None,
            eos_token: None,
            bos_id: None,
            eos_id: None,
            pad_id: None,
            add_bos: false,
        })
    }

    /// Loads `tokenizer.json` bytes. Special tokens are filled in by the caller (HF keeps them in
    /// tokenizer_config.json), see [`Tokenizer::set_special_tokens`].
    pub fn from_json_bytes(bytes: &[u8], source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        // The syntax first: tokenizers 0.23 `expect`s the result of reading a `decoder` entry,
        // so malformed JSON inside one panicked instead of failing (issue 17's fuzzing). This
        // pass allocates nothing and gives serde's line and column.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map_err(|e| Error::tokenizer(&source, format!("malformed JSON: {e}")))?;
        // The crate buffers and re-reads its untagged parts at every level, so a deeply nested
        // value took ~1000 times its text in memory (55 KB made 52 MB). Real files nest about 6
        // deep.
        let depth = json_depth(bytes);
        if depth > MAX_JSON_DEPTH {
            return Err(Error::tokenizer(
                &source,
                format!("values nested {depth} deep (a tokenizer.json nests at most {MAX_JSON_DEPTH})"),
            ));
        }
        let inner = guarded(&source, || tokenizers::Tokenizer::from_bytes(bytes))?;
        Self::from_inner(inner, source)
    }

    /// Loads a `tokenizer.json` file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_bytes(&bytes, path.display().to_string())
    }

    /// Sets BOS/EOS/PAD from token strings (as tokenizer_config.json gives them).
    pub fn set_special_tokens(&mut self, bos: Option<String>, eos: Option<String>, pad: Option<String>) {
        self.bos_id = bos.as_deref().and_then(|t| self.token_to_id(t));
        self.eos_id = eos.as_deref().and_then(|t| self.token_to_id(t));
        self.pad_id = pad.as_deref().and_then(|t| self.token_to_id(t));
        self.bos_token = bos;
        self.eos_token = eos;
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(gguf: &Gguf, source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let json = gguf_tokenizer_json(gguf, &source)?;
        let bytes = serde_json::to_vec(&json).map_err(|e| Error::tokenizer(&source, e))?;
        let mut tok = Self::from_json_bytes(&bytes, source.clone())?;
        let id = |key: &str| -> Option<u32> {
            gguf.get(key)
                .and_then(GgufValue::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        tok.bos_id = id("tokenizer.ggml.bos_token_id");
        tok.eos_id = id("tokenizer.ggml.eos_token_id");
        tok.pad_id = id("tokenizer.ggml.padding_token_id");
        tok.bos_token = tok.bos_id.and_then(|i| tok.id_to_token(i));
        tok.eos_token = tok.eos_id.and_then(|i| tok.id_to_token(i));
        tok.add_bos = gguf
            .get("tokenizer.ggml.add_bos_token")
            .and_then(GgufValue::as_bool)
            .unwrap_or(false);
        Ok(tok)
    }

    /// A copy that truncates every encoding to `max_len` tokens, special tokens included (how
    /// sentence-transformers applies `max_seq_length`: `[CLS] ... [SEP]` within the limit).
    pub fn truncating(&self, max_len: usize) -> Result<Tokenizer> {
        let mut t = self.clone();
        t.inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::tokenizer(&self.source, e))?;
        Ok(t)
    }

    /// Token ids of `text` (special tokens written in the text are matched whole, as HF does).
    /// `add_special_tokens` applies the tokenizer's post-processor (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = guarded(&self.source, || self.inner.encode_fast(text, add_special_tokens))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Number of tokens in `text` without special tokens (what `tokenizer.tokenize` counts).
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self.encode(text, false)?.len())
    }

    /// Token strings (byte-level pieces for BPE models) of `text`.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = guarded(&self.source, || self.inner.encode_fast(text, false))?;
        Ok(enc.get_tokens().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        guarded(&self.source, || self.inner.decode(ids, skip_special_tokens))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of added tokens marked special (control tokens such as `<|im_end|>`).
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The underlying `tokenizers` tokenizer (the encoder sets its own truncation on a clone).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

fn gguf_err(source: &str, message: impl Into<String>) -> Error {
    Error::tokenizer(source, message.into())
}

fn gguf_strings<'g>(gguf: &'g Gguf, key: &str, source: &str) -> Result<Vec<&'g str>> {
    let arr = gguf
        .get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| gguf_err(source, format!("GGUF has no {key} array")))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| gguf_err(source, format!("{key}[{i}] is not a string")))
        })
        .collect()
}

/// The pre-tokenizer of the original tokenizer.json for a llama.cpp `tokenizer.ggml.pre` name.
fn pre_tokenizer_for(pre: &str, source: &str) -> Result<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "default" | "gpt-2" | "gpt2" => byte_level(true),
        "llama-bpe" | "llama3" | "llama-v3" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
        other => {
            return Err(gguf_err(
                source,
                format!(
                    "GGUF pre-tokenizer {other:?} is not supported (supported: smollm, gpt-2, llama-bpe, qwen2); \
                     use the model's HF directory with its tokenizer.json instead"
                ),
            ));
        }
    })
}

/// The deepest nesting accepted in a tokenizer.json (real files: about 6).
const MAX_JSON_DEPTH: usize = 32;

/// How deep the arrays and objects of a JSON text nest (brackets inside strings not counted);
/// the text has been checked to be JSON.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Runs a call into the `tokenizers` crate, a panic in it becoming an error naming `source`.
/// Why: the crate `expect`s in places on values a file controls (a normalizer's precompiled
/// charsmap, a decoder entry it cannot re-read), and a tokenizer file is outside input: it must
/// give an error, not take the process down (issue 17). Where panics abort (wasm), they still do.
fn guarded<T>(source: &str, f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| Error::tokenizer(source, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::tokenizer(
                source,
                format!("the tokenizers library failed on this file ({what}); is it a valid tokenizer.json?"),
            ))
        }
    }
}

/// Builds a tokenizer.json (as a JSON value) from GGUF metadata.
fn gguf_tokenizer_json(gguf: &Gguf, source: &str) -> Result<Value> {
    let model = gguf
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| gguf_err(source, "GGUF has no tokenizer (tokenizer.ggml.model missing)"))?;
    if model != "gpt2" {
        return Err(gguf_err(
            source,
            format!(
                "GGUF tokenizer model {model:?} is not supported (byte-level BPE \"gpt2\" is); \
                 use the model's HF directory with its tokenizer.json instead"
            ),
        ));
    }
    let tokens = gguf_strings(gguf, "tokenizer.ggml.tokens", source)?;
    let merges = gguf_strings(gguf, "tokenizer.ggml.merges", source)?;
    let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
        Some(arr) => arr.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(gguf_err(
            source,
            format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                types.len(),
                tokens.len()
            ),
        ));
    }
    let pre = gguf
        .get("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    let pre_tokenizer = pre_tokenizer_for(pre, source)?;
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(tok.to_string(), json!(id)).is_some() {
            return Err(gguf_err(
                source,
                format!("token {tok:?} appears twice in tokenizer.ggml.tokens"),
            ));
        }
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": ty == TOKEN_TYPE_USER_DEFINED, "special": ty == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    // Llama-3's tokenizer.json sets ignore_merges (whole words in the vocabulary win).
    let ignore_merges = matches!(pre, "llama-bpe" | "llama3" | "llama-v3");
    let normalizer = if pre == "qwen2" {
        json!({"type": "NFC"})
    } else {
        Value::Null
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loading::gguf::tests::GgufBuilder;

    fn tiny(pre: &str, model: &str) -> Vec<u8> {
        GgufBuilder::default()
            .string("tokenizer.ggml.model", model)
            .string("tokenizer.ggml.pre", pre)
            .strings(
                "tokenizer.ggml.tokens",
                &["<|end|>", "a", "b", "ab", "\u{120}", "\u{120}a", "1", "2", "12"],
            )
            .i32s("tokenizer.ggml.token_type", &[3, 1, 1, 1, 1, 1, 1, 1, 1])
            .strings("tokenizer.ggml.merges", &["a b", "\u{120} a", "1 2"])
            .u32("tokenizer.ggml.eos_token_id", 0)
            .bool("tokenizer.ggml.add_bos_token", false)
            .build()
    }

    #[test]
    fn gguf_tokenizer_with_digit_split() {
        let bytes = tiny("smollm", "gpt2");
        let g = Gguf::parse(&bytes, "tiny").expect("parse");
        let t = Tokenizer::from_gguf(&g, "tiny").expect("tokenizer");
        // Digits are split before BPE, so the "1 2" merge never applies.
        assert_eq!(t.encode("ab a12<|end|>", false).expect("encode"), vec![3, 5, 6, 7, 0]);
        assert_eq!(t.eos_id, Some(0));
        assert_eq!(t.eos_token.as_deref(), Some("<|end|>"));
        assert_eq!(t.decode(&[3, 5, 6, 7, 0], false).expect("decode"), "ab a12<|end|>");
        assert_eq!(t.decode(&[3, 0], true).expect("decode"), "ab");
        // The plain GPT-2 pre-tokenizer keeps digit runs together.
        let bytes = tiny("gpt-2", "gpt2");
        let t = Tokenizer::from_gguf(&Gguf::parse(&bytes, "tiny").expect("parse"), "tiny").expect("tokenizer");
        assert_eq!(t.encode("12", false).expect("encode"), vec![8]);
    }

    #[test]
    fn unsupported_gguf_tokenizers_are_named() {
        let e = Tokenizer::from_gguf(&Gguf::parse(&tiny("mystery", "gpt2"), "m").expect("p"), "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pre-tokenizer \"mystery\" is not supported") && e.contains("m.gguf"),
            "{e}"
        );
        let e = Tokenizer::from_gguf(&Gguf::parse(&tiny("smollm", "llama"), "m").expect("p"), "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer model \"llama\" is not supported"), "{e}");
    }
}
