//! `kiln build` and `kiln smoke-test` around the solve: skip targets that are up to date,
//! and record what was built in `kiln.lock`.
//!
//! A target's inputs hash covers what decides its image: the LLB of its image and smoke-test
//! stages as planned offline (the manifest entry after profile and vars: base reference, run
//! steps, copies, package commands, config), the content of every context file those stages
//! read (package files, lock files, copied files, tests), the inputs of the targets it builds
//! on, and its base image as pinned in `kiln.lock`. A target is up to date when that hash
//! equals the one `kiln.lock` recorded, its base is pinned, and the engine still has the
//! recorded image under the target's name. An unpinned base always solves.
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

/// The inputs of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub hash: String,
    /// Whether every base image it rests on is pinned in `kiln.lock`.
    pub pinned: bool,
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
pub fn own_inputs(
    settings: &Settings,
    loaded: &Loaded,
    compiled: &[CompiledTarget],
) -> Result<BTreeMap<String, Sha256>, AppError> {
    let mut out = BTreeMap::new();
    for target in compiled {
        let manifest_target = &loaded.manifest.targets[&target.name];
        let mut h = Sha256::new();
        h.update(b"kiln-inputs/1\n");
        for kind in [StageKind::SmokeTest, StageKind::Image] {
            if let Some(digest) = target.stage(kind).and_then(|s| s.digest()) {
                h.update(format!("{}={digest}\n", kind.as_str()));
            }
        }
        h.update(target.config.to_json());
        h.update(b"\n");
        let context = settings.cwd.join(&manifest_target.context);
        hash_context(
            &mut h,
            &context,
            &target.context_includes,
            &loaded.lock_path,
        )?;
        out.insert(target.name.clone(), h);
    }
    Ok(out)
}

/// The inputs of every compiled target (compiled in dependency order): its own part, its
/// dependencies' inputs and its base as `lock` pins it.
pub fn inputs(
    loaded: &Loaded,
    compiled: &[CompiledTarget],
    own: &BTreeMap<String, Sha256>,
    lock: &KilnLock,
) -> BTreeMap<String, Inputs> {
    let mut out: BTreeMap<String, Inputs> = BTreeMap::new();
    for target in compiled {
        let manifest_target = &loaded.manifest.targets[&target.name];
        let mut h = own[&target.name].clone();
        let mut pinned = true;
        for dep in loaded.graph.depends_on(&target.name) {
            let dep = &out[dep];
            h.update(format!("dep={}\n", dep.hash));
            pinned &= dep.pinned;
        }
        if let Base::Image(reference) = &manifest_target.from {
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
        out.insert(target.name.clone(), Inputs { hash, pinned });
    }
    out
}

/// Path, mode and content of every context file matching `includes` (minus the context's
/// ignore files), in walk order.
fn hash_context(
    h: &mut Sha256,
    context: &Path,
    includes: &[String],
    kiln_lock: &Path,
) -> Result<(), AppError> {
    if includes.is_empty() {
        return Ok(());
    }
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
        h.update(format!(
            "{}\0{:o}\0{}\0",
            entry.path_rel, entry.stat.mode, entry.stat.linkname
        ));
        if entry.is_requestable() {
            let data = std::fs::read(&entry.abs).map_err(|source| AppError::Io {
                path: entry.abs.clone(),
                action: "read",
                source,
            })?;
            h.update(Sha256::digest(&data));
        }
        h.update(b"\n");
    }
    Ok(())
}

