//! Zip artifacts: BuildKit's copy unpacks only tar archives, so kiln unpacks each `.zip`
//! artifact itself, on the client, into a temporary directory that the session serves as the
//! local source `kiln-compile` names for it ([`kiln_compile::artifact_source`]). The archive
//! itself stays a context file of the target, so the inputs hash covers its bytes.
//!
//! Every entry must stay inside the directory it is unpacked into: absolute names, `..`,
//! symlinks that point outside (or are absolute), and entries that would be written through
//! a symlink are refused, naming the manifest entry and the archive entry.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_manifest::{Artifact, Diagnostic, Manifest, Target};

use crate::{AppError, Settings};

/// The zip artifacts of one build, unpacked; removed when dropped.
pub(crate) struct Unpacked {
    _dir: Option<tempfile::TempDir>,
    /// Local source name → directory.
    sources: BTreeMap<String, PathBuf>,
}

impl Unpacked {
    /// Every unpacked artifact as a local source for the sessions to serve: name → directory.
    pub(crate) fn sources(&self) -> BTreeMap<String, PathBuf> {
        self.sources.clone()
    }
}

/// Unpack the zip artifacts of the `selected` targets into a new temporary directory.
pub(crate) fn unpack(
    settings: &Settings,
    manifest: &Manifest,
    selected: &[String],
) -> Result<Unpacked, AppError> {
    let zips: Vec<(&Target, usize, &Artifact)> = selected
        .iter()
        .filter_map(|name| manifest.targets.get(name))
        .flat_map(|t| t.artifacts.iter().enumerate().map(move |(i, a)| (t, i, a)))
        .filter(|(_, _, a)| a.is_zip())
        .collect();
    if zips.is_empty() {
        return Ok(Unpacked {
            _dir: None,
            sources: BTreeMap::new(),
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("kiln-artifacts-")
        .tempdir()
        .map_err(|source| AppError::Io {
            path: std::env::temp_dir(),
            action: "create a directory for unpacked artifacts in",
            source,
        })?;
    let mut sources = BTreeMap::new();
    for (target, index, artifact) in zips {
        let name = kiln_compile::artifact_source(&target.name, index);
        let dest = dir.path().join(format!("{}-{index}", target.name));
        std::fs::create_dir(&dest).map_err(|source| AppError::Io {
            path: dest.clone(),
            action: "create",
            source,
        })?;
        let archive = settings.cwd.join(&target.context).join(&artifact.src);
        read_zip(&archive, Some(&dest)).map_err(|e| e.for_artifact(target, index, artifact))?;
        sources.insert(name, dest);
    }
    Ok(Unpacked {
        _dir: Some(dir),
        sources,
    })
}

/// `kiln check`: every zip artifact of `manifest` opens and has only entries that stay inside
/// (nothing is written). Returns one problem per bad archive.
pub(crate) fn check(cwd: &Path, manifest: &Manifest) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for target in manifest.targets.values() {
        for (index, artifact) in target.artifacts.iter().enumerate() {
            if !artifact.is_zip() {
                continue;
            }
            let archive = cwd.join(&target.context).join(&artifact.src);
            if !archive.exists() {
                continue; // reported by the path checks
            }
            if let Err(e) = read_zip(&archive, None) {
                problems.push(e.diagnostic(target, index, artifact));
            }
        }
    }
    problems
}

/// Why a zip could not be unpacked.
#[derive(Debug)]
enum ZipError {
    /// The archive could not be read as a zip.
    Archive(String),
    /// One entry is refused or could not be unpacked.
    Entry { entry: String, reason: String },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ZipError {
    fn diagnostic(&self, target: &Target, index: usize, artifact: &Artifact) -> Diagnostic {
        let what = match self {
            ZipError::Archive(reason) => format!("not a zip archive kiln can read: {reason}"),
            ZipError::Entry { entry, reason } => format!("entry `{entry}` {reason}"),
            ZipError::Io { path, source } => format!("cannot write {}: {source}", path.display()),
        };
        Diagnostic {
            location: artifact.location.clone(),
            key: format!("target.{}.artifacts[{index}].src", target.name),
            message: format!("{}: {what}", artifact.src),
            expected: Some("a zip archive whose entries stay inside `extract-to`".into()),
            hint: None,
        }
    }

    fn for_artifact(&self, target: &Target, index: usize, artifact: &Artifact) -> AppError {
        AppError::Manifest(kiln_manifest::Diagnostics(vec![
            self.diagnostic(target, index, artifact),
        ]))
    }
}

/// Read the zip at `archive` and, with `dest`, unpack it there (an empty directory). Every
/// entry is checked either way.
fn read_zip(archive: &Path, dest: Option<&Path>) -> Result<(), ZipError> {
    let file = std::fs::File::open(archive).map_err(|e| ZipError::Archive(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| ZipError::Archive(e.to_string()))?;
    // Directories get their times after everything inside them is written.
    let mut dir_times: Vec<(PathBuf, std::time::SystemTime)> = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ZipError::Archive(e.to_string()))?;
        let raw = entry.name().to_string();
        let refuse = |reason: &str| ZipError::Entry {
            entry: raw.clone(),
            reason: reason.to_string(),
        };
        let parts = inside(&raw).map_err(&refuse)?;
        if parts.is_empty() {
            continue; // `./` and the like: the root itself
        }
        let rel: PathBuf = parts.iter().collect();
        let mode = entry.unix_mode();
        let mtime = entry.last_modified().and_then(zip_time);
        let kind = if entry.is_symlink() {
            Kind::Symlink
        } else if entry.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let target = if kind == Kind::Symlink {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .map_err(|e| refuse(&format!("cannot be read: {e}")))?;
            link_inside(&parts, &target).map_err(|reason| refuse(&reason))?;
            Some(target)
        } else {
            None
        };
        let Some(dest) = dest else {
            if kind == Kind::File {
                // Reading it checks its compression method and CRC.
                std::io::copy(&mut entry, &mut std::io::sink())
                    .map_err(|e| refuse(&format!("cannot be read: {e}")))?;
            }
            continue;
        };
        let path = dest.join(&rel);
        not_through_a_symlink(dest, &parts).map_err(|reason| refuse(&reason))?;
        let io = |source| ZipError::Io {
            path: path.clone(),
            source,
        };
        match kind {
            Kind::Dir => {
                std::fs::create_dir_all(&path).map_err(io)?;
                set_mode(&path, mode.map_or(0o755, |m| m & 0o7777)).map_err(io)?;
                if let Some(t) = mtime {
                    dir_times.push((path.clone(), t));
                }
            }
            Kind::File => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            refuse("appears twice")
                        } else {
                            io(e)
                        }
                    })?;
                std::io::copy(&mut entry, &mut out)
                    .map_err(|e| refuse(&format!("cannot be read: {e}")))?;
                set_mode(&path, mode.map_or(0o644, |m| m & 0o7777)).map_err(io)?;
                if let Some(t) = mtime {
                    out.set_modified(t).map_err(io)?;
                }
            }
            Kind::Symlink => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let target = target.unwrap_or_default();
                std::os::unix::fs::symlink(&target, &path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        refuse("appears twice")
                    } else {
                        io(e)
                    }
                })?;
            }
        }
    }
    // Deepest first, so setting a directory's time is not undone by its children.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, time) in dir_times {
        if let Ok(dir) = std::fs::File::open(&path) {
            let _ = dir.set_modified(time);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// The components of an entry name that stays inside the directory it is unpacked into.
fn inside(name: &str) -> Result<Vec<&str>, &'static str> {
    if name.contains('\0') {
        return Err("has a NUL byte in its name");
    }
    if name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":") {
        return Err("is an absolute path: it would land outside `extract-to`");
    }
    let mut parts = Vec::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err("has `..` in its path: it would land outside `extract-to`"),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

