//! The Docker Engine as a program on this machine: its HTTP API over the unix socket (ping,
//! version, image inspect, push, load) and the lifecycle of a `dockerd` that kiln starts and owns (pid file
//! and log under the state directory the caller gives; stopping only what kiln started). BuildKit's gRPC API
//! is `kiln-buildkit`'s job, not this crate's.

mod api;
mod engine;

pub use api::{Api, ApiError, ImageInfo, Response, VersionInfo};
pub use engine::{Engine, EngineError, START_LIMIT, StartOutcome, StopOutcome};

/// The socket Docker listens on by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
