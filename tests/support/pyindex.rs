//! A hermetic Python package index for tests: a PEP 503 "simple" repository on 127.0.0.1,
//! serving pure-Python wheels built in memory.
//!
//! ```ignore
//! #[path = "support/pyindex.rs"]
//! mod pyindex;
//!
//! let index = pyindex::PyIndex::start();
//! index.publish("kiln-demo-lib", "1.0.0", &["six>=1.16"]);
//! // pip install --index-url <index.url()> kiln-demo-lib
//! ```
//!
//! Routes: `GET /simple/` (one link per project), `GET /simple/<normalized-name>/` (one anchor
//! per wheel, `#sha256=<hex>` fragment, `data-requires-python` when set), `GET /files/<wheel>`
//! (the bytes); everything else is 404. Every answer is HTML (or the wheel's bytes) over
//! HTTP/1.1 with `Connection: close`, whatever `Accept` asks for: pip and uv both take
//! `text/html`. What is published shows on the next request. Dropping the index stops it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A running index. See the module docs.
pub struct PyIndex {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    /// Normalized project name → its files, in publish order.
    projects: BTreeMap<String, Vec<Published>>,
    /// Wheel file name → bytes.
    files: BTreeMap<String, Arc<Vec<u8>>>,
    /// `METHOD PATH` of every request, in arrival order.
    requests: Vec<String>,
}

#[derive(Clone)]
struct Published {
    filename: String,
    sha256: String,
    requires_python: Option<String>,
}

impl PyIndex {
    /// Bind a free port on 127.0.0.1 and serve from a background thread.
    pub fn start() -> PyIndex {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for the index");
        let addr = listener.local_addr().expect("local address of the index");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("pyindex-{}", addr.port()))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let state = Arc::clone(&state);
                        // One thread per connection: clients open several at once.
                        let _ = std::thread::Builder::new()
                            .name("pyindex-conn".into())
                            .spawn(move || {
                                let _ = serve(conn, &state);
                            });
                    }
                })
                .expect("spawn the index thread")
        };
        PyIndex {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/simple`: what `--index-url` (pip) or `UV_INDEX_URL` take.
    pub fn url(&self) -> String {
        format!("http://{}/simple", self.addr)
    }

    /// The address the index listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Publish `{name}-{version}-py3-none-any.whl` whose METADATA requires `deps`
    /// (PEP 508 strings, e.g. `"six>=1.16"`). Returns the wheel's file name.
    pub fn publish(&self, name: &str, version: &str, deps: &[&str]) -> String {
        self.publish_with(name, version, deps, None)
    }

    /// [`publish`](Self::publish), with `Requires-Python` in METADATA and
    /// `data-requires-python` on the index's anchor (e.g. `Some(">=3.8")`).
    pub fn publish_with(
        &self,
        name: &str,
        version: &str,
        deps: &[&str],
        requires_python: Option<&str>,
    ) -> String {
        let wheel = build_wheel(name, version, deps, requires_python);
        let published = Published {
            filename: wheel.filename.clone(),
            sha256: hex_sha256(&wheel.bytes),
            requires_python: requires_python.map(str::to_string),
        };
        let mut state = lock(&self.state);
        let files = state.projects.entry(normalize(name)).or_default();
        files.retain(|p| p.filename != published.filename);
        files.push(published);
        state
            .files
            .insert(wheel.filename.clone(), Arc::new(wheel.bytes));
        wheel.filename
    }

    /// `METHOD PATH` of every request served so far, oldest first.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for PyIndex {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag; it exits before serving this connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// PEP 503 name normalization: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The name as it appears in wheel file names, dist-info directories and the import package:
/// normalized, with `-` replaced by `_` (`kiln-demo-lib` → `kiln_demo_lib`).
pub fn underscored(name: &str) -> String {
    normalize(name).replace('-', "_")
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers (Accept, User-Agent, …) are read and ignored: the answer is always HTML.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    let response = {
        let mut state = lock(state);
        state.requests.push(format!("{method} {path}"));
        if method == "GET" || method == "HEAD" {
            route(&state, &path)
        } else {
            Response::text(405, "Method Not Allowed", "only GET and HEAD\n")
        }
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.reason,
        response.content_type,
        response.body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&response.body)?;
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Write);
    Ok(())
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Arc<Vec<u8>>,
}

impl Response {
    fn html(body: String) -> Response {
        Response {
            status: 200,
            reason: "OK",
            content_type: "text/html; charset=utf-8",
            body: Arc::new(body.into_bytes()),
        }
    }

    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: Arc::new(body.as_bytes().to_vec()),
        }
    }
}

fn route(state: &State, path: &str) -> Response {
    let not_found = || Response::text(404, "Not Found", "not found\n");
    if path == "/simple/" || path == "/simple" {
        let links: String = state
            .projects
            .keys()
            .map(|p| format!("<a href=\"/simple/{p}/\">{p}</a><br/>\n"))
            .collect();
        return Response::html(page("Simple index", &links));
    }
    if let Some(rest) = path.strip_prefix("/simple/") {
        let name = rest.trim_end_matches('/');
        if name.contains('/') {
            return not_found();
        }
        let Some(files) = state.projects.get(&normalize(name)) else {
            return not_found();
        };
        let links: String = files
            .iter()
            .map(|f| {
                let requires = f
                    .requires_python
                    .as_deref()
                    .map(|r| format!(" data-requires-python=\"{}\"", html_escape(r)))
                    .unwrap_or_default();
                format!(
                    "<a href=\"/files/{0}#sha256={1}\"{requires}>{0}</a><br/>\n",
                    f.filename, f.sha256
                )
            })
            .collect();
        return Response::html(page(&format!("Links for {}", normalize(name)), &links));
    }
    let file = path.strip_prefix("/files/");
    match file.and_then(|f| state.files.get(f)) {
        Some(bytes) => Response {
            status: 200,
            reason: "OK",
            content_type: "application/octet-stream",
            body: Arc::clone(bytes),
        },
        None => not_found(),
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.0\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n"
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------------------------
// Wheels

/// A wheel built in memory.
pub struct Wheel {
    /// `{name_underscored}-{version}-py3-none-any.whl`
    pub filename: String,
    /// The zip archive.
    pub bytes: Vec<u8>,
}

/// Build a pure-Python wheel: `{pkg}/__init__.py` with `__version__`, and the dist-info's
/// METADATA (2.1), WHEEL and RECORD (sha256, urlsafe base64 without padding, and size).
pub fn build_wheel(
    name: &str,
    version: &str,
    deps: &[&str],
    requires_python: Option<&str>,
) -> Wheel {
    let pkg = underscored(name);
    let dist_info = format!("{pkg}-{version}.dist-info");
    let mut metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    metadata.push_str(&format!("Summary: {name}, built by kiln's test index\n"));
    if let Some(requires) = requires_python {
        metadata.push_str(&format!("Requires-Python: {requires}\n"));
    }
    for dep in deps {
        metadata.push_str(&format!("Requires-Dist: {dep}\n"));
    }
    let wheel = "Wheel-Version: 1.0\nGenerator: kiln-test-pyindex\nRoot-Is-Purelib: true\n\
                 Tag: py3-none-any\n";
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{pkg}/__init__.py"),
            format!("__version__ = \"{version}\"\n").into_bytes(),
        ),
        (format!("{dist_info}/METADATA"), metadata.into_bytes()),
        (format!("{dist_info}/WHEEL"), wheel.as_bytes().to_vec()),
    ];
    let mut record = String::new();
    for (path, data) in &files {
        record.push_str(&format!(
            "{path},sha256={},{}\n",
            record_digest(data),
            data.len()
        ));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    files.push((format!("{dist_info}/RECORD"), record.into_bytes()));
    Wheel {
        filename: format!("{pkg}-{version}-py3-none-any.whl"),
        bytes: zip_stored(&files),
    }
}

/// The digest as RECORD writes it: urlsafe base64 of the sha256, no padding.
pub fn record_digest(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data))
}

/// Lowercase hex sha256, as in the index's `#sha256=` fragments.
pub fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Zip (stored entries only: enough for wheels, and byte-for-byte reproducible)

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL: u32 = 0x0605_4b50;
/// 1980-01-01 00:00, the earliest MS-DOS date.
const DOS_DATE: u16 = (1 << 5) | 1;

fn zip_stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        // Local file header.
        put32(&mut out, LOCAL_HEADER);
        put16(&mut out, 20); // version needed: 2.0
        put16(&mut out, 0); // flags
        put16(&mut out, 0); // method: stored
        put16(&mut out, 0); // time
        put16(&mut out, DOS_DATE);
        put32(&mut out, crc);
        put32(&mut out, size);
        put32(&mut out, size);
        put16(&mut out, name.len() as u16);
        put16(&mut out, 0); // extra length
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Central directory entry.
        put32(&mut central, CENTRAL_HEADER);
        put16(&mut central, 0x0314); // made by: Unix, 2.0
        put16(&mut central, 20);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, DOS_DATE);
        put32(&mut central, crc);
        put32(&mut central, size);
        put32(&mut central, size);
        put16(&mut central, name.len() as u16);
        put16(&mut central, 0); // extra length
        put16(&mut central, 0); // comment length
        put16(&mut central, 0); // disk number
        put16(&mut central, 0); // internal attributes
        put32(&mut central, 0o100_644 << 16); // external attributes: regular file, rw-r--r--
        put32(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    put32(&mut out, END_OF_CENTRAL);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, files.len() as u16);
    put16(&mut out, files.len() as u16);
    put32(&mut out, central.len() as u32);
    put32(&mut out, central_offset);
    put16(&mut out, 0); // comment length
    out
}