/// A symlink at `link` (components) to `target` must be relative and stay inside.
fn link_inside(link: &[&str], target: &str) -> Result<(), String> {
    if target.starts_with('/') {
        return Err(format!(
            "is a symlink to the absolute path `{target}`, outside `extract-to`"
        ));
    }
    let mut depth = link.len().saturating_sub(1);
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return Err(format!(
                        "is a symlink to `{target}`, which points outside `extract-to`"
                    ));
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// No directory on the way to `parts` under `root` may be a symlink (an earlier entry's): the
/// entry would be written wherever it points.
fn not_through_a_symlink(root: &Path, parts: &[&str]) -> Result<(), String> {
    let mut path = root.to_path_buf();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "lies under `{part}`, a symlink in the archive; kiln does not write through symlinks"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A zip timestamp (local time as written, taken as UTC) as a system time.
fn zip_time(t: zip::DateTime) -> Option<std::time::SystemTime> {
    let days = days_from_civil(
        i64::from(t.year()),
        u32::from(t.month()),
        u32::from(t.day()),
    );
    let secs = days * 86_400
        + i64::from(t.hour()) * 3_600
        + i64::from(t.minute()) * 60
        + i64::from(t.second());
    let secs = u64::try_from(secs).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// (name, file content, symlink target); neither: a directory.
    type Entries<'a> = &'a [(&'a str, Option<&'a str>, Option<&'a str>)];

    fn zip_of(entries: Entries<'_>) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(file.reopen().unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o640);
        for (name, content, link) in entries {
            match (content, link) {
                (Some(c), _) => {
                    w.start_file(*name, opts).unwrap();
                    w.write_all(c.as_bytes()).unwrap();
                }
                (None, Some(target)) => w.add_symlink(*name, *target, opts).unwrap(),
                (None, None) => w.add_directory(*name, opts).unwrap(),
            }
        }
        w.finish().unwrap();
        file
    }

    #[test]
    fn unpacks_files_dirs_modes_and_inside_symlinks() {
        let z = zip_of(&[
            ("top.txt", Some("top\n"), None),
            ("nested/", None, None),
            ("nested/deeper/file.txt", Some("deep\n"), None),
            ("nested/link", None, Some("deeper/file.txt")),
            ("up", None, Some("nested/../top.txt")),
        ]);
        let out = tempfile::tempdir().unwrap();
        read_zip(z.path(), Some(out.path())).unwrap();
        let read = |p: &str| std::fs::read_to_string(out.path().join(p)).unwrap();
        assert_eq!(read("top.txt"), "top\n");
        assert_eq!(read("nested/deeper/file.txt"), "deep\n");
        assert_eq!(read("nested/link"), "deep\n");
        assert_eq!(read("up"), "top\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join("top.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        // The archive's timestamps, not now.
        let modified = std::fs::metadata(out.path().join("top.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(modified < std::time::SystemTime::now() - std::time::Duration::from_secs(60));
        read_zip(z.path(), None).unwrap();
    }

    #[test]
    fn entries_that_escape_are_refused() {
        let cases: &[(Entries<'_>, &str)] = &[
            (
                &[("../evil", Some("x"), None)],
                "entry `../evil` has `..` in its path",
            ),
            (&[("a/../../evil", Some("x"), None)], "has `..` in its path"),
            (&[("/etc/evil", Some("x"), None)], "is an absolute path"),
            (
                &[("l", None, Some("/etc/passwd"))],
                "symlink to the absolute path `/etc/passwd`",
            ),
            (
                &[("d/l", None, Some("../../x"))],
                "which points outside `extract-to`",
            ),
            (
                &[("l", None, Some(".")), ("l/f", Some("x"), None)],
                "lies under `l`, a symlink in the archive",
            ),
            (
                &[("f", Some("x"), None), ("./f", Some("y"), None)],
                "appears twice",
            ),
        ];
        for (entries, expected) in cases {
            let z = zip_of(entries);
            let out = tempfile::tempdir().unwrap();
            let e = read_zip(z.path(), Some(out.path())).unwrap_err();
            let text = format!("{e:?} {}", describe(&e));
            assert!(text.contains(expected), "{entries:?}: {text}");
            // Nothing landed outside.
            assert!(!out.path().parent().unwrap().join("evil").exists());
        }
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"plain text").unwrap();
        assert!(matches!(
            read_zip(not_zip.path(), None),
            Err(ZipError::Archive(_))
        ));
    }

    fn describe(e: &ZipError) -> String {
        match e {
            ZipError::Entry { entry, reason } => format!("entry `{entry}` {reason}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1980, 1, 1), 3_652);
    }
}
