//! Which manifests a command reads.

use std::path::{Path, PathBuf};

use crate::AppError;

/// `explicit` files if any were given; else `kiln.toml` in `cwd`; else every
/// `manifests/*.toml` at the git root above `cwd`, sorted. Paths are returned relative to `cwd`
/// where possible, as they appear in messages.
pub fn discover_manifests(cwd: &Path, explicit: &[PathBuf]) -> Result<Vec<PathBuf>, AppError> {
    if !explicit.is_empty() {
        return Ok(explicit.to_vec());
    }
    if cwd.join("kiln.toml").is_file() {
        return Ok(vec![PathBuf::from("kiln.toml")]);
    }
    let root = cwd.ancestors().find(|dir| dir.join(".git").exists());
    if let Some(root) = root {
        let dir = root.join("manifests");
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                    found.push(relative_to(&path, cwd));
                }
            }
        }
        if !found.is_empty() {
            found.sort();
            return Ok(found);
        }
    }
    Err(AppError::NoManifest {
        cwd: cwd.to_path_buf(),
        root: root.map(Path::to_path_buf),
    })
}

/// `path` relative to `base` when `path` is under it (or under one of its ancestors, with
/// `..` steps), else unchanged.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let mut ups = PathBuf::new();
    for ancestor in base.ancestors() {
        if let Ok(rest) = path.strip_prefix(ancestor) {
            return ups.join(rest);
        }
        ups.push("..");
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_for_messages() {
        assert_eq!(
            relative_to(Path::new("/r/manifests/a.toml"), Path::new("/r/sub/dir")),
            PathBuf::from("../../manifests/a.toml")
        );
        assert_eq!(
            relative_to(Path::new("/r/manifests/a.toml"), Path::new("/r")),
            PathBuf::from("manifests/a.toml")
        );
    }

    #[test]
    fn kiln_toml_wins_then_git_root_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("manifests/b.toml"), "").unwrap();
        std::fs::write(root.join("manifests/a.toml"), "").unwrap();
        std::fs::write(root.join("manifests/notes.txt"), "").unwrap();
        let found = discover_manifests(&root.join("sub"), &[]).unwrap();
        assert_eq!(
            found,
            [
                PathBuf::from("../manifests/a.toml"),
                PathBuf::from("../manifests/b.toml")
            ]
        );
        std::fs::write(root.join("sub/kiln.toml"), "").unwrap();
        let found = discover_manifests(&root.join("sub"), &[]).unwrap();
        assert_eq!(found, [PathBuf::from("kiln.toml")]);
    }

    #[test]
    fn nothing_found_says_where_it_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let err = discover_manifests(tmp.path(), &[]).unwrap_err();
        assert!(err.to_string().contains("no `kiln.toml` in"), "{err}");
    }
}
