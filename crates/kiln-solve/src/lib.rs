//! Solve compiled targets on one or more builders and report progress and outcomes: resolve
//! the base images' configs, lower the targets with them, then solve every selected target on
//! BuildKit in DAG order (independent targets concurrently; those found up to date are left
//! out) — its smoke test first when it has one, then its image (one job on Docker's BuildKit,
//! two on a buildkitd) under the target's `image` name with its image config (base config with
//! the manifest's `config` over it): into the Docker Engine's image store when the builder is
//! the engine's BuildKit; from a standalone buildkitd streamed into the Docker Engine
//! (`BuildOptions::load`), pushed by it (`BuildOptions::push`), or else only in its cache; or
//! exported to a directory with the local exporter (`BuildOptions::output`).
//!
//! Everything it needs is passed in ([`Input`]): the builders, the manifests and graph, the
//! environment. It reports what happens as [`Progress`] values and never draws; it fails with
//! a [`SolveError`], whose rendering is the caller's.

mod cache;
mod error;
mod job;
mod pool;
mod session;
mod stage;
mod types;

pub use cache::{RemoteCache, cache_repository, remote_cache};
pub use error::{SolveError, StepFailed};
pub use job::{Input, Job};
pub use pool::builder_hint;
pub use session::session_config;
pub use types::{Archive, BuildOptions, Built, Goal, Outcome, Progress, Steps, Stored};

use kiln_manifest::Manifest;

/// The host's CA bundle on Debian.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `kiln refresh` needs packages: a target named on the command line without them is an
/// error, and so is a selection with none.
pub fn check_refreshable(
    manifest: &Manifest,
    named: &[String],
    selected: &[String],
) -> Result<(), SolveError> {
    for name in named {
        if let Some(target) = manifest.targets.get(name) {
            if target.packages.is_none() {
                return Err(SolveError::NothingToRefresh {
                    target: Some(name.clone()),
                });
            }
        }
    }
    if !selected
        .iter()
        .any(|t| manifest.targets[t].packages.is_some())
    {
        return Err(SolveError::NothingToRefresh { target: None });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
