//! The Control API: connect, list workers, solve with an exporter while following the
//! daemon's status stream.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::endpoint::{Endpoint, Tls};
use crate::gateway::{Gateway, Returned};
use crate::proto::control::{self, control_client::ControlClient};
use crate::{Error, Event};

/// 16 MiB, what BuildKit itself allows (tonic's default is 4 MiB).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// How long the status stream is still followed once the solve has returned (see
/// `Client::run_job`).
const STATUS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a job may take to end once its frontend has failed (its `Return` carried the
/// error, so the daemon ends it at once) before the frontend's error is reported alone.
const JOB_END_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A connection to one daemon's Control API.
#[derive(Clone)]
pub struct Client {
    control: ControlClient<Channel>,
    channel: Channel,
    endpoint: Endpoint,
    keepalive: std::time::Duration,
}

/// One solve: the LLB, what to export it to, and the session serving its local sources.
#[derive(Debug, Clone, Default)]
pub struct SolveRequest {
    pub definition: kiln_llb::Definition,
    /// Exporter name (`moby`, `local`, `tar`) and attributes; `None` keeps the result in the
    /// cache only.
    pub exporter: Option<(String, BTreeMap<String, String>)>,
    pub session: Option<String>,
    pub entitlements: Vec<String>,
    /// Cache exporters (`inline`, `registry`, …) with their attributes (`ref`, `mode`).
    pub cache_exports: Vec<(String, BTreeMap<String, String>)>,
    /// Cache importers (`registry` with `ref`): where the solve may find its steps done.
    pub cache_imports: Vec<(String, BTreeMap<String, String>)>,
}

/// A worker the daemon reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub id: String,
    /// `os/arch[/variant]` (`linux/amd64/v2`), in the daemon's order.
    pub platforms: Vec<String>,
    /// The worker's labels (executor, snapshotter, network, …; none on Docker 20.10).
    pub labels: BTreeMap<String, String>,
    /// The BuildKit version the worker reports (newer daemons).
    pub buildkit_version: Option<String>,
}

/// What the daemon says it is (`Control.Info`, BuildKit v0.11 and later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    /// e.g. `github.com/moby/buildkit`.
    pub package: String,
    /// e.g. `v0.24.0`.
    pub version: String,
    pub revision: String,
}

/// A new, unique job reference: 25 base36 characters, like the Go client's random ids.
pub fn new_ref() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is randomly keyed per process; hashing a counter gives distinct values.
    let state = std::collections::hash_map::RandomState::new();
    let half = |salt: u64| {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u64(salt);
        u128::from(h.finish())
    };
    let mut n = (half(1) << 64) | half(2);
    (0..25)
        .map(|_| {
            let d = (n % 36) as u32;
            n /= 36;
            char::from_digit(d, 36).expect("digit < 36")
        })
        .collect()
}

impl Client {
    /// Connect to Docker Engine's embedded BuildKit through `POST /grpc` on its unix socket,
    /// pinging it after `keepalive` of silence (see [`DEFAULT_KEEPALIVE`]).
    pub async fn connect_docker(
        socket: &Path,
        keepalive: std::time::Duration,
    ) -> Result<Client, Error> {
        Client::connect(
            &Endpoint::Docker {
                socket: socket.to_path_buf(),
            },
            keepalive,
        )
        .await
    }

