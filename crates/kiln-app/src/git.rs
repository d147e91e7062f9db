//! The little git kiln needs (git2): refuse to overwrite uncommitted edits, and commit exactly
//! the files it wrote — nothing else the user has staged — on the current branch, in an order
//! that a crash can resume.
//!
//! `refresh --commit` checks everything it can before writing (HEAD on a branch, an identity to
//! commit as, no git lock file in the way), then: (1) writes an intent record,
//! `.git/kiln-refresh.json` (the branch, its old tip, the message, and per lock file the blob
//! ids of its old and new content); (2) stores the blobs, tree and commit; (3) replaces the lock
//! files atomically; (4) updates the index entries of those files; (5) moves the branch,
//! expecting its old tip; (6) removes the record. The index goes first so that HEAD never has
//! the new content while the index has the old (a plain `git commit` would revert it). All of it under an flock on the git directory. The
//! next kiln command that finds a record ([`recover`]) finishes the commit when it can (the
//! new content is stored and the files hold either old or new content), else rolls it back,
//! removes what the dead process left (its temp files, `index.lock`, the branch's `.lock`,
//! `objects/tmp_object_git2_*`), and says which it did.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::AppError;

/// The repository containing `dir`, if any.
pub fn open(dir: &Path) -> Option<git2::Repository> {
    git2::Repository::discover(dir).ok()
}

/// `path` relative to the repository's work tree (git's form, `/`-separated).
fn in_repo(repo: &git2::Repository, path: &Path) -> Result<PathBuf, AppError> {
    let root = repo.workdir().ok_or(AppError::BareRepository)?;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let parent = path.parent().unwrap_or(Path::new("."));
    let parent = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    let full = parent.join(path.file_name().unwrap_or_default());
    full.strip_prefix(&root)
        .map(Path::to_path_buf)
        .map_err(|_| AppError::OutsideRepository(path.to_path_buf()))
}

/// The files among `paths` with uncommitted changes (staged or not), as repository paths.
pub fn dirty(repo: &git2::Repository, paths: &[PathBuf]) -> Result<Vec<PathBuf>, AppError> {
    let mut out = Vec::new();
    for path in paths {
        let rel = in_repo(repo, path)?;
        match repo.status_file(&rel) {
            Ok(status) => {
                let changed = status.intersects(
                    git2::Status::WT_MODIFIED
                        | git2::Status::WT_DELETED
                        | git2::Status::WT_TYPECHANGE
                        | git2::Status::INDEX_MODIFIED
                        | git2::Status::INDEX_NEW
                        | git2::Status::INDEX_DELETED
                        | git2::Status::INDEX_TYPECHANGE,
                );
                if changed {
                    out.push(rel);
                }
            }
            // Not tracked and not present: nothing to lose.
            Err(e) if e.code() == git2::ErrorCode::NotFound => {}
            Err(e) => return Err(AppError::git("read the status", e)),
        }
    }
    Ok(out)
}

/// The intent record of a `refresh --commit` in progress, in the git directory.
const INTENT: &str = "kiln-refresh.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    /// For whoever finds the file.
    about: String,
    pid: u32,
    /// The branch HEAD was on, `refs/heads/NAME`.
    branch: String,
    /// Its tip before the commit; none for an unborn branch.
    old_head: Option<String>,
    message: String,
    files: Vec<IntentFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IntentFile {
    /// Repository path, `/`-separated.
    path: String,
    /// Blob id of the content before (none: there was no file).
    old: Option<String>,
    /// Blob id of the refreshed content.
    new: String,
}

/// Why a commit cannot be made here, if it cannot: HEAD detached or unreadable, no identity to
/// commit as, or a git lock file that would stop the ref or index update.
pub fn cannot_commit(repo: &git2::Repository) -> Option<String> {
    let branch = match branch(repo) {
        Ok(branch) => branch,
        Err(why) => return Some(why),
    };
    if let Err(e) = repo.signature() {
        return Some(format!(
            "git has no identity to commit as ({}); set one with `git config user.name \"…\"` and `git config user.email …`",
            e.message()
        ));
    }
    let locks = [
        repo.path().join("index.lock"),
        repo.path().join("HEAD.lock"),
        repo.commondir().join(format!("{branch}.lock")),
    ];
    for lock in locks {
        if lock.exists() {
            return Some(format!(
                "{} exists: another git command is running, or one was killed; if none is running, remove it",
                lock.display()
            ));
        }
    }
    None
}

