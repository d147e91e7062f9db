//! `kiln trace IMAGE|DIGEST`: from an image back to its sources. The image's config comes from
//! the engine's image store or, for `repo@digest` / `repo:tag` the engine does not have, from
//! the registry; its labels (see `labels`) name the manifest, target and lock files. Git
//! history says which commit's kiln.lock recorded the image id or pushed digest, the lock
//! files at that commit say exactly which package versions it holds, and the working tree's
//! inputs hash says whether it still builds the same thing.

use std::collections::BTreeMap;

use kiln_graph::PackagesMode;
use serde::Serialize;

use crate::history::{self, Commit};
use crate::labels::key;
use crate::{AppError, Settings};

/// `kiln trace` options.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// An image name, `repo@digest`, or an image id / pushed digest (`sha256:…`).
    pub image: String,
    /// `--format json`.
    pub json: bool,
}

/// What `kiln trace` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    pub image: String,
    /// The image id (config digest), when known.
    pub image_id: Option<String>,
    /// Manifest digests the image was pushed as (registry, or the engine's repo digests).
    pub pushed: Vec<String>,
    /// Where the image's config was read: `engine`, `registry`, or `kiln.lock` (a bare
    /// digest neither has).
    pub read_from: String,
    pub target: Option<String>,
    pub manifest: Option<String>,
    pub inputs: Option<String>,
    /// The commit whose kiln.lock first recorded this image (oldest on the branch).
    pub commit: Option<Commit>,
    /// The newest commit whose kiln.lock still records it.
    pub last_recorded: Option<Commit>,
    pub base: Option<String>,
    pub base_digest: Option<String>,
    pub base_image_id: Option<String>,
    /// Lock file (repository path) → package → version, at `commit`.
    pub packages: BTreeMap<String, BTreeMap<String, String>>,
    /// Lock files whose content at `commit` is not what the image's label says (the image was
    /// built from uncommitted lock files).
    pub unverified_locks: Vec<String>,
    /// Whether the working tree still builds this image's inputs; `None` when kiln cannot say.
    pub same_as_working_tree: Option<bool>,
    /// What differs in the working tree, in words.
    pub changed: Vec<String>,
    /// Read from the registry: the image's OCI referrers (artifact type, manifest digest),
    /// e.g. the SBOM and provenance `kiln build --push` attached.
    pub referrers: Vec<(String, String)>,
    /// Labels kiln did not interpret, and why some answer is missing.
    pub notes: Vec<String>,
}

struct Found {
    referrers: Vec<(String, String)>,
    image_id: Option<String>,
    pushed: Vec<String>,
    labels: BTreeMap<String, String>,
    read_from: &'static str,
}

/// `kiln trace`.
pub fn trace(settings: &Settings, options: &TraceOptions) -> Result<String, AppError> {
    let t = find(settings, &options.image)?;
    Ok(if options.json {
        serde_json::to_string_pretty(&t).unwrap_or_default() + "\n"
    } else {
        render(&t)
    })
}

