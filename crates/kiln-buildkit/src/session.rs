//! The session kiln serves to the daemon for one build: the build contexts (FileSync), the
//! exporters' output (FileSend: the local exporter's directory, or the one file of `tar`,
//! `docker` or `oci`, handed on as it streams), secrets (Secrets), registry credentials
//! (Auth) and the health check the daemon polls. On Docker Engine it runs over `POST
//! /session`, on a standalone buildkitd through the `Control.Session` byte tunnel; either way
//! the daemon is the h2 client and kiln the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt as _};
use kiln_fsutil::types::Packet;
use std::future::Future as _;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::control::BytesMessage;
use crate::proto::filesend::file_send_server;
use crate::proto::filesync::{
    CredentialsRequest, CredentialsResponse, auth_server, file_sync_server,
};
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse, health_server};
use crate::proto::secrets::{GetSecretRequest, GetSecretResponse, secrets_server};
use crate::raw::Frame;
use crate::{Client, Endpoint, Error};

/// The session's one connection (the upgraded `/session` socket, or kiln's end of the
/// `Control.Session` tunnel), with a switch that closes it: the server runs each connection in
/// a task of its own, so stopping the server does not end the connection; flipping the switch
/// fails its reads and writes, the server drops it, and that closes the socket or the tunnel.
struct Connection<IO> {
    io: IO,
    close: oneshot::Receiver<()>,
    closed: bool,
}

impl<IO> Connection<IO> {
    fn new(io: IO) -> (Connection<IO>, oneshot::Sender<()>) {
        let (tx, close) = oneshot::channel();
        (
            Connection {
                io,
                close,
                closed: false,
            },
            tx,
        )
    }

