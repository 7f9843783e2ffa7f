//! `sealong view`'s server without a browser: the routes the page uses, the model's file list in
//! `session.json`, refusals (paths outside the page, files outside the model's list, a foreign
//! Host header, other methods, a missing or wrong access token), the security headers, the
//! connection limits (idle and trickling clients, a full queue), the message when the page's
//! wasm is not built, the record of the page's files served, and an installed binary serving
//! its embedded page (both modules, the CPU one at most 6 MB).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealong_cli::args::SeedArgs;
use sealong_cli::commands::view::{CONTENT_SECURITY_POLICY, Limits, Server, ViewArgs};
use serde_json::Value;

fn args(file: PathBuf, www: Option<PathBuf>, no_model: bool) -> ViewArgs {
    ViewArgs {
        file,
        port: 0,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        open: false,
        embedder: sealong_cli::provision::DEFAULT_EMBEDDER.into(),
        no_model,
        seed: SeedArgs { seed: 7 },
        www,
    }
}

/// A raw HTTP/1.1 request with the server's token (as the page's own requests carry it: the
/// cookie); returns (status line, headers, body).
fn get(server: &Server, method: &str, path: &str, host: Option<&str>) -> (String, String, Vec<u8>) {
    try_get(server, method, path, host).expect("request")
}

/// [`get`], with the connection's errors returned (see [`try_request`]).
fn try_get(
    server: &Server,
    method: &str,
    path: &str,
    host: Option<&str>,
) -> std::io::Result<(String, String, Vec<u8>)> {
    let cookie = format!("Cookie: sealong-view-{}={}\r\n", server.addr().port(), server.token());
    try_request(loopback(server.addr()), method, path, host, &cookie)
}

/// The server's address as a client reaches it (127.0.0.1 for a server bound to 0.0.0.0).
fn loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
}

/// A raw HTTP/1.1 request with `extra` header lines (each ending in CRLF).
fn request(addr: SocketAddr, method: &str, path: &str, host: Option<&str>, extra: &str) -> (String, String, Vec<u8>) {
    try_request(addr, method, path, host, extra).expect("request")
}

/// [`request`], with the connection's errors returned: a server that answers 503 and closes
/// before reading the request resets the connection, which a client racing it may see.
fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    extra: &str,
) -> std::io::Result<(String, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let host = host.map_or_else(|| addr.to_string(), str::to_string);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    Ok((status.to_string(), headers.to_string(), raw[split + 4..].to_vec()))
}

/// A page directory with the files `sealong view` checks for (the real page's are built by
/// web/build.sh; these tests must not depend on that).
fn fake_www() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("index.html"), "<!doctype html><title>t</title>").expect("index");
    std::fs::create_dir(d.path().join("pkg")).expect("pkg");
    std::fs::write(d.path().join("pkg/sealong_web.js"), "export default 1;").expect("js");
    std::fs::write(d.path().join("pkg/sealong_web_bg.wasm"), b"\0asm\x01\0\0\0").expect("wasm");
    d
}

#[test]
fn serves_the_page_data_and_model_files_and_nothing_else() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("scored file.jsonl");
    std::fs::write(&data, "{\"id\": 1}\n").expect("data");
    std::fs::write(dir.path().join("secret.txt"), "no").expect("secret");
    let server = Server::start(&args(data.clone(), Some(www.path().to_path_buf()), false)).expect("start");
    assert!(server.url().starts_with("http://127.0.0.1:"), "{}", server.url());

    let (status, headers, body) = get(&server, "GET", "/", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/html"), "{headers}");
    assert!(headers.contains("Cache-Control: no-store"), "{headers}");
    assert!(String::from_utf8_lossy(&body).contains("<title>t</title>"));
    let (_, headers, _) = get(&server, "GET", "/pkg/sealong_web_bg.wasm", None);
    assert!(headers.contains("Content-Type: application/wasm"), "{headers}");

    let (status, _, body) = get(&server, "GET", "/session.json", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let session: Value = serde_json::from_slice(&body).expect("session json");
    assert_eq!(session["data"]["name"], "scored file.jsonl");
    assert_eq!(session["seed"], 7);
    let files: Vec<&str> = session["model"]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    for want in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "modules.json",
    ] {
        assert!(files.contains(&want), "{want} not in {files:?}");
    }
    let (status, _, body) = get(&server, "GET", "/data.jsonl", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"{\"id\": 1}\n");
    let (status, headers, body) = get(&server, "HEAD", "/model/1_Pooling/config.json", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.is_empty() && headers.contains("Content-Length: "), "{headers}");

    for (path, want) in [
        ("/model/../secret.txt", "404"),
        ("/model/pytorch_model.bin", "404"),
        ("/../secret.txt", "404"),
        ("/pkg/%2e%2e/%2e%2e/secret.txt", "404"),
        ("/nothing.js", "404"),
        ("/%zz", "400"),
    ] {
        let (status, _, _) = get(&server, "GET", path, None);
        assert!(status.contains(want), "{path}: {status}");
    }
    let (status, _, _) = get(&server, "GET", "/session.json", Some("attacker.example:80"));
    assert!(status.contains("403"), "foreign Host: {status}");
    let (status, _, _) = get(&server, "POST", "/session.json", None);
    assert!(status.contains("405"), "{status}");
    let port = server.addr().port();
    let (status, _, _) = get(&server, "GET", "/", Some(&format!("localhost:{port}")));
    assert_eq!(status, "HTTP/1.1 200 OK");
    // The record of the page's files served (which modules a page loaded, web_e2e): the ones
    // answered, not the refused or missing ones, nor the data or the model.
    assert_eq!(server.page_files_served(), ["index.html", "pkg/sealong_web_bg.wasm"]);
}

