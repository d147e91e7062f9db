//! The errors a command can end with, and their exit codes.
//!
//! An error's `Display` is its message only: no `error: ` prefix and no `  hint: ` lines.
//! What goes below the message is [`AppError::hints`] and [`AppError::notes`]; the CLI renders
//! the three (kiln-cli's `report::render`). The variants that hold a list of located problems
//! ([`AppError::is_list`]) display that list as it is, one `error:` line per problem.

use std::path::PathBuf;

use kiln_graph::GraphError;
use kiln_manifest::Diagnostics;
use kiln_solve::SolveError;

/// The dependencies' larger errors are boxed to keep `Result<_, AppError>` small.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The manifests are invalid; every problem is listed.
    #[error("{0}")]
    Manifest(Diagnostics),
    /// The targets do not form a DAG.
    #[error("{}", .0.iter().map(|e| format!("error: {e}")).collect::<Vec<_>>().join("\n"))]
    Graph(Vec<GraphError>),
    /// A target or stage name on the command line matches nothing.
    #[error("{0}")]
    Select(#[from] GraphError),
    #[error("{0}")]
    Compile(#[from] kiln_compile::CompileError),
    #[error("no manifest found: no `kiln.toml` in {cwd} and no `manifests/*.toml` at the git root{}", root.as_ref().map(|r| format!(" ({})", r.display())).unwrap_or_default())]
    NoManifest { cwd: PathBuf, root: Option<PathBuf> },
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// The engine could not be reached, started or stopped.
    #[error("{0}")]
    Engine(String),
    /// A target's inputs or kiln.lock could not be read, or kiln.lock not written.
    #[error("{0}")]
    Record(#[from] kiln_record::RecordError),
    /// A setting resolved once and reported when a command first needs it (resolved.rs
    /// keeps the message, not the error, so that each use can report it).
    #[error("{0}")]
    Build(String),
    /// A git operation failed; `what` says which (`read the index`, `move the branch`).
    #[error("git: cannot {what}: {}", source.message())]
    Git {
        what: &'static str,
        source: git2::Error,
    },
    /// The repository has no work tree to read or commit files in.
    #[error("git: the repository is bare")]
    BareRepository,
    /// A file kiln would check or commit is not in the repository.
    #[error("{} is outside the git repository", .0.display())]
    OutsideRepository(PathBuf),
    /// HEAD is not on a branch a commit can go on; the text says why.
    #[error("{0}")]
    NoBranch(String),
    /// `refresh --commit` cannot commit here (see `git::cannot_commit`); the text says why.
    #[error("refusing to commit: {0}")]
    CommitRefused(String),
    /// Lock files kiln was about to commit were edited while the refresh ran.
    #[error("refusing to commit: {} changed during the refresh; nothing was written", list(.0))]
    ChangedDuringRefresh(Vec<PathBuf>),
    /// A step of `refresh --commit` failed after the commit began; the note says what the
    /// next kiln command does about it.
    /// It shows as the inner error (its message and hints), with the note below.
    #[error("{source}")]
    CommitUnfinished { source: Box<AppError>, note: String },
    /// `error` with one more hint of the caller's (see [`AppError::with_hint`]).
    #[error("{error}")]
    Hinted { error: Box<AppError>, hint: String },
    /// The record of an interrupted `refresh --commit` is not valid.
    #[error("{}: cannot read this record of an interrupted `kiln refresh --commit`: {source}", path.display())]
    IntentRecord {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// `kiln refresh` would overwrite these lock files' uncommitted edits.
    #[error("refusing to refresh: {} {} uncommitted edits that the refresh would overwrite", list(.0), if .0.len() == 1 { "has" } else { "have" })]
    Uncommitted(Vec<PathBuf>),
    /// `kiln refresh --commit` cannot commit here; the text says why.
    #[error("refusing to refresh with --commit: {0}")]
    RefreshCommitRefused(String),
    /// The refreshed locks failed a target's tests: the failure, with the lines of what the
    /// refresh tried (`describe`d changes) below its first line.
    #[error("{}", refresh_failed(source, tried))]
    RefreshFailed {
        source: Box<SolveError>,
        tried: Vec<String>,
    },
    /// A string kiln was given or made is not an image reference.
    #[error("{0}")]
    Reference(#[from] kiln_reference::ReferenceError),
    /// A target's `image` is not a reference kiln can push.
    #[error("{target}: {source}")]
    TargetReference {
        target: String,
        source: kiln_reference::ReferenceError,
    },
    /// The digest a push reported does not make a reference with the target's image.
    #[error("{target}: pushed digest {digest}: {source}")]
    PushedDigest {
        target: String,
        digest: String,
        source: kiln_reference::ReferenceError,
    },
    /// The Docker CLI config's credentials for a registry could not be read.
    #[error("registry credentials: {0}")]
    Credentials(#[from] kiln_registry::AuthError),
    /// `docker push` through the engine failed, at the last attempt or at a refusal (401/403,
    /// denied: `refused`, which is not retried and says to log in).
    #[error("push of {image} failed (attempt {attempt} of {attempts}): {source}")]
    Push {
        image: String,
        attempt: u32,
        attempts: u32,
        refused: bool,
        source: Box<kiln_docker::ApiError>,
    },
    /// A builder without an engine kiln can push from did not push the image itself.
    #[error("{target}: the builder did not push {image}")]
    NotPushed { target: String, image: String },
    /// The registry could not say which digest a pushed tag has.
    #[error("push of {image}: {source}")]
    PushUnconfirmed {
        image: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// The registry's digest for the pushed tag is not the one the engine reported.
    #[error(
        "push of {image}: the engine reported {engine} but the registry has {registry} for the tag"
    )]
    PushMismatch {
        image: String,
        engine: String,
        registry: String,
    },
    /// `kiln pin` could not resolve `name` in its registry; `local` says what the engine had.
    #[error("cannot pin {source}{}", local_image(name, *local))]
    Pin {
        name: String,
        local: LocalImage,
        source: Box<kiln_registry::RegistryError>,
    },
    /// `kiln trace` found the image neither in the engine nor in its registry.
    #[error("trace {image}: not in the engine's image store, and the registry: {source}")]
    Trace {
        image: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// Attaching a target's SBOM or provenance (`kind`) to its pushed image failed.
    #[error("{target}: attaching its {kind} to {subject}: {source}")]
    Attach {
        target: String,
        kind: &'static str,
        subject: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// The engine could not save a target's image to an archive.
    #[error("{target}: cannot save {image} to {}: {source}", path.display())]
    Save {
        target: String,
        image: String,
        path: PathBuf,
        source: Box<kiln_docker::ApiError>,
    },
    /// `--output-image` for a target whose image is not in the engine's image store.
    #[error("{target}: --output-image: the target has no image in the image store")]
    NoImageToSave { target: String },
    /// A lock or declaration file is not valid.
    #[error("{0}")]
    Lock(#[from] kiln_lock::LockError),
    /// A target's lock file (`file`, as shown) is not valid.
    #[error("{file}: {source}")]
    LockFile {
        file: String,
        source: kiln_lock::LockError,
    },
    /// A target's lock file, at `path`, is not valid.
    #[error("target `{target}`: {}: {source}", path.display())]
    TargetLock {
        target: String,
        path: PathBuf,
        source: kiln_lock::LockError,
    },
    /// A target's lock file (`file`, as shown) could not be read.
    #[error("target `{target}`: cannot read its lock file {file}: {source}")]
    LockUnreadable {
        target: String,
        file: String,
        source: std::io::Error,
    },
    /// A lock file in an earlier commit is not valid.
    #[error("{source} (in commit {commit})")]
    LockInCommit {
        commit: git2::Oid,
        source: kiln_lock::LockError,
    },
    /// kiln.lock at the revision given to `--since` is not valid.
    #[error("{source} (at {revision})")]
    LockAtRevision {
        revision: String,
        source: kiln_lock::LockError,
    },
    /// The solve failed (see `kiln_solve::SolveError`): its message, with its hint below.
    #[error("{}", solve_message(.0))]
    Solve(#[from] kiln_solve::SolveError),
    /// `kiln check --locked` found drift; every problem is listed.
    #[error("{0}")]
    Locked(String),
    /// A bad command-line value the argument parser could not catch.
    #[error("{0}")]
    Usage(String),
}

impl AppError {
    /// `git: cannot {what}: …`: the one form of a failed git operation.
    pub(crate) fn git(what: &'static str, source: git2::Error) -> AppError {
        AppError::Git { what, source }
    }

    /// Whether the message is a list of located problems, each its own `error:` line (the
    /// manifests' problems, the graph's, `check --locked`'s, a solve's secrets or platforms):
    /// shown as it is, with no `error: ` before it.
    pub fn is_list(&self) -> bool {
        match self {
            AppError::Manifest(_) | AppError::Graph(_) | AppError::Locked(_) => true,
            AppError::Solve(e) => solve_is_list(e),
            AppError::CommitUnfinished { source, .. } => source.is_list(),
            AppError::Hinted { error, .. } => error.is_list(),
            _ => false,
        }
    }

    /// What the user can do about it, when kiln knows: each shown as `  hint: …` below the
    /// message.
    pub fn hints(&self) -> Vec<String> {
        let hint = |text: &str| vec![text.to_string()];
        match self {
            AppError::NoManifest { .. } => hint("pass one with `-f FILE`"),
            AppError::IntentRecord { .. } => {
                hint("check `git status` and `git log`, then remove the file")
            }
            AppError::Uncommitted(_) => hint(
                "commit or stash them first, or run with --dry-run to only see what would change",
            ),
            AppError::Push { refused: true, .. } => {
                hint("log in with `docker login` (kiln reads ~/.docker/config.json)")
            }
            AppError::LockUnreadable { target, .. } => {
                vec![format!("run `kiln refresh {target}`")]
            }
            AppError::CommitUnfinished { source, .. } => source.hints(),
            AppError::Hinted { error, hint } => {
                let mut hints = error.hints();
                hints.push(hint.clone());
                hints
            }
            AppError::Record(e) => e.hint().map(str::to_string).into_iter().collect(),
            AppError::RefreshFailed { source, .. } => solve_hints(source),
            AppError::Solve(e) => solve_hints(e),
            _ => Vec::new(),
        }
    }

    /// The lines below the hints, each shown indented on a line of its own (`note: …` where
    /// the line is a note).
    pub fn notes(&self) -> Vec<String> {
        match self {
            AppError::CommitUnfinished { source, note } => {
                let mut notes = source.notes();
                notes.push(format!("note: {note}"));
                notes
            }
            AppError::Hinted { error, .. } => error.notes(),
            AppError::RefreshFailed { source, .. } => solve_notes(source),
            AppError::Solve(e) => solve_notes(e),
            _ => Vec::new(),
        }
    }

    /// The error as kiln shows it (`error: `, the message, a line per hint and note): the one
    /// rendering, which the CLI prints and kiln-app puts inside texts of its own (a warning, a
    /// note of `kiln trace`, the build metadata's `error`).
    pub fn report(&self) -> String {
        let mut text = if self.is_list() {
            self.to_string()
        } else {
            format!("error: {self}")
        };
        for hint in self.hints() {
            text.push_str("\n  hint: ");
            text.push_str(&hint);
        }
        for note in self.notes() {
            text.push_str("\n  ");
            text.push_str(&note);
        }
        text
    }

    /// [`AppError::report`] without its first `error: `: for where kiln-app keeps an error as
    /// text (the build metadata's `error`, a setting's error kept to report at each use).
    pub(crate) fn unprefixed(&self) -> String {
        let text = self.report();
        text.strip_prefix("error: ")
            .map(str::to_string)
            .unwrap_or(text)
    }

    /// This error with `hint` shown below its own hints.
    pub(crate) fn with_hint(self, hint: impl Into<String>) -> AppError {
        AppError::Hinted {
            error: Box::new(self),
            hint: hint.into(),
        }
    }

    /// 1 for problems in the user's files or build, 2 for usage errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Hinted { error, .. } => error.exit_code(),
            AppError::Usage(_) | AppError::Select(_) => 2,
            AppError::Solve(e) if e.is_usage() => 2,
            AppError::Solve(SolveError::Interrupted) => 130,
            _ => 1,
        }
    }
}

/// What the Docker Engine has of an image `kiln pin` could not resolve in its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalImage {
    /// No engine was asked (the builder is not a Docker Engine).
    NotAsked,
    /// The engine has no such image.
    Missing,
    /// The engine has it, pulled from a registry (it has a registry digest).
    FromRegistry,
}

/// What `kiln pin`'s error adds about the engine's copy of `name`.
fn local_image(name: &str, local: LocalImage) -> String {
    match local {
        LocalImage::NotAsked => String::new(),
        LocalImage::Missing => format!(
            "\n  and the Docker Engine has no image {name} either: build, import or pull it, or correct the reference"
        ),
        LocalImage::FromRegistry => format!(
            "\n  the Docker Engine has {name}, but it came from a registry (it has a registry digest); pin it when the registry is reachable"
        ),
    }
}

/// Paths as a comma-separated list.
fn list(paths: &[PathBuf]) -> String {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    list.join(", ")
}

/// A refresh's failed test: its first line, what the refresh tried, then the rest of the
/// message (its hints and notes go below, as any error's).
fn refresh_failed(source: &SolveError, tried: &[String]) -> String {
    let message = solve_message(source);
    let (first, rest) = message.split_once('\n').unwrap_or((&message, ""));
    let tried: String = tried.iter().map(|line| format!("\n    {line}")).collect();
    format!("{first}\n  the refresh tried (nothing was written):{tried}\n{rest}")
        .trim_end()
        .to_string()
}

/// Whether a solve's error is a list of located problems that shows itself.
fn solve_is_list(e: &SolveError) -> bool {
    matches!(e, SolveError::Secrets(_) | SolveError::Platform(_))
}

/// A solve's message: a pool that failed as a whole lists each builder's error below its
/// first line, each shown whole (its own `error: `, hints and notes), as a list of problems
/// is; a wrapped error shows as the error it wraps.
fn solve_message(e: &SolveError) -> String {
    match e {
        SolveError::PoolDown { errors } => {
            let mut text = "no builder of the pool answers:".to_string();
            for e in errors {
                text.push('\n');
                if solve_is_list(e) {
                    text.push_str(&solve_message(e));
                } else {
                    text.push_str("error: ");
                    text.push_str(&solve_message(e));
                    for hint in solve_hints(e) {
                        text.push_str("\n  hint: ");
                        text.push_str(&hint);
                    }
                    for note in solve_notes(e) {
                        text.push_str("\n  ");
                        text.push_str(&note);
                    }
                }
            }
            text
        }
        SolveError::PoolExhausted { last } => solve_message(last),
        SolveError::RefreshTestFailed { source, .. } => solve_message(source),
        _ => e.to_string(),
    }
}

/// A solve's hints: [`SolveError::hint`], or the wrapped error's.
fn solve_hints(e: &SolveError) -> Vec<String> {
    match e {
        SolveError::PoolDown { .. } => Vec::new(),
        _ if solve_is_list(e) => Vec::new(),
        SolveError::PoolExhausted { last } => solve_hints(last),
        SolveError::RefreshTestFailed { source, .. } => solve_hints(source),
        _ => e.hint().into_iter().collect(),
    }
}

/// A solve's lines below its hints: a pool whose every builder stopped answering says so
/// below the last builder's error.
fn solve_notes(e: &SolveError) -> Vec<String> {
    match e {
        SolveError::PoolExhausted { last } => {
            let mut notes = solve_notes(last);
            notes.push("every builder of the pool has stopped answering".to_string());
            notes
        }
        SolveError::RefreshTestFailed { source, .. } => solve_notes(source),
        _ => Vec::new(),
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

    /// The message has no `error: ` and no hint; the hints and notes come apart (kiln-cli's
    /// `report` tests pin the rendered texts).
    #[test]
    fn the_message_the_hints_and_the_notes_come_apart() {
        let error = AppError::Uncommitted(vec!["a.txt".into()]);
        assert_eq!(
            error.to_string(),
            "refusing to refresh: a.txt has uncommitted edits that the refresh would overwrite"
        );
        assert_eq!(
            error.hints(),
            ["commit or stash them first, or run with --dry-run to only see what would change"]
        );
        assert!(error.notes().is_empty() && !error.is_list());

        let unfinished = AppError::CommitUnfinished {
            source: Box::new(AppError::NoManifest {
                cwd: "/w".into(),
                root: None,
            }),
            note: "rolled back".to_string(),
        };
        assert!(unfinished.to_string().starts_with("no manifest found: "));
        assert_eq!(unfinished.hints(), ["pass one with `-f FILE`"]);
        assert_eq!(unfinished.notes(), ["note: rolled back"]);
        assert_eq!(
            unfinished.unprefixed(),
            format!("{unfinished}\n  hint: pass one with `-f FILE`\n  note: rolled back")
        );

        let exhausted = AppError::from(SolveError::PoolExhausted {
            last: Box::new(unreachable_engine()),
        });
        assert_eq!(
            exhausted.to_string(),
            "cannot reach BuildKit at docker:///nonexistent/d.sock: No such file or directory"
        );
        assert_eq!(
            exhausted.hints(),
            ["is the engine running? `kiln engine status`, `kiln engine up`"]
        );
        assert_eq!(
            exhausted.notes(),
            ["every builder of the pool has stopped answering"]
        );
    }

    /// A list of located problems shows as it is: each line has its own `error: `.
    #[test]
    fn a_list_of_problems_is_its_own_text() {
        let graph = AppError::Graph(vec![GraphError::UnknownSelection {
            name: "a".to_string(),
            suggestion: None,
        }]);
        assert!(graph.is_list() && graph.hints().is_empty());
        assert!(graph.to_string().starts_with("error: "), "{graph}");
        assert_eq!(graph.report(), graph.to_string());
        assert_eq!(graph.unprefixed(), graph.to_string()["error: ".len()..]);
    }
}
