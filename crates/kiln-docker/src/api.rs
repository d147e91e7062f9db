//! A minimal HTTP/1.1 client for the Docker Engine API over a unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to the Docker Engine at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("Docker Engine API {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("Docker Engine API {path}: malformed response: {reason}")]
    Malformed { path: String, reason: String },
    #[error("Docker Engine API {path}: HTTP {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    #[serde(rename = "Os", default)]
    pub os: String,
    #[serde(rename = "Arch", default)]
    pub arch: String,
}

/// The parts of `GET /images/{name}/json` kiln uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    /// The image id: the config digest.
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "RepoDigests", default)]
    pub repo_digests: Option<Vec<String>>,
    #[serde(rename = "Config", default)]
    pub config: Option<serde_json::Value>,
}

/// The Docker Engine API on one unix socket.
#[derive(Debug, Clone)]
pub struct Api {
    socket: PathBuf,
    timeout: Duration,
}

impl Api {
    pub fn new(socket: impl Into<PathBuf>) -> Api {
        Api {
            socket: socket.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// The same API with `timeout` for reading each response instead of 30 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Api {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send one request (`Connection: close`) and read the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ApiError> {
        self.request_with(method, path, body, &[])
    }

    /// [`Api::request`] with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ApiError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| ApiError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let io = |source| ApiError::Io {
            path: path.to_string(),
            source,
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io)?;
        if let Some(body) = body {
            stream.write_all(body).map_err(io)?;
        }
        parse_response(BufReader::new(stream), path)
    }

    /// Like [`Api::request`], but a non-2xx status is an error carrying the daemon's message.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ApiError> {
        let response = self.request(method, path, body)?;
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        Err(status_error(path, &response))
    }

    /// `GET /_ping`: the API version the daemon speaks.
    pub fn ping(&self) -> Result<String, ApiError> {
        let response = self.call("GET", "/_ping", None)?;
        Ok(response
            .header("Api-Version")
            .unwrap_or_default()
            .to_string())
    }

    pub fn version(&self) -> Result<VersionInfo, ApiError> {
        let response = self.call("GET", "/version", None)?;
        serde_json::from_slice(&response.body).map_err(|e| ApiError::Malformed {
            path: "/version".into(),
            reason: e.to_string(),
        })
    }

    /// The image named `name` in the engine's store, if present.
    pub fn image(&self, name: &str) -> Result<Option<ImageInfo>, ApiError> {
        let path = format!("/images/{}/json", escape_path(name));
        match self.call("GET", &path, None) {
            Ok(response) => serde_json::from_slice(&response.body)
                .map(Some)
                .map_err(|e| ApiError::Malformed {
                    path,
                    reason: e.to_string(),
                }),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Api {
    /// `POST /images/{image}/tag?repo=…&tag=…`: `image` (a name or an image id) is also named
    /// `repo:tag` (`docker tag`); a tag that named another image moves.
    pub fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), ApiError> {
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            escape_path(image),
            escape_path(repo),
            escape_path(tag)
        );
        self.call("POST", &path, None).map(|_| ())
    }

    /// `POST /images/{name}/push`: push `image` (`name:tag`) to its registry with
    /// `registry_auth` (the base64url JSON the engine expects in `X-Registry-Auth`; `e30` is
    /// `{}`, anonymous). Returns the pushed manifest digest the engine reports.
    pub fn push(&self, image: &str, registry_auth: &str) -> Result<String, ApiError> {
        let (name, tag) = match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (image, "latest"),
        };
        let path = format!(
            "/images/{}/push?tag={}",
            escape_path(name),
            escape_path(tag)
        );
        let response =
            self.request_with("POST", &path, None, &[("X-Registry-Auth", registry_auth)])?;
        if !(200..300).contains(&response.status) {
            return Err(ApiError::Status {
                path,
                status: response.status,
                message: String::from_utf8_lossy(&response.body).trim().to_string(),
            });
        }
        // A stream of JSON messages: progress, then `{"aux":{"Tag","Digest","Size"}}`, or an
        // `{"error": …}` when the push failed after it started.
        let mut digest = None;
        for line in response.body.split(|b| *b == b'\n') {
            let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(error) = message.get("error").and_then(|e| e.as_str()) {
                return Err(ApiError::Status {
                    path,
                    status: 500,
                    message: error.to_string(),
                });
            }
            if let Some(d) = message.pointer("/aux/Digest").and_then(|d| d.as_str()) {
                digest = Some(d.to_string());
            }
        }
        digest.ok_or_else(|| ApiError::Malformed {
            path,
            reason: "the push finished without reporting a digest".to_string(),
        })
    }
}

