//! `sealong view FILE.jsonl`: serves the browser page, its wasm, the sentence encoder's files and
//! the data file, and prints the URL. The page does all the computing (in a Web Worker, on WebGPU
//! or the CPU); this is a static file server with a fixed set of routes:
//!
//! - `/`, `/app.js`, `/worker.js`, `/style.css`, `/pkg/*`, `/pkg-gpu/*`: the page (`pkg/` its CPU
//!   module, `pkg-gpu/` its WebGPU module, web/build.sh). It is embedded in the binary
//!   at build time (`native-cli/build.rs`), so an installed `sealong` needs no source tree;
//!   `--www DIR` serves a directory instead (a page being edited);
//! - `/session.json`: what to load (data file name, the model's file list, the seed);
//! - `/data.jsonl`: the file being viewed (read on every request, so a reload shows edits);
//! - `/model/<name>`: only the listed files of the model directory.
//!
//! Who may read them:
//! - **An access token on every route**, loopback included, as Jupyter does: 192 bits from the
//!   OS's random source, in the printed URL (`/?token=…`). A request that carries it in the query
//!   gets it back as an `HttpOnly; SameSite=Strict` cookie named after the port, which the page's
//!   own requests (scripts, the worker, its wasm, `fetch`) then send without the page knowing
//!   about tokens. Compared in constant time. Loopback too, because loopback is not private on a
//!   shared machine: any local user can connect to 127.0.0.1 with whatever Host header they
//!   like, and would read the data file even where its permissions keep them out.
//! - **The Host check on loopback**: a request whose Host is not this loopback address is
//!   refused, so a web site cannot reach the server through DNS rebinding (the browser would
//!   send the site's own host name). Beyond loopback (`--bind 0.0.0.0`) the server does not know
//!   its names, so only the token guards it (a rebinding site cannot know the token, and the
//!   cookie belongs to the real host name).
//! - **Headers**: a Content-Security-Policy (scripts and workers only from this origin, wasm
//!   compilation allowed, no inline code or styles, fetches only to this origin, no framing),
//!   `nosniff`, and `Referrer-Policy: no-referrer` so the token in the page's URL does not leak.
//!
//! HTTP/1.1, one request per connection (a page makes a dozen requests). Connections are served
//! by a fixed pool of worker threads fed by a bounded queue: when both are full, a new connection
//! gets 503 at once, so a flood cannot make the process spawn threads without end. A request's
//! head must arrive whole within `head_timeout` of its connection being accepted (slowloris: a
//! client trickling bytes does not hold a worker past it), and a response write that makes no
//! progress for `write_timeout` ends the connection. (`crate::pool` does not fit: it maps a
//! finite list of items in order, a server takes an endless stream.)

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::args::SeedArgs;
use crate::provision::{self, DEFAULT_EMBEDDER};

/// The page as it was when this binary compiled (`native-cli/build.rs` writes the list).
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/page.rs"));
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The samples or scored JSONL file to show (`sealong sample` / `sealong score` output).
    pub file: PathBuf,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on. The default, loopback only, keeps your files on this machine;
    /// another address (e.g. 0.0.0.0) lets other machines in with the printed URL's token.
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
    /// Serve the page from this directory (a web/www with its pkg/ built) instead of the copy
    /// embedded in this binary.
    #[arg(long)]
    pub www: Option<PathBuf>,
}

/// How much the server takes on at once, and how long a client may dawdle.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Worker threads, each serving one connection at a time.
    pub workers: usize,
    /// Accepted connections waiting for a worker; beyond it a new connection gets 503.
    pub queue: usize,
    /// From accepting a connection to the end of its request head.
    pub head_timeout: Duration,
    /// The longest a response write may make no progress.
    pub write_timeout: Duration,
}

impl Default for Limits {
    /// A browser opens about six connections per host; 16 workers leave room for a second tab
    /// and stray preconnects, and a 10 s head deadline is long for a request line and a few
    /// headers on any network.
    fn default() -> Self {
        Limits {
            workers: 16,
            queue: 64,
            head_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
        }
    }
}

pub fn run(args: ViewArgs) -> Result<()> {
    let server = Server::start(&args)?;
    outln!("sealong view: {} at {}", args.file.display(), server.url())?;
    if args.bind.is_loopback() {
        outln!("(serving on {}; Ctrl-C stops)", server.addr())?;
    } else {
        outln!(
            "(serving on {} for other machines too: use this machine's address with the same ?token=; Ctrl-C stops)",
            server.addr()
        )?;
    }
    if args.open {
        open_browser(&server.url());
    }
    server.wait();
    Ok(())
}