/// Read back the entries of a zip written with stored entries (as [`build_wheel`] does),
/// checking each one's CRC. Panics on anything else: it is for tests.
pub fn read_zip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let end = bytes.len() - 22;
    assert_eq!(
        get32(bytes, end),
        END_OF_CENTRAL,
        "end of central directory"
    );
    let count = get16(bytes, end + 10) as usize;
    let mut at = get32(bytes, end + 16) as usize;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        assert_eq!(get32(bytes, at), CENTRAL_HEADER, "central directory entry");
        assert_eq!(get16(bytes, at + 10), 0, "stored entry");
        let crc = get32(bytes, at + 16);
        let size = get32(bytes, at + 20) as usize;
        let name_len = get16(bytes, at + 28) as usize;
        let extra_len = get16(bytes, at + 30) as usize;
        let comment_len = get16(bytes, at + 32) as usize;
        let local = get32(bytes, at + 42) as usize;
        let name = String::from_utf8(bytes[at + 46..at + 46 + name_len].to_vec()).unwrap();
        assert_eq!(get32(bytes, local), LOCAL_HEADER, "local header of {name}");
        let data_at =
            local + 30 + get16(bytes, local + 26) as usize + get16(bytes, local + 28) as usize;
        let data = bytes[data_at..data_at + size].to_vec();
        assert_eq!(crc32(&data), crc, "crc32 of {name}");
        entries.push((name, data));
        at += 46 + name_len + extra_len + comment_len;
    }
    entries
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// CRC-32 (IEEE 802.3, reflected, as zip uses it).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