    /// Connect to `endpoint`'s Control API (and, on the same connection, its LLB bridge). The
    /// connection, and every session opened through it, pings the daemon after `keepalive`
    /// of silence and fails when the answer takes longer than that (see
    /// [`DEFAULT_KEEPALIVE`]).
    pub async fn connect(
        endpoint: &Endpoint,
        keepalive: std::time::Duration,
    ) -> Result<Client, Error> {
        let failed = |e: &dyn std::error::Error| Error::Connect {
            endpoint: endpoint.to_string(),
            reason: crate::error::chain(e),
        };
        let channel = match endpoint {
            Endpoint::Docker { socket } => {
                let path = socket.clone();
                let connector = tower::service_fn(move |_: http::Uri| {
                    let path = path.clone();
                    async move {
                        crate::hijack::upgrade(&path, "/grpc", &[])
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    }
                });
                with_keepalive(
                    keepalive,
                    tonic::transport::Endpoint::from_static("http://docker.invalid"),
                )
                .connect_with_connector(connector)
                .await
                .map_err(|e| failed(&e))?
            }
            Endpoint::Unix { path } => {
                let path = path.clone();
                let connector = tower::service_fn(move |_: http::Uri| {
                    let path = path.clone();
                    async move {
                        tokio::net::UnixStream::connect(&path)
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    }
                });
                with_keepalive(
                    keepalive,
                    tonic::transport::Endpoint::from_static("http://buildkitd.invalid"),
                )
                .connect_with_connector(connector)
                .await
                .map_err(|e| failed(&e))?
            }
            Endpoint::Tcp { host, port, tls } => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                let host_part = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let mut builder = with_keepalive(
                    keepalive,
                    tonic::transport::Endpoint::from_shared(format!(
                        "{scheme}://{host_part}:{port}"
                    ))
                    .map_err(|e| failed(&e))?,
                )
                .connect_timeout(std::time::Duration::from_secs(10));
                if let Some(tls) = tls {
                    builder = builder
                        .tls_config(tls_config(host, tls)?)
                        .map_err(|e| failed(&e))?;
                }
                builder.connect().await.map_err(|e| failed(&e))?
            }
        };
        let control = ControlClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Client {
            control,
            channel,
            endpoint: endpoint.clone(),
            keepalive,
        })
    }

    /// The daemon this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How long its connection may stay silent before kiln pings the daemon (as connected).
    pub fn keepalive(&self) -> std::time::Duration {
        self.keepalive
    }

    pub(crate) fn control(&self) -> ControlClient<Channel> {
        self.control.clone()
    }

    pub async fn workers(&self) -> Result<Vec<Worker>, Error> {
        let response = self
            .control
            .clone()
            .list_workers(control::ListWorkersRequest::default())
            .await
            .map_err(|s| Error::from_status("list workers", s, self.keepalive))?;
        Ok(response
            .into_inner()
            .record
            .into_iter()
            .map(|w| Worker {
                id: w.id,
                platforms: w.platforms.iter().map(platform_name).collect(),
                labels: w.labels,
                buildkit_version: w
                    .buildkit_version
                    .map(|v| v.version)
                    .filter(|v| !v.is_empty()),
            })
            .collect())
    }

    /// The daemon's name and version, or `None` for a daemon without the `Info` call (BuildKit
    /// before v0.11, such as Docker 20.10's v0.8).
    pub async fn info(&self) -> Result<Option<DaemonInfo>, Error> {
        match self.control.clone().info(control::InfoRequest {}).await {
            Ok(response) => Ok(response.into_inner().buildkit_version.map(|v| DaemonInfo {
                package: v.package,
                version: v.version,
                revision: v.revision,
            })),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(Error::from_status("info", status, self.keepalive)),
        }
    }

    /// Whether the daemon grants `entitlement` (`network.host`, `security.insecure`): the daemon
    /// reports this nowhere, so ask it to solve nothing with the entitlement. `Ok(false)` when it
    /// refuses the entitlement, an error when it fails otherwise.
    pub async fn grants(&self, entitlement: &str) -> Result<bool, Error> {
        let probe = control::SolveRequest {
            r#ref: new_ref(),
            // An empty definition: nothing to build (no definition at all would make kiln the
            // job's frontend).
            definition: Some(kiln_llb::pb::Definition::default()),
            entitlements: vec![entitlement.to_string()],
            internal: true,
            ..control::SolveRequest::default()
        };
        match self.control.clone().solve(probe).await {
            Ok(_) => Ok(true),
            Err(status) if status.message().contains("is not allowed") => Ok(false),
            Err(status) => Err(Error::from_status(
                "entitlement check",
                status,
                self.keepalive,
            )),
        }
    }

    /// Solve `request`, forwarding the daemon's progress to `events`; returns the exporter's
    /// response (`containerimage.digest` is the image id for Docker's `moby` exporter).
    pub async fn solve(
        &self,
        request: SolveRequest,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let job = new_ref();
        let solve = request.to_control(&job, Some(request.definition.to_pb()));
        self.run_job(solve, events).await
    }

    /// Run a job with kiln as its frontend: `frontend` gets the job's [`Gateway`] to resolve
    /// images, solve and read results, and returns what the daemon should export
    /// (`request.definition` is not used). Returns `frontend`'s value and the exporter's
    /// response. A failing `frontend` fails the job with its message.
    pub async fn build<T, F, Fut>(
        &self,
        request: SolveRequest,
        events: mpsc::UnboundedSender<Event>,
        frontend: F,
    ) -> Result<(T, BTreeMap<String, String>), Error>
    where
        F: FnOnce(Gateway) -> Fut,
        Fut: Future<Output = Result<(T, Returned), Error>>,
    {
        let job = new_ref();
        let solve = self.run_job(request.to_control(&job, None), events);
        let gateway = Gateway::new(self.channel.clone(), job, self.keepalive);
        let front = async {
            let outcome = frontend(gateway.clone()).await;
            // The job waits for Return whatever happened; an error fails it with that message.
            let returned = match &outcome {
                Ok((_, returned)) => Ok(returned.clone()),
                Err(e) => Err(e.to_string()),
            };
            let finished = gateway.finish(returned).await;
            outcome.and_then(|(value, _)| finished.map(|()| value))
        };
        tokio::pin!(solve);
        tokio::pin!(front);
        tokio::select! {
            // The job ended first (failed, cancelled, daemon gone): its error is the job's own,
            // and the frontend's calls are moot.
            response = &mut solve => {
                let response = response?;
                let value = front.await?;
                Ok((value, response))
            }
            value = &mut front => match value {
                Ok(value) => Ok((value, solve.await?)),
                // The first error of the job wins. A frontend error may follow from the job's
                // (a bridge call to a job the daemon has already failed says "no such job"),
                // so the job's error, once it comes, is reported over it; but when the job
                // failed with the frontend's own error (the message `finish` returned), the
                // frontend's original says it better.
                Err(front_error) => match tokio::time::timeout(JOB_END_WAIT, solve).await {
                    Ok(Err(job_error))
                        if !job_error.to_string().contains(&front_error.to_string()) =>
                    {
                        Err(job_error)
                    }
                    _ => Err(front_error),
                },
            },
        }
    }

    /// Control.Solve for `solve`, following its status stream until the job ends.
    async fn run_job(
        &self,
        solve: control::SolveRequest,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut control = self.control.clone();
        let mut status_client = self.control.clone();
        let status_ref = solve.r#ref.clone();
        let status = async move {
            let stream = status_client
                .status(control::StatusRequest { r#ref: status_ref })
                .await;
            if let Ok(stream) = stream {
                let mut stream = stream.into_inner();
                while let Some(Ok(update)) = stream.next().await {
                    for event in Event::from_status(update) {
                        let _ = events.send(event);
                    }
                }
            }
        };
        let solved = control.solve(solve);
        tokio::pin!(status);
        tokio::pin!(solved);
        // The status stream ends on its own soon after the job does, but not always: a job the
        // daemon rejects after creating it (v0.24, an entitlement it does not grant) keeps its
        // stream open, and a job that never started keeps it for the 3 s (6 s) the daemon waits
        // for it. Like BuildKit's Go client, stop following it a grace period after the solve.
        let mut status_done = false;
        let result = tokio::select! {
            result = &mut solved => result,
            () = &mut status => {
                status_done = true;
                solved.await
            }
        };
        if !status_done {
            let _ = tokio::time::timeout(STATUS_GRACE, status).await;
        }
        let response = result.map_err(|s| Error::from_status("solve", s, self.keepalive))?;
        Ok(response.into_inner().exporter_response)
    }
}

/// `os/arch`, with `/variant` when there is one.
fn platform_name(p: &kiln_llb::pb::Platform) -> String {
    if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    }
}

