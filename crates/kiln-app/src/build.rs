//! `kiln build`: solve every selected target on BuildKit in DAG order — its smoke test first
//! when it has one, then its image, loaded into the Docker Engine's image store under the
//! target's `image` name. `BuildOptions::output` exports to a directory through the local
//! exporter instead; the CLI does not offer it yet because that transfer still stalls on large
//! filesystems against Docker 20.10.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_buildkit::{Client, Event, LocalDir, Session, SessionConfig, SolveRequest};
use kiln_compile::CA_BUNDLE_SECRET;
use kiln_graph::{PackagesMode, StageKind};
use kiln_manifest::{CaCertificates, Manifest, NetworkMode};
use tokio::sync::mpsc;

use crate::{AppError, Settings, load};

/// The host's CA bundle on Debian.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `kiln build` options.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Targets or groups (empty: the default group, else everything).
    pub targets: Vec<String>,
    /// Export each selected target's filesystem into `DIR/<target>` instead of the image store.
    pub output: Option<PathBuf>,
}

/// What happened to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub target: String,
    /// The image name it was loaded as, if any.
    pub image: Option<String>,
    /// Docker's image id (the config digest), when loaded into the image store.
    pub image_id: Option<String>,
    /// The directory it was exported to (`BuildOptions::output`).
    pub output: Option<PathBuf>,
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
}

/// Build the selected targets, calling `progress` as things happen.
pub fn build(
    settings: &Settings,
    options: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Built>, AppError> {
    let loaded = load(settings, PackagesMode::Pinned)?;
    let (selected, compiled) = loaded.compile(&options.targets)?;
    let socket = crate::engine::docker_socket(settings)?;
    let config = session_config(&settings.cwd, &loaded.manifest, &selected)?;
    let entitlements = entitlements(&loaded.manifest, &selected);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AppError::Engine(format!("cannot start the async runtime: {e}")))?;
    let work = async {
        let client = Client::connect_docker(&socket).await.map_err(|e| {
            AppError::Build(format!(
                "{e}\n  hint: is the engine running? `kiln engine status`, `kiln engine up`"
            ))
        })?;
        let mut built = Vec::new();
        for target in &compiled {
            let manifest_target = &loaded.manifest.targets[&target.name];
            let output = options.output.as_ref().map(|dir| {
                if compiled.len() == 1 {
                    dir.clone()
                } else {
                    dir.join(&target.name)
                }
            });
            let stages: Vec<StageKind> = [StageKind::SmokeTest, StageKind::Image]
                .into_iter()
                .filter(|k| target.stage(*k).is_some())
                .collect();
            let mut image_id = None;
            for kind in stages {
                let state = target.stage(kind).expect("filtered above");
                let definition =
                    kiln_llb::marshal(state).map_err(|e| AppError::Build(e.to_string()))?;
                let exporter = match (kind, &output, &manifest_target.image) {
                    (StageKind::Image, Some(_), _) => Some(("local".to_string(), BTreeMap::new())),
                    (StageKind::Image, None, Some(image)) => Some((
                        "moby".to_string(),
                        BTreeMap::from([("name".to_string(), image.to_string())]),
                    )),
                    _ => None,
                };
                let mut stage_config = config.clone();
                stage_config.output = if kind == StageKind::Image {
                    output.clone()
                } else {
                    None
                };
                let session = Session::start_docker(&socket, stage_config)
                    .await
                    .map_err(|e| AppError::Build(e.to_string()))?;
                let request = SolveRequest {
                    definition,
                    exporter,
                    session: Some(session.id().to_string()),
                    entitlements: entitlements.clone(),
                };
                progress(Progress::Stage {
                    target: target.name.clone(),
                    stage: kind.as_str(),
                });
                let response =
                    solve_with_progress(&client, request, &target.name, kind.as_str(), progress)
                        .await;
                session.close().await;
                let response = response?;
                if kind == StageKind::Image {
                    image_id = response.get("containerimage.digest").cloned();
                }
            }
            built.push(Built {
                target: target.name.clone(),
                image: if output.is_none() {
                    manifest_target.image.as_ref().map(|i| i.to_string())
                } else {
                    None
                },
                image_id: if output.is_none() { image_id } else { None },
                output,
            });
        }
        Ok(built)
    };
    // Ctrl-C drops the in-flight solve, which cancels its gRPC call and so the job.
    let result = runtime.block_on(async {
        tokio::select! {
            result = work => result,
            _ = tokio::signal::ctrl_c() => Err(AppError::Interrupted),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn solve_with_progress(
    client: &Client,
    request: SolveRequest,
    target: &str,
    stage: &'static str,
    progress: &mut dyn FnMut(Progress),
) -> Result<BTreeMap<String, String>, AppError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let solve = client.solve(request, tx);
    tokio::pin!(solve);
    let mut logs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let result = loop {
        tokio::select! {
            result = &mut solve => break result,
            Some(event) = rx.recv() => {
                remember(&event, &mut names, &mut logs);
                progress(Progress::Engine { target: target.to_string(), stage, event });
            }
        }
    };
    while let Ok(event) = rx.try_recv() {
        remember(&event, &mut names, &mut logs);
        progress(Progress::Engine {
            target: target.to_string(),
            stage,
            event,
        });
    }
    result.map_err(|e| {
        // A failed RUN: name the command and show the end of its output.
        let failed = names
            .iter()
            .find(|(d, _)| logs.contains_key(*d) && e.to_string().contains(names[*d].as_str()));
        let mut message = format!("{target}/{stage}: {e}");
        if let Some((digest, name)) = failed {
            let text = String::from_utf8_lossy(&logs[digest]).to_string();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            message.push_str(&format!("\n  step: {name}\n  last output:"));
            for line in tail.iter().rev() {
                message.push_str("\n    ");
                message.push_str(line);
            }
        }
        AppError::Build(message)
    })
}

fn remember(
    event: &Event,
    names: &mut BTreeMap<String, String>,
    logs: &mut BTreeMap<String, Vec<u8>>,
) {
    match event {
        Event::Vertex { digest, name, .. } => {
            names.insert(digest.clone(), name.clone());
        }
        Event::Log { vertex, data, .. } => logs
            .entry(vertex.clone())
            .or_default()
            .extend_from_slice(data),
        Event::Progress { .. } => {}
    }
}

/// Every selected target's context, its ignore files, and the CA bundle secret.
fn session_config(
    cwd: &Path,
    manifest: &Manifest,
    selected: &[String],
) -> Result<SessionConfig, AppError> {
    // A stable key per working tree lets the daemon reuse its last copy of each context.
    let mut config = SessionConfig {
        name: "kiln".to_string(),
        shared_key: format!("kiln:{}", cwd.display()),
        ..SessionConfig::default()
    };
    for name in selected {
        let target = &manifest.targets[name];
        let path = cwd.join(&target.context);
        let mut exclude = Vec::new();
        for ignore in [".dockerignore", ".kilnignore"] {
            if let Ok(text) = std::fs::read_to_string(path.join(ignore)) {
                exclude.extend(kiln_fsutil::Filter::from_ignore_file(&text));
            }
        }
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
            config.secrets.insert(CA_BUNDLE_SECRET.to_string(), data);
        }
    }
    Ok(config)
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
