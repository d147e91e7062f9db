//! kiln's commands as library functions: find and read the manifests, then check or plan them.
//! The CLI crate parses arguments into [`Settings`] and calls these; everything a command prints
//! is returned as data so it can be tested without a terminal.

mod build;
mod builder;
mod discover;
mod engine;
mod error;
mod git;
mod images;
mod paths;
mod plan;
mod progress;
mod refresh;

pub use build::{BuildOptions, Built, Goal, HOST_CA_BUNDLE, Progress, build};
pub use builder::BuilderOptions;
pub use discover::discover_manifests;
pub use engine::{engine_down, engine_status, engine_up};
pub use error::AppError;
pub use images::{Inputs, build_images, kiln_lock_path};
pub use kiln_graph::PackagesMode;
pub use plan::{PlanFormat, marshal_all, plan, plan_llb};
pub use progress::{ProgressFormat, Renderer};
pub use refresh::{RefreshOptions, refresh};

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
}

/// Manifests read, resolved and laid out as a graph.
pub struct Loaded {
    pub files: Vec<PathBuf>,
    pub manifest: Manifest,
    pub graph: Graph,
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
        let text = std::fs::read_to_string(&full).map_err(|source| AppError::Io {
            path: path.clone(),
            action: "read manifest",
            source,
        })?;
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
    let manifest = kiln_manifest::load(&sources, &options).map_err(AppError::Manifest)?;
    let graph = Graph::build(&manifest, mode).map_err(AppError::Graph)?;
    Ok(Loaded {
        files,
        manifest,
        graph,
    })
}

/// `kiln check`: everything `load` checks, plus that every path the manifests name exists.
/// Returns a one-line summary on success.
pub fn check(settings: &Settings) -> Result<String, AppError> {
    let loaded = load(settings, PackagesMode::Pinned)?;
    let problems = paths::check_paths(&settings.cwd, &loaded.manifest);
    if !problems.is_empty() {
        return Err(AppError::Manifest(kiln_manifest::Diagnostics(problems)));
    }
    let targets = loaded.manifest.targets.len();
    let files = loaded.files.len();
    Ok(format!(
        "ok: {targets} target{} in {files} manifest{}",
        if targets == 1 { "" } else { "s" },
        if files == 1 { "" } else { "s" }
    ))
}
