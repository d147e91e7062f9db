//! Talks to image registries directly (the OCI distribution API, through `oci-client`): what
//! digest a reference resolves to — the multi-arch index and the platform's manifest — and
//! what digest a pushed tag has; an image's config; documents attached to an image as OCI
//! referrers (pushed and listed). Plain HTTP for registries on loopback (127.0.0.0/8,
//! `localhost`) and those named insecure; HTTPS otherwise. Transient failures (connection,
//! 5xx) are retried with backoff; 401/403/404 are not. Credentials come from the Docker CLI
//! config (`DockerConfig`: credHelpers, credsStore, auths), which the BuildKit session's Auth
//! service answers from too.

mod docker_config;

use std::time::Duration;

pub use docker_config::{AuthError, DockerConfig};
use kiln_reference::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};

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

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A document to attach to an image as an OCI referrer.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The artifact type, e.g. `application/vnd.cyclonedx+json`.
    pub artifact_type: String,
    /// The document's media type.
    pub media_type: String,
    pub data: Vec<u8>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// An image as the registry serves it.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// The (platform) manifest's digest: what a push reports.
    pub manifest_digest: String,
    /// The config blob's digest: the image id.
    pub config_digest: String,
    /// The config (`config.Labels`, …).
    pub config: serde_json::Value,
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

/// Registry credentials: a user and a password or token (an identity token has an empty
/// username). `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, secret: impl Into<String>) -> Credentials {
        let (username, secret) = (username.into(), secret.into());
        Credentials { username, secret }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <secret>)", self.username)
    }
}

/// A client for one reference's registry.
pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
    backoff: Backoff,
}