/// The branch HEAD is on (`refs/heads/NAME`, possibly unborn), or why there is none.
fn branch(repo: &git2::Repository) -> Result<String, String> {
    let head = repo
        .find_reference("HEAD")
        .map_err(|e| format!("cannot read HEAD: {}", e.message()))?;
    match head.symbolic_target() {
        Some(target) => Ok(target.to_string()),
        None => Err(
            "HEAD is detached; check out a branch first (`git switch -c refresh-locks`)"
                .to_string(),
        ),
    }
}

/// The commit a branch points at, if the branch exists.
fn tip(repo: &git2::Repository, branch: &str) -> Option<git2::Oid> {
    repo.find_reference(branch).ok().and_then(|r| r.target())
}

fn oid(text: &str) -> Result<git2::Oid, AppError> {
    git2::Oid::from_str(text).map_err(|e| AppError::git("read the intent record", e))
}

/// The blob id `data` has (without storing it).
fn blob_id(data: &[u8]) -> Result<git2::Oid, AppError> {
    git2::Oid::hash_object(git2::ObjectType::Blob, data)
        .map_err(|e| AppError::git("hash a file", e))
}

/// The blob id of the file at `path` now; none when there is no file.
fn content_id(path: &Path) -> Result<Option<git2::Oid>, AppError> {
    match std::fs::read(path) {
        Ok(data) => blob_id(&data).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AppError::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        }),
    }
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> AppError {
    let path = path.to_path_buf();
    move |source| AppError::Io {
        path,
        action,
        source,
    }
}

fn lock_git_dir(repo: &git2::Repository) -> Result<kiln_lock::DirLock, AppError> {
    kiln_lock::lock_dir(repo.path()).map_err(io(repo.path(), "lock the git directory"))
}

