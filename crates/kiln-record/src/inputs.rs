//! A target's inputs: the hash that decides whether it is up to date, and the short digest
//! of each part of it that `kiln.lock` records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kiln_compile::CompiledTarget;
use kiln_graph::{Graph, StageKind};
use kiln_lock::KilnLock;
use kiln_manifest::{Base, CopySource, Manifest};
use kiln_reference::Reference;
use sha2::{Digest, Sha256};

use crate::{Files, RecordError};

/// The inputs of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub hash: String,
    /// Whether every base image it rests on is pinned in `kiln.lock`.
    pub pinned: bool,
    /// A short digest of each part of the inputs, as `kiln.lock` records them (see [`Part`]).
    pub parts: BTreeMap<String, String>,
}

/// The names of the parts of a target's inputs (keys of [`Inputs::parts`]).
pub(crate) struct Part;

impl Part {
    /// The manifest entry after profile and vars, without its place in the file.
    pub(crate) const MANIFEST: &'static str = "manifest";
    /// The LLB planned for its smoke-test and image stages, and its image config.
    pub(crate) const LLB: &'static str = "llb";
    /// Context directories that only lead to included files (their modes).
    pub(crate) const DIRS: &'static str = "dirs";
    /// `base:REF`: how `kiln.lock` pins its base image.
    pub(crate) const BASE: &'static str = "base:";
    /// `image:REF`: how `kiln.lock` pins an image it copies from.
    pub(crate) const IMAGE: &'static str = "image:";
    /// `file:PATTERN`: the context files one include pattern selects.
    pub(crate) const FILE: &'static str = "file:";
    /// `dep:TARGET`: the inputs of a target it builds on.
    pub(crate) const DEP: &'static str = "dep:";
}

/// The part digest kiln.lock keeps: 16 hex digits of a SHA-256 (only ever compared with the
/// same part's earlier digest; the inputs hash itself is the full digest).
pub(crate) fn short(data: impl AsRef<[u8]>) -> String {
    hex::encode(&Sha256::digest(data)[..8])
}

/// The part of one target's inputs that reads files, before dependencies and base pins, and
/// what [`inputs`] needs to finish it.
#[derive(Debug, Clone)]
pub struct Own {
    pub name: String,
    hasher: Sha256,
    parts: BTreeMap<String, String>,
    /// The targets it builds on, in the graph's order.
    deps: Vec<String>,
    /// Its base image, when it is one.
    base: Option<Reference>,
    /// The images it copies from.
    copies: Vec<Reference>,
}

/// The part of each target's inputs that reads files — its planned LLB, config and context
/// files — in the order of `compiled` (dependency order), which [`inputs`] finishes with
/// dependencies and base pins, so the context is read once however often the pins change.
/// Contexts are relative to `cwd`; `lock` is kiln.lock as the manifest was resolved with it
/// (its pins are taken off the manifest entry) and `lock_path` where it lives (never an
/// input, even inside a context).
pub fn own_inputs(
    files: &dyn Files,
    cwd: &Path,
    manifest: &Manifest,
    graph: &Graph,
    lock: &KilnLock,
    lock_path: &Path,
    compiled: &[CompiledTarget],
) -> Result<Vec<Own>, RecordError> {
    let mut out = Vec::with_capacity(compiled.len());
    for target in compiled {
        // Compiled from this manifest, so it is there; a stranger is skipped, not a panic.
        let Some(manifest_target) = manifest.targets.get(&target.name) else {
            continue;
        };
        let mut h = Sha256::new();
        let mut llb = Sha256::new();
        h.update(b"kiln-inputs/1\n");
        for kind in [StageKind::SmokeTest, StageKind::Image] {
            if let Some(digest) = target.stage(kind).and_then(|s| s.digest()) {
                h.update(format!("{}={digest}\n", kind.as_str()));
                llb.update(format!("{}={digest}\n", kind.as_str()));
            }
        }
        h.update(target.config.to_json());
        h.update(b"\n");
        llb.update(target.config.to_json());
        let mut parts = BTreeMap::from([
            (Part::LLB.to_string(), hex::encode(&llb.finalize()[..8])),
            (
                Part::MANIFEST.to_string(),
                short(manifest_entry(manifest_target, lock)),
            ),
        ]);
        let context = cwd.join(&manifest_target.context);
        hash_context(
            files,
            &mut h,
            &mut parts,
            &context,
            &target.context_includes,
            lock_path,
        )?;
        out.push(Own {
            name: target.name.clone(),
            hasher: h,
            parts,
            deps: graph
                .depends_on(&target.name)
                .into_iter()
                .map(str::to_string)
                .collect(),
            base: match &manifest_target.from {
                Base::Image(reference) => Some(reference.clone()),
                _ => None,
            },
            copies: manifest_target
                .copy
                .iter()
                .filter_map(|copy| match &copy.from {
                    CopySource::Image(reference) => Some(reference.clone()),
                    _ => None,
                })
                .collect(),
        });
    }
    Ok(out)
}

