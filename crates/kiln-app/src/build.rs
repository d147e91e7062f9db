//! `kiln build`: resolve the base images' configs, then solve every selected target on
//! BuildKit in DAG order (independent targets concurrently; those found up to date are left
//! out) — its smoke test first when it has one, then its image (one job on Docker's BuildKit,
//! two on a buildkitd) under the target's `image` name with its image config (base config with
//! the manifest's `config` over it): into the Docker Engine's image store when the builder is
//! the engine's BuildKit; from a standalone buildkitd streamed into the Docker Engine
//! (`BuildOptions::load`), pushed by it (`BuildOptions::push`), or else only in its cache; or
//! exported to a directory with the local exporter (`BuildOptions::output`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kiln_buildkit::{
    Client, Endpoint, Event, FileOutput, LocalDir, ResolveMode, Returned, Session, SessionConfig,
    SolveRequest, Transfer,
};
use kiln_compile::{BaseConfigs, CompiledTarget, EffectiveConfig};
use kiln_graph::{PackagesMode, StageKind};
use kiln_manifest::{Base, CaCertificates, Manifest, NetworkMode};
use kiln_reference::Reference;
use tokio::sync::mpsc;

use crate::{AppError, Loaded, Settings, load};

/// The host's CA bundle on Debian.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

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
    /// Write the build's [`crate::Metadata`] (JSON) here, atomically, also when it fails.
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
    pub archive: Option<crate::archive::Archive>,
    /// The builder it was solved on (none when it was not solved).
    pub builder: Option<String>,
    /// How many of its steps BuildKit solved and how many it took from the cache.
    pub steps: crate::metadata::Steps,
    /// From its first solve to its outcome (0 when it was not solved).
    pub duration_ms: u64,
    /// Why it failed (`failed`).
    pub error: Option<String>,
}

