//! `kiln refresh --commit` under crashes and late failures, against the real engine and git.
//!
//! The crash test kills kiln at every file-system call of its write-and-commit phase: kiln
//! pauses before that phase (`KILN_TEST_PAUSE_BEFORE_WRITE`), strace attaches to it with
//! `-e inject=SYSCALL:signal=KILL:when=N`, and for every syscall the phase makes, N runs from
//! 1 until a run completes without being killed. The next run must find git consistent (after
//! finishing or rolling back what the killed one left, and saying which): `git status` clean,
//! HEAD's lock file equal to the tree's, nothing left behind; every commit made is a real change
//! whose message tells the truth. The project uses a `custom` manager whose refresh writes a
//! pip-style lock from a `--set` variable, so each run is fast and needs no network.

#[path = "support/project.rs"]
mod project;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use project::{git, read, repo};

const BASE: &str = "kiln-base/debian-python:bookworm";
const LOCK: &str = "requirements.txt";
/// The calls the phase is killed at: everything that names a file, writes or syncs.
const SYSCALLS: &str = "%file,write,fsync,fdatasync";

fn project() -> tempfile::TempDir {
    let manifest = format!(
        r#"version = 1
[vars]
V = {{ default = "0" }}

[target.app]
from = "{BASE}"
network = "none"

[target.app.packages]
manager = "custom"
files = ["requirements.in"]
lock = ["{LOCK}"]
refresh = "printf 'demo==1.${{V}}\\n' > {LOCK}"
install = "cat {LOCK}"

[target.app.smoke-test]
run = ["true"]
"#
    );
    repo(&[
        ("kiln.toml", &manifest),
        ("requirements.in", "demo\n"),
        (LOCK, "demo==1.0\n"),
    ])
}

/// `kiln ARGS --progress plain` in `dir`, not yet run.
fn kiln_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = project::kiln_command(dir, args);
    cmd.args(["--progress", "plain"]);
    cmd
}