/// The manifest entry as it decides the build: its JSON without where it is declared (file,
/// line, directories) or the tag it gets, and with the digests `kiln.lock` pins taken off its
/// image references (those are the `base:` and `image:` parts).
pub fn manifest_entry(target: &kiln_manifest::Target, lock: &KilnLock) -> String {
    let unpinned = |r: &Reference| {
        let bare = r.without_digest();
        match lock.base(&bare.to_string()) {
            Some(pin) if pin.digest.as_deref() == r.digest() => bare,
            _ => r.clone(),
        }
    };
    let mut target = target.clone();
    if let Base::Image(r) = &mut target.from {
        *r = unpinned(r);
    }
    for copy in &mut target.copy {
        if let CopySource::Image(r) = &mut copy.from {
            *r = unpinned(r);
        }
    }
    let mut value = serde_json::to_value(&target).unwrap_or_default();
    if let Some(entry) = value.as_object_mut() {
        // Paths depend on where kiln runs from; what is in them is hashed on its own.
        for key in ["manifest-dir", "context", "image"] {
            entry.remove(key);
        }
        if let Some(ca) = entry
            .get_mut("ca-certificates")
            .and_then(|v| v.as_object_mut())
        {
            ca.remove("path");
        }
    }
    drop_locations(&mut value);
    value.to_string()
}

/// Remove every `location` key, at any depth.
fn drop_locations(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("location");
            map.values_mut().for_each(drop_locations);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_locations),
        _ => {}
    }
}

/// How `kiln.lock` pins `reference` (digest and image id), as a part digest.
fn pin_part(lock: &KilnLock, reference: &Reference) -> String {
    let name = reference.without_digest().to_string();
    match lock.base(&name) {
        Some(base) if base.digest.is_some() || base.image_id.is_some() => short(format!(
            "{name}@{}/{}",
            base.digest.as_deref().unwrap_or(""),
            base.image_id.as_deref().unwrap_or("")
        )),
        _ => "unpinned".to_string(),
    }
}

/// The inputs of every target of `own` (in dependency order, as [`own_inputs`] returns
/// them): its own part, its dependencies' inputs and its base as `lock` pins it.
pub fn inputs(own: &[Own], lock: &KilnLock) -> BTreeMap<String, Inputs> {
    let mut out: BTreeMap<String, Inputs> = BTreeMap::new();
    for target in own {
        let mut h = target.hasher.clone();
        let mut parts = target.parts.clone();
        let mut pinned = true;
        for dep_name in &target.deps {
            // Dependencies come first in `own`.
            let Some(dep) = out.get(dep_name) else {
                continue;
            };
            h.update(format!("dep={}\n", dep.hash));
            pinned &= dep.pinned;
            parts.insert(format!("{}{dep_name}", Part::DEP), short(&dep.hash));
        }
        for reference in &target.copies {
            parts.insert(
                format!("{}{}", Part::IMAGE, reference.without_digest()),
                pin_part(lock, reference),
            );
        }
        if let Some(reference) = &target.base {
            parts.insert(
                format!("{}{}", Part::BASE, reference.without_digest()),
                pin_part(lock, reference),
            );
            let name = reference.without_digest().to_string();
            match lock.base(&name) {
                Some(base) if base.digest.is_some() || base.image_id.is_some() => {
                    h.update(format!(
                        "base={name}@{}/{}\n",
                        base.digest.as_deref().unwrap_or(""),
                        base.image_id.as_deref().unwrap_or("")
                    ));
                }
                _ => pinned = false,
            }
        }
        let hash = format!("sha256:{}", hex::encode(h.finalize()));
        out.insert(
            target.name.clone(),
            Inputs {
                hash,
                pinned,
                parts,
            },
        );
    }
    out
}

/// The exclude patterns of a context's `.dockerignore` and `.kilnignore`, plus `kiln.lock`
/// when it lies inside the context: kiln rewrites it after every build, and it is never an
/// input (copying it would make each build invalidate the next).
pub fn ignored(files: &dyn Files, context: &Path, kiln_lock: &Path) -> Vec<String> {
    let mut exclude = Vec::new();
    for ignore in [".dockerignore", ".kilnignore"] {
        if let Ok(text) = files.read_to_string(&context.join(ignore)) {
            exclude.extend(kiln_fsutil::Filter::from_ignore_file(&text));
        }
    }
    let canonical = |p: &Path| files.canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let lock_dir = kiln_lock.parent().map(canonical);
    if let (Some(dir), Some(file)) = (lock_dir, kiln_lock.file_name()) {
        if let Ok(rel) = dir.join(file).strip_prefix(canonical(context)) {
            exclude.push(rel.to_string_lossy().into_owned());
        }
    }
    exclude
}

