//! `sealong view FILE.jsonl`: serves the browser page (`web/www`, built by `bash web/build.sh`),
//! its wasm, the sentence encoder's files and the data file on 127.0.0.1, and prints the URL.
//! The page does all the computing (in a Web Worker, on WebGPU or the CPU); this is a static
//! file server with a fixed set of routes:
//!
//! - `/`, `/app.js`, `/worker.js`, `/style.css`, `/pkg/*`: files under the page directory;
//! - `/session.json`: what to load (data file name, the model's file list, the seed);
//! - `/data.jsonl`: the file being viewed (read on every request, so a reload shows edits);
//! - `/model/<name>`: only the listed files of the model directory.
//!
//! HTTP/1.1 with one request per connection and a thread per connection: a page makes a dozen
//! requests, so nothing more is needed. Requests whose Host is not this loopback address are
//! refused, so another web site cannot read the files through DNS rebinding.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::args::SeedArgs;
use crate::provision::{self, DEFAULT_EMBEDDER};

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The samples or scored JSONL file to show (`sealong sample` / `sealong score` output).
    pub file: PathBuf,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on. The default, loopback only, keeps your files on this machine.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Open the page in the default browser.
    #[arg(long)]
    pub open: bool,
    /// Sentence embedder the page loads: a default model's name or a sentence-transformers directory.
    #[arg(long, short = 'm', default_value = DEFAULT_EMBEDDER)]
    pub embedder: String,
    /// Serve no model: the page shows ROUGE-L (and the file's own scores) until a model folder is picked.
    #[arg(long)]
    pub no_model: bool,
    #[command(flatten)]
    pub seed: SeedArgs,
    /// The page's directory (default: web/www of the source tree this binary was built from).
    #[arg(long)]
    pub www: Option<PathBuf>,
}

/// The page's directory in this source tree.
pub fn default_www() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("web").join("www")
}

pub fn run(args: ViewArgs) -> Result<()> {
    let server = Server::start(&args)?;
    outln!("sealong view: {} at {}", args.file.display(), server.url())?;
    outln!("(serving on {}; Ctrl-C stops)", server.addr())?;
    if args.open {
        open_browser(&server.url());
    }
    server.wait();
    Ok(())
}

/// What the server hands out; fixed when it starts.
struct Site {
    www: PathBuf,
    data: PathBuf,
    /// `(name relative to the model directory, absolute path, size)`.
    model: Vec<(String, PathBuf, u64)>,
    session: Vec<u8>,
    /// Accepted `Host` header values (empty: any, when listening beyond loopback).
    hosts: Vec<String>,
}

