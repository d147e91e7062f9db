//! Walking a directory into the ordered list of [`Entry`]s that fsutil's sender announces.

use crate::Error;
use crate::filter::{Filter, Matcher};
use crate::types::Stat;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Go `os.FileMode` bits (the `mode` of a [`Stat`]).
pub mod mode {
    pub const DIR: u32 = 1 << 31;
    pub const APPEND: u32 = 1 << 30;
    pub const EXCLUSIVE: u32 = 1 << 29;
    pub const TEMPORARY: u32 = 1 << 28;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    pub const IRREGULAR: u32 = 1 << 19;
    /// Go's `ModeType`: a mode with none of these bits is a regular file.
    pub const TYPE: u32 = DIR | SYMLINK | NAMED_PIPE | SOCKET | DEVICE | CHAR_DEVICE | IRREGULAR;
    pub const PERM: u32 = 0o777;

    /// Whether a Go mode is a regular file's.
    pub fn is_regular(mode: u32) -> bool {
        mode & TYPE == 0
    }

    /// The Unix permission bits (`0o7777`) of a Go mode.
    pub fn unix_permissions(mode: u32) -> u32 {
        let mut perm = mode & 0o7777;
        if mode & SETUID != 0 {
            perm |= 0o4000;
        }
        if mode & SETGID != 0 {
            perm |= 0o2000;
        }
        if mode & STICKY != 0 {
            perm |= 0o1000;
        }
        perm
    }
}

/// One walked path: what is announced in a `PACKET_STAT`, plus where to read it from.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Slash-separated, relative to the walked root (never `""`, `/…` or `./…`).
    pub path_rel: String,
    /// The announced metadata; `stat.path == path_rel`.
    pub stat: Stat,
    /// The path on this machine.
    pub abs: PathBuf,
}

impl Entry {
    /// A regular file (not a hard link announcement) whose content a receiver may request.
    pub fn is_requestable(&self) -> bool {
        mode::is_regular(self.stat.mode) && self.stat.linkname.is_empty()
    }
}

/// Go's `os.FileMode` of a file, from its `lstat`.
pub fn go_mode(meta: &Metadata) -> u32 {
    let raw = meta.mode();
    let ft = meta.file_type();
    let mut m = raw & mode::PERM;
    if ft.is_dir() {
        m |= mode::DIR;
    } else if ft.is_symlink() {
        m |= mode::SYMLINK;
    } else if ft.is_block_device() {
        m |= mode::DEVICE;
    } else if ft.is_char_device() {
        m |= mode::DEVICE | mode::CHAR_DEVICE;
    } else if ft.is_fifo() {
        m |= mode::NAMED_PIPE;
    } else if ft.is_socket() {
        m |= mode::SOCKET;
    }
    if raw & 0o4000 != 0 {
        m |= mode::SETUID;
    }
    if raw & 0o2000 != 0 {
        m |= mode::SETGID;
    }
    if raw & 0o1000 != 0 {
        m |= mode::STICKY;
    }
    m
}

/// Linux `major(dev)` / `minor(dev)`.
fn dev_major_minor(dev: u64) -> (i64, i64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as i64, minor as i64)
}

/// Nanoseconds per second.
const NANOS: i64 = 1_000_000_000;

/// The [`Stat`] kiln announces for `abs` (already `lstat`ed as `meta`), named `rel`: fsutil's
/// `mkstat`, except that owner is always 0:0 (so cache keys don't depend on who uploads) and a
/// regular file's `mod_time` carries its content (see [`content_mod_time`]).
pub fn make_stat(abs: &Path, rel: &str, meta: &Metadata) -> Result<Stat, Error> {
    let mode = go_mode(meta);
    let ft = meta.file_type();
    let mod_time = match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
        Err(_) => 0,
    };
    let mut stat = Stat {
        path: rel.to_string(),
        mode,
        mod_time,
        ..Stat::default()
    };
    if ft.is_symlink() {
        let target = std::fs::read_link(abs).map_err(|e| Error::io(abs, e))?;
        stat.linkname = target
            .to_str()
            .ok_or_else(|| Error::NonUtf8Path(abs.to_path_buf()))?
            .to_string();
        // As fsutil: a symlink's size is its target's length (what the daemon's copy lstats
        // to, so an unchanged link is not rewritten on every build).
        stat.size = i64::try_from(meta.len()).unwrap_or(i64::MAX);
    } else if !ft.is_dir() {
        stat.size = i64::try_from(meta.len()).unwrap_or(i64::MAX);
    }
    if ft.is_file() {
        stat.mod_time = content_mod_time(abs, mod_time);
    }
    if ft.is_block_device() || ft.is_char_device() {
        (stat.devmajor, stat.devminor) = dev_major_minor(meta.rdev());
    }
    Ok(stat)
}

