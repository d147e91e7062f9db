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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use project::Image;

const BASE: &str = "kiln-base/debian-python:bookworm";

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
    let run = project::kiln(dir, &["build"]);
    assert_eq!(run.code, 0, "kiln build failed:\n{run}");
}

#[test]
fn a_rewritten_file_with_the_same_size_and_mtime_reaches_the_image() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("fresh-context");
    let dir = project(&image.0);
    let when = UNIX_EPOCH + Duration::new(1_600_000_000, 0);

    stamp(dir.path(), "run-1\n", when);
    build(dir.path());
    assert_eq!(image.run(&["cat", "/stamp.txt"]), "run-1");

    // Same size, same mtime, new content: the daemon's copy of `rootfs` must not win.
    stamp(dir.path(), "run-2\n", when);
    build(dir.path());
    assert_eq!(
        image.run(&["cat", "/stamp.txt"]),
        "run-2",
        "the image got the daemon's stale copy of stamp.txt"
    );

    // And back: unchanged metadata with the first content again.
    stamp(dir.path(), "run-1\n", when);
    build(dir.path());
    assert_eq!(image.run(&["cat", "/stamp.txt"]), "run-1");
}