/// How long `load` waits for the engine's answer once the whole tarball is sent: the engine
/// answers only after it has imported every layer.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

impl Api {
    /// A connection for a request that streams an image (save, load): the long read timeout.
    fn long_stream(&self, path: &str) -> Result<UnixStream, ApiError> {
        let stream = UnixStream::connect(&self.socket).map_err(|source| ApiError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        stream
            .set_read_timeout(Some(LOAD_TIMEOUT))
            .map_err(|source| ApiError::Io {
                path: path.to_string(),
                source,
            })?;
        Ok(stream)
    }

    /// `GET /images/{name}/get` (`docker save`): the image as a `docker load`-able tarball,
    /// written to `out` as it streams; returns its size in bytes.
    pub fn save(&self, image: &str, out: &mut dyn Write) -> Result<u64, ApiError> {
        let path = format!("/images/{}/get", escape_path(image));
        let stream = self.long_stream(&path)?;
        let io = |source| ApiError::Io {
            path: path.clone(),
            source,
        };
        (&stream)
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .map_err(io)?;
        let mut reader = BufReader::with_capacity(256 * 1024, &stream);
        let (status, headers) = read_head(&mut reader, &path)?;
        if !(200..300).contains(&status) {
            let mut body = Vec::new();
            copy_body(&mut reader, &headers, &path, &mut body)?;
            return Err(status_error(
                &path,
                &Response {
                    status,
                    headers,
                    body,
                },
            ));
        }
        copy_body(&mut reader, &headers, &path, out)
    }

    /// `POST /images/load`: load an image tarball (`docker save` format, what BuildKit's `docker`
    /// exporter writes), sent as `chunks` arrive (chunked transfer encoding: the tarball need not
    /// be in memory or on disk). An `Err` chunk aborts the upload, so the engine loads nothing.
    /// Returns what the engine reports loading (`Loaded image: NAME`, `Loaded image ID: ID`).
    pub fn load<I>(&self, chunks: I) -> Result<Vec<String>, ApiError>
    where
        I: IntoIterator<Item = Result<Vec<u8>, String>>,
    {
        let path = "/images/load?quiet=1";
        let stream = self.long_stream(path)?;
        let io = |source| ApiError::Io {
            path: path.to_string(),
            source,
        };
        let mut writer = std::io::BufWriter::with_capacity(256 * 1024, &stream);
        let sent = (|| -> Result<Result<(), String>, std::io::Error> {
            writer.write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\
                     Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            )?;
            for chunk in chunks {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(message) => return Ok(Err(message)),
                };
                if chunk.is_empty() {
                    continue;
                }
                writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                writer.write_all(&chunk)?;
                writer.write_all(b"\r\n")?;
            }
            writer.write_all(b"0\r\n\r\n")?;
            writer.flush()?;
            Ok(Ok(()))
        })();
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                // Without the last chunk the engine sees a truncated upload and loads nothing.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Err(ApiError::Malformed {
                    path: path.to_string(),
                    reason: format!("the image tarball is incomplete: {message}"),
                });
            }
            // The engine may have refused the upload early: its answer says why.
            Err(e) => {
                return match parse_response(BufReader::new(&stream), path) {
                    Ok(response) if !(200..300).contains(&response.status) => {
                        Err(status_error(path, &response))
                    }
                    _ => Err(io(e)),
                };
            }
        }
        drop(writer);
        let response = parse_response(BufReader::new(&stream), path)?;
        if !(200..300).contains(&response.status) {
            return Err(status_error(path, &response));
        }
        // A stream of JSON messages: `{"stream": "Loaded image: …\n"}`, or `{"error": …}`.
        let mut loaded = Vec::new();
        for line in response.body.split(|b| *b == b'\n') {
            let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(error) = message.get("error").and_then(|e| e.as_str()) {
                return Err(ApiError::Status {
                    path: path.to_string(),
                    status: 500,
                    message: error.to_string(),
                });
            }
            if let Some(text) = message.get("stream").and_then(|s| s.as_str()) {
                loaded.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
        }
        Ok(loaded)
    }
}

