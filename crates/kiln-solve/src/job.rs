//! One build: what every target's solves share ([`Job`]), the scheduler that solves each
//! target once its dependencies are built, and the solves of one target (smoke test, image,
//! refresh) on one builder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kiln_buildkit::{
    Client, Endpoint, FileOutput, LocalDir, ResolveMode, Returned, Session, SessionConfig,
    SolveRequest, Transfer,
};
use kiln_compile::{BaseConfigs, CompiledTarget, EffectiveConfig};
use kiln_graph::{Graph, StageKind};
use kiln_manifest::{Base, Manifest};
use kiln_reference::Reference;
use tokio::sync::mpsc;

use crate::pool::{
    Export, Member, answers, builder_hint, connect, failover_warning, home, is_moby,
    left_out_warning, next_alive,
};
use crate::stage::{Events, staged, staged_phases};
use crate::{BuildOptions, Built, Goal, Progress, RemoteCache, SolveError, Stored};

/// What a build is given, resolved by the caller: nothing here reads settings of its own.
pub struct Input<'a> {
    /// The builders, in the order given (one, or a pool), with their TLS files.
    pub endpoints: Vec<Endpoint>,
    /// How long a connection to a builder may stay silent before it is pinged (and how long
    /// the answer may take); [`kiln_buildkit::DEFAULT_KEEPALIVE`] unless configured.
    pub keepalive: std::time::Duration,
    /// The Docker Engine's socket, for `--load`.
    pub docker: Option<PathBuf>,
    /// The directory the command runs in: the manifests' paths are relative to it.
    pub cwd: &'a Path,
    /// The environment: secrets' variables, where the Docker CLI config is.
    pub env: &'a BTreeMap<String, String>,
    /// Where the sessions' Auth service gets registry credentials (`None`: anonymous).
    pub registry_auth: Option<std::sync::Arc<dyn kiln_buildkit::RegistryAuth>>,
    /// The manifests, resolved, with the pinned references `kiln.lock` gives.
    pub manifest: &'a Manifest,
    pub graph: &'a Graph,
    /// `kiln.lock`: never sent in a context.
    pub kiln_lock: &'a Path,
    /// The selected targets with their dependencies, in DAG order.
    pub selected: &'a [String],
    /// Up to date: not solved.
    pub fresh: &'a BTreeSet<String>,
    /// With `BuildOptions::output`: the targets to export (what was named, not dependencies).
    pub exported: BTreeSet<String>,
    /// The remote caches (see [`crate::remote_cache`]).
    pub cache: RemoteCache,
    /// Further local sources the sessions serve (unpacked zip artifacts): name → directory.
    pub local_sources: BTreeMap<String, PathBuf>,
    pub options: &'a BuildOptions,
}

/// One `kiln build`: what every target's solves share.
pub struct Job<'a> {
    /// The Docker Engine's socket, for `--load`.
    docker: Option<PathBuf>,
    config: SessionConfig,
    entitlements: Vec<String>,
    /// The builders, in the order given (one, or a pool).
    endpoints: Vec<Endpoint>,
    /// Every connection's keepalive (see [`Input::keepalive`]).
    keepalive: std::time::Duration,
    cwd: PathBuf,
    manifest: &'a Manifest,
    graph: &'a Graph,
    selected: &'a [String],
    /// Up to date: not solved.
    fresh: &'a BTreeSet<String>,
    /// With `BuildOptions::output`: the targets to export (what was named, not dependencies).
    exported: BTreeSet<String>,
    /// Per target with a remote cache: its reference (`REPO:<target>`).
    cache: BTreeMap<String, String>,
    /// Per cache reference: the registry credentials to push it with (Docker Engine).
    cache_auth: BTreeMap<String, String>,
    options: &'a BuildOptions,
}

