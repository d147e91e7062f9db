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
    /// A target's inputs or kiln.lock could not be read, or kiln.lock not written.
    #[error("error: {0}")]
    Record(#[from] kiln_record::RecordError),
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
        SolveError::Secrets(diagnostics) | SolveError::Platform(diagnostics) => {
            diagnostics.to_string()
        }
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
        // Rendered once, under the one `error: ` prefix `render` gives the whole.
        SolveError::PoolExhausted { last } => format!(
            "{}\n  every builder of the pool has stopped answering",
            shown(last)
        ),
        SolveError::RefreshTestFailed { source, .. } => shown(source),
        _ => hint(e.to_string(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_engine() -> SolveError {
        SolveError::Connect {
            source: kiln_buildkit::Error::Connect {
                endpoint: "docker:///nonexistent/d.sock".to_string(),
                reason: "No such file or directory".to_string(),
            },
            hint: "is the engine running? `kiln engine status`, `kiln engine up`",
        }
    }

    #[test]
    fn solve_errors_read_as_the_messages_kiln_always_printed() {
        let step = SolveError::Step(Box::new(kiln_solve::StepFailed {
            target: "app".to_string(),
            stage: "smoke-test",
            source: kiln_buildkit::Error::Failed {
                action: "solve",
                message: "network bridge not found".to_string(),
            },
            step: Some("[2/2] RUN x".to_string()),
            output: Some(vec!["one".to_string(), "two".to_string()]),
            hint: Some("set `network`"),
        }));
        let error = AppError::from(step);
        assert_eq!(
            error.to_string(),
            "error: app/smoke-test: solve failed: network bridge not found\n  step: [2/2] RUN x\n  \
             last output:\n    one\n    two\n  hint: set `network`"
        );
        assert_eq!(error.exit_code(), 1);

        let down = AppError::from(SolveError::PoolDown {
            errors: vec![unreachable_engine(), unreachable_engine()],
        });
        let one = "error: cannot reach BuildKit at docker:///nonexistent/d.sock: No such file or \
                   directory\n  hint: is the engine running? `kiln engine status`, `kiln engine up`";
        assert_eq!(
            down.to_string(),
            format!("error: no builder of the pool answers:\n{one}\n{one}")
        );

        let load = AppError::from(SolveError::LoadEngine(kiln_docker::ApiError::Connect {
            socket: "/nonexistent/d.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }));
        assert!(
            load.to_string().starts_with("error: --load: ")
                && load.to_string().ends_with(
                    "\n  hint: the image is loaded into this Docker Engine (DOCKER_HOST, else \
                     /var/run/docker.sock); `kiln engine up` starts one"
                ),
            "{load}"
        );
    }

    #[test]
    fn a_pool_whose_every_builder_stopped_answering_says_error_once() {
        let exhausted = AppError::from(SolveError::PoolExhausted {
            last: Box::new(unreachable_engine()),
        });
        assert_eq!(
            exhausted.to_string(),
            "error: cannot reach BuildKit at docker:///nonexistent/d.sock: No such file or \
             directory\n  hint: is the engine running? `kiln engine status`, `kiln engine up`\n  \
             every builder of the pool has stopped answering"
        );
        assert_eq!(exhausted.exit_code(), 1);
    }

    #[test]
    fn an_interrupted_or_pointless_solve_keeps_its_exit_code() {
        let interrupted = AppError::from(SolveError::Interrupted);
        assert_eq!(interrupted.exit_code(), 130);
        assert_eq!(
            interrupted.to_string(),
            "error: interrupted; the in-flight build was cancelled"
        );
        let nothing = AppError::from(SolveError::NothingToRefresh {
            target: Some("app".to_string()),
        });
        assert_eq!(nothing.exit_code(), 2);
        assert_eq!(
            nothing.to_string(),
            "error: target `app` has no [target.app.packages]: there is nothing to refresh"
        );
    }
}