/// kiln's one retry schedule for registry traffic (the OCI API here, and pushes through the
/// Docker Engine): at most `attempts` tries, 1 s before the second, doubling after each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// At most `attempts` tries (at least one).
    pub fn new(attempts: u32) -> Backoff {
        Backoff {
            attempts: attempts.max(1),
        }
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long to wait after attempt `attempt` (counted from 1) failed, or `None` when it was
    /// the last.
    pub fn after(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.attempts)
            .then(|| Duration::from_secs(1 << attempt.saturating_sub(1).min(6)))
    }
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
            backoff: Backoff::new(4),
        }
    }

    /// The same client, trying each call at most `attempts` times (at least once).
    pub fn attempts(mut self, attempts: u32) -> Registry {
        self.backoff = Backoff::new(attempts);
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

    /// The image `reference` (a tag or digest) names, for `os`/`arch` when it is an index:
    /// its manifest digest (the platform's), its config digest (the image id) and the config.
    pub async fn image_config(
        &self,
        reference: &Reference,
        os: &str,
        arch: &str,
    ) -> Result<ImageConfig, RegistryError> {
        let bad = |message: String| RegistryError::Failed {
            reference: reference.to_string(),
            message,
            attempts: 1,
        };
        let mut target = oci_reference(reference);
        let mut manifest_digest = None;
        let manifest = loop {
            let (body, digest) = self
                .retry(reference, || {
                    self.client
                        .pull_manifest_raw(&target, &self.auth, INDEX_TYPES)
                })
                .await?;
            let manifest: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                bad(format!(
                    "the registry sent a manifest that is not JSON: {e}"
                ))
            })?;
            let Some(entries) = manifest.get("manifests").and_then(|m| m.as_array()) else {
                manifest_digest = manifest_digest.or(Some(digest));
                break manifest;
            };
            if manifest_digest.is_some() {
                return Err(bad("an index inside an index".to_string()));
            }
            let entry = entries
                .iter()
                .find(|e| e["platform"]["os"] == os && e["platform"]["architecture"] == arch)
                .and_then(|e| e["digest"].as_str())
                .ok_or_else(|| RegistryError::NoPlatform {
                    reference: reference.to_string(),
                    platform: format!("{os}/{arch}"),
                })?;
            manifest_digest = Some(entry.to_string());
            target = oci_client::Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                entry.to_string(),
            );
        };
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| bad("the manifest has no config digest".to_string()))?
            .to_string();
        let blob = self
            .retry(reference, || async {
                let mut blob = Vec::new();
                self.client
                    .pull_blob(&target, config_digest.as_str(), &mut blob)
                    .await
                    .map(|()| blob)
            })
            .await?;
        let config = serde_json::from_slice(&blob)
            .map_err(|e| bad(format!("the image config is not JSON: {e}")))?;
        Ok(ImageConfig {
            manifest_digest: manifest_digest.unwrap_or_default(),
            config_digest,
            config,
        })
    }

    /// Attach `attachment` to the manifest `subject` (a `repo@digest`) as an OCI referrer: an
    /// image manifest with `artifactType`, an empty config, the document as its one layer and
    /// `subject` pointing at the image. Registries without the referrers API (docker-registry
    /// 2.8) find it through the referrers tag schema, so the index at tag `sha256-HEX` is
    /// updated too (merged, without duplicates). Returns the artifact manifest's digest.
    pub async fn attach(
        &self,
        subject: &Reference,
        attachment: &Attachment,
    ) -> Result<String, RegistryError> {
        let bad = |message: String| RegistryError::Failed {
            reference: subject.to_string(),
            message,
            attempts: 1,
        };
        let Some(subject_digest) = subject.digest() else {
            return Err(bad("a referrer's subject needs a digest".to_string()));
        };
        let target = oci_reference(subject);
        let (body, _) = self
            .retry(subject, || {
                self.client
                    .pull_manifest_raw(&target, &self.auth, INDEX_TYPES)
            })
            .await?;
        let subject_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|m| m["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
        let blob = |data: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(data)));
        const EMPTY: &[u8] = b"{}";
        for data in [EMPTY, attachment.data.as_slice()] {
            let digest = blob(data);
            self.retry(subject, || {
                self.client.push_blob(&target, data.to_vec(), &digest)
            })
            .await?;
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": attachment.artifact_type,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": blob(EMPTY),
                "size": EMPTY.len(),
                "data": "e30=",
            },
            "layers": [{
                "mediaType": attachment.media_type,
                "digest": blob(&attachment.data),
                "size": attachment.data.len(),
            }],
            "subject": {
                "mediaType": subject_type,
                "digest": subject_digest,
                "size": body.len(),
            },
            "annotations": attachment.annotations,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = blob(&manifest);
        let at = oci_client::Reference::with_digest(
            target.registry().to_string(),
            target.repository().to_string(),
            digest.clone(),
        );
        self.retry(subject, || {
            self.client.push_manifest_raw(
                &at,
                manifest.clone(),
                http::HeaderValue::from_static(OCI_MANIFEST),
            )
        })
        .await?;

        // The referrers tag schema: the index at `sha256-HEX` lists every referrer.
        let tag = oci_client::Reference::with_tag(
            target.registry().to_string(),
            target.repository().to_string(),
            subject_digest.replace(':', "-"),
        );
        let mut index: serde_json::Value = match self
            .retry(subject, || {
                self.client
                    .pull_manifest_raw(&tag, &self.auth, &[OCI_INDEX])
            })
            .await
        {
            Ok((body, _)) => serde_json::from_slice(&body)
                .map_err(|e| bad(format!("the referrers index is not JSON: {e}")))?,
            Err(RegistryError::NotFound { .. }) => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [],
            }),
            Err(e) => return Err(e),
        };
        let Some(entries) = index["manifests"].as_array_mut() else {
            return Err(bad("the referrers index has no manifests list".to_string()));
        };
        if !entries.iter().any(|e| e["digest"] == digest.as_str()) {
            entries.push(serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": manifest.len(),
                "artifactType": attachment.artifact_type,
                "annotations": attachment.annotations,
            }));
            let body = serde_json::to_vec(&index).unwrap_or_default();
            self.retry(subject, || {
                self.client.push_manifest_raw(
                    &tag,
                    body.clone(),
                    http::HeaderValue::from_static(OCI_INDEX),
                )
            })
            .await?;
        }
        Ok(digest)
    }

    /// The referrers of `subject` (`repo@digest`): artifact type and manifest digest of each
    /// (the referrers API, else the referrers tag schema).
    pub async fn referrers(
        &self,
        subject: &Reference,
    ) -> Result<Vec<(String, String)>, RegistryError> {
        let target = oci_reference(subject);
        self.client
            .store_auth_if_needed(target.resolve_registry(), &self.auth)
            .await;
        let index = self
            .retry(subject, || self.client.pull_referrers(&target, None))
            .await?;
        Ok(index
            .manifests
            .into_iter()
            .map(|e| (e.artifact_type.unwrap_or_default(), e.digest))
            .collect())
    }

    /// The `Docker-Content-Digest` the registry reports for `reference`'s tag now.
    pub async fn tag_digest(&self, reference: &Reference) -> Result<String, RegistryError> {
        let target = oci_reference(reference);
        self.retry(reference, || {
            self.client.fetch_manifest_digest(&target, &self.auth)
        })
        .await
    }

    /// Run `call` until it succeeds, fails for good, or the attempts are used up (`Backoff`:
    /// 1 s, 2 s, 4 s between them).
    async fn retry<T, F, Fut>(&self, reference: &Reference, call: F) -> Result<T, RegistryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    // reqwest's own message ("error sending request for url …") hides why:
                    // DNS, refused, TLS; the sources say it.
                    let text = chain(&e);
                    let permanent = classify(reference, &e, &text)?;
                    match self.backoff.after(attempt) {
                        Some(delay) if !permanent => tokio::time::sleep(delay).await,
                        _ => {
                            return Err(RegistryError::Failed {
                                reference: reference.to_string(),
                                message: text,
                                attempts: attempt,
                            });
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }
}

