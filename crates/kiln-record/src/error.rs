//! What can go wrong reading a target's inputs or kiln.lock.

use std::path::PathBuf;

/// Each variant renders as kiln's message did before this crate existed (the CLI adds
/// `error: `).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// An include or exclude pattern of a context that is not a valid pattern.
    #[error("context pattern: {source}")]
    Pattern {
        pattern: String,
        source: kiln_fsutil::Error,
    },
    /// A context directory that cannot be walked.
    #[error("cannot read the context {}: {source}", context.display())]
    Context {
        context: PathBuf,
        source: kiln_fsutil::Error,
    },
    /// A file that cannot be read (a context file, kiln.lock).
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// kiln.lock that cannot be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// kiln.lock's directory, whose flock serialises read-merge-replace cycles.
    #[error("cannot lock the directory of kiln.lock in `{}`: {source}", dir.display())]
    LockDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// kiln.lock is not a kiln.lock (the error names its file, line and key).
    #[error("{source}")]
    LockFile {
        path: PathBuf,
        source: kiln_lock::LockError,
    },
}

impl RecordError {
    /// What the user can do about it, when this crate knows (shown below the message).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RecordError::LockFile { .. } => {
                Some("kiln.lock is generated; restore it from git or delete it")
            }
            _ => None,
        }
    }
}