/// A regular file's announced `mod_time`: its mtime's whole seconds, plus sub-second
/// nanoseconds taken from a SHA-256 of its content (instead of the real ones).
///
/// Why: the daemon (fsutil's receiver, BuildKit v0.8 and later alike) keeps a copy of each
/// context per shared key and name and requests only the files whose size, mtime, mode,
/// owner or link target differ from that copy; it never looks at content. A file rewritten
/// with the same size and the same mtime (`touch -d`, `cp -p`, `rsync -t`, tar/zip extraction,
/// fixed-mtime generators, two writes in one clock tick or on a coarse-timestamp filesystem)
/// would be skipped, and the image would get the old bytes for as long as that copy lives.
/// With the content in the nanoseconds, any content change changes the announced mtime
/// (barring a 1 in 10^9 collision), while unchanged files announce the same value on every
/// build and every machine, so incremental transfer and reproducible layers are kept. Whole
/// seconds stay real (what `make`, Python's `.pyc` checks and tar without PAX see). A file that
/// cannot be read keeps its real mtime (reading it fails later, when its content is requested).
pub fn content_mod_time(abs: &Path, mod_time: i64) -> i64 {
    match content_digest(abs) {
        Ok(digest) => {
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            let nanos = (u64::from_be_bytes(first) % NANOS as u64) as i64;
            mod_time
                .div_euclid(NANOS)
                .saturating_mul(NANOS)
                .saturating_add(nanos)
        }
        Err(_) => mod_time,
    }
}

fn content_digest(abs: &Path) -> io::Result<[u8; 32]> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(abs)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// A directory being walked.
struct Frame {
    rel: String,
    abs: PathBuf,
    children: std::vec::IntoIter<OsString>,
    /// This directory's own entry while it is held back: it was descended only because
    /// something below it may be sent, and is emitted just before the first such path.
    pending: Option<Entry>,
}

/// The names in a directory, sorted byte-wise (Go's `filepath.Walk` order). A directory that
/// vanished reads as empty.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>, Error> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for ent in rd {
        names.push(ent.map_err(|e| Error::io(dir, e))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Walks `root` (depth-first, pre-order, siblings sorted byte-wise by name; symlinks are never
/// followed) and returns the entries that pass `filter`, each preceded by all its ancestor
/// directories. The root itself is not an entry. A symlinked `root` is resolved first.
pub fn walk(root: &Path, filter: &Filter) -> Result<Vec<Entry>, Error> {
    let include = Matcher::new(&filter.include)?;
    let exclude = Matcher::new(&filter.exclude)?;
    let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
    let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(root));
    }

    let mut out = Vec::new();
    let mut stack = vec![Frame {
        rel: String::new(),
        children: sorted_names(&root)?.into_iter(),
        abs: root,
        pending: None,
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.children.next() else {
            stack.pop();
            continue;
        };
        let abs = frame.abs.join(&name);
        let lossy = name.to_string_lossy();
        let rel = if frame.rel.is_empty() {
            lossy.into_owned()
        } else {
            format!("{}/{lossy}", frame.rel)
        };
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            // Removed since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&abs, e)),
        };
        let is_dir = meta.is_dir();

        let included = include.is_empty() || include.matches(&rel);
        let excluded = !exclude.is_empty() && exclude.matches(&rel);
        let emit = included && !excluded;
        let descend = is_dir
            && (included || include.could_match_below(&rel))
            && (!excluded || exclude.exception_could_match_below(&rel));
        if !emit && !descend {
            continue;
        }
        if name.to_str().is_none() {
            return Err(Error::NonUtf8Path(abs));
        }
        let stat = make_stat(&abs, &rel, &meta)?;
        let entry = Entry {
            path_rel: rel.clone(),
            stat,
            abs: abs.clone(),
        };
        if emit {
            for f in stack.iter_mut() {
                out.extend(f.pending.take());
            }
        }
        if descend {
            let children = sorted_names(&abs)?.into_iter();
            let pending = if emit {
                out.push(entry);
                None
            } else {
                Some(entry)
            };
            stack.push(Frame {
                rel,
                abs,
                children,
                pending,
            });
        } else {
            out.push(entry);
        }
    }
    Ok(out)
}
