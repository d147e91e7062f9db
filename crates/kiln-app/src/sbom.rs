//! `kiln sbom TARGET`: a CycloneDX 1.5 JSON document of what the target's image holds by
//! construction — every package its lock files pin (and those of the targets it builds on),
//! with name, version, purl and the hashes the lock records — and its base image as
//! `kiln.lock` pins it. Exact, not scanned: it says what kiln installed. Deterministic (no
//! timestamp, no random serial number), so the same tree gives the same document.

use std::collections::BTreeSet;

use base64::Engine as _;
use kiln_graph::PackagesMode;
use kiln_manifest::{Base, CopySource};
use serde_json::{Value, json};

use crate::{AppError, Settings};

/// `kiln sbom TARGET`.
pub fn sbom(settings: &Settings, target: &str) -> Result<String, AppError> {
    let loaded = crate::load(settings, PackagesMode::Pinned)?;
    let doc = document(settings, &loaded, target)?;
    Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n")
}

/// The CycloneDX document of `target`.
pub(crate) fn document(
    settings: &Settings,
    loaded: &crate::Loaded,
    target: &str,
) -> Result<Value, AppError> {
    let Some(t) = loaded.manifest.targets.get(target) else {
        return Err(AppError::Usage(format!(
            "`{target}` is not a target; kiln sbom takes one target"
        )));
    };
    let (_, compiled) = loaded.compile(&[target.to_string()])?;
    let own = crate::build::own_inputs(settings, loaded, &compiled)?;
    let inputs = kiln_record::inputs(&own, &loaded.lock);
    let root = crate::labels::work_tree(settings).map(|(_, r)| r);

    // The target and every target it builds on: their packages are all in the image.
    let mut chain = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![target.to_string()];
    while let Some(name) = todo.pop() {
        let Some(t) = loaded.manifest.targets.get(&name) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Base::Target(d) = &t.from {
            todo.push(d.clone());
        }
        for c in &t.copy {
            if let CopySource::Target(d) = &c.from {
                todo.push(d.clone());
            }
        }
        chain.push(t);
    }

    let mut components = Vec::new();
    let mut refs = BTreeSet::new();
    for t in &chain {
        let Some(packages) = &t.packages else {
            continue;
        };
        for file in &packages.lock {
            let Some(format) = packages.lock_format(file) else {
                continue;
            };
            let path = settings.cwd.join(&t.context).join(file);
            let shown = crate::labels::repo_path(&settings.cwd, root.as_deref(), &path);
            let text =
                std::fs::read_to_string(&path).map_err(|source| AppError::LockUnreadable {
                    target: t.name.clone(),
                    file: shown.clone(),
                    source,
                })?;
            let pinned =
                kiln_lock::packages(format, &text).map_err(|source| AppError::LockFile {
                    file: shown.clone(),
                    source,
                })?;
            for p in pinned {
                let purl = purl(&p);
                // The same package pinned by two lock files is one component.
                if !refs.insert(purl.clone()) {
                    continue;
                }
                let hashes: Vec<Value> =
                    p.hashes.iter().filter_map(|h| cyclonedx_hash(h)).collect();
                let mut c = json!({
                    "type": "library",
                    "bom-ref": purl,
                    "name": p.name,
                    "version": p.version,
                    "purl": purl,
                    "properties": [
                        {"name": "kiln:lock-file", "value": shown},
                        {"name": "kiln:target", "value": t.name},
                    ],
                });
                if !hashes.is_empty() {
                    c["hashes"] = Value::Array(hashes);
                }
                components.push(c);
            }
        }
    }
    // The base image the chain starts from.
    if let Some(Base::Image(r)) = chain.last().map(|t| &t.from) {
        let bare = r.without_digest();
        let pin = loaded.lock.base(&bare.to_string());
        let mut c = json!({
            "type": "container",
            "bom-ref": format!("base:{bare}"),
            "name": bare.to_string(),
        });
        let mut properties = vec![json!({"name": "kiln:role", "value": "base"})];
        if let Some(digest) = pin.and_then(|p| p.digest.as_deref()) {
            c["version"] = json!(digest);
            if let Some(h) = cyclonedx_hash(digest) {
                c["hashes"] = json!([h]);
            }
        }
        if let Some(id) = pin.and_then(|p| p.image_id.as_deref()) {
            properties.push(json!({"name": "kiln:image-id", "value": id}));
        }
        c["properties"] = Value::Array(properties);
        components.push(c);
    }

    // The repository without its tag: the same image pushed under another tag has the same
    // document (and so the same referrer digest).
    let name = t
        .image
        .as_ref()
        .map(|i| i.name())
        .unwrap_or_else(|| target.to_string());
    let mut properties = vec![
        json!({"name": "kiln:target", "value": target}),
        json!({"name": "kiln:manifest", "value": crate::labels::repo_path(&settings.cwd, root.as_deref(), &t.location.file)}),
    ];
    if let Some(i) = inputs.get(target) {
        properties.push(json!({"name": "kiln:inputs", "value": i.hash}));
    }
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": {"components": [{
                "type": "application",
                "name": "kiln",
                "version": crate::labels::VERSION,
            }]},
            "component": {
                "type": "container",
                "bom-ref": format!("target:{target}"),
                "name": name,
                "properties": properties,
            },
        },
        "components": components,
    });
    Ok(doc)
}

/// A package URL: `pkg:pypi/NAME@VERSION`, `pkg:npm/%40SCOPE/NAME@VERSION`.
fn purl(p: &kiln_lock::Package) -> String {
    let name = match p.name.strip_prefix('@') {
        Some(scoped) => format!("%40{scoped}"),
        None => p.name.clone(),
    };
    format!(
        "pkg:{}/{name}@{}",
        p.ecosystem,
        p.version.replace('+', "%2B")
    )
}

/// `sha256:HEX` or an SRI `sha512-BASE64` as a CycloneDX hash (`alg`, lowercase hex
/// `content`); algorithms CycloneDX does not name are left out.
fn cyclonedx_hash(h: &str) -> Option<Value> {
    let (alg, content) = match (h.split_once(':'), h.split_once('-')) {
        (Some((alg, hex)), _) => (alg, hex.to_ascii_lowercase()),
        (None, Some((alg, b64))) => (
            alg,
            hex::encode(base64::engine::general_purpose::STANDARD.decode(b64).ok()?),
        ),
        _ => return None,
    };
    let alg = match alg {
        "md5" => "MD5",
        "sha1" => "SHA-1",
        "sha256" => "SHA-256",
        "sha384" => "SHA-384",
        "sha512" => "SHA-512",
        _ => return None,
    };
    if content.is_empty() || !content.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(json!({"alg": alg, "content": content}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_purls() {
        assert_eq!(
            cyclonedx_hash("sha256:AB01").unwrap(),
            json!({"alg": "SHA-256", "content": "ab01"})
        );
        assert_eq!(
            cyclonedx_hash("sha512-AAEC").unwrap(),
            json!({"alg": "SHA-512", "content": "000102"})
        );
        assert!(cyclonedx_hash("blake9:00").is_none());
        assert!(cyclonedx_hash("sha256:xyz").is_none());
        let p = kiln_lock::Package {
            name: "@scope/left".into(),
            version: "1.0.0".into(),
            ecosystem: "npm",
            hashes: vec![],
        };
        assert_eq!(purl(&p), "pkg:npm/%40scope/left@1.0.0");
    }
}
