//! A client for OpenAI-compatible chat-completions servers (vLLM, llama.cpp's server,
//! llama-cpp-python, hosted APIs): the remote backend of `sample` and `eval`.
//!
//! What a sampling run needs from it, and why:
//! - **N completions per question**, asked with `n` in one request; servers that ignore `n`
//!   (llama.cpp's and llama-cpp-python's return one choice) are topped up with further requests,
//!   each with its own seed, until N texts are in hand.
//! - **Retries with backoff** on what a busy or restarting server answers: connection refused or
//!   reset, timeouts, 408, 409, 429 and 5xx. `Retry-After` (seconds) is honoured; otherwise the
//!   wait doubles from 0.5 s up to 30 s, with a deterministic jitter so that parallel workers
//!   spread out. Other 4xx answers (a bad request, a prompt over the server's context, a wrong
//!   model name) are not retried: they name the question and quote the server.
//! - **A timeout per request**, and a cancel flag so that the other workers stop early when one
//!   has failed for good.
//! - **The API key from an environment variable** (never a flag: flags end up in shell history
//!   and in `run`'s copied config).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::decode::SampleText;
use sealong::generate::FinishReason;

/// Where `sample` and `eval` get their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The model of --model, run here on --device.
    Local,
    /// An OpenAI-compatible chat-completions server (vLLM, llama.cpp's server, hosted APIs).
    Openai,
}

/// What `sample` and `eval` do when the server rejects one question (`--on-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// Record the question in the failures file and stop the stage (the default: nothing is
    /// silently missing from an output).
    Fail,
    /// Record the question in the failures file and go on with the others.
    Skip,
}

/// A backend's name as written in settings records.
pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Local => "local",
        Backend::Openai => "openai",
    }
}

#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// Where answers come from: `local` (--model on --device) or `openai` (a chat-completions
    /// server at --base-url; the server applies its own chat template and context limit).
    #[arg(long, value_enum, default_value = "local")]
    pub backend: Backend,
    /// The server's base URL including the API version, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, required_if_eq("backend", "openai"))]
    pub base_url: Option<String>,
    /// The model name to send in each request (as the server lists it under /v1/models).
    #[arg(long, required_if_eq("backend", "openai"))]
    pub api_model: Option<String>,
    /// Environment variable that holds the API key (sent as a Bearer token when it is set).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Questions in flight at once (openai backend); records are still written in input order.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds allowed for one request, connection to last byte (openai backend).
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Further tries of a request after a retryable failure: connection refused or reset,
    /// timeout, 408, 409, 429, 5xx (openai backend; waits 0.5 s doubling to 30 s, or Retry-After).
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,
    /// Most completions asked for in one request (`n`); servers that return fewer are topped up
    /// with further requests (openai backend).
    #[arg(long, default_value_t = 64)]
    pub max_n_per_request: usize,
    /// When the server rejects a question's request (HTTP 400/413/422, e.g. a prompt over its
    /// context): `fail` stops the stage, `skip` goes on; either way the question is written to
    /// the failures file with the server's message (openai backend). A rerun retries it.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnError,
}

impl BackendArgs {
    /// The client of `--backend openai`, or None for the local engine. Flags that only mean
    /// something to one backend are refused for the other rather than ignored.
    pub fn client(&self, top_k: usize, truncate_middle: bool) -> anyhow::Result<Option<crate::openai::Client>> {
        if self.backend == Backend::Local {
            return Ok(None);
        }
        if top_k != 0 {
            anyhow::bail!("--top-k is not a chat-completions parameter; leave it at 0 with --backend openai");
        }
        if truncate_middle {
            anyhow::bail!(
                "--truncate-middle needs the model's tokenizer, which --backend openai does not have; \
                 the server reports a prompt over its context as an error"
            );
        }
        if self.concurrency == 0 {
            anyhow::bail!("--concurrency must be at least 1");
        }
        let (Some(base_url), Some(model)) = (&self.base_url, &self.api_model) else {
            anyhow::bail!("--backend openai needs --base-url and --api-model");
        };
        let api_key = std::env::var(&self.api_key_env).ok().filter(|k| !k.is_empty());
        Ok(Some(crate::openai::Client::new(crate::openai::ClientConfig {
            base_url: base_url.clone(),
            model: model.clone(),
            api_key,
            timeout: std::time::Duration::from_secs(self.request_timeout.max(1)),
            max_retries: self.max_retries,
            max_n_per_request: self.max_n_per_request.max(1),
        })?))
    }
}

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL up to and including the API version, e.g. `http://127.0.0.1:8000/v1`;
    /// `/chat/completions` is appended.
    pub base_url: String,
    /// The `model` field of each request.
    pub model: String,
    /// Bearer token (`Authorization` header), when the server wants one.
    pub api_key: Option<String>,
    /// Limit on one request, connection to last byte.
    pub timeout: Duration,
    /// Further tries after the first failed one (retryable failures only).
    pub max_retries: u32,
    /// Completions asked for in one request (`n`); 1 for servers that reject `n`.
    pub max_n_per_request: usize,
}

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: usize,
}