/// Commit `files` (absolute path, refreshed content) on HEAD's branch with `message`, writing
/// them into the work tree on the way, crash-safely (see the module doc). Only files whose
/// content differs from HEAD's are committed; the index entries of those are updated so
/// `git status` stays clean for them, and anything else staged stays staged. Returns the new
/// commit id, or none when HEAD already has every file as refreshed (no empty commit).
pub fn commit_refresh(
    repo: &git2::Repository,
    files: &[(PathBuf, Vec<u8>)],
    message: &str,
) -> Result<Option<String>, AppError> {
    let _held = lock_git_dir(repo)?;
    // Checked before the build too; again now, before anything is written.
    if let Some(why) = cannot_commit(repo) {
        return Err(AppError::CommitRefused(why));
    }
    let paths: Vec<PathBuf> = files.iter().map(|(path, _)| path.clone()).collect();
    let dirty = dirty(repo, &paths)?;
    if !dirty.is_empty() {
        return Err(AppError::ChangedDuringRefresh(dirty));
    }
    let branch = branch(repo).map_err(AppError::NoBranch)?;
    let old_head = tip(repo, &branch);
    let parent = match old_head {
        Some(id) => Some(
            repo.find_commit(id)
                .map_err(|e| AppError::git("read HEAD", e))?,
        ),
        None => None,
    };
    let base = match &parent {
        Some(c) => Some(c.tree().map_err(|e| AppError::git("read HEAD's tree", e))?),
        None => None,
    };
    let mut records = Vec::new();
    let mut changed = Vec::new();
    for (path, data) in files {
        let rel = in_repo(repo, path)?;
        let new = blob_id(data)?;
        let committed = base
            .as_ref()
            .and_then(|t| t.get_path(&rel).ok())
            .map(|e| e.id());
        if committed == Some(new) && content_id(path)? == Some(new) {
            continue;
        }
        records.push(IntentFile {
            path: rel.to_string_lossy().replace('\\', "/"),
            old: content_id(path)?.map(|id| id.to_string()),
            new: new.to_string(),
        });
        changed.push((path.clone(), rel, data.as_slice()));
    }
    if changed.is_empty() {
        return Ok(None);
    }
    let intent = Intent {
        about: "kiln refresh --commit in progress; the next kiln command finishes or rolls it back"
            .to_string(),
        pid: std::process::id(),
        branch: branch.clone(),
        old_head: old_head.map(|id| id.to_string()),
        message: message.to_string(),
        files: records,
    };
    let record = repo.path().join(INTENT);
    let json = serde_json::to_vec_pretty(&intent).expect("intent serialises");
    // 1. The intent record.
    kiln_lock::write_atomic(&record, &json).map_err(io(&record, "write"))?;
    // 2. The objects: files the commit changes (and what they held, to roll back to).
    for (path, _, data) in &changed {
        if let Ok(old) = std::fs::read(path) {
            repo.blob(&old)
                .map_err(|e| AppError::git("store a file", e))?;
        }
        repo.blob(data)
            .map_err(|e| AppError::git("store a file", e))?;
    }
    let entries: Vec<(PathBuf, git2::Oid)> = changed
        .iter()
        .map(|(_, rel, data)| Ok((rel.clone(), blob_id(data)?)))
        .collect::<Result<_, AppError>>()?;
    let commit = make_commit(repo, parent.as_ref(), &entries, message)?;
    // 3. The lock files.
    for (path, _, data) in &changed {
        if content_id(path)? != Some(blob_id(data)?) {
            kiln_lock::write_atomic(path, data).map_err(io(path, "write"))?;
        }
    }
    // 4. The index, before the branch: at no point does HEAD have the new content while the
    // index has the old (a plain `git commit` then would revert the refresh).
    let rels: Vec<PathBuf> = entries.iter().map(|(rel, _)| rel.clone()).collect();
    let unfinished = |e: AppError| AppError::CommitUnfinished {
        source: Box::new(e),
        note: "the next kiln command finishes or rolls back this commit".to_string(),
    };
    update_index(repo, &rels, &[]).map_err(unfinished)?;
    // 5. The branch, 6. done.
    move_branch(repo, &branch, old_head, commit, message).map_err(unfinished)?;
    remove_record(repo).map_err(|e| AppError::CommitUnfinished {
        source: Box::new(e),
        note: format!(
            "{} is committed on {branch}; the next kiln command removes the record",
            &commit.to_string()[..12]
        ),
    })?;
    Ok(Some(commit.to_string()))
}

/// A commit of `parent`'s tree with `entries` (repository path, blob) over it; not on any
/// branch yet.
fn make_commit(
    repo: &git2::Repository,
    parent: Option<&git2::Commit>,
    entries: &[(PathBuf, git2::Oid)],
    message: &str,
) -> Result<git2::Oid, AppError> {
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (rel, blob) in entries {
        update.upsert(rel, *blob, git2::FileMode::Blob);
    }
    let empty;
    let base = match parent {
        Some(c) => c.tree().map_err(|e| AppError::git("read HEAD's tree", e))?,
        None => {
            let oid = repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .map_err(|e| AppError::git("make an empty tree", e))?;
            empty = repo
                .find_tree(oid)
                .map_err(|e| AppError::git("read a tree", e))?;
            empty
        }
    };
    let tree_id = update
        .create_updated(repo, &base)
        .map_err(|e| AppError::git("build the tree", e))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| AppError::git("read the tree", e))?;
    let signature = repo
        .signature()
        .map_err(|e| AppError::git("find who commits (set user.name and user.email)", e))?;
    let parents: Vec<&git2::Commit> = parent.into_iter().collect();
    repo.commit(None, &signature, &signature, message, &tree, &parents)
        .map_err(|e| AppError::git("commit", e))
}