#[test]
fn no_model_and_missing_pieces_are_explained() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("d.jsonl");
    std::fs::write(&data, "{}\n").expect("data");
    let server = Server::start(&args(data.clone(), Some(www.path().to_path_buf()), true)).expect("start");
    let (_, _, body) = get(&server, "GET", "/session.json", None);
    let session: Value = serde_json::from_slice(&body).expect("json");
    assert!(session["model"].is_null(), "{session}");
    drop(server);

    let e = Server::start(&args(
        dir.path().join("missing.jsonl"),
        Some(www.path().to_path_buf()),
        true,
    ))
    .err()
    .expect("no data");
    assert!(format!("{e:#}").contains("missing.jsonl"), "{e:#}");
    std::fs::remove_file(www.path().join("pkg/sealong_web_bg.wasm")).expect("rm");
    let e = Server::start(&args(data.clone(), Some(www.path().to_path_buf()), true))
        .err()
        .expect("no wasm");
    assert!(format!("{e:#}").contains("bash web/build.sh"), "{e:#}");
    let e = Server::start(&args(data, Some(dir.path().to_path_buf()), true))
        .err()
        .expect("no page");
    assert!(format!("{e:#}").contains("index.html"), "{e:#}");
}

fn data_file(dir: &Path) -> PathBuf {
    let data = dir.join("d.jsonl");
    std::fs::write(&data, "{\"id\": 1}\n").expect("data");
    data
}

#[test]
fn every_route_needs_the_token_beyond_loopback_and_on_it() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let data = data_file(dir.path());
    for bind in [IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4(Ipv4Addr::LOCALHOST)] {
        let server = Server::start(&ViewArgs {
            bind,
            ..args(data.clone(), Some(www.path().to_path_buf()), false)
        })
        .expect("start");
        let (addr, token, port) = (
            loopback(server.addr()),
            server.token().to_string(),
            server.addr().port(),
        );
        assert!(token.len() >= 32, "at least 128 bits as hex: {token}");
        assert_eq!(server.url(), format!("http://{addr}/?token={token}"));
        let mut wrong = token.clone().into_bytes();
        wrong[token.len() - 1] = if wrong[token.len() - 1] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).expect("hex");
        let cookie = |name: &str, value: &str| format!("Cookie: other=1; {name}={value}\r\n");
        let ours = format!("sealong-view-{port}");
        for path in [
            "/",
            "/pkg/sealong_web.js",
            "/pkg/sealong_web_bg.wasm",
            "/session.json",
            "/data.jsonl",
            "/model/config.json",
            "/nothing.js",
        ] {
            let sep = if path.contains('?') { '&' } else { '?' };
            for (what, target, extra) in [
                ("no token", path.to_string(), String::new()),
                ("a wrong token", format!("{path}{sep}token={wrong}"), String::new()),
                (
                    "a token's prefix",
                    format!("{path}{sep}token={}", &token[..16]),
                    String::new(),
                ),
                ("an empty token", format!("{path}{sep}token="), String::new()),
                ("a wrong cookie", path.to_string(), cookie(&ours, &wrong)),
                (
                    "another port's cookie",
                    path.to_string(),
                    cookie(&format!("sealong-view-{}", port ^ 1), &token),
                ),
            ] {
                let (status, _, body) = request(addr, "GET", &target, None, &extra);
                assert!(status.contains("403"), "{bind} {path} with {what}: {status}");
                assert!(
                    String::from_utf8_lossy(&body).contains("token"),
                    "{bind} {path}: says why"
                );
            }
            let want = if path == "/nothing.js" { "404" } else { "200" };
            let (status, headers, _) = request(addr, "GET", &format!("{path}{sep}token={token}"), None, "");
            assert!(
                status.contains(want),
                "{bind} {path} with the token in the URL: {status}"
            );
            assert!(
                headers.contains(&format!(
                    "Set-Cookie: {ours}={token}; Path=/; HttpOnly; SameSite=Strict"
                )),
                "{bind} {path}: the URL's token becomes the page's cookie: {headers}"
            );
            let (status, headers, _) = request(addr, "GET", path, None, &cookie(&ours, &token));
            assert!(status.contains(want), "{bind} {path} with the cookie: {status}");
            assert!(!headers.contains("Set-Cookie"), "{headers}");
        }
        // The Host check stays on loopback (DNS rebinding); beyond it the token is the guard.
        let (status, _, _) = request(
            addr,
            "GET",
            &format!("/session.json?token={token}"),
            Some("attacker.example:80"),
            "",
        );
        let want = if bind.is_loopback() { "403" } else { "200" };
        assert!(status.contains(want), "{bind}: foreign Host with the token: {status}");
    }
}