/// The server's answer to one question: the N texts and the prompt's token count as the server
/// counted it (`usage.prompt_tokens`, when reported).
#[derive(Debug, Clone)]
pub struct Completions {
    pub samples: Vec<SampleText>,
    pub prompt_tokens: Option<usize>,
}

/// The server refused one question's request as invalid: HTTP 400, 413 or 422, which is how
/// servers answer a prompt over their context (OpenAI's `context_length_exceeded`, vLLM,
/// llama.cpp's and llama-cpp-python's servers). It concerns that question only, so `sample` and
/// `eval` can record it and go on (`--on-error skip`). Answers that mean the setup is wrong for
/// every question (401, 403, 404: key, permissions, model name) are not this: they fail the stage.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub status: u16,
    /// The server's own message.
    pub message: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}

impl std::error::Error for Rejected {}

/// The rejection somewhere in `e`'s chain, if the error is one.
pub fn rejection(e: &anyhow::Error) -> Option<&Rejected> {
    e.chain().find_map(|c| c.downcast_ref::<Rejected>())
}

/// A question the server rejected, as the stage hands it to [`Failures::record`].
pub struct Failed {
    /// Which request of the question: `sample`, `eval greedy`, `eval samples`.
    pub step: &'static str,
    pub rejected: Rejected,
}

/// Runs `request` for `step`; a [`Rejected`] answer becomes `Ok(Err(Failed))`, so that the
/// writing thread records it in input order, any other error stays an error.
pub fn or_failed<T>(step: &'static str, request: impl FnOnce() -> Result<T>) -> Result<std::result::Result<T, Failed>> {
    match request() {
        Ok(v) => Ok(Ok(v)),
        Err(e) => match rejection(&e) {
            Some(r) => Ok(Err(Failed {
                step,
                rejected: r.clone(),
            })),
            None => Err(e),
        },
    }
}

/// The failures file of a remote stage (`OUT.failures.jsonl`, `DIR/failures.jsonl`): one line
/// per question the server rejected, `{"id", "step", "source", "status", "error"}` with the
/// server's message. It lists the latest run's failures: a rerun retries every question not in
/// the output (a rejected one never is), so the file is started afresh with each run.
pub struct Failures {
    path: std::path::PathBuf,
    file: Option<sealong::data::jsonl::Appender>,
    on_error: OnError,
    pub count: usize,
}

impl Failures {
    /// Removes the previous run's file; the new one is created at the first failure.
    pub fn start(path: std::path::PathBuf, on_error: OnError) -> Result<Self> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        Ok(Failures {
            path,
            file: None,
            on_error,
            count: 0,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes the failure; with `--on-error fail` (the default) it is then the stage's error.
    pub fn record(&mut self, id: &str, source: &str, f: &Failed) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(sealong::data::jsonl::Appender::open(&self.path)?);
        }
        if let Some(file) = &mut self.file {
            file.append(&json!({
                "id": id, "step": f.step, "source": source,
                "status": f.rejected.status, "error": f.rejected.message,
            }))?;
        }
        self.count += 1;
        if self.on_error == OnError::Fail {
            self.finish()?;
            bail!(
                "{source} (question {id}): the server rejected the {} request: {}. Recorded in {}; pass                  --on-error skip to record such questions and go on with the others (a rerun retries them)",
                f.step,
                f.rejected,
                self.path.display()
            );
        }
        Ok(())
    }

    /// Flushes the file to disk at the end of the stage.
    pub fn finish(&self) -> Result<()> {
        if let Some(f) = &self.file {
            f.sync()?;
        }
        Ok(())
    }
}

/// One failed try: retryable or not, with the wait the server asked for.
struct Failure {
    /// The HTTP status, when the server answered.
    status: Option<u16>,
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
    /// The server's message alone (the body's error message), for [`Rejected`].
    server_message: String,
}