fn labels_of(config: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    config
        .and_then(|c| c.get("Labels"))
        .and_then(|l| l.as_object())
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The image's id, pushed digests and labels, from the engine or the registry.
fn read_image(settings: &Settings, image: &str) -> Result<Found, AppError> {
    let bare_digest = image.starts_with("sha256:");
    let engine = match settings.resolved().builder()? {
        (kiln_buildkit::Endpoint::Docker { socket }, _) => Some(kiln_docker::Api::new(socket)),
        _ => None,
    };
    if !image.contains('@')
        && let Some(api) = &engine
        && let Ok(Some(info)) = api.image(image)
    {
        let pushed = info
            .repo_digests
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
            .collect();
        return Ok(Found {
            image_id: Some(info.id),
            pushed,
            labels: labels_of(info.config.as_ref()),
            read_from: "engine",
            referrers: Vec::new(),
        });
    }
    if bare_digest {
        return Ok(Found {
            image_id: None,
            pushed: Vec::new(),
            labels: BTreeMap::new(),
            read_from: "kiln.lock",
            referrers: Vec::new(),
        });
    }
    let reference = kiln_reference::Reference::parse(image)
        .map_err(|e| AppError::Usage(format!("`{image}` is not an image reference: {e}")))?;
    let access = crate::pin::Access::new(settings)?;
    let registry = access.registry(&reference)?;
    let found = crate::runtime::block_on(registry.image_config(&reference, "linux", "amd64"))?
        .map_err(|source| AppError::Trace {
            image: image.to_string(),
            source: Box::new(source),
        })?;
    // A registry that sent a malformed digest has no referrers kiln can ask for.
    let referrers = match reference
        .without_digest()
        .with_digest(&found.manifest_digest)
    {
        Ok(subject) => crate::runtime::block_on(registry.referrers(&subject))?.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    Ok(Found {
        referrers,
        image_id: Some(found.config_digest),
        pushed: vec![found.manifest_digest],
        labels: labels_of(found.config.get("config")),
        read_from: "registry",
    })
}

fn find(settings: &Settings, image: &str) -> Result<Trace, AppError> {
    let found = read_image(settings, image)?;
    let mut t = Trace {
        image: image.to_string(),
        image_id: found.image_id.clone(),
        pushed: found.pushed.clone(),
        read_from: found.read_from.to_string(),
        referrers: found.referrers.clone(),
        target: found.labels.get(key::TARGET).cloned(),
        manifest: found.labels.get(key::MANIFEST).cloned(),
        inputs: found.labels.get(key::INPUTS).cloned(),
        base: found.labels.get(key::BASE).cloned(),
        base_digest: found.labels.get(key::OCI_BASE_DIGEST).cloned(),
        base_image_id: found.labels.get(key::BASE_IMAGE_ID).cloned(),
        ..Trace::default()
    };
    let mut wanted: Vec<String> = found.pushed.clone();
    wanted.extend(found.image_id.clone());
    if image.starts_with("sha256:") {
        wanted.push(image.to_string());
    }
    if !found.labels.contains_key(key::TARGET) && found.read_from != "kiln.lock" {
        t.notes
            .push("the image has no kiln labels; looking for it in kiln.lock history".to_string());
    }

    let (repo, root) = history::open(settings)?;
    // The label names kiln.lock; else it is where this tree keeps it.
    let current = crate::load(settings, PackagesMode::Pinned);
    let lock_path = match (found.labels.get(key::KILN_LOCK), &current) {
        (Some(p), _) => p.clone(),
        (None, Ok(loaded)) => {
            crate::labels::repo_path(&settings.cwd, Some(&root), &loaded.lock_path)
        }
        (None, Err(_)) => "kiln.lock".to_string(),
    };
    let recorded = history::kiln_locks(settings, &repo, &lock_path)?;
    let target_name = t.target.clone();
    let hit = |r: &history::Recorded| -> Option<kiln_lock::Target> {
        r.lock
            .targets
            .iter()
            .find(|e| {
                target_name.as_ref().is_none_or(|name| &e.name == name)
                    && (e.image_id.as_ref().is_some_and(|i| wanted.contains(i))
                        || e.digest.as_ref().is_some_and(|d| wanted.contains(d)))
            })
            .cloned()
    };
    // Newest first: the last hit is the commit that first recorded it.
    let mut first: Option<(&history::Recorded, kiln_lock::Target)> = None;
    for r in &recorded {
        if let Some(entry) = hit(r) {
            if t.last_recorded.is_none() {
                t.last_recorded = Some(r.commit.clone());
            }
            first = Some((r, entry));
        }
    }
    let Some((at, entry)) = first else {
        t.notes.push(format!(
            "no commit of the current branch has a {lock_path} recording this image (built and never committed?)"
        ));
        return Ok(t);
    };
    t.commit = Some(at.commit.clone());
    if t.target.is_none() {
        t.target = Some(entry.name.clone());
    }
    if t.inputs.is_none() {
        t.inputs = Some(entry.inputs.clone());
    }

    // The lock files: the labels name them with their hashes; without labels, the lock files
    // this tree's manifest gives the target.
    let mut locks: Vec<(String, Option<String>)> = found
        .labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(key::LOCK_FILE)?.to_string(), Some(v.clone()))))
        .collect();
    if locks.is_empty()
        && let (Ok(loaded), Some(name)) = (&current, &t.target)
        && let Some(target) = loaded.manifest.targets.get(name)
        && let Some(packages) = &target.packages
    {
        for file in &packages.lock {
            let path = settings.cwd.join(&target.context).join(file);
            locks.push((
                crate::labels::repo_path(&settings.cwd, Some(&root), &path),
                None,
            ));
        }
    }
    // Each read as the target's manager in this tree's manifest says, else (a file it no
    // longer names) as the file's name suggests.
    let formats: BTreeMap<String, Option<kiln_lock::LockFormat>> = match (&current, &t.target) {
        (Ok(loaded), Some(name)) => loaded.manifest.targets.get(name).map(|target| {
            let path = |f: &String| settings.cwd.join(&target.context).join(f);
            let repo_path = |f| crate::labels::repo_path(&settings.cwd, Some(&root), &path(f));
            let packages = target.packages.iter();
            packages
                .flat_map(|p| p.lock.iter().map(|f| (repo_path(f), p.lock_format(f))))
                .collect()
        }),
        _ => None,
    }
    .unwrap_or_default();
    for (path, sha) in locks {
        if let Some(sha) = sha {
            use sha2::Digest;
            let at_commit = history::blob_at(&repo, at.oid, &path)
                .map(|d| format!("sha256:{}", hex::encode(sha2::Sha256::digest(d))));
            if at_commit.as_deref() != Some(sha.as_str()) {
                t.unverified_locks.push(path.clone());
            }
        }
        let format = match formats.get(&path) {
            Some(format) => *format,
            None => kiln_lock::LockFormat::for_file(&path),
        };
        match format.and_then(|f| history::pins_at(&repo, at.oid, &path, f)) {
            Some(Ok(pins)) => {
                t.packages.insert(path, pins);
            }
            // The error as it always read here, with its `error: `.
            Some(Err(e)) => t.notes.push(e.report()),
            None => t.notes.push(format!(
                "{path}: not in commit {} or not a lock file kiln reads",
                at.commit.id
            )),
        }
    }

    // Does the working tree still build it?
    match (&current, &t.target) {
        (Ok(loaded), Some(name)) if loaded.manifest.targets.contains_key(name) => {
            let (_, compiled) = loaded.compile(std::slice::from_ref(name))?;
            let own = crate::build::own_inputs(settings, loaded, &compiled)?;
            let now = kiln_record::inputs(&own, &loaded.lock);
            let now = &now[name];
            let same = t.inputs.as_deref() == Some(now.hash.as_str());
            t.same_as_working_tree = Some(same);
            if !same {
                let target = &loaded.manifest.targets[name];
                if let Some(parts) = kiln_record::changed_parts(target, &entry.parts, &now.parts) {
                    t.changed = parts;
                }
            }
        }
        (Ok(_), Some(name)) => {
            t.same_as_working_tree = Some(false);
            t.changed.push(format!(
                "the working tree's manifests have no target `{name}`"
            ));
        }
        (Err(e), _) => t.notes.push(format!(
            "cannot read the working tree's manifests: {}",
            e.report()
        )),
        _ => {}
    }
    Ok(t)
}

