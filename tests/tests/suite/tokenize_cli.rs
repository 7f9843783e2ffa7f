//! `sealong tokenize` on a directory holding only a tokenizer's files: `--messages FILE.json`
//! renders a whole conversation, `--no-generation-prompt` leaves the assistant turn closed, and
//! `--json` gives `ids` and the rendered `prompt`, compared exactly (equality of ids and text) with
//! transformers' goldens (tests/golden/families/). A bad messages file is an error naming it.

use std::io::Write;

use clap::Parser;
use sealong_cli::cli::{Cli, Command};
use sealong_tests::ids;
use serde_json::Value;

use crate::family_tokenizers::{FAMILIES, golden, tokenizer_only_dir};

/// `sealong tokenize ARGS` parsed as the binary parses it, run in-process; returns stdout.
fn tokenize(args: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    tokenize_to(args, &mut out)?;
    Ok(String::from_utf8(out)?)
}

fn tokenize_to(args: &[&str], out: &mut dyn Write) -> anyhow::Result<()> {
    let mut argv = vec!["sealong", "tokenize"];
    argv.extend_from_slice(args);
    let Command::Tokenize(a) = Cli::try_parse_from(argv)?.command else {
        panic!("not the tokenize command");
    };
    sealong_cli::commands::tokenize::run_to(a, out)
}

#[test]
fn messages_render_and_ids_equal_golden_for_every_llama_chat() {
    let family = FAMILIES[0];
    let g = golden(family);
    let model = tokenizer_only_dir(family);
    let model = model.path().to_str().expect("utf8");
    let files = tempfile::tempdir().expect("tmp");
    let mut fails = Vec::new();
    let mut seen = [false; 2];
    for case in g["chats"].as_array().expect("chats") {
        let name = case["name"].as_str().expect("name");
        let agp = case["add_generation_prompt"].as_bool().expect("agp");
        seen[usize::from(agp)] = true;
        let file = files.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec(&case["messages"]).expect("json")).expect("write");
        let file = file.to_str().expect("utf8");
        let mut argv = vec!["--model", model, "--messages", file, "--json"];
        if !agp {
            argv.push("--no-generation-prompt");
        }
        let out: Value = serde_json::from_str(&tokenize(&argv).unwrap_or_else(|e| panic!("{name}: {e:#}")))
            .unwrap_or_else(|e| panic!("{name}: the output is not JSON: {e}"));
        let want_text = case["text"].as_str().expect("text");
        let want_ids = ids(case, "ids");
        if out["prompt"].as_str() != Some(want_text) || out["rendered"].as_str() != Some(want_text) {
            fails.push(format!(
                "{name}: prompt\n    got  {}\n    want {want_text:?}",
                out["prompt"]
            ));
        }
        let got_ids = ids(&out, "ids");
        if got_ids != want_ids {
            fails.push(format!("{name}: ids\n    got  {got_ids:?}\n    want {want_ids:?}"));
        }
        if out["n_tokens"].as_u64() != Some(want_ids.len() as u64)
            || out["tokens"].as_array().map(Vec::len) != Some(want_ids.len())
        {
            fails.push(format!("{name}: n_tokens / tokens disagree with the ids"));
        }
    }
    assert!(
        seen[0] && seen[1],
        "the goldens lack a case with or without the generation prompt"
    );
    assert!(
        fails.is_empty(),
        "{} check(s) failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn add_special_tokens_on_a_conversation_gives_the_double_bos_ids() {
    for family in FAMILIES {
        let g = golden(family);
        let case = &g["chats"][0];
        let model = tokenizer_only_dir(family);
        let file = model.path().join("conversation.json");
        std::fs::write(&file, serde_json::to_vec(&case["messages"]).expect("json")).expect("write");
        let out = tokenize(&[
            "--model",
            model.path().to_str().expect("utf8"),
            "--messages",
            file.to_str().expect("utf8"),
            "--add-special-tokens",
            "--json",
        ])
        .expect("tokenize");
        let out: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(ids(&out, "ids"), ids(case, "ids_add_special_tokens_true"), "{family}");
    }
}

#[test]
fn text_and_plain_output_on_a_tokenizer_only_directory() {
    let family = FAMILIES[1];
    let g = golden(family);
    let case = g["strings"]
        .as_array()
        .expect("strings")
        .iter()
        .find(|c| c["text"] == "Hello, world!")
        .expect("the Hello case");
    let model = tokenizer_only_dir(family);
    let model = model.path().to_str().expect("utf8");
    let out: Value =
        serde_json::from_str(&tokenize(&["--model", model, "--text", "Hello, world!", "--json"]).expect("run"))
            .expect("json");
    assert_eq!(ids(&out, "ids"), ids(case, "ids"));
    assert_eq!(out["prompt"], "Hello, world!");
    assert_eq!(out["tokens"], case["tokens"]);
    // The plain form: the id list and the count.
    let plain = tokenize(&["--model", model, "--text", "Hello, world!"]).expect("run");
    let want: Vec<String> = ids(case, "ids").iter().map(u32::to_string).collect();
    assert_eq!(plain, format!("{}\n({} tokens)\n", want.join(" "), want.len()));
}

#[test]
fn bad_messages_files_are_errors_naming_the_file() {
    let model = tokenizer_only_dir(FAMILIES[0]);
    let model = model.path().to_str().expect("utf8");
    let dir = tempfile::tempdir().expect("tmp");
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "malformed.json",
            "[{\"role\": \"user\", \"content\": \"hi\"",
            &["malformed JSON"],
        ),
        (
            "object.json",
            "{\"role\": \"user\", \"content\": \"hi\"}",
            &["expected a JSON list", "found an object"],
        ),
        ("empty.json", "[]", &["empty"]),
        (
            "no_content.json",
            "[{\"role\": \"user\"}]",
            &["message 1 (index 0) has no \"content\""],
        ),
        (
            "number_content.json",
            "[{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": 3}]",
            &["message 2 (index 1): \"content\" is a number, expected a string"],
        ),
        ("not_object.json", "[\"hi\"]", &["message 1 (index 0) is a string"]),
    ];
    for (name, body, needles) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, body).expect("write");
        let e = tokenize(&["--model", model, "--messages", file.to_str().expect("utf8"), "--json"]).expect_err(name);
        let msg = format!("{e:#}");
        assert!(msg.contains(name), "{name}: the error does not name the file: {msg}");
        for n in needles {
            assert!(msg.contains(n), "{name}: the error lacks {n:?}: {msg}");
        }
    }
    let missing = dir.path().join("missing.json");
    let msg = format!(
        "{:#}",
        tokenize(&["--model", model, "--messages", missing.to_str().expect("utf8")]).expect_err("missing")
    );
    assert!(msg.contains("missing.json"), "{msg}");
    let msg = format!(
        "{:#}",
        tokenize(&["--model", model, "--text", "hi", "--no-generation-prompt"]).expect_err("text")
    );
    assert!(msg.contains("--no-generation-prompt"), "{msg}");
}

/// A reader that goes away (`sealong tokenize ... | head -c 1`) ends the command quietly.
#[test]
fn a_closed_pipe_is_not_an_error() {
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }
    let model = tokenizer_only_dir(FAMILIES[1]);
    let model = model.path().to_str().expect("utf8");
    tokenize_to(&["--model", model, "--text", "hello", "--json"], &mut ClosedPipe).expect("no error on a closed pipe");
}