pub struct Client {
    config: ClientConfig,
    agent: ureq::Agent,
    url: String,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--base-url {:?}: expected an http:// or https:// URL", config.base_url);
        }
        let url = format!("{base}/chat/completions");
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Status codes are judged here (retry or not), with the server's message kept.
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client { config, agent, url })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `n` completions of one user message. `seed` makes the request reproducible on servers
    /// that honour it; top-up requests use `seed + k`. `what` names the question in errors.
    pub fn complete(
        &self,
        user_message: &str,
        n: usize,
        sampling: Sampling,
        seed: u32,
        what: &str,
        cancel: &AtomicBool,
    ) -> Result<Completions> {
        let mut samples = Vec::with_capacity(n);
        let mut prompt_tokens = None;
        let mut request = 0u32;
        while samples.len() < n {
            let ask = (n - samples.len()).min(self.config.max_n_per_request.max(1));
            let body = json!({
                "model": self.config.model,
                "messages": [{"role": "user", "content": user_message}],
                "n": ask,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens,
                "seed": seed.wrapping_add(request),
                "stream": false,
            });
            let v = self
                .post_with_retries(&body, what, cancel)
                .with_context(|| format!("{what}: request to {}", self.url))?;
            let (mut got, usage) = parse_response(&v).with_context(|| format!("{what}: response of {}", self.url))?;
            if got.is_empty() {
                bail!("{what}: {} answered with no choices", self.url);
            }
            // A one-choice answer's completion_tokens is that choice's length.
            if got.len() == 1 {
                got[0].num_tokens = usage.completion_tokens;
            }
            prompt_tokens = prompt_tokens.or(usage.prompt_tokens);
            got.truncate(n - samples.len());
            samples.extend(got);
            request += 1;
        }
        Ok(Completions { samples, prompt_tokens })
    }

    fn post_with_retries(&self, body: &Value, what: &str, cancel: &AtomicBool) -> Result<Value> {
        let text = serde_json::to_string(body)?;
        let mut attempt = 0u32;
        loop {
            if cancel.load(Ordering::Relaxed) {
                bail!("cancelled (another question failed)");
            }
            let failure = match self.post_once(&text) {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if !failure.retryable {
                if let Some(status @ (400 | 413 | 422)) = failure.status {
                    return Err(Rejected {
                        status,
                        message: failure.server_message,
                    }
                    .into());
                }
                bail!("{}", failure.message);
            }
            if attempt >= self.config.max_retries {
                bail!("{} (gave up after {} tries)", failure.message, attempt + 1);
            }
            let wait = failure.retry_after.unwrap_or_else(|| backoff(attempt, what));
            tracing::warn!(
                "{what}: {}; retry {} in {:.1} s",
                failure.message,
                attempt + 1,
                wait.as_secs_f64()
            );
            sleep_unless_cancelled(wait, cancel);
            attempt += 1;
        }
    }

    fn post_once(&self, body: &str) -> std::result::Result<Value, Failure> {
        let mut req = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            // Refused, reset, timed out, DNS: all worth another try (a server restarting looks
            // like this); the last message is reported if the tries run out.
            Err(e) => {
                let message = format!("no answer: {e}");
                return Err(Failure {
                    status: None,
                    retryable: true,
                    retry_after: None,
                    server_message: message.clone(),
                    message,
                });
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|h| h.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(300.0)));
        let text = match resp.body_mut().with_config().limit(256 << 20).read_to_string() {
            Ok(t) => t,
            Err(e) => {
                let message = format!("HTTP {status}, body unreadable: {e}");
                return Err(Failure {
                    status: Some(status),
                    retryable: true,
                    retry_after,
                    server_message: message.clone(),
                    message,
                });
            }
        };
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| {
                let message = format!("HTTP {status} with a body that is not JSON ({e}): {}", clip(&text));
                Failure {
                    status: Some(status),
                    // A half-written body from a dying server is worth another try.
                    retryable: true,
                    retry_after: None,
                    server_message: message.clone(),
                    message,
                }
            });
        }
        let said = server_message(&text);
        Err(Failure {
            status: Some(status),
            retryable: matches!(status, 408 | 409 | 429) || status >= 500,
            retry_after,
            message: format!("HTTP {status}: {said}"),
            server_message: said,
        })
    }
}

/// The token counts a response reports (`usage`), when it does.
#[derive(Debug, Default)]
pub struct Usage {
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
}

