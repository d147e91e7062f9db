//! `kiln refresh`: re-resolve packages inside the build, smoke-test the refreshed image, and
//! only when that passes replace the lock files in the tree (atomically) and say what changed;
//! `--commit` commits exactly those files (crash-safely, `git::commit_refresh`). Nothing is
//! touched before the build succeeds, and a lock file with uncommitted edits is never
//! overwritten.

use std::path::PathBuf;

use kiln_graph::PackagesMode;
use kiln_lock::Changes;

use crate::build::relative;
use crate::{AppError, BuildOptions, Goal, Progress, Settings, git, load};

/// `kiln refresh` options.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptions {
    pub targets: Vec<String>,
    /// Show the changes, write nothing.
    pub dry_run: bool,
    /// Commit the changed lock files.
    pub commit: bool,
}

/// One lock file after a refresh.
struct Refreshed {
    target: String,
    path: PathBuf,
    data: Vec<u8>,
    changed: bool,
    /// Package changes, when the format is known and both sides parse.
    changes: Option<Changes>,
}

/// Run `kiln refresh`; returns what to print.
pub fn refresh(
    settings: &Settings,
    options: &RefreshOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, AppError> {
    let loaded = load(settings, PackagesMode::Refresh)?;
    if let Some(message) = git::recover(&settings.cwd)? {
        progress(Progress::Warning {
            target: None,
            message,
        });
    }
    let selected = loaded.graph.select(&loaded.manifest, &options.targets)?;
    let lock_files: Vec<PathBuf> = selected
        .iter()
        .filter_map(|t| {
            let target = &loaded.manifest.targets[t];
            target.packages.as_ref().map(|p| (target, p))
        })
        .flat_map(|(target, p)| {
            p.lock
                .iter()
                .map(|l| settings.cwd.join(&target.context).join(l))
        })
        .collect();

    // Everything that could make us refuse is checked before any work.
    let repo = git::open(&settings.cwd);
    if let Some(repo) = &repo {
        let dirty = git::dirty(repo, &lock_files)?;
        if !dirty.is_empty() && !options.dry_run {
            return Err(AppError::Uncommitted(dirty));
        }
    }
    if options.commit {
        let Some(repo) = &repo else {
            return Err(AppError::Usage(format!(
                "--commit: {} is not in a git repository",
                settings.cwd.display()
            )));
        };
        if let Some(why) = git::cannot_commit(repo) {
            return Err(AppError::RefreshCommitRefused(why));
        }
    }

    let build = BuildOptions {
        targets: options.targets.clone(),
        goal: Goal::Refresh,
        ..BuildOptions::default()
    };
    let built = match crate::solve::build_loaded(settings, &loaded, &build, progress) {
        Ok(built) => built,
        // Say what the refresh tried: the change list it would have written, above the
        // failure (which ends with the failing step's output).
        Err(AppError::Solve(kiln_solve::SolveError::RefreshTestFailed {
            target,
            locks,
            source,
        })) => {
            let mut tried = Vec::new();
            for r in compare(settings, &loaded, &target, &locks) {
                tried.extend(describe(settings, &r).lines().map(str::to_string));
            }
            return Err(AppError::RefreshFailed { source, tried });
        }
        Err(e) => return Err(e),
    };

    let mut refreshed = Vec::new();
    for b in &built {
        refreshed.extend(compare(settings, &loaded, &b.target, &b.locks));
    }

    pause_before_writing(settings);
    let mut out = String::new();
    let mut written = Vec::new();
    for r in &refreshed {
        out.push_str(&describe(settings, r));
        if !r.changed {
            continue;
        }
        // With --commit, the files are written as part of the commit (git::commit_refresh).
        if !options.dry_run && !options.commit {
            kiln_lock::write_atomic(&r.path, &r.data).map_err(|source| AppError::Io {
                path: r.path.clone(),
                action: "write",
                source,
            })?;
        }
        written.push((r.path.clone(), r.data.clone()));
    }
    if options.dry_run {
        out.push_str("dry run: nothing written\n");
    } else if options.commit {
        let repo = repo.as_ref().expect("checked above");
        if written.is_empty() {
            out.push_str("nothing changed: no commit\n");
        } else {
            let message = commit_message(&refreshed, settings);
            match git::commit_refresh(repo, &written, &message)? {
                None => out.push_str("nothing to commit: HEAD already has these lock files\n"),
                Some(id) => out.push_str(&format!(
                    "committed {} ({} file(s))\n",
                    id.get(..12).unwrap_or(&id),
                    written.len()
                )),
            }
        }
    }
    Ok(out)
}

/// Each refreshed lock file of `target` (as read out of the build) against the one in the tree.
fn compare(
    settings: &Settings,
    loaded: &crate::Loaded,
    target: &str,
    locks: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<Refreshed> {
    let Some(manifest_target) = loaded.manifest.targets.get(target) else {
        return Vec::new();
    };
    let mut refreshed = Vec::new();
    for (lock, data) in locks {
        let path = settings.cwd.join(&manifest_target.context).join(lock);
        let old = std::fs::read(&path).ok();
        let changed = old.as_deref() != Some(data.as_slice());
        let format = manifest_target
            .packages
            .as_ref()
            .and_then(|p| p.lock_format(lock));
        let changes = format.and_then(|format| {
            let new = kiln_lock::pins(format, &String::from_utf8_lossy(data)).ok()?;
            let old = match &old {
                Some(old) => kiln_lock::pins(format, &String::from_utf8_lossy(old)).ok()?,
                None => Default::default(),
            };
            Some(kiln_lock::diff(&old, &new))
        });
        refreshed.push(Refreshed {
            target: target.to_string(),
            path,
            data: data.clone(),
            changed,
            changes,
        });
    }
    refreshed
}

/// What happened to one lock file: `TARGET: FILE (summary)` and a line per change, `created`,
/// `rewritten (same versions)` or `unchanged`.
fn describe(settings: &Settings, r: &Refreshed) -> String {
    let shown = relative(settings, &r.path);
    let mut out = String::new();
    if !r.changed {
        out.push_str(&format!("{}: {} unchanged\n", r.target, shown.display()));
        return out;
    }
    match &r.changes {
        Some(c) if !c.is_empty() => {
            out.push_str(&format!(
                "{}: {} ({})\n",
                r.target,
                shown.display(),
                c.summary()
            ));
            for line in c.to_string().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        _ if !r.path.exists() => {
            out.push_str(&format!("{}: {} created\n", r.target, shown.display()))
        }
        _ => out.push_str(&format!(
            "{}: {} rewritten (same versions)\n",
            r.target,
            shown.display()
        )),
    }
    out
}

/// Test hook: with `KILN_TEST_PAUSE_BEFORE_WRITE=MARKER`, write this process's id to MARKER and
/// wait for a line on stdin before the write-and-commit phase, so a test can attach strace
/// (`strace -p PID -e inject=…:signal=KILL:when=N`) and kill kiln at each of its calls.
fn pause_before_writing(settings: &Settings) {
    if let Some(marker) = settings.env.get("KILN_TEST_PAUSE_BEFORE_WRITE") {
        if std::fs::write(marker, std::process::id().to_string()).is_ok() {
            let _ = std::io::stdin().read_line(&mut String::new());
        }
    }
}

/// `kiln refresh: …` with every change, for the commit.
fn commit_message(refreshed: &[Refreshed], settings: &Settings) -> String {
    let changed: Vec<&Refreshed> = refreshed.iter().filter(|r| r.changed).collect();
    let mut summary: Vec<String> = Vec::new();
    let mut body = String::new();
    for r in &changed {
        let shown = relative(settings, &r.path);
        match &r.changes {
            Some(c) if !c.is_empty() => {
                summary.push(format!("{} {}", r.target, c.summary()));
                body.push_str(&format!("{}:\n", shown.display()));
                for line in c.to_string().lines() {
                    body.push_str(&format!("  {line}\n"));
                }
            }
            _ => {
                summary.push(format!("{} rewritten", r.target));
                body.push_str(&format!("{}: rewritten\n", shown.display()));
            }
        }
    }
    format!(
        "kiln refresh: {}\n\n{body}\nSmoke-tested on the refreshed image before writing.\n",
        summary.join("; ")
    )
}