/// Build the selected targets, calling `progress` as things happen.
pub fn build(
    settings: &Settings,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Built>, AppError> {
    let mode = match options.goal {
        Goal::Refresh => PackagesMode::Refresh,
        Goal::Image | Goal::SmokeTest => PackagesMode::Pinned,
    };
    let loaded = load(settings, mode)?;
    build_loaded(settings, &loaded, options, progress)
}

/// [`build`] of manifests already loaded (in the packages mode `options.goal` needs).
pub(crate) fn build_loaded(
    settings: &Settings,
    loaded: &Loaded,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Built>, AppError> {
    build_loaded_except(settings, loaded, options, &Default::default(), progress)
}

/// [`build_loaded`] that solves none of the targets in `fresh` (up to date: their images are
/// where `kiln.lock` says); a target that builds on one is solved as usual, its LLB holding the
/// fresh one's.
pub(crate) fn build_loaded_except(
    settings: &Settings,
    loaded: &Loaded,
    options: &BuildOptions,
    fresh: &std::collections::BTreeSet<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Built>, AppError> {
    let selected = loaded.graph.select(&loaded.manifest, &options.targets)?;
    if options.goal == Goal::Refresh {
        check_refreshable(&loaded.manifest, &options.targets, &selected)?;
    }
    let endpoints = settings.resolved().builders()?.to_vec();
    let docker = if options.load {
        Some(settings.resolved().docker_socket()?.to_path_buf())
    } else {
        None
    };
    let (cache, cache_auth) = remote_cache(settings, &loaded.manifest, &selected, options)?;
    // Zip artifacts are unpacked here and served as local sources until the build ends.
    let artifacts = crate::artifacts::unpack(settings, &loaded.manifest, &selected)?;
    let job = Job {
        docker,
        exported: match options.output {
            Some(_) => kiln_graph::Graph::named(&loaded.manifest, &options.targets)?,
            None => Default::default(),
        },
        config: artifacts.serve(session_config(
            settings,
            &loaded.manifest,
            &selected,
            &loaded.lock_path,
        )?),
        entitlements: entitlements(&loaded.manifest, &selected),
        cache,
        cache_auth,
        endpoints,
        cwd: settings.cwd.clone(),
        loaded,
        selected: &selected,
        fresh,
        options,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Ctrl-C drops the in-flight solves, which cancels their gRPC calls and so the jobs.
    crate::runtime::block_on(async {
        let work = job.run(tx);
        tokio::pin!(work);
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                result = &mut work => {
                    while let Ok(p) = rx.try_recv() {
                        progress(p);
                    }
                    break result;
                }
                Some(p) = rx.recv() => progress(p),
                _ = &mut interrupted => break Err(AppError::Interrupted),
            }
        }
    })?
}

/// One `kiln build`: what every target's solves share.
struct Job<'a> {
    /// The Docker Engine's socket, for `--load`.
    docker: Option<PathBuf>,
    config: SessionConfig,
    entitlements: Vec<String>,
    /// The builders, in the order given (one, or a pool).
    endpoints: Vec<Endpoint>,
    cwd: PathBuf,
    loaded: &'a Loaded,
    selected: &'a [String],
    /// Up to date: not solved.
    fresh: &'a std::collections::BTreeSet<String>,
    /// With `BuildOptions::output`: the targets to export (what was named, not dependencies).
    exported: std::collections::BTreeSet<String>,
    /// Per target with a remote cache: its reference (`REPO:<target>`).
    cache: BTreeMap<String, String>,
    /// Per cache reference: the registry credentials to push it with (Docker Engine).
    cache_auth: BTreeMap<String, String>,
    options: &'a BuildOptions,
}

type Events = mpsc::UnboundedSender<Progress>;

impl Job<'_> {
    /// Resolve the base images' configs, lower the targets with them, then build every target
    /// once the targets it depends on are built; independent targets build concurrently. With
    /// several builders, each target builds on the one [`home`] gives it; when a builder stops
    /// answering, its unfinished targets move to the next one that does.
    async fn run(&self, tx: Events) -> Result<Vec<Built>, AppError> {
        let pool = self.connect_pool(&tx).await?;
        let Some(first) = pool.iter().flatten().next() else {
            return Err(AppError::Build("no builder answers".to_string()));
        };
        let (bases, digests) = self.resolve_bases(&first.client, &tx).await?;
        let manifest = &self.loaded.manifest;
        // Concurrent builds of other working trees must not share this tree's contexts.
        let unique = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(self.cwd.to_string_lossy().as_bytes())[..12])
        };
        let compiled = kiln_compile::compile(
            manifest,
            &self.loaded.graph,
            self.selected,
            &bases,
            Some(&unique),
        )?;

        let graph = &self.loaded.graph;
        let mut alive: Vec<bool> = pool.iter().map(Option::is_some).collect();
        let mut assigned: BTreeMap<String, usize> = home(graph, self.selected, pool.len())
            .into_iter()
            .map(|(t, i)| (t, next_alive(&alive, i).unwrap_or(i)))
            .collect();
        let mut waiting: Vec<&CompiledTarget> = compiled
            .iter()
            .filter(|t| !self.fresh.contains(&t.name))
            .collect();
        let mut built: BTreeMap<String, Built> = BTreeMap::new();
        let mut running = FuturesUnordered::new();
        loop {
            let (ready, rest): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|t| {
                graph
                    .depends_on(&t.name)
                    .iter()
                    .all(|d| built.contains_key(*d) || self.fresh.contains(*d))
            });
            waiting = rest;
            for target in ready {
                let i = assigned.get(&target.name).copied().unwrap_or(0);
                let Some(Some(member)) = pool.get(i) else {
                    return Err(AppError::Build(format!(
                        "{}: no builder left to build it on",
                        target.name
                    )));
                };
                let tx = tx.clone();
                running.push(async move {
                    let result = self
                        .build_target(&member.client, member.export, target, tx)
                        .await;
                    (target, i, result)
                });
            }
            // The first failure ends the build (dropping the other solves cancels them),
            // unless it is the builder that failed and another one can take over.
            let Some((target, i, result)) = running.next().await else {
                break;
            };
            let error = match result {
                Ok(mut done) => {
                    if let Some(Some(member)) = pool.get(i) {
                        if pool.len() > 1 {
                            done.builder = Some(member.client.endpoint().to_string());
                        }
                        if let (Stored::Engine, Endpoint::Docker { socket }) =
                            (&done.stored, member.client.endpoint())
                        {
                            done.engine = Some(socket.clone());
                        }
                    }
                    built.insert(done.target.clone(), done);
                    continue;
                }
                Err(AppError::Interrupted) => return Err(AppError::Interrupted),
                Err(error) => error,
            };
            let Some(Some(member)) = pool.get(i) else {
                return Err(error);
            };
            if alive.get(i) == Some(&true) {
                if pool.len() == 1 || answers(&member.client).await {
                    return Err(error);
                }
                alive[i] = false;
                let Some(j) = next_alive(&alive, i) else {
                    return Err(AppError::Build(format!(
                        "{error}\n  every builder of the pool has stopped answering"
                    )));
                };
                let mut moved: Vec<String> = Vec::new();
                for (name, slot) in assigned.iter_mut() {
                    if *slot == i && !built.contains_key(name) {
                        *slot = j;
                        moved.push(name.clone());
                    }
                }
                let to = pool
                    .get(j)
                    .and_then(Option::as_ref)
                    .map(|m| m.client.endpoint().to_string())
                    .unwrap_or_default();
                let _ = tx.send(Progress::Warning {
                    target: None,
                    message: format!(
                        "builder {} stopped answering ({}); moving {} to {to}",
                        member.client.endpoint(),
                        first_line(&error.to_string()),
                        moved.join(", ")
                    ),
                });
            }
            // Its builder is gone: build it again where it was moved.
            waiting.push(target);
        }
        Ok(compiled
            .iter()
            .filter_map(|t| built.remove(&t.name))
            .map(|mut b| {
                if let Base::Image(reference) = &manifest.targets[&b.target].from {
                    // kiln.lock keys bases by the reference as written (without a pin).
                    b.base = Some((
                        reference.without_digest().to_string(),
                        digests.get(reference).cloned(),
                    ));
                }
                b
            })
            .collect())
    }

    /// Connect to every builder and learn where it puts images. One builder must answer; in a
    /// pool, one that does not is left out with a warning (`None`), and its targets go to the
    /// next one.
    async fn connect_pool(&self, tx: &Events) -> Result<Vec<Option<Member>>, AppError> {
        let tries = self.endpoints.iter().map(|endpoint| async move {
            let client = connect(endpoint).await?;
            let export = self.export(&client).await?;
            Ok::<_, AppError>(Member { client, export })
        });
        let results = futures::future::join_all(tries).await;
        if results.len() == 1 {
            return results.into_iter().map(|r| r.map(Some)).collect();
        }
        let mut pool = Vec::new();
        let mut errors = Vec::new();
        for (endpoint, result) in self.endpoints.iter().zip(results) {
            match result {
                Ok(member) => pool.push(Some(member)),
                Err(e) => {
                    let _ = tx.send(Progress::Warning {
                        target: None,
                        message: format!(
                            "builder {endpoint} is left out of this build: {}",
                            first_line(&e.to_string())
                        ),
                    });
                    errors.push(e.to_string());
                    pool.push(None);
                }
            }
        }
        if pool.iter().all(Option::is_none) {
            return Err(AppError::Build(format!(
                "no builder of the pool answers:\n{}",
                errors.join("\n")
            )));
        }
        Ok(pool)
    }

    /// The image configs of the selected targets' base images, and the manifest digests they
    /// resolved to, asked of the engine in one job. A base whose config says it is another
    /// platform than its target asks for is an error, before any step runs.
    async fn resolve_bases(
        &self,
        client: &Client,
        tx: &Events,
    ) -> Result<(BaseConfigs, BTreeMap<Reference, String>), AppError> {
        let mut wanted: BTreeSet<(Reference, kiln_llb::Platform)> = BTreeSet::new();
        for name in self.selected {
            let target = &self.loaded.manifest.targets[name];
            if let Base::Image(reference) = &target.from {
                wanted.insert((reference.clone(), target.platform.clone()));
            }
        }
        if wanted.is_empty() {
            return Ok(Default::default());
        }
        // The builder's own platform, to tell "no such image" from "not for this platform".
        let native: Option<kiln_llb::Platform> = client
            .workers()
            .await
            .ok()
            .and_then(|w| w.first()?.platforms.first().and_then(|p| p.parse().ok()));
        let session = self.session(client, None).await?;
        let request = SolveRequest {
            session: Some(session.id().to_string()),
            ..SolveRequest::default()
        };
        let resolved = staged(tx, "base images", "resolve", |events| {
            client.build(request, events, |gateway| async move {
                let mut bases = BaseConfigs::new();
                let mut digests = BTreeMap::new();
                let mut platforms = BTreeMap::new();
                for (reference, platform) in wanted {
                    let name = reference.to_string();
                    let image = match gateway
                        .resolve_image_config(&name, &platform, ResolveMode::Default)
                        .await
                    {
                        Ok(image) => image,
                        Err(e) => {
                            // The engine looks an image it has only for another platform (one
                            // in Docker's local store, say) up in the registry; when that
                            // fails, what it has for its own platform says why.
                            let other = match &native {
                                Some(n) if !kiln_compile::platform::serves(n, &platform) => gateway
                                    .resolve_image_config(&name, n, ResolveMode::Default)
                                    .await
                                    .ok(),
                                _ => None,
                            };
                            match other
                                .and_then(|i| kiln_compile::platform::base_platform(&i.config))
                            {
                                Some(has) if !kiln_compile::platform::serves(&has, &platform) => {
                                    platforms.insert((reference, platform), has);
                                    continue;
                                }
                                _ => return Err(e),
                            }
                        }
                    };
                    let config =
                        EffectiveConfig::from_image_config(&image.config).map_err(|e| {
                            kiln_buildkit::Error::Failed {
                                action: "resolve image config",
                                message: format!("{name}: the engine returned a bad config: {e}"),
                            }
                        })?;
                    if let Some(digest) = image.digest {
                        digests.insert(reference.clone(), digest);
                    }
                    if let Some(has) = kiln_compile::platform::base_platform(&image.config) {
                        platforms.insert((reference.clone(), platform), has);
                    }
                    bases.insert(reference, config);
                }
                Ok(((bases, digests, platforms), Returned::default()))
            })
        })
        .await;
        session.close().await;
        let (bases, digests, platforms) = resolved?.0;
        self.check_platforms(&platforms)?;
        Ok((bases, digests))
    }

    /// Every selected target's base is the platform the target asks for (by the base's image
    /// config; a config that does not say is taken as it is).
    fn check_platforms(
        &self,
        platforms: &BTreeMap<(Reference, kiln_llb::Platform), kiln_llb::Platform>,
    ) -> Result<(), AppError> {
        let mut wrong = Vec::new();
        for name in self.selected {
            let target = &self.loaded.manifest.targets[name];
            let Base::Image(reference) = &target.from else {
                continue;
            };
            let asked = &target.platform;
            let Some(has) = platforms.get(&(reference.clone(), asked.clone())) else {
                continue;
            };
            if !kiln_compile::platform::serves(has, asked) {
                wrong.push(kiln_manifest::Diagnostic {
                    location: target.location.clone(),
                    key: format!("target.{name}.platform"),
                    message: format!(
                        "target `{name}` asks for platform {asked}, but its base image {reference} is {has}"
                    ),
                    expected: None,
                    hint: Some(format!(
                        "use a base image that has {asked} (a multi-platform image, or one built for it), or set `platform = \"{has}\"`"
                    )),
                });
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(AppError::Manifest(kiln_manifest::Diagnostics(wrong)))
        }
    }

    /// A session serving the contexts and secrets, and `output` as the local exporter's
    /// destination.
    async fn session(&self, client: &Client, output: Option<PathBuf>) -> Result<Session, AppError> {
        self.session_with_file(client, output, None).await
    }

    /// [`Job::session`] that also takes a file exporter's output on `file`.
    async fn session_with_file(
        &self,
        client: &Client,
        output: Option<PathBuf>,
        file: Option<FileOutput>,
    ) -> Result<Session, AppError> {
        let mut config = self.config.clone();
        config.output = output;
        config.output_file = file;
        Session::start(client, config).await.map_err(|e| {
            let lost = matches!(&e, kiln_buildkit::Error::Lost { .. });
            let mut message = e.to_string();
            if lost {
                // Typically the daemon went away between two solves.
                message.push_str(&format!(
                    "\n  hint: {}",
                    crate::builder::hint(client.endpoint())
                ));
            }
            AppError::Build(message)
        })
    }

    /// Where images go on this builder (see [`Export`]); with `--load` on a standalone
    /// buildkitd, the Docker Engine must answer before anything is built.
    async fn export(&self, client: &Client) -> Result<Export, AppError> {
        let export = Export::choose(is_moby(client).await?, self.options.load, self.options.push);
        if let (Export::Load, Some(socket)) = (export, &self.docker) {
            let api = kiln_docker::Api::new(socket);
            let answer = tokio::task::spawn_blocking(move || api.ping())
                .await
                .map_err(|e| AppError::Build(e.to_string()))?;
            if let Err(e) = answer {
                return Err(AppError::Build(format!(
                    "--load: {e}\n  hint: the image is loaded into this Docker Engine \
                     (DOCKER_HOST, else {}); `kiln engine up` starts one",
                    kiln_docker::DEFAULT_SOCKET
                )));
            }
        }
        Ok(export)
    }

    /// The registry reference target `name`'s build cache is kept under, if it has a cache.
    fn cache_ref(&self, name: &str) -> Option<String> {
        self.cache.get(name).cloned()
    }

    /// Where a solve of target `name` may find its steps: its own cache first, then those of
    /// every other selected target. All of them, not only its dependencies': solves running
    /// at once share the vertices they have in common (the base image), and a vertex first
    /// loaded by a job without a cache has no link into it for the other jobs' steps
    /// (observed on Docker Engine 20.10: the steps after a shared base then ran again).
    fn cache_imports(&self, name: &str) -> Vec<(String, BTreeMap<String, String>)> {
        let own = self.cache_ref(name);
        own.iter()
            .chain(self.cache.values().filter(|r| Some(*r) != own.as_ref()))
            .map(|r| {
                (
                    "registry".to_string(),
                    BTreeMap::from([("ref".to_string(), r.clone())]),
                )
            })
            .collect()
    }

    /// Docker Engine: push the image that carries a target's inline cache to the cache
    /// repository. A failure is a warning: the build stands, the next one on another engine
    /// just finds no cache.
    async fn push_cache(&self, client: &Client, target: &str, cache: &str, tx: &Events) {
        let warn = |message: String| {
            let _ = tx.send(Progress::Warning {
                target: Some(target.to_string()),
                message,
            });
        };
        let Endpoint::Docker { socket } = client.endpoint() else {
            warn(format!(
                "cache: {} is Docker's BuildKit behind a socket kiln cannot push through; \
                 {cache} stays in that engine only",
                client.endpoint()
            ));
            return;
        };
        let api = kiln_docker::Api::new(socket);
        let auth = self.cache_auth.get(cache).cloned().unwrap_or_default();
        let image = cache.to_string();
        let pushed = tokio::task::spawn_blocking(move || api.push(&image, &auth)).await;
        match pushed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn(format!("cache: pushing {cache} failed: {e}")),
            Err(e) => warn(format!("cache: pushing {cache} failed: {e}")),
        }
    }

    /// Stream the `docker` exporter's tarball, as it arrives through the session on the file
    /// output returned, into the Docker Engine (`--load`); the task ends with what the engine
    /// says it loaded.
    fn start_load(
        &self,
    ) -> (
        FileOutput,
        tokio::task::JoinHandle<Result<Vec<String>, String>>,
    ) {
        let (file, mut chunks) = FileOutput::channel();
        let socket = self.docker.clone().unwrap_or_default();
        let loader = tokio::task::spawn_blocking(move || {
            // Nothing is sent to the engine until the image comes (a failed build sends none).
            let Some(first) = chunks.blocking_recv() else {
                return Err("the builder sent no image".to_string());
            };
            let rest = std::iter::from_fn(|| chunks.blocking_recv());
            kiln_docker::Api::new(socket)
                .load(std::iter::once(first).chain(rest))
                .map_err(|e| e.to_string())
        });
        (file, loader)
    }

    /// One target: its smoke test when it has one, then its image — loaded into the image
    /// store with its config (through the gateway, so the exporter gets the config), or
    /// exported to a directory.
    async fn build_target(
        &self,
        client: &Client,
        export: Export,
        target: &CompiledTarget,
        tx: Events,
    ) -> Result<Built, AppError> {
        let manifest_target = &self.loaded.manifest.targets[&target.name];
        let output = self
            .options
            .output
            .as_ref()
            .filter(|_| self.exported.contains(&target.name))
            .map(|dir| {
                if self.exported.len() == 1 {
                    dir.clone()
                } else {
                    dir.join(&target.name)
                }
            });
        let image_name = manifest_target
            .image
            .as_ref()
            .filter(|_| self.options.output.is_none())
            .map(|i| i.to_string());
        let mut image_id = None;
        let mut pushed = None;
        let mut stored = Stored::Nothing;
        let mut context = Transfer::default();
        if self.options.goal == Goal::Refresh {
            return self.refresh_target(client, target, tx).await;
        }
        // With a remote cache on Docker Engine 20.10 (inline cache only, exported with the
        // last stage's own image), the smoke test and the image stay two jobs so that both
        // carry their cache; otherwise one job.
        if export == Export::Moby
            && self.options.goal == Goal::Image
            && self.cache_ref(&target.name).is_none()
        {
            return self.one_job(client, target, image_name, output, tx).await;
        }
        let kinds: &[StageKind] = match self.options.goal {
            Goal::SmokeTest => &[StageKind::SmokeTest],
            _ => &[StageKind::SmokeTest, StageKind::Image],
        };
        for &kind in kinds {
            let Some(state) = target.stage(kind) else {
                continue;
            };
            let mut definition =
                kiln_llb::marshal(state).map_err(|e| AppError::Build(e.to_string()))?;
            if self.options.no_cache {
                definition
                    .ignore_cache()
                    .map_err(|e| AppError::Build(e.to_string()))?;
            }
            let exporting = kind == StageKind::Image;
            let loading = (exporting && image_name.is_some() && export == Export::Load)
                .then(|| self.start_load());
            let session = self
                .session_with_file(
                    client,
                    output.clone().filter(|_| exporting),
                    loading.as_ref().map(|(file, _)| file.clone()),
                )
                .await?;
            let mut request = SolveRequest {
                definition,
                session: Some(session.id().to_string()),
                entitlements: self.entitlements.clone(),
                cache_imports: self.cache_imports(&target.name),
                ..SolveRequest::default()
            };
            // The target's last stage carries its whole chain: its cache goes out with it.
            let last = kind == StageKind::SmokeTest || target.stage(StageKind::SmokeTest).is_none();
            let cache_out = self
                .cache_ref(&target.name)
                .filter(|_| last && !(exporting && output.is_some()));
            // Docker Engine 20.10 exports inline cache only (in an image's config): the stage
            // is stored as the image `REF:<target>` too (beside the target's own name), which
            // kiln pushes to the cache repository afterwards.
            let mut also_named = None;
            if let Some(cache) = &cache_out {
                if export == Export::Moby {
                    request.cache_exports = vec![("inline".to_string(), BTreeMap::new())];
                    if exporting && image_name.is_some() {
                        also_named = Some(cache.clone());
                    } else {
                        let attrs = BTreeMap::from([("name".to_string(), cache.clone())]);
                        request.exporter = Some(("moby".to_string(), attrs));
                    }
                } else {
                    request.cache_exports = vec![(
                        "registry".to_string(),
                        BTreeMap::from([
                            ("ref".to_string(), cache.clone()),
                            ("mode".to_string(), "max".to_string()),
                        ]),
                    )];
                }
            }
            let stage = kind.as_str();
            let response = match (&image_name, exporting) {
                // Docker's BuildKit builds images in one job per target (`Job::one_job`), or,
                // with a remote cache, through the frontend arm below.
                (Some(image), true) if export != Export::Moby => {
                    // A standalone buildkitd's exporters take the image config as an attribute,
                    // so the image is one plain solve: once it is running nothing more is asked
                    // of the daemon (one that is draining to stop refuses new calls, such as a
                    // gateway's Return, but finishes the solves it has).
                    let platform = &manifest_target.platform;
                    let config = String::from_utf8(target.config.image_config(platform))
                        .map_err(|e| AppError::Build(format!("{}: {e}", target.name)))?;
                    let mut attrs = BTreeMap::from([
                        ("name".to_string(), image.clone()),
                        ("containerimage.config".to_string(), config),
                    ]);
                    request.exporter = match export {
                        Export::Push => {
                            attrs.insert("push".to_string(), "true".to_string());
                            Some(("image".to_string(), attrs))
                        }
                        Export::Load => Some(("docker".to_string(), attrs)),
                        // Like buildx without an output: no exporter at all.
                        Export::Cache | Export::Moby => None,
                    };
                    staged(&tx, &target.name, stage, |events| {
                        client.solve(request, events)
                    })
                    .await
                }
                (Some(image), true) if export == Export::Moby => {
                    // Docker's moby exporter takes the image config only from the job's
                    // result, so kiln is the job's frontend; the engine cannot push from it,
                    // so kiln pushes through the engine afterwards. (Only with a remote cache:
                    // otherwise a target is one job, `Job::one_job`.)
                    let name = match &also_named {
                        Some(cache) => format!("{image},{cache}"),
                        None => image.clone(),
                    };
                    let attrs = BTreeMap::from([("name".to_string(), name)]);
                    request.exporter = Some(("moby".to_string(), attrs));
                    let platform = &manifest_target.platform;
                    let image_config = crate::labels::with_labels(
                        &target.config,
                        &manifest_target.config.labels,
                        self.options.labels.get(&target.name),
                    )
                    .image_config(platform);
                    staged(&tx, &target.name, stage, |events| async {
                        let definition = request.definition.clone();
                        let imports = request.cache_imports.clone();
                        let (_, response) = client
                            .build(request, events, |gateway| async move {
                                let result = gateway.solve_importing(&definition, &imports).await?;
                                let metadata = BTreeMap::from([(
                                    "containerimage.config".to_string(),
                                    image_config,
                                )]);
                                Ok((
                                    (),
                                    Returned {
                                        result: Some(result),
                                        metadata,
                                    },
                                ))
                            })
                            .await?;
                        Ok(response)
                    })
                    .await
                }
                _ => {
                    if exporting && output.is_some() {
                        request.exporter = Some(("local".to_string(), BTreeMap::new()));
                    }
                    staged(&tx, &target.name, stage, |events| {
                        client.solve(request, events)
                    })
                    .await
                }
            };
            let sent = session.transfer();
            context.entries += sent.entries;
            context.files += sent.files;
            context.bytes += sent.bytes;
            session.close().await;
            if let (Some(cache), Export::Moby, Ok(_)) = (&cache_out, export, &response) {
                self.push_cache(client, &target.name, cache, &tx).await;
            }
            let loaded = match loading {
                Some((file, loader)) => {
                    file.close();
                    Some(loader.await.map_err(|e| AppError::Build(e.to_string()))?)
                }
                None => None,
            };
            if exporting {
                let response = response?;
                // moby: the digest is the image id; image and docker: the manifest's, with the
                // config's (what an engine calls the image id) beside it.
                image_id = response
                    .get("containerimage.config.digest")
                    .or_else(|| response.get("containerimage.digest"))
                    .cloned();
                if let (Some(image), true) = (&image_name, output.is_none()) {
                    stored = match export {
                        Export::Moby => Stored::Engine,
                        Export::Push => Stored::Registry,
                        Export::Cache => Stored::BuilderCache,
                        Export::Load => {
                            let socket = self.docker.clone().unwrap_or_default();
                            image_id = Some(
                                self.verify_loaded(&target.name, image, image_id, loaded)
                                    .await?,
                            );
                            Stored::Loaded { socket }
                        }
                    };
                    if export == Export::Push {
                        pushed = response.get("containerimage.digest").cloned();
                    }
                    if matches!(stored, Stored::Registry | Stored::BuilderCache) {
                        // In no image store: nothing to call an image id.
                        image_id = None;
                    }
                }
            } else {
                response?;
            }
        }
        Ok(Built {
            target: target.name.clone(),
            image: image_name,
            image_id: if output.is_none() { image_id } else { None },
            output,
            context,
            pushed,
            stored,
            ..Built::default()
        })
    }

    /// One target on Docker's BuildKit as one job (one session, the context sent once): kiln's
    /// frontend solves the smoke test, then — only when it passed — the image stage, and
    /// returns that with its config for the `moby` exporter (or the `local` exporter with
    /// `--output`; none for a dependency without an image). Events are the smoke test's until
    /// it passed, then the image's.
    async fn one_job(
        &self,
        client: &Client,
        target: &CompiledTarget,
        image_name: Option<String>,
        output: Option<PathBuf>,
        tx: Events,
    ) -> Result<Built, AppError> {
        let marshal = |kind: StageKind| -> Result<Option<kiln_llb::Definition>, AppError> {
            let Some(state) = target.stage(kind) else {
                return Ok(None);
            };
            let mut definition =
                kiln_llb::marshal(state).map_err(|e| AppError::Build(e.to_string()))?;
            if self.options.no_cache {
                definition
                    .ignore_cache()
                    .map_err(|e| AppError::Build(e.to_string()))?;
            }
            Ok(Some(definition))
        };
        let smoke = marshal(StageKind::SmokeTest)?;
        let Some(image) = marshal(StageKind::Image)? else {
            return Err(AppError::Build(format!(
                "{}: no image stage was compiled",
                target.name
            )));
        };
        let platform = &self.loaded.manifest.targets[&target.name].platform;
        let session = self.session(client, output.clone()).await?;
        let imports = self.cache_imports(&target.name);
        let mut request = SolveRequest {
            session: Some(session.id().to_string()),
            entitlements: self.entitlements.clone(),
            cache_imports: imports.clone(),
            ..SolveRequest::default()
        };
        let mut metadata = BTreeMap::new();
        request.exporter = match (&image_name, &output) {
            (Some(name), None) => {
                let config = crate::labels::with_labels(
                    &target.config,
                    &self.loaded.manifest.targets[&target.name].config.labels,
                    self.options.labels.get(&target.name),
                );
                metadata.insert(
                    "containerimage.config".to_string(),
                    config.image_config(platform),
                );
                Some((
                    "moby".to_string(),
                    BTreeMap::from([("name".to_string(), name.clone())]),
                ))
            }
            (_, Some(_)) => Some(("local".to_string(), BTreeMap::new())),
            (None, None) => None,
        };
        let first = if smoke.is_some() {
            StageKind::SmokeTest
        } else {
            StageKind::Image
        };
        let response = staged_phases(
            &tx,
            &target.name,
            first.as_str(),
            StageKind::Image.as_str(),
            |events, passed| {
                client.build(request, events, |gateway| async move {
                    if let Some(smoke) = smoke {
                        gateway.solve_importing(&smoke, &imports).await?;
                        passed.next();
                    }
                    let result = gateway.solve_importing(&image, &imports).await?;
                    Ok((
                        (),
                        Returned {
                            result: Some(result),
                            metadata,
                        },
                    ))
                })
            },
        )
        .await;
        let context = session.transfer();
        session.close().await;
        let (_, response) = response?;
        let stored = match (&image_name, &output) {
            (Some(_), None) => Stored::Engine,
            _ => Stored::Nothing,
        };
        Ok(Built {
            target: target.name.clone(),
            image_id: match stored {
                // moby: the digest is the image id.
                Stored::Engine => response
                    .get("containerimage.config.digest")
                    .or_else(|| response.get("containerimage.digest"))
                    .cloned(),
                _ => None,
            },
            image: image_name,
            output,
            context,
            stored,
            ..Built::default()
        })
    }

    /// After `--load`: the engine loaded the image (`loaded`, what the loader reported), and
    /// has it under `image` with the config digest the exporter reported (`exported`). Returns
    /// the engine's image id.
    async fn verify_loaded(
        &self,
        target: &str,
        image: &str,
        exported: Option<String>,
        loaded: Option<Result<Vec<String>, String>>,
    ) -> Result<String, AppError> {
        let socket = self.docker.clone().unwrap_or_default();
        let failed = |why: String| {
            AppError::Build(format!(
                "{target}: loading {image} into the Docker Engine at unix://{} failed: {why}",
                socket.display()
            ))
        };
        loaded
            .unwrap_or_else(|| Err("nothing was streamed".to_string()))
            .map_err(&failed)?;
        let api = kiln_docker::Api::new(&socket);
        let name = image.to_string();
        let found = tokio::task::spawn_blocking(move || api.image(&name))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed(format!("the engine has no {image} after the load")))?;
        match exported {
            Some(exported) if exported != found.id => Err(failed(format!(
                "the engine's {image} is {}, not the {exported} the builder exported",
                found.id
            ))),
            _ => Ok(found.id),
        }
    }

    /// `Goal::Refresh` for one target: one gateway job solves the refreshed packages, reads
    /// each lock file out of that result, then solves its smoke test on them (or, without a
    /// smoke test, the stage after the packages). When that fails, the error carries the lock
    /// files it read, so `kiln refresh` can say which upgrades failed the test. A target
    /// without packages has nothing to refresh.
    async fn refresh_target(
        &self,
        client: &Client,
        target: &CompiledTarget,
        tx: Events,
    ) -> Result<Built, AppError> {
        let manifest_target = &self.loaded.manifest.targets[&target.name];
        let mut built = Built {
            target: target.name.clone(),
            ..Built::default()
        };
        let Some(packages) = &manifest_target.packages else {
            return Ok(built);
        };
        let marshal = |kind: StageKind| match target.stage(kind) {
            Some(state) => kiln_llb::marshal(state)
                .map(Some)
                .map_err(|e| AppError::Build(e.to_string())),
            None => Ok(None),
        };
        let (Some(packages_definition), Some(definition)) = (
            marshal(StageKind::PackagesRefresh)?,
            match marshal(StageKind::SmokeTest)? {
                Some(d) => Some(d),
                None => marshal(StageKind::Post)?,
            },
        ) else {
            return Err(AppError::Build(format!(
                "{}: no packages-refresh or post stage was compiled",
                target.name
            )));
        };
        let session = self.session(client, None).await?;
        let request = SolveRequest {
            session: Some(session.id().to_string()),
            entitlements: self.entitlements.clone(),
            ..SolveRequest::default()
        };
        let dir = packages.dir.trim_end_matches('/').to_string();
        let locks = packages.lock.clone();
        let read_before_test = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = read_before_test.clone();
        let read = staged(&tx, &target.name, "refresh", |events| {
            client.build(request, events, |gateway| async move {
                let result = gateway.solve(&packages_definition).await?;
                let mut files = BTreeMap::new();
                for lock in locks {
                    let path = format!("{dir}/{lock}");
                    let data = gateway.read_file(&result, &path).await.map_err(|e| {
                        kiln_buildkit::Error::Failed {
                            action: "read the refreshed lock file",
                            message: format!(
                                "{path}: {e} (the refresh command must write `{lock}` in {dir})"
                            ),
                        }
                    })?;
                    files.insert(lock, data);
                }
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(files.clone());
                gateway.solve(&definition).await?;
                Ok((files, Returned::default()))
            })
        })
        .await;
        built.context = session.transfer();
        session.close().await;
        built.locks = match read {
            Ok((files, _)) => files,
            Err(error) => {
                let read = read_before_test
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                return Err(match (read, error) {
                    (Some(locks), AppError::Build(message)) => AppError::RefreshTestFailed {
                        target: target.name.clone(),
                        locks,
                        message,
                    },
                    (_, error) => error,
                });
            }
        };
        Ok(built)
    }
}

