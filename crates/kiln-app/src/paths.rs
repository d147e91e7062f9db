//! Checks that the files and directories a manifest names exist (the IO half of `kiln check`).

use std::path::Path;

use kiln_manifest::{CaCertificates, CopySource, Diagnostic, Location, Manifest, SecretSource};

/// One diagnostic per missing context, copy source, package file, artifact, test file, CA
/// bundle or secret file (a secret from the environment is only needed by a build), and per
/// context path that exists but would not reach the builder (a symlink, an ignored file).
/// Globs are not expanded; a path containing `*`, `?` or `[` is skipped.
pub(crate) fn check_paths(cwd: &Path, manifest: &Manifest) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for (name, target) in &manifest.targets {
        let context = cwd.join(&target.context);
        let key = |k: &str| format!("target.{name}.{k}");
        if !context.is_dir() {
            problems.push(missing(
                &target.location,
                key("context"),
                format!(
                    "context directory `{}` does not exist",
                    target.context.display()
                ),
            ));
            continue;
        }
        let mut need = |location: &Location, key: String, rel: &str| {
            let rel = rel.trim_start_matches("./");
            let path = rel.trim_end_matches('/');
            if path.is_empty() || path == "." || rel.contains(['*', '?', '[']) {
                return;
            }
            if let Some((message, hint)) = unsent(&context, &target.context, rel) {
                let mut problem = missing(location, key, message);
                if hint.is_some() {
                    problem.expected =
                        Some("a path the context sends: not through a symlink, not ignored".into());
                }
                problem.hint = hint;
                problems.push(problem);
            }
        };
        for (i, copy) in target.copy.iter().enumerate() {
            if copy.from == CopySource::Context {
                need(&copy.location, key(&format!("copy[{i}].src")), &copy.src);
            }
        }
        for (i, artifact) in target.artifacts.iter().enumerate() {
            need(
                &artifact.location,
                key(&format!("artifacts[{i}].src")),
                &artifact.src,
            );
        }
        if let Some(packages) = &target.packages {
            for file in &packages.files {
                need(&packages.location, key("packages.files"), file);
            }
        }
        if let Some(smoke) = &target.smoke_test {
            for file in &smoke.copy {
                need(&smoke.location, key("smoke-test.copy"), file);
            }
        }
        if let CaCertificates::Path(path) = &target.ca_certificates {
            if !cwd.join(path).is_file() {
                problems.push(missing(
                    &target.location,
                    key("ca-certificates"),
                    format!("CA bundle `{}` does not exist", path.display()),
                ));
            }
        }
        for secret in target.secrets.values() {
            if let SecretSource::File(path) = &secret.source {
                if !cwd.join(path).is_file() {
                    problems.push(missing(
                        &secret.location,
                        key(&format!("secrets.{}", secret.name)),
                        format!("secret file `{}` does not exist", path.display()),
                    ));
                }
            }
        }
    }
    problems.sort_by(|a, b| a.location.cmp(&b.location));
    problems
}

/// Why the context path `rel` does not reach the builder, if it does not: it does not exist,
/// it is (or lies under) a symlink — the context is sent with its symlinks as they are, so
/// what one points at is not sent with it — or an ignore file excludes it. A message and a
/// hint.
fn unsent(context: &Path, shown: &Path, written: &str) -> Option<(String, Option<String>)> {
    let shown = shown.display();
    if std::fs::symlink_metadata(context.join(written)).is_err() {
        return Some((
            format!("`{written}` does not exist in context `{shown}`"),
            None,
        ));
    }
    let rel = written.trim_end_matches('/');
    let root = context.canonicalize().ok()?;
    let mut prefix = String::new();
    for part in rel.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        let path = context.join(&prefix);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            break;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let to = std::fs::read_link(&path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let what = if prefix == rel {
            format!("`{rel}` is a symlink to `{to}`")
        } else {
            format!("`{rel}` lies under `{prefix}`, a symlink to `{to}`")
        };
        let inside = path
            .canonicalize()
            .ok()
            .and_then(|real| real.strip_prefix(&root).map(Path::to_path_buf).ok());
        let rest = rel
            .get(prefix.len()..)
            .unwrap_or("")
            .trim_start_matches('/');
        return Some(match inside {
            Some(real) => (
                format!(
                    "{what}; the context is sent with its symlinks as they are, so `{}` is not sent with it",
                    real.display()
                ),
                Some(format!(
                    "name `{}` itself",
                    if rest.is_empty() {
                        real
                    } else {
                        real.join(rest)
                    }
                    .display()
                )),
            ),
            None => (
                format!(
                    "{what}, which is outside context `{shown}` (or does not exist): the builder sees only the context"
                ),
                Some("copy the file into the context, or make the context include it".to_string()),
            ),
        });
    }
    for ignore in [".dockerignore", ".kilnignore"] {
        let Ok(text) = std::fs::read_to_string(context.join(ignore)) else {
            continue;
        };
        let filter = kiln_fsutil::Filter {
            include: vec![rel.replace('\\', "\\\\")],
            exclude: kiln_fsutil::Filter::from_ignore_file(&text),
        };
        let sent = kiln_fsutil::walk(context, &filter)
            .map(|entries| {
                entries
                    .iter()
                    .any(|e| e.path_rel == rel || e.path_rel.starts_with(&format!("{rel}/")))
            })
            .unwrap_or(true);
        if !sent {
            return Some((
                format!(
                    "`{rel}` is excluded from context `{shown}` by its {ignore}, so it is not sent"
                ),
                Some(format!(
                    "remove its pattern from {ignore}, or add `!{rel}` after it"
                )),
            ));
        }
    }
    None
}

fn missing(location: &Location, key: String, message: String) -> Diagnostic {
    Diagnostic {
        location: location.clone(),
        key,
        message,
        expected: Some("an existing path".to_string()),
        hint: None,
    }
}

/// The context-path problems of [`check_paths`] for the targets of a build (`selected`): the
/// context, copy sources, artifacts, package files and test files. CA bundles and secret
/// files are the build's to read and report (`session_config`).
pub(crate) fn check_selected(
    cwd: &Path,
    manifest: &Manifest,
    selected: &[String],
) -> Vec<Diagnostic> {
    const CONTEXT_KEYS: [&str; 5] = [
        "context",
        "copy[",
        "artifacts[",
        "packages.files",
        "smoke-test.copy",
    ];
    check_paths(cwd, manifest)
        .into_iter()
        .filter(|d| {
            selected.iter().any(|t| {
                d.key
                    .strip_prefix(&format!("target.{t}."))
                    .is_some_and(|k| CONTEXT_KEYS.iter().any(|c| k.starts_with(c)))
            })
        })
        .collect()
}
