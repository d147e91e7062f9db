//! The labels kiln puts on every image it builds, so that an image says where it came from.
//!
//! They are derived from content only — the manifest path and target name (relative to the
//! git work tree), the inputs hash, each lock file's sha256, the base image as `kiln.lock`
//! pins it, kiln's version, the repository's remote — so an unchanged target gets the same
//! labels, and the same image id, on every build. They are added to the image config the
//! exporter gets, after the inputs hash is computed (the hash never covers the labels that
//! carry it). Labels the manifest or profile set win over kiln's. `--stamp` adds the commit and
//! its time (`org.opencontainers.image.revision`, `.created`), at the price of a new image per
//! commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_manifest::Base;
use sha2::{Digest, Sha256};

use crate::trust::resolve;
use crate::{AppError, Loaded, Settings};
use kiln_record::Inputs;

/// Label keys kiln writes (and `kiln trace` reads).
pub mod key {
    /// The target's name.
    pub const TARGET: &str = "kiln.target";
    /// The manifest declaring the target, relative to the git work tree.
    pub const MANIFEST: &str = "kiln.manifest";
    /// `kiln.lock`, relative to the git work tree.
    pub const KILN_LOCK: &str = "kiln.kiln-lock";
    /// The target's inputs hash, as `kiln.lock` records it.
    pub const INPUTS: &str = "kiln.inputs";
    /// `kiln.lock-file.PATH` (PATH relative to the git work tree): that lock file's sha256.
    pub const LOCK_FILE: &str = "kiln.lock-file.";
    /// The base image (reference without digest), or `target:NAME`.
    pub const BASE: &str = "kiln.base";
    /// The base's image id as `kiln.lock` pins it (for images only in the engine's store).
    pub const BASE_IMAGE_ID: &str = "kiln.base.image-id";
    /// The kiln version that built the image.
    pub const VERSION: &str = "kiln.version";
    pub const OCI_TITLE: &str = "org.opencontainers.image.title";
    pub const OCI_SOURCE: &str = "org.opencontainers.image.source";
    pub const OCI_BASE_NAME: &str = "org.opencontainers.image.base.name";
    pub const OCI_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
    pub const OCI_REVISION: &str = "org.opencontainers.image.revision";
    pub const OCI_CREATED: &str = "org.opencontainers.image.created";
}

/// kiln's own version, as labelled.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The repository holding `settings.cwd`'s manifests: its work tree (canonical), if any.
pub(crate) fn work_tree(settings: &Settings) -> Option<(git2::Repository, PathBuf)> {
    let repo = crate::git::open(&settings.cwd)?;
    let root = repo.workdir()?.to_path_buf();
    let root = root.canonicalize().unwrap_or(root);
    Some((repo, root))
}

/// `path` (relative to `cwd` or absolute) relative to `root`, `/`-separated; as given when it
/// is outside `root`.
pub(crate) fn repo_path(cwd: &Path, root: Option<&Path>, path: &Path) -> String {
    let full = cwd.join(path);
    let full = resolve(&full);
    let rel = root
        .and_then(|r| full.strip_prefix(r).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| resolve(path));
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The URL of the repository's `origin` remote (else its first remote), without credentials.
fn remote_url(repo: &git2::Repository) -> Option<String> {
    let remote = repo.find_remote("origin").ok().or_else(|| {
        let names = repo.remotes().ok()?;
        let first = names.iter().flatten().next()?.to_string();
        repo.find_remote(&first).ok()
    })?;
    let url = remote.url()?;
    Some(strip_userinfo(url))
}

/// `scheme://user:secret@host/…` → `scheme://host/…`; other forms as they are.
fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The kiln labels of each target in `targets` (compiled, so in `inputs`).
pub(crate) fn labels(
    settings: &Settings,
    loaded: &Loaded,
    inputs: &BTreeMap<String, Inputs>,
    targets: &[String],
    stamp: bool,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, AppError> {
    let tree = work_tree(settings);
    let root = tree.as_ref().map(|(_, r)| r.as_path());
    let source = tree.as_ref().and_then(|(repo, _)| remote_url(repo));
    let revision = match (&tree, stamp) {
        (Some((repo, _)), true) => Some(head_commit(repo)?),
        (None, true) => {
            return Err(AppError::Usage(
                "--stamp labels the image with its git commit, but the manifests are not in a git repository".to_string(),
            ));
        }
        _ => None,
    };
    let mut out = BTreeMap::new();
    for name in targets {
        let (Some(target), Some(inputs)) = (loaded.manifest.targets.get(name), inputs.get(name))
        else {
            continue;
        };
        let mut l = BTreeMap::new();
        l.insert(key::TARGET.to_string(), name.clone());
        l.insert(
            key::MANIFEST.to_string(),
            repo_path(&settings.cwd, root, &target.location.file),
        );
        l.insert(
            key::KILN_LOCK.to_string(),
            repo_path(&settings.cwd, root, &loaded.lock_path),
        );
        l.insert(key::INPUTS.to_string(), inputs.hash.clone());
        l.insert(key::VERSION.to_string(), VERSION.to_string());
        l.insert(key::OCI_TITLE.to_string(), name.clone());
        if let Some(source) = &source {
            l.insert(key::OCI_SOURCE.to_string(), source.clone());
        }
        if let Some(packages) = &target.packages {
            let context = settings.cwd.join(&target.context);
            for file in &packages.lock {
                let path = context.join(file);
                // A lock file that does not exist yet (before the first refresh) has no hash.
                let Ok(data) = std::fs::read(&path) else {
                    continue;
                };
                l.insert(
                    format!(
                        "{}{}",
                        key::LOCK_FILE,
                        repo_path(&settings.cwd, root, &path)
                    ),
                    format!("sha256:{}", hex::encode(Sha256::digest(&data))),
                );
            }
        }
        match &target.from {
            Base::Image(reference) => {
                let bare = reference.without_digest().to_string();
                l.insert(key::BASE.to_string(), bare.clone());
                l.insert(key::OCI_BASE_NAME.to_string(), bare.clone());
                if let Some(pin) = loaded.lock.base(&bare) {
                    if let Some(digest) = &pin.digest {
                        l.insert(key::OCI_BASE_DIGEST.to_string(), digest.clone());
                    }
                    if let Some(id) = &pin.image_id {
                        l.insert(key::BASE_IMAGE_ID.to_string(), id.clone());
                    }
                }
            }
            Base::Target(dep) => {
                l.insert(key::BASE.to_string(), format!("target:{dep}"));
                if let Some(image) = loaded
                    .manifest
                    .targets
                    .get(dep)
                    .and_then(|t| t.image.as_ref())
                {
                    l.insert(key::OCI_BASE_NAME.to_string(), image.to_string());
                }
            }
        }
        if let Some((commit, created)) = &revision {
            l.insert(key::OCI_REVISION.to_string(), commit.clone());
            l.insert(key::OCI_CREATED.to_string(), created.clone());
        }
        out.insert(name.clone(), l);
    }
    Ok(out)
}

/// HEAD's commit id and its commit time (RFC 3339, UTC).
fn head_commit(repo: &git2::Repository) -> Result<(String, String), AppError> {
    let commit = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|e| AppError::git("read HEAD for --stamp", e))?;
    Ok((commit.id().to_string(), rfc3339(commit.time().seconds())))
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn credentials_stay_out_of_the_source_label() {
        assert_eq!(
            strip_userinfo("https://user:tok@git.example/a/b.git"),
            "https://git.example/a/b.git"
        );
        assert_eq!(
            strip_userinfo("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(strip_userinfo("/srv/git/b"), "/srv/git/b");
    }
}
