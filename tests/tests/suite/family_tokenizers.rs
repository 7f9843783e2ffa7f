//! Tokenizers and chat templates of the SEALONG model families (Llama-3.1-Instruct and
//! Qwen2.5-Instruct) against Hugging Face transformers' golden outputs in
//! `tests/golden/families/<family>/golden.json` (see tests/golden/PROVENANCE.md).
//!
//! The tokenizer files are loaded through the project's normal loader (`ModelPath::detect` +
//! `TextAssets::load`, what `sealong tokenize --model DIR` does) from a directory that holds only
//! the tokenizer files: no config.json, no weights.
//!
//! Every case of golden.json is checked. Tolerance: **exact equality** of every id list, token
//! string, decoded text and rendered chat text; nothing is normalized or allowed to differ.
//! Failures are collected over all cases and reported together, each naming its case.

use std::path::{Path, PathBuf};

use sealong::loading::{ModelPath, TextAssets};
use sealong::text::Message;
use sealong_tests::{golden_dir, ids};
use serde_json::Value;

/// The two families whose files are in tests/golden/families/.
pub const FAMILIES: [&str; 2] = ["llama-3.1-instruct", "qwen2.5-instruct"];

/// The files a tokenizer-only directory holds (those present for the family are copied).
const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

pub fn family_dir(family: &str) -> PathBuf {
    golden_dir().join("families").join(family)
}

