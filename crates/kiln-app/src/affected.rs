//! `kiln affected`: which targets a change or a bad version reaches — a package version its
//! lock files pin, a base image, a file its stages read, or everything changed since a git
//! ref — and, through `target:` bases and copies, every target built on those. With
//! `--history`, every image kiln.lock ever recorded on the current branch whose lock files
//! (at the commit that first recorded it) pinned the bad version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiln_graph::PackagesMode;
use kiln_manifest::{Base, CopySource, Source};
use serde::Serialize;

use crate::history::{self, Commit};
use crate::{AppError, Loaded, Settings};

/// What `kiln affected` asks about (exactly one of `package`, `base`, `file` — `--path` on
/// the command line, `--file` names manifests —, `since`).
#[derive(Debug, Clone, Default)]
pub struct AffectedOptions {
    /// `NAME`, `NAME==VERSION`, or `NAME` and a specifier (`NAME>=1.0,<1.2`).
    pub package: Option<String>,
    /// An image reference: targets whose base (or an image they copy from) it is.
    pub base: Option<String>,
    /// A file (relative to the working directory): targets whose stages read it.
    pub file: Option<PathBuf>,
    /// A git ref: targets whose files, manifest or base pins changed since.
    pub since: Option<String>,
    /// Also every image recorded in kiln.lock history with the bad package version.
    pub history: bool,
    pub json: bool,
}

/// One target the change reaches.
#[derive(Debug, Clone, Serialize)]
pub struct Reached {
    pub target: String,
    pub image: Option<String>,
    /// Why: what it pins or reads, or the target it builds on.
    pub why: String,
    /// Whether the change hits the target itself (not only a target it builds on).
    pub direct: bool,
}

/// One image in kiln.lock history.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedImage {
    pub target: String,
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// The pushed manifest digest.
    pub digest: Option<String>,
    /// The commit that first recorded it.
    pub commit: Commit,
    /// The matching pins: `LOCKFILE: NAME VERSION`.
    pub pins: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Report {
    targets: Vec<Reached>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<RecordedImage>>,
}

/// A package query: a name and the versions it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackageSpec {
    name: String,
    clauses: Vec<(String, String)>,
}

impl PackageSpec {
    pub(crate) fn parse(s: &str) -> Result<PackageSpec, AppError> {
        let s = s.trim();
        let end = s.find(|c: char| "=<>!~ ".contains(c)).unwrap_or(s.len());
        let (name, rest) = s.split_at(end);
        if name.is_empty() {
            return Err(AppError::Usage(format!(
                "--package `{s}`: expected NAME, NAME==VERSION or NAME and a specifier such as NAME>=1.0,<1.2"
            )));
        }
        let mut clauses = Vec::new();
        for clause in rest.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let op_end = clause
                .find(|c: char| !"=<>!~".contains(c))
                .unwrap_or(clause.len());
            let (op, version) = clause.split_at(op_end);
            let version = version.trim();
            if !["==", "!=", ">=", "<=", ">", "<", "~=", "==="].contains(&op) || version.is_empty()
            {
                return Err(AppError::Usage(format!(
                    "--package `{s}`: `{clause}` is not a version clause (==, !=, >=, <=, >, <, ~= and a version)"
                )));
            }
            clauses.push((op.to_string(), version.to_string()));
        }
        Ok(PackageSpec {
            name: name.to_string(),
            clauses,
        })
    }

    /// Whether a lock's `name` pinned at `version` matches.
    pub(crate) fn matches(&self, name: &str, version: &str) -> bool {
        let same_name = name == self.name
            || kiln_lock::normalize_python_name(name)
                == kiln_lock::normalize_python_name(&self.name);
        same_name
            && self.clauses.iter().all(|(op, v)| {
                let ord = compare_versions(version, v);
                match op.as_str() {
                    "==" | "===" => ord.is_eq() || version == v,
                    "!=" => !ord.is_eq(),
                    ">=" => ord.is_ge(),
                    "<=" => ord.is_le(),
                    ">" => ord.is_gt(),
                    "<" => ord.is_lt(),
                    // ~=X.Y.Z: >= X.Y.Z and == X.Y.*
                    "~=" => {
                        let parts: Vec<&str> = v.split('.').collect();
                        let prefix = parts[..parts.len().saturating_sub(1)].join(".");
                        ord.is_ge()
                            && (prefix.is_empty()
                                || version == prefix
                                || version.starts_with(&format!("{prefix}.")))
                    }
                    _ => false,
                }
            })
    }
}