    /// Whether the switch was flipped (or its sender dropped); registers the waker otherwise.
    fn poll_closed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if !self.closed && std::pin::Pin::new(&mut self.close).poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "session closed")
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Connection<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.poll_closed(cx) {
            return std::task::Poll::Ready(Err(closed_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Connection<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.poll_closed(cx) {
            return std::task::Poll::Ready(Err(closed_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.poll_closed(cx) {
            return std::task::Poll::Ready(Err(closed_error()));
        }
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO> tonic::transport::server::Connected for Connection<IO> {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

/// What the session offers. Its `Debug` names the secrets but never shows their values.
#[derive(Clone, Default)]
pub struct SessionConfig {
    /// Shown by the daemon; informational.
    pub name: String,
    /// Lets the daemon reuse its previous copy of each context, so only changed files move.
    pub shared_key: String,
    /// Local sources by name (`local://NAME`): the directory and extra exclude patterns
    /// (from `.dockerignore`/`.kilnignore`).
    pub contexts: BTreeMap<String, LocalDir>,
    /// Secrets by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Where the local exporter writes, if this build exports to a directory.
    pub output: Option<PathBuf>,
    /// Where the file of a `tar`, `docker` or `oci` exporter goes, if this build exports one.
    pub output_file: Option<FileOutput>,
    /// Registry credentials the daemon asks for; `None` (the default) answers anonymously.
    pub registry_auth: Option<Arc<dyn RegistryAuth>>,
}

/// Where the session's Auth service gets registry credentials (kiln-app answers from the
/// Docker CLI config). Called off the async workers: it may run a credential helper.
pub trait RegistryAuth: Send + Sync + std::fmt::Debug {
    /// `(username, secret)` for a registry host as the daemon names it
    /// (`registry-1.docker.io`, `127.0.0.1:5000`; an identity token has an empty username), or
    /// `None` for anonymous; the error is what the daemon is told.
    fn credentials(&self, host: &str) -> Result<Option<(String, String)>, String>;
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: BTreeMap<&String, String> = self
            .secrets
            .iter()
            .map(|(id, value)| (id, format!("<{} bytes>", value.len())))
            .collect();
        f.debug_struct("SessionConfig")
            .field("name", &self.name)
            .field("shared_key", &self.shared_key)
            .field("contexts", &self.contexts)
            .field("secrets", &secrets)
            .field("output", &self.output)
            .field("output_file", &self.output_file)
            .field("registry_auth", &self.registry_auth)
            .finish()
    }
}

#[cfg(test)]
mod debug_tests {
    #[test]
    fn debug_never_shows_a_secret_value() {
        let mut config = super::SessionConfig::default();
        config
            .secrets
            .insert("token".into(), b"s3cr3t-value".to_vec());
        let shown = format!("{config:?}");
        assert!(shown.contains("token"), "{shown}");
        assert!(shown.contains("<12 bytes>"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}

/// The receiving end of [`FileOutput`]: the exported file's bytes in order, chunk by chunk;
/// an `Err` says the stream broke there (the file is incomplete). It ends after the last chunk,
/// or without any when the daemon sent no file (see [`FileOutput::close`]).
pub type FileChunks = mpsc::Receiver<FileChunk>;

/// One chunk of an exported file, or why the stream broke there.
pub type FileChunk = Result<Vec<u8>, String>;

/// The one file an exporter that writes a file (`tar`, `docker`, `oci`) sends through the
/// session: FileSend with raw bytes instead of fsutil packets, handed on as it arrives, so it
/// need not fit in memory or on disk.
#[derive(Clone)]
pub struct FileOutput(Arc<Mutex<Option<mpsc::Sender<FileChunk>>>>);

impl FileOutput {
    /// A file output and the chunks that will arrive on it.
    pub fn channel() -> (FileOutput, FileChunks) {
        let (tx, rx) = mpsc::channel(64);
        (FileOutput(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// No file will come any more (the solve is over): a receiver still waiting for one ends.
    pub fn close(&self) {
        self.take();
    }

    /// The sender, for the one stream that carries the file.
    fn take(&self) -> Option<mpsc::Sender<FileChunk>> {
        self.0.lock().expect("file output lock").take()
    }
}

impl std::fmt::Debug for FileOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileOutput")
    }
}

#[derive(Debug, Clone, Default)]
pub struct LocalDir {
    pub path: PathBuf,
    pub exclude: Vec<String>,
}

/// Bytes and files the daemon pulled from the contexts in this session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub entries: usize,
    pub files: usize,
    pub bytes: u64,
}

/// A running session; [`Session::close`] ends it.
pub struct Session {
    id: String,
    /// The server of the session services, on the one connection the daemon dialled.
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// Closes the connection (see [`Connection`]).
    close: Option<oneshot::Sender<()>>,
    /// On the `Control.Session` tunnel: the pump that copies the daemon's bytes to the server;
    /// it ends when the daemon ends the stream.
    from_daemon: Option<tokio::task::JoinHandle<()>>,
    transfer: Arc<Mutex<Transfer>>,
}

/// How long [`Session::close`] waits for the daemon to end the `Control.Session` stream after
/// kiln ended its side (a round trip; the daemon answers at once).
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Flow control on the session connection, where the daemon is the h2 client. h2 (0.4.16 and
/// later) closes a connection with `GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames"` once the
/// small (< 256 byte) DATA frames it holds unread cost more than a budget of half the connection
/// window (the daemon then fails the build with "transport is closing"). fsutil's sender, in
/// the local exporter's FileSend, sends one STAT per file and one tiny end-of-file DATA packet
/// per file, each a separate frame, as fast as the stream window lets it, faster than any
/// receiver creates files; so a full stream window of them must fit in the budget. The
/// smallest packet is about 10 bytes and costs about 250, so the connection window is 64 times
/// the stream window: the budget (32 MiB) covers a full 1 MiB stream window of such frames.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 64 * STREAM_WINDOW;

const METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.filesync.v1.FileSend/DiffCopy",
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
];

impl Session {
    /// Open a session with `client`'s daemon and start serving it: `POST /session` on Docker
    /// Engine, the `Control.Session` byte tunnel on a standalone buildkitd.
    pub async fn start(client: &Client, config: SessionConfig) -> Result<Session, Error> {
        match client.endpoint() {
            Endpoint::Docker { socket } => {
                Session::start_docker(socket, client.keepalive(), config).await
            }
            _ => Session::start_tunnel(client, config).await,
        }
    }

    /// The session headers: id, name, shared key and one entry per method served.
    fn headers(id: &str, config: &SessionConfig) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid", id.to_string()),
            ("X-Docker-Expose-Session-Name", config.name.clone()),
            (
                "X-Docker-Expose-Session-Sharedkey",
                config.shared_key.clone(),
            ),
        ];
        for m in METHODS {
            headers.push(("X-Docker-Expose-Session-Grpc-Method", m.to_string()));
        }
        headers
    }

    /// Open the session on Docker Engine's `/session` endpoint and start serving it, pinging
    /// the daemon after `keepalive` of silence (as [`Client::connect`] does).
    pub async fn start_docker(
        socket: &Path,
        keepalive: std::time::Duration,
        config: SessionConfig,
    ) -> Result<Session, Error> {
        let id = crate::client::new_ref();
        let headers: Vec<(String, String)> = Session::headers(&id, &config)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let upgraded = crate::hijack::upgrade(socket, "/session", &headers)
            .await
            .map_err(|e| Error::Session(e.to_string()))?;
        Ok(Session::serve(id, config, keepalive, upgraded))
    }

    /// Open the session as `Control.Session`, a stream of byte chunks that carries an h2
    /// connection on which the daemon is the client, and start serving it. The headers travel
    /// as gRPC metadata with lower-case keys.
    async fn start_tunnel(client: &Client, config: SessionConfig) -> Result<Session, Error> {
        let id = crate::client::new_ref();
        let (to_daemon, outgoing) = mpsc::channel::<BytesMessage>(16);
        let mut request = Request::new(ReceiverStream::new(outgoing));
        for (key, value) in Session::headers(&id, &config) {
            let value = value
                .parse()
                .map_err(|_| Error::Session(format!("{key}: not a valid header value")))?;
            let key = tonic::metadata::MetadataKey::from_bytes(key.to_lowercase().as_bytes())
                .expect("session header names are valid metadata keys");
            request.metadata_mut().append(key, value);
        }
        let mut incoming = client
            .control()
            .session(request)
            .await
            .map_err(
                |s| match Error::from_status("open session", s, client.keepalive()) {
                    // The daemon is gone: say so as such, not as a session problem.
                    lost @ Error::Lost { .. } => lost,
                    other => Error::Session(other.to_string()),
                },
            )?
            .into_inner();
        // The server side of the tunnel's h2 connection is one end of an in-memory pipe; two
        // pumps move bytes between the other end and the gRPC stream.
        let (ours, pipe) = tokio::io::duplex(1 << 20);
        let (mut pipe_read, mut pipe_write) = tokio::io::split(pipe);
        let from_daemon = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(Ok(message)) = incoming.next().await {
                if pipe_write.write_all(&message.data).await.is_err() {
                    break;
                }
            }
            let _ = pipe_write.shutdown().await;
        });
        // When the server's end of the pipe is dropped (the session closes), this reads EOF and
        // drops `to_daemon`, which ends kiln's side of the stream (the Go client's CloseSend).
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match pipe_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = buffer[..n].to_vec();
                        if to_daemon.send(BytesMessage { data }).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut session = Session::serve(id, config, client.keepalive(), ours);
        session.from_daemon = Some(from_daemon);
        Ok(session)
    }

    /// Serve the session services on `io`, one h2 connection the daemon dials into, pinging
    /// the daemon after `keepalive` of silence.
    fn serve<IO>(
        id: String,
        config: SessionConfig,
        keepalive: std::time::Duration,
        io: IO,
    ) -> Session
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (io, close) = Connection::new(io);
        let transfer = Arc::new(Mutex::new(Transfer::default()));
        let shared = Arc::new(Shared {
            config,
            transfer: transfer.clone(),
        });
        let max = crate::client::MAX_MESSAGE;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(keepalive))
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .add_service(health_server::HealthServer::new(Services(shared.clone())))
            .add_service(
                file_sync_server::FileSyncServer::new(Services(shared.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(
                file_send_server::FileSendServer::new(Services(shared.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .add_service(auth_server::AuthServer::new(Services(shared.clone())))
            .add_service(secrets_server::SecretsServer::new(Services(shared)));
        // One connection, then nothing: the server lives until `close`.
        let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(io) })
            .chain(futures::stream::pending());
        let server = tokio::spawn(router.serve_with_incoming(incoming));
        Session {
            id,
            server,
            close: Some(close),
            from_daemon: None,
            transfer,
        }
    }

    /// The id a solve names to use this session.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the daemon pulled from the contexts so far.
    pub fn transfer(&self) -> Transfer {
        *self.transfer.lock().expect("transfer lock")
    }

    /// Stop serving and close the connection, as BuildKit's Go client does: no graceful h2
    /// shutdown (over the `Control.Session` tunnel the daemon never completes one, and every
    /// close waited out a timer), but the server stopped and its connection dropped. On Docker
    /// Engine's `/session` that closes the socket; on the tunnel it ends kiln's side of the
    /// stream, and kiln waits (briefly) for the daemon to end its side too, so the daemon has
    /// let go of the session when this returns.
    pub async fn close(mut self) {
        self.stop();
        if let Some(mut from_daemon) = self.from_daemon.take() {
            if tokio::time::timeout(CLOSE_WAIT, &mut from_daemon)
                .await
                .is_err()
            {
                // Dropping the stream cancels the call.
                from_daemon.abort();
            }
        }
    }
}

impl Session {
    /// Close the connection and stop the server (without waiting for anything).
    fn stop(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        self.server.abort();
    }
}

/// A session dropped without [`Session::close`] (an error or Ctrl-C on the way) stops too.
impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
        if let Some(from_daemon) = self.from_daemon.take() {
            from_daemon.abort();
        }
    }
}

struct Shared {
    config: SessionConfig,
    transfer: Arc<Mutex<Transfer>>,
}

#[derive(Clone)]
struct Services(Arc<Shared>);

type PacketStream = std::pin::Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

fn metadata_values(request: &Request<Streaming<Packet>>, key: &str) -> Vec<String> {
    request
        .metadata()
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

fn packets(rx: mpsc::Receiver<Packet>) -> PacketStream {
    Box::pin(ReceiverStream::new(rx).map(Ok))
}

/// `KILN_RECORD_FSUTIL=<dir>`: a debugging and fixture-recording aid. When set, every
/// DiffCopy stream of this process (FileSync, the context upload, and FileSend, the local
/// exporter) is copied to two files in `<dir>`, one per direction:
/// `<service>-<dir-name>-<n>.daemon-to-kiln.bin` and `….kiln-to-daemon.bin`, where
/// `<service>` is `filesync` or `filesend`, `<dir-name>` the context's name (`output` for
/// FileSend) and `<n>` counts the streams of this process from 1. Each file is a sequence of
/// packets as they travel in the gRPC messages (protobuf-encoded `fsutil.types.Packet`), each
/// preceded by its length as a 4-byte big-endian integer. The fixtures of
/// `crates/kiln-fsutil/tests/fixtures/` are recorded this way (see its README).
pub const RECORD_ENV: &str = "KILN_RECORD_FSUTIL";

/// One direction of a recorded stream.
#[derive(Clone)]
struct Recording(Arc<Mutex<std::fs::File>>);

impl Recording {
    /// The two files of a new recording (daemon to kiln, kiln to daemon), when
    /// [`RECORD_ENV`] is set and they can be created.
    fn start(service: &str, name: &str) -> Option<(Recording, Recording)> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static STREAMS: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(std::env::var_os(RECORD_ENV)?);
        let n = STREAMS.fetch_add(1, Ordering::Relaxed) + 1;
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let open = |direction: &str| {
            let path = dir.join(format!("{service}-{name}-{n}.{direction}.bin"));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::File::create(&path))
                .map(|f| Recording(Arc::new(Mutex::new(f))))
                .map_err(|e| eprintln!("{RECORD_ENV}: {}: {e}", path.display()))
                .ok()
        };
        Some((open("daemon-to-kiln")?, open("kiln-to-daemon")?))
    }

    fn write(&self, packet: &Packet) {
        use prost::Message as _;
        use std::io::Write as _;
        let body = packet.encode_to_vec();
        let mut record = (body.len() as u32).to_be_bytes().to_vec();
        record.extend_from_slice(&body);
        let _ = self.0.lock().expect("recording lock").write_all(&record);
    }
}

/// The incoming packets, copied to `recording` as they are read.
fn record_incoming<S>(incoming: S, recording: Option<Recording>) -> PacketStream
where
    S: Stream<Item = Result<Packet, Status>> + Send + 'static,
{
    match recording {
        None => Box::pin(incoming),
        Some(r) => Box::pin(incoming.inspect(move |p| {
            if let Ok(p) = p {
                r.write(p);
            }
        })),
    }
}

/// The outgoing packets, copied to `recording` as they leave.
fn record_outgoing(rx: mpsc::Receiver<Packet>, recording: Option<Recording>) -> PacketStream {
    match recording {
        None => packets(rx),
        Some(r) => Box::pin(ReceiverStream::new(rx).map(move |p| {
            r.write(&p);
            Ok(p)
        })),
    }
}

#[tonic::async_trait]
impl health_server::Health for Services {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }
}

#[tonic::async_trait]
impl file_sync_server::FileSync for Services {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let name = metadata_values(&request, "dir-name")
            .into_iter()
            .next()
            .unwrap_or_default();
        let Some(dir) = self.0.config.contexts.get(&name).cloned() else {
            return Err(Status::not_found(format!(
                "no local directory named `{name}` in this session"
            )));
        };
        let mut filter = kiln_fsutil::Filter {
            include: metadata_values(&request, "include-patterns"),
            exclude: metadata_values(&request, "exclude-patterns"),
        };
        filter.exclude.extend(dir.exclude.iter().cloned());
        let root = dir.path.clone();
        let entries = tokio::task::spawn_blocking(move || kiln_fsutil::walk(&root, &filter))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("reading {}: {e}", dir.path.display())))?;
        let (from_daemon, to_daemon) = Recording::start("filesync", &name).unzip();
        let incoming = record_incoming(request.into_inner(), from_daemon);
        let (tx, rx) = mpsc::channel(64);
        let transfer = self.0.transfer.clone();
        tokio::spawn(async move {
            if let Ok(stats) = kiln_fsutil::send(&entries, tx, incoming).await {
                let mut t = transfer.lock().expect("transfer lock");
                t.entries += stats.entries;
                t.files += stats.files_sent;
                t.bytes += stats.bytes_sent;
            }
        });
        Ok(Response::new(record_outgoing(rx, to_daemon)))
    }
}