/// One builder of the pool, connected.
struct Member {
    client: Client,
    export: Export,
}

/// Whether a builder still answers (its workers, within a few seconds): after a failed solve,
/// tells a builder that went away from a build that failed.
async fn answers(client: &Client) -> bool {
    let probe = async {
        let fresh = Client::connect(client.endpoint()).await.ok()?;
        fresh.workers().await.ok()
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), probe).await,
        Ok(Some(_))
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The first builder from `i` on (wrapping) that is alive.
fn next_alive(alive: &[bool], i: usize) -> Option<usize> {
    (0..alive.len())
        .map(|k| (i + k) % alive.len())
        .find(|&j| alive.get(j) == Some(&true))
}

/// Which of `builders` builders each selected target builds on: the targets joined by
/// dependencies (a chain of `target:` bases, copies from targets) stay together, on the
/// builder a stable hash (sha256) of the first name among them picks, so each meets its own
/// cache again on the next run.
fn home(
    graph: &kiln_graph::Graph,
    selected: &[String],
    builders: usize,
) -> BTreeMap<String, usize> {
    // Union-find over the dependency edges among the selected targets.
    let index: BTreeMap<&str, usize> = selected
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..selected.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, t) in selected.iter().enumerate() {
        for d in graph.depends_on(t) {
            if let Some(&j) = index.get(d) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let roots: Vec<usize> = (0..selected.len()).map(|i| root(&mut parent, i)).collect();
    // Each group is named by its smallest target name.
    let mut names: BTreeMap<usize, &str> = BTreeMap::new();
    for (t, r) in selected.iter().zip(&roots) {
        let name = names.entry(*r).or_insert(t.as_str());
        if t.as_str() < *name {
            *name = t.as_str();
        }
    }
    selected
        .iter()
        .zip(&roots)
        .map(|(t, r)| {
            let name = names.get(r).copied().unwrap_or(t.as_str());
            (t.clone(), stable_slot(name, builders))
        })
        .collect()
}

/// `name`'s builder among `builders`: the first 8 bytes of its sha256, modulo.
fn stable_slot(name: &str, builders: usize) -> usize {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % builders.max(1) as u64) as usize
}

