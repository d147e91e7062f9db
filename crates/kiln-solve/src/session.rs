//! What a build's sessions serve: every selected context with its ignore files, each
//! target's CA bundle and `[secrets]` under the target's own secret ids, and registry
//! credentials, all read before any connection; and the entitlements the solves ask for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_buildkit::{LocalDir, SessionConfig};
use kiln_manifest::{CaCertificates, Manifest, NetworkMode};

use crate::{HOST_CA_BUNDLE, SolveError};

/// Every selected target's context, its ignore files, its CA bundle and `[secrets]` (each
/// under the target's own secret ids) and registry credentials. A secret whose environment
/// variable is unset or whose file cannot be read is an error here, before any solve.
pub fn session_config(
    cwd: &Path,
    env: &BTreeMap<String, String>,
    manifest: &Manifest,
    selected: &[String],
    kiln_lock: &Path,
    registry_auth: Option<std::sync::Arc<dyn kiln_buildkit::RegistryAuth>>,
) -> Result<SessionConfig, SolveError> {
    // A stable key per working tree lets the daemon reuse its last copy of each context.
    let mut config = SessionConfig {
        name: "kiln".to_string(),
        shared_key: format!("kiln:{}", cwd.display()),
        registry_auth,
        ..SessionConfig::default()
    };
    for name in selected {
        let target = &manifest.targets[name];
        let path = cwd.join(&target.context);
        let exclude = kiln_record::ignored(&kiln_record::Disk, &path, kiln_lock);
        config
            .contexts
            .insert(name.clone(), LocalDir { path, exclude });
        let bundle = match &target.ca_certificates {
            CaCertificates::None => None,
            CaCertificates::Host => Some(PathBuf::from(HOST_CA_BUNDLE)),
            CaCertificates::Path(p) => Some(cwd.join(p)),
        };
        if let Some(bundle) = bundle {
            let data = std::fs::read(&bundle).map_err(|source| SolveError::Io {
                path: bundle.clone(),
                action: "read CA bundle",
                source,
            })?;
            if let Some(id) = kiln_compile::ca_bundle_secret(name, &target.ca_certificates) {
                config.secrets.insert(id, data);
            }
        }
    }
    let mut missing = Vec::new();
    for name in selected {
        for secret in manifest.targets[name].secrets.values() {
            match secret_value(cwd, env, secret) {
                Ok(data) => {
                    config
                        .secrets
                        .insert(kiln_compile::secret_id(name, &secret.name), data);
                }
                Err((message, hint)) => {
                    // Quoted as in the manifest's own messages when not a bare key.
                    let bare = secret
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    let key = if bare {
                        secret.name.clone()
                    } else {
                        format!("{:?}", secret.name)
                    };
                    missing.push(kiln_manifest::Diagnostic {
                        location: secret.location.clone(),
                        key: format!("target.{name}.secrets.{key}"),
                        message,
                        expected: None,
                        hint: Some(hint),
                    })
                }
            }
        }
    }
    if !missing.is_empty() {
        missing.sort_by(|a, b| a.location.cmp(&b.location));
        return Err(SolveError::Secrets(kiln_manifest::Diagnostics(missing)));
    }
    Ok(config)
}

/// A secret's value: its environment variable (from `env`, never the process's own) or its
/// file (relative to `cwd`). Else what is wrong and a hint.
fn secret_value(
    cwd: &Path,
    env: &BTreeMap<String, String>,
    secret: &kiln_manifest::Secret,
) -> Result<Vec<u8>, (String, String)> {
    match &secret.source {
        kiln_manifest::SecretSource::Env(var) => {
            env.get(var).map(|v| v.as_bytes().to_vec()).ok_or_else(|| {
                (
                    format!(
                        "secret `{}` comes from the environment variable `{var}`, which is not set",
                        secret.name
                    ),
                    format!("set `{var}` for kiln, e.g. `{var}=… kiln build`"),
                )
            })
        }
        kiln_manifest::SecretSource::File(path) => std::fs::read(cwd.join(path)).map_err(|e| {
            (
                format!(
                    "secret `{}` comes from the file `{}`, which cannot be read: {e}",
                    secret.name,
                    path.display()
                ),
                "a relative `file` is relative to the manifest's directory".to_string(),
            )
        }),
    }
}

/// The entitlements the selected targets' solves need (`network.host` for host networking).
pub(crate) fn entitlements(manifest: &Manifest, selected: &[String]) -> Vec<String> {
    if selected
        .iter()
        .any(|t| manifest.targets[t].network == NetworkMode::Host)
    {
        vec!["network.host".to_string()]
    } else {
        Vec::new()
    }
}
