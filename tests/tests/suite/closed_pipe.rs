//! Issue 17: a reader that goes away (`sealong models inspect M | head -1`) made `println!`
//! panic and the process exit 101. Each command here runs in a child process whose stdout pipe
//! the test closes before the command prints a byte; the child must finish with its own result
//! (exit 0 here) and no panic.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sealong_tests::tiny::{self, TinySpec};
use serde_json::json;

use crate::family_tokenizers::{FAMILIES, tokenizer_only_dir};

/// The command line the child runs, as a JSON list.
const CHILD_ENV: &str = "SEALONG_CLOSED_PIPE_ARGS";
/// What the child prints once it is ready; the parent closes the pipe after reading it.
const READY: &str = "closed-pipe child ready";

#[test]
#[ignore = "the child process of commands_end_quietly_when_stdout_is_closed"]
fn closed_pipe_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else { return };
    let args: Vec<String> = serde_json::from_str(&args).expect("args");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!("{READY}");
    // Wait until the parent has closed our stdout's read end.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    let code = match sealong_tests::sealong(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    // Exit here: the test harness's own report would meet the closed pipe.
    std::process::exit(code);
}

/// Runs `args` in a child whose stdout is closed before the command starts; returns its exit
/// code and stderr. A child that hangs is killed and fails the test.
fn run_with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = sealong_tests::child_test(module_path!(), "closed_pipe_child")
        .env(CHILD_ENV, json!(args).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                // libtest prints "test NAME ... " on the same line first.
                Ok(n) if n > 0 && line.trim_end().ends_with(READY) => break,
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
        // Hand the pipe back so that closing it is the parent's next step.
        let _ = ready_tx.send(stdout);
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        let _ = err_tx.send(text);
    });
    let limit = Duration::from_secs(120);
    let Ok(stdout) = ready_rx.recv_timeout(limit) else {
        let _ = child.kill();
        panic!("{args:?}: the child never said it was ready");
    };
    drop(stdout);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("start the child");
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{args:?}: the child hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), err_rx.recv_timeout(limit).unwrap_or_default())
}

#[test]
fn commands_end_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().expect("tmp");
    // A tiny random Qwen2 beside Qwen2.5's tokenizer files: a model `models inspect` reads.
    let model_dir = tokenizer_only_dir(FAMILIES[1]);
    let spec = TinySpec::qwen2();
    tiny::write_hf_dir(model_dir.path(), &spec, &tiny::random_weights(&spec, 1));
    let model = model_dir.path().display().to_string();
    // A stage that prints a summary after its work: ROUGE-L scoring needs no model.
    let samples = dir.path().join("samples.jsonl");
    let mut text = String::new();
    for id in ["a", "b"] {
        let rec = json!({"id": id, "prompt": "p", "answers": ["x"],
            "samples": [{"text": "x y"}, {"text": "x z"}, {"text": "w"}]});
        text.push_str(&format!("{rec}\n"));
    }
    std::fs::write(&samples, text).expect("samples");
    let scored = dir.path().join("scored.jsonl");
    let samples_arg = samples.display().to_string();
    let scored_arg = scored.display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["models", "inspect", &model],
        vec!["models", "inspect", &model, "--json"],
        vec!["models", "list"],
        vec!["tokenize", "--model", &model, "--text", "hello", "--json"],
        vec!["subem", "--input", &scored_arg, "--pred-field", "samples", "--out", "-"],
        vec![
            "score",
            "--method",
            "rouge-l",
            "--input",
            &samples_arg,
            "--out",
            &scored_arg,
        ],
    ];
    // `subem` reads what `score` writes: score first.
    let order = [5, 0, 1, 2, 3, 4];
    for &k in &order {
        let args = &cases[k];
        let (code, stderr) = run_with_closed_stdout(args);
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        assert_eq!(code, Some(0), "{args:?} exit code; stderr:\n{stderr}");
    }
    // The stage did its work even though nobody read its summary.
    let n = std::fs::read_to_string(&scored).expect("scored").lines().count();
    assert_eq!(n, 2, "both questions scored");
}
