//! The trust boundary for host files. Every local path a manifest makes kiln read — build
//! contexts, CA bundles, secret files, artifacts — must resolve (symlinks followed) inside the
//! repository that holds the manifest: its git work tree, or the manifest's own directory when
//! it is not in git. More is readable only when the command line grants it with
//! `--allow fs.read=PATH` (as buildx bake's entitlements do), so building an untrusted pull
//! request cannot copy `/etc/shadow` into an image. `ca-certificates = "host"` is not a path a
//! manifest chooses and stays allowed.
//!
//! Inside a context, kiln-fsutil lists entries with lstat and never follows a symlink, so only
//! the context directory itself needs resolving here.

use std::path::{Component, Path, PathBuf};

use kiln_manifest::{CaCertificates, Diagnostic, Location, Manifest, SecretSource};

use crate::Settings;

/// What the manifests of one command may read.
pub(crate) struct ReadBoundary {
    cwd: PathBuf,
    /// `--allow fs.read=PATH`, resolved.
    allowed: Vec<PathBuf>,
}

impl ReadBoundary {
    pub(crate) fn new(settings: &Settings) -> ReadBoundary {
        ReadBoundary {
            cwd: settings.cwd.clone(),
            allowed: settings
                .allow_read
                .iter()
                .map(|p| resolve(&settings.cwd.join(p)))
                .collect(),
        }
    }

    /// The directory the paths of `manifest` (as named on the command line or discovered,
    /// relative to the working directory) must stay inside, and how to call it in a message.
    fn root(&self, manifest: &Path) -> (PathBuf, &'static str) {
        let file = self.cwd.join(manifest);
        let dir = resolve(file.parent().unwrap_or(Path::new("/")));
        match dir.ancestors().find(|d| d.join(".git").exists()) {
            Some(root) => (root.to_path_buf(), "the git repository that holds"),
            None => (dir, "the directory (not in git) of"),
        }
    }

    /// `Ok` when the manifest at `location` may make kiln read `path` (relative to the working
    /// directory, or absolute) for `key`; else a diagnostic naming the key, the resolved path
    /// and the flag that would allow it.
    pub(crate) fn check(
        &self,
        path: &Path,
        key: &str,
        location: &Location,
    ) -> Result<(), Box<Diagnostic>> {
        let resolved = resolve(&self.cwd.join(path));
        let (root, what) = self.root(&location.file);
        if resolved.starts_with(&root) || self.allowed.iter().any(|a| resolved.starts_with(a)) {
            return Ok(());
        }
        let shown = if resolved == self.cwd.join(path) {
            format!("`{}`", resolved.display())
        } else {
            format!("`{}` (resolved: `{}`)", path.display(), resolved.display())
        };
        Err(Box::new(Diagnostic {
            location: location.clone(),
            key: key.to_string(),
            message: format!(
                "reads {shown}, outside {} ({what} {})",
                root.display(),
                location.file.display()
            ),
            expected: Some(format!("a path inside {}", root.display())),
            hint: Some(format!(
                "if this manifest may read it, allow it on the command line: `--allow fs.read={}`",
                resolved.display()
            )),
        }))
    }
}

/// Every path the manifests read that leaves its repository: contexts, CA bundles, secret
/// files and artifacts. One diagnostic per key and place (a `[defaults]` bundle is reported once).
pub(crate) fn check_reads(settings: &Settings, manifest: &Manifest) -> Vec<Diagnostic> {
    let boundary = ReadBoundary::new(settings);
    let mut problems: Vec<Diagnostic> = Vec::new();
    for (name, target) in &manifest.targets {
        let key = |k: &str| format!("target.{name}.{k}");
        let mut reads: Vec<(PathBuf, String, &Location)> = Vec::new();
        match &target.context_origin {
            Some(origin) => {
                reads.push((target.context.clone(), origin.key.clone(), &origin.location))
            }
            None => reads.push((target.context.clone(), key("context"), &target.location)),
        }
        if let CaCertificates::Path(path) = &target.ca_certificates {
            let (k, location) = match &target.ca_certificates_origin {
                Some(origin) => (origin.key.clone(), &origin.location),
                None => (key("ca-certificates"), &target.location),
            };
            reads.push((path.clone(), k, location));
        }
        for secret in target.secrets.values() {
            if let SecretSource::File(path) = &secret.source {
                reads.push((
                    path.clone(),
                    key(&format!("secrets.{}", secret.name)),
                    &secret.location,
                ));
            }
        }
        for (i, artifact) in target.artifacts.iter().enumerate() {
            reads.push((
                target.context.join(&artifact.src),
                key(&format!("artifacts[{i}].src")),
                &artifact.location,
            ));
        }
        for (path, key, location) in reads {
            if let Err(d) = boundary.check(&path, &key, location) {
                if !problems.contains(&d) {
                    problems.push(*d);
                }
            }
        }
    }
    problems.sort_by(|a, b| a.location.cmp(&b.location));
    problems
}

