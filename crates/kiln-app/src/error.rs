//! The errors a command can end with, and their exit codes.

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
    /// A setting resolved once and reported when a command first needs it (resolved.rs
    /// keeps the message, not the error, so that each use can report it).
    #[error("error: {0}")]
    Build(String),
    /// A git operation failed; `what` says which (`read the index`, `move the branch`).
    #[error("error: git: cannot {what}: {}", source.message())]
    Git {
        what: &'static str,
        source: git2::Error,
    },
    /// The repository has no work tree to read or commit files in.
    #[error("error: git: the repository is bare")]
    BareRepository,
    /// A file kiln would check or commit is not in the repository.
    #[error("error: {} is outside the git repository", .0.display())]
    OutsideRepository(PathBuf),
    /// HEAD is not on a branch a commit can go on; the text says why.
    #[error("error: {0}")]
    NoBranch(String),
    /// `refresh --commit` cannot commit here (see `git::cannot_commit`); the text says why.
    #[error("error: refusing to commit: {0}")]
    CommitRefused(String),
    /// Lock files kiln was about to commit were edited while the refresh ran.
    #[error("error: refusing to commit: {} changed during the refresh; nothing was written", list(.0))]
    ChangedDuringRefresh(Vec<PathBuf>),
    /// A step of `refresh --commit` failed after the commit began; the note says what the
    /// next kiln command does about it.
    /// The inner error renders with its own `error: ` prefix.
    #[error("{source}\n  note: {note}")]
    CommitUnfinished { source: Box<AppError>, note: String },
    /// The record of an interrupted `refresh --commit` is not valid.
    #[error("error: {}: cannot read this record of an interrupted `kiln refresh --commit`: {source}\n  hint: check `git status` and `git log`, then remove the file", path.display())]
    IntentRecord {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// `kiln refresh` would overwrite these lock files' uncommitted edits.
    #[error("error: refusing to refresh: {} {} uncommitted edits that the refresh would overwrite\n  hint: commit or stash them first, or run with --dry-run to only see what would change", list(.0), if .0.len() == 1 { "has" } else { "have" })]
    Uncommitted(Vec<PathBuf>),
    /// `kiln refresh --commit` cannot commit here; the text says why.
    #[error("error: refusing to refresh with --commit: {0}")]
    RefreshCommitRefused(String),
    /// The refreshed locks failed a target's tests: the failure, with the lines of what the
    /// refresh tried (`describe`d changes) below its first line.
    #[error("{}", refresh_failed(source, tried))]
    RefreshFailed {
        source: Box<SolveError>,
        tried: Vec<String>,
    },
    /// A string kiln was given or made is not an image reference.
    #[error("error: {0}")]
    Reference(#[from] kiln_reference::ReferenceError),
    /// A target's `image` is not a reference kiln can push.
    #[error("error: {target}: {source}")]
    TargetReference {
        target: String,
        source: kiln_reference::ReferenceError,
    },
    /// The digest a push reported does not make a reference with the target's image.
    #[error("error: {target}: pushed digest {digest}: {source}")]
    PushedDigest {
        target: String,
        digest: String,
        source: kiln_reference::ReferenceError,
    },
    /// The Docker CLI config's credentials for a registry could not be read.
    #[error("error: registry credentials: {0}")]
    Credentials(#[from] kiln_registry::AuthError),
    /// `docker push` through the engine failed, at the last attempt or at a refusal (401/403,
    /// denied: `refused`, which is not retried and says to log in).
    #[error("error: push of {image} failed (attempt {attempt} of {attempts}): {source}{}", if *refused { "\n  hint: log in with `docker login` (kiln reads ~/.docker/config.json)" } else { "" })]
    Push {
        image: String,
        attempt: u32,
        attempts: u32,
        refused: bool,
        source: Box<kiln_docker::ApiError>,
    },
    /// A builder without an engine kiln can push from did not push the image itself.
    #[error("error: {target}: the builder did not push {image}")]
    NotPushed { target: String, image: String },
    /// The registry could not say which digest a pushed tag has.
    #[error("error: push of {image}: {source}")]
    PushUnconfirmed {
        image: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// The registry's digest for the pushed tag is not the one the engine reported.
    #[error(
        "error: push of {image}: the engine reported {engine} but the registry has {registry} for the tag"
    )]
    PushMismatch {
        image: String,
        engine: String,
        registry: String,
    },
    /// `kiln pin` could not resolve `name` in its registry; `local` says what the engine had.
    #[error("error: cannot pin {source}{}", local_image(name, *local))]
    Pin {
        name: String,
        local: LocalImage,
        source: Box<kiln_registry::RegistryError>,
    },
    /// `kiln trace` found the image neither in the engine nor in its registry.
    #[error("error: trace {image}: not in the engine's image store, and the registry: {source}")]
    Trace {
        image: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// Attaching a target's SBOM or provenance (`kind`) to its pushed image failed.
    #[error("error: {target}: attaching its {kind} to {subject}: {source}")]
    Attach {
        target: String,
        kind: &'static str,
        subject: String,
        source: Box<kiln_registry::RegistryError>,
    },
    /// The engine could not save a target's image to an archive.
    #[error("error: {target}: cannot save {image} to {}: {source}", path.display())]
    Save {
        target: String,
        image: String,
        path: PathBuf,
        source: Box<kiln_docker::ApiError>,
    },
    /// `--output-image` for a target whose image is not in the engine's image store.
    #[error("error: {target}: --output-image: the target has no image in the image store")]
    NoImageToSave { target: String },
    /// A lock or declaration file is not valid.
    #[error("error: {0}")]
    Lock(#[from] kiln_lock::LockError),
    /// A target's lock file (`file`, as shown) is not valid.
    #[error("error: {file}: {source}")]
    LockFile {
        file: String,
        source: kiln_lock::LockError,
    },
    /// A target's lock file, at `path`, is not valid.
    #[error("error: target `{target}`: {}: {source}", path.display())]
    TargetLock {
        target: String,
        path: PathBuf,
        source: kiln_lock::LockError,
    },
    /// A target's lock file (`file`, as shown) could not be read.
    #[error(
        "error: target `{target}`: cannot read its lock file {file}: {source}\n  hint: run `kiln refresh {target}`"
    )]
    LockUnreadable {
        target: String,
        file: String,
        source: std::io::Error,
    },
    /// A lock file in an earlier commit is not valid.
    #[error("error: {source} (in commit {commit})")]
    LockInCommit {
        commit: git2::Oid,
        source: kiln_lock::LockError,
    },
    /// kiln.lock at the revision given to `--since` is not valid.
    #[error("error: {source} (at {revision})")]
    LockAtRevision {
        revision: String,
        source: kiln_lock::LockError,
    },
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
    /// `git: cannot {what}: …`: the one form of a failed git operation.
    pub(crate) fn git(what: &'static str, source: git2::Error) -> AppError {
        AppError::Git { what, source }
    }

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

/// A refresh's failed test: its first line, what the refresh tried, then the rest.
fn refresh_failed(source: &SolveError, tried: &[String]) -> String {
    let message = shown(source);
    let (first, rest) = message.split_once('\n').unwrap_or((&message, ""));
    let tried: String = tried.iter().map(|line| format!("\n    {line}")).collect();
    format!("error: {first}\n  the refresh tried (nothing was written):{tried}\n{rest}")
        .trim_end()
        .to_string()
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

    fn git2_error(message: &str) -> git2::Error {
        git2::Error::from_str(message)
    }

    fn lock_error() -> kiln_lock::LockError {
        kiln_lock::LockError::Syntax {
            file: "requirements.txt".to_string(),
            line: 3,
            column: 1,
            message: "expected a version".to_string(),
        }
    }

    fn registry_error() -> kiln_registry::RegistryError {
        kiln_registry::RegistryError::NotFound {
            reference: "127.0.0.1:5000/app:1".to_string(),
        }
    }

    fn reference_error() -> kiln_reference::ReferenceError {
        kiln_reference::ReferenceError {
            input: "App:1".to_string(),
            reason: "must be lowercase".to_string(),
        }
    }

    fn engine_error() -> kiln_docker::ApiError {
        kiln_docker::ApiError::Status {
            path: "/images/app/push".to_string(),
            status: 500,
            message: "boom".to_string(),
        }
    }

    /// Each variant's rendering, as the messages read before they were typed; all exit 1.
    #[test]
    fn typed_failures_read_as_the_messages_kiln_always_printed() {
        let refresh_source = SolveError::Step(Box::new(kiln_solve::StepFailed {
            target: "app".to_string(),
            stage: "test",
            source: kiln_buildkit::Error::Failed {
                action: "solve",
                message: "exit code: 1".to_string(),
            },
            step: Some("[1/1] RUN pytest".to_string()),
            output: None,
            hint: None,
        }));
        let cases: Vec<(AppError, &str)> = vec![
            (
                AppError::git("read the index", git2_error("index is corrupt")),
                "error: git: cannot read the index: index is corrupt",
            ),
            (
                AppError::BareRepository,
                "error: git: the repository is bare",
            ),
            (
                AppError::OutsideRepository("/tmp/x/requirements.txt".into()),
                "error: /tmp/x/requirements.txt is outside the git repository",
            ),
            (
                AppError::NoBranch("HEAD is detached".to_string()),
                "error: HEAD is detached",
            ),
            (
                AppError::CommitRefused("HEAD is detached".to_string()),
                "error: refusing to commit: HEAD is detached",
            ),
            (
                AppError::ChangedDuringRefresh(vec!["a/req.txt".into(), "b/req.txt".into()]),
                "error: refusing to commit: a/req.txt, b/req.txt changed during the refresh; \
                 nothing was written",
            ),
            (
                AppError::CommitUnfinished {
                    source: Box::new(AppError::git("write the index", git2_error("disk full"))),
                    note: "the next kiln command finishes or rolls back this commit".to_string(),
                },
                // One `error: ` prefix (the message once read `error: error: git: …`).
                "error: git: cannot write the index: disk full\n  note: the next kiln \
                 command finishes or rolls back this commit",
            ),
            (
                AppError::Uncommitted(vec!["app/requirements.txt".into()]),
                "error: refusing to refresh: app/requirements.txt has uncommitted edits that the \
                 refresh would overwrite\n  hint: commit or stash them first, or run with \
                 --dry-run to only see what would change",
            ),
            (
                AppError::Uncommitted(vec!["a.txt".into(), "b.txt".into()]),
                "error: refusing to refresh: a.txt, b.txt have uncommitted edits that the \
                 refresh would overwrite\n  hint: commit or stash them first, or run with \
                 --dry-run to only see what would change",
            ),
            (
                AppError::RefreshCommitRefused("HEAD is detached".to_string()),
                "error: refusing to refresh with --commit: HEAD is detached",
            ),
            (
                AppError::RefreshFailed {
                    source: Box::new(refresh_source),
                    tried: vec![
                        "app/requirements.txt:".to_string(),
                        "  flask 3.0 → 3.1".into(),
                    ],
                },
                "error: app/test: solve failed: exit code: 1\n  the refresh tried (nothing was \
                 written):\n    app/requirements.txt:\n      flask 3.0 → 3.1\n  step: [1/1] RUN \
                 pytest",
            ),
            (
                AppError::from(reference_error()),
                "error: invalid image reference `App:1`: must be lowercase",
            ),
            (
                AppError::TargetReference {
                    target: "app".to_string(),
                    source: reference_error(),
                },
                "error: app: invalid image reference `App:1`: must be lowercase",
            ),
            (
                AppError::PushedDigest {
                    target: "app".to_string(),
                    digest: "sha256:x".to_string(),
                    source: reference_error(),
                },
                "error: app: pushed digest sha256:x: invalid image reference `App:1`: must be \
                 lowercase",
            ),
            (
                AppError::from(kiln_registry::AuthError::HelperMissing("pass".to_string())),
                "error: registry credentials: credential helper `pass` is not in PATH",
            ),
            (
                AppError::Push {
                    image: "127.0.0.1:5000/app:1".to_string(),
                    attempt: 3,
                    attempts: 3,
                    refused: false,
                    source: Box::new(engine_error()),
                },
                "error: push of 127.0.0.1:5000/app:1 failed (attempt 3 of 3): Docker Engine API \
                 /images/app/push: HTTP 500: boom",
            ),
            (
                AppError::Push {
                    image: "127.0.0.1:5000/app:1".to_string(),
                    attempt: 1,
                    attempts: 3,
                    refused: true,
                    source: Box::new(engine_error()),
                },
                "error: push of 127.0.0.1:5000/app:1 failed (attempt 1 of 3): Docker Engine API \
                 /images/app/push: HTTP 500: boom\n  hint: log in with `docker login` (kiln \
                 reads ~/.docker/config.json)",
            ),
            (
                AppError::NotPushed {
                    target: "app".to_string(),
                    image: "r/app:1".to_string(),
                },
                "error: app: the builder did not push r/app:1",
            ),
            (
                AppError::PushUnconfirmed {
                    image: "r/app:1".to_string(),
                    source: Box::new(registry_error()),
                },
                "error: push of r/app:1: 127.0.0.1:5000/app:1: not found in the registry",
            ),
            (
                AppError::PushMismatch {
                    image: "r/app:1".to_string(),
                    engine: "sha256:a".to_string(),
                    registry: "sha256:b".to_string(),
                },
                "error: push of r/app:1: the engine reported sha256:a but the registry has \
                 sha256:b for the tag",
            ),
            (
                AppError::Pin {
                    name: "base:1".to_string(),
                    local: LocalImage::NotAsked,
                    source: Box::new(registry_error()),
                },
                "error: cannot pin 127.0.0.1:5000/app:1: not found in the registry",
            ),
            (
                AppError::Pin {
                    name: "base:1".to_string(),
                    local: LocalImage::Missing,
                    source: Box::new(registry_error()),
                },
                "error: cannot pin 127.0.0.1:5000/app:1: not found in the registry\n  and the \
                 Docker Engine has no image base:1 either: build, import or pull it, or correct \
                 the reference",
            ),
            (
                AppError::Pin {
                    name: "base:1".to_string(),
                    local: LocalImage::FromRegistry,
                    source: Box::new(registry_error()),
                },
                "error: cannot pin 127.0.0.1:5000/app:1: not found in the registry\n  the Docker \
                 Engine has base:1, but it came from a registry (it has a registry digest); pin \
                 it when the registry is reachable",
            ),
            (
                AppError::Trace {
                    image: "r/app:1".to_string(),
                    source: Box::new(registry_error()),
                },
                "error: trace r/app:1: not in the engine's image store, and the registry: \
                 127.0.0.1:5000/app:1: not found in the registry",
            ),
            (
                AppError::Attach {
                    target: "app".to_string(),
                    kind: "sbom",
                    subject: "127.0.0.1:5000/app:1".to_string(),
                    source: Box::new(registry_error()),
                },
                "error: app: attaching its sbom to 127.0.0.1:5000/app:1: 127.0.0.1:5000/app:1: \
                 not found in the registry",
            ),
            (
                AppError::Save {
                    target: "app".to_string(),
                    image: "sha256:abc".to_string(),
                    path: "out/app.tar".into(),
                    source: Box::new(engine_error()),
                },
                "error: app: cannot save sha256:abc to out/app.tar: Docker Engine API \
                 /images/app/push: HTTP 500: boom",
            ),
            (
                AppError::NoImageToSave {
                    target: "app".to_string(),
                },
                "error: app: --output-image: the target has no image in the image store",
            ),
            (
                AppError::from(lock_error()),
                "error: requirements.txt:3:1: expected a version",
            ),
            (
                AppError::LockFile {
                    file: "app/requirements.txt".to_string(),
                    source: lock_error(),
                },
                "error: app/requirements.txt: requirements.txt:3:1: expected a version",
            ),
            (
                AppError::TargetLock {
                    target: "app".to_string(),
                    path: "/w/app/requirements.txt".into(),
                    source: lock_error(),
                },
                "error: target `app`: /w/app/requirements.txt: requirements.txt:3:1: expected a \
                 version",
            ),
            (
                AppError::LockUnreadable {
                    target: "app".to_string(),
                    file: "app/requirements.txt".to_string(),
                    source: std::io::Error::other("permission denied"),
                },
                "error: target `app`: cannot read its lock file app/requirements.txt: permission \
                 denied\n  hint: run `kiln refresh app`",
            ),
            (
                AppError::LockInCommit {
                    commit: git2::Oid::from_str("0123456789abcdef0123456789abcdef01234567")
                        .expect("a valid oid"),
                    source: lock_error(),
                },
                "error: requirements.txt:3:1: expected a version (in commit \
                 0123456789abcdef0123456789abcdef01234567)",
            ),
            (
                AppError::LockAtRevision {
                    revision: "HEAD~1".to_string(),
                    source: lock_error(),
                },
                "error: requirements.txt:3:1: expected a version (at HEAD~1)",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.exit_code(), 1, "{error}");
        }

        let record = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let shown = record.to_string();
        let error = AppError::IntentRecord {
            path: "/w/.git/kiln-refresh.json".into(),
            source: record,
        };
        assert_eq!(
            error.to_string(),
            format!(
                "error: /w/.git/kiln-refresh.json: cannot read this record of an interrupted \
                 `kiln refresh --commit`: {shown}\n  hint: check `git status` and `git log`, \
                 then remove the file"
            )
        );
        assert_eq!(error.exit_code(), 1);
    }
}
