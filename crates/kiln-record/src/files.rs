//! The file access of this crate, as a trait: [`Disk`] is the real file system (and
//! kiln-fsutil's walk, so the hash sees exactly the files a context sends).

use std::io;
use std::path::{Path, PathBuf};

/// One path of a context as the walk announces it: what the inputs hash reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// Slash-separated, relative to the context.
    pub path_rel: String,
    /// Go `os.FileMode` bits (kiln-fsutil's `mode`).
    pub mode: u32,
    /// A symlink's target, else empty.
    pub linkname: String,
    /// Where to read its content (a regular file's).
    pub abs: PathBuf,
}

impl ContextEntry {
    /// A regular file, whose content is hashed (not a directory, symlink or device).
    pub fn is_regular(&self) -> bool {
        kiln_fsutil::mode::is_regular(self.mode) && self.linkname.is_empty()
    }
}

/// What the flock of [`Files::lock_dir`] is held by: released when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Option<kiln_lock::DirLock>);

impl Held {
    /// A lock that holds nothing (for a file system without other processes).
    pub fn nothing() -> Held {
        Held(None)
    }
}

/// Every file access of kiln-record.
pub trait Files {
    /// A file's bytes.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// A file's text (UTF-8).
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// `path` with symlinks resolved (an error when it does not exist).
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// The paths of `context` that `filter` passes (includes, ignore-file excludes) in the
    /// order fsutil announces them: depth first, siblings sorted byte-wise, each path after
    /// the directories leading to it.
    fn walk(
        &self,
        context: &Path,
        filter: &kiln_fsutil::Filter,
    ) -> Result<Vec<ContextEntry>, kiln_fsutil::Error>;
    /// Replace `path` with `bytes` so that a reader sees the old or the new file, never half.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Wait for and take the lock on `dir` that serialises read-merge-replace cycles of the
    /// files in it across processes.
    fn lock_dir(&self, dir: &Path) -> io::Result<Held>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        path.canonicalize()
    }

    fn walk(
        &self,
        context: &Path,
        filter: &kiln_fsutil::Filter,
    ) -> Result<Vec<ContextEntry>, kiln_fsutil::Error> {
        Ok(kiln_fsutil::walk(context, filter)?
            .into_iter()
            .map(|entry| ContextEntry {
                path_rel: entry.path_rel,
                mode: entry.stat.mode,
                linkname: entry.stat.linkname,
                abs: entry.abs,
            })
            .collect())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        kiln_lock::write_atomic(path, bytes)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Held> {
        kiln_lock::lock_dir(dir).map(|lock| Held(Some(lock)))
    }
}
