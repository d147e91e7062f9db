//! `kiln build` and `kiln smoke-test` around the solve: skip targets that are up to date,
//! and record what was built in `kiln.lock`.
//!
//! A target's inputs hash covers what decides its image: the LLB of its image and smoke-test
//! stages as planned offline (the manifest entry after profile and vars: base reference, run
//! steps, copies, package commands, config), the content of every context file those stages
//! read (package files, lock files, copied files, tests), the inputs of the targets it builds
//! on, and its base image as pinned in `kiln.lock`. A target is up to date when that hash
//! equals the one `kiln.lock` recorded, its base is pinned, and the engine still has the
//! recorded image under the target's name — or, with `--push`, the registry still serves the
//! recorded pushed digest under its tag. An unpinned base always solves. Each target is
//! decided alone: only the stale ones are solved. The name is not part of the hash (it is not
//! part of the image): when only the name changed (`--set TAG=…`, a profile) and the engine
//! still has the recorded image, kiln tags that image with the new name instead of solving,
//! and records the name. `kiln.lock` keeps a record per target and profile.
//!
//! Beside the hash, `kiln.lock` records a short digest of each part of it (the manifest entry,
//! each base pin, each context pattern's files, each dependency, the planned LLB), so that
//! `kiln check --locked` can say which input changed.
//!
//! `kiln.lock` and the up-to-date check trust only what can be verified: a Docker Engine's
//! image store (the engine that built the image, or the one `--load` loaded it into) and a
//! registry's digest for a pushed tag. An image only in a standalone buildkitd's cache is
//! reported as such, with a warning, and recorded nowhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_compile::CompiledTarget;
use kiln_graph::{PackagesMode, StageKind};
use kiln_lock::KilnLock;
use kiln_manifest::Base;
use sha2::{Digest, Sha256};

use crate::{AppError, BuildOptions, Goal, Loaded, Progress, Settings, Stored, load};

/// Waits for and takes the lock that serialises kiln's read-merge-replace of `kiln.lock`
/// (an flock on its directory), so concurrent commands do not lose each other's entries.
pub(crate) fn lock_kiln_lock(path: &Path) -> Result<kiln_lock::DirLock, AppError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    kiln_lock::lock_dir(dir).map_err(|source| AppError::Io {
        path: dir.to_path_buf(),
        action: "lock the directory of kiln.lock in",
        source,
    })
}

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
    const MANIFEST: &'static str = "manifest";
    /// The LLB planned for its smoke-test and image stages, and its image config.
    const LLB: &'static str = "llb";
    /// Context directories that only lead to included files (their modes).
    const DIRS: &'static str = "dirs";
    /// `base:REF`: how `kiln.lock` pins its base image.
    const BASE: &'static str = "base:";
    /// `image:REF`: how `kiln.lock` pins an image it copies from.
    const IMAGE: &'static str = "image:";
    /// `file:PATTERN`: the context files one include pattern selects.
    const FILE: &'static str = "file:";
    /// `dep:TARGET`: the inputs of a target it builds on.
    const DEP: &'static str = "dep:";
}

/// The part digest kiln.lock keeps: 16 hex digits of a SHA-256 (only ever compared with the
/// same part's earlier digest; the inputs hash itself is the full digest).
fn short(data: impl AsRef<[u8]>) -> String {
    hex::encode(&Sha256::digest(data)[..8])
}

/// The part of a target's inputs that reads files, before dependencies and base pins.
pub(crate) struct Own {
    hasher: Sha256,
    parts: BTreeMap<String, String>,
}

/// Where `kiln.lock` lives: next to the first manifest.
pub fn kiln_lock_path(cwd: &Path, files: &[PathBuf]) -> PathBuf {
    let first = files.first().map(PathBuf::as_path);
    let dir = first.and_then(Path::parent).unwrap_or(Path::new(""));
    cwd.join(dir).join("kiln.lock")
}

