//! Every setting a command reads besides the manifests, resolved once from [`Settings`] (the
//! flags and the environment the CLI read with `vars_os`), each from low to high precedence:
//!
//! - the builder (and `kiln build`'s pool): the Docker Engine at `DOCKER_HOST` (unix only) or
//!   `/var/run/docker.sock` < the `builders` of kiln's config file < `BUILDKIT_HOST` <
//!   `--builder` (see `builder`);
//! - its TLS files: `KILN_TLS_CA`/`_CERT`/`_KEY`/`_SERVER_NAME` < `--tls-*`;
//! - kiln's config file: `~/.config/kiln/config.toml` < `$XDG_CONFIG_HOME/kiln/config.toml` <
//!   `$KILN_CONFIG`;
//! - the Docker CLI config (registry credentials): `~/.docker/config.json` <
//!   `$DOCKER_CONFIG/config.json`;
//! - registries reached over plain HTTP besides loopback: `KILN_INSECURE_REGISTRIES`;
//! - kiln's state directory: `/var/lib/kiln` < `~/.local/state/kiln` < `$XDG_STATE_HOME/kiln` <
//!   `$KILN_STATE_DIR`;
//! - how long a connection to the builder may stay silent before kiln pings it: 20 s
//!   (`kiln_buildkit::DEFAULT_KEEPALIVE`) < `KILN_BUILDER_KEEPALIVE=SECONDS`.
//!
//! A setting that cannot be resolved (a bad `BUILDKIT_HOST`, an unreadable config file) is an
//! error only for a command that needs it, as the same error every time it is asked for: `kiln
//! plan` does not care about the builder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kiln_buildkit::{Endpoint, Tls};
use kiln_registry::DockerConfig;

use crate::{AppError, Settings};

/// What [`Settings`] resolves to; see the module documentation for each setting's sources.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The builder a single-builder command uses, and where it came from.
    builder: Result<(Endpoint, &'static str), Deferred>,
    /// `kiln build`'s builders, in the order given (one unless a pool was given).
    pool: Result<Vec<Endpoint>, Deferred>,
    docker_socket: Result<PathBuf, Deferred>,
    tls: Tls,
    config_file: Option<PathBuf>,
    docker_config_file: Option<PathBuf>,
    /// `PATH`, where credential helpers are looked up.
    path: Option<std::ffi::OsString>,
    /// Loaded from `docker_config_file` when first asked for (most commands never are); the
    /// error as commands report it.
    docker_config: OnceLock<Result<DockerConfig, String>>,
    insecure_registries: Vec<String>,
    state_dir: PathBuf,
    keepalive: std::time::Duration,
}

impl Resolved {
    /// Resolve `settings`: reads kiln's config file (only when no `--builder` or
    /// `BUILDKIT_HOST` is given), nothing else; the Docker CLI config is read when first
    /// asked for.
    pub fn new(settings: &Settings) -> Resolved {
        let env = &settings.env;
        let options = &settings.builder;
        let docker_socket = docker_socket(env).map_err(Deferred::keep);
        let socket = || docker_socket.clone().map_err(|d| d.error());
        let tls = crate::builder::tls(options, env);
        let config_file = crate::builder::config_path(env);
        let (builder, pool) = match crate::builder::urls(options, env, config_file.as_deref()) {
            Err(e) => {
                let kept = Deferred::keep(e);
                (Err(kept.clone()), Err(kept))
            }
            Ok((urls, source)) => {
                let parsed: Vec<Result<Endpoint, Deferred>> = urls
                    .iter()
                    .map(|url| {
                        crate::builder::endpoint(url, source, socket, &tls).map_err(Deferred::keep)
                    })
                    .collect();
                match parsed.first() {
                    // No builder given: the Docker Engine.
                    None => {
                        let source = if env.contains_key("DOCKER_HOST") {
                            "DOCKER_HOST"
                        } else {
                            "the default Docker socket"
                        };
                        let engine = docker_socket
                            .clone()
                            .map(|socket| Endpoint::Docker { socket });
                        (engine.clone().map(|e| (e, source)), engine.map(|e| vec![e]))
                    }
                    Some(first) => {
                        let first = first.clone().map(|e| (e, source));
                        (first, pool(parsed, source))
                    }
                }
            }
        };
        Resolved {
            builder,
            pool,
            docker_socket,
            tls,
            config_file,
            docker_config_file: DockerConfig::file(env),
            path: env.get("PATH").map(std::ffi::OsString::from),
            docker_config: OnceLock::new(),
            insecure_registries: insecure_registries(env),
            state_dir: state_dir(env),
            keepalive: keepalive(env),
        }
    }

