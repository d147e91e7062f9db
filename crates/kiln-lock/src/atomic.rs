//! Replacing a file so that readers see either the old or the new content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Replaces `path` with `bytes` atomically.
///
/// Writes `.{file}.kiln-tmp-{pid}` in the same directory, fsyncs it, gives it the existing
/// file's permissions (if `path` exists), renames it over `path` and fsyncs the directory.
/// On any error the temporary file is removed and the original is left untouched.
///
/// Test hook: when the environment variable `KILN_TEST_PAUSE_BEFORE_RENAME` names a path,
/// after the fsync and before the rename this creates that path as an empty marker file and
/// sleeps 60 s, so a test can kill the process there and check the original is intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp: PathBuf = dir.join(format!(
        ".{}.kiln-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = replace(path, dir, &tmp, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn replace(path: &Path, dir: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    if let Ok(meta) = fs::metadata(path) {
        file.set_permissions(meta.permissions())?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    if let Some(marker) = std::env::var_os("KILN_TEST_PAUSE_BEFORE_RENAME") {
        File::create(marker)?;
        std::thread::sleep(Duration::from_secs(60));
    }
    fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uv.lock");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        assert_eq!(entries(dir.path()), ["uv.lock"]);
    }

    #[cfg(unix)]
    #[test]
    fn preserves_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.lock");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn failures_leave_the_original_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // Parent is a regular file: cannot even create the temp file (also as root).
        let file = dir.path().join("plain");
        fs::write(&file, "keep").unwrap();
        assert!(write_atomic(&file.join("kiln.lock"), b"new").is_err());
        assert_eq!(fs::read(&file).unwrap(), b"keep");
        // Target is a non-empty directory: the temp file is written, the rename fails.
        let target = dir.path().join("kiln.lock");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), "keep").unwrap();
        assert!(write_atomic(&target, b"new").is_err());
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"keep");
        assert_eq!(entries(dir.path()), ["kiln.lock", "plain"]);
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