impl<'a> Job<'a> {
    /// Everything a build can check before it connects: the sessions' contexts, CA bundles,
    /// secrets and registry credentials are read here (an unset secret variable is an error
    /// now, not after a solve).
    pub fn new(input: Input<'a>) -> Result<Job<'a>, SolveError> {
        let mut config = crate::session::session_config(
            input.cwd,
            input.env,
            input.manifest,
            input.selected,
            input.kiln_lock,
            input.registry_auth.clone(),
        )?;
        for (name, path) in input.local_sources {
            config.contexts.insert(
                name,
                LocalDir {
                    path,
                    exclude: Vec::new(),
                },
            );
        }
        Ok(Job {
            docker: input.docker,
            config,
            entitlements: crate::session::entitlements(input.manifest, input.selected),
            endpoints: input.endpoints,
            keepalive: input.keepalive,
            cwd: input.cwd.to_path_buf(),
            manifest: input.manifest,
            graph: input.graph,
            selected: input.selected,
            fresh: input.fresh,
            exported: input.exported,
            cache: input.cache.refs,
            cache_auth: input.cache.auth,
            options: input.options,
        })
    }

    /// Build, calling `progress` as things happen. Ctrl-C drops the in-flight solves, which
    /// cancels their gRPC calls and so the jobs ([`SolveError::Interrupted`]).
    pub async fn run(&self, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Built>, SolveError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let work = self.solve(tx);
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
                _ = &mut interrupted => break Err(SolveError::Interrupted),
            }
        }
    }
}