    /// The builder a single-builder command (`engine status`, `trace`, up-to-date checks)
    /// uses, and where it came from (`--builder`, `BUILDKIT_HOST`, `DOCKER_HOST`, …): the
    /// first of a pool.
    pub fn builder(&self) -> Result<(&Endpoint, &'static str), AppError> {
        match &self.builder {
            Ok((endpoint, source)) => Ok((endpoint, source)),
            Err(d) => Err(d.error()),
        }
    }

    /// Every builder `kiln build` schedules across, in the order given; a builder given twice
    /// is an error.
    pub fn builders(&self) -> Result<&[Endpoint], AppError> {
        self.pool.as_deref().map_err(Deferred::error)
    }

    /// The Docker Engine's socket: `DOCKER_HOST` (unix only), else the default.
    pub fn docker_socket(&self) -> Result<&Path, AppError> {
        self.docker_socket.as_deref().map_err(Deferred::error)
    }

    /// The TLS files for a `tcp://` builder (already in its [`Endpoint`]).
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Where kiln's config file is looked for (`None`: no place to look).
    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// Where the Docker CLI config is read from (`None`: no `DOCKER_CONFIG` and no `HOME`).
    pub fn docker_config_file(&self) -> Option<&Path> {
        self.docker_config_file.as_deref()
    }

    /// Registry credentials from the Docker CLI config.
    pub fn docker_config(&self) -> Result<&DockerConfig, AppError> {
        self.docker_config
            .get_or_init(|| {
                let path = self.path.clone();
                match &self.docker_config_file {
                    Some(file) => DockerConfig::load_file(file, path),
                    None => Ok(DockerConfig::with_path(path)),
                }
                .map_err(|e| format!("registry credentials: {e}"))
            })
            .as_ref()
            .map_err(|message| AppError::Build(message.clone()))
    }

    /// The Docker CLI config as the BuildKit session's credential source.
    pub(crate) fn session_auth(&self) -> Result<Arc<dyn kiln_buildkit::RegistryAuth>, AppError> {
        Ok(Arc::new(SessionAuth(self.docker_config()?.clone())))
    }

    /// Registries to reach over plain HTTP besides loopback ones (`KILN_INSECURE_REGISTRIES`,
    /// comma-separated hosts).
    pub fn insecure_registries(&self) -> &[String] {
        &self.insecure_registries
    }

    /// Where kiln keeps its own state (the engine it starts: pid file, log).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// How long a connection to the builder may stay silent before kiln pings it, and how
    /// long the answer may then take (`KILN_BUILDER_KEEPALIVE`).
    pub fn keepalive(&self) -> std::time::Duration {
        self.keepalive
    }
}

impl Settings {
    /// The settings resolved (on first use; the same value for the rest of the command).
    pub fn resolved(&self) -> &Resolved {
        self.resolved.0.get_or_init(|| Resolved::new(self))
    }
}

/// [`Settings::resolved`]'s cache. Leave it `Default` when making [`Settings`].
#[derive(Debug, Clone, Default)]
pub struct ResolvedOnce(OnceLock<Resolved>);