/// `kiln refresh` needs packages: a target named on the command line without them is an
/// error, and so is a selection with none.
fn check_refreshable(
    manifest: &Manifest,
    named: &[String],
    selected: &[String],
) -> Result<(), AppError> {
    for name in named {
        if let Some(target) = manifest.targets.get(name) {
            if target.packages.is_none() {
                return Err(AppError::Usage(format!(
                    "target `{name}` has no [target.{name}.packages]: there is nothing to refresh"
                )));
            }
        }
    }
    if !selected
        .iter()
        .any(|t| manifest.targets[t].packages.is_some())
    {
        return Err(AppError::Usage(
            "none of the selected targets has packages: there is nothing to refresh".to_string(),
        ));
    }
    Ok(())
}

/// Connect to the builder, saying how to start one when none answers.
async fn connect(endpoint: &Endpoint) -> Result<Client, AppError> {
    let endpoint = endpoint.clone().probe().await;
    Client::connect(&endpoint).await.map_err(|e| {
        let mut message = e.to_string();
        explain(&mut message);
        if !message.contains("hint:") {
            message.push_str(&format!("\n  hint: {}", crate::builder::hint(&endpoint)));
        }
        AppError::Build(message)
    })
}

/// Where a build's images go, decided once from the builder and the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Export {
    /// Docker Engine's BuildKit: the `moby` exporter stores the image in the engine's image
    /// store (`--push` then pushes through the engine; `--load` has nothing to do).
    Moby,
    /// A standalone buildkitd with `--load`: its `docker` exporter's tarball streams through the
    /// session into the Docker Engine (`--push` then pushes through that engine).
    Load,
    /// A standalone buildkitd with `--push`: its `image` exporter pushes.
    Push,
    /// A standalone buildkitd without either: no exporter (its OCI worker keeps no image store
    /// kiln could use, a named image would exist nowhere), the image stays in its cache.
    Cache,
}

