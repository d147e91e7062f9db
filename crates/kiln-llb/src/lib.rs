//! A typed builder over BuildKit's LLB: states for image and local sources, exec steps with
//! env, cwd, user, network mode and bind/cache/secret/tmpfs mounts, and file actions (copy,
//! mkdir, mkfile, rm); marshalled deterministically into a `pb.Definition` with sha256 op
//! digests. No IO. Every op is encoded once and its digest memoised, so marshalling many
//! states that share ancestry costs each op once.
//!
//! Only features of the BuildKit v0.8 era (Docker Engine 20.10) are emitted, with the
//! capability names that BuildKit checks (`OpMetadata.caps`).

pub mod pb;

mod exec;
mod fileop;
mod marshal;
mod meta;
mod platform;
mod source;
mod state;

pub use exec::{CacheSharing, Exec, ExecState, Mount, NetMode};
pub use fileop::{Chown, CopyOptions, FileActions, UserSpec};
pub use marshal::{DecodeError, Definition, Digest, MarshalError, marshal};
pub use meta::DEFAULT_PATH;
pub use platform::{Platform, PlatformError};
pub use source::LocalOptions;
pub use state::State;

#[cfg(test)]
mod tests;
