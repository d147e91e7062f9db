//! Checks that the files and directories a manifest names exist (the IO half of `kiln check`).

use std::path::Path;

use kiln_manifest::{CaCertificates, CopySource, Diagnostic, Location, Manifest, SecretSource};

/// One diagnostic per missing context, copy source, package file, artifact, test file, CA
/// bundle or secret file (a secret from the environment is only needed by a build). Globs are
/// not expanded; a path containing `*`, `?` or `[` is skipped.
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
            if rel.contains(['*', '?', '[']) || context.join(rel).exists() {
                return;
            }
            problems.push(missing(
                location,
                key,
                format!(
                    "`{rel}` does not exist in context `{}`",
                    target.context.display()
                ),
            ));
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

fn missing(location: &Location, key: String, message: String) -> Diagnostic {
    Diagnostic {
        location: location.clone(),
        key,
        message,
        expected: Some("an existing path".to_string()),
        hint: None,
    }
}
