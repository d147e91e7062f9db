//! `kiln build` and `kiln smoke-test` around the solve: skip targets that are up to date,
//! and record what was built in `kiln.lock` (what a target's inputs are and what kiln.lock
//! records of it is kiln-record's).
//!
//! A target is up to date when its inputs hash equals the one `kiln.lock` recorded, its base
//! is pinned, and the engine still has the recorded image under the target's name — or, with
//! `--push`, the registry still serves the recorded pushed digest under its tag. An unpinned
//! base always solves. Each target is decided alone: only the stale ones are solved. The name
//! is not part of the hash (it is not part of the image): when only the name changed (`--set
//! TAG=…`, a profile) and the engine still has the recorded image, kiln tags that image with
//! the new name instead of solving, and records the name. `kiln.lock` keeps a record per
//! target and profile.
//!
//! `kiln.lock` and the up-to-date check trust only what can be verified: a Docker Engine's
//! image store (the engine that built the image, or the one `--load` loaded it into) and a
//! registry's digest for a pushed tag. An image only in a standalone buildkitd's cache is
//! reported as such, with a warning, and recorded nowhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_compile::CompiledTarget;
use kiln_graph::PackagesMode;
use kiln_lock::KilnLock;
use kiln_record::{Disk, Fresh, Inputs, Stale};

use crate::{AppError, BuildOptions, Goal, Loaded, Progress, Settings, Stored, load};

