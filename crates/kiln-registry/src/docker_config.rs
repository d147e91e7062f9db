//! Registry credentials, read the way the Docker CLI reads them: `$DOCKER_CONFIG/config.json`
//! (else `~/.docker/config.json`), then per registry a `credHelpers` entry, else the
//! `credsStore`, else the plain `auths` entry. kiln's registry clients use them, and so does the
//! BuildKit session's Auth service (through kiln-app).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::Credentials;

/// The config key `docker login` uses for Docker Hub.
const HUB_KEY: &str = "https://index.docker.io/v1/";
const HUB_HOSTS: &[&str] = &["index.docker.io", "docker.io", "registry-1.docker.io"];

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {file}: {1}", file = .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{file} is not a valid Docker config: {1}", file = .0.display())]
    Invalid(PathBuf, String),
    #[error("credential helper `{0}` is not in PATH")]
    HelperMissing(String),
    /// The helper program and what it said.
    #[error("credential helper `{0}` failed: {1}")]
    Helper(String, String),
}

/// The credential settings of a Docker CLI config; the default has none (anonymous).
#[derive(Clone, Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
    creds_store: String,
    cred_helpers: BTreeMap<String, String>,
    /// Where `docker-credential-*` programs are looked up (`PATH`).
    path: Option<OsString>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("auths", &self.auths.keys().collect::<Vec<_>>())
            .field("creds_store", &self.creds_store)
            .field("cred_helpers", &self.cred_helpers)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    auth: String,
    username: String,
    password: String,
    #[serde(alias = "identityToken")]
    identitytoken: String,
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl DockerConfig {
    /// Where the Docker CLI keeps its config in the environment `env`:
    /// `$DOCKER_CONFIG/config.json` (when set and not empty), else `$HOME/.docker/config.json`;
    /// `None` without either.
    pub fn file(env: &BTreeMap<String, String>) -> Option<PathBuf> {
        env.get("DOCKER_CONFIG")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| env.get("HOME").map(|home| Path::new(home).join(".docker")))
            .map(|dir| dir.join("config.json"))
    }

    /// Load from the given environment: [`DockerConfig::file`] (none: anonymous), helpers looked
    /// up in its `PATH`.
    pub fn load(env: &BTreeMap<String, String>) -> Result<DockerConfig, AuthError> {
        let path = env.get("PATH").map(OsString::from);
        match DockerConfig::file(env) {
            Some(file) => DockerConfig::load_file(&file, path),
            None => Ok(DockerConfig::with_path(path)),
        }
    }

    /// No config file: every registry anonymous; helpers would be looked up in `path`.
    pub fn with_path(path: Option<OsString>) -> DockerConfig {
        DockerConfig {
            path,
            ..Default::default()
        }
    }

    /// Load one config file (missing = no credentials); helpers are looked up in `path`.
    pub fn load_file(file: &Path, path: Option<OsString>) -> Result<DockerConfig, AuthError> {
        let text = match std::fs::read_to_string(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            read => read.map_err(|e| AuthError::Read(file.into(), e))?,
        };
        let mut config = DockerConfig::with_path(path);
        if text.trim().is_empty() {
            return Ok(config);
        }
        let invalid = |reason: String| AuthError::Invalid(file.into(), reason);
        let parsed: ConfigFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for (key, entry) in parsed.auths {
            let creds = if !entry.identitytoken.is_empty() {
                Credentials::new("", entry.identitytoken)
            } else if !entry.auth.is_empty() {
                let bad = |e| invalid(format!("auths.\"{key}\".auth {e}"));
                decode_auth(&entry.auth).map_err(bad)?
            } else {
                Credentials::new(entry.username, entry.password)
            };
            config.auths.insert(key, creds);
        }
        config.creds_store = parsed.creds_store;
        config.cred_helpers = parsed.cred_helpers;
        Ok(config)
    }

    /// Credentials for a registry host as the daemon names it (`registry-1.docker.io`,
    /// `127.0.0.1:5000`); `None` means anonymous. Runs a credential helper if one is set.
    pub fn credentials(&self, host: &str) -> Result<Option<Credentials>, AuthError> {
        let wanted = canonical(host);
        let server = if wanted == HUB_HOSTS[0] {
            HUB_KEY
        } else {
            host
        };
        let helper = lookup(&self.cred_helpers, server, &wanted)
            .filter(|h| !h.is_empty())
            .or(Some(&self.creds_store).filter(|s| !s.is_empty()));
        let creds = match helper {
            Some(helper) => self.run_helper(helper, server)?,
            None => lookup(&self.auths, server, &wanted).cloned(),
        };
        Ok(creds.filter(|c| !c.username.is_empty() || !c.secret.is_empty()))
    }

    /// `docker-credential-NAME get`, the server URL on stdin, JSON on stdout.
    fn run_helper(&self, name: &str, server: &str) -> Result<Option<Credentials>, AuthError> {
        let program = format!("docker-credential-{name}");
        let exe = find_program(&program, self.path.as_ref())
            .ok_or_else(|| AuthError::HelperMissing(program.clone()))?;
        let failed = |message: String| AuthError::Helper(program.clone(), message);
        let mut cmd = Command::new(&exe);
        cmd.arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading; its exit status tells.
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let message = [stdout.trim(), stderr.trim()].join(" ").trim().to_string();
            if message.contains("credentials not found") {
                return Ok(None);
            }
            return Err(failed(format!("{}: {message}", out.status)));
        }
        let reply: HelperReply = serde_json::from_slice(&out.stdout)
            .map_err(|e| failed(format!("unreadable reply: {e}")))?;
        // `docker login` stores an identity token as the user `<token>`.
        let username = if reply.username == "<token>" {
            ""
        } else {
            &reply.username
        };
        Ok(Some(Credentials::new(username, reply.secret)))
    }
}

/// A config key or host without scheme and path, Docker Hub's aliases as `index.docker.io`.
fn canonical(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or_default();
    let hub = HUB_HOSTS.contains(&host);
    (if hub { HUB_HOSTS[0] } else { host }).to_string()
}

/// The exact key first, as the Docker CLI does, then any key that normalises to the host.
fn lookup<'a, V>(map: &'a BTreeMap<String, V>, key: &str, wanted: &str) -> Option<&'a V> {
    let normalised = || map.iter().find(|(k, _)| canonical(k) == wanted);
    map.get(key).or_else(|| normalised().map(|(_, v)| v))
}

/// base64 of `user:password`.
fn decode_auth(auth: &str) -> Result<Credentials, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("is not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8".to_string())?;
    match text.split_once(':') {
        Some((user, pw)) if !user.is_empty() => Ok(Credentials::new(user, pw.trim_matches('\0'))),
        _ => Err("is not base64 of `user:password`".to_string()),
    }
}

fn find_program(program: &str, path: Option<&OsString>) -> Option<PathBuf> {
    let runnable = |m: std::fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(runnable))
}

#[cfg(test)]
mod tests;