#[test]
fn every_response_carries_the_security_headers() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(&args(data_file(dir.path()), Some(www.path().to_path_buf()), true)).expect("start");
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self' 'wasm-unsafe-eval'"));
    assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
    let addr = loopback(server.addr());
    for (status_want, (status, headers, _)) in [
        ("200", get(&server, "GET", "/", None)),
        ("200", get(&server, "GET", "/pkg/sealong_web_bg.wasm", None)),
        ("404", get(&server, "GET", "/nothing", None)),
        ("405", get(&server, "POST", "/", None)),
        ("403", request(addr, "GET", "/", None, "")),
    ] {
        assert!(status.contains(status_want), "{status}");
        for want in [
            format!("Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n"),
            "Referrer-Policy: no-referrer\r\n".to_string(),
            "X-Content-Type-Options: nosniff\r\n".to_string(),
            "Cross-Origin-Resource-Policy: same-origin\r\n".to_string(),
        ] {
            assert!(
                format!("{headers}\r\n").contains(&want),
                "{status}: no {want:?} in {headers}"
            );
        }
    }
}

fn small_limits(head_timeout: Duration) -> Limits {
    Limits {
        workers: 2,
        queue: 8,
        head_timeout,
        write_timeout: Duration::from_secs(5),
    }
}

#[test]
fn idle_connections_do_not_starve_a_real_request() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let limits = small_limits(Duration::from_secs(1));
    let server = Server::start_with(
        &args(data_file(dir.path()), Some(www.path().to_path_buf()), true),
        limits.clone(),
    )
    .expect("start");
    // Every worker and part of the queue held by clients that never send a byte.
    let idle: Vec<TcpStream> = (0..limits.workers + 3)
        .map(|_| TcpStream::connect(loopback(server.addr())).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let (status, _, body) = get(&server, "GET", "/data.jsonl", None);
    let took = t0.elapsed();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"{\"id\": 1}\n");
    assert!(
        took < limits.head_timeout + Duration::from_secs(4),
        "served after {took:?}: idle connections held the workers past the head deadline"
    );
    drop(idle);
}

