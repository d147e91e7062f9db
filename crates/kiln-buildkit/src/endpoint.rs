//! Where BuildKit is: Docker Engine's embedded BuildKit (HTTP upgrades on the engine's unix
//! socket), or a standalone buildkitd on a unix socket or TCP with optional mutual TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

/// Docker Engine's default socket.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A BuildKit daemon to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Docker Engine's embedded BuildKit: Control API via `POST /grpc`, session via
    /// `POST /session`.
    Docker { socket: PathBuf },
    /// buildkitd on a unix socket: gRPC directly, session through `Control.Session`.
    Unix { path: PathBuf },
    /// buildkitd on TCP, with TLS when `tls` is set.
    Tcp {
        host: String,
        port: u16,
        tls: Option<Tls>,
    },
}

/// TLS settings for a TCP endpoint: the CA that signed the daemon's certificate, and the
/// client's certificate and key for mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the daemon's certificate must have (default: the host).
    pub server_name: Option<String>,
}

impl Endpoint {
    /// Parse a builder URL: `docker://` (the engine at `DOCKER_HOST` or the default socket,
    /// resolved by the caller), `docker:///path/docker.sock`, `unix:///path` (a buildkitd
    /// socket, or the Docker Engine's — see [`Endpoint::probe`]), `tcp://host:port`.
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = |why: &str| Error::Endpoint(format!("`{url}`: {why}"));
        if let Some(rest) = url.strip_prefix("docker://") {
            let socket = if rest.is_empty() { DOCKER_SOCKET } else { rest };
            let socket = socket.strip_prefix("unix://").unwrap_or(socket);
            if !socket.starts_with('/') {
                return Err(bad("expected docker:// or docker:///path/to/docker.sock"));
            }
            return Ok(Endpoint::Docker {
                socket: PathBuf::from(socket),
            });
        }
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad("a unix socket needs an absolute path: unix:///path"));
            }
            return Ok(Endpoint::Unix {
                path: PathBuf::from(path),
            });
        }
        if let Some(rest) = url.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected tcp://host:port"))?;
            let port = port
                .parse()
                .map_err(|_| bad(&format!("`{port}` is not a port number")))?;
            if host.is_empty() {
                return Err(bad("expected tcp://host:port"));
            }
            return Ok(Endpoint::Tcp {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                tls: None,
            });
        }
        Err(bad(
            "unknown scheme; use docker://, unix:///path/buildkitd.sock or tcp://host:port",
        ))
    }

    /// A `unix://` endpoint that turns out to be a Docker Engine (it answers HTTP/1.1 `/_ping`)
    /// becomes [`Endpoint::Docker`]; anything else is returned as it is.
    pub async fn probe(self) -> Endpoint {
        match &self {
            Endpoint::Unix { path } if speaks_http(path).await => Endpoint::Docker {
                socket: path.clone(),
            },
            _ => self,
        }
    }

    /// Whether this is Docker Engine's embedded BuildKit.
    pub fn is_docker(&self) -> bool {
        matches!(self, Endpoint::Docker { .. })
    }
}

async fn speaks_http(path: &Path) -> bool {
    let attempt = async {
        let mut stream = tokio::net::UnixStream::connect(path).await.ok()?;
        stream
            .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1."))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Docker { socket } => write!(f, "docker://{}", socket.display()),
            Endpoint::Unix { path } => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { host, port, tls } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                write!(f, "tcp://{host}:{port}")?;
                if tls.is_some() {
                    write!(f, " (TLS)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_rejects_the_rest() {
        assert_eq!(
            Endpoint::parse("docker://").unwrap(),
            Endpoint::Docker {
                socket: DOCKER_SOCKET.into()
            }
        );
        assert_eq!(
            Endpoint::parse("docker:///run/d.sock").unwrap(),
            Endpoint::Docker {
                socket: "/run/d.sock".into()
            }
        );
        assert_eq!(
            Endpoint::parse("unix:///run/buildkit/buildkitd.sock").unwrap(),
            Endpoint::Unix {
                path: "/run/buildkit/buildkitd.sock".into()
            }
        );
        let tcp = Endpoint::parse("tcp://10.0.0.5:1234").unwrap();
        assert_eq!(
            tcp,
            Endpoint::Tcp {
                host: "10.0.0.5".into(),
                port: 1234,
                tls: None
            }
        );
        assert_eq!(tcp.to_string(), "tcp://10.0.0.5:1234");
        for bad in [
            "tcp://host",
            "tcp://host:http",
            "unix://rel.sock",
            "ssh://x",
            "kube://b",
        ] {
            let e = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[tokio::test]
    async fn a_socket_that_is_not_http_stays_a_buildkitd_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            // Like a gRPC server: it sends an HTTP/2 SETTINGS frame, not an HTTP/1.1 answer.
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        });
        let endpoint = Endpoint::Unix { path: path.clone() }.probe().await;
        assert_eq!(endpoint, Endpoint::Unix { path });
    }
}
