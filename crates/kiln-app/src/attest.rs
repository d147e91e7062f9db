//! `kiln build --push` attaches two documents to every pushed image as OCI referrers
//! (`subject` = the pushed manifest digest; on registries without the referrers API, through
//! the referrers tag schema): the target's CycloneDX SBOM (see `sbom`) and an in-toto
//! Statement v1 with a SLSA v1 provenance predicate — the builder (kiln and its version), the
//! resolved manifest entry, and the materials: the git commit, each lock file, the base pin.
//! Both are deterministic, so pushing an unchanged image again adds no new referrer.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::labels::key;
use crate::{AppError, Loaded, Settings};

/// The SBOM's artifact type.
pub const SBOM_TYPE: &str = "application/vnd.cyclonedx+json";
/// The provenance statement's artifact type.
pub const PROVENANCE_TYPE: &str = "application/vnd.in-toto+json";

/// Attach the SBOM and provenance of every pushed target (`pushed`: target → digest).
pub(crate) fn attach_all(
    settings: &Settings,
    loaded: &Loaded,
    pushed: &BTreeMap<String, String>,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
    out: &mut String,
) -> Result<(), AppError> {
    if pushed.is_empty() {
        return Ok(());
    }
    let access = crate::pin::Access::new(settings)?;
    let commit = crate::labels::work_tree(settings).and_then(|(repo, _)| {
        let head = repo.head().ok()?.peel_to_commit().ok()?;
        let dirty = repo
            .statuses(None)
            .map(|s| {
                s.iter()
                    .any(|e| !e.status().is_ignored() && !e.status().is_wt_new())
            })
            .unwrap_or(false);
        Some((head.id().to_string(), dirty))
    });
    for (name, digest) in pushed {
        let Some(target) = loaded.manifest.targets.get(name) else {
            continue;
        };
        let Some(image) = &target.image else { continue };
        let subject = image
            .without_digest()
            .with_digest(digest)
            .map_err(|source| AppError::PushedDigest {
                target: name.clone(),
                digest: digest.clone(),
                source,
            })?;
        let empty = BTreeMap::new();
        let labels = labels.get(name).unwrap_or(&empty);
        let sbom = crate::sbom::document(settings, loaded, name)?;
        let provenance = statement(loaded, target, &subject, labels, commit.as_ref());
        let registry = access.registry(&subject)?;
        for (artifact_type, doc) in [(SBOM_TYPE, sbom), (PROVENANCE_TYPE, provenance)] {
            let attachment = kiln_registry::Attachment {
                artifact_type: artifact_type.to_string(),
                media_type: artifact_type.to_string(),
                data: serde_json::to_vec(&doc).unwrap_or_default(),
                annotations: BTreeMap::from([(
                    "org.opencontainers.image.title".to_string(),
                    format!("{name} {}", kind(artifact_type)),
                )]),
            };
            let at = crate::runtime::block_on(registry.attach(&subject, &attachment))?.map_err(
                |source| AppError::Attach {
                    target: name.clone(),
                    kind: kind(artifact_type),
                    subject: subject.to_string(),
                    source: Box::new(source),
                },
            )?;
            out.push_str(&format!("{name}: attached {} {at}\n", kind(artifact_type)));
        }
    }
    Ok(())
}

fn kind(artifact_type: &str) -> &'static str {
    if artifact_type == SBOM_TYPE {
        "sbom"
    } else {
        "provenance"
    }
}

/// `sha256:HEX` as an in-toto digest set.
fn digest_set(digest: &str) -> Value {
    match digest.split_once(':') {
        Some((alg, hex)) => json!({ alg: hex }),
        None => json!({}),
    }
}

/// The in-toto Statement v1 / SLSA provenance v1 of `subject`.
fn statement(
    loaded: &Loaded,
    target: &kiln_manifest::Target,
    subject: &kiln_reference::Reference,
    labels: &BTreeMap<String, String>,
    commit: Option<&(String, bool)>,
) -> Value {
    let entry: Value = serde_json::from_str(&kiln_record::manifest_entry(target, &loaded.lock))
        .unwrap_or(Value::Null);
    let mut materials = Vec::new();
    if let Some((id, dirty)) = commit {
        let source = labels
            .get(key::OCI_SOURCE)
            .cloned()
            .unwrap_or_else(|| "git".to_string());
        materials.push(json!({
            "uri": format!("git+{source}"),
            "digest": {"gitCommit": id},
            "annotations": {"dirty": dirty},
        }));
    }
    for (k, v) in labels {
        if let Some(path) = k.strip_prefix(key::LOCK_FILE) {
            materials.push(json!({"name": path, "digest": digest_set(v)}));
        }
    }
    if let Some(base) = labels.get(key::BASE) {
        let mut m = json!({"uri": base});
        if let Some(d) = labels.get(key::OCI_BASE_DIGEST) {
            m["digest"] = digest_set(d);
        }
        if let Some(id) = labels.get(key::BASE_IMAGE_ID) {
            m["annotations"] = json!({"imageId": id});
        }
        materials.push(m);
    }
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            // Without the tag: the document depends on the image only.
            "name": subject.name(),
            "digest": digest_set(subject.digest().unwrap_or_default()),
        }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "urn:kiln:build:v1",
                "externalParameters": {
                    "target": target.name,
                    "manifest": labels.get(key::MANIFEST),
                    "profile": loaded.manifest.profile,
                    "entry": entry,
                },
                "internalParameters": {
                    "inputs": labels.get(key::INPUTS),
                },
                "resolvedDependencies": materials,
            },
            "runDetails": {
                "builder": {
                    "id": "urn:kiln:builder",
                    "version": {"kiln": crate::labels::VERSION},
                },
            },
        },
    })
}