#[test]
fn a_trickling_client_is_cut_off_at_the_head_deadline() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let limits = small_limits(Duration::from_secs(1));
    let server = Server::start_with(
        &args(data_file(dir.path()), Some(www.path().to_path_buf()), true),
        limits.clone(),
    )
    .expect("start");
    let mut s = TcpStream::connect(loopback(server.addr())).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let t0 = Instant::now();
    let trickle = b"GET / HTTP/1.1\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
    let mut buf = [0u8; 256];
    // A byte every 100 ms, far inside any per-read timeout: only a deadline for the whole head
    // ends it.
    for &b in trickle {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "a client sending a byte every 100 ms kept its connection for 6 s"
        );
        if s.write_all(&[b]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(n) => {
                assert!(
                    n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
                    "{:?}",
                    &buf[..n]
                );
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let took = t0.elapsed();
    assert!(
        took >= limits.head_timeout - Duration::from_millis(200),
        "cut off early: {took:?}"
    );
}

#[test]
fn a_full_queue_gets_503_and_the_server_recovers() {
    let www = fake_www();
    let dir = tempfile::tempdir().expect("tmp");
    let limits = Limits {
        workers: 1,
        queue: 1,
        ..small_limits(Duration::from_secs(20))
    };
    let server = Server::start_with(
        &args(data_file(dir.path()), Some(www.path().to_path_buf()), true),
        limits,
    )
    .expect("start");
    let addr = loopback(server.addr());
    // At most one connection in the worker and one in the queue, and none of these clients
    // ever sends a byte: of six, at least four must be refused at once, whatever the timing.
    let conns: Vec<TcpStream> = (0..6)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            std::thread::sleep(Duration::from_millis(50));
            c
        })
        .collect();
    let mut refused = 0;
    for mut c in &conns {
        c.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut raw = Vec::new();
        let _ = c.read_to_end(&mut raw);
        if !raw.is_empty() {
            let text = String::from_utf8_lossy(&raw);
            assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
            assert!(text.contains("Content-Security-Policy"), "{text:?}");
            refused += 1;
        }
    }
    assert!(
        refused >= 4,
        "{refused} of 6 refused with one worker and a queue of one"
    );
    // The idle clients leave; the worker is free again long before their head deadline.
    drop(conns);
    let t0 = Instant::now();
    loop {
        // While the server still counts the idle clients, it answers 503, or closes a request it
        // refused before reading it, which the client sees as a reset or, when its write comes
        // after the close, a broken pipe: each means "not yet".
        let status = match try_get(&server, "GET", "/session.json", None) {
            Ok((status, _, _)) => status,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                format!("HTTP/1.1 503 ({})", e.kind())
            }
            Err(e) => panic!("request: {e}"),
        };
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(status.contains("503"), "{status}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still busy after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child on drop, so a failing assertion leaves no server behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The page's files as the source tree has them (what build.rs embedded).
fn page_files(root: &Path, rel: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root.join(rel)).expect("web/www") {
        let e = e.expect("entry");
        let name = format!("{rel}{}", e.file_name().to_string_lossy());
        if name.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if e.path().is_dir() {
            page_files(root, &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

#[test]
fn an_installed_binary_serves_its_embedded_page_from_anywhere() {
    let www = sealong_tests::repo_root().join("web").join("www");
    let mut files = Vec::new();
    page_files(&www, "", &mut files);
    for f in [
        "index.html",
        "app.js",
        "worker.js",
        "style.css",
        "pkg/sealong_web.js",
        "pkg/sealong_web_bg.wasm",
        "pkg-gpu/sealong_web.js",
        "pkg-gpu/sealong_web_bg.wasm",
    ] {
        assert!(
            files.iter().any(|n| n == f),
            "{f} is not in web/www: build the page's wasm first (bash web/build.sh)"
        );
    }
    // The binary alone, in a directory of its own, run from another one.
    let bin_dir = tempfile::tempdir().expect("tmp");
    let bin = bin_dir.path().join("sealong");
    std::fs::copy(env!("CARGO_BIN_EXE_sealong-installed"), &bin).expect("copy the binary");
    let work = tempfile::tempdir().expect("tmp");
    data_file(work.path());
    let child = Command::new(&bin)
        .args(["view", "d.jsonl", "--port", "0", "--no-model"])
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the copied binary");
    let mut child = Killed(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the URL line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let (host, token) = url
        .trim_start_matches("http://")
        .split_once("/?token=")
        .unwrap_or_else(|| panic!("no token in {url}"));
    let addr: SocketAddr = host.parse().expect("host:port");
    let (status, _, _) = request(addr, "GET", "/", None, "");
    assert!(status.contains("403"), "no token: {status}");
    for f in &files {
        let (status, _, body) = request(addr, "GET", &format!("/{f}?token={token}"), None, "");
        assert_eq!(status, "HTTP/1.1 200 OK", "{f}");
        let want = std::fs::read(www.join(f)).expect("source file");
        assert!(
            body == want,
            "{f}: {} bytes served, {} in web/www",
            body.len(),
            want.len()
        );
        if f == "pkg/sealong_web_bg.wasm" {
            // Issue 18: the module the page's first results wait for is at most 6 MB.
            assert!(
                body.len() <= 6_000_000,
                "the page's CPU module is {} bytes, over 6 MB",
                body.len()
            );
        }
    }
    let (status, _, body) = request(addr, "GET", &format!("/data.jsonl?token={token}"), None, "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, b"{\"id\": 1}\n");
    // The bytes came from the binary: the source tree's page directory is not even named in it
    // (the old default, `CARGO_MANIFEST_DIR/../web/www`, was compiled in).
    let exe = std::fs::read(&bin).expect("binary");
    let manifest = sealong_tests::repo_root().join("native-cli");
    for path in [www.clone(), manifest.join("..").join("web").join("www"), manifest] {
        let needle = path.display().to_string();
        assert!(
            !exe.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the binary names {needle}"
        );
    }
}
