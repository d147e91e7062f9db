//! Exporting a target's filesystem to a directory (`BuildOptions::output`) against the real
//! engine: BuildKit's `local` exporter sends the whole base image, about 300 MB, to kiln's
//! FileSend session service. The CLI has no flag for it, so this calls the library.

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::time::Instant;

const BASE: &str = "kiln-base/debian-python:bookworm";

/// Bytes in regular files under `dir` (not following symlinks), and how many there are.
fn tree_size(dir: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = path.symlink_metadata().unwrap();
        if meta.is_dir() {
            let (bytes, files) = tree_size(&path);
            total = (total.0 + bytes, total.1 + files);
        } else if meta.is_file() {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

#[test]
fn exports_a_whole_root_filesystem_to_a_directory() {
    if !project::require_engine() {
        return;
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // A new target name per run: the daemon keeps each target's context under its name.
    let target = format!("rootfs-{unique}");
    let stamp = format!("exported by kiln {unique}\n");
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("kiln.toml"),
        format!(
            "version = 1\n[target.{target}]\nfrom = \"{BASE}\"\ncopy = [{{ src = \"stamp.txt\", dest = \"/etc/kiln-stamp\" }}]\n"
        ),
    )
    .unwrap();
    std::fs::write(project.path().join("stamp.txt"), &stamp).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");

    let settings = kiln_app::Settings {
        cwd: project.path().to_path_buf(),
        env: std::env::vars()
            .filter(|(k, _)| k != "DOCKER_HOST")
            .collect(),
        ..kiln_app::Settings::default()
    };
    let options = kiln_app::BuildOptions {
        targets: vec![target.clone()],
        output: Some(dest.clone()),
        ..kiln_app::BuildOptions::default()
    };
    let start = Instant::now();
    let built = kiln_app::build(&settings, &options, &mut |_| {}).expect("build and export");
    let elapsed = start.elapsed();
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].target, target);
    assert_eq!(built[0].output.as_deref(), Some(dest.as_path()));

    assert_eq!(
        std::fs::read_to_string(dest.join("etc/kiln-stamp")).unwrap(),
        stamp
    );
    let python = dest.join("usr/bin/python3");
    assert!(
        python.symlink_metadata().is_ok(),
        "{} is missing",
        python.display()
    );
    assert!(
        python.metadata().unwrap().len() > 1_000_000,
        "the interpreter arrived whole (following its symlink)"
    );
    let (bytes, files) = tree_size(&dest);
    eprintln!(
        "exported {files} files, {:.0} MB, in {:.1} s (build and export)",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    assert!(files > 1000, "only {files} files exported");
    assert!(bytes > 100_000_000, "only {bytes} bytes exported");
}

#[test]
fn output_exports_only_the_named_targets_not_their_dependencies() {
    if !project::require_engine() {
        return;
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // `app` and `tool` build on `dep`; the default group names `app` and `tool` only.
    let manifest = format!(
        r#"version = 1
[defaults]
network = "none"
[target.dep]
from = "{BASE}"
run = ["echo dep {unique} > /dep.txt"]
[target.app]
from = "target:dep"
run = ["echo app > /app.txt"]
[target.tool]
from = "target:dep"
run = ["echo tool > /tool.txt"]
[group.default]
targets = ["app", "tool"]
"#
    );
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("kiln.toml"), manifest).unwrap();
    let kiln = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .args(["--progress", "plain"])
            .current_dir(project.path())
            .env_remove("DOCKER_HOST")
            .env_remove("BUILDKIT_HOST")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = tempfile::tempdir().unwrap();

    // One target named: its filesystem goes into DIR itself, its dependency nowhere.
    let one = out.path().join("one");
    let stdout = kiln(&["build", "app", "--output", one.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(one.join("app.txt")).unwrap(),
        "app\n"
    );
    assert_eq!(
        std::fs::read_to_string(one.join("dep.txt")).unwrap(),
        format!("dep {unique}\n")
    );
    assert!(!one.join("dep").exists() && !one.join("app").exists());
    assert!(
        stdout.contains("dep: built (a dependency, kept in the build cache)")
            && stdout.contains(&format!("app: exported to {}", one.display())),
        "{stdout}"
    );

    // The default group: DIR/app and DIR/tool, and no DIR/dep.
    let group = out.path().join("group");
    kiln(&["build", "--output", group.to_str().unwrap()]);
    let mut entries: Vec<String> = std::fs::read_dir(&group)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["app", "tool"]);
    assert!(group.join("tool/tool.txt").exists() && !group.join("tool/app.txt").exists());
}
