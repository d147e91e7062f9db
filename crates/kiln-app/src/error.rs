//! The errors a command can end with, and their exit codes.

use std::path::PathBuf;

use kiln_graph::GraphError;
use kiln_manifest::Diagnostics;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The manifests are invalid; every problem is listed.
    #[error("{0}")]
    Manifest(Diagnostics),
    /// The targets do not form a DAG.
    #[error("{}", .0.iter().map(|e| format!("error: {e}")).collect::<Vec<_>>().join("\n"))]
    Graph(Vec<GraphError>),
    /// A target or stage name on the command line matches nothing.
    #[error("error: {0}")]
    Select(#[from] GraphError),
    #[error("error: {0}")]
    Compile(#[from] kiln_compile::CompileError),
    #[error("error: no manifest found: no `kiln.toml` in {cwd} and no `manifests/*.toml` at the git root{}\n  hint: pass one with `-f FILE`", root.as_ref().map(|r| format!(" ({})", r.display())).unwrap_or_default())]
    NoManifest { cwd: PathBuf, root: Option<PathBuf> },
    #[error("error: cannot {action} `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// The engine could not be reached, started or stopped.
    #[error("error: {0}")]
    Engine(String),
    /// A target's inputs or kiln.lock could not be read, or kiln.lock not written.
    #[error("error: {0}")]
    Record(#[from] kiln_record::RecordError),
    /// A build failed: the daemon reported an error, or the connection to it broke.
    #[error("error: {0}")]
    Build(String),
    /// A refresh resolved new lock files (`locks`, as read out of the build), but the smoke
    /// test (or what follows the packages) failed on them; `message` says how.
    #[error("error: {message}")]
    RefreshTestFailed {
        target: String,
        locks: std::collections::BTreeMap<String, Vec<u8>>,
        message: String,
    },
    /// Interrupted (Ctrl-C): in-flight solves were cancelled.
    #[error("error: interrupted; the in-flight build was cancelled")]
    Interrupted,
    /// `kiln check --locked` found drift; every problem is listed.
    #[error("{0}")]
    Locked(String),
    /// A bad command-line value the argument parser could not catch.
    #[error("error: {0}")]
    Usage(String),
}

impl AppError {
    /// 1 for problems in the user's files or build, 2 for usage errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Usage(_) | AppError::Select(_) => 2,
            AppError::Interrupted => 130,
            _ => 1,
        }
    }
}
