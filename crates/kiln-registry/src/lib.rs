//! Talks to image registries directly (the OCI distribution API, through `oci-client`): what
//! digest a reference resolves to — the multi-arch index and the platform's manifest — and
//! what digest a pushed tag has. Plain HTTP for registries on loopback (127.0.0.0/8,
//! `localhost`) and those named insecure; HTTPS otherwise. Transient failures (connection,
//! 5xx) are retried with backoff; 401/403/404 are not.

use std::time::Duration;

use kiln_reference::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The digest the reference points at: a multi-arch index, or a single manifest.
    pub digest: String,
    /// The platform's manifest digest when `digest` is an index (else equal to `digest`).
    pub platform_digest: String,
}

/// Why a registry request failed, said so a user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: the registry refused the credentials (401/403){hint}")]
    Denied { reference: String, hint: String },
    #[error("{reference}: not found in the registry")]
    NotFound { reference: String },
    #[error("{reference}: the index has no manifest for {platform}")]
    NoPlatform { reference: String, platform: String },
    #[error("{reference}: {message} (after {attempts} attempts)")]
    Failed {
        reference: String,
        message: String,
        attempts: u32,
    },
}

/// Registry credentials: a user and a password or token.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

/// A client for one reference's registry.
pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
    attempts: u32,
}

/// Whether `host` (with an optional port) is served over plain HTTP.
pub fn is_insecure(host: &str, insecure: &[String]) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    name == "localhost"
        || name.starts_with("127.")
        || name == "[::1]"
        || insecure.iter().any(|i| i == host || i == name)
}

impl Registry {
    /// A client for `reference`'s registry with `credentials` (anonymous when `None`);
    /// `insecure` lists extra hosts to reach over plain HTTP.
    pub fn new(
        reference: &Reference,
        credentials: Option<Credentials>,
        insecure: &[String],
    ) -> Registry {
        let protocol = if is_insecure(reference.domain(), insecure) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            read_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Some(Duration::from_secs(10)),
            ..ClientConfig::default()
        });
        let auth = match credentials {
            Some(c) if !c.username.is_empty() => RegistryAuth::Basic(c.username, c.secret),
            Some(c) if !c.secret.is_empty() => RegistryAuth::Bearer(c.secret),
            _ => RegistryAuth::Anonymous,
        };
        Registry {
            client,
            auth,
            attempts: 4,
        }
    }

    /// The same client, trying each call at most `attempts` times (at least once).
    pub fn attempts(mut self, attempts: u32) -> Registry {
        self.attempts = attempts.max(1);
        self
    }

    /// The digest `reference` (a tag) points at, and its manifest for `os`/`arch`/`variant`.
    pub async fn resolve(
        &self,
        reference: &Reference,
        os: &str,
        arch: &str,
        variant: Option<&str>,
    ) -> Result<Resolved, RegistryError> {
        let target = oci_reference(reference);
        let (body, digest) = self
            .retry(reference, || {
                self.client
                    .pull_manifest_raw(&target, &self.auth, INDEX_TYPES)
            })
            .await?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Failed {
                reference: reference.to_string(),
                message: format!("the registry sent a manifest that is not JSON: {e}"),
                attempts: 1,
            })?;
        let Some(entries) = manifest.get("manifests").and_then(|m| m.as_array()) else {
            return Ok(Resolved {
                platform_digest: digest.clone(),
                digest,
            });
        };
        let wanted = |e: &&serde_json::Value| {
            let p = &e["platform"];
            p["os"] == os && p["architecture"] == arch && variant.is_none_or(|v| p["variant"] == v)
        };
        let entry = entries
            .iter()
            .find(wanted)
            .ok_or_else(|| RegistryError::NoPlatform {
                reference: reference.to_string(),
                platform: format!(
                    "{os}/{arch}{}",
                    variant.map(|v| format!("/{v}")).unwrap_or_default()
                ),
            })?;
        Ok(Resolved {
            digest,
            platform_digest: entry["digest"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// The `Docker-Content-Digest` the registry reports for `reference`'s tag now.
    pub async fn tag_digest(&self, reference: &Reference) -> Result<String, RegistryError> {
        let target = oci_reference(reference);
        self.retry(reference, || {
            self.client.fetch_manifest_digest(&target, &self.auth)
        })
        .await
    }

    /// Run `call` until it succeeds, fails for good, or the attempts are used up (1 s, 2 s,
    /// 4 s between them).
    async fn retry<T, F, Fut>(&self, reference: &Reference, call: F) -> Result<T, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    {
        let mut delay = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let text = e.to_string();
                    let permanent = classify(reference, &text)?;
                    if permanent || attempt >= self.attempts {
                        return Err(RegistryError::Failed {
                            reference: reference.to_string(),
                            message: text,
                            attempts: attempt,
                        });
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// `Err` for failures with their own message (denied, not found); `Ok(true)` for other
/// failures not worth retrying; `Ok(false)` for transient ones.
fn classify(reference: &Reference, text: &str) -> Result<bool, RegistryError> {
    let lower = text.to_lowercase();
    if lower.contains("401") || lower.contains("403") || lower.contains("unauthorized") {
        return Err(RegistryError::Denied {
            reference: reference.to_string(),
            hint: "\n  hint: log in with `docker login` (kiln reads ~/.docker/config.json)"
                .to_string(),
        });
    }
    if lower.contains("404") || lower.contains("manifest unknown") || lower.contains("not found") {
        return Err(RegistryError::NotFound {
            reference: reference.to_string(),
        });
    }
    let transient = lower.contains("connect")
        || lower.contains("timed out")
        || lower.contains("500")
        || lower.contains("502")
        || lower.contains("503")
        || lower.contains("504")
        || lower.contains("dns");
    Ok(!transient)
}

fn oci_reference(reference: &Reference) -> oci_client::Reference {
    let r = reference.without_digest();
    let tag = r.tag().unwrap_or("latest").to_string();
    match reference.digest() {
        Some(digest) => oci_client::Reference::with_digest(
            r.domain().to_string(),
            r.path().to_string(),
            digest.to_string(),
        ),
        None => oci_client::Reference::with_tag(r.domain().to_string(), r.path().to_string(), tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_are_plain_http() {
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure(
            "registry.lan:5000",
            &["registry.lan:5000".to_string()]
        ));
        assert!(!is_insecure("ghcr.io", &[]));
        assert!(!is_insecure("docker.io", &[]));
    }
}