/// How long the connection to the builder may stay silent before kiln pings it, and how long
/// it then waits for the answer, unless the caller says otherwise: a builder that stops
/// answering (frozen, or a proxy in between stalled) fails every call on the connection within
/// about twice this, while a healthy one answers pings however long a step runs without output.
/// (kiln-app lets `KILN_BUILDER_KEEPALIVE=SECONDS` change it: slow links, tests.)
pub const DEFAULT_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// HTTP/2 keepalive pings with a timeout, also while no call is open. hyper pings only after
/// `period` without reading anything. Docker's `/grpc` (Go's x/net/http2 server) acks any ping;
/// a grpc-go buildkitd closes a connection that pings more often than every 5 minutes while it
/// writes nothing, but during a solve it health-checks the session (inside `Control.Session`,
/// on this connection) every 5 s, which is both a write for it and a read for kiln.
fn with_keepalive(
    period: std::time::Duration,
    endpoint: tonic::transport::Endpoint,
) -> tonic::transport::Endpoint {
    endpoint
        .http2_keep_alive_interval(period)
        .keep_alive_timeout(period)
        .keep_alive_while_idle(true)
}

/// rustls settings for `tls`: the CA to trust (else the system's roots) and the client
/// identity for mutual TLS.
fn tls_config(host: &str, tls: &Tls) -> Result<tonic::transport::ClientTlsConfig, Error> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            Error::Endpoint(format!(
                "cannot read the TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    // buildkitd negotiates h2 by ALPN; a TLS proxy in front of it may not, and gRPC is h2
    // either way.
    let mut config = tonic::transport::ClientTlsConfig::new()
        .domain_name(tls.server_name.clone().unwrap_or_else(|| host.to_string()))
        .assume_http2(true);
    if let Some(ca) = &tls.ca {
        config = config.ca_certificate(tonic::transport::Certificate::from_pem(read(
            ca,
            "CA certificate",
        )?));
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Endpoint(
                "mutual TLS needs both a client certificate and its key".to_string(),
            ));
        }
    }
    Ok(config)
}

