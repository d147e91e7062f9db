//! `kiln.lock`: where it lives, reading it, and merging a build's results into it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_lock::KilnLock;

use crate::{Files, Held, Inputs, Own, RecordError, inputs};

/// Where `kiln.lock` lives: next to the first manifest.
pub fn kiln_lock_path(cwd: &Path, files: &[PathBuf]) -> PathBuf {
    let first = files.first().map(PathBuf::as_path);
    let dir = first.and_then(Path::parent).unwrap_or(Path::new(""));
    cwd.join(dir).join("kiln.lock")
}

/// `kiln.lock` as committed, or an empty one when there is none yet.
pub fn read_kiln_lock(files: &dyn Files, path: &Path) -> Result<KilnLock, RecordError> {
    match files.read_to_string(path) {
        Ok(text) => KilnLock::parse(&path.display().to_string(), &text).map_err(|source| {
            RecordError::LockFile {
                path: path.to_path_buf(),
                source,
            }
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KilnLock::default()),
        Err(source) => Err(RecordError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Waits for and takes the lock that serialises kiln's read-merge-replace of `kiln.lock`
/// (an flock on its directory), so concurrent commands do not lose each other's entries.
pub fn lock_kiln_lock(files: &dyn Files, path: &Path) -> Result<Held, RecordError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    files.lock_dir(dir).map_err(|source| RecordError::LockDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// The base image a build resolved for a target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasePin {
    /// As `kiln.lock` keys it (no digest).
    pub reference: String,
    /// The digest the build resolved it to, if it knows one.
    pub digest: Option<String>,
    /// The image id the engine has under `reference` now (none without an engine).
    pub image_id: Option<String>,
}

/// What one build says of one target, for `kiln.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildResult {
    pub target: String,
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// The digest this build pushed, if it pushed.
    pub pushed: Option<String>,
    /// The base image it resolved.
    pub base: Option<BasePin>,
    /// The image is only in a builder's cache: nothing anyone can check, so `kiln.lock`
    /// keeps what it said of the target (its base is still pinned).
    pub cache_only: bool,
}

/// `kiln.lock` after a build, and the inputs of every target as it pins them.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub lock: KilnLock,
    pub inputs: BTreeMap<String, Inputs>,
    /// The file was rewritten (it said something else before).
    pub wrote: bool,
}

/// Merge a build's results into `current` (kiln.lock as it is now: another kiln may have
/// recorded its targets since this one read it as `read`): each result's base pin (a pin made
/// by `kiln pin` stays, a build only fills in what is unknown; the image id is the engine's
/// now), then a record per built target and `profile` with its inputs as the merged pins make
/// them. Every other target's and profile's record stays as it was. A push digest is kept
/// only for the same image under the same name. Returns the merged lock and the inputs of
/// every target of `own`.
pub fn merge(
    read: &KilnLock,
    current: KilnLock,
    built: &[BuildResult],
    profile: Option<&str>,
    own: &[Own],
) -> (KilnLock, BTreeMap<String, Inputs>) {
    let mut lock = read.clone();
    for b in built {
        if let Some(base) = &b.base {
            let pinned = lock.base(&base.reference).cloned().unwrap_or_default();
            lock.set_base(kiln_lock::Base {
                reference: base.reference.clone(),
                digest: pinned.digest.or_else(|| base.digest.clone()),
                platform_digest: pinned.platform_digest,
                image_id: base.image_id.clone(),
            });
        }
    }
    let mut current = current;
    for b in built {
        if let Some(base) = b.base.as_ref().and_then(|base| lock.base(&base.reference)) {
            current.set_base(base.clone());
        }
    }
    let mut lock = current;
    // Inputs again: the bases just pinned are part of them.
    let inputs = inputs(own, &lock);
    for b in built {
        if b.cache_only {
            continue;
        }
        let Some(now) = inputs.get(&b.target) else {
            continue;
        };
        let before = lock.target(&b.target, profile);
        // A new image id means a new image, and a new name a new tag: an old push digest no
        // longer describes it.
        let kept = before
            .filter(|t| t.image_id == b.image_id && t.image == b.image)
            .and_then(|t| t.digest.clone());
        lock.set_target(kiln_lock::Target {
            name: b.target.clone(),
            profile: profile.map(str::to_string),
            image: b.image.clone(),
            image_id: b.image_id.clone(),
            digest: b.pushed.clone().or(kept),
            inputs: now.hash.clone(),
            parts: now.parts.clone(),
        });
    }
    (lock, inputs)
}

/// [`merge`] into `kiln.lock` at `path` as it is now, read, merged and replaced (only when
/// its text changes) under the flock on its directory, so concurrent builds keep each
/// other's entries.
pub fn record_build(
    files: &dyn Files,
    path: &Path,
    read: &KilnLock,
    built: &[BuildResult],
    profile: Option<&str>,
    own: &[Own],
) -> Result<Recorded, RecordError> {
    let _held = lock_kiln_lock(files, path)?;
    let current = read_kiln_lock(files, path)?;
    let (lock, inputs) = merge(read, current, built, profile, own);
    let text = lock.to_toml();
    let wrote = files.read_to_string(path).ok().as_deref() != Some(text.as_str());
    if wrote {
        files
            .write_atomic(path, text.as_bytes())
            .map_err(|source| RecordError::Write {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(Recorded {
        lock,
        inputs,
        wrote,
    })
}
