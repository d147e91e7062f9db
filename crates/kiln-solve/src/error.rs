//! What can end a solve, one variant per kind of failure. The messages are the bare ones
//! (no `error: ` prefix, no hint): what the user can do about a failure is [`SolveError::hint`],
//! which kiln-app's `AppError` passes on as its hints; kiln-cli renders both.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_manifest::Diagnostics;

#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// The builder cannot be connected to (`hint`: how to start one, or what the symptom means).
    #[error("{source}")]
    Connect {
        source: kiln_buildkit::Error,
        hint: &'static str,
    },
    /// The builder answered the connection but not the question which workers it has.
    #[error("{source}")]
    Workers {
        source: kiln_buildkit::Error,
        hint: &'static str,
    },
    #[error("the builder at {endpoint} has no workers; it cannot build anything")]
    NoWorkers { endpoint: String },
    /// A build session could not be started; `hint` when the connection was lost (typically
    /// the daemon went away between two solves).
    #[error("{source}")]
    Session {
        source: kiln_buildkit::Error,
        hint: Option<&'static str>,
    },
    /// Not one builder answers.
    #[error("no builder answers")]
    NoBuilder,
    /// Every builder of a pool failed to connect; each one's error, in the pool's order.
    #[error("no builder of the pool answers:{}", .errors.iter().map(|e| format!("\n{e}")).collect::<String>())]
    PoolDown { errors: Vec<SolveError> },
    /// The builder a target was assigned to is gone and no other is left.
    #[error("{target}: no builder left to build it on")]
    NoBuilderLeft { target: String },
    /// `last` failed on a builder that stopped answering, and so has every other one.
    #[error("{last}\n  every builder of the pool has stopped answering")]
    PoolExhausted { last: Box<SolveError> },
    /// A solve of a target's stage failed.
    #[error(transparent)]
    Step(Box<StepFailed>),
    /// A refresh resolved new lock files (`locks`, as read out of the build), but the smoke
    /// test (or what follows the packages) failed on them (`source`, a [`SolveError::Step`]).
    #[error("{source}")]
    RefreshTestFailed {
        target: String,
        locks: BTreeMap<String, Vec<u8>>,
        source: Box<SolveError>,
    },
    /// `kiln refresh` of a target without packages (`target`: the one named), or of a
    /// selection where none has any (`None`).
    #[error("{}", match .target {
        Some(name) => format!("target `{name}` has no [target.{name}.packages]: there is nothing to refresh"),
        None => "none of the selected targets has packages: there is nothing to refresh".to_string(),
    })]
    NothingToRefresh { target: Option<String> },
    /// Secrets whose environment variable is unset or whose file cannot be read: each located
    /// at its `[secrets]` entry (the variable or path named), every one listed.
    #[error("{0}")]
    Secrets(Diagnostics),
    /// Base images that are another platform than their target asks for: each located at its
    /// target, every one listed.
    #[error("{0}")]
    Platform(Diagnostics),
    /// A local file the build sends (a CA bundle) cannot be read.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Compile(#[from] kiln_compile::CompileError),
    #[error("{0}")]
    Marshal(#[from] kiln_llb::MarshalError),
    #[error("{0}")]
    Decode(#[from] kiln_llb::DecodeError),
    /// A stage kiln needs was not compiled (`what`: which).
    #[error("{target}: no {what} was compiled")]
    NotCompiled { target: String, what: &'static str },
    /// A target's image config is not UTF-8.
    #[error("{target}: {source}")]
    ImageConfig {
        target: String,
        source: std::string::FromUtf8Error,
    },
    /// `--load`: the Docker Engine to load into does not answer.
    #[error("--load: {0}")]
    LoadEngine(kiln_docker::ApiError),
    /// `--load`: the image did not arrive in the Docker Engine as exported.
    #[error("{target}: loading {image} into the Docker Engine at unix://{} failed: {why}", socket.display())]
    Load {
        target: String,
        image: String,
        socket: PathBuf,
        why: String,
    },
    /// A blocking task kiln ran beside the solves panicked or was cancelled.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    /// Interrupted (Ctrl-C): in-flight solves were cancelled.
    #[error("interrupted; the in-flight build was cancelled")]
    Interrupted,
}

impl SolveError {
    /// What the user can do about it, when kiln knows: shown as `  hint: …` below the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            SolveError::Connect { hint, .. } | SolveError::Workers { hint, .. } => {
                Some(hint.to_string())
            }
            SolveError::Session { hint, .. } => hint.map(str::to_string),
            SolveError::Step(step) => step.hint.map(str::to_string),
            SolveError::LoadEngine(_) => Some(format!(
                "the image is loaded into this Docker Engine (DOCKER_HOST, else {}); `kiln engine up` starts one",
                kiln_docker::DEFAULT_SOCKET
            )),
            SolveError::RefreshTestFailed { source, .. } => source.hint(),
            _ => None,
        }
    }

    /// A usage error (exit code 2), not a failed build.
    pub fn is_usage(&self) -> bool {
        matches!(self, SolveError::NothingToRefresh { .. })
    }
}

/// A solve of `target`'s `stage` failed: the daemon's error, the step it marked failed and
/// the end of that step's output; `hint` for a known symptom.
#[derive(Debug, thiserror::Error)]
#[error("{target}/{stage}: {source}{}", step_text(.step.as_deref(), .output.as_deref()))]
pub struct StepFailed {
    pub target: String,
    pub stage: &'static str,
    pub source: kiln_buildkit::Error,
    /// The failed step's name (`?` when the daemon named no step kiln saw).
    pub step: Option<String>,
    /// The last lines of its output, when it wrote any.
    pub output: Option<Vec<String>>,
    pub hint: Option<&'static str>,
}

/// The failed step and its output, as [`StepFailed`] shows them.
fn step_text(step: Option<&str>, output: Option<&[String]>) -> String {
    let mut text = String::new();
    if let Some(name) = step {
        text.push_str(&format!("\n  step: {name}"));
    }
    if let Some(lines) = output {
        text.push_str("\n  last output:");
        for line in lines {
            text.push_str("\n    ");
            text.push_str(line);
        }
    }
    text
}
