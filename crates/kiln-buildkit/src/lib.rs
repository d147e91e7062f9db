//! A BuildKit client: connects to a daemon (Docker Engine's embedded BuildKit through its
//! `/grpc` and `/session` upgrades, or a standalone buildkitd on a unix socket or TCP with
//! mutual TLS, its session tunnelled through `Control.Session`), serves the session a build
//! needs (context upload, an exporter's output, secrets, registry credentials, health), solves
//! LLB with an exporter — directly or with kiln as the job's frontend through the LLB bridge —,
//! turns the daemon's status stream into progress events, and says what the daemon is (version,
//! workers, entitlements).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod control {
        tonic::include_proto!("moby.buildkit.v1");
    }
    pub mod filesync {
        tonic::include_proto!("moby.filesync.v1");
    }
    pub mod secrets {
        tonic::include_proto!("moby.buildkit.secrets.v1");
    }
    pub mod gateway {
        tonic::include_proto!("moby.buildkit.v1.frontend");
    }
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
    /// FileSend, with undecoded messages (see `proto/filesend.proto`).
    pub mod filesend {
        include!(concat!(env!("OUT_DIR"), "/filesend/moby.filesync.v1.rs"));
    }
}

mod client;
mod endpoint;
mod error;
mod event;
mod gateway;
mod hijack;
mod raw;
mod session;

pub use client::{Client, DEFAULT_KEEPALIVE, DaemonInfo, SolveRequest, Worker, new_ref};
pub use endpoint::{DOCKER_SOCKET, Endpoint, Tls};
pub use error::Error;
pub use event::Event;
pub use gateway::{Gateway, ResolveMode, ResolvedImage, ResultRef, Returned};
pub use session::{
    FileChunks, FileOutput, LocalDir, RegistryAuth, Session, SessionConfig, Transfer,
};
