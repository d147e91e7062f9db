//! The session kiln serves to the daemon for one build: the build contexts (FileSync), the
//! local exporter's target directory (FileSend), secrets (Secrets), registry credentials
//! (Auth) and the health check the daemon polls. On Docker Engine it runs over `POST
//! /session`; the daemon is the h2 client and kiln the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt as _};
use kiln_fsutil::types::Packet;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::proto::filesync::{
    CredentialsRequest, CredentialsResponse, auth_server, file_send_server, file_sync_server,
};
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse, health_server};
use crate::proto::secrets::{GetSecretRequest, GetSecretResponse, secrets_server};

/// What the session offers.
#[derive(Debug, Clone, Default)]
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
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    transfer: Arc<Mutex<Transfer>>,
}

const METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.filesync.v1.FileSend/DiffCopy",
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
];

impl Session {
    /// Open the session on Docker Engine's `/session` endpoint and start serving it.
    pub async fn start_docker(socket: &Path, config: SessionConfig) -> Result<Session, Error> {
        let id = crate::client::new_ref();
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid".to_string(), id.clone()),
            (
                "X-Docker-Expose-Session-Name".to_string(),
                config.name.clone(),
            ),
            (
                "X-Docker-Expose-Session-Sharedkey".to_string(),
                config.shared_key.clone(),
            ),
        ];
        for m in METHODS {
            headers.push((
                "X-Docker-Expose-Session-Grpc-Method".to_string(),
                m.to_string(),
            ));
        }
        let upgraded = crate::hijack::upgrade(socket, "/session", &headers)
            .await
            .map_err(|e| Error::Session(e.to_string()))?;
        let transfer = Arc::new(Mutex::new(Transfer::default()));
        let shared = Arc::new(Shared {
            config,
            transfer: transfer.clone(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let max = crate::client::MAX_MESSAGE;
        let router = tonic::transport::Server::builder()
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
        let incoming = futures::stream::once(async move { Ok::<_, std::io::Error>(upgraded) })
            .chain(futures::stream::pending());
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = rx.await;
        }));
        Ok(Session {
            id,
            shutdown: Some(tx),
            task,
            transfer,
        })
    }

    /// The id a solve names to use this session.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the daemon pulled from the contexts so far.
    pub fn transfer(&self) -> Transfer {
        *self.transfer.lock().expect("transfer lock")
    }

    /// Stop serving and close the connection.
    pub async fn close(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
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
        let incoming = request.into_inner();
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
        Ok(Response::new(packets(rx)))
    }
}

#[tonic::async_trait]
impl file_send_server::FileSend for Services {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let Some(dest) = self.0.config.output.clone() else {
            return Err(Status::failed_precondition(
                "this session has no output directory",
            ));
        };
        std::fs::create_dir_all(&dest)
            .map_err(|e| Status::internal(format!("create {}: {e}", dest.display())))?;
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let _ = kiln_fsutil::receive(&dest, tx, incoming).await;
        });
        Ok(Response::new(packets(rx)))
    }
}

#[tonic::async_trait]
impl auth_server::Auth for Services {
    /// Anonymous: registries kiln builds from here need no login.
    async fn credentials(
        &self,
        _: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        Ok(Response::new(CredentialsResponse::default()))
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
