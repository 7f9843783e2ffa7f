//! Tokenizer and chat-template parity with the golden vectors (HF transformers /
//! sentence-transformers), for both default models. Tolerance: exact (ids and text).

use sealong::loading::{ModelPath, TextAssets};
use sealong::text::{Message, Strategy, Tokenizer, prompts};
use sealong_tests::{golden_json, ids, minilm_path, s, smollm_path};
use serde_json::Value;

fn smollm() -> TextAssets {
    TextAssets::load(&ModelPath::detect(&smollm_path()).expect("detect")).expect("load SmolLM2 text assets")
}

#[test]
fn smollm_ids_equal_golden_for_every_string() {
    let assets = smollm();
    let g = golden_json("smollm_tokens.json");
    let strings = g["strings"].as_array().expect("strings");
    assert!(strings.len() >= 20, "golden file has {} strings", strings.len());
    let mut digit_split_cases = 0;
    for case in strings {
        let text = s(case, "text");
        // The reference README's decision: the digit-split ids hold where they are given.
        let expected = if case["ids_digit_split_pretokenizer"].is_array() {
            digit_split_cases += 1;
            ids(case, "ids_digit_split_pretokenizer")
        } else {
            ids(case, "ids")
        };
        let got = assets.tokenizer.encode(text, false).expect("encode");
        assert_eq!(got, expected, "ids differ for {text:?}");
        // Decoding the golden ids gives the golden text (byte-level round trip).
        let decoded = assets.tokenizer.decode(&ids(case, "ids"), false).expect("decode");
        assert_eq!(decoded, s(case, "decoded"), "decode differs for {text:?}");
    }
    assert!(digit_split_cases > 0, "no digit-split case was checked");
}

#[test]
fn smollm_special_tokens_match_the_reference_config() {
    let assets = smollm();
    let t = &assets.tokenizer;
    let cfg = golden_json("smollm_config.json");
    assert_eq!(
        t.bos_id,
        Some(cfg["derived"]["bos_token_id"].as_u64().expect("bos") as u32)
    );
    assert_eq!(
        t.eos_id,
        Some(cfg["derived"]["eos_token_id"].as_u64().expect("eos") as u32)
    );
    assert_eq!(
        t.pad_id,
        Some(cfg["derived"]["pad_token_id"].as_u64().expect("pad") as u32)
    );
    assert_eq!(t.vocab_size(), cfg["tokenizer"]["len"].as_u64().expect("len") as usize);
    assert!(!t.add_bos);
    let added = cfg["tokenizer"]["added_tokens"].as_array().expect("added");
    let expected: Vec<u32> = added.iter().map(|a| a["id"].as_u64().expect("id") as u32).collect();
    assert_eq!(t.special_ids(), expected);
    for a in added {
        assert_eq!(
            t.id_to_token(a["id"].as_u64().expect("id") as u32).as_deref(),
            Some(s(a, "content"))
        );
    }
}

/// Builds the SEALONG user message of a golden spec with our prompt code.
fn build_user_message(spec: &Value) -> String {
    let passages: Vec<&str> = spec["passages"]
        .as_array()
        .expect("passages")
        .iter()
        .map(|p| p.as_str().expect("passage"))
        .collect();
    let strategy: Strategy = s(spec, "strategy").parse().expect("strategy");
    prompts::user_message(&prompts::passages_context(&passages), s(spec, "question"), strategy)
}

#[test]
fn smollm_chat_prompts_render_and_tokenize_exactly() {
    let assets = smollm();
    let g = golden_json("smollm_chat.json");
    assert_eq!(assets.template().expect("template").source(), s(&g, "chat_template"));
    let prompts_ = g["prompts"].as_array().expect("prompts");
    let mut specs = 0;
    for p in prompts_ {
        let user = s(p, "user_message");
        if !p["sealong_spec"].is_null() {
            specs += 1;
            assert_eq!(
                build_user_message(&p["sealong_spec"]),
                user,
                "SEALONG user message differs"
            );
        }
        let (rendered, got_ids) = assets.chat_prompt(user).expect("chat prompt");
        assert_eq!(rendered, s(p, "rendered"));
        assert_eq!(got_ids, ids(p, "ids"), "ids differ for prompt {user:?}");
    }
    assert!(specs > 0, "no SEALONG long-context spec was checked");
    for c in g["conversations"].as_array().expect("conversations") {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).expect("messages");
        let add_generation_prompt = c["add_generation_prompt"].as_bool().expect("add_generation_prompt");
        let rendered = assets.render(&messages, add_generation_prompt).expect("render");
        assert_eq!(rendered, s(c, "rendered"));
        assert_eq!(
            assets.tokenizer.encode(&rendered, false).expect("encode"),
            ids(c, "ids")
        );
    }
}

#[test]
fn minilm_ids_equal_sentence_transformers() {
    let dir = minilm_path();
    let assets = TextAssets::from_hf_dir(&dir).expect("MiniLM tokenizer");
    let g = golden_json("minilm_tokens.json");
    let max_len = g["max_seq_length"].as_u64().expect("max_seq_length") as usize;
    assert_eq!(max_len, 256);
    let tok: Tokenizer = assets.tokenizer.truncating(max_len).expect("truncating");
    let mut n = 0;
    let mut truncated = 0;
    for group in ["sentences", "plain_strings"] {
        for case in g[group].as_array().expect("cases") {
            let text = s(case, "text");
            let got = tok.encode(text, true).expect("encode");
            assert_eq!(got, ids(case, "ids"), "MiniLM ids differ for {text:?}");
            n += 1;
            truncated += usize::from(case["truncated"].as_bool() == Some(true));
        }
    }
    assert!(n >= 20 && truncated > 0, "checked {n} strings, {truncated} truncated");
}
