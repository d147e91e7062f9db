//! What a target's inputs are and what `kiln.lock` records about it: the inputs hash (and a
//! short digest per part of it), whether a target is up to date with its record, and the
//! merge of a build's results into `kiln.lock`.
//!
//! A target's inputs hash covers what decides its image: the LLB of its image and smoke-test
//! stages as planned offline (the manifest entry after profile and vars: base reference, run
//! steps, copies, package commands, config), the content of every context file those stages
//! read (package files, lock files, copied files, tests), the inputs of the targets it builds
//! on, and its base image as pinned in `kiln.lock`. The image name is not part of it (it is
//! not part of the image). Beside the hash, `kiln.lock` records a short digest of each part
//! (the manifest entry, each base pin, each context pattern's files, each dependency, the
//! planned LLB), so that `kiln check --locked` can say which input changed.
//!
//! Every file this crate reads or writes goes through [`Files`] ([`Disk`] in kiln): the
//! hashing and the decisions are tested over an in-memory tree. Asking an engine or a registry
//! is the caller's: [`freshness`] takes the answers through [`ImageStore`].

mod error;
mod files;
mod fresh;
mod inputs;
mod lock;

#[cfg(test)]
mod tests;

pub use error::RecordError;
pub use files::{ContextEntry, Disk, Files, Held};
pub use fresh::{Fresh, ImageStore, Stale, freshness, registry_question};
pub use inputs::{Inputs, Own, changed_parts, ignored, inputs, manifest_entry, own_inputs};
pub use lock::{
    BasePin, BuildResult, Recorded, kiln_lock_path, lock_kiln_lock, merge, read_kiln_lock,
    record_build,
};
