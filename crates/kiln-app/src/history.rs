//! kiln.lock and lock files through git history (git2): what each commit of the current
//! branch recorded, read from the commits themselves (never from the working tree).

use std::collections::BTreeMap;
use std::path::Path;

use kiln_lock::KilnLock;

use crate::{AppError, Settings};

/// One commit of the current branch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Commit {
    /// The full commit id.
    pub id: String,
    /// The first line of its message.
    pub summary: String,
    /// Its commit time, RFC 3339 UTC.
    pub time: String,
}

/// A commit and the kiln.lock it holds.
pub(crate) struct Recorded {
    pub commit: Commit,
    pub oid: git2::Oid,
    pub lock: KilnLock,
}

/// The repository holding the manifests, and its work tree.
pub(crate) fn open(
    settings: &Settings,
) -> Result<(git2::Repository, std::path::PathBuf), AppError> {
    crate::labels::work_tree(settings).ok_or_else(|| {
        AppError::Usage(format!(
            "{} is not in a git repository; kiln reads what was built from git history",
            settings.cwd.display()
        ))
    })
}

/// The bytes of `path` (repository-relative, `/`-separated) in `commit`, if it has it.
pub(crate) fn blob_at(repo: &git2::Repository, commit: git2::Oid, path: &str) -> Option<Vec<u8>> {
    let commit = repo.find_commit(commit).ok()?;
    let entry = commit.tree().ok()?.get_path(Path::new(path)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(blob.content().to_vec())
}

/// Every commit reachable from HEAD (newest first) with the `kiln.lock` at `lock_path` it
/// holds; commits without one are left out. A kiln.lock that does not parse is skipped with
/// a warning naming the commit.
pub(crate) fn kiln_locks(
    settings: &Settings,
    repo: &git2::Repository,
    lock_path: &str,
) -> Result<Vec<Recorded>, AppError> {
    let mut walk = repo
        .revwalk()
        .map_err(|e| AppError::git("walk history", e))?;
    if walk.push_head().is_err() {
        // No commit yet.
        return Ok(Vec::new());
    }
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
        .map_err(|e| AppError::git("walk history", e))?;
    let mut out = Vec::new();
    // Unchanged kiln.lock blobs are parsed once.
    let mut parsed: BTreeMap<git2::Oid, Option<KilnLock>> = BTreeMap::new();
    for oid in walk {
        let oid = oid.map_err(|e| AppError::git("walk history", e))?;
        let commit = repo
            .find_commit(oid)
            .map_err(|e| AppError::git("read a commit", e))?;
        let Some(entry) = commit
            .tree()
            .ok()
            .and_then(|t| t.get_path(Path::new(lock_path)).ok())
        else {
            continue;
        };
        let info = Commit {
            id: oid.to_string(),
            summary: commit.summary().unwrap_or("").to_string(),
            time: crate::labels::rfc3339(commit.time().seconds()),
        };
        let lock = parsed.entry(entry.id()).or_insert_with(|| {
            let blob = repo.find_blob(entry.id()).ok()?;
            let text = String::from_utf8_lossy(blob.content());
            match KilnLock::parse(&format!("{lock_path} at {}", &info.id[..12]), &text) {
                Ok(lock) => Some(lock),
                Err(e) => {
                    settings.warnings.push(format!("skipping it: {e}"));
                    None
                }
            }
        });
        if let Some(lock) = lock {
            out.push(Recorded {
                commit: info,
                oid,
                lock: lock.clone(),
            });
        }
    }
    Ok(out)
}

/// What the lock file at `path` (repository-relative) in `commit` pins, name → version, read
/// as `format`; `None` when the commit has no such file.
pub(crate) fn pins_at(
    repo: &git2::Repository,
    commit: git2::Oid,
    path: &str,
    format: kiln_lock::LockFormat,
) -> Option<Result<BTreeMap<String, String>, AppError>> {
    let data = blob_at(repo, commit, path)?;
    let text = String::from_utf8_lossy(&data);
    Some(kiln_lock::pins(format, &text).map_err(|source| AppError::LockInCommit { commit, source }))
}
