//! The browser page end to end in real headless Chromium (Debian's chromium + chromedriver,
//! driven over WebDriver), twice: with WebGPU (Chromium's SwiftShader adapter) and without it
//! (the page falls back to the CPU engine). Each run scores the golden MBR groups natively with
//! `sealong score`, serves the scored file with `sealong view` (plus a malformed line and a
//! record whose answers are HTML), waits for the page to compute, and checks that
//! - the page ran on the expected backend;
//! - every question's MBR scores in the page equal the native ones within 1e-4 and the chosen
//!   index is the same; the heatmap has N × N cells and hovering a cell reports its value;
//! - the ROUGE-L switch shows the core's ROUGE-L scores;
//! - the malformed line is reported, with its line number, in the visible Problems panel;
//! - the server's Content-Security-Policy blocked nothing, and the access token's cookie is
//!   HttpOnly (the page's own requests carry it);
//! - the page fetched its WebGPU module (`pkg-gpu/`) only in the WebGPU run: the CPU run's
//!   results, embedding ones included, came from the CPU module alone (the server's record);
//! - answers are shown as text (no element injected from the file);
//! - (CPU run) a file picked with the file input, or dropped on the page, replaces the data
//!   (the picked file's bad line shows too); a model whose weights are cut short is reported in
//!   the page, and ROUGE-L still works.
//!
//! Screenshots go to `target/e2e/view-{webgpu,cpu}.png`. Needs `bash web/build.sh` (the page's
//! wasm) and `apt-get install chromium chromium-driver`; `.ci/run` does both.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sealong_cli::args::SeedArgs;
use sealong_cli::commands::view::{Server, ViewArgs};
use sealong_tests::{golden_json, repo_root, sealong};
use serde_json::{Value, json};

/// One browser at a time: two Chromiums computing MiniLM on 2 cores only slow each other down.
static BROWSER: Mutex<()> = Mutex::new(());

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page may take to load the model and score everything (SwiftShader compiles
/// every WGSL kernel on the CPU the first time).
const COMPUTE_TIMEOUT: Duration = Duration::from_secs(900);

// ---------- a minimal WebDriver client (HTTP/1.1 + JSON over std) ----------

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| format!("chromedriver: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says: read the header, then
    // exactly Content-Length bytes (or chunks up to the last one).
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("reading from chromedriver: {e}"))?;
        if n == 0 {
            return Err("chromedriver closed the connection before the header end".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    let chunked = head.contains("transfer-encoding: chunked");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    loop {
        let complete = match (chunked, length) {
            (true, _) => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            (false, Some(len)) => body.len() >= len,
            (false, None) => false,
        };
        if complete {
            break;
        }
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("reading from chromedriver: {e}"))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if chunked {
        body = dechunk(&body)?;
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "chromedriver answered {method} {path} with non-JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    match v["value"].get("error") {
        Some(err) => Err(format!("{method} {path}: {err}: {}", v["value"]["message"])),
        None => Ok(v["value"].clone()),
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..end]).trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(end + 2..end + 2 + size).ok_or("short chunk")?);
        b = b.get(end + 4 + size..).ok_or("short chunk")?;
    }
}

struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    fn launch(webgpu: bool) -> Browser {
        for p in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: install Debian's `chromium chromium-driver` (apt-get install chromium chromium-driver; .ci/run does)"
            );
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        // Owned by `Browser` from here on, so a failing assertion still stops chromedriver.
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            profile: tempfile::tempdir().expect("profile dir"),
        };
        let t0 = Instant::now();
        while http(port, "GET", "/status", None).map(|v| v["ready"] == true) != Ok(true) {
            assert!(t0.elapsed() < Duration::from_secs(30), "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Headless as root in a closed network: no sandbox, no background traffic.
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        if webgpu {
            args.extend([
                "--enable-unsafe-webgpu".into(),
                "--use-webgpu-adapter=swiftshader".into(),
            ]);
        } else {
            // No GPU process: navigator.gpu exists but offers no adapter, so the page must fall
            // back to the CPU engine.
            args.push("--disable-gpu".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let s = http(port, "POST", "/session", Some(&caps)).expect("new WebDriver session");
        browser.session = s["sessionId"].as_str().expect("sessionId").to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let p = format!("/session/{}{path}", self.session);
        http(self.port, method, &p, body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url})));
    }

    /// Runs a script in the page (`return ...` gives the value).
    fn js(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": args})))
    }

    /// Polls until `body[data-state]` is `ready`; fails with the page's Problems panel on `error`.
    fn wait_ready(&self, what: &str) -> Duration {
        let t0 = Instant::now();
        loop {
            let state = self.js("return document.body.dataset.state", json!([]));
            if state == "ready" {
                return t0.elapsed();
            }
            if state == "error" || t0.elapsed() > COMPUTE_TIMEOUT {
                self.screenshot(&format!("failed-{what}"));
                panic!(
                    "{what}: the page is {state} after {:?}; status {:?}; problems: {}",
                    t0.elapsed(),
                    self.js("return document.getElementById('status').textContent", json!([])),
                    self.js("return document.getElementById('errors').innerText", json!([]))
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 string"));
        let dir = repo_root().join("target").join("e2e");
        std::fs::create_dir_all(&dir).expect("target/e2e");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    /// WebDriver's file upload: the path typed into an `<input type=file>`.
    fn upload(&self, css: &str, file: &Path) {
        let e = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        let id = e
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_string();
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({"text": file.display().to_string()})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * k);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

// ---------- the data ----------

const HTML_ANSWER: &str = "<img src=x onerror=\"window.__injected = 1\"> <b>not bold</b> & Ilse Marrow";

/// Stage-2 records from the golden MBR groups plus one record whose answers are HTML.
fn samples(dir: &Path) -> PathBuf {
    let g = golden_json("mbr_embedding.json");
    let mut recs: Vec<Value> = g["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .enumerate()
        .map(|(k, gr)| {
            let q = gr["question"].as_str().expect("question");
            let answers = gr["answers"].as_array().expect("answers");
            let gold = answers[0].as_str().expect("a").split_whitespace().next().unwrap_or("x");
            json!({"id": format!("g{k}"), "question": q, "answers": [gold],
                   "prompt": format!("\nPassage 1:\nSome <i>context</i>.\n\n{q}\nLet's think."),
                   "samples": answers.iter().map(|a| json!({"text": a, "num_tokens": 1, "finish_reason": "stop"})).collect::<Vec<_>>()})
        })
        .collect();
    recs.push(
        json!({"id": "html", "question": "Who designed it? <script>window.__injected = 2</script>",
        "answers": ["Ilse"], "prompt": "\nctx\n\nWho designed it? <script>window.__injected = 2</script>\nThink.",
        "samples": [HTML_ANSWER, "Ilse Marrow designed it.", "Tomas Ekvall.", "It was Ilse Marrow."]}),
    );
    // Answers longer than MiniLM's window: the page reads them in windows, as `sealong score`
    // does by default, and says so.
    recs.push(json!({"id": "long", "question": "Which city?", "answers": ["Paris"],
        "prompt": "\nctx\n\nWhich city?\nThink.",
        "samples": sealong_tests::long_answers(&["Rome", "Berlin", "Paris", "Paris"])}));
    let p = dir.join("samples.jsonl");
    let text: String = recs.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&p, text).expect("samples");
    p
}

/// Natively scored records, and the file the page gets: those plus a malformed line.
fn scored_view_file(dir: &Path) -> (Vec<Value>, PathBuf, usize) {
    let input = samples(dir);
    let out = dir.join("scored.jsonl");
    sealong(&[
        "score",
        "--device",
        "cpu",
        "--method",
        "embedding",
        "--input",
        input.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ])
    .expect("sealong score");
    let text = std::fs::read_to_string(&out).expect("scored");
    let recs: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let view = dir.join("view.jsonl");
    let bad_line = recs.len() + 1;
    std::fs::write(&view, format!("{text}{{\"id\": \"broken\", \"samples\": [\n")).expect("view file");
    (recs, view, bad_line)
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// What the page shows for the current question: rows, chosen, heatmap cells.
const READ_QUESTION: &str = r#"
const rows = [...document.querySelectorAll('#answers tbody tr')].map(tr => ({
  index: Number(tr.dataset.index),
  browser: tr.dataset.browserScore === '' ? null : Number(tr.dataset.browserScore),
  text: tr.querySelector('td.answer').textContent,
}));
const chosen = document.getElementById('browser-chosen');
return {
  id: document.getElementById('q-id').textContent,
  question: document.getElementById('q-text').textContent,
  rows,
  chosen: chosen ? Number(chosen.dataset.chosen) : null,
  cells: document.querySelectorAll('svg.heatmap rect.cell').length,
  n: Number(document.querySelector('svg.heatmap')?.dataset.n),
};"#;

fn run(webgpu: bool) {
    let _one = BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let label = if webgpu { "webgpu" } else { "cpu" };
    let dir = tempfile::tempdir().expect("tmp");
    let (native, view_file, bad_line) = scored_view_file(dir.path());
    let server = Server::start(&view_args(view_file.clone())).unwrap_or_else(|e| panic!("sealong view: {e:#}"));
    let browser = Browser::launch(webgpu);
    browser.go(&server.url());
    let took = browser.wait_ready(label);
    eprintln!("{label}: the page computed {} questions in {took:?}", native.len());

    let backend = browser.js("return document.body.dataset.backend", json!([]));
    assert_eq!(backend, label, "the page ran on {backend}, expected {label}");
    assert_gpu_module(&server, webgpu);
    let badge = browser.js("return document.getElementById('backend').title", json!([]));
    let badge = badge.as_str().expect("title");
    if webgpu {
        assert!(badge.contains("burn-wgpu on WebGPU"), "{badge}");
    } else {
        assert!(badge.contains("no WebGPU adapter; running on the CPU"), "{badge}");
    }

    // Problems panel: visible, names the malformed line.
    let problems = browser.js(
        "const e = document.getElementById('errors'); return {visible: !e.hidden && e.offsetParent !== null, text: e.innerText}",
        json!([]),
    );
    assert_eq!(problems["visible"], true, "{problems}");
    let want = format!("view.jsonl:{bad_line}: malformed JSON");
    assert!(
        problems["text"].as_str().expect("text").contains(&want),
        "problems panel lacks {want:?}: {problems}"
    );

    // The page runs under the server's Content-Security-Policy: nothing blocked (the page lists
    // violations among its problems), the legend's gradient set through the CSSOM shows, and the
    // token's cookie is out of the page's reach. The page's scripts, worker and wasm were
    // fetched without the token in their URLs: the cookie carried it.
    let csp = browser.js(
        "return {problems: document.getElementById('errors').innerText,
                 ramp: getComputedStyle(document.querySelector('#legend .ramp')).backgroundImage,
                 cookie: document.cookie}",
        json!([]),
    );
    assert!(
        !csp["problems"]
            .as_str()
            .expect("text")
            .contains("Content-Security-Policy"),
        "{csp}"
    );
    assert!(csp["ramp"].as_str().expect("ramp").contains("linear-gradient"), "{csp}");
    assert_eq!(csp["cookie"], "", "the token's cookie is HttpOnly: {csp}");

    let mut max_diff = 0.0f64;
    for (q, rec) in native.iter().enumerate() {
        browser.js("document.getElementById('question-select').value = String(arguments[0]); document.getElementById('question-select').dispatchEvent(new Event('change'));", json!([q]));
        let shown = browser.js(READ_QUESTION, json!([]));
        let id = rec["id"].as_str().expect("id");
        assert!(shown["id"].as_str().expect("id").contains(id), "question {q}: {shown}");
        let want = f64s(&rec["scores"]);
        let n = want.len();
        assert_eq!(shown["cells"], n * n, "{id}: heatmap cells");
        assert_eq!(shown["n"], n, "{id}");
        let rows = shown["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), n, "{id}: answer rows");
        for r in rows {
            let i = r["index"].as_u64().expect("index") as usize;
            let got = r["browser"]
                .as_f64()
                .unwrap_or_else(|| panic!("{id}: no browser score for answer {i}"));
            let d = (got - want[i]).abs();
            max_diff = max_diff.max(d);
            assert!(d <= 1e-4, "{id} answer {i}: page {got} vs native {}", want[i]);
        }
        assert_eq!(shown["chosen"], rec["chosen"], "{id}: chosen");
        if id == "html" {
            let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().expect("text")).collect();
            assert!(
                texts.contains(&HTML_ANSWER),
                "the HTML answer is shown as text: {texts:?}"
            );
            assert!(shown["question"].as_str().expect("q").contains("<script>"), "{shown}");
            let injected = browser.js(
                "return {flag: window.__injected ?? null, imgs: document.querySelectorAll('#answers img, #question script, #question i').length}",
                json!([]),
            );
            assert_eq!(
                injected,
                json!({"flag": null, "imgs": 0}),
                "file text reached the DOM as markup"
            );
            browser.js("document.querySelector('#q-context').open = true", json!([]));
        }
        let over = browser.js(
            "const e = document.getElementById('over-window'); return e ? {over: e.dataset.over, cut: e.dataset.cut, text: e.textContent} : null",
            json!([]),
        );
        if id == "long" {
            assert_eq!((&over["over"], &over["cut"]), (&json!("4"), &json!("0")), "{over}");
            assert!(
                over["text"].as_str().expect("text").contains("read whole, in windows"),
                "{over}"
            );
        } else {
            assert_eq!(over, Value::Null, "{id}: short answers fit the window");
        }
    }
    eprintln!("{label}: max |page - native| = {max_diff:.2e}");

    // Hovering a cell reports its value.
    let hover = browser.js(
        "const c = document.querySelector('svg.heatmap rect.cell[data-i=\"1\"][data-j=\"2\"]');
         c.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
         return document.getElementById('hover').textContent;",
        json!([]),
    );
    assert!(
        hover.as_str().expect("hover").starts_with("answer 1 × answer 2: "),
        "{hover}"
    );

    // The screenshot: the HTML question with its context open, hover on.
    let shot = browser.screenshot(&format!("view-{label}"));
    eprintln!("{label}: screenshot {}", shot.display());

    // ROUGE-L switch: the core's ROUGE-L scores for the first question.
    browser.js(
        "document.getElementById('question-select').value = '0'; document.getElementById('question-select').dispatchEvent(new Event('change'));
         const r = document.querySelector('input[name=utility][value=\"rouge-l\"]'); r.click();",
        json!([]),
    );
    let shown = browser.js(READ_QUESTION, json!([]));
    let texts: Vec<String> = native[0]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s["text"].as_str().expect("text").to_string())
        .collect();
    let m = sealong::mbr::rouge::rouge_l_f1_matrix(&texts);
    let want = sealong::mbr::select::scores_from_matrix(&m, texts.len()).expect("rouge scores");
    for r in shown["rows"].as_array().expect("rows") {
        let i = r["index"].as_u64().expect("index") as usize;
        let got = r["browser"].as_f64().expect("rouge score");
        assert!(
            (got - want[i]).abs() <= 1e-12,
            "ROUGE-L answer {i}: {got} vs {}",
            want[i]
        );
    }
    assert_eq!(shown["cells"], texts.len() * texts.len());

    if !webgpu {
        // The file picker: one good record and one without samples.
        let picked = dir.path().join("picked.jsonl");
        let first = serde_json::to_string(&native[0]).expect("json");
        std::fs::write(&picked, format!("{first}\n{{\"id\": \"x\", \"prompt\": \"p\"}}\n")).expect("picked");
        browser.upload("#open-file", &picked);
        let t0 = Instant::now();
        while browser.js("return document.getElementById('file-name').textContent", json!([])) != "picked.jsonl" {
            assert!(t0.elapsed() < Duration::from_secs(30), "the picked file was not loaded");
            std::thread::sleep(Duration::from_millis(200));
        }
        browser.wait_ready("picked file");
        let problems = browser.js("return document.getElementById('errors').innerText", json!([]));
        assert!(
            problems
                .as_str()
                .expect("text")
                .contains("picked.jsonl:2: record \"x\" has no \"samples\" list"),
            "{problems}"
        );
        let n = browser.js(
            "return document.getElementById('question-select').options.length",
            json!([]),
        );
        assert_eq!(n, 1);

        // Drag and drop: a file dropped on the page replaces the data (a synthetic drop event
        // carrying a File, as the browser builds it for a real drop).
        let second = serde_json::to_string(&native[1]).expect("json");
        browser.js(
            "const dt = new DataTransfer();
             dt.items.add(new File([arguments[0] + '\\n'], 'dropped.jsonl', {type: 'application/json'}));
             document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
            json!([second]),
        );
        let t0 = Instant::now();
        while browser.js("return document.getElementById('file-name').textContent", json!([])) != "dropped.jsonl" {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the dropped file was not loaded"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        browser.wait_ready("dropped file");
        let shown = browser.js(READ_QUESTION, json!([]));
        let want_id = native[1]["id"].as_str().expect("id");
        assert!(shown["id"].as_str().expect("id").contains(want_id), "{shown}");
        assert_eq!(shown["chosen"], native[1]["chosen"]);

        // A broken model (weights cut short): the Problems panel says so, ROUGE-L still works.
        let broken = dir.path().join("broken-model");
        let real = sealong_tests::minilm_path();
        for f in ["config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"] {
            let to = broken.join(f);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(real.join(f), &to).expect("copy");
        }
        let weights = std::fs::read(real.join("model.safetensors")).expect("weights");
        std::fs::write(broken.join("model.safetensors"), &weights[..weights.len() / 3]).expect("cut");
        let server2 = Server::start(&ViewArgs {
            embedder: broken.display().to_string(),
            ..view_args(view_file)
        })
        .unwrap_or_else(|e| panic!("sealong view: {e:#}"));
        browser.go(&server2.url());
        browser.wait_ready("broken model");
        let problems = browser.js("return document.getElementById('errors').innerText", json!([]));
        let problems = problems.as_str().expect("text");
        assert!(
            problems.contains("embedding scores are unavailable") && problems.contains("safetensors"),
            "{problems}"
        );
        let status = browser.js("return document.getElementById('status').textContent", json!([]));
        assert!(status.as_str().expect("status").ends_with("(ROUGE-L only)"), "{status}");
        assert_gpu_module(&server2, false);
        browser.js(
            "document.querySelector('input[name=utility][value=\"rouge-l\"]').click()",
            json!([]),
        );
        let shown = browser.js(READ_QUESTION, json!([]));
        assert_eq!(shown["cells"], f64s(&native[0]["scores"]).len().pow(2));
    }
}

/// The page's modules as the server handed them out: the CPU module always; the WebGPU module
/// (`pkg-gpu/`) exactly when the encoder ran on WebGPU, so the CPU engine's results (embedding
/// ones included) never fetched it.
fn assert_gpu_module(server: &Server, webgpu: bool) {
    let served = server.page_files_served();
    assert!(
        served.iter().any(|f| f == "pkg/sealong_web_bg.wasm"),
        "the page did not load its CPU module: {served:?}"
    );
    let gpu = served.iter().any(|f| f == "pkg-gpu/sealong_web_bg.wasm");
    if webgpu {
        assert!(
            gpu,
            "the page ran on WebGPU without fetching the WebGPU module: {served:?}"
        );
    } else {
        assert!(
            !served.iter().any(|f| f.starts_with("pkg-gpu/")),
            "the page computed on the CPU but fetched the WebGPU module: {served:?}"
        );
    }
}

fn view_args(file: PathBuf) -> ViewArgs {
    ViewArgs {
        file,
        port: 0,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        open: false,
        embedder: sealong_cli::provision::DEFAULT_EMBEDDER.into(),
        no_model: false,
        seed: SeedArgs { seed: 42 },
        www: None,
    }
}

#[test]
fn page_matches_native_scores_on_webgpu() {
    run(true);
}

#[test]
fn page_matches_native_scores_on_cpu_fallback() {
    run(false);
}

/// The page's first-result marks (ms since navigation), once the first embedding result is in.
struct FirstResults {
    rouge_ms: f64,
    embedding_ms: f64,
}

/// Polls (every 100 ms) until the page has marked its first embedding result; fails with the
/// page's Problems panel if it stops on an error instead.
fn wait_first_results(browser: &Browser, what: &str) -> FirstResults {
    let t0 = Instant::now();
    loop {
        let v = browser.js(
            "const at = (n) => performance.getEntriesByName(n, 'mark')[0]?.startTime ?? null;
             return {rouge: at('first-rouge-l'), embedding: at('first-embedding'), state: document.body.dataset.state};",
            json!([]),
        );
        if let (Some(rouge_ms), Some(embedding_ms)) = (v["rouge"].as_f64(), v["embedding"].as_f64()) {
            return FirstResults { rouge_ms, embedding_ms };
        }
        if v["state"] == "error" || v["state"] == "ready" || t0.elapsed() > COMPUTE_TIMEOUT {
            browser.screenshot(&format!("failed-{what}"));
            panic!(
                "{what}: no first embedding result ({v}) after {:?}; problems: {}",
                t0.elapsed(),
                browser.js("return document.getElementById('errors').innerText", json!([]))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Time to the first MBR result, as BENCHMARKS.md reports it (`bench/page_load.sh` runs this).
/// Each load is a fresh Chromium with an empty profile (nothing cached: a first visit, so the
/// wasm is downloaded and compiled every time) opening the page with the golden samples file;
/// the page marks its first ROUGE-L result (the wasm loaded and running) and its first
/// embedding result (also the model downloaded and loaded, and one question embedded) in ms
/// since navigation start. `SEALONG_PAGE_LOADS` loads per backend (default 3), WebGPU
/// (SwiftShader) and the CPU engine; `SEALONG_WWW` serves another page directory (another
/// build's pkg/) instead of the one embedded in this binary.
#[test]
#[ignore = "a measurement of minutes: bench/page_load.sh"]
fn time_to_first_mbr_result() {
    let _one = BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let loads: usize = std::env::var("SEALONG_PAGE_LOADS")
        .map(|v| v.parse().expect("SEALONG_PAGE_LOADS is a count"))
        .unwrap_or(3);
    assert!(loads > 0, "SEALONG_PAGE_LOADS must be at least 1");
    let dir = tempfile::tempdir().expect("tmp");
    let mut args = view_args(samples(dir.path()));
    args.www = std::env::var_os("SEALONG_WWW").map(PathBuf::from);
    let server = Server::start(&args).unwrap_or_else(|e| panic!("sealong view: {e:#}"));
    let page = args
        .www
        .as_ref()
        .map_or("embedded page".into(), |w| w.display().to_string());
    for webgpu in [true, false] {
        let label = if webgpu { "webgpu" } else { "cpu" };
        let (mut rouge, mut embedding) = (Vec::new(), Vec::new());
        for k in 0..loads {
            let browser = Browser::launch(webgpu);
            browser.go(&server.url());
            let first = wait_first_results(&browser, &format!("{label}-load-{k}"));
            let backend = browser.js("return document.body.dataset.backend", json!([]));
            assert_eq!(backend, label, "load {k} ran on {backend}, expected {label}");
            eprintln!(
                "{label} load {k}: first ROUGE-L {:.0} ms, first embedding {:.0} ms",
                first.rouge_ms, first.embedding_ms
            );
            rouge.push(first.rouge_ms);
            embedding.push(first.embedding_ms);
        }
        println!(
            "time to first MBR result ({page}, {label}, median of {loads}): ROUGE-L {:.0} ms, embedding {:.0} ms (embedding loads: {:?})",
            median(&rouge),
            median(&embedding),
            embedding.iter().map(|x| x.round()).collect::<Vec<_>>()
        );
    }
}