/// Point `branch` at `commit`, if it still points at `old` (or, unborn, does not exist yet).
fn move_branch(
    repo: &git2::Repository,
    branch: &str,
    old: Option<git2::Oid>,
    commit: git2::Oid,
    message: &str,
) -> Result<(), AppError> {
    let log = format!("commit: {}", message.lines().next().unwrap_or_default());
    match old {
        Some(old) => repo.reference_matching(branch, commit, true, old, &log),
        None => repo.reference(branch, commit, false, &log),
    }
    .map(|_| ())
    .map_err(|e| AppError::git("move the branch", e))
}

/// Set the index entries of `paths` to the work tree's files; `blobs` gives, for paths whose
/// file does not hold the committed content, the blob the entry must name instead.
fn update_index(
    repo: &git2::Repository,
    paths: &[PathBuf],
    blobs: &[(PathBuf, git2::Oid)],
) -> Result<(), AppError> {
    let mut index = repo
        .index()
        .map_err(|e| AppError::git("open the index", e))?;
    index
        .read(false)
        .map_err(|e| AppError::git("read the index", e))?;
    for rel in paths {
        match blobs.iter().find(|(p, _)| p == rel) {
            Some((_, blob)) => {
                let data = repo
                    .find_blob(*blob)
                    .map_err(|e| AppError::git("read a stored file", e))?;
                index
                    .add_frombuffer(&unstat_entry(rel, *blob), data.content())
                    .map_err(|e| AppError::git("update the index", e))?;
            }
            None => index
                .add_path(rel)
                .map_err(|e| AppError::git("update the index", e))?,
        }
    }
    index
        .write()
        .map_err(|e| AppError::git("write the index", e))
}

/// An index entry for `rel` naming `blob`, with no stat data (git compares the content).
fn unstat_entry(rel: &Path, blob: git2::Oid) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: 0,
        id: blob,
        flags: 0,
        flags_extended: 0,
        path: rel.to_string_lossy().replace('\\', "/").into_bytes(),
    }
}

/// Set the index entries of `files` (repository path, work-tree path) back to `parent`'s tree.
fn reset_index(
    repo: &git2::Repository,
    parent: Option<&git2::Commit>,
    files: &[(PathBuf, PathBuf)],
) -> Result<(), AppError> {
    let tree = match parent {
        Some(c) => Some(c.tree().map_err(|e| AppError::git("read HEAD's tree", e))?),
        None => None,
    };
    let mut index = repo
        .index()
        .map_err(|e| AppError::git("open the index", e))?;
    index
        .read(false)
        .map_err(|e| AppError::git("read the index", e))?;
    let mut changed = false;
    for (rel, path) in files {
        let committed = tree
            .as_ref()
            .and_then(|t| t.get_path(rel).ok())
            .map(|e| e.id());
        if index.get_path(rel, 0).map(|e| e.id) == committed {
            continue;
        }
        changed = true;
        match committed {
            None => index.remove_path(rel),
            Some(blob) if content_id(path)? == Some(blob) => index.add_path(rel),
            Some(blob) => {
                let data = repo
                    .find_blob(blob)
                    .map_err(|e| AppError::git("read a stored file", e))?;
                index.add_frombuffer(&unstat_entry(rel, blob), data.content())
            }
        }
        .map_err(|e| AppError::git("update the index", e))?;
    }
    if changed {
        index
            .write()
            .map_err(|e| AppError::git("write the index", e))?;
    }
    Ok(())
}

fn remove_record(repo: &git2::Repository) -> Result<(), AppError> {
    let record = repo.path().join(INTENT);
    match std::fs::remove_file(&record) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(AppError::Io {
                path: record,
                action: "remove",
                source,
            });
        }
    }
    std::fs::File::open(repo.path())
        .and_then(|d| d.sync_all())
        .map_err(io(repo.path(), "sync"))
}

