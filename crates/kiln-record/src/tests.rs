//! The inputs hash, the up-to-date decision and the kiln.lock merge over an in-memory tree.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use kiln_lock::KilnLock;

use crate::*;

/// A file system in memory: regular files (mode and content); directories are the files'
/// ancestors (mode 0755). kiln.lock writes land here too.
#[derive(Default)]
struct Memory {
    files: RefCell<BTreeMap<PathBuf, (u32, Vec<u8>)>>,
}

const ROOT: &str = "/p";

impl Memory {
    fn with(files: &[(&str, &str)]) -> Memory {
        let memory = Memory::default();
        for (path, text) in files {
            memory.write(path, text);
        }
        memory
    }

    fn write(&self, rel: &str, text: &str) {
        self.files
            .borrow_mut()
            .insert(Path::new(ROOT).join(rel), (0o644, text.as_bytes().to_vec()));
    }

    fn chmod(&self, rel: &str, mode: u32) {
        if let Some(file) = self.files.borrow_mut().get_mut(&Path::new(ROOT).join(rel)) {
            file.0 = mode;
        }
    }

    fn remove(&self, rel: &str) {
        self.files.borrow_mut().remove(&Path::new(ROOT).join(rel));
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.files
            .borrow()
            .keys()
            .any(|f| f.starts_with(path) && f != path)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Files for Memory {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .borrow()
            .get(path)
            .map(|(_, data)| data.clone())
            .ok_or_else(|| not_found(path))
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        String::from_utf8(self.read(path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        if self.files.borrow().contains_key(path) || self.is_dir(path) {
            Ok(path.to_path_buf())
        } else {
            Err(not_found(path))
        }
    }

    fn walk(
        &self,
        context: &Path,
        filter: &kiln_fsutil::Filter,
    ) -> Result<Vec<ContextEntry>, kiln_fsutil::Error> {
        let include = kiln_fsutil::Patterns::new(&filter.include)?;
        let exclude = kiln_fsutil::Patterns::new(&filter.exclude)?;
        let passes = |rel: &str| {
            (filter.include.is_empty() || include.matches(rel))
                && !(!filter.exclude.is_empty() && exclude.matches(rel))
        };
        // Every path below the context, directories as the files' ancestors.
        let mut paths: BTreeMap<Vec<String>, Option<u32>> = BTreeMap::new();
        for (path, (mode, _)) in self.files.borrow().iter() {
            let Ok(rel) = path.strip_prefix(context) else {
                continue;
            };
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            for depth in 1..parts.len() {
                paths.entry(parts[..depth].to_vec()).or_insert(None);
            }
            paths.insert(parts, Some(*mode));
        }
        // Sorting by components is fsutil's order: depth first, siblings byte-wise.
        let mut emitted: Vec<(Vec<String>, Option<u32>)> = Vec::new();
        for (parts, mode) in &paths {
            if passes(&parts.join("/")) {
                for depth in 1..parts.len() {
                    let ancestor = parts[..depth].to_vec();
                    if !emitted.iter().any(|(p, _)| *p == ancestor) {
                        emitted.push((ancestor, None));
                    }
                }
                if !emitted.iter().any(|(p, _)| p == parts) {
                    emitted.push((parts.clone(), *mode));
                }
            }
        }
        emitted.sort();
        Ok(emitted
            .into_iter()
            .map(|(parts, mode)| ContextEntry {
                abs: context.join(parts.join("/")),
                path_rel: parts.join("/"),
                mode: mode.unwrap_or(kiln_fsutil::mode::DIR | 0o755),
                linkname: String::new(),
            })
            .collect())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.files
            .borrow_mut()
            .insert(path.to_path_buf(), (0o644, bytes.to_vec()));
        Ok(())
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<Held> {
        Ok(Held::nothing())
    }
}

/// The project kiln-app's `inputs_hash_is_pinned` test writes to disk.
const MANIFEST: &str = r#"version = 1

[target.lib]
from = "python:3.11-slim-bookworm"
run  = ["echo lib"]

[target.lib.packages]
manager = "uv"

[[target.lib.copy]]
src  = "src/app.py"
dest = "/app/app.py"

[[target.lib.copy]]
from = "busybox:1.36"
src  = "/bin/busybox"
dest = "/bin/busybox"

[target.app]
from  = "target:lib"
image = "127.0.0.1:5000/pin/app:1"

[target.app.smoke-test]
copy = ["tests/"]
run  = ["python tests/smoke.py"]
"#;

const PYTHON: &str = "docker.io/library/python:3.11-slim-bookworm";

fn project() -> Memory {
    Memory::with(&[
        ("kiln.toml", MANIFEST),
        (
            "pyproject.toml",
            "[project]\nname = \"lib\"\nversion = \"1\"\n",
        ),
        ("uv.lock", "version = 1\n"),
        ("src/app.py", "print('app')\n"),
        ("src/other.py", "print('not copied')\n"),
        ("tests/smoke.py", "print('ok')\n"),
        ("tests/skip.py", "print('ignored')\n"),
        (".dockerignore", "tests/skip.py\n"),
    ])
}

fn pinned_lock(digit: &str) -> KilnLock {
    let mut lock = KilnLock::default();
    lock.set_base(kiln_lock::Base {
        reference: PYTHON.into(),
        digest: Some(format!("sha256:{}", digit.repeat(64))),
        platform_digest: None,
        image_id: None,
    });
    lock
}

/// What kiln-app's `load` does: the manifest (from the tree's kiln.toml) with the pins of
/// `lock` on its image references, its graph, every target compiled.
struct Planned {
    manifest: kiln_manifest::Manifest,
    graph: kiln_graph::Graph,
    compiled: Vec<kiln_compile::CompiledTarget>,
}

fn plan(files: &Memory, lock: &KilnLock) -> Planned {
    let text = files
        .read_to_string(&Path::new(ROOT).join("kiln.toml"))
        .unwrap();
    let sources = [kiln_manifest::Source {
        path: "kiln.toml".into(),
        text,
    }];
    let mut manifest =
        kiln_manifest::load(&sources, &kiln_manifest::LoadOptions::default()).unwrap();
    for target in manifest.targets.values_mut() {
        if let kiln_manifest::Base::Image(r) = &mut target.from {
            if let Some(digest) = lock.base(&r.to_string()).and_then(|b| b.digest.clone()) {
                *r = r.with_digest(&digest).unwrap();
            }
        }
    }
    let graph = kiln_graph::Graph::build(&manifest, kiln_graph::PackagesMode::Pinned).unwrap();
    let all: Vec<String> = manifest.targets.keys().cloned().collect();
    let selected = graph.select(&manifest, &all).unwrap();
    let compiled = kiln_compile::compile(
        &manifest,
        &graph,
        &selected,
        &kiln_compile::BaseConfigs::new(),
        None,
    )
    .unwrap();
    Planned {
        manifest,
        graph,
        compiled,
    }
}

fn own(files: &Memory, lock: &KilnLock, planned: &Planned) -> Vec<Own> {
    own_inputs(
        files,
        Path::new(ROOT),
        &planned.manifest,
        &planned.graph,
        lock,
        &Path::new(ROOT).join("kiln.lock"),
        &planned.compiled,
    )
    .unwrap()
}

/// The inputs of every target of the tree, with kiln.lock `lock`.
fn inputs_of(files: &Memory, lock: &KilnLock) -> BTreeMap<String, Inputs> {
    let planned = plan(files, lock);
    inputs(&own(files, lock, &planned), lock)
}

#[test]
fn the_hash_of_a_fixed_project_is_the_one_kiln_always_computed() {
    // The same literals as kiln-app's `inputs_hash_is_pinned` over the real file system,
    // computed before this crate existed: kiln.lock files written then stay up to date.
    let inputs = inputs_of(&project(), &pinned_lock("1"));
    let show = |t: &str| {
        format!(
            "{} {} {:?}",
            inputs[t].hash, inputs[t].pinned, inputs[t].parts
        )
    };
    assert_eq!(
        show("lib"),
        "sha256:d99df823792ef86d29b05bce0485ee73596f6d8068ee3802aafa578756974451 true {\"base:docker.io/library/python:3.11-slim-bookworm\": \"d18f973fbdd5c4e0\", \"dirs\": \"312c9f10407ff5e8\", \"file:pyproject.toml\": \"c0665fd4d38c25d9\", \"file:src/app.py\": \"e2364dd960dc1be2\", \"file:uv.lock\": \"3da03ddf57bda573\", \"image:docker.io/library/busybox:1.36\": \"unpinned\", \"llb\": \"4ccaa80c9717da56\", \"manifest\": \"ad6eec1b730bdcdb\"}"
    );
    assert_eq!(
        show("app"),
        "sha256:4cdd965eeaa18c3ca91fbc91954a2de1dcf056c8d2ebd764dc7c2f6878a3cc3c true {\"dep:lib\": \"ce8a80c9bfff7b4f\", \"file:tests\": \"6e20fe0a7a2567eb\", \"llb\": \"81914acff16a2143\", \"manifest\": \"9117669c8ec7f99e\"}"
    );
}