/// The choices of a chat-completions response, in `index` order. Public for the fuzz test
/// (tests/tests/fuzz): a server's body is outside input.
pub fn parse_response(v: &Value) -> Result<(Vec<SampleText>, Usage)> {
    let choices = v["choices"]
        .as_array()
        .ok_or_else(|| anyhow!("no \"choices\" list in {}", clip(&v.to_string())))?;
    let mut indexed = Vec::with_capacity(choices.len());
    for (i, c) in choices.iter().enumerate() {
        let text = match &c["message"]["content"] {
            Value::String(s) => s.clone(),
            // Some servers send null content for an empty answer.
            Value::Null => String::new(),
            other => bail!("choice {i}: \"message.content\" is {other}, not a string"),
        };
        let finish_reason = match c["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            // "stop", "eos", tool or content-filter ends: the answer ended by itself.
            _ => FinishReason::Stop,
        };
        let index = c["index"].as_u64().unwrap_or(i as u64);
        indexed.push((
            index,
            SampleText {
                text,
                num_tokens: None,
                finish_reason,
            },
        ));
    }
    indexed.sort_by_key(|(i, _)| *i);
    let usage = Usage {
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().map(|x| x as usize),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().map(|x| x as usize),
    };
    Ok((indexed.into_iter().map(|(_, s)| s).collect(), usage))
}

/// `{"error": {"message": ..}}` (OpenAI, vLLM), `{"detail": ..}` (FastAPI) or the raw body.
pub fn server_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let m = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .or_else(|| v["detail"].as_str())
        .or_else(|| v["message"].as_str())
        .map(str::to_string)
        .or_else(|| (!v["detail"].is_null()).then(|| v["detail"].to_string()));
    clip(&m.unwrap_or_else(|| body.to_string()))
}

