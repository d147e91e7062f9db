//! kiln's commands as library functions: find and read the manifests, then check or plan them.
//! The CLI crate parses arguments into [`Settings`] and calls these; everything a command prints
//! is returned as data so it can be tested without a terminal. What the settings say beyond the
//! manifests (builder, TLS, Docker config, state directory, …) is resolved once per command
//! ([`Resolved`]), and all async work runs on one tokio runtime per process.

mod affected;
mod archive;
mod artifacts;
mod attest;
mod build;
mod builder;
mod discover;
mod engine;
mod error;
mod git;
mod history;
mod labels;
mod metadata;
mod paths;
mod pin;
mod plan;
mod refresh;
mod resolved;
mod runtime;
mod sbom;
mod solve;
mod trace;
mod trust;

pub use affected::{AffectedOptions, affected};
pub use build::{build_images, build_images_report};
pub use builder::BuilderOptions;
pub use discover::discover_manifests;
pub use engine::{engine_down, engine_status, engine_up};
pub use error::{AppError, LocalImage};
pub use kiln_buildkit::Event;
pub use kiln_graph::PackagesMode;
pub use kiln_record::{Inputs, kiln_lock_path};
pub use kiln_reference::Reference;
pub use kiln_solve::{
    BuildOptions, Built, Goal, HOST_CA_BUNDLE, Outcome, Progress, SolveError, Stored,
    cache_repository,
};
pub use metadata::{Metadata, Steps};
pub use pin::{PinOptions, pin};
pub use plan::{PlanFormat, marshal_all, plan, plan_llb};
pub use refresh::{RefreshOptions, refresh};
pub use resolved::{Resolved, ResolvedOnce};
pub use sbom::sbom;
pub use solve::build;
pub use trace::{Trace, TraceOptions, trace};

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_graph::Graph;
use kiln_manifest::{LoadOptions, Manifest, Source};