/// `kiln.lock` as committed, or an empty one when there is none yet.
pub fn read_kiln_lock(path: &Path) -> Result<KilnLock, AppError> {
    match std::fs::read_to_string(path) {
        Ok(text) => KilnLock::parse(&path.display().to_string(), &text).map_err(|e| {
            AppError::Build(format!(
                "{e}\n  hint: kiln.lock is generated; restore it from git or delete it"
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KilnLock::default()),
        Err(source) => Err(AppError::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        }),
    }
}

/// The part of each target's inputs that reads files — its planned LLB, config and context
/// files — as a hasher that [`inputs`] finishes with dependencies and base pins, so the
/// context is read once however often the pins change.
pub(crate) fn own_inputs(
    settings: &Settings,
    loaded: &Loaded,
    compiled: &[CompiledTarget],
) -> Result<BTreeMap<String, Own>, AppError> {
    let mut out = BTreeMap::new();
    for target in compiled {
        let manifest_target = &loaded.manifest.targets[&target.name];
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
                short(manifest_entry(manifest_target, &loaded.lock)),
            ),
        ]);
        let context = settings.cwd.join(&manifest_target.context);
        hash_context(
            &mut h,
            &mut parts,
            &context,
            &target.context_includes,
            &loaded.lock_path,
        )?;
        out.insert(target.name.clone(), Own { hasher: h, parts });
    }
    Ok(out)
}