type FrameStream = std::pin::Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl file_send_server::FileSend for Services {
    type DiffCopyStream = FrameStream;

    /// The exporter's output: a file (raw `BytesMessage` chunks) when the session has a file
    /// output, else a directory tree (fsutil packets, kiln answering with its own).
    async fn diff_copy(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        if let Some(file) = &self.0.config.output_file {
            let Some(tx) = file.take() else {
                return Err(Status::already_exists("the output file was already sent"));
            };
            return Ok(Response::new(receive_file(request.into_inner(), tx)));
        }
        let Some(dest) = self.0.config.output.clone() else {
            return Err(Status::failed_precondition(
                "this session has no output directory",
            ));
        };
        std::fs::create_dir_all(&dest)
            .map_err(|e| Status::internal(format!("create {}: {e}", dest.display())))?;
        let packets = request.into_inner().map(|frame| {
            frame.and_then(|Frame(data)| {
                <Packet as prost::Message>::decode(data)
                    .map_err(|e| Status::invalid_argument(format!("not an fsutil packet: {e}")))
            })
        });
        let (from_daemon, to_daemon) = Recording::start("filesend", "output").unzip();
        let incoming = record_incoming(packets, from_daemon);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let _ = kiln_fsutil::receive(&dest, tx, incoming).await;
        });
        let outgoing = record_outgoing(rx, to_daemon)
            .map(|packet| packet.map(|p| Frame(prost::Message::encode_to_vec(&p).into())));
        Ok(Response::new(Box::pin(outgoing)))
    }
}