impl Job<'_> {
    /// Resolve the base images' configs, lower the targets with them, then build every target
    /// once the targets it depends on are built; independent targets build concurrently. With
    /// several builders, each target builds on the one [`home`] gives it; when a builder stops
    /// answering, its unfinished targets move to the next one that does.
    async fn solve(&self, tx: Events) -> Result<Vec<Built>, SolveError> {
        let pool = self.connect_pool(&tx).await?;
        let Some(first) = pool.iter().flatten().next() else {
            return Err(SolveError::NoBuilder);
        };
        let (bases, digests) = self.resolve_bases(&first.client, &tx).await?;
        let manifest = self.manifest;
        // Concurrent builds of other working trees must not share this tree's contexts.
        let unique = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(self.cwd.to_string_lossy().as_bytes())[..12])
        };
        let compiled =
            kiln_compile::compile(manifest, self.graph, self.selected, &bases, Some(&unique))?;

        let graph = self.graph;
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
                    return Err(SolveError::NoBuilderLeft {
                        target: target.name.clone(),
                    });
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
                Err(SolveError::Interrupted) => return Err(SolveError::Interrupted),
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
                    return Err(SolveError::PoolExhausted {
                        last: Box::new(error),
                    });
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
                    message: failover_warning(member.client.endpoint(), &error, &moved, &to),
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
    async fn connect_pool(&self, tx: &Events) -> Result<Vec<Option<Member>>, SolveError> {
        let tries = self.endpoints.iter().map(|endpoint| async move {
            let client = connect(endpoint, self.keepalive).await?;
            let export = self.export(&client).await?;
            Ok::<_, SolveError>(Member { client, export })
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
                        message: left_out_warning(endpoint, &e),
                    });
                    errors.push(e);
                    pool.push(None);
                }
            }
        }
        if pool.iter().all(Option::is_none) {
            return Err(SolveError::PoolDown { errors });
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
    ) -> Result<(BaseConfigs, BTreeMap<Reference, String>), SolveError> {
        let mut wanted: BTreeSet<(Reference, kiln_llb::Platform)> = BTreeSet::new();
        for name in self.selected {
            let target = &self.manifest.targets[name];
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
    ) -> Result<(), SolveError> {
        let mut wrong = Vec::new();
        for name in self.selected {
            let target = &self.manifest.targets[name];
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
            Err(SolveError::Platform(kiln_manifest::Diagnostics(wrong)))
        }
    }

    /// A session serving the contexts and secrets, and `output` as the local exporter's
    /// destination.
    async fn session(
        &self,
        client: &Client,
        output: Option<PathBuf>,
    ) -> Result<Session, SolveError> {
        self.session_with_file(client, output, None).await
    }

    /// [`Job::session`] that also takes a file exporter's output on `file`.
    async fn session_with_file(
        &self,
        client: &Client,
        output: Option<PathBuf>,
        file: Option<FileOutput>,
    ) -> Result<Session, SolveError> {
        let mut config = self.config.clone();
        config.output = output;
        config.output_file = file;
        Session::start(client, config)
            .await
            .map_err(|source| SolveError::Session {
                // Typically the daemon went away between two solves.
                hint: matches!(&source, kiln_buildkit::Error::Lost { .. })
                    .then(|| builder_hint(client.endpoint())),
                source,
            })
    }

    /// Where images go on this builder (see [`Export`]); with `--load` on a standalone
    /// buildkitd, the Docker Engine must answer before anything is built.
    async fn export(&self, client: &Client) -> Result<Export, SolveError> {
        let export = Export::choose(is_moby(client).await?, self.options.load, self.options.push);
        if let (Export::Load, Some(socket)) = (export, &self.docker) {
            let api = kiln_docker::Api::new(socket);
            let answer = tokio::task::spawn_blocking(move || api.ping()).await?;
            if let Err(e) = answer {
                return Err(SolveError::LoadEngine(e));
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
    ) -> Result<Built, SolveError> {
        let manifest_target = &self.manifest.targets[&target.name];
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
            let mut definition = kiln_llb::marshal(state)?;
            if self.options.no_cache {
                definition.ignore_cache()?;
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
                    let config = String::from_utf8(target.config.image_config(platform)).map_err(
                        |source| SolveError::ImageConfig {
                            target: target.name.clone(),
                            source,
                        },
                    )?;
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
                    let image_config = with_labels(
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
                    Some(loader.await?)
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
    ) -> Result<Built, SolveError> {
        let marshal = |kind: StageKind| -> Result<Option<kiln_llb::Definition>, SolveError> {
            let Some(state) = target.stage(kind) else {
                return Ok(None);
            };
            let mut definition = kiln_llb::marshal(state)?;
            if self.options.no_cache {
                definition.ignore_cache()?;
            }
            Ok(Some(definition))
        };
        let smoke = marshal(StageKind::SmokeTest)?;
        let Some(image) = marshal(StageKind::Image)? else {
            return Err(SolveError::NotCompiled {
                target: target.name.clone(),
                what: "image stage",
            });
        };
        let platform = &self.manifest.targets[&target.name].platform;
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
                let config = with_labels(
                    &target.config,
                    &self.manifest.targets[&target.name].config.labels,
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
    ) -> Result<String, SolveError> {
        let socket = self.docker.clone().unwrap_or_default();
        let failed = |why: String| SolveError::Load {
            target: target.to_string(),
            image: image.to_string(),
            socket: socket.clone(),
            why,
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
    ) -> Result<Built, SolveError> {
        let manifest_target = &self.manifest.targets[&target.name];
        let mut built = Built {
            target: target.name.clone(),
            ..Built::default()
        };
        let Some(packages) = &manifest_target.packages else {
            return Ok(built);
        };
        let marshal = |kind: StageKind| match target.stage(kind) {
            Some(state) => kiln_llb::marshal(state).map(Some).map_err(SolveError::from),
            None => Ok(None),
        };
        let (Some(packages_definition), Some(definition)) = (
            marshal(StageKind::PackagesRefresh)?,
            match marshal(StageKind::SmokeTest)? {
                Some(d) => Some(d),
                None => marshal(StageKind::Post)?,
            },
        ) else {
            return Err(SolveError::NotCompiled {
                target: target.name.clone(),
                what: "packages-refresh or post stage",
            });
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
                    (Some(locks), error @ SolveError::Step(_)) => SolveError::RefreshTestFailed {
                        target: target.name.clone(),
                        locks,
                        source: Box::new(error),
                    },
                    (_, error) => error,
                });
            }
        };
        Ok(built)
    }
}

/// `config` with `kiln`'s labels added, except where the manifest or profile set the key
/// (`manifest`: the target's own `config.labels`); kiln's replace labels inherited from the
/// base image.
pub(crate) fn with_labels(
    config: &EffectiveConfig,
    manifest: &BTreeMap<String, String>,
    kiln: Option<&BTreeMap<String, String>>,
) -> EffectiveConfig {
    let mut out = config.clone();
    for (k, v) in kiln.into_iter().flatten() {
        if !manifest.contains_key(k) {
            out.labels.insert(k.clone(), v.clone());
        }
    }
    out
}