/// The manifest entry as it decides the build: its JSON without where it is declared (file,
/// line, directories) or the tag it gets, and with the digests `kiln.lock` pins taken off its
/// image references (those are the `base:` and `image:` parts).
pub(crate) fn manifest_entry(target: &kiln_manifest::Target, lock: &KilnLock) -> String {
    let unpinned = |r: &kiln_reference::Reference| {
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
        if let kiln_manifest::CopySource::Image(r) = &mut copy.from {
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
fn pin_part(lock: &KilnLock, reference: &kiln_reference::Reference) -> String {
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

/// The inputs of every compiled target (compiled in dependency order): its own part, its
/// dependencies' inputs and its base as `lock` pins it.
pub fn inputs(
    loaded: &Loaded,
    compiled: &[CompiledTarget],
    own: &BTreeMap<String, Own>,
    lock: &KilnLock,
) -> BTreeMap<String, Inputs> {
    let mut out: BTreeMap<String, Inputs> = BTreeMap::new();
    for target in compiled {
        let manifest_target = &loaded.manifest.targets[&target.name];
        let mut h = own[&target.name].hasher.clone();
        let mut parts = own[&target.name].parts.clone();
        let mut pinned = true;
        for dep_name in loaded.graph.depends_on(&target.name) {
            let dep = &out[dep_name];
            h.update(format!("dep={}\n", dep.hash));
            pinned &= dep.pinned;
            parts.insert(format!("{}{dep_name}", Part::DEP), short(&dep.hash));
        }
        for copy in &manifest_target.copy {
            if let kiln_manifest::CopySource::Image(reference) = &copy.from {
                parts.insert(
                    format!("{}{}", Part::IMAGE, reference.without_digest()),
                    pin_part(lock, reference),
                );
            }
        }
        if let Base::Image(reference) = &manifest_target.from {
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

/// Path, mode and content of every context file matching `includes` (minus the context's
/// ignore files), in walk order, into `h`; and into `parts`, each include pattern's own files
/// (`file:PATTERN`) and the directories that only lead to them (`dirs`).
fn hash_context(
    h: &mut Sha256,
    parts: &mut BTreeMap<String, String>,
    context: &Path,
    includes: &[String],
    kiln_lock: &Path,
) -> Result<(), AppError> {
    if includes.is_empty() {
        return Ok(());
    }
    let bad_pattern = |e: kiln_fsutil::Error| AppError::Build(format!("context pattern: {e}"));
    let mut per_pattern = Vec::with_capacity(includes.len());
    for pattern in includes {
        let matcher =
            kiln_fsutil::Patterns::new(std::slice::from_ref(pattern)).map_err(bad_pattern)?;
        per_pattern.push((pattern, matcher, Sha256::new()));
    }
    let mut dirs = Sha256::new();
    let mut any_dirs = false;
    let filter = kiln_fsutil::Filter {
        include: includes.to_vec(),
        exclude: crate::build::ignored(context, kiln_lock),
    };
    let entries = kiln_fsutil::walk(context, &filter).map_err(|e| {
        AppError::Build(format!(
            "cannot read the context {}: {e}",
            context.display()
        ))
    })?;
    for entry in entries {
        let mut line = format!(
            "{}\0{:o}\0{}\0",
            entry.path_rel, entry.stat.mode, entry.stat.linkname
        )
        .into_bytes();
        if entry.is_requestable() {
            let data = std::fs::read(&entry.abs).map_err(|source| AppError::Io {
                path: entry.abs.clone(),
                action: "read",
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
pub(crate) fn changed_parts(
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
    let keys: std::collections::BTreeSet<&String> = recorded.keys().chain(now.keys()).collect();
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

/// `kiln build` / `kiln smoke-test`: solve what is not up to date, then (for `build`) record
/// the images in `kiln.lock`. Returns one line per target.
pub fn build_images(
    settings: &Settings,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, AppError> {
    build_images_report(settings, options, progress).0
}

/// [`build_images`], and its [`crate::Metadata`] whether it succeeded or not, also written to
/// `options.metadata_file` (atomically) when that is set.
pub fn build_images_report(
    settings: &Settings,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> (Result<String, AppError>, crate::Metadata) {
    let builder = crate::builder::choose(settings)
        .ok()
        .map(|(endpoint, _)| endpoint.to_string());
    let mut recorder = crate::metadata::Recorder::new(builder);
    let mut selected = Vec::new();
    let mut result = build_selected(settings, options, &mut selected, true, &mut |mut p| {
        recorder.observe(&mut p);
        progress(p);
    });
    let metadata = recorder.finish(&selected, result.as_ref().err());
    if let Some(path) = &options.metadata_file {
        let path = settings.cwd.join(path);
        // Its directory is made if need be (`--metadata-file out/build.json` in a fresh CI job).
        let written = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
            _ => Ok(()),
        }
        .and_then(|()| kiln_lock::write_atomic(&path, metadata.to_json().as_bytes()));
        if let (Err(source), true) = (written, result.is_ok()) {
            result = Err(AppError::Io {
                path,
                action: "write the metadata file",
                source,
            });
        }
    }
    (result, metadata)
}

/// One pass of [`build_images`], leaving the targets it selected in `selected_out` as soon as
/// it knows them. The images are labelled with the inputs hash computed before the build; when
/// the build pinned a base for the first time, the hash `kiln.lock` records differs, and (with
/// `relabel`) those targets are exported again with the recorded hash, so a label always says
/// what `kiln.lock` says (the solve is all cached).
fn build_selected(
    settings: &Settings,
    options: &BuildOptions,
    selected_out: &mut Vec<String>,
    relabel: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, AppError> {
    let loaded = load(settings, PackagesMode::Pinned)?;
    if let Some(message) = crate::git::recover(&settings.cwd)? {
        progress(Progress::Warning {
            target: None,
            message,
        });
    }
    let (selected, compiled) = loaded.compile(&options.targets)?;
    selected_out.clone_from(&selected);
    // A missing, ignored or symlinked context path, said with its file, line and key, before
    // the builder says "not found".
    let problems = crate::paths::check_selected(&settings.cwd, &loaded.manifest, &selected);
    if !problems.is_empty() {
        return Err(AppError::Manifest(kiln_manifest::Diagnostics(problems)));
    }
    let lock_path = loaded.lock_path.clone();
    let lock = loaded.lock.clone();
    // kiln.lock keeps one record of each target per profile.
    let profile = settings.profile.as_deref();
    let own = own_inputs(settings, &loaded, &compiled)?;
    let inputs = inputs(&loaded, &compiled, &own, &lock);
    // The engine that builds (Docker's BuildKit), and the image store that can vouch for an
    // image: that engine, or the one `--load` loads into.
    let engine = docker_api(settings)?;
    let store = match (&engine, options.load) {
        (Some(api), _) => Some(api.clone()),
        (None, true) => Some(kiln_docker::Api::new(crate::engine::docker_socket(
            settings,
        )?)),
        (None, false) => None,
    };
    let mut options = options.clone();
    if options.goal == Goal::Image && options.output.is_none() {
        options.labels =
            crate::labels::labels(settings, &loaded, &inputs, &selected, options.stamp)?;
    }
    let options = &options;
    let mut relabelled = Vec::new();
    let archives = crate::archive::Archives::new(settings, &loaded, options, store.as_ref())?;

    let mut out = String::new();
    // Up to date per target: only the others are solved. Without --push the engine must still
    // have the recorded image (under its name, or it is tagged with the new one); with --push
    // the registry must still serve the recorded digest under the tag (a fresh CI runner's
    // empty engine has nothing, and needs nothing).
    let mut fresh = std::collections::BTreeSet::new();
    // Targets whose recorded image only needed its new name: tagged, not solved.
    let mut renamed = Vec::new();
    if options.goal == Goal::Image
        && !options.force
        && !options.no_cache
        && !options.stamp
        && options.output.is_none()
    {
        if options.push {
            fresh = in_registry(settings, &selected, profile, &loaded, &lock, &inputs)?;
        } else if let Some(api) = store.as_ref() {
            for t in &selected {
                match freshness(t, profile, &loaded, &lock, &inputs, Some(api)) {
                    Fresh::UpToDate => {}
                    Fresh::Rename { image, id } => {
                        tag_image(api, &id, &image)?;
                        renamed.push(crate::Built {
                            target: t.clone(),
                            image: Some(image),
                            image_id: Some(id),
                            stored: match &engine {
                                Some(_) => Stored::Engine,
                                None => Stored::Loaded {
                                    socket: api.socket().to_path_buf(),
                                },
                            },
                            ..crate::Built::default()
                        });
                    }
                    Fresh::Stale => continue,
                }
                fresh.insert(t.clone());
            }
        }
        let tagged: std::collections::BTreeSet<&String> =
            renamed.iter().map(|b| &b.target).collect();
        for t in selected
            .iter()
            .filter(|t| fresh.contains(*t) && !tagged.contains(t))
        {
            let Some(recorded) = lock.target(t, profile) else {
                continue;
            };
            let image = recorded.image.as_deref().unwrap_or("-");
            out.push_str(&match (&recorded.digest, options.push) {
                (Some(digest), true) => {
                    format!("{t}: {image}@{digest} up to date in its registry\n")
                }
                _ => format!(
                    "{t}: {image} ({}) up to date\n",
                    recorded.image_id.as_deref().unwrap_or("-")
                ),
            });
            let archive = archives.save(
                t,
                recorded.image.as_ref(),
                recorded.image_id.as_ref(),
                &mut out,
            )?;
            progress(Progress::Target(crate::Outcome {
                target: t.clone(),
                status: "up-to-date",
                image: recorded.image.clone(),
                image_id: recorded.image_id.clone(),
                pushed: recorded.digest.clone(),
                archive,
                ..crate::Outcome::default()
            }));
        }
        if fresh.len() == selected.len() && renamed.is_empty() {
            return Ok(out);
        }
    }

    let tagged: std::collections::BTreeSet<String> =
        renamed.iter().map(|b| b.target.clone()).collect();
    let mut built = if fresh.len() == selected.len() {
        Vec::new()
    } else {
        crate::build::build_loaded_except(settings, &loaded, options, &fresh, progress)?
    };
    built.extend(renamed);
    for b in &built {
        if tagged.contains(&b.target) {
            if let (Some(image), Some(id)) = (&b.image, &b.image_id) {
                out.push_str(&format!(
                    "{}: {image} ({id}) up to date, tagged with its new name (no solve)\n",
                    b.target
                ));
            }
            continue;
        }
        let line = built_line(options.goal, options.output.is_some(), b);
        match &b.builder {
            Some(builder) => out.push_str(&format!("{} (on {builder})\n", line.trim_end())),
            None => out.push_str(&line),
        }
        if let (Stored::BuilderCache, Some(image)) = (&b.stored, &b.image) {
            progress(Progress::Warning {
                target: Some(b.target.clone()),
                message: format!(
                    "{image} is only in the builder's cache (a standalone buildkitd keeps no \
                     image store kiln can use); --load loads it into the Docker Engine, --push \
                     pushes it to its registry"
                ),
            });
        }
    }
    // A failed push stops here: kiln.lock records nothing.
    let pushed = if options.push && options.output.is_none() {
        let pushed = push_all(settings, &built, store.as_ref(), &mut out)?;
        crate::attest::attach_all(settings, &loaded, &pushed, &options.labels, &mut out)?;
        pushed
    } else {
        BTreeMap::new()
    };
    let mut saved = BTreeMap::new();
    for b in &built {
        if let Some(archive) =
            archives.save(&b.target, b.image.as_ref(), b.image_id.as_ref(), &mut out)?
        {
            saved.insert(b.target.clone(), archive);
        }
    }
    let outcomes: Vec<crate::Outcome> = built
        .iter()
        .map(|b| crate::Outcome {
            target: b.target.clone(),
            status: match (options.goal, &b.output, &b.stored) {
                (Goal::SmokeTest, ..) => "smoke-tested",
                (_, Some(_), _) => "exported",
                (_, None, Stored::BuilderCache) => "cache-only",
                _ if tagged.contains(&b.target) => "tagged",
                _ => "built",
            },
            image: b.image.clone(),
            image_id: b.image_id.clone(),
            pushed: pushed.get(&b.target).cloned(),
            output: b.output.clone(),
            archive: saved.remove(&b.target),
            builder: b.builder.clone(),
            ..crate::Outcome::default()
        })
        .collect();
    if options.goal == Goal::Image && options.output.is_none() {
        let mut lock = lock;
        for b in &built {
            if let Some((reference, digest)) = &b.base {
                let image_id = engine
                    .as_ref()
                    .and_then(|api| api.image(reference).ok().flatten())
                    .map(|i| i.id);
                // A pin made by `kiln pin` stays; a build only fills in what is unknown.
                let pinned = lock.base(reference).cloned().unwrap_or_default();
                lock.set_base(kiln_lock::Base {
                    reference: reference.clone(),
                    digest: pinned.digest.or_else(|| digest.clone()),
                    platform_digest: pinned.platform_digest,
                    image_id,
                });
            }
        }
        // Another kiln may have recorded its targets since this one read kiln.lock: re-read
        // it under a lock on its directory and merge in only this build's bases and targets.
        let _held = lock_kiln_lock(&lock_path)?;
        let mut current = read_kiln_lock(&lock_path)?;
        for b in &built {
            if let Some(base) = b.base.as_ref().and_then(|(r, _)| lock.base(r)) {
                current.set_base(base.clone());
            }
        }
        let mut lock = current;
        // Inputs again: the bases just pinned are part of them.
        let inputs = self::inputs(&loaded, &compiled, &own, &lock);
        for b in &built {
            if b.stored == Stored::BuilderCache {
                // Nothing anyone can check: what kiln.lock says of the target stays as it was.
                continue;
            }
            let before = lock.target(&b.target, profile);
            // A new image id means a new image, and a new name a new tag: an old push digest
            // no longer describes it.
            let kept = before
                .filter(|t| t.image_id == b.image_id && t.image == b.image)
                .and_then(|t| t.digest.clone());
            let digest = pushed.get(&b.target).cloned().or(kept);
            lock.set_target(kiln_lock::Target {
                name: b.target.clone(),
                profile: profile.map(str::to_string),
                image: b.image.clone(),
                image_id: b.image_id.clone(),
                digest,
                inputs: inputs[&b.target].hash.clone(),
                parts: inputs[&b.target].parts.clone(),
            });
            let labelled = options
                .labels
                .get(&b.target)
                .and_then(|l| l.get(crate::labels::key::INPUTS));
            if b.image_id.is_some() && labelled != Some(&inputs[&b.target].hash) {
                relabelled.push(b.target.clone());
            }
        }
        let text = lock.to_toml();
        if std::fs::read_to_string(&lock_path).ok().as_deref() != Some(text.as_str()) {
            kiln_lock::write_atomic(&lock_path, text.as_bytes()).map_err(|source| {
                AppError::Io {
                    path: lock_path.clone(),
                    action: "write",
                    source,
                }
            })?;
            out.push_str(&format!(
                "wrote {}\n",
                relative(settings, &lock_path).display()
            ));
        }
    }
    for outcome in outcomes {
        progress(Progress::Target(outcome));
    }
    if relabel && !relabelled.is_empty() {
        let again = BuildOptions {
            targets: relabelled,
            force: true,
            ..options.clone()
        };
        out.push_str(&build_selected(
            settings,
            &again,
            &mut Vec::new(),
            false,
            progress,
        )?);
    }
    Ok(out)
}

/// What `kiln build` says of one built target: where its image is, truthfully. An image only
/// in a standalone buildkitd's cache never gets an image id (there is none anyone could use);
/// a pushed one is reported by the push.
/// `exporting`: the build exports to a directory (`--output`), so a target that was not
/// exported is a dependency the named ones needed.
fn built_line(goal: Goal, exporting: bool, b: &crate::Built) -> String {
    let t = &b.target;
    match (goal, &b.output, &b.image, &b.image_id, &b.stored) {
        (Goal::SmokeTest, ..) => format!("{t}: smoke test passed\n"),
        (_, Some(dir), ..) => format!("{t}: exported to {}\n", dir.display()),
        (_, None, ..) if exporting => {
            format!("{t}: built (a dependency, kept in the build cache)\n")
        }
        (_, None, Some(image), Some(id), Stored::Loaded { socket }) => format!(
            "{t}: {image} ({id}), loaded into the Docker Engine at unix://{}\n",
            socket.display()
        ),
        (_, None, Some(image), Some(id), Stored::Engine) => format!("{t}: {image} ({id})\n"),
        // `push_all` says where it went.
        (_, None, Some(_), _, Stored::Registry) => String::new(),
        // With a warning (see `build_images`).
        (_, None, Some(image), _, Stored::BuilderCache) => {
            format!("{t}: {image} built, only in the builder's cache\n")
        }
        _ => format!("{t}: built (no `image` name, kept in the build cache)\n"),
    }
}

/// Push every built image (through the engine on Docker, and after `--load`; buildkitd already
/// pushed from its exporter otherwise), then check the registry reports the same digest for
/// the tag. Returns the pushed digest per target.
fn push_all(
    settings: &Settings,
    built: &[crate::Built],
    engine: Option<&kiln_docker::Api>,
    out: &mut String,
) -> Result<BTreeMap<String, String>, AppError> {
    let access = crate::pin::Access::new(settings)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Engine(format!("cannot start the async runtime: {e}")))?;
    let mut pushed = BTreeMap::new();
    for b in built {
        let Some(image) = &b.image else { continue };
        let reference = kiln_reference::Reference::parse(image)
            .map_err(|e| AppError::Build(format!("{}: {e}", b.target)))?;
        // In a pool, the image is in the engine of the builder it was built on.
        let own = b.engine.as_ref().map(kiln_docker::Api::new);
        let digest = match (&b.pushed, own.as_ref().or(engine)) {
            (Some(digest), _) => digest.clone(),
            (None, Some(api)) => push_with_retry(api, image, &access.auth_header(&reference)?)?,
            (None, None) => {
                return Err(AppError::Build(format!(
                    "{}: the builder did not push {image}",
                    b.target
                )));
            }
        };
        let registry = access.registry(&reference)?;
        let reported = runtime
            .block_on(registry.tag_digest(&reference))
            .map_err(|e| AppError::Build(format!("push of {image}: {e}")))?;
        if reported != digest {
            return Err(AppError::Build(format!(
                "push of {image}: the engine reported {digest} but the registry has {reported} for the tag"
            )));
        }
        out.push_str(&format!("{}: pushed {image}@{digest}\n", b.target));
        pushed.insert(b.target.clone(), digest);
    }
    Ok(pushed)
}

/// `docker push` through the engine, retried (1 s, 2 s) on errors that may pass: the engine
/// or registry unreachable, 5xx. A refusal (401/403, denied) is not retried.
fn push_with_retry(api: &kiln_docker::Api, image: &str, auth: &str) -> Result<String, AppError> {
    let backoff = kiln_registry::Backoff::new(3);
    let mut attempt = 1;
    loop {
        let error = match api.push(image, auth) {
            Ok(digest) => return Ok(digest),
            Err(e) => e.to_string(),
        };
        let lower = error.to_lowercase();
        let refused = ["denied", "unauthorized", "401", "403", "does not exist"]
            .iter()
            .any(|s| lower.contains(s));
        match backoff.after(attempt) {
            Some(delay) if !refused => std::thread::sleep(delay),
            _ => {
                let hint = if refused {
                    "\n  hint: log in with `docker login` (kiln reads ~/.docker/config.json)"
                } else {
                    ""
                };
                return Err(AppError::Build(format!(
                    "push of {image} failed (attempt {attempt} of {}): {error}{hint}",
                    backoff.attempts()
                )));
            }
        }
        attempt += 1;
    }
}

/// The Docker Engine API when the builder is a Docker Engine (to check and pin local images).
pub(crate) fn docker_api(settings: &Settings) -> Result<Option<kiln_docker::Api>, AppError> {
    let (endpoint, _) = crate::builder::choose(settings)?;
    Ok(match endpoint {
        kiln_buildkit::Endpoint::Docker { socket } => Some(kiln_docker::Api::new(socket)),
        _ => None,
    })
}

/// With `--push`: the selected targets whose inputs are what `kiln.lock` recorded (for this
/// profile), under the same image name, and whose recorded pushed digest the registry still
/// serves for that tag — one manifest HEAD request per target, all at once, nothing asked of
/// the engine. A registry that does not answer makes the target stale (it is built and pushed,
/// and the push says what is wrong).
fn in_registry(
    settings: &Settings,
    selected: &[String],
    profile: Option<&str>,
    loaded: &Loaded,
    lock: &KilnLock,
    inputs: &BTreeMap<String, Inputs>,
) -> Result<std::collections::BTreeSet<String>, AppError> {
    let mut asks = Vec::new();
    let access = crate::pin::Access::new(settings)?;
    for t in selected {
        let (Some(recorded), Some(now)) = (lock.target(t, profile), inputs.get(t)) else {
            continue;
        };
        let named = loaded.manifest.targets[t.as_str()]
            .image
            .as_ref()
            .filter(|i| i.digest().is_none());
        let (Some(image), Some(digest)) = (named, &recorded.digest) else {
            continue;
        };
        if !now.pinned
            || recorded.inputs != now.hash
            || recorded.image.as_deref() != Some(image.to_string().as_str())
        {
            continue;
        }
        let registry = access.registry(image)?.attempts(1);
        asks.push((t.clone(), image.clone(), digest.clone(), registry));
    }
    if asks.is_empty() {
        return Ok(Default::default());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Engine(format!("cannot start the async runtime: {e}")))?;
    let answers = runtime.block_on(futures::future::join_all(asks.iter().map(
        |(t, image, digest, registry)| async move {
            let served = registry.tag_digest(image).await.ok();
            (served.as_deref() == Some(digest.as_str())).then(|| t.clone())
        },
    )));
    Ok(answers.into_iter().flatten().collect())
}

/// Whether a target must be solved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fresh {
    /// Its inputs are what `kiln.lock` recorded and the engine has its image under its name.
    UpToDate,
    /// Its inputs are what `kiln.lock` recorded and the engine still has the recorded image,
    /// but not under the name the target now resolves to: tag `id` as `image`.
    Rename {
        image: String,
        id: String,
    },
    Stale,
}

fn freshness(
    target: &str,
    profile: Option<&str>,
    loaded: &Loaded,
    lock: &KilnLock,
    inputs: &BTreeMap<String, Inputs>,
    engine: Option<&kiln_docker::Api>,
) -> Fresh {
    let (Some(recorded), Some(now), Some(engine)) =
        (lock.target(target, profile), inputs.get(target), engine)
    else {
        return Fresh::Stale;
    };
    if !now.pinned || recorded.inputs != now.hash {
        return Fresh::Stale;
    }
    let manifest_target = &loaded.manifest.targets[target];
    // Every local base still the image that was pinned.
    if let Base::Image(reference) = &manifest_target.from {
        let name = reference.without_digest().to_string();
        if let Some(pinned) = lock.base(&name).and_then(|b| b.image_id.clone()) {
            let current = engine
                .image(&reference.to_string())
                .ok()
                .flatten()
                .map(|i| i.id);
            if current.as_deref() != Some(pinned.as_str()) {
                return Fresh::Stale;
            }
        }
    }
    // The name the target resolves to now (after `--set`, environment and profile).
    let (Some(image), Some(id)) = (
        manifest_target
            .image
            .as_ref()
            .filter(|i| i.digest().is_none()),
        &recorded.image_id,
    ) else {
        return Fresh::Stale;
    };
    let image = image.to_string();
    let named = engine.image(&image).ok().flatten().map(|i| i.id);
    if named.as_ref() == Some(id) && recorded.image.as_ref() == Some(&image) {
        return Fresh::UpToDate;
    }
    match engine.image(id) {
        Ok(Some(found)) if &found.id == id => Fresh::Rename {
            image,
            id: id.clone(),
        },
        _ => Fresh::Stale,
    }
}

/// Name the engine's image `id` as `image` too (`docker tag`).
fn tag_image(api: &kiln_docker::Api, id: &str, image: &str) -> Result<(), AppError> {
    let reference =
        kiln_reference::Reference::parse(image).map_err(|e| AppError::Build(e.to_string()))?;
    api.tag(id, &reference.name(), reference.tag().unwrap_or("latest"))
        .map_err(|e| AppError::Engine(format!("cannot tag {id} as {image}: {e}")))
}

/// `path` relative to the working directory, for messages.
pub(crate) fn relative(settings: &Settings, path: &Path) -> PathBuf {
    crate::trust::lexical(path.strip_prefix(&settings.cwd).unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Built;

    /// The inputs hash of a fixed small project, pinned: kiln.lock files written by earlier
    /// kilns must stay up to date, so this value may only change with a deliberate format
    /// change (`kiln-inputs/N`).
    #[test]
    fn inputs_hash_is_pinned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        };
        write(
            "kiln.toml",
            r#"version = 1

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
"#,
        );
        write(
            "pyproject.toml",
            "[project]\nname = \"lib\"\nversion = \"1\"\n",
        );
        write("uv.lock", "version = 1\n");
        write("src/app.py", "print('app')\n");
        write("src/other.py", "print('not copied')\n");
        write("tests/smoke.py", "print('ok')\n");
        write("tests/skip.py", "print('ignored')\n");
        write(".dockerignore", "tests/skip.py\n");
        for d in ["src", "tests"] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut lock = KilnLock::default();
        lock.set_base(kiln_lock::Base {
            reference: "docker.io/library/python:3.11-slim-bookworm".into(),
            digest: Some(format!("sha256:{}", "1".repeat(64))),
            platform_digest: None,
            image_id: None,
        });
        write("kiln.lock", &lock.to_toml());
        let settings = Settings {
            cwd: root.to_path_buf(),
            ..Settings::default()
        };
        let loaded = load(&settings, PackagesMode::Pinned).unwrap();
        let all: Vec<String> = loaded.manifest.targets.keys().cloned().collect();
        let (_, compiled) = loaded.compile(&all).unwrap();
        let own = own_inputs(&settings, &loaded, &compiled).unwrap();
        let inputs = inputs(&loaded, &compiled, &own, &loaded.lock);
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

    #[test]
    fn each_image_is_reported_where_it_is() {
        let built = |stored: Stored, id: Option<&str>| Built {
            target: "hello".into(),
            image: Some("docker.io/x/hello:1".into()),
            image_id: id.map(str::to_string),
            stored,
            ..Built::default()
        };
        let engine = built_line(Goal::Image, false, &built(Stored::Engine, Some("sha256:1")));
        assert_eq!(engine, "hello: docker.io/x/hello:1 (sha256:1)\n");
        let loaded = built_line(
            Goal::Image,
            false,
            &built(
                Stored::Loaded {
                    socket: "/var/run/docker.sock".into(),
                },
                Some("sha256:1"),
            ),
        );
        assert!(
            loaded.ends_with("loaded into the Docker Engine at unix:///var/run/docker.sock\n"),
            "{loaded}"
        );
        // Only in a buildkitd's cache: says so, no image id, nothing claimed.
        let cached = built_line(Goal::Image, false, &built(Stored::BuilderCache, None));
        assert_eq!(
            cached,
            "hello: docker.io/x/hello:1 built, only in the builder's cache\n"
        );
        assert_eq!(
            built_line(Goal::Image, false, &built(Stored::Registry, None)),
            ""
        );
    }
}