/// Path, mode and content of every context file matching `includes` (minus the context's
/// ignore files), in walk order, into `h`; and into `parts`, each include pattern's own files
/// (`file:PATTERN`) and the directories that only lead to them (`dirs`).
fn hash_context(
    files: &dyn Files,
    h: &mut Sha256,
    parts: &mut BTreeMap<String, String>,
    context: &Path,
    includes: &[String],
    kiln_lock: &Path,
) -> Result<(), RecordError> {
    if includes.is_empty() {
        return Ok(());
    }
    let mut per_pattern = Vec::with_capacity(includes.len());
    for pattern in includes {
        let matcher =
            kiln_fsutil::Patterns::new(std::slice::from_ref(pattern)).map_err(|source| {
                RecordError::Pattern {
                    pattern: pattern.clone(),
                    source,
                }
            })?;
        per_pattern.push((pattern, matcher, Sha256::new()));
    }
    let mut dirs = Sha256::new();
    let mut any_dirs = false;
    let filter = kiln_fsutil::Filter {
        include: includes.to_vec(),
        exclude: ignored(files, context, kiln_lock),
    };
    let entries = files
        .walk(context, &filter)
        .map_err(|source| RecordError::Context {
            context: context.to_path_buf(),
            source,
        })?;
    for entry in entries {
        let mut line =
            format!("{}\0{:o}\0{}\0", entry.path_rel, entry.mode, entry.linkname).into_bytes();
        if entry.is_regular() {
            let data = files.read(&entry.abs).map_err(|source| RecordError::Read {
                path: entry.abs.clone(),
                source,
            })?;
            line.extend_from_slice(&Sha256::digest(&data));
        }
        line.push(b'\n');
        h.update(&line);
        let mut matched = false;
        for (_, matcher, part) in &mut per_pattern {
            if matcher.matches(&entry.path_rel) {
                part.update(&line);
                matched = true;
            }
        }
        if !matched {
            dirs.update(&line);
            any_dirs = true;
        }
    }
    for (pattern, _, part) in per_pattern {
        parts.insert(
            format!("{}{pattern}", Part::FILE),
            hex::encode(&part.finalize()[..8]),
        );
    }
    if any_dirs {
        parts.insert(Part::DIRS.to_string(), hex::encode(&dirs.finalize()[..8]));
    }
    Ok(())
}

/// Which parts of `target`'s inputs differ between `recorded` (in `kiln.lock`) and `now`, in
/// words, most telling first; `None` when `kiln.lock` recorded no parts (written by an older
/// kiln).
pub fn changed_parts(
    target: &kiln_manifest::Target,
    recorded: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    if recorded.is_empty() {
        return None;
    }
    let differs = |key: &str| recorded.get(key) != now.get(key);
    let both = |key: &str| recorded.contains_key(key) && now.contains_key(key);
    let mut out = Vec::new();
    if differs(Part::MANIFEST) {
        out.push(format!(
            "its manifest entry `[target.{}]` ({})",
            target.name, target.location
        ));
    }
    let keys: BTreeSet<&String> = recorded.keys().chain(now.keys()).collect();
    let pinned = |key: &str| match now.get(key).map(String::as_str) {
        Some("unpinned") => "no longer pinned in kiln.lock",
        _ if recorded.get(key).map(String::as_str) == Some("unpinned") => {
            "pinned in kiln.lock since"
        }
        _ => "pinned to another digest in kiln.lock",
    };
    for key in keys.iter().filter(|k| differs(k) && both(k)) {
        if let Some(reference) = key.strip_prefix(Part::BASE) {
            out.push(format!("its base `{reference}` ({})", pinned(key)));
        } else if let Some(reference) = key.strip_prefix(Part::IMAGE) {
            out.push(format!(
                "image `{reference}` it copies from ({})",
                pinned(key)
            ));
        }
    }
    for key in keys.iter().filter(|k| differs(k) && both(k)) {
        if let Some(dep) = key.strip_prefix(Part::DEP) {
            out.push(format!("target `{dep}`, which it builds on"));
        }
    }
    let packages = target.packages.as_ref();
    for key in keys.iter().filter(|k| differs(k)) {
        let Some(pattern) = key.strip_prefix(Part::FILE) else {
            continue;
        };
        if !now.contains_key(key.as_str()) {
            continue;
        }
        let is = |list: Option<&Vec<String>>| {
            list.is_some_and(|l| l.iter().any(|f| f.trim_start_matches("./") == pattern))
        };
        let what = if is(packages.map(|p| &p.lock)) {
            format!("lock file `{pattern}`")
        } else if is(packages.map(|p| &p.files)) {
            format!("package file `{pattern}`")
        } else if pattern == "**" {
            "files of the context".to_string()
        } else {
            format!("context file(s) `{pattern}`")
        };
        out.push(if recorded.contains_key(key.as_str()) {
            what
        } else {
            format!("{what} (newly read)")
        });
    }
    if differs(Part::DIRS) && both(Part::DIRS) {
        out.push("the modes of context directories".to_string());
    }
    if out.is_empty() && differs(Part::LLB) {
        out.push("the LLB kiln plans for it (a different kiln version?)".to_string());
    }
    Some(out)
}
