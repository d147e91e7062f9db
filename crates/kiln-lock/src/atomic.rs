//! Replacing a file so that readers see either the old or the new content, never a mix, and
//! serialising read-merge-replace cycles across processes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Replaces `path` with `bytes` atomically.
///
/// Writes `.{file}.kiln-tmp-{pid}` in the same directory, fsyncs it, gives it the existing
/// file's permissions (if `path` exists), renames it over `path` and fsyncs the directory.
/// On any error the temporary file is removed and the original is left untouched. Temporary
/// files of `path` left by a process that died (killed mid-write) are removed first.
///
/// Test hook: when the environment variable `KILN_TEST_PAUSE_BEFORE_RENAME` names a path,
/// after the fsync and before the rename this creates that path as an empty marker file and
/// sleeps 60 s, so a test can kill the process there and check the original is intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes into the temporary file (a stream too large to hold
/// in memory, e.g. an image archive); an error from `write` leaves `path` untouched.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
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
    remove_stale_temps(path)?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.kiln-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = replace(path, dir, &tmp, write);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files [`write_atomic`] left next to `path` when the process writing
/// them died (`.{file}.kiln-tmp-{pid}` whose pid is not running). Returns how many it removed.
/// Only on Linux, where `/proc` says whether a pid runs; elsewhere nothing is removed.
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else {
        return Ok(0);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.kiln-tmp-", name.to_string_lossy());
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !running(pid) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether process `pid` exists (Linux: `/proc/PID`); elsewhere assumed to.
fn running(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// An exclusive advisory lock (`flock`) on a directory, held until dropped.
///
/// kiln takes it on the directory of a file it re-reads, merges into and replaces
/// (`kiln.lock`), so concurrent kiln processes do not lose each other's updates. The directory
/// and not the file is locked because the file is replaced by a rename: a lock on the old
/// inode would not exclude a process that opens the new one. A sibling lock file would work
/// too but is litter in the user's tree. `fs4` does the `flock`: the workspace forbids `unsafe`
/// (so no direct libc call), and `std::fs::File::lock` needs Rust 1.89, above the workspace's
/// rust-version. Released by the kernel when the process dies.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Waits for and takes [`DirLock`] on `dir`.
pub fn lock_dir(dir: &Path) -> io::Result<DirLock> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let file = File::open(dir)?;
    fs4::FileExt::lock(&file)?;
    Ok(DirLock { _dir: file })
}

fn replace(
    path: &Path,
    dir: &Path,
    tmp: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    if let Ok(meta) = fs::metadata(path) {
        file.set_permissions(meta.permissions())?;
    }
    write(&mut file)?;
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
    fn temp_files_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uv.lock");
        // A pid above the kernel's maximum (2^22) never runs.
        fs::write(dir.path().join(".uv.lock.kiln-tmp-4194305"), "half").unwrap();
        let live = format!(".uv.lock.kiln-tmp-{}", std::os::unix::process::parent_id());
        fs::write(dir.path().join(&live), "someone else's").unwrap();
        fs::write(dir.path().join(".other.lock.kiln-tmp-4194305"), "not ours").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(
            entries(dir.path()),
            [".other.lock.kiln-tmp-4194305", live.as_str(), "uv.lock"]
        );
    }

    #[test]
    fn a_directory_lock_excludes_another_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let other = File::open(dir.path()).unwrap();
        assert!(matches!(
            fs4::FileExt::try_lock(&other),
            Err(fs4::TryLockError::WouldBlock)
        ));
        drop(held);
        fs4::FileExt::try_lock(&other).unwrap();
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