impl Export {
    fn choose(moby: bool, load: bool, push: bool) -> Export {
        match (moby, load, push) {
            (true, _, _) => Export::Moby,
            (false, true, _) => Export::Load,
            (false, false, true) => Export::Push,
            (false, false, false) => Export::Cache,
        }
    }
}

/// Whether the builder is Docker Engine's BuildKit, whose `moby` exporter stores images where
/// `docker run` finds them: the engine itself, or one worker named `moby` (also when reached
/// through a proxy).
async fn is_moby(client: &Client) -> Result<bool, AppError> {
    if client.endpoint().is_docker() {
        return Ok(true);
    }
    let workers = client.workers().await.map_err(|e| {
        AppError::Build(format!(
            "{e}\n  hint: {}",
            crate::builder::hint(client.endpoint())
        ))
    })?;
    if workers.is_empty() {
        return Err(AppError::Build(format!(
            "the builder at {} has no workers; it cannot build anything",
            client.endpoint()
        )));
    }
    Ok(workers.iter().any(|w| w.id == "moby"))
}

/// What a daemon's error means for a kiln user, for errors that say it poorly.
const HINTS: &[(&str, &str)] = &[
    (
        "network bridge not found",
        "this engine has no bridge network (dockerd --bridge=none, as `kiln engine up` starts \
         it); set `network = \"host\"` or `network = \"none\"` on the target or in [defaults]",
    ),
    (
        "network.host is not allowed",
        "this buildkitd does not grant host networking; start it with \
         `--allow-insecure-entitlement network.host`, or use `network = \"default\"`",
    ),
    (
        "unknown exporter",
        "this daemon lacks the exporter kiln picked for it; `kiln engine status` shows what it is",
    ),
    (
        "was not upgraded: HTTP/1.1 404",
        "this Docker Engine has no BuildKit API (`POST /grpc`); it needs Docker 18.09 or newer",
    ),
];

