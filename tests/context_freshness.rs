//! Stale build-context content, against the real engine (Docker Engine's embedded BuildKit,
//! started by `cargo xtask test`).
//!
//! The daemon keeps a copy of each context per (session shared key, local source name) and, on
//! the next build, requests only the files whose announced size, mtime, mode or owner differ
//! from that copy. A file rewritten with the same size and the same mtime (a restored mtime:
//! `touch -d`, `cp -p`, tar extraction, a generator with fixed mtimes) used to be skipped, and
//! every later build of that target copied the first run's bytes into the image. kiln now puts
//! the content into the nanoseconds of what it announces.

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BASE: &str = "kiln-base/debian-python:bookworm";

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A project whose target `rootfs` copies `stamp.txt` into `image`.
fn project(image: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"version = 1
[target.rootfs]
from  = "{BASE}"
image = "{image}"
copy  = [{{ src = "stamp.txt", dest = "/stamp.txt" }}]
"#
    );
    std::fs::write(dir.path().join("kiln.toml"), manifest).unwrap();
    dir
}

/// Writes `content` to `stamp.txt` and sets its mtime to `when`.
fn stamp(dir: &Path, content: &str, when: SystemTime) {
    let path = dir.join("stamp.txt");
    std::fs::write(&path, content).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn build(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress", "plain"])
        .current_dir(dir)
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .output()
        .expect("run kiln");
    assert!(
        out.status.success(),
        "kiln build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stamp_in(image: &str) -> String {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "cat",
            "/stamp.txt",
        ])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker run {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Removes the test's image however the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn a_rewritten_file_with_the_same_size_and_mtime_reaches_the_image() {
    if !project::require_engine() {
        return;
    }
    let image = Image(format!("kiln-test/{}:latest", unique("fresh-context")));
    let dir = project(&image.0);
    let when = UNIX_EPOCH + Duration::new(1_600_000_000, 0);

    stamp(dir.path(), "run-1\n", when);
    build(dir.path());
    assert_eq!(stamp_in(&image.0), "run-1\n");

    // Same size, same mtime, new content: the daemon's copy of `rootfs` must not win.
    stamp(dir.path(), "run-2\n", when);
    build(dir.path());
    assert_eq!(
        stamp_in(&image.0),
        "run-2\n",
        "the image got the daemon's stale copy of stamp.txt"
    );

    // And back: unchanged metadata with the first content again.
    stamp(dir.path(), "run-1\n", when);
    build(dir.path());
    assert_eq!(stamp_in(&image.0), "run-1\n");
}
