//! The little git kiln needs (git2): refuse to overwrite uncommitted edits, and commit exactly
//! the files it wrote — nothing else the user has staged — on the current branch.

use std::path::{Path, PathBuf};

use crate::AppError;

/// The repository containing `dir`, if any.
pub fn open(dir: &Path) -> Option<git2::Repository> {
    git2::Repository::discover(dir).ok()
}

fn git_error(what: &str, e: git2::Error) -> AppError {
    AppError::Build(format!("git: cannot {what}: {}", e.message()))
}

/// `path` relative to the repository's work tree (git's form, `/`-separated).
fn in_repo(repo: &git2::Repository, path: &Path) -> Result<PathBuf, AppError> {
    let root = repo
        .workdir()
        .ok_or_else(|| AppError::Build("git: the repository is bare".to_string()))?;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let parent = path.parent().unwrap_or(Path::new("."));
    let parent = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    let full = parent.join(path.file_name().unwrap_or_default());
    full.strip_prefix(&root)
        .map(Path::to_path_buf)
        .map_err(|_| AppError::Build(format!("{} is outside the git repository", path.display())))
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
            Err(e) => return Err(git_error("read the status", e)),
        }
    }
    Ok(out)
}

/// Why a commit cannot be made here, if it cannot.
pub fn cannot_commit(repo: &git2::Repository) -> Option<String> {
    match repo.head_detached() {
        Ok(true) => Some(
            "HEAD is detached; check out a branch first (`git switch -c refresh-locks`)"
                .to_string(),
        ),
        Ok(false) => None,
        Err(e) if e.code() == git2::ErrorCode::UnbornBranch => None,
        Err(e) => Some(format!("cannot read HEAD: {}", e.message())),
    }
}

/// Commit the current content of `paths` (and only those) on HEAD with `message`; the index
/// entries of those paths are updated to match so `git status` stays clean for them, and
/// anything else staged stays staged. Returns the new commit id.
pub fn commit_files(
    repo: &git2::Repository,
    paths: &[PathBuf],
    message: &str,
) -> Result<String, AppError> {
    let head = match repo.head() {
        Ok(head) => Some(
            head.peel_to_commit()
                .map_err(|e| git_error("read HEAD", e))?,
        ),
        Err(e) if e.code() == git2::ErrorCode::UnbornBranch => None,
        Err(e) => return Err(git_error("read HEAD", e)),
    };
    let base = match &head {
        Some(c) => Some(c.tree().map_err(|e| git_error("read HEAD's tree", e))?),
        None => None,
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    let mut rels = Vec::new();
    for path in paths {
        let rel = in_repo(repo, path)?;
        let data = std::fs::read(path).map_err(|source| AppError::Io {
            path: path.clone(),
            action: "read",
            source,
        })?;
        let blob = repo.blob(&data).map_err(|e| git_error("store a file", e))?;
        update.upsert(&rel, blob, git2::FileMode::Blob);
        rels.push(rel);
    }
    let empty;
    let base_tree = match &base {
        Some(t) => t,
        None => {
            let oid = repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .map_err(|e| git_error("make an empty tree", e))?;
            empty = repo
                .find_tree(oid)
                .map_err(|e| git_error("read a tree", e))?;
            &empty
        }
    };
    let tree_id = update
        .create_updated(repo, base_tree)
        .map_err(|e| git_error("build the tree", e))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| git_error("read the tree", e))?;
    let signature = repo
        .signature()
        .map_err(|e| git_error("find who commits (set user.name and user.email)", e))?;
    let parents: Vec<&git2::Commit> = head.iter().collect();
    let id = repo
        .commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &parents,
        )
        .map_err(|e| git_error("commit", e))?;
    let mut index = repo.index().map_err(|e| git_error("open the index", e))?;
    for rel in &rels {
        index
            .add_path(rel)
            .map_err(|e| git_error("update the index", e))?;
    }
    index.write().map_err(|e| git_error("write the index", e))?;
    Ok(id.to_string())
}