/// Versions compared part by part (`.`, `-`, `+` separate parts), numbers as numbers, a
/// missing part as 0 (`1.0` == `1.0.0`).
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<String> {
        s.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (split(a), split(b));
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map(String::as_str).unwrap_or("0");
        let y = b.get(i).map(String::as_str).unwrap_or("0");
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            // A pre-release part sorts before a number (`1.0.rc1` < `1.0.0`).
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    std::cmp::Ordering::Equal
}

/// Each lock file of `target` (as the manifest names it) and what it pins, read from the
/// working tree; lock files that do not exist or do not parse are left out (for `plan`).
pub(crate) fn target_pins(
    cwd: &Path,
    target: &kiln_manifest::Target,
) -> BTreeMap<String, BTreeMap<String, String>> {
    read_pins(cwd, target, false).unwrap_or_default()
}

/// [`target_pins`], with a lock file that does not parse an error naming it (`strict`).
/// A lock file that does not exist yet (never refreshed) pins nothing.
fn read_pins(
    cwd: &Path,
    target: &kiln_manifest::Target,
    strict: bool,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, AppError> {
    let mut out = BTreeMap::new();
    let Some(packages) = &target.packages else {
        return Ok(out);
    };
    for file in &packages.lock {
        let Some(format) = packages.lock_format(file) else {
            continue;
        };
        let path = cwd.join(&target.context).join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match kiln_lock::pins(format, &text) {
            Ok(pins) => {
                out.insert(file.clone(), pins);
            }
            Err(source) if strict => {
                return Err(AppError::TargetLock {
                    target: target.name.clone(),
                    path,
                    source,
                });
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// `kiln affected`.
pub fn affected(settings: &Settings, options: &AffectedOptions) -> Result<String, AppError> {
    let given = [
        options.package.is_some(),
        options.base.is_some(),
        options.file.is_some(),
        options.since.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(AppError::Usage(
            "kiln affected takes one of --package, --base, --path or --since".to_string(),
        ));
    }
    if options.history && options.package.is_none() {
        return Err(AppError::Usage(
            "--history goes with --package (which recorded images pinned that version)".to_string(),
        ));
    }
    let loaded = crate::load(settings, PackagesMode::Pinned)?;
    let mut direct: BTreeMap<String, String> = BTreeMap::new();
    let spec = options
        .package
        .as_deref()
        .map(PackageSpec::parse)
        .transpose()?;
    if let Some(spec) = &spec {
        for (name, target) in &loaded.manifest.targets {
            let hits: Vec<String> = read_pins(&settings.cwd, target, true)?
                .iter()
                .flat_map(|(file, pins)| {
                    pins.iter()
                        .filter(|(n, v)| spec.matches(n, v))
                        .map(move |(n, v)| format!("{file} pins {n} {v}"))
                })
                .collect();
            if !hits.is_empty() {
                direct.insert(name.clone(), hits.join(", "));
            }
        }
    }
    if let Some(base) = &options.base {
        let wanted = kiln_reference::Reference::parse(base)
            .map_err(|e| AppError::Usage(format!("--base `{base}`: {e}")))?;
        let same = |r: &kiln_reference::Reference| match wanted.digest() {
            Some(d) => {
                r.digest() == Some(d)
                    || loaded
                        .lock
                        .base(&r.without_digest().to_string())
                        .is_some_and(|b| b.digest.as_deref() == Some(d))
            }
            None => r.without_digest() == wanted.without_digest(),
        };
        for (name, target) in &loaded.manifest.targets {
            if let Base::Image(r) = &target.from
                && same(r)
            {
                direct.insert(name.clone(), format!("its base is {}", r.without_digest()));
            }
            for copy in &target.copy {
                if let CopySource::Image(r) = &copy.from
                    && same(r)
                {
                    direct
                        .entry(name.clone())
                        .or_insert_with(|| format!("it copies from {}", r.without_digest()));
                }
            }
        }
    }
    if let Some(file) = &options.file {
        let path = settings.cwd.join(file);
        for (name, why) in reading(settings, &loaded, &[path])? {
            direct.insert(name, why);
        }
    }
    if let Some(since) = &options.since {
        for (name, why) in since_ref(settings, &loaded, since)? {
            direct.insert(name, why);
        }
    }

    let mut report = Report {
        targets: reach(&loaded, &direct),
        history: None,
    };
    if options.history
        && let Some(spec) = &spec
    {
        report.history = Some(recorded_with(settings, &loaded, spec)?);
    }
    Ok(if options.json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        render(&report)
    })
}

/// The targets in `direct` and every target built on one of them, in DAG order.
fn reach(loaded: &Loaded, direct: &BTreeMap<String, String>) -> Vec<Reached> {
    let mut out = Vec::new();
    let mut reached: BTreeSet<String> = BTreeSet::new();
    for name in loaded.graph.topo_targets() {
        let image = loaded.manifest.targets[name]
            .image
            .as_ref()
            .map(ToString::to_string);
        if let Some(why) = direct.get(name) {
            reached.insert(name.to_string());
            out.push(Reached {
                target: name.to_string(),
                image,
                why: why.clone(),
                direct: true,
            });
        } else if let Some(dep) = loaded
            .graph
            .depends_on(name)
            .into_iter()
            .find(|d| reached.contains(*d))
        {
            reached.insert(name.to_string());
            out.push(Reached {
                target: name.to_string(),
                image,
                why: format!("it builds on target `{dep}`"),
                direct: false,
            });
        }
    }
    out
}

/// Targets whose manifest or stages read one of `paths` (absolute), and why.
fn reading(
    settings: &Settings,
    loaded: &Loaded,
    paths: &[PathBuf],
) -> Result<BTreeMap<String, String>, AppError> {
    let all: Vec<String> = loaded.manifest.targets.keys().cloned().collect();
    let (_, compiled) = loaded.compile(&all)?;
    let canonical = |p: &Path| {
        crate::trust::resolve(&settings.cwd.join(p))
            .to_string_lossy()
            .into_owned()
    };
    let mut out = BTreeMap::new();
    for path in paths {
        let wanted = canonical(path);
        for c in &compiled {
            let target = &loaded.manifest.targets[&c.name];
            if canonical(&target.location.file) == wanted {
                out.insert(
                    c.name.clone(),
                    format!("its manifest {} changed", target.location.file.display()),
                );
                continue;
            }
            let context = canonical(&target.context);
            let Some(rel) = wanted
                .strip_prefix(&context)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let Ok(patterns) = kiln_fsutil::Patterns::new(&c.context_includes) else {
                continue;
            };
            if patterns.matches(rel) {
                out.insert(c.name.clone(), format!("it reads {rel}"));
            }
        }
    }
    Ok(out)
}

/// Targets that files changed since `since` (committed or not) reach, and those whose base
/// pin in kiln.lock changed.
fn since_ref(
    settings: &Settings,
    loaded: &Loaded,
    since: &str,
) -> Result<BTreeMap<String, String>, AppError> {
    let (repo, root) = history::open(settings)?;
    let object = repo
        .revparse_single(since)
        .map_err(|e| AppError::Usage(format!("--since `{since}`: {}", e.message())))?;
    let tree = object
        .peel_to_tree()
        .map_err(|e| AppError::Usage(format!("--since `{since}`: {}", e.message())))?;
    let mut diff_options = git2::DiffOptions::new();
    diff_options
        .include_untracked(true)
        .recurse_untracked_dirs(true);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut diff_options))
        .map_err(|e| AppError::git("diff", e))?;
    let mut paths = Vec::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path() {
                paths.push(root.join(p));
            }
        }
    }
    paths.sort();
    paths.dedup();
    let mut out = reading(settings, loaded, &paths)?;
    // Base pins: kiln.lock then and now.
    let lock_rel = crate::labels::repo_path(&settings.cwd, Some(&root), &loaded.lock_path);
    let then = history::blob_at(
        &repo,
        object
            .peel_to_commit()
            .map_err(|e| AppError::git("read the commit", e))?
            .id(),
        &lock_rel,
    )
    .map(|b| kiln_lock::KilnLock::parse(&lock_rel, &String::from_utf8_lossy(&b)))
    .transpose()
    .map_err(|source| AppError::LockAtRevision {
        revision: since.to_string(),
        source,
    })?
    .unwrap_or_default();
    for (name, target) in &loaded.manifest.targets {
        if let Base::Image(r) = &target.from {
            let key = r.without_digest().to_string();
            if then.base(&key) != loaded.lock.base(&key) && !out.contains_key(name) {
                out.insert(
                    name.clone(),
                    format!("its base {key} is pinned differently"),
                );
            }
        }
    }
    Ok(out)
}