/// What one paused run did.
struct Run {
    killed: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `kiln refresh --commit --set V=version`, paused before its write-and-commit phase; then
/// `at_pause` runs, strace attaches (`strace` extra arguments), and kiln goes on.
fn paused_refresh(dir: &Path, version: u32, strace: &[String], at_pause: impl FnOnce()) -> Run {
    let markers = tempfile::tempdir().unwrap();
    let marker = markers.path().join("paused");
    let set = format!("V={version}");
    let mut child = kiln_command(dir, &["refresh", "--commit", "--set", &set])
        .env("KILN_TEST_PAUSE_BEFORE_WRITE", &marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&marker).map_or(true, |s| s.is_empty()) {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "kiln ended before the write phase:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "kiln never paused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    at_pause();
    let mut tracer = None;
    if !strace.is_empty() {
        let mut st = Command::new("strace")
            .args(["-p", &child.id().to_string()])
            .args(strace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace (apt-get install strace; `cargo xtask test` installs it)");
        let mut lines = BufReader::new(st.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("strace said nothing")
                .expect("strace's stderr");
            if line.contains("attached") {
                break;
            }
            assert!(!line.contains("rror"), "strace: {line}");
        }
        // Keep reading: strace must never block on (or die of) a closed stderr.
        let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        tracer = Some((st, drain));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if let Some((mut st, drain)) = tracer {
        st.wait().unwrap();
        drain.join().unwrap();
    }
    Run {
        killed: out.status.signal() == Some(9),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Anything a crash could leave: git lock files, libgit2's temp objects, kiln's temp files and
/// its intent record.
fn leftovers(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, out);
            } else if name.ends_with(".lock") && path.to_string_lossy().contains("/.git/")
                || name.starts_with("tmp_object_git2_")
                || name.contains("kiln-tmp")
                || name.starts_with("kiln-refresh")
            {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// git is consistent: nothing to commit or untracked, HEAD's lock is the tree's, no leftovers.
/// Returns the lock's version.
fn assert_consistent(dir: &Path, context: &str) -> String {
    let status = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .env("GIT_OPTIONAL_LOCKS", "0")
        .current_dir(dir)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status, "", "{context}: git status");
    let committed = git(dir, &["show", &format!("HEAD:{LOCK}")]);
    assert_eq!(
        committed,
        read(dir, LOCK),
        "{context}: HEAD's lock vs the tree's"
    );
    assert_eq!(leftovers(dir), Vec::<String>::new(), "{context}: leftovers");
    committed
        .trim()
        .strip_prefix("demo==1.")
        .unwrap_or_else(|| panic!("{context}: lock {committed}"))
        .to_string()
}

/// Every commit after the first changes the lock, and its message names that change.
fn assert_history_is_true(dir: &Path) {
    let commits = git(dir, &["rev-list", "HEAD"]);
    let commits: Vec<&str> = commits.lines().collect();
    for pair in commits.windows(2) {
        let (commit, parent) = (pair[0], pair[1]);
        let new = git(dir, &["show", &format!("{commit}:{LOCK}")]);
        let old = git(dir, &["show", &format!("{parent}:{LOCK}")]);
        assert_ne!(new, old, "{commit} is an empty commit");
        let message = git(dir, &["log", "-1", "--format=%B", commit]);
        let claim = format!(
            "demo {} → {}",
            old.trim().trim_start_matches("demo=="),
            new.trim().trim_start_matches("demo==")
        );
        assert!(message.contains(&claim), "{commit}: `{message}` vs {claim}");
    }
}

#[test]
fn refresh_commit_killed_at_every_file_system_call_is_finished_or_rolled_back_by_the_next() {
    if !project::require_engine() {
        return;
    }
    let started = Instant::now();
    let dir = project();
    let d = dir.path();
    let mut version = 1;

    // Which calls the phase makes: one traced run, nothing injected.
    let trace = tempfile::NamedTempFile::new().unwrap();
    let log = trace.path().display().to_string();
    let args: Vec<String> = ["-e", &format!("trace={SYSCALLS}"), "-o", &log]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let run = paused_refresh(d, version, &args, || {});
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(assert_consistent(d, "traced run"), version.to_string());
    let mut calls: BTreeMap<String, u32> = BTreeMap::new();
    for line in std::fs::read_to_string(trace.path()).unwrap().lines() {
        if let Some((name, _)) = line.split_once('(') {
            if !name.starts_with("+++") && !name.starts_with("---") {
                *calls.entry(name.to_string()).or_default() += 1;
            }
        }
    }
    assert!(
        calls.contains_key("rename") && calls.contains_key("fsync"),
        "{calls:?}"
    );

    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let (mut finished, mut rolled_back) = (0, 0);
    let mut previous = version.to_string();
    for name in calls.keys() {
        for n in 1.. {
            version += 1;
            let args: Vec<String> = vec![
                "-e".into(),
                format!("trace={SYSCALLS}"),
                "-e".into(),
                format!("inject={name}:signal=KILL:when={n}"),
                "-o".into(),
                "/dev/null".into(),
            ];
            let mut at_pause = String::new();
            let run = paused_refresh(d, version, &args, || {
                // What the run before left, as this run found it after its recovery.
                at_pause = assert_consistent(d, &format!("before the run killed at {name} #{n}"));
            });
            // The run killed before this one was finished or rolled back, and this one said so.
            if let Some(note) = run
                .stderr
                .lines()
                .find(|l| l.contains("interrupted `kiln refresh --commit`"))
            {
                if note.contains("finished it") {
                    finished += 1;
                } else {
                    assert!(note.contains("rolled it back"), "{note}");
                    rolled_back += 1;
                }
            }
            assert!(
                at_pause == previous || at_pause == (version - 1).to_string(),
                "{name} #{n}: found 1.{at_pause}, expected 1.{previous} or 1.{}",
                version - 1
            );
            if !run.killed {
                assert_eq!(
                    run.code,
                    Some(0),
                    "{name} #{n}: {}\n{}",
                    run.stdout,
                    run.stderr
                );
                assert_eq!(assert_consistent(d, "completed run"), version.to_string());
                previous = version.to_string();
                break;
            }
            *kills.entry(name).or_default() += 1;
            // Before any recovery: HEAD never has the refresh while the index has the old lock
            // (a plain `git commit` would then revert it).
            let head = git(d, &["show", &format!("HEAD:{LOCK}")]);
            let index = git(d, &["show", &format!(":{LOCK}")]);
            let refreshed = format!("demo==1.{version}\n");
            assert!(
                !(head == refreshed && index != refreshed),
                "{name} #{n}: HEAD has {head} but the index {index}"
            );
            previous = at_pause;
        }
    }
    // The last kill is recovered by one more refresh.
    version += 1;
    let run = kiln_command(
        d,
        &["refresh", "--commit", "--set", &format!("V={version}")],
    )
    .output()
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(assert_consistent(d, "last run"), version.to_string());
    assert_history_is_true(d);
    // Every kind of call was a kill point (each as often as the phase made it: the sweep of a
    // kind ends only when a run makes fewer), and both ways out were taken.
    let total: u32 = kills.values().sum();
    assert!(
        calls
            .keys()
            .all(|name| kills.get(name.as_str()).is_some_and(|&k| k > 0))
            && finished > 0
            && rolled_back > 0,
        "kills {kills:?} of calls {calls:?}; finished {finished}, rolled back {rolled_back}"
    );
    eprintln!(
        "{total} kill points {kills:?}: {finished} finished, {rolled_back} rolled back, in {:?}",
        started.elapsed()
    );
}

/// What can be checked is checked before the lock file is written: a missing identity or a
/// stale git lock file stops `refresh --commit` before it builds, and one that appears during
/// the build stops it before it writes anything.
#[test]
fn refresh_commit_refuses_before_writing_without_identity_or_with_a_git_lock_in_the_way() {
    if !project::require_engine() {
        return;
    }
    let dir = project();
    let d = dir.path();
    let head = git(d, &["rev-parse", "HEAD"]);
    let home = tempfile::tempdir().unwrap();
    git(d, &["config", "--unset", "user.name"]);
    git(d, &["config", "--unset", "user.email"]);
    let out = kiln_command(d, &["refresh", "--commit", "--set", "V=5"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("GIT_AUTHOR_NAME")
        .env_remove("GIT_COMMITTER_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no identity") && stderr.contains("user.name"),
        "{stderr}"
    );
    assert!(!stderr.contains("==>"), "nothing was built: {stderr}");
    assert_eq!(read(d, LOCK), "demo==1.0\n");
    git(d, &["config", "user.name", "kiln test"]);
    git(d, &["config", "user.email", "kiln-test@example.invalid"]);

    // A stale index.lock: refused before the build, naming the file.
    std::fs::write(d.join(".git/index.lock"), "").unwrap();
    let out = kiln_command(d, &["refresh", "--commit", "--set", "V=5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(".git/index.lock exists"), "{stderr}");
    assert!(!stderr.contains("==>"), "nothing was built: {stderr}");
    std::fs::remove_file(d.join(".git/index.lock")).unwrap();

    // One that appears while kiln builds: refused before anything is written.
    let run = paused_refresh(d, 5, &[], || {
        std::fs::write(d.join(".git/index.lock"), "").unwrap();
    });
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("index.lock exists"), "{}", run.stderr);
    assert_eq!(read(d, LOCK), "demo==1.0\n", "the lock file is untouched");
    assert_eq!(git(d, &["rev-parse", "HEAD"]), head, "HEAD did not move");
    std::fs::remove_file(d.join(".git/index.lock")).unwrap();
    assert_consistent(d, "after the refusals");

    // And then it works; the same refresh again commits nothing (no empty commit).
    let out = kiln_command(d, &["refresh", "--commit", "--set", "V=5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = git(d, &["rev-parse", "HEAD"]);
    let out = kiln_command(d, &["refresh", "--commit", "--set", "V=5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("unchanged"),
        "{stdout}"
    );
    assert_eq!(git(d, &["rev-parse", "HEAD"]), head, "no empty commit");
    assert_history_is_true(d);
}

/// `kiln check` and `kiln build` also finish or roll back an interrupted refresh, and say so.
#[test]
fn check_and_build_also_resume_an_interrupted_refresh() {
    if !project::require_engine() {
        return;
    }
    let dir = project();
    let d = dir.path();
    let kill = |version: u32, at: &str| {
        let args: Vec<String> = ["-e", &format!("inject={at}:signal=KILL"), "-o", "/dev/null"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let run = paused_refresh(d, version, &args, || {});
        assert!(run.killed, "{at}: {}", run.stderr);
    };
    // The second rename is the lock file's (the first is the intent record's): killed before
    // it, the new content is stored, so the next command finishes the commit.
    kill(1, "rename:when=2");
    let out = kiln_command(d, &["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("note: an interrupted `kiln refresh --commit`")
            && stdout.contains("finished it: committed"),
        "{stdout}"
    );
    assert_eq!(assert_consistent(d, "after check"), "1");
    // The first object written (link of libgit2's temp file): killed there, the new content is
    // not all stored, so the next command rolls back.
    kill(2, "link:when=1");
    let out = kiln_command(d, &["build"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted `kiln refresh --commit`") && stderr.contains("rolled it back"),
        "{stderr}"
    );
    std::fs::remove_file(d.join("kiln.lock")).unwrap();
    assert_eq!(assert_consistent(d, "after build"), "1");
    assert_history_is_true(d);
}