fn clip(s: &str) -> String {
    const MAX: usize = 500;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// 0.5 s doubling to 30 s, times a jitter in [0.75, 1.25) that depends on the question, so
/// that workers retrying together do not hit a recovering server in lockstep.
fn backoff(attempt: u32, what: &str) -> Duration {
    let base = (0.5 * 2f64.powi(attempt.min(16) as i32)).min(30.0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let jitter = 0.75 + 0.5 * ((h >> 11) as f64 / (1u64 << 53) as f64);
    Duration::from_secs_f64(base * jitter)
}

fn sleep_unless_cancelled(d: Duration, cancel: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while !cancel.load(Ordering::Relaxed) {
        let now = std::time::Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// A request seed for one question: a pure function of the run's seed and the question's key,
/// kept below 2^31 because servers differ in how wide a seed they accept.
pub fn request_seed(seed: u64, key: &str) -> u32 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{seed}\u{0}{key}").as_bytes());
    u32::from_le_bytes([h[0], h[1], h[2], h[3]]) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// One scripted answer: status, extra headers, body.
    type Reply = (u16, Vec<(&'static str, String)>, String);

    /// A scripted HTTP server: answers the k-th request with the k-th reply, and records each
    /// request's JSON body.
    fn scripted(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Value>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for (status, headers, body) in replies {
                let (stream, _) = listener.accept().expect("accept");
                let mut r = BufReader::new(stream.try_clone().expect("clone"));
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).expect("header line");
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                }
                let mut buf = vec![0u8; len];
                r.read_exact(&mut buf).expect("body");
                seen2
                    .lock()
                    .expect("lock")
                    .push(serde_json::from_slice(&buf).expect("json body"));
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let mut s = stream;
                s.write_all(format!("{head}\r\n{body}").as_bytes()).expect("write");
            }
        });
        (url, seen)
    }

    fn client(url: String, max_retries: u32, max_n: usize) -> Client {
        Client::new(ClientConfig {
            base_url: url,
            model: "m".into(),
            api_key: Some("k3y".into()),
            timeout: Duration::from_secs(10),
            max_retries,
            max_n_per_request: max_n,
        })
        .expect("client")
    }

    fn ok(texts: &[&str]) -> String {
        let choices: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}))
            .collect();
        json!({"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 3}}).to_string()
    }

    const S: Sampling = Sampling {
        temperature: 0.7,
        top_p: 1.0,
        max_tokens: 8,
    };

    #[test]
    fn retries_429_and_5xx_then_tops_up_a_server_that_ignores_n() {
        let (url, seen) = scripted(vec![
            (
                429,
                vec![("Retry-After", "0".into())],
                r#"{"error":{"message":"slow down"}}"#.into(),
            ),
            (503, vec![], "busy".into()),
            (200, vec![], ok(&["a"])),
            (200, vec![], ok(&["b", "c", "d"])),
        ]);
        let c = client(url, 3, 8);
        let got = c
            .complete("hi", 3, S, 40, "q1", &AtomicBool::new(false))
            .expect("completes");
        let texts: Vec<_> = got.samples.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"], "topped up to n, the extra choice dropped");
        assert_eq!(got.prompt_tokens, Some(11));
        assert_eq!(got.samples[0].num_tokens, Some(3), "one choice: usage is its length");
        assert_eq!(got.samples[1].num_tokens, None);
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0]["n"], 3);
        assert_eq!(seen[0]["seed"], 40);
        assert_eq!(seen[2]["seed"], 40, "a retry repeats the request");
        assert_eq!(seen[3]["n"], 2, "the top-up asks for what is missing");
        assert_eq!(seen[3]["seed"], 41, "the top-up has its own seed");
        assert_eq!(seen[0]["messages"][0]["content"], "hi");
        assert_eq!(seen[0]["max_tokens"], 8);
    }

    #[test]
    fn a_bad_request_is_not_retried_and_quotes_the_server() {
        let (url, seen) = scripted(vec![(
            400,
            vec![],
            r#"{"error":{"message":"Requested tokens (9000) exceed context window of 8192"}}"#.into(),
        )]);
        let e = client(url, 5, 8)
            .complete("hi", 2, S, 1, "hotpotqa/q7", &AtomicBool::new(false))
            .expect_err("400 fails");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("hotpotqa/q7") && msg.contains("HTTP 400") && msg.contains("exceed context"),
            "{msg}"
        );
        assert_eq!(seen.lock().expect("lock").len(), 1, "no retry of a 400");
        // Issue 17: it is this question's rejection, which `--on-error skip` records and passes.
        let r = rejection(&e).expect("a 400 is a rejection of the question");
        assert_eq!(r.status, 400);
        assert_eq!(r.message, "Requested tokens (9000) exceed context window of 8192");
        // A wrong model name concerns every question: not a rejection to skip.
        let (url, _) = scripted(vec![(404, vec![], r#"{"detail":"model not found"}"#.into())]);
        let e = client(url, 5, 8)
            .complete("hi", 1, S, 1, "q", &AtomicBool::new(false))
            .expect_err("404 fails");
        assert!(rejection(&e).is_none(), "{e:#}");
    }

    #[test]
    fn retries_run_out_with_the_last_failure_named() {
        let (url, _) = scripted(vec![
            (500, vec![("Retry-After", "0".into())], r#"{"detail":"boom"}"#.into()),
            (500, vec![("Retry-After", "0".into())], r#"{"detail":"boom"}"#.into()),
        ]);
        let e = client(url, 1, 8)
            .complete("hi", 1, S, 1, "q", &AtomicBool::new(false))
            .expect_err("gives up");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("HTTP 500: boom") && msg.contains("gave up after 2 tries"),
            "{msg}"
        );
    }

    #[test]
    fn a_refused_connection_is_retried_until_the_tries_run_out() {
        // A port nothing listens on (bound, then closed).
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let e = client(format!("http://127.0.0.1:{port}/v1"), 1, 8)
            .complete("hi", 1, S, 1, "q", &AtomicBool::new(false))
            .expect_err("nothing listens");
        assert!(format!("{e:#}").contains("gave up after 2 tries"), "{e:#}");
    }

    #[test]
    fn the_api_key_goes_in_the_authorization_header() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let h = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut r = BufReader::new(stream.try_clone().expect("clone"));
            let mut auth = String::new();
            let mut path = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).expect("line");
                if path.is_empty() {
                    path = line.clone();
                }
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth = line.trim_end().to_string();
                }
                if line.trim_end().is_empty() {
                    break;
                }
            }
            let body = ok(&["x"]);
            let mut s = stream;
            s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .expect("write");
            (path, auth)
        });
        client(url, 0, 8)
            .complete("hi", 1, S, 1, "q", &AtomicBool::new(false))
            .expect("ok");
        let (path, auth) = h.join().expect("server");
        assert!(path.starts_with("POST /v1/chat/completions "), "{path}");
        assert_eq!(auth.to_ascii_lowercase(), "authorization: bearer k3y");
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        for a in 0..12 {
            let d = backoff(a, "q").as_secs_f64();
            let base = (0.5 * 2f64.powi(a as i32)).min(30.0);
            assert!(d >= 0.75 * base && d < 1.25 * base, "attempt {a}: {d}");
        }
        assert!(request_seed(1, "a") < 1 << 31);
        assert_ne!(request_seed(1, "a"), request_seed(1, "b"));
    }
}