/// `path` (absolute) with every symlink resolved: the longest part that exists is
/// canonicalized, the rest (which cannot hold a symlink) applied lexically.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    normalise(path, true)
}

/// `path` with `.` and `..` folded by its text alone (`manifests/../examples/x` is
/// `examples/x`), for messages and labels.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    normalise(path, false)
}

/// kiln's one path normaliser: `.` dropped, `..` taking off the component before it (kept
/// when there is none, dropped at the root), and with `follow` each existing prefix
/// canonicalized as it is reached, so a `..` after a symlink leaves the symlink's target.
fn normalise(path: &Path, follow: bool) -> PathBuf {
    let mut out = PathBuf::new();
    let mut exists = follow;
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => out.push(part.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(".."),
            },
            Component::Normal(name) => {
                out.push(name);
                if exists {
                    match out.canonicalize() {
                        Ok(real) => out = real,
                        Err(_) => exists = false,
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cwd: &Path, allow: &[&str]) -> Settings {
        Settings {
            cwd: cwd.to_path_buf(),
            allow_read: allow.iter().map(PathBuf::from).collect(),
            ..Settings::default()
        }
    }

    fn at(file: &str) -> Location {
        Location {
            file: PathBuf::from(file),
            line: 3,
            column: 11,
        }
    }

    #[test]
    fn resolves_symlinks_and_dot_dot_even_below_a_missing_part() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("repo/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("repo/etc-link")).unwrap();
        assert_eq!(
            resolve(&root.join("repo/etc-link/passwd")),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(resolve(&root.join("repo/sub/../../x/y")), root.join("x/y"));
        assert_eq!(
            resolve(&root.join("repo/nope/../sub")),
            root.join("repo/sub")
        );
        assert_eq!(resolve(Path::new("/")), PathBuf::from("/"));
        assert_eq!(
            resolve(Path::new("/../etc/./passwd")),
            PathBuf::from("/etc/passwd")
        );
    }

    #[test]
    fn lexical_folding_reads_no_file() {
        let fold = |p: &str| lexical(Path::new(p));
        assert_eq!(
            fold("manifests/../examples/./x"),
            PathBuf::from("examples/x")
        );
        assert_eq!(fold("../a/../../b"), PathBuf::from("../../b"));
        assert_eq!(fold("/a/../../b"), PathBuf::from("/b"));
        assert_eq!(fold("a/.."), PathBuf::new());
        // No symlink is followed, even one that exists.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        assert_eq!(lexical(&root.join("etc-link/../x")), root.join("x"));
        assert_eq!(resolve(&root.join("etc-link/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn the_manifest_repository_bounds_reads_unless_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        let repo = top.join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("manifests")).unwrap();
        std::fs::create_dir_all(repo.join("app")).unwrap();
        std::fs::create_dir_all(top.join("other")).unwrap();
        std::os::unix::fs::symlink(top.join("other"), repo.join("app/out")).unwrap();
        let b = ReadBoundary::new(&settings(&repo, &[]));
        let m = at("manifests/a.toml");
        assert!(b.check(Path::new("manifests/../app"), "k", &m).is_ok());
        assert!(b.check(Path::new("app/missing.pem"), "k", &m).is_ok());
        let d = b
            .check(Path::new("manifests/../.."), "target.a.context", &m)
            .unwrap_err();
        assert_eq!(d.key, "target.a.context");
        assert!(
            d.message.contains(&top.display().to_string()),
            "{}",
            d.message
        );
        assert!(
            d.hint
                .as_deref()
                .unwrap()
                .contains(&format!("--allow fs.read={}", top.display()))
        );
        // A symlink out of the repository is caught, and named with where it leads.
        let d = b.check(Path::new("app/out"), "k", &m).unwrap_err();
        assert!(d.message.contains("resolved"), "{}", d.message);
        assert!(b.check(Path::new("/etc/shadow"), "k", &m).is_err());
        // Granted on the command line.
        let b = ReadBoundary::new(&settings(&repo, &["../other"]));
        assert!(b.check(Path::new("app/out/x"), "k", &m).is_ok());
        assert!(b.check(Path::new("/etc/shadow"), "k", &m).is_err());
        let b = ReadBoundary::new(&settings(&repo, &["/"]));
        assert!(b.check(Path::new("/etc/shadow"), "k", &m).is_ok());
        // Outside git, the manifest's own directory is the boundary.
        let b = ReadBoundary::new(&settings(&top, &[]));
        let m = at("other/kiln.toml");
        assert!(b.check(Path::new("other/ctx"), "k", &m).is_ok());
        let d = b.check(Path::new("repo"), "k", &m).unwrap_err();
        assert!(d.message.contains("not in git"), "{}", d.message);
    }
}
