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
                && (filter.exclude.is_empty() || !exclude.matches(rel))
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

mod pinned {
    include!("../../../tests/fixtures/pinned_project.rs");
}
use pinned::MANIFEST;

const PYTHON: &str = "docker.io/library/python:3.11-slim-bookworm";

fn project() -> Memory {
    let files = Memory::with(pinned::FILES);
    files.write("kiln.toml", MANIFEST);
    files
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
    for (target, want) in pinned::INPUTS {
        assert_eq!(show(target), *want);
    }
}

#[test]
fn the_same_inputs_hash_the_same() {
    let lock = pinned_lock("1");
    let first = inputs_of(&project(), &lock);
    assert_eq!(first, inputs_of(&project(), &lock));
    let files = project();
    let planned = plan(&files, &lock);
    let own = own(&files, &lock, &planned);
    // The own part is read once; finishing it twice gives the same.
    assert_eq!(inputs(&own, &lock), inputs(&own, &lock));
    assert_eq!(inputs(&own, &lock), first);
}

/// `target`'s inputs after `change` to the project, next to the unchanged project's.
fn before_after(target: &str, change: impl FnOnce(&Memory)) -> (Inputs, Inputs) {
    let lock = pinned_lock("1");
    let before = inputs_of(&project(), &lock).remove(target).unwrap();
    let files = project();
    change(&files);
    let after = inputs_of(&files, &lock).remove(target).unwrap();
    (before, after)
}

/// The parts whose digests differ.
fn changed(before: &Inputs, after: &Inputs) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> =
        before.parts.keys().chain(after.parts.keys()).collect();
    keys.into_iter()
        .filter(|k| before.parts.get(*k) != after.parts.get(*k))
        .cloned()
        .collect()
}

#[test]
fn an_included_context_file_changes_the_hash_and_its_part() {
    let (before, after) = before_after("lib", |f| f.write("src/app.py", "print('v2')\n"));
    assert_ne!(before.hash, after.hash);
    assert_eq!(changed(&before, &after), ["file:src/app.py"]);
    // The smoke test's files are app's, not lib's.
    let (before, after) = before_after("app", |f| f.write("tests/smoke.py", "print(2)\n"));
    assert_ne!(before.hash, after.hash);
    assert_eq!(changed(&before, &after), ["file:tests"]);
    // A file's mode is part of it.
    let (before, after) = before_after("lib", |f| f.chmod("src/app.py", 0o755));
    assert_ne!(before.hash, after.hash);
    assert_eq!(changed(&before, &after), ["file:src/app.py"]);
}

#[test]
fn files_no_stage_reads_do_not_change_the_hash() {
    for change in [
        // Not included by any stage.
        |f: &Memory| f.write("src/other.py", "print('edited')\n"),
        |f: &Memory| f.write("README.md", "new\n"),
        // Included by `tests/`, but excluded by .dockerignore.
        |f: &Memory| f.write("tests/skip.py", "print('edited')\n"),
        // kiln.lock inside the context is never an input.
        |f: &Memory| f.write("kiln.lock", "# rewritten\n"),
    ] {
        for target in ["lib", "app"] {
            let (before, after) = before_after(target, change);
            assert_eq!(before, after, "{target}");
        }
    }
    // Unless the ignore file stops ignoring it.
    let (before, after) = before_after("app", |f| f.remove(".dockerignore"));
    assert_eq!(changed(&before, &after), ["file:tests"]);
}

#[test]
fn a_lock_file_the_manifest_entry_and_a_dependency_change_the_hash() {
    let (before, after) = before_after("lib", |f| f.write("uv.lock", "version = 2\n"));
    assert_ne!(before.hash, after.hash);
    assert_eq!(changed(&before, &after), ["file:uv.lock"]);

    let (before, after) = before_after("lib", |f| {
        f.write("kiln.toml", &MANIFEST.replace("echo lib", "echo lib2"))
    });
    assert_ne!(before.hash, after.hash);
    // The run step is in the manifest entry and in the LLB.
    assert_eq!(changed(&before, &after), ["llb", "manifest"]);

    // app builds on lib: lib's change is app's, through `dep:lib` only.
    let (before, after) = before_after("app", |f| f.write("uv.lock", "version = 2\n"));
    assert_ne!(before.hash, after.hash);
    assert_eq!(changed(&before, &after), ["dep:lib"]);
}

