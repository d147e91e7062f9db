//! What a solve is asked to do and what it reports: the options, each target's result, the
//! progress events and the outcome a command reports per target.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_buildkit::{Event, Transfer};
use kiln_reference::Reference;

/// What a run is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Goal {
    /// `kiln build`: pinned packages, smoke test, then the image.
    #[default]
    Image,
    /// `kiln smoke-test`: pinned packages and the smoke test only.
    SmokeTest,
    /// `kiln refresh`: re-resolve packages, smoke-test the result and read the new lock files
    /// out of it (nothing is exported).
    Refresh,
}

/// `kiln build` options.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Targets or groups (empty: the default group, else everything).
    pub targets: Vec<String>,
    /// Export the filesystem of each target named in `targets` (or of the default selection,
    /// not the dependencies it pulls in) into `DIR/<target>` — into `DIR` itself when that is
    /// one target — instead of the image store. Dependencies are built, and stay in the cache.
    pub output: Option<PathBuf>,
    pub goal: Goal,
    /// Solve even what `kiln.lock` says is up to date.
    pub force: bool,
    /// Push each image to its registry and record the pushed digest.
    pub push: bool,
    /// `--stamp`: label images with the git commit and its time (see `labels`).
    pub stamp: bool,
    /// Labels to add to each target's image config (by target), under the manifest's own;
    /// `build_images` fills them in (see `labels`).
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Load each image into the Docker Engine (`DOCKER_HOST`, else the default socket): a
    /// standalone buildkitd streams it there; the engine's own BuildKit stores it there anyway.
    pub load: bool,
    /// Save each named target's image as a `docker load`-able tarball: this file for one
    /// target, `DIR/TARGET.tar` for several.
    pub output_image: Option<PathBuf>,
    /// `--cache REF`: the registry repository each target's build cache is exported to (as
    /// `REF:<target>`) and imported from; wins over `[defaults] cache`.
    pub cache: Option<Reference>,
    /// Run every step of the selected targets again, without BuildKit's cache (`--no-cache`).
    pub no_cache: bool,
    /// Write the build's metadata (kiln-app's `Metadata`, JSON) here, atomically, also when
    /// it fails.
    pub metadata_file: Option<PathBuf>,
}

/// What happened to one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    pub target: String,
    /// The image name it was loaded as, if any.
    pub image: Option<String>,
    /// Docker's image id (the config digest), when loaded into the image store.
    pub image_id: Option<String>,
    /// The directory it was exported to (`BuildOptions::output`).
    pub output: Option<PathBuf>,
    /// What the daemon pulled from the build context for this target (only changed files
    /// travel on a rebuild).
    pub context: Transfer,
    /// `Goal::Refresh`: each lock file (as the manifest names it) as the refresh wrote it.
    pub locks: BTreeMap<String, Vec<u8>>,
    /// The base image and the manifest digest the engine resolved it to (none for an image
    /// only in the engine's local store, or a `target:` base).
    pub base: Option<(String, Option<String>)>,
    /// The manifest digest the image was pushed as (`BuildOptions::push`).
    pub pushed: Option<String>,
    /// Where the image is now.
    pub stored: Stored,
    /// The builder it was built on, when the build used several.
    pub builder: Option<String>,
    /// `Stored::Engine`: the socket of the Docker Engine whose image store has it.
    pub engine: Option<PathBuf>,
}

/// Where a built image is, as far as kiln can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stored {
    /// No image: a smoke test, a refresh, a target without `image`, an export to a directory.
    #[default]
    Nothing,
    /// In the image store of the Docker Engine whose BuildKit built it (the `moby` exporter).
    Engine,
    /// Streamed from a standalone buildkitd and loaded into the Docker Engine at `socket`.
    Loaded { socket: PathBuf },
    /// Pushed to its registry by a standalone buildkitd (`Built::pushed`), in no image store.
    Registry,
    /// Built by a standalone buildkitd, whose image store kiln cannot use: it is only in the
    /// builder's cache.
    BuilderCache,
}

/// Something to show while building.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A stage starts solving.
    Stage { target: String, stage: &'static str },
    /// An event from BuildKit about that stage.
    Engine {
        target: String,
        stage: &'static str,
        event: Event,
    },
    /// A stage finished solving, successfully or not.
    Finished {
        target: String,
        stage: &'static str,
        ok: bool,
    },
    /// What became of a target: the last event about it.
    Target(Outcome),
    /// Something the user should know that is not an error.
    Warning {
        target: Option<String>,
        message: String,
    },
}

/// The end result of one target of a command, as reported in the last progress event about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    pub target: String,
    /// `built`, `up-to-date`, `tagged` (up to date under a new name: tagged, not solved),
    /// `smoke-tested`, `exported`, `refreshed`, or `cache-only` (built by a standalone
    /// buildkitd, but in no image store and not pushed: `--load`, `--push`); in the metadata
    /// of a failed build also `failed` and `skipped` (see `metadata`).
    pub status: &'static str,
    /// The image name, when the target has one.
    pub image: Option<String>,
    /// The image id (config digest) in the engine's image store.
    pub image_id: Option<String>,
    /// The manifest digest the registry serves for the pushed image.
    pub pushed: Option<String>,
    /// Where the filesystem was exported (`--output`).
    pub output: Option<PathBuf>,
    /// The `docker load`-able archive the image was saved as (`--output-image`).
    pub archive: Option<Archive>,
    /// The builder it was solved on (none when it was not solved).
    pub builder: Option<String>,
    /// How many of its steps BuildKit solved and how many it took from the cache.
    pub steps: Steps,
    /// From its first solve to its outcome (0 when it was not solved).
    pub duration_ms: u64,
    /// Why it failed (`failed`).
    pub error: Option<String>,
}

/// Steps of one target's solves: each distinct vertex once, solved if BuildKit ran it in any of
/// the target's jobs, cached if it only ever came from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Steps {
    pub solved: usize,
    pub cached: usize,
}

/// Where an image was saved and the sha256 of the archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Archive {
    pub path: PathBuf,
    pub digest: String,
    pub bytes: u64,
}
