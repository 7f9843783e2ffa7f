//! `sample` and `eval` with `--backend openai` against a real OpenAI-compatible server:
//! llama-cpp-python's server on the default SmolLM2 GGUF, started by the test on 127.0.0.1
//! (scripts/test.sh installs it: `bash bench/peers/_venv.sh llamacpp-server`).
//! - the records have the local backend's shape, in input order, N samples each (this server
//!   ignores `n`, so the client's top-up requests are exercised), and `score` and `eval` read them;
//! - the server SIGKILLed mid-run and restarted on the same port: the run finishes with every
//!   question exactly once;
//! - the client SIGKILLed mid-run and rerun: it resumes, with every question exactly once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealong_tests::{sealong, smollm_path};
use serde_json::{Value, json};

const CHILD_ENV: &str = "SEALONG_OPENAI_CHILD_ARGS";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A llama-cpp-python server process, killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(port: u16, log: &Path) -> Server {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log");
        let child = Command::new(sealong_tests::llama_cpp_python())
            .args([
                "-m",
                "llama_cpp.server",
                "--host",
                "127.0.0.1",
                "--n_ctx",
                "4096",
                "--n_threads",
                "2",
            ])
            .args(["--port", &port.to_string(), "--model"])
            .arg(smollm_path())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start llama_cpp.server");
        let mut s = Server {
            child,
            log: log.to_path_buf(),
        };
        s.wait_ready(port);
        s
    }

    fn wait_ready(&mut self, port: u16) {
        let start = Instant::now();
        loop {
            if let Some(died) = self.died() {
                panic!("{died} while starting");
            }
            if models_answer(port) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "the server did not answer /v1/models within 180 s:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// When the server process has ended: how (exit code or signal, by name) and the last lines
    /// of its log, which lives in the test's temp dir and is gone once the test ends. A server
    /// that dies mid-run shows to the client only as refused connections, so every failure of a
    /// client run checks this first (e.g. llama.cpp built with AMX on a VM that does not grant
    /// the tile state died with SIGILL on its first completion).
    fn died(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().ok()??;
        let how = match status.signal() {
            Some(sig) => format!("was killed by signal {sig} ({})", signal_name(sig)),
            None => format!("exited with {status}"),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        Some(format!(
            "the llama-cpp-python test server {how}; the last lines of its log ({}):\n{tail}",
            self.log.display()
        ))
    }

    /// Runs `sealong ARGS` against this server; a failure says first whether the server died.
    fn run(&mut self, args: &[String]) {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = sealong(&argv) {
            match self.died() {
                Some(died) => panic!("sealong {}: {e:#}\n{died}", args.join(" ")),
                None => panic!("sealong {}: {e:#} (the server is still running)", args.join(" ")),
            }
        }
    }

    /// Panics with the server's death when it has died.
    fn assert_alive(&mut self) {
        if let Some(died) = self.died() {
            panic!("{died}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL: an instruction this CPU or VM does not allow",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "see `kill -l`",
    }
}

/// Whether GET /v1/models answers 200.
fn models_answer(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// `n` short LongBench-style questions (short contexts keep the server's prefill cheap).
fn questions(dir: &Path, n: usize) -> PathBuf {
    let cities = [
        ("France", "Paris"),
        ("Italy", "Rome"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Egypt", "Cairo"),
        ("Peru", "Lima"),
        ("Kenya", "Nairobi"),
        ("Chile", "Santiago"),
    ];
    let path = dir.join("questions.jsonl");
    let mut text = String::new();
    for i in 0..n {
        let (country, city) = cities[i % cities.len()];
        let context = format!(
            "Passage 1:\n{city}\n{city} is the capital and largest city of {country}. \
             It has been the seat of government for centuries.\n\nPassage 2:\nRivers\nMany rivers cross {country}."
        );
        let rec = json!({"_id": format!("q{i:02}"), "input": format!("What is the capital of {country}?"),
                         "context": context, "answers": [city], "length": context.split_whitespace().count(),
                         "dataset": "capitals"});
        text.push_str(&rec.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).expect("questions");
    path
}

fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
        .collect()
}

fn line_count(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

fn sample_args(port: u16, input: &Path, out: &Path, n: usize, max_new: usize) -> Vec<String> {
    [
        "sample",
        "--backend",
        "openai",
        "--base-url",
        &format!("http://127.0.0.1:{port}/v1"),
        "--api-model",
        "smollm2",
        "-n",
        &n.to_string(),
        "--max-new-tokens",
        &max_new.to_string(),
        "--concurrency",
        "2",
        "--max-retries",
        "30",
        "--request-timeout",
        "120",
        "--seed",
        "3",
        "--input",
        &input.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    sealong(&argv).unwrap_or_else(|e| panic!("sealong {}: {e:#}", args.join(" ")));
}

/// Every question exactly once, in input order, each with `n` samples of the local shape.
fn check_samples(path: &Path, questions: usize, n: usize) -> Vec<Value> {
    let recs = read_lines(path);
    let ids: Vec<&str> = recs.iter().map(|r| r["id"].as_str().expect("id")).collect();
    let want: Vec<String> = (0..questions).map(|i| format!("q{i:02}")).collect();
    assert_eq!(ids, want, "{}: each question once, in input order", path.display());
    for r in &recs {
        let samples = r["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), n, "{}: {}", path.display(), r["id"]);
        for s in samples {
            assert!(s["text"].is_string(), "{s}");
            let fr = s["finish_reason"].as_str().expect("finish_reason");
            assert!(fr == "stop" || fr == "length", "{fr}");
        }
        assert_eq!(r["sampling"]["n"], n);
        assert_eq!(r["model"], "smollm2");
        assert!(r["prompt"].as_str().expect("prompt").contains("What is the capital of"));
        assert!(r["prompt_tokens"].as_u64().expect("the server reports prompt tokens") > 20);
    }
    recs
}

#[test]
fn sample_score_and_eval_through_a_llama_cpp_server() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut server = Server::start(port, &tmp.path().join("server.log"));
    let input = questions(tmp.path(), 4);

    let samples = tmp.path().join("samples.jsonl");
    server.run(&sample_args(port, &input, &samples, 3, 24));
    let recs = check_samples(&samples, 4, 3);
    let answered = recs
        .iter()
        .flat_map(|r| r["samples"].as_array().expect("samples"))
        .filter(|s| !s["text"].as_str().unwrap_or_default().trim().is_empty())
        .count();
    assert!(answered >= 10, "the server's answers are mostly empty: {recs:?}");
    // A rerun has nothing left to do and changes nothing.
    let before = std::fs::read(&samples).expect("samples");
    server.run(&sample_args(port, &input, &samples, 3, 24));
    assert_eq!(std::fs::read(&samples).expect("samples"), before);

    // The next stage reads remote records as it reads local ones.
    let scored = tmp.path().join("scored.jsonl");
    server.run(&[
        "score".into(),
        "--input".into(),
        samples.display().to_string(),
        "--out".into(),
        scored.display().to_string(),
    ]);
    for r in read_lines(&scored) {
        assert_eq!(r["scores"].as_array().expect("scores").len(), 3);
    }

    // eval: a greedy answer and two samples per question, the table written.
    let eval_dir = tmp.path().join("eval");
    server.run(&[
        "eval".into(),
        "--backend".into(),
        "openai".into(),
        "--base-url".into(),
        format!("http://127.0.0.1:{port}/v1"),
        "--api-model".into(),
        "smollm2".into(),
        "-n".into(),
        "2".into(),
        "--max-new-tokens".into(),
        "24".into(),
        "--input".into(),
        input.display().to_string(),
        "--out".into(),
        eval_dir.display().to_string(),
    ]);
    let preds = read_lines(&eval_dir.join("predictions.jsonl"));
    assert_eq!(preds.len(), 4);
    for p in &preds {
        assert!(p["prediction"].is_string());
        assert_eq!(p["samples"].as_array().expect("samples").len(), 2);
        assert!(p["mbr_choice"].as_u64().expect("choice") < 2);
    }
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(eval_dir.join("metrics.json")).expect("metrics")).expect("json");
    assert_eq!(metrics["tasks"][0]["task"], "capitals", "{metrics}");
    assert_eq!(metrics["model"]["api_model"], "smollm2");

    // A wrong flag combination is refused before any request.
    let e = sealong(&[
        "sample",
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--api-model",
        "x",
        "--top-k",
        "5",
        "--input",
        &input.display().to_string(),
        "--out",
        &tmp.path().join("x.jsonl").display().to_string(),
    ])
    .expect_err("top-k refused");
    assert!(format!("{e:#}").contains("--top-k"), "{e:#}");
}

#[test]
fn a_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let log = tmp.path().join("server.log");
    let mut server = Server::start(port, &log);
    let input = questions(tmp.path(), 10);
    let out = tmp.path().join("samples.jsonl");
    let args = sample_args(port, &input, &out, 3, 48);
    let client = std::thread::spawn(move || run(&args));

    let start = Instant::now();
    while line_count(&out) < 2 {
        server.assert_alive();
        assert!(!client.is_finished(), "the run ended before the server was killed");
        assert!(start.elapsed() < Duration::from_secs(300), "no record within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL, then what a dead server's report says (what a failing client run would print).
    let _ = server.child.kill();
    let _ = server.child.wait();
    let died = server.died().expect("the killed server is reported as dead");
    assert!(
        died.contains("signal 9 (SIGKILL)") && died.contains("server.log"),
        "{died}"
    );
    drop(server);
    let at_kill = line_count(&out);
    assert!(at_kill < 10, "killed too late: {at_kill} of 10 records were written");
    // Down long enough for the client to see refused connections and back off.
    std::thread::sleep(Duration::from_secs(3));
    let mut server = Server::start(port, &log);
    if client.join().is_err() {
        server.assert_alive();
        panic!("the run did not complete after the restart (its error is above; the server is still running)");
    }
    check_samples(&out, 10, 3);
}

#[test]
#[ignore = "the child process of a_client_killed_mid_run_resumes_without_duplicates"]
fn openai_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else { return };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args");
    run(&args);
}

#[test]
fn a_client_killed_mid_run_resumes_without_duplicates() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut server = Server::start(port, &tmp.path().join("server.log"));
    let input = questions(tmp.path(), 8);
    let out = tmp.path().join("samples.jsonl");
    let args = sample_args(port, &input, &out, 3, 48);
    let mut child = sealong_tests::child_test(module_path!(), "openai_child")
        .env(CHILD_ENV, serde_json::to_string(&args).expect("json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child run");
    let start = Instant::now();
    while line_count(&out) < 2 {
        server.assert_alive();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child ended ({status}) before it was killed");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no record within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let at_kill = line_count(&out);
    assert!(at_kill < 8, "killed too late: {at_kill} of 8 records were written");
    server.run(&args);
    check_samples(&out, 8, 3);
}

/// `sealong run` with `[sample.remote]`: the round's sampling goes to the server, the rest runs
/// locally, and the round completes with the server's answers in samples.jsonl.
#[test]
fn a_round_samples_from_the_server_with_sample_remote() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut server = Server::start(port, &tmp.path().join("server.log"));
    let out = tmp.path().join("round");
    let cfg = tmp.path().join("round.toml");
    let config = format!(
        "{}\n[sample.remote]\nbase_url = \"http://127.0.0.1:{port}/v1\"\napi_model = \"smollm2\"\n\
         concurrency = 2\nmax_retries = 30\nrequest_timeout = 120\n",
        crate::run_cli::tiny_config(&out)
    );
    std::fs::write(&cfg, config).expect("config");
    let cfg = cfg.display().to_string();
    server.run(&["run".into(), "--config".into(), cfg.clone()]);

    let recs = read_lines(&out.join("samples.jsonl"));
    assert_eq!(
        recs.len(),
        line_count(&out.join("questions.jsonl")),
        "one record per question"
    );
    for r in &recs {
        assert_eq!(
            r["model"], "smollm2",
            "sampled by the server, not the local engine: {r}"
        );
        assert_eq!(r["samples"].as_array().expect("samples").len(), 2);
        assert!(r["prompt_tokens"].as_u64().expect("the server reports prompt tokens") > 20);
    }
    for f in ["scored.jsonl", "pairs.jsonl", "eval/after/metrics.json", "report.html"] {
        assert!(out.join(f).is_file(), "the round left {f}");
    }
    // A rerun finds every stage done and changes nothing.
    let before = std::fs::read(out.join("samples.jsonl")).expect("samples");
    server.run(&["run".into(), "--config".into(), cfg]);
    assert_eq!(std::fs::read(out.join("samples.jsonl")).expect("samples"), before);
}

/// Issue 17: a prompt over the server's context (HTTP 400) failed the whole stage with nothing
/// recorded. Now the question goes to the failures file with the server's message; the default
/// still stops (saying how to skip), `--on-error skip` goes on, a rerun retries the question,
/// and `eval`'s metrics count it.
#[test]
fn a_prompt_over_the_servers_context_is_recorded_and_skipped_on_request() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut server = Server::start(port, &tmp.path().join("server.log"));
    let input = questions(tmp.path(), 3);
    // q01's context: far over the server's 4096 tokens.
    let text = std::fs::read_to_string(&input).expect("questions");
    let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    lines[1]["context"] =
        json!("Passage 1:\nRivers\n".to_string() + &"Many rivers cross the wide green land. ".repeat(900));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).expect("questions");

    let samples = tmp.path().join("samples.jsonl");
    let failures = tmp.path().join("samples.failures.jsonl");
    let args = sample_args(port, &input, &samples, 2, 8);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = format!("{:#}", sealong(&argv).expect_err("the default fails loudly"));
    server.assert_alive();
    assert!(
        e.contains("q01") && e.contains("HTTP 400") && e.contains("--on-error skip"),
        "{e}"
    );
    let ids: Vec<String> = read_lines(&samples)
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, ["q00"], "the question before the failure is kept");
    let failed = read_lines(&failures);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["id"], "q01");
    assert_eq!(failed[0]["step"], "sample");
    assert_eq!(failed[0]["status"], 400);
    assert!(
        failed[0]["error"]
            .as_str()
            .expect("message")
            .to_lowercase()
            .contains("context"),
        "the server's message: {failed:?}"
    );

    // --on-error skip: the rerun resumes after q00, retries q01 (it is not in the output),
    // records it again and goes on to q02.
    let mut skip = args.clone();
    skip.extend(["--on-error".to_string(), "skip".to_string()]);
    server.run(&skip);
    let ids: Vec<String> = read_lines(&samples)
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, ["q00", "q02"]);
    let failed = read_lines(&failures);
    assert_eq!(
        failed.len(),
        1,
        "the failures file lists the latest run's failures: {failed:?}"
    );
    assert_eq!(failed[0]["id"], "q01");
    // Finishing the file with the local engine would mix two models' records: refused.
    let e = sealong(&[
        "sample",
        "--device",
        "cpu",
        "-n",
        "2",
        "--max-new-tokens",
        "8",
        "--seed",
        "3",
        "--input",
        &input.display().to_string(),
        "--out",
        &samples.display().to_string(),
    ])
    .expect_err("another backend is refused");
    let e = format!("{e:#}");
    assert!(e.contains("backend = \"openai\" (this run: \"local\")"), "{e}");

    // eval: the greedy request is rejected; the table has the other two and counts the failure.
    let eval_dir = tmp.path().join("eval");
    server.run(&[
        "eval".into(),
        "--backend".into(),
        "openai".into(),
        "--base-url".into(),
        format!("http://127.0.0.1:{port}/v1"),
        "--api-model".into(),
        "smollm2".into(),
        "--max-new-tokens".into(),
        "8".into(),
        "--on-error".into(),
        "skip".into(),
        "--input".into(),
        input.display().to_string(),
        "--out".into(),
        eval_dir.display().to_string(),
    ]);
    assert_eq!(read_lines(&eval_dir.join("predictions.jsonl")).len(), 2);
    let failed = read_lines(&eval_dir.join("failures.jsonl"));
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], "capitals/q01");
    assert_eq!(failed[0]["step"], "eval greedy");
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(eval_dir.join("metrics.json")).expect("metrics")).expect("json");
    assert_eq!(metrics["failed"], 1, "{metrics}");
    assert_eq!(metrics["tasks"][0]["questions"], 2, "{metrics}");
}