/// Add the hint for a known symptom in `message`, if any.
fn explain(message: &mut String) {
    if let Some((_, hint)) = HINTS.iter().find(|(symptom, _)| message.contains(symptom)) {
        message.push_str("\n  hint: ");
        message.push_str(hint);
    }
}

/// How many lines of a failed step's output the error shows.
const FAILURE_TAIL: usize = 40;

/// Run one stage's solve (`solve` gets the channel for its events), labelling its events with
/// the target and stage; a failure names the failed step and shows the end of its output.
async fn staged<T, F, Fut>(
    tx: &Events,
    target: &str,
    stage: &'static str,
    solve: F,
) -> Result<T, AppError>
where
    F: FnOnce(mpsc::UnboundedSender<Event>) -> Fut,
    Fut: Future<Output = Result<T, kiln_buildkit::Error>>,
{
    let _ = tx.send(Progress::Stage {
        target: target.to_string(),
        stage,
    });
    let (events, mut rx) = mpsc::unbounded_channel();
    let solve = solve(events);
    tokio::pin!(solve);
    let mut seen = Seen::default();
    let mut forward = |event: Event| {
        remember(&event, &mut seen);
        let _ = tx.send(Progress::Engine {
            target: target.to_string(),
            stage,
            event,
        });
    };
    let result = loop {
        tokio::select! {
            result = &mut solve => break result,
            Some(event) = rx.recv() => forward(event),
        }
    };
    while let Ok(event) = rx.try_recv() {
        forward(event);
    }
    let _ = tx.send(Progress::Finished {
        target: target.to_string(),
        stage,
        ok: result.is_ok(),
    });
    result.map_err(|e| failure(target, stage, &e, &seen))
}