/// The engine's message of a non-2xx response.
fn status_error(path: &str, response: &Response) -> ApiError {
    let message = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_string());
    ApiError::Status {
        path: path.to_string(),
        status: response.status,
        message,
    }
}

/// Percent-encode what may not appear raw in a path segment (`/` stays: image names have it).
fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn parse_response<R: BufRead>(mut reader: R, path: &str) -> Result<Response, ApiError> {
    let (status, headers) = read_head(&mut reader, path)?;
    let mut body = Vec::new();
    copy_body(&mut reader, &headers, path, &mut body)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The status and headers of a response.
fn read_head<R: BufRead>(
    reader: &mut R,
    path: &str,
) -> Result<(u16, Vec<(String, String)>), ApiError> {
    let malformed = |reason: &str| ApiError::Malformed {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let io = |source| ApiError::Io {
        path: path.to_string(),
        source,
    };
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed(&format!("status line {:?}", line.trim_end())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(malformed("headers end early"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Copy a response body (chunked, sized or up to the end) to `out` as it arrives; returns how
/// many bytes it had.
fn copy_body<R: BufRead>(
    reader: &mut R,
    headers: &[(String, String)],
    path: &str,
    out: &mut dyn Write,
) -> Result<u64, ApiError> {
    let malformed = |reason: &str| ApiError::Malformed {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let io = |source| ApiError::Io {
        path: path.to_string(),
        source,
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut line = String::new();
    if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut total = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(io)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| malformed("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let copied = std::io::copy(&mut Read::take(&mut *reader, size), out).map_err(io)?;
            if copied != size {
                return Err(malformed("the body ends inside a chunk"));
            }
            total += size;
            line.clear();
            reader.read_line(&mut line).map_err(io)?;
        }
        Ok(total)
    } else if let Some(len) = header("Content-Length").and_then(|v| v.parse::<u64>().ok()) {
        let copied = std::io::copy(&mut Read::take(&mut *reader, len), out).map_err(io)?;
        if copied != len {
            return Err(malformed("the body is shorter than its Content-Length"));
        }
        Ok(len)
    } else {
        std::io::copy(reader, out).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_sized_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n3\r\n!!!\r\n0\r\n\r\n";
        let r = parse_response(&raw[..], "/_ping").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("api-version")),
            (200, &b"OK!!!"[..], Some("1.41"))
        );
        let raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!extra";
        let r = parse_response(&raw[..], "/x").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope!"[..]));
        assert!(parse_response(&b"garbage"[..], "/x").is_err());
    }

    #[test]
    fn image_names_are_escaped_but_keep_slashes() {
        assert_eq!(escape_path("127.0.0.1:5000/a/b:c"), "127.0.0.1:5000/a/b:c");
        assert_eq!(escape_path("a b?"), "a%20b%3F");
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let err = Api::new("/nonexistent/docker.sock").ping().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot connect to the Docker Engine at /nonexistent/docker.sock"),
            "{err}"
        );
    }
}
