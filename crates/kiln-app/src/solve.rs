//! `kiln build`'s solve: what the build reads from the settings and the loaded manifests is
//! resolved here (the builders, the Docker Engine for `--load`, remote cache credentials, zip
//! artifacts unpacked) and handed to `kiln-solve`, which solves the targets.

use kiln_solve::{BuildOptions, Built, Goal, Progress};

use kiln_graph::PackagesMode;

use crate::{AppError, Loaded, Settings, load};

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
        kiln_solve::check_refreshable(&loaded.manifest, &options.targets, &selected)?;
    }
    let endpoints = settings.resolved().builders()?.to_vec();
    let docker = if options.load {
        Some(settings.resolved().docker_socket()?.to_path_buf())
    } else {
        None
    };
    let mut access = None;
    let cache = kiln_solve::remote_cache(&loaded.manifest, &selected, options, |reference| {
        if access.is_none() {
            access = Some(crate::pin::Access::new(settings)?);
        }
        match &access {
            Some(access) => access.auth_header(reference),
            None => Ok(String::new()),
        }
    })?;
    // Zip artifacts are unpacked here and served as local sources until the build ends.
    let artifacts = crate::artifacts::unpack(settings, &loaded.manifest, &selected)?;
    let job = kiln_solve::Job::new(kiln_solve::Input {
        docker,
        exported: match options.output {
            Some(_) => kiln_graph::Graph::named(&loaded.manifest, &options.targets)?,
            None => Default::default(),
        },
        local_sources: artifacts.sources(),
        cache,
        endpoints,
        keepalive: settings.resolved().keepalive(),
        cwd: &settings.cwd,
        env: &settings.env,
        registry_auth: Some(settings.resolved().session_auth()?),
        manifest: &loaded.manifest,
        graph: &loaded.graph,
        kiln_lock: &loaded.lock_path,
        selected: &selected,
        fresh,
        options,
    })?;
    // Ctrl-C drops the in-flight solves, which cancels their gRPC calls and so the jobs.
    let result = crate::runtime::block_on(job.run(progress))?;
    drop(artifacts);
    Ok(result?)
}