fn render(t: &Trace) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "image: {} ({}, read from the {})",
        t.image,
        t.image_id.as_deref().unwrap_or("id unknown"),
        t.read_from
    );
    for d in &t.pushed {
        let _ = writeln!(s, "pushed: {d}");
    }
    if let Some(target) = &t.target {
        let _ = writeln!(
            s,
            "target: {target}{}",
            t.manifest
                .as_ref()
                .map(|m| format!(" (in {m})"))
                .unwrap_or_default()
        );
    }
    if let Some(inputs) = &t.inputs {
        let _ = writeln!(s, "inputs: {inputs}");
    }
    if let Some(c) = &t.commit {
        let _ = writeln!(s, "commit: {} {} ({})", c.id, c.summary, c.time);
    }
    if let Some(base) = &t.base {
        let pin = t.base_digest.as_ref().or(t.base_image_id.as_ref());
        let _ = writeln!(
            s,
            "base: {base}{}",
            pin.map(|p| format!(" @ {p}")).unwrap_or_default()
        );
    }
    for (file, pins) in &t.packages {
        let _ = writeln!(s, "packages ({file}):");
        for (name, version) in pins {
            let _ = writeln!(s, "  {name} {version}");
        }
    }
    for file in &t.unverified_locks {
        let _ = writeln!(
            s,
            "warning: {file} at that commit is not the file the image was built from"
        );
    }
    for (artifact_type, digest) in &t.referrers {
        let _ = writeln!(s, "referrer: {artifact_type} {digest}");
    }
    match t.same_as_working_tree {
        Some(true) => s.push_str("working tree: builds the same inputs\n"),
        Some(false) if t.changed.is_empty() => s.push_str("working tree: builds something else\n"),
        Some(false) => {
            let _ = writeln!(s, "working tree: changed: {}", t.changed.join(", "));
        }
        None => {}
    }
    for note in &t.notes {
        let _ = writeln!(s, "note: {note}");
    }
    s
}