/// `Err` for failures with their own message (denied, not found); `Ok(true)` for other
/// failures not worth retrying; `Ok(false)` for transient ones. Decided on oci-client's typed
/// errors and HTTP status codes; the text (`text`, the error and its sources) is only read for
/// transport failures, and never for numbers, which a reference or URL may contain (a tag
/// `…84013` is not a 401).
fn classify(
    reference: &Reference,
    error: &oci_client::errors::OciDistributionError,
    text: &str,
) -> Result<bool, RegistryError> {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let denied = || RegistryError::Denied {
        reference: reference.to_string(),
        hint: "\n  hint: log in with `docker login` (kiln reads ~/.docker/config.json)".to_string(),
    };
    let not_found = || RegistryError::NotFound {
        reference: reference.to_string(),
    };
    let by_status = |code: u16| match code {
        401 | 403 => Err(denied()),
        404 => Err(not_found()),
        408 | 429 | 500..=599 => Ok(false),
        _ => Ok(true),
    };
    match error {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => Err(denied()),
        E::ImageManifestNotFoundError(_) => Err(not_found()),
        E::ServerError { code, .. } => by_status(*code),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, C::Unauthorized | C::Denied))
            {
                Err(denied())
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    C::ManifestUnknown | C::NameUnknown | C::NotFound | C::BlobUnknown
                )
            }) {
                Err(not_found())
            } else if codes.iter().any(|c| matches!(c, C::Toomanyrequests)) {
                Ok(false)
            } else {
                Ok(true)
            }
        }
        E::RequestError(e) => match e.status() {
            Some(status) => by_status(status.as_u16()),
            None => {
                let lower = text.to_lowercase();
                let transient = e.is_connect()
                    || e.is_timeout()
                    || lower.contains("connect")
                    || lower.contains("timed out")
                    || lower.contains("dns");
                Ok(!transient)
            }
        },
        E::IoError(_) => Ok(false),
        _ => Ok(true),
    }
}

/// An error and its sources, joined with `: ` (a source already in the text is skipped).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
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
    fn the_backoff_waits_one_second_then_doubles_until_the_last_attempt() {
        let waits: Vec<_> = (1..=5).map(|a| Backoff::new(4).after(a)).collect();
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(waits, [s(1), s(2), s(4), None, None]);
        assert_eq!(Backoff::new(0).attempts(), 1, "at least one try");
        assert_eq!(Backoff::new(1).after(1), None);
        assert_eq!(Backoff::new(100).after(50), s(64), "capped");
    }

    #[test]
    fn failures_are_classified_by_status_never_by_digits_in_the_reference() {
        use oci_client::errors::OciDistributionError as E;
        // A tag whose digits contain "401" and "403", as unique test tags do.
        let reference = Reference::parse("127.0.0.1:5000/kiln-test/absent:1-4013-4030").unwrap();
        let url = "http://127.0.0.1:5000/v2/kiln-test/absent/manifests/1-4013-4030".to_string();
        let missing = E::ServerError {
            code: 404,
            url: url.clone(),
            message: "manifest unknown 1-4013-4030".into(),
        };
        assert!(matches!(
            classify(&reference, &missing, &missing.to_string()),
            Err(RegistryError::NotFound { .. })
        ));
        let denied = E::UnauthorizedError { url: url.clone() };
        assert!(matches!(
            classify(&reference, &denied, &denied.to_string()),
            Err(RegistryError::Denied { .. })
        ));
        let busy = E::ServerError {
            code: 503,
            url,
            message: String::new(),
        };
        assert!(matches!(classify(&reference, &busy, ""), Ok(false)));
    }

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