/// The part of each target's inputs that reads files (kiln-record's `own_inputs`, over the
/// disk), for the targets `compiled` from `loaded`.
pub(crate) fn own_inputs(
    settings: &Settings,
    loaded: &Loaded,
    compiled: &[CompiledTarget],
) -> Result<Vec<kiln_record::Own>, AppError> {
    Ok(kiln_record::own_inputs(
        &Disk,
        &settings.cwd,
        &loaded.manifest,
        &loaded.graph,
        &loaded.lock,
        &loaded.lock_path,
        compiled,
    )?)
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
    let builder = settings
        .resolved()
        .builder()
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
    let inputs = kiln_record::inputs(&own, &lock);
    // The engine that builds (Docker's BuildKit), and the image store that can vouch for an
    // image: that engine, or the one `--load` loads into.
    let engine = docker_api(settings)?;
    let store = match (&engine, options.load) {
        (Some(api), _) => Some(api.clone()),
        (None, true) => Some(kiln_docker::Api::new(settings.resolved().docker_socket()?)),
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
    // With several builders: which one's engine holds each up-to-date target's image.
    let mut fresh_on = BTreeMap::new();
    if options.goal == Goal::Image
        && !options.force
        && !options.no_cache
        && !options.stamp
        && options.output.is_none()
    {
        if options.push {
            fresh = in_registry(settings, &selected, profile, &loaded, &lock, &inputs)?;
        } else {
            let stores = image_stores(settings, store.as_ref())?;
            let base_id = |reference: &str| {
                stores
                    .iter()
                    .find_map(|s| s.api.image(reference).ok().flatten())
                    .map(|i| i.id)
            };
            for t in &selected {
                // The first store that has the image under its name, else the first that has
                // the recorded image under another name (tagged there), else stale.
                let found = stores
                    .iter()
                    .map(|s| {
                        let f =
                            freshness(t, profile, &loaded, &lock, &inputs, Some(&s.api), &base_id);
                        (s, f)
                    })
                    .filter(|(_, f)| !matches!(f, Fresh::Stale(_)))
                    .min_by_key(|(_, f)| *f != Fresh::UpToDate);
                let Some((at, found)) = found else {
                    continue;
                };
                if stores.len() > 1 {
                    fresh_on.insert(t.clone(), at.builder.clone());
                }
                if let Fresh::Rename { image, id } = found {
                    tag_image(&at.api, &id, &image)?;
                    renamed.push(crate::Built {
                        target: t.clone(),
                        image: Some(image),
                        image_id: Some(id),
                        stored: match at.loaded {
                            false => Stored::Engine,
                            true => Stored::Loaded {
                                socket: at.api.socket().to_path_buf(),
                            },
                        },
                        builder: (stores.len() > 1).then(|| at.builder.clone()),
                        engine: Some(at.api.socket().to_path_buf()),
                        ..crate::Built::default()
                    });
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
            let builder = fresh_on.get(t);
            out.push_str(&match (&recorded.digest, options.push, builder) {
                (Some(digest), true, _) => {
                    format!("{t}: {image}@{digest} up to date in its registry\n")
                }
                (_, _, Some(builder)) => format!(
                    "{t}: {image} ({}) up to date (on {builder})\n",
                    recorded.image_id.as_deref().unwrap_or("-")
                ),
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
                builder: builder.cloned(),
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
        crate::solve::build_loaded_except(settings, &loaded, options, &fresh, progress)?
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
        let results: Vec<kiln_record::BuildResult> = built
            .iter()
            .map(|b| kiln_record::BuildResult {
                target: b.target.clone(),
                image: b.image.clone(),
                image_id: b.image_id.clone(),
                pushed: pushed.get(&b.target).cloned(),
                base: b
                    .base
                    .as_ref()
                    .map(|(reference, digest)| kiln_record::BasePin {
                        reference: reference.clone(),
                        digest: digest.clone(),
                        image_id: engine
                            .as_ref()
                            .and_then(|api| api.image(reference).ok().flatten())
                            .map(|i| i.id),
                    }),
                cache_only: b.stored == Stored::BuilderCache,
            })
            .collect();
        // Another kiln may have recorded its targets since this one read kiln.lock: merged
        // into it as it is now, under a lock on its directory.
        let recorded =
            kiln_record::record_build(&Disk, &lock_path, &lock, &results, profile, &own)?;
        for b in built.iter().filter(|b| b.stored != Stored::BuilderCache) {
            let labelled = options
                .labels
                .get(&b.target)
                .and_then(|l| l.get(crate::labels::key::INPUTS));
            let hash = recorded.inputs.get(&b.target).map(|i| &i.hash);
            if b.image_id.is_some() && labelled != hash {
                relabelled.push(b.target.clone());
            }
        }
        if recorded.wrote {
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
    let mut pushed = BTreeMap::new();
    for b in built {
        let Some(image) = &b.image else { continue };
        let reference = kiln_reference::Reference::parse(image).map_err(|source| {
            AppError::TargetReference {
                target: b.target.clone(),
                source,
            }
        })?;
        // In a pool, the image is in the engine of the builder it was built on.
        let own = b.engine.as_ref().map(kiln_docker::Api::new);
        let digest = match (&b.pushed, own.as_ref().or(engine)) {
            (Some(digest), _) => digest.clone(),
            (None, Some(api)) => push_with_retry(api, image, &access.auth_header(&reference)?)?,
            (None, None) => {
                return Err(AppError::NotPushed {
                    target: b.target.clone(),
                    image: image.clone(),
                });
            }
        };
        let registry = access.registry(&reference)?;
        let reported =
            crate::runtime::block_on(registry.tag_digest(&reference))?.map_err(|source| {
                AppError::PushUnconfirmed {
                    image: image.clone(),
                    source: Box::new(source),
                }
            })?;
        if reported != digest {
            return Err(AppError::PushMismatch {
                image: image.clone(),
                engine: digest,
                registry: reported,
            });
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
            Err(e) => e,
        };
        let lower = error.to_string().to_lowercase();
        let refused = ["denied", "unauthorized", "401", "403", "does not exist"]
            .iter()
            .any(|s| lower.contains(s));
        match backoff.after(attempt) {
            Some(delay) if !refused => std::thread::sleep(delay),
            _ => {
                return Err(AppError::Push {
                    image: image.to_string(),
                    attempt,
                    attempts: backoff.attempts(),
                    refused,
                    source: Box::new(error),
                });
            }
        }
        attempt += 1;
    }
}

/// The Docker Engine API when the builder is a Docker Engine (to check and pin local images).
pub(crate) fn docker_api(settings: &Settings) -> Result<Option<kiln_docker::Api>, AppError> {
    let (endpoint, _) = settings.resolved().builder()?;
    Ok(match endpoint {
        kiln_buildkit::Endpoint::Docker { socket } => Some(kiln_docker::Api::new(socket)),
        _ => None,
    })
}

/// An image store that can vouch for an up-to-date target.
struct ImageStore {
    /// The builder whose engine it is (as `Built::builder` names it).
    builder: String,
    api: kiln_docker::Api,
    /// The engine `--load` loads into, not a builder's own.
    loaded: bool,
}

/// Where an up-to-date target's image may be: the engine of every Docker Engine builder of
/// the pool (each keeps the images built on it), and `store` (the engine `--load` loads into).
fn image_stores(
    settings: &Settings,
    store: Option<&kiln_docker::Api>,
) -> Result<Vec<ImageStore>, AppError> {
    let mut stores: Vec<ImageStore> = settings
        .resolved()
        .builders()?
        .iter()
        .filter_map(|endpoint| match endpoint {
            kiln_buildkit::Endpoint::Docker { socket } => Some(ImageStore {
                builder: endpoint.to_string(),
                api: kiln_docker::Api::new(socket.clone()),
                loaded: false,
            }),
            _ => None,
        })
        .collect();
    let listed = |api: &kiln_docker::Api| stores.iter().any(|s| s.api.socket() == api.socket());
    if let Some(api) = store.filter(|api| !listed(api)) {
        stores.push(ImageStore {
            builder: api.socket().display().to_string(),
            api: api.clone(),
            loaded: true,
        });
    }
    Ok(stores)
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
        let Some(target) = loaded.manifest.targets.get(t) else {
            continue;
        };
        let Ok((image, digest)) =
            kiln_record::registry_question(target, lock.target(t, profile), inputs.get(t))
        else {
            continue;
        };
        let registry = access.registry(image)?.attempts(1);
        asks.push((t.clone(), image.clone(), digest.to_string(), registry));
    }
    if asks.is_empty() {
        return Ok(Default::default());
    }
    let answers = crate::runtime::block_on(futures::future::join_all(asks.iter().map(
        |(t, image, digest, registry)| async move {
            let served = registry.tag_digest(image).await.ok();
            (served.as_deref() == Some(digest.as_str())).then(|| t.clone())
        },
    )))?;
    Ok(answers.into_iter().flatten().collect())
}

/// A Docker Engine's image store, as kiln-record's up-to-date decision asks it; bases are
/// looked up with `base_id` (across the pool).
struct EngineImages<'a> {
    engine: &'a kiln_docker::Api,
    base_id: &'a dyn Fn(&str) -> Option<String>,
}

impl kiln_record::ImageStore for EngineImages<'_> {
    fn image_id(&self, reference: &str) -> Option<String> {
        self.engine.image(reference).ok().flatten().map(|i| i.id)
    }

    fn base_image_id(&self, reference: &str) -> Option<String> {
        (self.base_id)(reference)
    }
}

/// Whether `target` must be solved: kiln-record's decision over what `engine` has.
fn freshness(
    target: &str,
    profile: Option<&str>,
    loaded: &Loaded,
    lock: &KilnLock,
    inputs: &BTreeMap<String, Inputs>,
    engine: Option<&kiln_docker::Api>,
    base_id: &dyn Fn(&str) -> Option<String>,
) -> Fresh {
    let (Some(manifest_target), Some(engine)) = (loaded.manifest.targets.get(target), engine)
    else {
        return Fresh::Stale(Stale::NoStore);
    };
    kiln_record::freshness(
        manifest_target,
        lock.target(target, profile),
        inputs.get(target),
        lock,
        &EngineImages { engine, base_id },
    )
}

/// Name the engine's image `id` as `image` too (`docker tag`).
fn tag_image(api: &kiln_docker::Api, id: &str, image: &str) -> Result<(), AppError> {
    let reference = kiln_reference::Reference::parse(image)?;
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

    mod pinned {
        include!("../../../tests/fixtures/pinned_project.rs");
    }

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
        write("kiln.toml", pinned::MANIFEST);
        for (rel, text) in pinned::FILES {
            write(rel, text);
        }
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
        let inputs = kiln_record::inputs(&own, &loaded.lock);
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

    /// kiln-record's errors read as kiln's did before the crate existed.
    #[test]
    fn record_errors_keep_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(
            root.join("kiln.toml"),
            "version = 1\n[target.a]\nfrom = \"busybox:1.36\"\n[target.a.smoke-test]\ncopy = [\"t/\"]\nrun = [\"true\"]\n",
        )
        .unwrap();
        let lock_text = "version = 1\n[[target]]\nname = 3\n";
        std::fs::write(root.join("kiln.lock"), lock_text).unwrap();
        let settings = Settings {
            cwd: root.clone(),
            ..Settings::default()
        };
        let err = load(&settings, PackagesMode::Pinned).err().unwrap();
        let parse =
            KilnLock::parse(&root.join("kiln.lock").display().to_string(), lock_text).unwrap_err();
        assert_eq!(
            err.report(),
            format!(
                "error: {parse}\n  hint: kiln.lock is generated; restore it from git or delete it"
            )
        );
        assert_eq!(err.exit_code(), 1);

        std::fs::remove_file(root.join("kiln.lock")).unwrap();
        let loaded = load(&settings, PackagesMode::Pinned).unwrap();
        let (_, compiled) = loaded.compile(&["a".to_string()]).unwrap();
        // The context is gone by the time it is hashed.
        let moved = dir.path().join("q");
        std::fs::rename(&root, &moved).unwrap();
        let err = own_inputs(&settings, &loaded, &compiled).err().unwrap();
        let context = root.join(&loaded.manifest.targets["a"].context);
        let walk = kiln_fsutil::walk(&context, &kiln_fsutil::Filter::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read the context {}: {walk}", context.display())
        );
        assert_eq!(err.exit_code(), 1);
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
