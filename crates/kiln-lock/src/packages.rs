//! Every package a lock file pins, with the hashes the lock records for it: what an SBOM
//! lists. Versions come from [`crate::pins`] (the same reading as everywhere else); this adds
//! the hashes: uv.lock's and poetry.lock's per-file `hash`, pip-compile's `--hash=`, npm's
//! `integrity`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::{LockError, LockFormat, normalize_python_name, pins};

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// As [`crate::pins`] names it (Python names normalised, PEP 503).
    pub name: String,
    pub version: String,
    /// `pypi` or `npm`.
    pub ecosystem: &'static str,
    /// Hashes as the lock writes them: `sha256:HEX` (Python locks) or an SRI string such as
    /// `sha512-BASE64` (npm), sorted, without duplicates.
    pub hashes: Vec<String>,
}

/// The packages `text` (a lock file of `format`) pins, by name; a name pinned at several
/// versions (markers) gives one entry per version.
pub fn packages(format: LockFormat, text: &str) -> Result<Vec<Package>, LockError> {
    let pinned = pins(format, text)?;
    let hashes = hashes(format, text);
    let ecosystem = match format {
        LockFormat::PackageLockJson => "npm",
        _ => "pypi",
    };
    let mut out = Vec::new();
    for (name, versions) in pinned {
        for version in versions.split(", ") {
            let hashes = hashes
                .get(&(name.clone(), version.to_string()))
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default();
            out.push(Package {
                name: name.clone(),
                version: version.to_string(),
                ecosystem,
                hashes,
            });
        }
    }
    Ok(out)
}

type Hashes = BTreeMap<(String, String), BTreeSet<String>>;

/// (name, version) → hashes. Reads what `pins` already accepted, so it does not fail.
fn hashes(format: LockFormat, text: &str) -> Hashes {
    let mut out = Hashes::new();
    match format {
        LockFormat::UvLock | LockFormat::PoetryLock => {
            #[derive(Deserialize)]
            struct Doc {
                #[serde(default)]
                package: Vec<toml::Table>,
            }
            let Ok(doc) = toml::from_str::<Doc>(text) else {
                return out;
            };
            for p in doc.package {
                let (Some(name), Some(version)) = (
                    p.get("name").and_then(|v| v.as_str()),
                    p.get("version").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                let entry = out
                    .entry((normalize_python_name(name), version.to_string()))
                    .or_default();
                // uv: sdist = { hash }, wheels = [{ hash }]; poetry: files = [{ hash }].
                let mut files: Vec<&toml::Value> = Vec::new();
                if let Some(sdist) = p.get("sdist") {
                    files.push(sdist);
                }
                for key in ["wheels", "files"] {
                    if let Some(list) = p.get(key).and_then(|v| v.as_array()) {
                        files.extend(list);
                    }
                }
                for f in files {
                    if let Some(h) = f.get("hash").and_then(|h| h.as_str()) {
                        entry.insert(h.to_string());
                    }
                }
            }
        }
        LockFormat::Requirements => {
            for (_, req) in crate::pins::requirement_lines(text) {
                let spec = req.split([';', ' ']).find(|w| !w.is_empty()).unwrap_or("");
                let Some((name, version)) = spec.split_once("==") else {
                    continue;
                };
                let name = normalize_python_name(name.split('[').next().unwrap_or(""));
                let version = version.trim_start_matches('=').to_string();
                let entry = out.entry((name, version)).or_default();
                for word in req.split_whitespace() {
                    if let Some(h) = word.strip_prefix("--hash=") {
                        entry.insert(h.to_string());
                    }
                }
            }
        }
        LockFormat::PackageLockJson => {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
                return out;
            };
            let Some(packages) = doc.get("packages").and_then(|p| p.as_object()) else {
                return out;
            };
            for (key, entry) in packages {
                let Some((_, name)) = key.rsplit_once("node_modules/") else {
                    continue;
                };
                let (Some(version), Some(integrity)) = (
                    entry.get("version").and_then(|v| v.as_str()),
                    entry.get("integrity").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                out.entry((name.to_string(), version.to_string()))
                    .or_default()
                    .extend(integrity.split_whitespace().map(str::to_string));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uv_lock_packages_with_their_file_hashes() {
        let text = r#"version = 1
[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }

[[package]]
name = "Acme_Widgets"
version = "1.1.0"
source = { registry = "http://127.0.0.1/simple" }
sdist = { url = "http://x/acme-1.1.0.tar.gz", hash = "sha256:aa" }
wheels = [{ url = "http://x/acme-1.1.0-py3-none-any.whl", hash = "sha256:bb" }]
"#;
        let p = packages(LockFormat::UvLock, text).unwrap();
        assert_eq!(
            p,
            [Package {
                name: "acme-widgets".into(),
                version: "1.1.0".into(),
                ecosystem: "pypi",
                hashes: vec!["sha256:aa".into(), "sha256:bb".into()],
            }]
        );
    }

    #[test]
    fn requirements_hashes_and_npm_integrity() {
        let text = "six==1.16.0 \\\n    --hash=sha256:11 \\\n    --hash=sha256:22\n    # via app\nidna==3.7\n";
        let p = packages(LockFormat::Requirements, text).unwrap();
        assert_eq!(p[0].name, "idna");
        assert!(p[0].hashes.is_empty());
        assert_eq!(p[1].hashes, ["sha256:11", "sha256:22"]);
        let text = r#"{"lockfileVersion": 3, "packages": {"": {"name": "x"},
            "node_modules/@scope/left": {"version": "1.0.0", "integrity": "sha512-AAAA"}}}"#;
        let p = packages(LockFormat::PackageLockJson, text).unwrap();
        assert_eq!(p[0].name, "@scope/left");
        assert_eq!(p[0].ecosystem, "npm");
        assert_eq!(p[0].hashes, ["sha512-AAAA"]);
    }

    #[test]
    fn a_bad_lock_is_the_pins_error() {
        assert!(packages(LockFormat::Requirements, "six>=1\n").is_err());
    }
}