/// Hand the chunks of an exported file on to `tx` as they arrive. The daemon sends nothing
/// back; the call ends (successfully) once the whole file has been handed on, or with the
/// error that broke it.
fn receive_file(mut incoming: Streaming<Frame>, tx: mpsc::Sender<FileChunk>) -> FrameStream {
    let (done_tx, done_rx) = mpsc::channel::<Result<Frame, Status>>(1);
    tokio::spawn(async move {
        loop {
            let chunk = match incoming.next().await {
                None => break,
                Some(Ok(Frame(data))) => match <BytesMessage as prost::Message>::decode(data) {
                    Ok(message) => Ok(message.data),
                    Err(e) => Err(format!("not a file chunk: {e}")),
                },
                Some(Err(status)) => Err(status.message().to_string()),
            };
            let failed = chunk.as_ref().err().cloned();
            if tx.send(chunk).await.is_err() {
                let _ = done_tx
                    .send(Err(Status::aborted("the output file is no longer wanted")))
                    .await;
                return;
            }
            if let Some(message) = failed {
                let _ = done_tx.send(Err(Status::aborted(message))).await;
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(done_rx))
}

#[tonic::async_trait]
impl auth_server::Auth for Services {
    /// From [`SessionConfig::registry_auth`]; anonymous when it has nothing for the host.
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        let found = match self.0.config.registry_auth.clone() {
            // A credential helper is a child process: keep it off the async workers.
            Some(auth) => tokio::task::spawn_blocking(move || auth.credentials(&host))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::unknown)?,
            None => None,
        };
        let (username, secret) = found.unwrap_or_default();
        Ok(Response::new(CredentialsResponse { username, secret }))
    }
}

#[tonic::async_trait]
impl secrets_server::Secrets for Services {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        match self.0.config.secrets.get(&id) {
            Some(data) => Ok(Response::new(GetSecretResponse { data: data.clone() })),
            None => Err(Status::not_found(format!(
                "secret `{id}` is not provided by this session"
            ))),
        }
    }
}