/// Where the page's files come from.
enum Page {
    /// Compiled into the binary.
    Embedded,
    /// A directory given with `--www`.
    Dir(PathBuf),
}

/// What the server hands out; fixed when it starts (but for the record of what it served).
struct Site {
    page: Page,
    data: PathBuf,
    /// `(name relative to the model directory, absolute path, size)`.
    model: Vec<(String, PathBuf, u64)>,
    session: Vec<u8>,
    /// Accepted `Host` header values (empty: any, when listening beyond loopback).
    hosts: Vec<String>,
    token: String,
    /// The cookie that carries the token (one per port: cookies ignore ports, and two servers
    /// on one host must not overwrite each other's).
    cookie: String,
    limits: Limits,
    /// The page's files answered so far (see [`Server::page_files_served`]).
    served: Arc<Mutex<BTreeSet<String>>>,
}

/// A running `sealong view` server (tests start it in-process).
pub struct Server {
    addr: SocketAddr,
    token: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    served: Arc<Mutex<BTreeSet<String>>>,
}

impl Server {
    /// Checks the page, the data file and the model, binds, and serves on background threads.
    pub fn start(args: &ViewArgs) -> Result<Server> {
        Server::start_with(args, Limits::default())
    }

    pub fn start_with(args: &ViewArgs, limits: Limits) -> Result<Server> {
        let page = match &args.www {
            Some(dir) => Page::Dir(dir.clone()),
            None => Page::Embedded,
        };
        check_page(&page)?;
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
        let token = new_token()?;
        let served = Arc::new(Mutex::new(BTreeSet::new()));
        let site = Arc::new(Site {
            page,
            data,
            model,
            session: serde_json::to_vec_pretty(&session)?,
            hosts,
            token: token.clone(),
            cookie: format!("sealong-view-{}", addr.port()),
            limits: limits.clone(),
            served: Arc::clone(&served),
        });
        let (tx, rx) = sync_channel::<(TcpStream, Instant)>(limits.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..limits.workers.max(1) {
            let (rx, site) = (Arc::clone(&rx), Arc::clone(&site));
            std::thread::Builder::new()
                .name(format!("sealong-view-{i}"))
                .spawn(move || worker(&rx, &site))
                .context("starting the server's worker threads")?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sealong-view".into())
            .spawn(move || accept_loop(&listener, tx, &stop2))?;
        Ok(Server {
            addr,
            token,
            stop,
            thread: Some(thread),
            served,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The access token every request must carry (in the query or the cookie).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The page's address with its token (loopback shown as `127.0.0.1`).
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.url_addr(), self.token)
    }

    /// The page's files this server has answered (200) so far, by name relative to the page
    /// (`pkg/sealong_web_bg.wasm`): which of its modules a page loaded. A set bounded by the
    /// page's own files.
    pub fn page_files_served(&self) -> Vec<String> {
        let served = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        served.iter().cloned().collect()
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn url_addr(&self) -> SocketAddr {
        let ip = if self.addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.addr.ip()
        };
        SocketAddr::new(ip, self.addr.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept so the loop sees the flag. The loop then drops the
            // queue's sender, and each worker ends after its current connection.
            let _ = TcpStream::connect_timeout(&self.url_addr(), Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

/// 192 random bits from the OS, as hex.
fn new_token() -> Result<String> {
    use rand::TryRng;
    let mut bytes = [0u8; 24];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality whose time does not depend on where the inputs differ (only on their lengths, and
/// the token's length is no secret), so the token cannot be guessed byte by byte from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Explains a binary that was compiled before the page's wasm was built.
fn check_embedded(has_wasm: bool) -> Result<()> {
    if !has_wasm {
        bail!(
            "this sealong was built without the page's WebAssembly (web/www/pkg did not exist when it \
             compiled): run `bash web/build.sh` in the sealong-rs checkout and rebuild sealong, or pass \
             --www DIR with a web/www directory whose pkg/ is built"
        );
    }
    Ok(())
}

/// The page needs its HTML/JS and the wasm-bindgen output; the latter is built, not committed.
fn check_page(page: &Page) -> Result<()> {
    let www = match page {
        Page::Embedded => return check_embedded(embedded::HAS_WASM),
        Page::Dir(dir) => dir,
    };
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

fn accept_loop(listener: &TcpListener, queue: SyncSender<(TcpStream, Instant)>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        match queue.try_send((stream, Instant::now())) {
            Ok(()) => {}
            Err(TrySendError::Full((stream, _))) => refuse_busy(stream),
            Err(TrySendError::Disconnected(_)) => break,
        }
    }
}

/// Every worker busy and the queue full: a short 503, written without blocking the accept loop
/// (a client that does not read it loses it).
fn refuse_busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let r = Response::text("503 Service Unavailable", "too many connections; try again\n");
    let mut out = head_bytes(&r, r.len(), &[]);
    out.extend_from_slice(r.bytes());
    let _ = (&stream).write_all(&out);
}

fn worker(queue: &Mutex<Receiver<(TcpStream, Instant)>>, site: &Site) {
    loop {
        // The lock is held only while taking a connection, never while serving one.
        let job = queue.lock().map_err(|_| ()).and_then(|rx| rx.recv().map_err(|_| ()));
        let Ok((stream, accepted)) = job else { break };
        if let Err(e) = handle(stream, accepted, site) {
            tracing::debug!("sealong view: connection: {e:#}");
        }
    }
}

/// A request head: up to this many bytes.
const MAX_HEAD: usize = 64 * 1024;

/// Reads the request head (through the blank line) by `deadline`. `Ok(None)`: the head did not
/// end in time or is too long; errors are the connection's.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > MAX_HEAD {
            return Ok(None);
        }
        // Each read waits at most until the deadline, so a byte every few seconds does not
        // extend it.
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => bail!("closed before the request head ended"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end + 4);
            return Ok(Some(head));
        }
        if let Some(end) = head[from..].windows(2).position(|w| w == b"\n\n") {
            head.truncate(from + end + 2);
            return Ok(Some(head));
        }
    }
}

/// The parts of a request the routes look at.
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    host: Option<&'a str>,
    cookies: Vec<&'a str>,
}

fn parse_head(head: &str) -> Request<'_> {
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut req = Request {
        method,
        target,
        host: None,
        cookies: Vec::new(),
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        if k.eq_ignore_ascii_case("host") {
            req.host = Some(v.trim());
        } else if k.eq_ignore_ascii_case("cookie") {
            req.cookies.extend(v.split(';').map(str::trim));
        }
    }
    req
}

/// The value of `key` in a URL's query (`/?token=…&backend=cpu`), percent-decoded.
fn query_param(target: &str, key: &str) -> Option<String> {
    let query = target.split('#').next()?.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| percent_decode(v))
}

/// How a request showed the token: in the URL (answered with the cookie), the cookie, or not.
#[derive(Debug, PartialEq)]
enum Auth {
    Query,
    Cookie,
    None,
}

fn authenticate(site: &Site, req: &Request) -> Auth {
    let token = site.token.as_bytes();
    if query_param(req.target, "token").is_some_and(|t| same_secret(t.as_bytes(), token)) {
        return Auth::Query;
    }
    let named = req
        .cookies
        .iter()
        .filter_map(|c| c.split_once('='))
        .filter(|(k, _)| *k == site.cookie);
    // Every cookie of that name is compared, so a stale one before the right one does not matter.
    if named.fold(false, |ok, (_, v)| ok | same_secret(v.as_bytes(), token)) {
        return Auth::Cookie;
    }
    Auth::None
}

fn handle(mut stream: TcpStream, accepted: Instant, site: &Site) -> Result<()> {
    stream.set_write_timeout(Some(site.limits.write_timeout))?;
    let Some(head) = read_head(&mut stream, accepted + site.limits.head_timeout)? else {
        // Best effort: a slow client may not read it either (the write timeout bounds that).
        return write_response(
            stream,
            &Response::text("408 Request Timeout", "the request did not arrive in time\n"),
            false,
            &[],
        );
    };
    let head = String::from_utf8_lossy(&head);
    let req = parse_head(&head);
    let mut extra = Vec::new();
    let response = if req.method != "GET" && req.method != "HEAD" {
        Response::text("405 Method Not Allowed", "only GET and HEAD\n")
    } else if !site.hosts.is_empty() && !req.host.is_some_and(|h| site.hosts.iter().any(|a| a == h)) {
        Response::text("403 Forbidden", "unexpected Host header\n")
    } else {
        match authenticate(site, &req) {
            Auth::None => Response::text(
                "403 Forbidden",
                "this server needs its access token: open the URL `sealong view` printed (…/?token=…)\n",
            ),
            auth => {
                if auth == Auth::Query {
                    extra.push(format!(
                        "Set-Cookie: {}={}; Path=/; HttpOnly; SameSite=Strict",
                        site.cookie, site.token
                    ));
                }
                route(site, req.target)
            }
        }
    };
    write_response(stream, &response, req.method == "HEAD", &extra)
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
        "/" => page_file(site, "index.html"),
        p => {
            if let Some(name) = p.strip_prefix("/model/") {
                return match site.model.iter().find(|(n, _, _)| n == name) {
                    Some((_, file, _)) => file_response(file),
                    None => Response::text("404 Not Found", "not a file of the model\n"),
                };
            }
            page_file(site, p.trim_start_matches('/'))
        }
    }
}