/// A running `sealong view` server (tests start it in-process).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Checks the page, the data file and the model, binds, and serves on a background thread.
    pub fn start(args: &ViewArgs) -> Result<Server> {
        let www = args.www.clone().unwrap_or_else(default_www);
        check_page(&www)?;
        let data = std::fs::canonicalize(&args.file).with_context(|| format!("{}", args.file.display()))?;
        if !data.is_file() {
            bail!("{}: not a file", args.file.display());
        }
        let (model, source) = if args.no_model {
            (Vec::new(), None)
        } else {
            let dir = provision::resolve_model(&args.embedder)?;
            (model_files(&dir)?, Some(args.embedder.clone()))
        };
        let listener = TcpListener::bind((args.bind, args.port)).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another server uses it: pass --port 0 for any free port)"
            } else {
                ""
            };
            anyhow::anyhow!("listening on {}:{}: {e}{hint}", args.bind, args.port)
        })?;
        let addr = listener.local_addr()?;
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let session = json!({
            "data": {"url": "data.jsonl", "name": name},
            "model": source.map(|s| json!({
                "source": s,
                "files": model.iter().map(|(n, _, size)| json!({"name": n, "url": format!("model/{n}"), "size": size})).collect::<Vec<_>>(),
            })),
            "seed": args.seed.seed,
        });
        let hosts = if addr.ip().is_loopback() {
            vec![format!("localhost:{}", addr.port()), addr.to_string()]
        } else {
            Vec::new()
        };
        let site = Arc::new(Site {
            www,
            data,
            model,
            session: serde_json::to_vec_pretty(&session)?,
            hosts,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sealong-view".into())
            .spawn(move || accept_loop(&listener, &site, &stop2))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address (loopback shown as `127.0.0.1`).
    pub fn url(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.addr.ip()
        };
        format!("http://{}/", SocketAddr::new(ip, self.addr.port()))
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept so the loop sees the flag.
            let _ = TcpStream::connect_timeout(&self.url_addr(), Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

impl Server {
    fn url_addr(&self) -> SocketAddr {
        let ip = if self.addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.addr.ip()
        };
        SocketAddr::new(ip, self.addr.port())
    }
}

/// The page needs its HTML/JS and the wasm-bindgen output; the latter is built, not committed.
fn check_page(www: &Path) -> Result<()> {
    if !www.join("index.html").is_file() {
        bail!(
            "the page is not at {} (no index.html); pass --www with the web/www directory of a sealong-rs checkout",
            www.display()
        );
    }
    for f in ["sealong_web.js", "sealong_web_bg.wasm"] {
        if !www.join("pkg").join(f).is_file() {
            bail!(
                "the page's WebAssembly is not built ({} is missing). Build it once with `bash web/build.sh` \
                 in the sealong-rs checkout (installs wasm-bindgen-cli and the wasm32 target if needed)",
                www.join("pkg").join(f).display()
            );
        }
    }
    Ok(())
}

/// The files of a sentence-transformers directory the page's encoder reads (the same set as
/// `SentenceEmbedder::load_dir`): config, tokenizer, weights, pooling and module settings.
fn model_files(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>> {
    if !dir.is_dir() {
        bail!(
            "the embedder {} is not a directory (the page loads a sentence-transformers model directory)",
            dir.display()
        );
    }
    let mut names: Vec<String> = ["config.json", "tokenizer.json"].map(String::from).to_vec();
    if dir.join("model.safetensors").is_file() {
        names.push("model.safetensors".into());
    } else {
        let mut shards: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        if shards.is_empty() {
            bail!("the embedder {} has no .safetensors weights", dir.display());
        }
        shards.sort();
        names.extend(shards);
    }
    for optional in ["1_Pooling/config.json", "sentence_bert_config.json", "modules.json"] {
        if dir.join(optional).is_file() {
            names.push(optional.into());
        }
    }
    names
        .into_iter()
        .map(|n| {
            let p = dir.join(&n);
            let size = std::fs::metadata(&p)
                .with_context(|| format!("the embedder's {}", p.display()))?
                .len();
            Ok((n, p, size))
        })
        .collect()
}

fn accept_loop(listener: &TcpListener, site: &Arc<Site>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let site = Arc::clone(site);
        let _ = std::thread::Builder::new()
            .name("sealong-view-conn".into())
            .spawn(move || {
                if let Err(e) = handle(stream, &site) {
                    tracing::debug!("sealong view: connection: {e:#}");
                }
            });
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Response {
    fn text(status: &'static str, message: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Body::Bytes(message.as_bytes().to_vec()),
        }
    }
}

fn handle(stream: TcpStream, site: &Site) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.by_ref().take(8192).read_line(&mut request_line)?;
    let mut host = None;
    let mut header_bytes = 0usize;
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take(8192).read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" || header_bytes > 64 * 1024 {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("host")
        {
            host = Some(v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = if method != "GET" && method != "HEAD" {
        Response::text("405 Method Not Allowed", "only GET and HEAD\n")
    } else if !site.hosts.is_empty() && !host.as_ref().is_some_and(|h| site.hosts.contains(h)) {
        Response::text("403 Forbidden", "unexpected Host header\n")
    } else {
        route(site, target)
    };
    write_response(stream, &response, method == "HEAD")
}

fn route(site: &Site, target: &str) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let Some(path) = percent_decode(path) else {
        return Response::text("400 Bad Request", "bad percent-encoding\n");
    };
    match path.as_str() {
        "/session.json" => Response {
            status: "200 OK",
            content_type: "application/json",
            body: Body::Bytes(site.session.clone()),
        },
        "/data.jsonl" => file_response(&site.data),
        "/" => file_response(&site.www.join("index.html")),
        p => {
            if let Some(name) = p.strip_prefix("/model/") {
                return match site.model.iter().find(|(n, _, _)| n == name) {
                    Some((_, file, _)) => file_response(file),
                    None => Response::text("404 Not Found", "not a file of the model\n"),
                };
            }
            match safe_join(&site.www, p) {
                Some(file) if file.is_file() => file_response(&file),
                _ => Response::text("404 Not Found", "not found\n"),
            }
        }
    }
}

/// `root` + a URL path made only of normal components (no `..`, no absolute or drive parts).
fn safe_join(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        // instantiateStreaming insists on this type.
        "wasm" => "application/wasm",
        "json" => "application/json",
        "jsonl" | "txt" | "md" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn file_response(path: &Path) -> Response {
    if path.is_file() {
        Response {
            status: "200 OK",
            content_type: content_type(path),
            body: Body::File(path.to_path_buf()),
        }
    } else {
        Response::text("404 Not Found", "not found\n")
    }
}

fn write_response(mut stream: TcpStream, r: &Response, head_only: bool) -> Result<()> {
    let (len, mut file) = match &r.body {
        Body::Bytes(b) => (b.len() as u64, None),
        Body::File(p) => match std::fs::File::open(p) {
            Ok(f) => (f.metadata()?.len(), Some(f)),
            Err(e) => {
                return write_response(
                    stream,
                    &Response::text("500 Internal Server Error", &format!("{}: {e}\n", p.display())),
                    head_only,
                );
            }
        },
    };
    // no-store: a rebuilt wasm or an edited data file shows on the next reload.
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        r.status, r.content_type
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        match (&r.body, file.as_mut()) {
            (Body::Bytes(b), _) => stream.write_all(b)?,
            (Body::File(_), Some(f)) => {
                std::io::copy(f, &mut stream)?;
            }
            (Body::File(_), None) => {}
        }
    }
    stream.flush()?;
    Ok(())
}

/// Opens `url` with the desktop's handler; a failure only prints (the URL is on the terminal).
fn open_browser(url: &str) {
    let mut cmd = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    if let Err(e) = cmd.arg(url).spawn() {
        errln!("sealong view: could not open a browser ({e}); open {url} yourself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_page() {
        let root = Path::new("/www");
        assert_eq!(safe_join(root, "/app.js"), Some(PathBuf::from("/www/app.js")));
        assert_eq!(safe_join(root, "/pkg/a.wasm"), Some(PathBuf::from("/www/pkg/a.wasm")));
        assert_eq!(safe_join(root, "/../etc/passwd"), None);
        assert_eq!(safe_join(root, "/pkg/../../x"), None);
        assert_eq!(safe_join(root, "/"), None);
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some("/../x"));
        assert!(percent_decode("/%zz").is_none());
        assert_eq!(content_type(Path::new("x.wasm")), "application/wasm");
    }
}
