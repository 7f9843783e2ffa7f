//! `sealong view`'s server without a browser: the routes the page uses, the model's file list in
//! `session.json`, refusals (paths outside the page, files outside the model's list, a foreign
//! Host header, other methods), and the message when the page's wasm is not built.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::PathBuf;

use sealong_cli::args::SeedArgs;
use sealong_cli::commands::view::{Server, ViewArgs, default_www};
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

/// A raw HTTP/1.1 request; returns (status line, headers, body).
fn get(server: &Server, method: &str, path: &str, host: Option<&str>) -> (String, String, Vec<u8>) {
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    let host = host.map_or_else(|| addr.to_string(), str::to_string);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (status.to_string(), headers.to_string(), raw[split + 4..].to_vec())
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
    assert!(default_www().ends_with("web/www"), "{}", default_www().display());
}