/// The lock files (repository paths) of each target as the manifests at `commit` declare them
/// (the same manifest paths as now); `None` when they cannot be read there.
fn locks_at(
    settings: &Settings,
    repo: &git2::Repository,
    root: &Path,
    loaded: &Loaded,
    commit: git2::Oid,
) -> Option<BTreeMap<String, Vec<LockFile>>> {
    let mut sources = Vec::new();
    for file in &loaded.files {
        let rel = crate::labels::repo_path(&settings.cwd, Some(root), file);
        let data = history::blob_at(repo, commit, &rel)?;
        sources.push(Source {
            path: file.clone(),
            text: String::from_utf8(data).ok()?,
        });
    }
    let options = kiln_manifest::LoadOptions {
        profile: settings.profile.clone(),
        set: settings.set.iter().cloned().collect(),
        env: settings.env.clone(),
    };
    let manifest = kiln_manifest::load(&sources, &options).ok()?;
    Some(lock_files(settings, root, &manifest.targets))
}

/// A lock file's repository path and how its target's manager says to read it.
type LockFile = (String, Option<kiln_lock::LockFormat>);

/// Each target's lock files (repository paths) and those of every target it builds on
/// (`target:` bases and copies), whose packages are in its image too.
fn lock_files(
    settings: &Settings,
    root: &Path,
    targets: &BTreeMap<String, kiln_manifest::Target>,
) -> BTreeMap<String, Vec<LockFile>> {
    let own = |t: &kiln_manifest::Target| -> Vec<LockFile> {
        let repo_path = |f| crate::labels::repo_path(&settings.cwd, Some(root), &t.context.join(f));
        t.packages
            .iter()
            .flat_map(|p| p.lock.iter().map(|f| (repo_path(f), p.lock_format(f))))
            .collect()
    };
    let deps = |t: &kiln_manifest::Target| -> Vec<String> {
        let mut d: Vec<String> = t
            .copy
            .iter()
            .filter_map(|c| match &c.from {
                CopySource::Target(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        if let Base::Target(n) = &t.from {
            d.push(n.clone());
        }
        d
    };
    let mut out = BTreeMap::new();
    for (name, target) in targets {
        let mut files = Vec::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(t) = todo.pop() {
            if !seen.insert(t.name.clone()) {
                continue;
            }
            files.extend(own(t));
            todo.extend(deps(t).iter().filter_map(|d| targets.get(d)));
        }
        files.sort();
        files.dedup();
        out.insert(name.clone(), files);
    }
    out
}

/// Every image (target, image id, pushed digest) kiln.lock recorded on the current branch,
/// once, at the commit that first recorded it, whose lock files there match `spec`.
fn recorded_with(
    settings: &Settings,
    loaded: &Loaded,
    spec: &PackageSpec,
) -> Result<Vec<RecordedImage>, AppError> {
    let (repo, root) = history::open(settings)?;
    let lock_rel = crate::labels::repo_path(&settings.cwd, Some(&root), &loaded.lock_path);
    let current = lock_files(settings, &root, &loaded.manifest.targets);
    let mut records = history::kiln_locks(settings, &repo, &lock_rel)?;
    // Oldest first, so each image is taken at the commit that first recorded it.
    records.reverse();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in &records {
        let mut locks = None;
        for t in &r.lock.targets {
            if t.image_id.is_none() && t.digest.is_none() {
                continue;
            }
            let key = (t.name.clone(), t.image_id.clone(), t.digest.clone());
            if !seen.insert(key) {
                continue;
            }
            let locks = locks.get_or_insert_with(|| {
                locks_at(settings, &repo, &root, loaded, r.oid).unwrap_or_else(|| current.clone())
            });
            let files = locks
                .get(&t.name)
                .or_else(|| current.get(&t.name))
                .cloned()
                .unwrap_or_default();
            let mut pins = Vec::new();
            for (file, format) in &files {
                match format.and_then(|f| history::pins_at(&repo, r.oid, file, f)) {
                    Some(Ok(p)) => pins.extend(
                        p.iter()
                            .filter(|(n, v)| spec.matches(n, v))
                            .map(|(n, v)| format!("{file}: {n} {v}")),
                    ),
                    // Said, not silently taken as "not affected".
                    // The error as it always read here, with its `error: `.
                    Some(Err(e)) => settings.warnings.push(format!(
                        "cannot tell whether {} of target `{}` was affected: {}",
                        t.image_id.as_deref().unwrap_or("the image"),
                        t.name,
                        e.report()
                    )),
                    None => {}
                }
            }
            if !pins.is_empty() {
                out.push(RecordedImage {
                    target: t.name.clone(),
                    image: t.image.clone(),
                    image_id: t.image_id.clone(),
                    digest: t.digest.clone(),
                    commit: r.commit.clone(),
                    pins,
                });
            }
        }
    }
    Ok(out)
}

fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if report.targets.is_empty() {
        s.push_str("no target of the working tree is affected\n");
    }
    for r in &report.targets {
        let _ = writeln!(
            s,
            "{}{}: {}",
            r.target,
            r.image
                .as_ref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default(),
            r.why
        );
    }
    if let Some(history) = &report.history {
        let _ = writeln!(
            s,
            "\n{} recorded image{} pinned it:",
            history.len(),
            if history.len() == 1 { "" } else { "s" }
        );
        for h in history {
            let _ = writeln!(
                s,
                "{} {} {}{} — commit {} {} ({})",
                h.target,
                h.image.as_deref().unwrap_or("-"),
                h.image_id.as_deref().unwrap_or("-"),
                h.digest
                    .as_ref()
                    .map(|d| format!(" pushed {d}"))
                    .unwrap_or_default(),
                &h.commit.id[..12.min(h.commit.id.len())],
                h.commit.summary,
                h.pins.join(", ")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_specs() {
        let s = PackageSpec::parse("acme-widgets==1.1.0").unwrap();
        assert!(s.matches("acme-widgets", "1.1.0"));
        assert!(s.matches("Acme_Widgets", "1.1"));
        assert!(!s.matches("acme-widgets", "1.1.1"));
        assert!(!s.matches("acme-gadgets", "1.1.0"));
        let s = PackageSpec::parse("acme-widgets>=1.0,<1.2").unwrap();
        assert!(s.matches("acme-widgets", "1.1.9"));
        assert!(s.matches("acme-widgets", "1.0"));
        assert!(!s.matches("acme-widgets", "1.2.0"));
        assert!(!s.matches("acme-widgets", "1.10.0"));
        let s = PackageSpec::parse("acme-widgets").unwrap();
        assert!(s.matches("acme-widgets", "0.0.1"));
        let s = PackageSpec::parse("x~=1.4.2").unwrap();
        assert!(s.matches("x", "1.4.5") && !s.matches("x", "1.5.0") && !s.matches("x", "1.4.1"));
        assert!(PackageSpec::parse("==1").is_err());
        assert!(PackageSpec::parse("x=>1").is_err());
        assert!(PackageSpec::parse("x==").is_err());
    }
}
