//! Inputs the fuzzing found that panicked or allocated past their bound, each a named test with
//! the input inline and the clean error it must give now.

use sealong::text::Tokenizer;

/// A WordLevel tokenizer.json with `decoder` and `normalizer` entries spliced in.
fn tokenizer_file(decoder: &str, normalizer: &str) -> String {
    format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {normalizer}, "pre_tokenizer": null, "post_processor": null,
        "decoder": {decoder},
        "model": {{"type": "WordLevel", "vocab": {{"a": 0, "[UNK]": 1}}, "unk_token": "[UNK]"}}}}"#
    )
}

/// tokenizers 0.23 `expect`s the result of reading a `decoder` entry: malformed JSON inside one
/// panicked (found by `tokenizer_json`).
#[test]
fn tokenizer_json_with_malformed_json_inside_the_decoder() {
    let ok = Tokenizer::from_json_bytes(tokenizer_file("null", "null").as_bytes(), "ok.json").expect("a valid file");
    assert_eq!(ok.encode("a", false).expect("encode"), vec![0]);
    let bad = tokenizer_file(r#"{"type": "ByteLevel", "x": tru}"#, "null");
    let e = Tokenizer::from_json_bytes(bad.as_bytes(), "t.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t.json") && e.contains("malformed JSON") && e.contains("column"),
        "{e}"
    );
}

/// tokenizers 0.23 `expect`s a precompiled charsmap to decode; the error now names the file.
#[test]
fn tokenizer_json_with_a_bad_precompiled_charsmap() {
    let bad = tokenizer_file("null", r#"{"type": "Precompiled", "precompiled_charsmap": "!!"}"#);
    let e = Tokenizer::from_json_bytes(bad.as_bytes(), "p.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("p.json") && e.contains("tokenizers library failed"), "{e}");
}

/// A chat template asked for one 1 GB string (`indent(1000000000)`; found by `chat_template`),
/// and one that loops 10^10 times would never end: a render's fuel (its budget of steps and
/// bytes, linear in the template and messages) stops both with an error.
#[test]
fn chat_templates_that_repeat_without_bound() {
    use sealong::text::{ChatTemplate, Message};
    let messages = [Message::user("hi")];
    for (src, what) in [
        ("{{ 'a' | indent(1000000000) }}", "indent"),
        ("{{ 'x' * 99999999 }}", "repeat"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loop",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "doubling",
        ),
    ] {
        let t = ChatTemplate::new(src, "<s>", "</s>").expect("compiles");
        let e = t.render(&messages, true).unwrap_err().to_string();
        assert!(e.contains("fuel") && e.contains("without bound"), "{what}: {e}");
    }
    // A real template with a long message still renders (the budget grows with the input).
    let t = ChatTemplate::new(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] | trim + '<|im_end|>\n' }}{% endfor %}",
        "",
        "",
    )
    .expect("compiles");
    let long = "word ".repeat(400_000);
    let out = t.render(&[Message::user(long.clone())], false).expect("renders");
    assert_eq!(
        out.len(),
        "<|im_start|>user\n".len() + long.trim().len() + "<|im_end|>\n".len()
    );
}

/// `"head_dim": 2147483648` in a config.json made the RoPE tables ask for 8 GB (found by
/// `config_json`); the head dimension is now capped with an error naming the key.
#[test]
fn config_json_with_a_huge_head_dim() {
    use sealong::models::decoder::DecoderConfig;
    let mut v = serde_json::json!({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64
    });
    let ok = DecoderConfig::from_hf_json(&v, "ok/config.json").expect("valid");
    assert_eq!(ok.rope_inv_freq().len(), 4);
    v["head_dim"] = serde_json::json!(1u64 << 31);
    let e = DecoderConfig::from_hf_json(&v, "big/config.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big/config.json") && e.contains("head_dim 2147483648") && e.contains("4096"),
        "{e}"
    );
}

/// A tokenizer.json whose decoder holds objects nested ~100 deep took 52 MB for its 55 KB
/// (the tokenizers crate re-reads untagged parts at every level; found by `tokenizer_json` at
/// 100,000 cases). Nesting is now limited to 32 (real files: about 6), checked in one pass.
#[test]
fn tokenizer_json_nested_deeply() {
    let bytes = include_bytes!("deeply_nested_tokenizer.json");
    let (r, usage) = crate::alloc::measure("regression", 0, || Tokenizer::from_json_bytes(bytes, "deep.json"));
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("deep.json") && e.contains("nested") && e.contains("at most 32"),
        "{e}"
    );
    assert!(usage.peak < 1 << 20, "peak {} bytes", usage.peak);
}
