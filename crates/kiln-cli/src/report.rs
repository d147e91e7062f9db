//! How an error reads on stderr: `error: `, the message, then a line per hint and note
//! (kiln-app's `AppError` gives the three; a list of located problems shows as it is).

use kiln_app::AppError;

/// The error as kiln prints it.
pub fn render(err: &AppError) -> String {
    err.report()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_app::{AppError, LocalImage};
    use kiln_solve::SolveError;

    fn git(what: &'static str, source: git2::Error) -> AppError {
        AppError::Git { what, source }
    }

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
            render(&error),
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
            render(&down),
            format!("error: no builder of the pool answers:\n{one}\n{one}")
        );

        let load = AppError::from(SolveError::LoadEngine(kiln_docker::ApiError::Connect {
            socket: "/nonexistent/d.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }));
        assert!(
            render(&load).starts_with("error: --load: ")
                && render(&load).ends_with(
                    "\n  hint: the image is loaded into this Docker Engine (DOCKER_HOST, else \
                     /var/run/docker.sock); `kiln engine up` starts one"
                ),
            "{}",
            render(&load)
        );
    }

    /// A wrapped error keeps its one `error: ` and its hint, the note below; a list of
    /// problems shows as it is, with no `error: ` added.
    #[test]
    fn a_wrapped_error_and_a_list_read_as_they_always_did() {
        let unfinished = AppError::CommitUnfinished {
            source: Box::new(AppError::from(unreachable_engine())),
            note: "the next kiln command finishes or rolls back this commit".to_string(),
        };
        assert_eq!(
            render(&unfinished),
            "error: cannot reach BuildKit at docker:///nonexistent/d.sock: No such file or \
             directory\n  hint: is the engine running? `kiln engine status`, `kiln engine up`\n  \
             note: the next kiln command finishes or rolls back this commit"
        );
        let locked = AppError::Locked("error: a: drift\nerror: b: drift".to_string());
        assert_eq!(render(&locked), "error: a: drift\nerror: b: drift");
    }

    #[test]
    fn a_pool_whose_every_builder_stopped_answering_says_error_once() {
        let exhausted = AppError::from(SolveError::PoolExhausted {
            last: Box::new(unreachable_engine()),
        });
        assert_eq!(
            render(&exhausted),
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
            render(&interrupted),
            "error: interrupted; the in-flight build was cancelled"
        );
        let nothing = AppError::from(SolveError::NothingToRefresh {
            target: Some("app".to_string()),
        });
        assert_eq!(nothing.exit_code(), 2);
        assert_eq!(
            render(&nothing),
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
                git("read the index", git2_error("index is corrupt")),
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
                    source: Box::new(git("write the index", git2_error("disk full"))),
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
            assert_eq!(render(&error), expected);
            assert_eq!(error.exit_code(), 1, "{}", render(&error));
        }

        let record = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let shown = record.to_string();
        let error = AppError::IntentRecord {
            path: "/w/.git/kiln-refresh.json".into(),
            source: record,
        };
        assert_eq!(
            render(&error),
            format!(
                "error: /w/.git/kiln-refresh.json: cannot read this record of an interrupted \
                 `kiln refresh --commit`: {shown}\n  hint: check `git status` and `git log`, \
                 then remove the file"
            )
        );
        assert_eq!(error.exit_code(), 1);
    }
}