/// A file of the page by its name relative to the page's root.
fn page_file(site: &Site, name: &str) -> Response {
    let response = page_file_response(site, name);
    if response.status == "200 OK" {
        let mut served = site.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        served.insert(name.to_string());
    }
    response
}

fn page_file_response(site: &Site, name: &str) -> Response {
    match &site.page {
        Page::Embedded => match embedded::FILES.iter().find(|(n, _)| *n == name) {
            Some((n, bytes)) => Response {
                status: "200 OK",
                content_type: content_type(Path::new(n)),
                body: Body::Static(bytes),
            },
            None => Response::text("404 Not Found", "not found\n"),
        },
        Page::Dir(www) => match safe_join(www, name) {
            Some(file) if file.is_file() => file_response(&file),
            _ => Response::text("404 Not Found", "not found\n"),
        },
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

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    Static(&'static [u8]),
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

    /// The body's bytes when they are in memory (empty for a file).
    fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(b) => b,
            Body::Static(b) => b,
            Body::File(_) => &[],
        }
    }

    fn len(&self) -> u64 {
        self.bytes().len() as u64
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

/// What the page may do, for the browser to enforce: its scripts and worker only from here
/// (`'wasm-unsafe-eval'`: compiling the wasm, nothing like `eval`), fetches only to here (the
/// session, the data, the model, the wasm), styles only from style.css, nothing framed,
/// embedded or posted. WebGPU needs no directive.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     worker-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn head_bytes(r: &Response, len: u64, extra: &[String]) -> Vec<u8> {
    // no-store: a rebuilt wasm or an edited data file shows on the next reload.
    // no-referrer: the page's URL holds the token; no request may carry it elsewhere.
    // Cross-Origin-Resource-Policy: another site cannot even embed a response (as a script or
    // an image) with the user's cookie.
    let mut h = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nCache-Control: no-store\r\n\
         Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nCross-Origin-Resource-Policy: same-origin\r\n\
         Cross-Origin-Opener-Policy: same-origin\r\nX-Frame-Options: DENY\r\n",
        r.status, r.content_type
    );
    for line in extra {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("Connection: close\r\n\r\n");
    h.into_bytes()
}

fn write_response(mut stream: TcpStream, r: &Response, head_only: bool, extra: &[String]) -> Result<()> {
    let (len, mut file) = match &r.body {
        Body::Bytes(_) | Body::Static(_) => (r.len(), None),
        Body::File(p) => match std::fs::File::open(p) {
            Ok(f) => (f.metadata()?.len(), Some(f)),
            Err(e) => {
                return write_response(
                    stream,
                    &Response::text("500 Internal Server Error", &format!("{}: {e}\n", p.display())),
                    head_only,
                    extra,
                );
            }
        },
    };
    stream.write_all(&head_bytes(r, len, extra))?;
    if !head_only {
        match file.as_mut() {
            Some(f) => {
                std::io::copy(f, &mut stream)?;
            }
            None => stream.write_all(r.bytes())?,
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

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (new_token().expect("token"), new_token().expect("token"));
        assert_eq!(a.len(), 48, "192 bits as hex: {a}");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert!(same_secret(a.as_bytes(), a.clone().as_bytes()));
        let mut last = a.clone().into_bytes();
        *last.last_mut().expect("byte") ^= 1;
        assert!(!same_secret(&last, a.as_bytes()), "differs in the last byte only");
        assert!(!same_secret(&a.as_bytes()[..47], a.as_bytes()), "a prefix");
        assert!(!same_secret(b"", a.as_bytes()));
        assert_eq!(
            query_param("/?backend=cpu&token=ab%63", "token").as_deref(),
            Some("abc")
        );
        assert_eq!(query_param("/x?tokens=1", "token"), None);
        assert_eq!(query_param("/token=1", "token"), None);
        let req = parse_head("GET / HTTP/1.1\r\nHost: h:1\r\nCookie: a=1; sealong-view-9=x\r\n\r\n");
        assert_eq!((req.method, req.target, req.host), ("GET", "/", Some("h:1")));
        assert_eq!(req.cookies, ["a=1", "sealong-view-9=x"]);
    }

    #[test]
    fn a_binary_without_the_wasm_says_how_to_get_it() {
        check_embedded(true).expect("built");
        let e = check_embedded(false).expect_err("no wasm").to_string();
        assert!(
            e.contains("bash web/build.sh") && e.contains("rebuild") && e.contains("--www"),
            "{e}"
        );
    }
}