/// What the process that died in the middle of a commit left behind: temp files of the record
/// and of the lock files, `objects/tmp_object_git2_*`, and the git lock files of the index,
/// HEAD and the branch (no other kiln holds them: we hold the git directory's lock). Returns
/// what was removed, for the message.
fn remove_leftovers(
    repo: &git2::Repository,
    intent: Option<&Intent>,
) -> Result<Vec<String>, AppError> {
    let mut removed = Vec::new();
    let record = repo.path().join(INTENT);
    if kiln_lock::remove_stale_temps(&record).map_err(io(&record, "clean up next to"))? > 0 {
        removed.push(format!("a temp file of {}", record.display()));
    }
    let Some(intent) = intent else {
        return Ok(removed);
    };
    let root = repo.workdir().unwrap_or(repo.path()).to_path_buf();
    for file in &intent.files {
        let path = root.join(&file.path);
        if kiln_lock::remove_stale_temps(&path).map_err(io(&path, "clean up next to"))? > 0 {
            removed.push(format!("a temp file of {}", file.path));
        }
    }
    let objects = repo.commondir().join("objects");
    if let Ok(entries) = std::fs::read_dir(&objects) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("tmp_object_git2_")
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    for lock in [
        repo.path().join("index.lock"),
        repo.path().join("HEAD.lock"),
        repo.commondir().join(format!("{}.lock", intent.branch)),
    ] {
        if std::fs::remove_file(&lock).is_ok() {
            removed.push(lock.display().to_string());
        }
    }
    Ok(removed)
}

/// Finish or roll back a `refresh --commit` that was interrupted (killed, or failed after it
/// began writing), if the repository holding `dir` has one on record. Returns what was done,
/// to tell the user.
pub fn recover(dir: &Path) -> Result<Option<String>, AppError> {
    let Some(repo) = open(dir) else {
        return Ok(None);
    };
    let record = repo.path().join(INTENT);
    let _held = lock_git_dir(&repo)?;
    let text = match std::fs::read(&record) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let removed = remove_leftovers(&repo, None)?;
            return Ok((!removed.is_empty()).then(|| {
                format!(
                    "removed what an interrupted kiln left: {}",
                    removed.join(", ")
                )
            }));
        }
        Err(source) => {
            return Err(AppError::Io {
                path: record,
                action: "read",
                source,
            });
        }
    };
    let intent: Intent = match serde_json::from_slice(&text) {
        Ok(intent) => intent,
        Err(source) => {
            return Err(AppError::IntentRecord {
                path: record,
                source,
            });
        }
    };
    let removed = remove_leftovers(&repo, Some(&intent))?;
    let done = resume(&repo, &intent)?;
    remove_record(&repo)?;
    let mut message = format!(
        "an interrupted `kiln refresh --commit` (pid {}): {done}",
        intent.pid
    );
    if !removed.is_empty() {
        message.push_str(&format!("; removed {}", removed.join(", ")));
    }
    Ok(Some(message))
}

