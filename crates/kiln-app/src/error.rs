//! The errors a command can end with, and their exit codes.

use std::path::PathBuf;

use kiln_graph::GraphError;
use kiln_manifest::Diagnostics;
use kiln_solve::SolveError;

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
    /// A command failed: a git, registry or engine step around the build said why.
    #[error("error: {0}")]
    Build(String),
    /// The solve failed (see `kiln_solve::SolveError`): rendered with the `error: ` prefix and
    /// the hint below the message.
    #[error("{}", render(.0))]
    Solve(#[from] kiln_solve::SolveError),
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
            AppError::Solve(e) if e.is_usage() => 2,
            AppError::Solve(SolveError::Interrupted) => 130,
            _ => 1,
        }
    }
}

/// A solve's error as kiln shows it: `error: ` and the message, then the hint.
fn render(e: &SolveError) -> String {
    match e {
        // Located problems render themselves, one `error:` each.
        SolveError::Manifest(diagnostics) => diagnostics.to_string(),
        _ => format!("error: {}", shown(e)),
    }
}

/// A solve's error without its `error: ` prefix: the message, each builder's error of a pool
/// that failed as a whole on a line of its own, and the hint last.
pub(crate) fn shown(e: &SolveError) -> String {
    let hint = |message: String, e: &SolveError| match e.hint() {
        Some(hint) => format!("{message}\n  hint: {hint}"),
        None => message,
    };
    match e {
        SolveError::PoolDown { errors } => {
            let mut text = "no builder of the pool answers:".to_string();
            for e in errors {
                text.push('\n');
                text.push_str(&render(e));
            }
            text
        }
        SolveError::PoolExhausted { last } => format!(
            "{}\n  every builder of the pool has stopped answering",
            render(last)
        ),
        SolveError::RefreshTestFailed { source, .. } => shown(source),
        _ => hint(e.to_string(), e),
    }
}