/// The error of a failed solve of `target`/`stage`: a failed RUN names the step the daemon
/// marked failed and shows the end of its output.
fn failure(target: &str, stage: &str, e: &kiln_buildkit::Error, seen: &Seen) -> AppError {
    let mut message = format!("{target}/{stage}: {e}");
    if let Some(digest) = &seen.failed {
        let name = seen.names.get(digest).map(String::as_str).unwrap_or("?");
        message.push_str(&format!("\n  step: {name}"));
        if let Some(log) = seen.logs.get(digest) {
            let text = String::from_utf8_lossy(log).to_string();
            let tail: Vec<&str> = text.lines().rev().take(FAILURE_TAIL).collect();
            message.push_str("\n  last output:");
            for line in tail.iter().rev() {
                message.push_str("\n    ");
                message.push_str(line);
            }
        }
    }
    explain(&mut message);
    AppError::Build(message)
}

/// Moves a one-job solve from its first stage to the next (see [`staged_phases`]).
struct Phase {
    tx: Events,
    target: String,
    first: &'static str,
    then: &'static str,
    passed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Phase {
    /// The first stage passed: it is finished, the next starts.
    fn next(&self) {
        use std::sync::atomic::Ordering;
        if self.first == self.then || self.passed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.tx.send(Progress::Finished {
            target: self.target.clone(),
            stage: self.first,
            ok: true,
        });
        let _ = self.tx.send(Progress::Stage {
            target: self.target.clone(),
            stage: self.then,
        });
    }

    fn stage(&self) -> &'static str {
        if self.passed.load(std::sync::atomic::Ordering::SeqCst) {
            self.then
        } else {
            self.first
        }
    }
}

/// [`staged`] for a job that solves two stages in turn (`first`, then `then` once `solve`
/// calls [`Phase::next`]): events, the end of a stage and a failure are labelled with the
/// stage in progress, so a failed smoke test reads as before, `TARGET/smoke-test: …`.
async fn staged_phases<T, F, Fut>(
    tx: &Events,
    target: &str,
    first: &'static str,
    then: &'static str,
    solve: F,
) -> Result<T, AppError>
where
    F: FnOnce(mpsc::UnboundedSender<Event>, Phase) -> Fut,
    Fut: Future<Output = Result<T, kiln_buildkit::Error>>,
{
    let passed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let phase = Phase {
        tx: tx.clone(),
        target: target.to_string(),
        first,
        then,
        passed: passed.clone(),
    };
    let label = Phase {
        tx: tx.clone(),
        target: target.to_string(),
        first,
        then,
        passed,
    };
    let _ = tx.send(Progress::Stage {
        target: target.to_string(),
        stage: first,
    });
    let (events, mut rx) = mpsc::unbounded_channel();
    let solve = solve(events, phase);
    tokio::pin!(solve);
    let mut seen = Seen::default();
    let mut forward = |event: Event| {
        remember(&event, &mut seen);
        let _ = tx.send(Progress::Engine {
            target: target.to_string(),
            stage: label.stage(),
            event,
        });
    };
    let result = loop {
        tokio::select! {
            result = &mut solve => break result,
            Some(event) = rx.recv() => forward(event),
        }
    };
    while let Ok(event) = rx.try_recv() {
        forward(event);
    }
    let stage = label.stage();
    let _ = tx.send(Progress::Finished {
        target: target.to_string(),
        stage,
        ok: result.is_ok(),
    });
    result.map_err(|e| failure(target, stage, &e, &seen))
}

/// What a failure message needs from the events: step names, their output, and which step
/// the daemon said failed.
#[derive(Default)]
struct Seen {
    names: BTreeMap<String, String>,
    logs: BTreeMap<String, Vec<u8>>,
    failed: Option<String>,
}

fn remember(event: &Event, seen: &mut Seen) {
    let Seen {
        names,
        logs,
        failed,
    } = seen;
    match event {
        Event::Vertex {
            digest,
            name,
            error,
            ..
        } => {
            names.insert(digest.clone(), name.clone());
            if error.is_some() {
                *failed = Some(digest.clone());
            }
        }
        Event::Log { vertex, data, .. } => logs
            .entry(vertex.clone())
            .or_default()
            .extend_from_slice(data),
        Event::Progress { .. } => {}
    }
}

/// Every selected target's context, its ignore files, its CA bundle and `[secrets]` (each
/// under the target's own secret ids) and registry credentials. A secret whose environment
/// variable is unset or whose file cannot be read is an error here, before any solve.
fn session_config(
    settings: &Settings,
    manifest: &Manifest,
    selected: &[String],
    kiln_lock: &std::path::Path,
) -> Result<SessionConfig, AppError> {
    let cwd = &settings.cwd;
    let registry_auth = Some(settings.resolved().session_auth()?);
    // A stable key per working tree lets the daemon reuse its last copy of each context.
    let mut config = SessionConfig {
        name: "kiln".to_string(),
        shared_key: format!("kiln:{}", cwd.display()),
        registry_auth,
        ..SessionConfig::default()
    };
    for name in selected {
        let target = &manifest.targets[name];
        let path = cwd.join(&target.context);
        let exclude = kiln_record::ignored(&kiln_record::Disk, &path, kiln_lock);
        config
            .contexts
            .insert(name.clone(), LocalDir { path, exclude });
        let bundle = match &target.ca_certificates {
            CaCertificates::None => None,
            CaCertificates::Host => Some(PathBuf::from(HOST_CA_BUNDLE)),
            CaCertificates::Path(p) => Some(cwd.join(p)),
        };
        if let Some(bundle) = bundle {
            let data = std::fs::read(&bundle).map_err(|source| AppError::Io {
                path: bundle.clone(),
                action: "read CA bundle",
                source,
            })?;
            if let Some(id) = kiln_compile::ca_bundle_secret(name, &target.ca_certificates) {
                config.secrets.insert(id, data);
            }
        }
    }
    let mut missing = Vec::new();
    for name in selected {
        for secret in manifest.targets[name].secrets.values() {
            match secret_value(settings, secret) {
                Ok(data) => {
                    config
                        .secrets
                        .insert(kiln_compile::secret_id(name, &secret.name), data);
                }
                Err((message, hint)) => {
                    // Quoted as in the manifest's own messages when not a bare key.
                    let bare = secret
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    let key = if bare {
                        secret.name.clone()
                    } else {
                        format!("{:?}", secret.name)
                    };
                    missing.push(kiln_manifest::Diagnostic {
                        location: secret.location.clone(),
                        key: format!("target.{name}.secrets.{key}"),
                        message,
                        expected: None,
                        hint: Some(hint),
                    })
                }
            }
        }
    }
    if !missing.is_empty() {
        missing.sort_by(|a, b| a.location.cmp(&b.location));
        return Err(AppError::Manifest(kiln_manifest::Diagnostics(missing)));
    }
    Ok(config)
}