/// What every command needs to find and resolve the manifests.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `-f/--file`, in order; empty means discover.
    pub files: Vec<PathBuf>,
    /// Directory the command runs in.
    pub cwd: PathBuf,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--set K=V`, in order (a later one wins).
    pub set: Vec<(String, String)>,
    /// The process environment.
    pub env: BTreeMap<String, String>,
    /// `--builder` and its TLS files.
    pub builder: BuilderOptions,
    /// Where commands leave warnings for the caller to print (on stderr).
    pub warnings: Warnings,
    /// `--allow fs.read=PATH`: local paths outside their repository the manifests may read.
    pub allow_read: Vec<PathBuf>,
    /// The builder, TLS files, Docker config, insecure registries and state directory, resolved
    /// from the fields above once, on first use ([`Settings::resolved`]): leave it `Default`,
    /// and change no field once a command has used the settings.
    pub resolved: ResolvedOnce,
}

/// Problems that do not stop a command, e.g. a profile override that rewrites nothing; the
/// caller prints them. Clones share one list.
#[derive(Debug, Clone, Default)]
pub struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    /// Add `warning` unless it is there already (a command may load the manifests twice).
    pub fn push(&self, warning: String) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !list.contains(&warning) {
            list.push(warning);
        }
    }

    /// The warnings so far, in the order found; the list is emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Manifests read, resolved and laid out as a graph.
pub struct Loaded {
    pub files: Vec<PathBuf>,
    /// Resolved, with the image references `kiln.lock` pins carrying their digest.
    pub manifest: Manifest,
    pub graph: Graph,
    /// `kiln.lock` as committed (empty when there is none yet), and where it lives.
    pub lock: kiln_lock::KilnLock,
    pub lock_path: PathBuf,
}

impl Loaded {
    /// Select `names` (targets or groups; empty: the default group, else all) with what they
    /// depend on, in DAG order, and lower them to LLB.
    pub fn compile(
        &self,
        names: &[String],
    ) -> Result<(Vec<String>, Vec<kiln_compile::CompiledTarget>), AppError> {
        let selected = self.graph.select(&self.manifest, names)?;
        let compiled = kiln_compile::compile(
            &self.manifest,
            &self.graph,
            &selected,
            &kiln_compile::BaseConfigs::new(),
            None,
        )?;
        Ok((selected, compiled))
    }
}

/// Read, parse, validate and lay out the manifests named by `settings`.
pub fn load(settings: &Settings, mode: PackagesMode) -> Result<Loaded, AppError> {
    let files = discover_manifests(&settings.cwd, &settings.files)?;
    let mut sources = Vec::with_capacity(files.len());
    for path in &files {
        let full = settings.cwd.join(path);
        let bytes = std::fs::read(&full).map_err(|source| AppError::Io {
            path: path.clone(),
            action: "read manifest",
            source,
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|e| AppError::Manifest(not_utf8(path, e.as_bytes(), e.utf8_error())))?;
        sources.push(Source {
            path: path.clone(),
            text,
        });
    }
    let options = LoadOptions {
        profile: settings.profile.clone(),
        set: settings.set.iter().cloned().collect(),
        env: settings.env.clone(),
    };
    let mut manifest = kiln_manifest::load(&sources, &options).map_err(AppError::Manifest)?;
    for warning in &manifest.warnings {
        settings.warnings.push(warning.to_string());
    }
    // Before anything reads a context or bundle, and before any solve.
    let outside = trust::check_reads(settings, &manifest);
    if !outside.is_empty() {
        return Err(AppError::Manifest(kiln_manifest::Diagnostics(outside)));
    }
    let graph = Graph::build(&manifest, mode).map_err(AppError::Graph)?;
    let lock_path = kiln_record::kiln_lock_path(&settings.cwd, &files);
    let lock = kiln_record::read_kiln_lock(&kiln_record::Disk, &lock_path)?;
    apply_pins(&mut manifest, &lock);
    Ok(Loaded {
        files,
        manifest,
        graph,
        lock,
        lock_path,
    })
}

/// Where a manifest stops being UTF-8: its line and column (in characters), and the bytes.
fn not_utf8(
    path: &std::path::Path,
    bytes: &[u8],
    e: std::str::Utf8Error,
) -> kiln_manifest::Diagnostics {
    let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
    // Valid by construction: the error says so up to here.
    let before = String::from_utf8_lossy(valid);
    let (line, column) = kiln_manifest::line_column(&before, before.len());
    let bad = bytes
        .get(e.valid_up_to()..e.valid_up_to() + e.error_len().unwrap_or(1))
        .unwrap_or_default()
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    kiln_manifest::Diagnostics(vec![kiln_manifest::Diagnostic {
        location: kiln_manifest::Location {
            file: path.to_path_buf(),
            line,
            column,
        },
        key: String::new(),
        message: format!("byte {bad} is not valid UTF-8"),
        expected: Some("a UTF-8 text file (TOML is UTF-8)".to_string()),
        hint: None,
    }])
}

/// Every image reference (bases and copy sources) that `kiln.lock` pins becomes
/// `reference@digest`, so a moved tag changes nothing until `kiln pin --update`.
fn apply_pins(manifest: &mut Manifest, lock: &kiln_lock::KilnLock) {
    let pin = |reference: &mut kiln_reference::Reference| {
        if reference.digest().is_none() {
            // kiln-lock validated every digest it read.
            if let Some(Ok(pinned)) = lock
                .base(&reference.to_string())
                .and_then(|b| b.digest.as_deref())
                .map(|digest| reference.with_digest(digest))
            {
                *reference = pinned;
            }
        }
    };
    for target in manifest.targets.values_mut() {
        if let kiln_manifest::Base::Image(reference) = &mut target.from {
            pin(reference);
        }
        for copy in &mut target.copy {
            if let kiln_manifest::CopySource::Image(reference) = &mut copy.from {
                pin(reference);
            }
        }
    }
}

/// `kiln check`: everything `load` checks, plus that every path the manifests name exists.
/// Returns a one-line summary on success.
pub fn check(settings: &Settings, locked: bool) -> Result<String, AppError> {
    let loaded = load(settings, PackagesMode::Pinned)?;
    let recovered = git::recover(&settings.cwd)?.map(|m| format!("note: {m}\n"));
    let mut problems = paths::check_paths(&settings.cwd, &loaded.manifest);
    problems.extend(artifacts::check(&settings.cwd, &loaded.manifest));
    if !problems.is_empty() {
        return Err(AppError::Manifest(kiln_manifest::Diagnostics(problems)));
    }
    if locked {
        let problems = locked_problems(settings, &loaded)?;
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(|p| format!("error: {p}")).collect();
            return Err(AppError::Locked(lines.join("\n")));
        }
    }
    let targets = loaded.manifest.targets.len();
    let files = loaded.files.len();
    Ok(format!(
        "{}ok: {targets} target{} in {files} manifest{}{}",
        recovered.unwrap_or_default(),
        if targets == 1 { "" } else { "s" },
        if files == 1 { "" } else { "s" },
        if locked {
            ", every base pinned and every target as kiln.lock recorded"
        } else {
            ""
        }
    ))
}

/// `kiln check --locked`: every base image pinned to a digest, every target's inputs what
/// `kiln.lock` recorded at its last build, every lock file pinning what its package files
/// declare.
fn locked_problems(settings: &Settings, loaded: &Loaded) -> Result<Vec<String>, AppError> {
    let lock_file = build::relative(settings, &loaded.lock_path);
    let lock_file = lock_file.display();
    let mut problems = Vec::new();
    let all: Vec<String> = loaded.manifest.targets.keys().cloned().collect();
    let (_, compiled) = loaded.compile(&all)?;
    let own = build::own_inputs(settings, loaded, &compiled)?;
    let inputs = kiln_record::inputs(&own, &loaded.lock);
    let engine = build::docker_api(settings)?;
    for (name, target) in &loaded.manifest.targets {
        if let kiln_manifest::Base::Image(reference) = &target.from {
            let key = reference.without_digest();
            let base = loaded.lock.base(&key.to_string());
            let by_id = base
                .filter(|b| b.digest.is_none())
                .and_then(|b| b.image_id.as_deref());
            match (base.and_then(|b| b.digest.as_ref()), by_id, &engine) {
                (Some(_), ..) => {}
                // Pinned by the engine's image id: only for an image no registry has.
                (None, Some(id), Some(api)) => match api.image(&key.to_string()) {
                    Ok(Some(image)) if !pin::only_local(&image, &key) => problems.push(format!(
                        "target `{name}`: base {key} has no digest in {lock_file} (the engine's image came from a registry); run `kiln pin`"
                    )),
                    Ok(Some(image)) if image.id != id => problems.push(format!(
                        "target `{name}`: base {key} is pinned by the engine's image id {id} in {lock_file}, but the engine now has {} under that name; run `kiln pin --update`",
                        image.id
                    )),
                    Ok(Some(_)) => {}
                    Ok(None) => problems.push(format!(
                        "target `{name}`: base {key} is pinned by the engine's image id {id} in {lock_file}, but the engine has no image of that name; build or import it"
                    )),
                    Err(e) => problems.push(format!(
                        "target `{name}`: base {key} is pinned by the engine's image id; cannot check it: {e}"
                    )),
                },
                _ => problems.push(format!(
                    "target `{name}`: base {key} has no digest in {lock_file}; run `kiln pin`"
                )),
            }
        }
        let profile = settings.profile.as_deref();
        // How to build the target as it is checked: with the same profile.
        let build = match profile {
            Some(p) => format!("kiln build --profile {p} {name}"),
            None => format!("kiln build {name}"),
        };
        match loaded.lock.target(name, profile) {
            None => problems.push(format!(
                "target `{name}`: not in {lock_file}{}; run `{build}`",
                profile
                    .map(|p| format!(" for profile `{p}`"))
                    .unwrap_or_default()
            )),
            Some(recorded) if recorded.inputs != inputs[name].hash => {
                let which = match kiln_record::changed_parts(
                    target,
                    &recorded.parts,
                    &inputs[name].parts,
                ) {
                    Some(parts) if !parts.is_empty() => parts.join(", "),
                    _ => "manifest entry, package or lock files, copied files, or base pin"
                        .to_string(),
                };
                problems.push(format!(
                    "target `{name}`: its inputs changed since {lock_file} was written: {which}; run `{build}`"
                ))
            }
            Some(_) => {}
        }
        // The name is not part of the inputs (it is not part of the image), but a pipeline
        // that pushes or deploys it needs the image tagged as it now resolves.
        if let Some(recorded) = loaded.lock.target(name, profile) {
            let now = target.image.as_ref().map(ToString::to_string);
            if recorded.image != now {
                let show = |i: &Option<String>| i.clone().unwrap_or_else(|| "no name".to_string());
                problems.push(format!(
                    "target `{name}`: its image name changed since {lock_file} was written ({} → {}); run `{build}`",
                    show(&recorded.image),
                    show(&now)
                ));
            }
        }
        if let Some(packages) = &target.packages {
            let context = settings.cwd.join(&target.context);
            for lock in &packages.lock {
                let Some(format) = packages.lock_format(lock) else {
                    continue;
                };
                let path = context.join(lock);
                let Ok(text) = std::fs::read_to_string(&path) else {
                    problems.push(format!(
                        "target `{name}`: {} is missing; run `kiln refresh {name}`",
                        build::relative(settings, &path).display()
                    ));
                    continue;
                };
                let pins = match kiln_lock::pins(format, &text) {
                    Ok(pins) => pins,
                    Err(e) => {
                        problems.push(format!("target `{name}`: {e}"));
                        continue;
                    }
                };
                let pip = packages.manager == kiln_manifest::Manager::Pip;
                for file in &packages.files {
                    let Ok(declared_text) = std::fs::read_to_string(context.join(file)) else {
                        continue;
                    };
                    let Some(declared) = kiln_lock::declared(file, &declared_text, pip) else {
                        continue;
                    };
                    let declared = declared?;
                    let missing = kiln_lock::unlocked(&declared, &pins);
                    if !missing.is_empty() {
                        problems.push(format!(
                            "target `{name}`: {} declares {} but {lock} does not pin {}; run `kiln refresh {name}`",
                            file,
                            missing.join(", "),
                            if missing.len() == 1 { "it" } else { "them" }
                        ));
                    }
                }
            }
        }
    }
    Ok(problems)
}
