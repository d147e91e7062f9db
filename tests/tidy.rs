//! Tidy checks of the repository itself (rust-analyzer's habit): a new integration test file
//! is registered (or it would silently never run), ARCHITECTURE.md lists every crate in an
//! order where dependencies only point down, and every workspace dependency is used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each workspace member's name, manifest directory and normal (not dev or build)
/// dependencies, from `cargo metadata`.
fn members() -> Vec<(String, PathBuf, BTreeSet<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            let dir = Path::new(p["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap()
                .to_path_buf();
            (p["name"].as_str().unwrap().to_string(), dir, deps)
        })
        .collect()
}

#[test]
fn every_integration_test_file_is_registered() {
    let cargo_toml = std::fs::read_to_string(root().join("crates/kiln-cli/Cargo.toml")).unwrap();
    let table: toml::Table = cargo_toml.parse().unwrap();
    let registered: BTreeSet<String> = table["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("../../")
                .to_string()
        })
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let rel = format!("tests/{}", path.file_name().unwrap().to_string_lossy());
            if !registered.contains(&rel) {
                missing.push(rel);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not a [[test]] in crates/kiln-cli/Cargo.toml, so never run: {missing:?}"
    );
}

#[test]
fn architecture_lists_every_crate_with_dependencies_pointing_down() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let listed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let members = members();
    let mut names: BTreeSet<String> = members.iter().map(|(n, ..)| n.clone()).collect();
    // Crates kept out of the workspace on purpose (`exclude`, e.g. the nightly-only fuzz
    // crate) are listed too.
    let workspace: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    if let Some(excluded) = workspace["workspace"]
        .get("exclude")
        .and_then(|e| e.as_array())
    {
        names.extend(
            excluded
                .iter()
                .filter_map(|e| e.as_str())
                .map(str::to_string),
        );
    }
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        listed_set, names,
        "ARCHITECTURE.md's `### `crate`` headings and the workspace members differ"
    );
    let position: BTreeMap<&str, usize> = listed
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut wrong = Vec::new();
    for (name, _, deps) in &members {
        for dep in deps.iter().filter(|d| names.contains(*d)) {
            if position[dep.as_str()] > position[name.as_str()] {
                wrong.push(format!("{name} depends on {dep}, listed below it"));
            }
        }
    }
    assert!(wrong.is_empty(), "ARCHITECTURE.md's order: {wrong:?}");
}

#[test]
fn every_workspace_dependency_is_used() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let declared: Vec<String> = table["workspace"]["dependencies"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut used = BTreeSet::new();
    for (_, dir, _) in members() {
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) {
                used.extend(deps.keys().cloned());
            }
        }
    }
    let unused: Vec<&String> = declared.iter().filter(|d| !used.contains(*d)).collect();
    assert!(
        unused.is_empty(),
        "[workspace.dependencies] no member uses: {unused:?}"
    );
}
