//! Docker Engine's HTTP upgrades to raw HTTP/2: `POST /grpc` (the daemon then serves gRPC and
//! kiln is the h2 client) and `POST /session` (the daemon then dials kiln's session services
//! and kiln is the h2 server). Neither is RFC 7540 h2c: after `101` both sides speak h2 with
//! prior knowledge, and the daemon's first frames may already be in the buffer that held the
//! `101` response, so they are replayed before reading from the socket again.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;

/// A socket after a `101 Switching Protocols`, with the bytes read past the response first.
pub struct Upgraded {
    stream: UnixStream,
    prefix: Vec<u8>,
    pos: usize,
}

/// How long the HTTP exchange before the upgrade may take.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST path` with `Upgrade: h2c` and `headers` on the engine's unix socket.
pub async fn upgrade(
    socket: &Path,
    path: &str,
    headers: &[(String, String)],
) -> io::Result<Upgraded> {
    tokio::time::timeout(UPGRADE_TIMEOUT, upgrade_inner(socket, path, headers))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer to POST {path} within 10 s"),
            )
        })?
}

async fn upgrade_inner(
    socket: &Path,
    path: &str,
    headers: &[(String, String)],
) -> io::Result<Upgraded> {
    let mut stream = UnixStream::connect(socket).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot connect to {}: {e}", socket.display()),
        )
    })?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        request.push_str(k);
        request.push_str(": ");
        request.push_str(v);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("POST {path}: response header too large"),
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("POST {path}: connection closed before a response"),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status_line = head.lines().next().unwrap_or_default().to_string();
    if !status_line.contains(" 101 ") {
        // Include the body if it came with the header (errors are short JSON messages).
        let body = String::from_utf8_lossy(&buf[end..]).trim().to_string();
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "POST {path} was not upgraded: {status_line}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!(": {body}")
                }
            ),
        ));
    }
    Ok(Upgraded {
        stream,
        prefix: buf[end..].to_vec(),
        pos: 0,
    })
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(out.remaining());
            let start = self.pos;
            out.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