/// Bring the repository to the committed or the original state of `intent`; says which.
fn resume(repo: &git2::Repository, intent: &Intent) -> Result<String, AppError> {
    let root = repo
        .workdir()
        .ok_or(AppError::BareRepository)?
        .to_path_buf();
    let short = |id: git2::Oid| id.to_string()[..12].to_string();
    let names: Vec<&str> = intent.files.iter().map(|f| f.path.as_str()).collect();
    let names = names.join(", ");
    match branch(repo) {
        Ok(b) if b == intent.branch => {}
        _ => {
            return Ok(format!(
                "HEAD is no longer on {}; left everything as it is (check {names})",
                intent.branch
            ));
        }
    }
    let old_head = intent.old_head.as_deref().map(oid).transpose()?;
    let tip = tip(repo, &intent.branch);
    let mut files = Vec::new();
    for f in &intent.files {
        let path = root.join(&f.path);
        let now = content_id(&path)?;
        let old = f.old.as_deref().map(oid).transpose()?;
        files.push((PathBuf::from(&f.path), path, now, old, oid(&f.new)?));
    }
    if tip == old_head {
        let stored = files
            .iter()
            .all(|(_, _, _, _, new)| repo.find_blob(*new).is_ok());
        let known = files
            .iter()
            .all(|(_, _, now, old, new)| *now == Some(*new) || now == old);
        if stored && known {
            // Finish: the refreshed content is stored; write what is not written, commit.
            for (_, path, now, _, new) in &files {
                if *now != Some(*new) {
                    let blob = repo
                        .find_blob(*new)
                        .map_err(|e| AppError::git("read a stored file", e))?;
                    kiln_lock::write_atomic(path, blob.content()).map_err(io(path, "write"))?;
                }
            }
            let parent = match old_head {
                Some(id) => Some(
                    repo.find_commit(id)
                        .map_err(|e| AppError::git("read HEAD", e))?,
                ),
                None => None,
            };
            let entries: Vec<(PathBuf, git2::Oid)> = files
                .iter()
                .map(|(rel, _, _, _, new)| (rel.clone(), *new))
                .collect();
            let commit = make_commit(repo, parent.as_ref(), &entries, &intent.message)?;
            let rels: Vec<PathBuf> = entries.iter().map(|(rel, _)| rel.clone()).collect();
            update_index(repo, &rels, &[])?;
            move_branch(repo, &intent.branch, old_head, commit, &intent.message)?;
            return Ok(format!(
                "finished it: committed {} ({names})",
                short(commit)
            ));
        }
        // Roll back: put back what was replaced (when it was kiln's own content).
        for (_, path, now, old, new) in &files {
            if *now != Some(*new) {
                continue;
            }
            match old {
                Some(old) => {
                    let blob = repo
                        .find_blob(*old)
                        .map_err(|e| AppError::git("read a stored file", e))?;
                    kiln_lock::write_atomic(path, blob.content()).map_err(io(path, "write"))?;
                }
                None => std::fs::remove_file(path).map_err(io(path, "remove"))?,
            }
        }
        // The index entries as HEAD has them (they were updated only if a file was edited since).
        let parent = match old_head {
            Some(id) => Some(
                repo.find_commit(id)
                    .map_err(|e| AppError::git("read HEAD", e))?,
            ),
            None => None,
        };
        let rels: Vec<(PathBuf, PathBuf)> = files
            .iter()
            .map(|(rel, path, ..)| (rel.clone(), path.clone()))
            .collect();
        reset_index(repo, parent.as_ref(), &rels)?;
        let edited: Vec<String> = files
            .iter()
            .filter(|(_, _, now, old, new)| *now != Some(*new) && now != old)
            .map(|(rel, ..)| rel.display().to_string())
            .collect();
        let mut done = format!("rolled it back: nothing was committed and {names} are as before");
        if !edited.is_empty() {
            done.push_str(&format!(
                " (left {} alone: edited since)",
                edited.join(", ")
            ));
        }
        return Ok(done);
    }
    // The branch moved: to the refresh's commit (killed before the record was removed), or on.
    let ours = tip.and_then(|id| repo.find_commit(id).ok()).filter(|c| {
        c.parent_ids().next() == old_head
            && c.message() == Some(intent.message.as_str())
            && c.tree().is_ok_and(|t| {
                files
                    .iter()
                    .all(|(rel, _, _, _, new)| t.get_path(rel).is_ok_and(|e| e.id() == *new))
            })
    });
    match ours {
        Some(commit) => {
            let rels: Vec<PathBuf> = files.iter().map(|(rel, ..)| rel.clone()).collect();
            // A file edited since keeps its edit; its index entry names the committed content.
            let blobs: Vec<(PathBuf, git2::Oid)> = files
                .iter()
                .filter(|(_, _, now, _, new)| *now != Some(*new))
                .map(|(rel, _, _, _, new)| (rel.clone(), *new))
                .collect();
            update_index(repo, &rels, &blobs)?;
            Ok(format!(
                "finished it: {} was committed; the index now matches it",
                short(commit.id())
            ))
        }
        None => Ok(format!(
            "{} moved on since; left everything as it is (check {names})",
            intent.branch
        )),
    }
}