/// `kiln build` / `kiln smoke-test`: solve what is not up to date, then (for `build`) record
/// the images in `kiln.lock`. Returns one line per target.
pub fn build_images(
    settings: &Settings,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, AppError> {
    let loaded = load(settings, PackagesMode::Pinned)?;
    let (selected, compiled) = loaded.compile(&options.targets)?;
    let lock_path = loaded.lock_path.clone();
    let lock = loaded.lock.clone();
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

    let mut out = String::new();
    // With --push, images are pushed even when up to date (a push of what the registry has is
    // cheap, and the recorded digest is verified again).
    if options.goal == Goal::Image && !options.force && !options.push && options.output.is_none() {
        let fresh: Vec<&String> = selected
            .iter()
            .filter(|t| up_to_date(t, &loaded, &lock, &inputs, store.as_ref()))
            .collect();
        if fresh.len() == selected.len() {
            for t in &selected {
                let recorded = lock.target(t).expect("up to date means recorded");
                out.push_str(&format!(
                    "{t}: {} ({}) up to date\n",
                    recorded.image.as_deref().unwrap_or("-"),
                    recorded.image_id.as_deref().unwrap_or("-")
                ));
            }
            return Ok(out);
        }
    }

    let built = crate::build::build_loaded(settings, &loaded, options, progress)?;
    for b in &built {
        out.push_str(&built_line(options.goal, b));
    }
    // A failed push stops here: kiln.lock records nothing.
    let pushed = if options.push && options.output.is_none() {
        push_all(settings, &built, store.as_ref(), &mut out)?
    } else {
        BTreeMap::new()
    };
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
        // Inputs again: the bases just pinned are part of them.
        let inputs = self::inputs(&loaded, &compiled, &own, &lock);
        for b in &built {
            if b.stored == Stored::BuilderCache {
                // Nothing anyone can check: what kiln.lock says of the target stays as it was.
                continue;
            }
            let before = lock.target(&b.target);
            // A new image id means a new image: an old push digest no longer describes it.
            let kept = before
                .filter(|t| t.image_id == b.image_id)
                .and_then(|t| t.digest.clone());
            let digest = pushed.get(&b.target).cloned().or(kept);
            lock.set_target(kiln_lock::Target {
                name: b.target.clone(),
                image: b.image.clone(),
                image_id: b.image_id.clone(),
                digest,
                inputs: inputs[&b.target].hash.clone(),
            });
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
    Ok(out)
}

/// What `kiln build` says of one built target: where its image is, truthfully. An image only
/// in a standalone buildkitd's cache gets a warning, never an image id (there is none anyone
/// could use); a pushed one is reported by the push.
fn built_line(goal: Goal, b: &crate::Built) -> String {
    let t = &b.target;
    match (goal, &b.output, &b.image, &b.image_id, &b.stored) {
        (Goal::SmokeTest, ..) => format!("{t}: smoke test passed\n"),
        (_, Some(dir), ..) => format!("{t}: exported to {}\n", dir.display()),
        (_, None, Some(image), Some(id), Stored::Loaded { socket }) => format!(
            "{t}: {image} ({id}), loaded into the Docker Engine at unix://{}\n",
            socket.display()
        ),
        (_, None, Some(image), Some(id), Stored::Engine) => format!("{t}: {image} ({id})\n"),
        // `push_all` says where it went.
        (_, None, Some(_), _, Stored::Registry) => String::new(),
        (_, None, Some(image), _, Stored::BuilderCache) => format!(
            "warning: {t}: {image} is only in the builder's cache (a standalone buildkitd \
             keeps no image store kiln can use); --load loads it into the Docker Engine, \
             --push pushes it to its registry\n"
        ),
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
        let digest = match (&b.pushed, engine) {
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
    let mut delay = std::time::Duration::from_secs(1);
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
        if refused || attempt == 3 {
            let hint = if refused {
                "\n  hint: log in with `docker login` (kiln reads ~/.docker/config.json)"
            } else {
                ""
            };
            return Err(AppError::Build(format!(
                "push of {image} failed (attempt {attempt} of 3): {error}{hint}"
            )));
        }
        std::thread::sleep(delay);
        delay *= 2;
        attempt += 1;
    }
}

/// The Docker Engine API when the builder is a Docker Engine (to check and pin local images).
fn docker_api(settings: &Settings) -> Result<Option<kiln_docker::Api>, AppError> {
    let (endpoint, _) = crate::builder::choose(settings)?;
    Ok(match endpoint {
        kiln_buildkit::Endpoint::Docker { socket } => Some(kiln_docker::Api::new(socket)),
        _ => None,
    })
}

fn up_to_date(
    target: &str,
    loaded: &Loaded,
    lock: &KilnLock,
    inputs: &BTreeMap<String, Inputs>,
    engine: Option<&kiln_docker::Api>,
) -> bool {
    let (Some(recorded), Some(now), Some(engine)) =
        (lock.target(target), inputs.get(target), engine)
    else {
        return false;
    };
    if !now.pinned || recorded.inputs != now.hash {
        return false;
    }
    // Every local base still the image that was pinned.
    if let Base::Image(reference) = &loaded.manifest.targets[target].from {
        let name = reference.without_digest().to_string();
        if let Some(pinned) = lock.base(&name).and_then(|b| b.image_id.clone()) {
            let current = engine
                .image(&reference.to_string())
                .ok()
                .flatten()
                .map(|i| i.id);
            if current.as_deref() != Some(pinned.as_str()) {
                return false;
            }
        }
    }
    match (&recorded.image, &recorded.image_id) {
        (Some(image), Some(id)) => engine
            .image(image)
            .ok()
            .flatten()
            .is_some_and(|i| &i.id == id),
        _ => false,
    }
}

/// `path` relative to the working directory, for messages.
pub(crate) fn relative(settings: &Settings, path: &Path) -> PathBuf {
    let path = path
        .strip_prefix(&settings.cwd)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf());
    // `manifests/../examples/x` → `examples/x`.
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Built;

    #[test]
    fn each_image_is_reported_where_it_is() {
        let built = |stored: Stored, id: Option<&str>| Built {
            target: "hello".into(),
            image: Some("docker.io/x/hello:1".into()),
            image_id: id.map(str::to_string),
            stored,
            ..Built::default()
        };
        let engine = built_line(Goal::Image, &built(Stored::Engine, Some("sha256:1")));
        assert_eq!(engine, "hello: docker.io/x/hello:1 (sha256:1)\n");
        let loaded = built_line(
            Goal::Image,
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
        // Only in a buildkitd's cache: a warning that says so, no image id, nothing claimed.
        let cached = built_line(Goal::Image, &built(Stored::BuilderCache, None));
        assert!(
            cached
                .starts_with("warning: hello: docker.io/x/hello:1 is only in the builder's cache"),
            "{cached}"
        );
        assert!(
            cached.contains("--load") && !cached.contains("sha256"),
            "{cached}"
        );
        assert_eq!(built_line(Goal::Image, &built(Stored::Registry, None)), "");
    }
}
