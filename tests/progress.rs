//! What kiln shows while it builds, against the real engine (started by `cargo xtask test`).
//! Under a real pseudo-terminal (util-linux `script`), as a user runs it: the live progress
//! view of several targets never hangs, and Ctrl-C typed at the terminal (the pty's line
//! discipline sends SIGINT to the foreground process group) ends a build with exit 130 within
//! 2 s. With `--progress json`, stderr is JSON lines only, errors included, and the last event
//! of each target says where its image is.

#[path = "support/project.rs"]
mod project;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use project::{Collected, Run, kiln_raw};

const BASE: &str = "kiln-base/debian-python:bookworm";

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// `kiln ARGS` in `dir` inside a new pseudo-terminal: `script` gives kiln a tty on stdin,
/// stdout and stderr, copies what kiln draws to our pipe, and what we write to the pty.
fn in_pty(dir: &Path, args: &str) -> (Child, Collected) {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_kiln"));
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(dir)
        .env_remove("DOCKER_HOST")
        .env_remove("BUILDKIT_HOST")
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    let screen = Collected::start(child.stdout.take().unwrap());
    (child, screen)
}

/// Wait up to `limit` for `child`; its exit code and how long it took, or `None` if it was
/// still running (it is killed then).
fn wait(child: &mut Child, limit: Duration) -> Option<(Option<i32>, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status.code(), start.elapsed()));
        }
        if start.elapsed() > limit {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Four independent targets (so they solve concurrently and draw four live lines at once),
/// each with a step that is new on every round (its `sleep 0.3` keeps the four lines live
/// together for a while: that drawing is what is tested).
fn four_targets(dir: &Path, round: &str) {
    let mut manifest = String::from("version = 1\n");
    for name in ["alpha", "beta", "gamma", "delta"] {
        manifest.push_str(&format!(
            "[target.{name}]\nfrom = \"{BASE}\"\nnetwork = \"host\"\nrun = [\"echo {name}-{round} && sleep 0.3\"]\n"
        ));
    }
    std::fs::write(dir.join("kiln.toml"), manifest).unwrap();
}

#[test]
fn twenty_tty_builds_of_four_targets_never_hang() {
    if !project::require_engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = unique("tty");
    for round in 0..20 {
        four_targets(dir.path(), &format!("{run}-{round}"));
        let (mut child, screen) = in_pty(dir.path(), "build --force");
        let Some((code, _)) = wait(&mut child, Duration::from_secs(90)) else {
            panic!(
                "round {round}: kiln build under a tty still ran after 90 s (a hang); the screen:\n{}",
                screen.so_far()
            );
        };
        let text = screen.join();
        assert_eq!(code, Some(0), "round {round}:\n{text}");
        for name in ["alpha", "beta", "gamma", "delta"] {
            assert!(
                text.contains(&format!("{name}: built")),
                "round {round}: {name} reported: {text}"
            );
        }
    }
}

#[test]
fn ctrl_c_at_the_terminal_ends_a_tty_build_with_130_within_2_seconds() {
    if !project::require_engine() {
        return;
    }
    let marker = unique("tty-interrupt");
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::from("version = 1\n");
    // Two targets, so the live view has several lines when Ctrl-C comes; their steps sleep so
    // that the build is still running then (what is interrupted).
    for name in ["left", "right"] {
        manifest.push_str(&format!(
            "[target.{name}]\nfrom = \"{BASE}\"\nnetwork = \"host\"\nrun = [\"echo {marker}-{name} && sleep 60\"]\n"
        ));
    }
    std::fs::write(dir.path().join("kiln.toml"), manifest).unwrap();
    let (mut child, screen) = in_pty(dir.path(), "build");
    // Both steps run (their processes are visible on this host) before Ctrl-C is typed.
    let start = Instant::now();
    while !["left", "right"]
        .iter()
        .all(|n| step_runs(&format!("{marker}-{n}")))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the steps never started:\n{}",
            screen.so_far()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the live view has drawn both running steps (a target's line names its running step,
    // `[left/pre 1] echo MARKER…`, cut at the terminal's width), so Ctrl-C comes while several
    // lines are live.
    while !["left", "right"].iter().all(|n| {
        screen
            .so_far()
            .contains(&format!("[{n}/pre 1] echo {marker}"))
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the live view never showed both steps:\n{}",
            screen.so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let typed = Instant::now();
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let Some((code, _)) = wait(&mut child, Duration::from_secs(15)) else {
        panic!(
            "Ctrl-C did not end the build within 15 s:\n{}",
            screen.so_far()
        );
    };
    let took = typed.elapsed();
    let text = screen.join();
    assert_eq!(code, Some(130), "{text}");
    assert!(took < Duration::from_secs(2), "took {took:?}:\n{text}");
    assert!(text.contains("interrupted"), "{text}");
}

fn step_runs(marker: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap()
        .status
        .success()
}

/// Every line of `stderr` as a JSON object; fails naming the first line that is not one.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nin:\n{stderr}"));
            assert!(v["event"].is_string(), "no event kind: {line}");
            v
        })
        .collect()
}

#[test]
fn json_progress_is_json_lines_only_and_ends_each_target_with_where_its_image_is() {
    if !project::require_engine() {
        return;
    }
    let tag = unique("json");
    let dir = tempfile::tempdir().unwrap();
    let image = format!("kiln-test/json:{tag}");
    std::fs::write(
        dir.path().join("kiln.toml"),
        format!(
            "version = 1\n[target.app]\nfrom = \"{BASE}\"\nnetwork = \"host\"\nimage = \"{image}\"\nrun = [\"echo {tag}\"]\n"
        ),
    )
    .unwrap();
    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(dir.path(), &["build", "--progress", "json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let events = json_lines(&stderr);
    let last = events
        .iter()
        .rev()
        .find(|e| e["target"] == "app")
        .expect("events about app");
    assert_eq!(last["event"], "target", "{last}");
    assert_eq!(last["status"], "built", "{last}");
    let inspect = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "the image exists: {id}");
    assert_eq!(last["image_id"], id.as_str(), "{last}");
    assert!(
        last["image"].as_str().is_some_and(|i| i.ends_with(&tag)),
        "{last}"
    );
    assert!(last["pushed"].is_null(), "{last}");

    // Up to date: still JSON, still a last event with the image.
    let Run { code, stderr, .. } = kiln_raw(dir.path(), &["build", "--progress", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let events = json_lines(&stderr);
    let last = events.last().expect("an event");
    assert_eq!(last["status"], "up-to-date", "{last}");
    assert_eq!(last["image_id"], id.as_str(), "{last}");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();

    // A failing step: the error is a JSON event too, with the exit code.
    std::fs::write(
        dir.path().join("kiln.toml"),
        format!(
            "version = 1\n[target.app]\nfrom = \"{BASE}\"\nnetwork = \"host\"\nrun = [\"echo {tag}-fails && exit 3\"]\n"
        ),
    )
    .unwrap();
    let Run { code, stderr, .. } = kiln_raw(dir.path(), &["build", "--progress", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let events = json_lines(&stderr);
    let last = events.last().expect("an event");
    assert_eq!(last["event"], "error", "{last}");
    assert_eq!(last["exit_code"], 1, "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit code: 3")),
        "{last}"
    );

    // Bad input before any build: a JSON error as well.
    std::fs::write(
        dir.path().join("kiln.toml"),
        "version = 1\n[target.app]\nfrom = 3\n",
    )
    .unwrap();
    let Run { code, stderr, .. } = kiln_raw(dir.path(), &["build", "--progress", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let events = json_lines(&stderr);
    assert_eq!(events.len(), 1, "{stderr}");
    assert_eq!(events[0]["event"], "error");
    assert!(
        events[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kiln.toml:3")),
        "{stderr}"
    );
}