/// The pool from every URL parsed, in order: the first bad one, or a builder given twice, is
/// the error.
fn pool(
    parsed: Vec<Result<Endpoint, Deferred>>,
    source: &'static str,
) -> Result<Vec<Endpoint>, Deferred> {
    let mut pool: Vec<Endpoint> = Vec::new();
    for e in parsed {
        let e = e?;
        if pool.iter().any(|p| p.to_string() == e.to_string()) {
            return Err(Deferred::Usage(format!(
                "{source}: the builder {e} is given twice"
            )));
        }
        pool.push(e);
    }
    Ok(pool)
}

/// The Docker socket from `DOCKER_HOST` (unix only), else the default.
fn docker_socket(env: &BTreeMap<String, String>) -> Result<PathBuf, AppError> {
    match env.get("DOCKER_HOST") {
        None => Ok(PathBuf::from(kiln_docker::DEFAULT_SOCKET)),
        Some(host) => host
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or_else(|| {
                AppError::Usage(format!(
                    "DOCKER_HOST={host}: kiln manages only a local engine on a unix socket (unix:///path)"
                ))
            }),
    }
}

/// `KILN_INSECURE_REGISTRIES`: comma-separated hosts, blanks dropped.
fn insecure_registries(env: &BTreeMap<String, String>) -> Vec<String> {
    env.get("KILN_INSECURE_REGISTRIES")
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `$KILN_STATE_DIR`, else `$XDG_STATE_HOME/kiln`, else `~/.local/state/kiln`, else
/// `/var/lib/kiln`.
fn state_dir(env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(dir) = env.get("KILN_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env.get("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("kiln");
    }
    match env.get("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/kiln"),
        None => PathBuf::from("/var/lib/kiln"),
    }
}

/// `KILN_BUILDER_KEEPALIVE=SECONDS`, a whole number above 0; anything else (unset, blank, `0`,
/// not a number) is the default, 20 s.
fn keepalive(env: &BTreeMap<String, String>) -> std::time::Duration {
    env.get("KILN_BUILDER_KEEPALIVE")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(
            kiln_buildkit::DEFAULT_KEEPALIVE,
            std::time::Duration::from_secs,
        )
}

/// The Docker CLI config answering the session's Auth service.
#[derive(Debug)]
struct SessionAuth(DockerConfig);

impl kiln_buildkit::RegistryAuth for SessionAuth {
    fn credentials(&self, host: &str) -> Result<Option<(String, String)>, String> {
        self.0
            .credentials(host)
            .map(|c| c.map(|c| (c.username, c.secret)))
            .map_err(|e| e.to_string())
    }
}

/// A resolution error kept for the command that needs the setting, given back as the same
/// [`AppError`] (same message, same exit code) every time.
#[derive(Debug, Clone)]
enum Deferred {
    Usage(String),
    Io {
        path: PathBuf,
        action: &'static str,
        kind: std::io::ErrorKind,
        message: String,
    },
    /// One of the above with a hint of its own.
    Hinted(Box<Deferred>, String),
    /// Any other error, by its message (resolution makes only the three above).
    Other(String),
}

impl Deferred {
    fn keep(e: AppError) -> Deferred {
        Deferred::of(&e)
    }

    fn of(e: &AppError) -> Deferred {
        match e {
            AppError::Usage(message) => Deferred::Usage(message.clone()),
            AppError::Hinted { error, hint } => {
                Deferred::Hinted(Box::new(Deferred::of(error)), hint.clone())
            }
            AppError::Io {
                path,
                action,
                source,
            } => Deferred::Io {
                path: path.clone(),
                action,
                kind: source.kind(),
                message: source.to_string(),
            },
            // Kept as it is shown (its hints too), without the `error: ` the kept error adds.
            other => Deferred::Other(other.unprefixed()),
        }
    }

    fn error(&self) -> AppError {
        match self {
            Deferred::Usage(message) => AppError::Usage(message.clone()),
            Deferred::Hinted(error, hint) => error.error().with_hint(hint.clone()),
            Deferred::Io {
                path,
                action,
                kind,
                message,
            } => AppError::Io {
                path: path.clone(),
                action,
                source: std::io::Error::new(*kind, message.clone()),
            },
            Deferred::Other(message) => AppError::Build(message.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