/// A secret's value: its environment variable (from `Settings.env`, never the process's own)
/// or its file. Else what is wrong and a hint.
fn secret_value(
    settings: &Settings,
    secret: &kiln_manifest::Secret,
) -> Result<Vec<u8>, (String, String)> {
    match &secret.source {
        kiln_manifest::SecretSource::Env(var) => settings
            .env
            .get(var)
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| {
                (
                    format!(
                        "secret `{}` comes from the environment variable `{var}`, which is not set",
                        secret.name
                    ),
                    format!("set `{var}` for kiln, e.g. `{var}=… kiln build`"),
                )
            }),
        kiln_manifest::SecretSource::File(path) => {
            std::fs::read(settings.cwd.join(path)).map_err(|e| {
                (
                    format!(
                        "secret `{}` comes from the file `{}`, which cannot be read: {e}",
                        secret.name,
                        path.display()
                    ),
                    "a relative `file` is relative to the manifest's directory".to_string(),
                )
            })
        }
    }
}

/// Each selected target's remote cache reference (`--cache`, else its file's
/// `[defaults] cache`, tagged with the target's name; none for a refresh, which must resolve
/// again), and the credentials to push each with.
#[allow(clippy::type_complexity)]
fn remote_cache(
    settings: &Settings,
    manifest: &Manifest,
    selected: &[String],
    options: &BuildOptions,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), AppError> {
    let mut refs = BTreeMap::new();
    let mut auth = BTreeMap::new();
    if options.goal == Goal::Refresh {
        return Ok((refs, auth));
    }
    let mut access = None;
    for name in selected {
        let Some(repository) = options
            .cache
            .as_ref()
            .or(manifest.targets[name].cache.as_ref())
        else {
            continue;
        };
        let reference = cache_reference(repository, name);
        if access.is_none() {
            access = Some(crate::pin::Access::new(settings)?);
        }
        if let Some(access) = &access {
            auth.insert(reference.to_string(), access.auth_header(&reference)?);
        }
        refs.insert(name.clone(), reference.to_string());
    }
    Ok((refs, auth))
}

/// `--cache REF`: a registry repository, without tag or digest (kiln tags it per target).
pub fn cache_repository(text: &str) -> Result<Reference, String> {
    match Reference::parse(text) {
        Ok(r) if r.tag().is_none() && r.digest().is_none() => Ok(r),
        Ok(_) => Err(format!(
            "`{text}` has a tag or digest; give a repository (kiln tags it per target), e.g. \
             registry.example.com/team/cache"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `REPO:<target>`: a target name as a tag (characters a tag cannot hold become `-`).
pub(crate) fn cache_reference(repository: &Reference, target: &str) -> Reference {
    let mut tag: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.replace_range(..1, "_");
    }
    Reference::parse(&format!("{}:{tag}", repository.name())).unwrap_or_else(|_| repository.clone())
}

fn entitlements(manifest: &Manifest, selected: &[String]) -> Vec<String> {
    if selected
        .iter()
        .any(|t| manifest.targets[t].network == NetworkMode::Host)
    {
        vec!["network.host".to_string()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_go_where_the_builder_can_put_them() {
        // Docker's BuildKit stores them in the engine whatever the flags.
        for (load, push) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(Export::choose(true, load, push), Export::Moby);
        }
        // A standalone buildkitd: streamed to the engine, pushed, or only in its cache.
        assert_eq!(Export::choose(false, true, false), Export::Load);
        assert_eq!(Export::choose(false, true, true), Export::Load);
        assert_eq!(Export::choose(false, false, true), Export::Push);
        assert_eq!(Export::choose(false, false, false), Export::Cache);
    }

    #[test]
    fn a_pool_keeps_chains_together_and_spreads_the_rest_stably() {
        let text = r#"version = 1
[target.base]
from = "debian"
[target.app]
from = "target:base"
[target.tool]
from = "debian"
copy = [{ src = "/x", dest = "/x", from = "target:app" }]
[target.solo1]
from = "debian"
[target.solo2]
from = "debian"
[target.solo3]
from = "debian"
"#;
        let sources = vec![kiln_manifest::Source {
            path: PathBuf::from("kiln.toml"),
            text: text.to_string(),
        }];
        let manifest =
            kiln_manifest::load(&sources, &kiln_manifest::LoadOptions::default()).unwrap();
        let graph = kiln_graph::Graph::build(&manifest, PackagesMode::Pinned).unwrap();
        let selected: Vec<String> = manifest.targets.keys().cloned().collect();
        let home3 = home(&graph, &selected, 3);
        // base → app → tool (a `from` and a copy): one group, on the builder of `app` (the
        // smallest name of the group).
        assert_eq!(home3["base"], stable_slot("app", 3));
        assert_eq!(home3["app"], home3["base"]);
        assert_eq!(home3["tool"], home3["base"]);
        for solo in ["solo1", "solo2", "solo3"] {
            assert_eq!(home3[solo], stable_slot(solo, 3));
        }
        // Stable: the same answer every time, and within range.
        assert_eq!(home(&graph, &selected, 3), home3);
        assert!(home3.values().all(|&i| i < 3));
        assert!(home(&graph, &selected, 1).values().all(|&i| i == 0));
        // The hash really spreads: 20 names over 2 builders use both.
        let used: std::collections::BTreeSet<usize> =
            (0..20).map(|i| stable_slot(&format!("t{i}"), 2)).collect();
        assert_eq!(used.len(), 2);
        // A dead builder's work goes to the next live one, wrapping around.
        assert_eq!(next_alive(&[true, false, true], 1), Some(2));
        assert_eq!(next_alive(&[true, true, false], 2), Some(0));
        assert_eq!(next_alive(&[false, false], 0), None);
    }

    #[test]
    fn cache_refs_are_the_repository_tagged_with_the_target() {
        let repo = cache_repository("127.0.0.1:5000/team/cache").unwrap();
        assert_eq!(
            cache_reference(&repo, "app").to_string(),
            "127.0.0.1:5000/team/cache:app"
        );
        assert_eq!(
            cache_reference(&repo, "-a/b").to_string(),
            "127.0.0.1:5000/team/cache:_a-b"
        );
        let long = "x".repeat(200);
        assert_eq!(cache_reference(&repo, &long).tag().map(str::len), Some(128));
        let err = cache_repository("127.0.0.1:5000/team/cache:v1").unwrap_err();
        assert!(err.contains("has a tag or digest"), "{err}");
        assert!(cache_repository("Not A Ref").is_err());
    }

    #[test]
    fn known_symptoms_get_a_hint_and_others_stay_as_they_are() {
        let mut m = "executor failed running [/bin/sh -c x]: network bridge not found".to_string();
        explain(&mut m);
        assert!(m.ends_with("on the target or in [defaults]"), "{m}");
        let mut m = "exit code: 3".to_string();
        explain(&mut m);
        assert_eq!(m, "exit code: 3");
    }
}