pub fn golden(family: &str) -> Value {
    let path = family_dir(family).join("golden.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A temporary directory with only the family's tokenizer files in it.
pub fn tokenizer_only_dir(family: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = family_dir(family);
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if from.is_file() {
            std::fs::copy(&from, dir.path().join(name)).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        }
    }
    assert!(
        dir.path().join("tokenizer.json").is_file(),
        "{family} has no tokenizer.json"
    );
    dir
}

/// The conversation of a golden chat case.
pub fn messages(case: &Value) -> Vec<Message> {
    serde_json::from_value(case["messages"].clone()).expect("golden messages are {role, content} objects")
}

fn load(dir: &Path) -> TextAssets {
    let model = ModelPath::detect(dir).unwrap_or_else(|e| panic!("detect {}: {e}", dir.display()));
    TextAssets::load(&model).unwrap_or_else(|e| panic!("loading the tokenizer from {}: {e}", dir.display()))
}

fn str_or_null(v: &Value) -> Option<&str> {
    v.as_str()
}

/// Every check of one family; returns one line per failed check.
fn family_failures(family: &str) -> Vec<String> {
    let g = golden(family);
    let dir = tokenizer_only_dir(family);
    let assets = load(dir.path());
    let t = &assets.tokenizer;
    let mut fails = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            fails.push(format!("[{family}] {what}"));
        }
    };

    // Vocabulary size and special tokens.
    let len = g["len_tokenizer"].as_u64().expect("len_tokenizer") as usize;
    check(
        t.vocab_size() == len,
        format!("len(tokenizer): got {}, want {len}", t.vocab_size()),
    );
    let bos = str_or_null(&g["bos_token"]);
    check(
        t.bos_token.as_deref() == bos,
        format!("bos_token: got {:?}, want {bos:?}", t.bos_token),
    );
    let bos_id = bos.and_then(|b| t.token_to_id(b));
    check(
        t.bos_id == bos_id && bos.is_none() == bos_id.is_none(),
        format!("bos id: got {:?}, want {bos_id:?}", t.bos_id),
    );
    let eos = str_or_null(&g["eos_token"]);
    check(
        t.eos_token.as_deref() == eos,
        format!("eos_token: got {:?}, want {eos:?}", t.eos_token),
    );
    let eos_id = eos.and_then(|e| t.token_to_id(e));
    check(
        t.eos_id == eos_id && eos_id.is_some(),
        format!("eos id: got {:?}, want {eos_id:?}", t.eos_id),
    );
    let pad = str_or_null(&g["pad_token"]);
    let pad_id = pad.and_then(|p| t.token_to_id(p));
    check(
        t.pad_id == pad_id && pad.is_none() == pad_id.is_none(),
        format!(
            "pad token: got id {:?} ({:?}), want {pad:?} (id {pad_id:?})",
            t.pad_id,
            t.pad_id.and_then(|i| t.id_to_token(i))
        ),
    );

    // Strings: ids for both add_special_tokens settings, token strings, decoded text.
    let strings = g["strings"].as_array().expect("strings");
    for case in strings {
        let text = case["text"].as_str().expect("text");
        let add = case["add_special_tokens"].as_bool().expect("add_special_tokens");
        let name = format!("string {text:?} add_special_tokens={add}");
        let want = ids(case, "ids");
        match t.encode(text, add) {
            Ok(got) => check(got == want, format!("{name}: ids\n    got  {got:?}\n    want {want:?}")),
            Err(e) => check(false, format!("{name}: encode failed: {e}")),
        }
        let want_tokens: Vec<&str> = case["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|v| v.as_str().expect("token"))
            .collect();
        let got_tokens: Vec<String> = want
            .iter()
            .map(|&i| t.id_to_token(i).unwrap_or_else(|| format!("<no token for id {i}>")))
            .collect();
        check(
            got_tokens == want_tokens,
            format!("{name}: tokens\n    got  {got_tokens:?}\n    want {want_tokens:?}"),
        );
        let want_decoded = case["decoded"].as_str().expect("decoded");
        match t.decode(&want, false) {
            Ok(got) => check(
                got == want_decoded,
                format!("{name}: decoded\n    got  {got:?}\n    want {want_decoded:?}"),
            ),
            Err(e) => check(false, format!("{name}: decode failed: {e}")),
        }
    }

    // Chats: the render, the ids of the render, and its ids with special tokens added.
    let chats = g["chats"].as_array().expect("chats");
    for case in chats {
        let agp = case["add_generation_prompt"].as_bool().expect("add_generation_prompt");
        let name = format!(
            "chat {:?} add_generation_prompt={agp}",
            case["name"].as_str().expect("name")
        );
        let want_text = case["text"].as_str().expect("text");
        let rendered = match assets.render(&messages(case), agp) {
            Ok(r) => r,
            Err(e) => {
                check(false, format!("{name}: render failed: {e}"));
                continue;
            }
        };
        check(
            rendered == want_text,
            format!("{name}: rendered text\n    got  {rendered:?}\n    want {want_text:?}"),
        );
        for (key, add) in [("ids", false), ("ids_add_special_tokens_true", true)] {
            let want = ids(case, key);
            match t.encode(&rendered, add) {
                Ok(got) => check(
                    got == want,
                    format!("{name}: {key}\n    got  {got:?}\n    want {want:?}"),
                ),
                Err(e) => check(false, format!("{name}: encode failed: {e}")),
            }
        }
    }
    assert!(
        strings.len() >= 80 && chats.len() >= 10,
        "[{family}] golden.json has only {} string and {} chat cases",
        strings.len(),
        chats.len()
    );
    fails
}

fn assert_family(family: &str) {
    let fails = family_failures(family);
    assert!(
        fails.is_empty(),
        "{} golden case check(s) failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn llama_3_1_instruct_matches_transformers_exactly() {
    assert_family(FAMILIES[0]);
}

#[test]
fn qwen2_5_instruct_matches_transformers_exactly() {
    assert_family(FAMILIES[1]);
}

#[test]
fn the_fixture_directories_hold_what_provenance_lists() {
    for family in FAMILIES {
        let dir = family_dir(family);
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "golden.json",
            "generate.py",
            "LICENSE",
            "NOTICE",
        ] {
            assert!(dir.join(name).is_file(), "{} is missing", dir.join(name).display());
        }
    }
    assert!(family_dir(FAMILIES[0]).join("special_tokens_map.json").is_file());
}