#[test]
fn the_base_pin_changes_the_hash_and_an_unpinned_base_is_not_pinned() {
    let files = project();
    let one = inputs_of(&files, &pinned_lock("1"));
    let two = inputs_of(&files, &pinned_lock("2"));
    for target in ["lib", "app"] {
        assert_ne!(one[target].hash, two[target].hash, "{target}");
        assert!(one[target].pinned && two[target].pinned);
    }
    // The pin is in the LLB too (the base's source names its digest).
    assert_eq!(
        changed(&one["lib"], &two["lib"]),
        [format!("base:{PYTHON}"), "llb".to_string()]
    );
    assert_eq!(changed(&one["app"], &two["app"]), ["dep:lib", "llb"]);

    // Pinned by the engine's image id only: pinned too, and the id is part of the hash.
    let mut by_id = KilnLock::default();
    by_id.set_base(kiln_lock::Base {
        reference: PYTHON.into(),
        image_id: Some(format!("sha256:{}", "a".repeat(64))),
        ..kiln_lock::Base::default()
    });
    let local = inputs_of(&files, &by_id);
    assert!(local["lib"].pinned);
    assert_ne!(local["lib"].hash, one["lib"].hash);

    let unpinned = inputs_of(&files, &KilnLock::default());
    assert!(!unpinned["lib"].pinned);
    // A target that builds on an unpinned one is not pinned either.
    assert!(!unpinned["app"].pinned);
    assert_eq!(unpinned["lib"].parts[&format!("base:{PYTHON}")], "unpinned");
}

#[test]
fn the_manifest_entry_leaves_out_places_names_and_pins() {
    let files = project();
    let lock = pinned_lock("1");
    let planned = plan(&files, &lock);
    let lib = &planned.manifest.targets["lib"];
    let entry = manifest_entry(lib, &lock);
    assert!(!entry.contains("location"), "{entry}");
    assert!(!entry.contains("\"context\":"), "{entry}");
    assert!(
        !entry.contains(&"1".repeat(64)),
        "the pin is the base: part: {entry}"
    );
    // A digest written in the manifest (not kiln.lock's) stays.
    let other = manifest_entry(lib, &pinned_lock("2"));
    assert!(other.contains(&"1".repeat(64)), "{other}");
    // The image name is not part of it.
    let app = planned.manifest.targets["app"].clone();
    let mut renamed = app.clone();
    renamed.image = Some(kiln_reference::Reference::parse("127.0.0.1:5000/pin/app:2").unwrap());
    assert_eq!(manifest_entry(&app, &lock), manifest_entry(&renamed, &lock));
}

#[test]
fn changed_parts_names_what_changed() {
    let files = project();
    let lock = pinned_lock("1");
    let planned = plan(&files, &lock);
    let lib = &planned.manifest.targets["lib"];
    let app = &planned.manifest.targets["app"];
    let words = |target: &kiln_manifest::Target, before: &Inputs, after: &Inputs| {
        changed_parts(target, &before.parts, &after.parts).unwrap()
    };

    let (before, after) = before_after("lib", |f| f.write("uv.lock", "version = 2\n"));
    assert_eq!(words(lib, &before, &after), ["lock file `uv.lock`"]);
    let (before, after) = before_after("lib", |f| f.write("pyproject.toml", "x = 1\n"));
    assert_eq!(
        words(lib, &before, &after),
        ["package file `pyproject.toml`"]
    );
    let (before, after) = before_after("lib", |f| f.write("src/app.py", "2\n"));
    assert_eq!(
        words(lib, &before, &after),
        ["context file(s) `src/app.py`"]
    );
    let (before, after) = before_after("app", |f| f.write("uv.lock", "version = 2\n"));
    assert_eq!(
        words(app, &before, &after),
        ["target `lib`, which it builds on"]
    );
    let (before, after) = before_after("lib", |f| {
        f.write("kiln.toml", &MANIFEST.replace("echo lib", "echo lib2"))
    });
    assert_eq!(
        words(lib, &before, &after),
        [format!(
            "its manifest entry `[target.lib]` ({})",
            lib.location
        )]
    );

    let one = inputs_of(&files, &pinned_lock("1"));
    let two = inputs_of(&files, &pinned_lock("2"));
    let none = inputs_of(&files, &KilnLock::default());
    assert_eq!(
        words(lib, &one["lib"], &two["lib"]),
        [format!(
            "its base `{PYTHON}` (pinned to another digest in kiln.lock)"
        )]
    );
    assert_eq!(
        words(lib, &one["lib"], &none["lib"]),
        [format!(
            "its base `{PYTHON}` (no longer pinned in kiln.lock)"
        )]
    );
    assert_eq!(
        words(lib, &none["lib"], &one["lib"]),
        [format!("its base `{PYTHON}` (pinned in kiln.lock since)")]
    );
    // Only the LLB differs: a different kiln planned it.
    let mut llb = one["lib"].clone();
    llb.parts.insert("llb".into(), "0000000000000000".into());
    assert_eq!(
        words(lib, &one["lib"], &llb),
        ["the LLB kiln plans for it (a different kiln version?)"]
    );
    // Written by a kiln that recorded no parts.
    assert_eq!(
        changed_parts(lib, &BTreeMap::new(), &one["lib"].parts),
        None
    );
}