impl SolveRequest {
    /// The Control.Solve message for job `job`; no definition makes kiln the job's frontend.
    fn to_control(
        &self,
        job: &str,
        definition: Option<kiln_llb::pb::Definition>,
    ) -> control::SolveRequest {
        let (exporter, exporter_attrs) = self.exporter.clone().unwrap_or_default();
        let exporters = self
            .exporter
            .iter()
            .map(|(t, a)| control::Exporter {
                r#type: t.clone(),
                attrs: a.clone(),
            })
            .collect();
        let entries = |list: &[(String, BTreeMap<String, String>)]| {
            list.iter()
                .map(|(t, a)| control::CacheOptionsEntry {
                    r#type: t.clone(),
                    attrs: a.clone().into_iter().collect(),
                })
                .collect()
        };
        let cache = (!self.cache_exports.is_empty() || !self.cache_imports.is_empty()).then(|| {
            control::CacheOptions {
                exports: entries(&self.cache_exports),
                imports: entries(&self.cache_imports),
            }
        });
        control::SolveRequest {
            r#ref: job.to_string(),
            definition,
            exporter,
            exporter_attrs,
            session: self.session.clone().unwrap_or_default(),
            entitlements: self.entitlements.clone(),
            exporters,
            cache,
            ..control::SolveRequest::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_keep_their_variant() {
        let p = |arch: &str, variant: &str| kiln_llb::pb::Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.into(),
            ..kiln_llb::pb::Platform::default()
        };
        assert_eq!(platform_name(&p("amd64", "")), "linux/amd64");
        assert_eq!(platform_name(&p("amd64", "v2")), "linux/amd64/v2");
        assert_eq!(platform_name(&p("arm", "v7")), "linux/arm/v7");
    }

    #[test]
    fn refs_are_25_base36_chars_and_unique() {
        let a = new_ref();
        let b = new_ref();
        assert_eq!(a.len(), 25);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(a, b);
    }
}