#[test]
fn a_bad_include_pattern_and_an_unreadable_file_are_typed_errors() {
    let files = project();
    let lock = pinned_lock("1");
    let mut planned = plan(&files, &lock);
    planned.compiled[0].context_includes = vec!["[".into()];
    let err = own_inputs(
        &files,
        Path::new(ROOT),
        &planned.manifest,
        &planned.graph,
        &lock,
        &Path::new(ROOT).join("kiln.lock"),
        &planned.compiled,
    )
    .unwrap_err();
    assert!(
        matches!(&err, RecordError::Pattern { pattern, .. } if pattern == "["),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("context pattern: "), "{err}");

    let bad = Memory::with(&[("kiln.lock", "version = 1\n[[target]]\nname = 3\n")]);
    let err = read_kiln_lock(&bad, &Path::new(ROOT).join("kiln.lock")).unwrap_err();
    assert!(matches!(err, RecordError::LockFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("/p/kiln.lock"), "{text}");
    assert!(!text.contains("hint"), "the message only: {text}");
    assert_eq!(
        err.hint(),
        Some("kiln.lock is generated; restore it from git or delete it")
    );
    // No kiln.lock yet: an empty one.
    assert_eq!(
        read_kiln_lock(&Memory::default(), Path::new("/p/kiln.lock")).unwrap(),
        KilnLock::default()
    );
}

/// An image store: the image id under each name (an image id names itself).
struct Store(BTreeMap<String, String>);

impl ImageStore for Store {
    fn image_id(&self, reference: &str) -> Option<String> {
        self.0
            .get(reference)
            .cloned()
            .or_else(|| self.0.values().find(|id| *id == reference).cloned())
    }
}

const PUSHED_BEFORE: &str =
    "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const JUST_PUSHED: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const APP: &str = "127.0.0.1:5000/pin/app:1";
const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// app's record as a build of the project writes it.
fn app_record(inputs: &Inputs) -> kiln_lock::Target {
    kiln_lock::Target {
        name: "app".into(),
        profile: None,
        image: Some(APP.into()),
        image_id: Some(ID.into()),
        digest: Some(format!("sha256:{}", "d".repeat(64))),
        inputs: inputs.hash.clone(),
        parts: inputs.parts.clone(),
    }
}

#[test]
fn up_to_date_when_the_inputs_are_recorded_and_the_store_has_the_image() {
    let files = project();
    let lock = pinned_lock("1");
    let planned = plan(&files, &lock);
    let app = &planned.manifest.targets["app"];
    let now = inputs_of(&files, &lock).remove("app").unwrap();
    let record = app_record(&now);
    let store = Store(BTreeMap::from([(APP.to_string(), ID.to_string())]));
    let fresh = |recorded: Option<&kiln_lock::Target>, now: Option<&Inputs>, store: &Store| {
        freshness(app, recorded, now, &lock, store)
    };
    assert_eq!(fresh(Some(&record), Some(&now), &store), Fresh::UpToDate);
    assert_eq!(
        fresh(None, Some(&now), &store),
        Fresh::Stale(Stale::NotRecorded)
    );
    let mut other = now.clone();
    other.hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000".into();
    assert_eq!(
        fresh(Some(&record), Some(&other), &store),
        Fresh::Stale(Stale::InputsChanged)
    );
    let mut unpinned = now.clone();
    unpinned.pinned = false;
    assert_eq!(
        fresh(Some(&record), Some(&unpinned), &store),
        Fresh::Stale(Stale::Unpinned)
    );
    // The store has the image under another name only: tag it.
    let moved = Store(BTreeMap::from([(
        "elsewhere:1".to_string(),
        ID.to_string(),
    )]));
    assert_eq!(
        fresh(Some(&record), Some(&now), &moved),
        Fresh::Rename {
            image: APP.into(),
            id: ID.into()
        }
    );
    // Recorded under another name: the same, the new name is tagged.
    let mut old_name = record.clone();
    old_name.image = Some("127.0.0.1:5000/pin/app:0".into());
    assert!(matches!(
        fresh(Some(&old_name), Some(&now), &store),
        Fresh::Rename { .. }
    ));
    // The name now holds another image, and the recorded one is gone.
    let replaced = Store(BTreeMap::from([(APP.to_string(), "sha256:2".to_string())]));
    assert_eq!(
        fresh(Some(&record), Some(&now), &replaced),
        Fresh::Stale(Stale::NotInStore)
    );
    assert_eq!(
        fresh(Some(&record), Some(&now), &Store(BTreeMap::new())),
        Fresh::Stale(Stale::NotInStore)
    );
    let mut no_id = record.clone();
    no_id.image_id = None;
    assert_eq!(
        fresh(Some(&no_id), Some(&now), &store),
        Fresh::Stale(Stale::NoImage)
    );
}

#[test]
fn a_base_pinned_by_image_id_must_still_be_that_image() {
    let files = project();
    let mut lock = KilnLock::default();
    lock.set_base(kiln_lock::Base {
        reference: PYTHON.into(),
        image_id: Some("sha256:base1".into()),
        ..kiln_lock::Base::default()
    });
    let planned = plan(&files, &lock);
    let lib = &planned.manifest.targets["lib"];
    let mut lib = lib.clone();
    lib.image = Some(kiln_reference::Reference::parse("127.0.0.1:5000/pin/lib:1").unwrap());
    let now = inputs_of(&files, &lock).remove("lib").unwrap();
    let record = kiln_lock::Target {
        name: "lib".into(),
        image: Some("127.0.0.1:5000/pin/lib:1".into()),
        ..app_record(&now)
    };
    let store = |base: &str| {
        Store(BTreeMap::from([
            (PYTHON.to_string(), base.to_string()),
            ("127.0.0.1:5000/pin/lib:1".to_string(), ID.to_string()),
        ]))
    };
    assert_eq!(
        freshness(
            &lib,
            Some(&record),
            Some(&now),
            &lock,
            &store("sha256:base1")
        ),
        Fresh::UpToDate
    );
    assert_eq!(
        freshness(
            &lib,
            Some(&record),
            Some(&now),
            &lock,
            &store("sha256:base2")
        ),
        Fresh::Stale(Stale::BaseMoved {
            base: PYTHON.into()
        })
    );
}

#[test]
fn the_registry_is_asked_only_for_a_recorded_push_under_the_same_name() {
    let files = project();
    let lock = pinned_lock("1");
    let planned = plan(&files, &lock);
    let app = &planned.manifest.targets["app"];
    let now = inputs_of(&files, &lock).remove("app").unwrap();
    let record = app_record(&now);
    let (image, digest) = registry_question(app, Some(&record), Some(&now)).unwrap();
    assert_eq!(image.to_string(), APP);
    assert_eq!(digest, record.digest.as_deref().unwrap());
    let mut unpushed = record.clone();
    unpushed.digest = None;
    assert_eq!(
        registry_question(app, Some(&unpushed), Some(&now)),
        Err(Stale::NotInRegistry)
    );
    let mut renamed = record.clone();
    renamed.image = Some("127.0.0.1:5000/pin/app:0".into());
    assert_eq!(
        registry_question(app, Some(&renamed), Some(&now)),
        Err(Stale::NotInRegistry)
    );
    let mut other = now.clone();
    other.hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000".into();
    assert_eq!(
        registry_question(app, Some(&record), Some(&other)),
        Err(Stale::InputsChanged)
    );
    assert_eq!(
        registry_question(app, None, Some(&now)),
        Err(Stale::NotRecorded)
    );
}

#[test]
fn the_merge_keeps_other_targets_and_profiles_and_fills_in_base_pins() {
    let files = project();
    // The build read kiln.lock without any pin; `kiln pin` has pinned python since, and
    // another build recorded `other` and app under the `ci` profile.
    let read = KilnLock::default();
    let planned = plan(&files, &read);
    let own = own(&files, &read, &planned);
    let mut current = pinned_lock("1");
    let other = kiln_lock::Target {
        name: "other".into(),
        inputs: "sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
        ..kiln_lock::Target::default()
    };
    let app_ci = kiln_lock::Target {
        name: "app".into(),
        profile: Some("ci".into()),
        inputs: "sha256:0101010101010101010101010101010101010101010101010101010101010101".into(),
        ..kiln_lock::Target::default()
    };
    current.set_target(other.clone());
    current.set_target(app_ci.clone());
    // The earlier record of app (no profile) with a push digest of the same image.
    current.set_target(kiln_lock::Target {
        name: "app".into(),
        image: Some(APP.into()),
        image_id: Some(ID.into()),
        digest: Some(PUSHED_BEFORE.into()),
        inputs: "sha256:0202020202020202020202020202020202020202020202020202020202020202".into(),
        ..kiln_lock::Target::default()
    });
    let built = [
        BuildResult {
            target: "lib".into(),
            base: Some(BasePin {
                reference: PYTHON.into(),
                digest: Some(format!("sha256:{}", "9".repeat(64))),
                image_id: Some(
                    "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
                        .into(),
                ),
            }),
            ..BuildResult::default()
        },
        BuildResult {
            target: "app".into(),
            image: Some(APP.into()),
            image_id: Some(ID.into()),
            ..BuildResult::default()
        },
    ];
    let path = Path::new(ROOT).join("kiln.lock");
    files
        .write_atomic(&path, current.to_toml().as_bytes())
        .unwrap();
    let recorded = record_build(&files, &path, &read, &built, None, &own).unwrap();
    assert!(recorded.wrote);
    let lock = read_kiln_lock(&files, &path).unwrap();
    assert_eq!(lock.to_toml(), recorded.lock.to_toml());
    // Other targets and profiles: as they were.
    assert_eq!(lock.target("other", None), Some(&other));
    assert_eq!(lock.target("app", Some("ci")), Some(&app_ci));
    // The base: this build read it unpinned, so the digest it resolved fills it in (over the
    // concurrent pin: kiln's behaviour before this crate, kept), with the engine's image id.
    let base = lock.base(PYTHON).unwrap();
    assert_eq!(base.digest, Some(format!("sha256:{}", "9".repeat(64))));
    assert_eq!(
        base.image_id.as_deref(),
        Some("sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
    );
    // The records: the inputs as the merged pins make them; the same image keeps its push.
    let app = lock.target("app", None).unwrap();
    assert_eq!(app.inputs, recorded.inputs["app"].hash);
    assert_eq!(app.parts, recorded.inputs["app"].parts);
    assert_eq!(app.digest.as_deref(), Some(PUSHED_BEFORE));
    assert_eq!(recorded.inputs, inputs(&own, &lock));
    assert!(recorded.inputs["lib"].pinned);
    let lib = lock.target("lib", None).unwrap();
    assert_eq!(lib.inputs, recorded.inputs["lib"].hash);

    // The same results again: nothing to write.
    let again = record_build(&files, &path, &read, &built, None, &own).unwrap();
    assert!(!again.wrote);
}

#[test]
fn the_merge_keeps_a_pin_kiln_pin_made_and_records_nothing_for_a_cache_only_image() {
    let files = project();
    let read = pinned_lock("1");
    let planned = plan(&files, &read);
    let own = own(&files, &read, &planned);
    let built = [
        BuildResult {
            target: "lib".into(),
            base: Some(BasePin {
                reference: PYTHON.into(),
                digest: Some(format!("sha256:{}", "9".repeat(64))),
                image_id: None,
            }),
            cache_only: true,
            ..BuildResult::default()
        },
        BuildResult {
            target: "app".into(),
            image: Some(APP.into()),
            image_id: Some("sha256:new".into()),
            pushed: Some(JUST_PUSHED.into()),
            ..BuildResult::default()
        },
    ];
    let mut current = read.clone();
    current.set_target(kiln_lock::Target {
        name: "app".into(),
        image: Some(APP.into()),
        image_id: Some(ID.into()),
        digest: Some(PUSHED_BEFORE.into()),
        inputs: "sha256:0202020202020202020202020202020202020202020202020202020202020202".into(),
        ..kiln_lock::Target::default()
    });
    let (lock, inputs) = merge(&read, current, &built, None, &own);
    // `kiln pin`'s digest stays.
    assert_eq!(
        lock.base(PYTHON).unwrap().digest,
        Some(format!("sha256:{}", "1".repeat(64)))
    );
    assert_eq!(lock.target("lib", None), None);
    let app = lock.target("app", None).unwrap();
    assert_eq!(app.digest.as_deref(), Some(JUST_PUSHED));
    assert_eq!(app.inputs, inputs["app"].hash);

    // A new image without a push: the old push digest no longer describes it.
    let built = [BuildResult {
        target: "app".into(),
        image: Some(APP.into()),
        image_id: Some("sha256:newer".into()),
        ..BuildResult::default()
    }];
    let (lock, _) = merge(&read, lock, &built, Some("ci"), &own);
    assert_eq!(lock.target("app", Some("ci")).unwrap().digest, None);
    // The record without a profile is another one, and stays.
    assert_eq!(
        lock.target("app", None).unwrap().digest.as_deref(),
        Some(JUST_PUSHED)
    );
}
