//! Which BuildKit to use: `--builder URL`, else `BUILDKIT_HOST`, else the first of `builders =
//! [...]` in kiln's config file (`$KILN_CONFIG`, else `$XDG_CONFIG_HOME/kiln/config.toml`, else
//! `~/.config/kiln/config.toml`), else the Docker Engine at `DOCKER_HOST` or the default socket.
//! A build may use a pool: every `--builder` given, else the same sources. TLS files for a
//! `tcp://` builder come from `--tls-ca/--tls-cert/--tls-key` or
//! `KILN_TLS_CA/KILN_TLS_CERT/KILN_TLS_KEY`. These are the pieces [`crate::Resolved`] puts
//! together, once per command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_buildkit::{Endpoint, Tls};

use crate::AppError;

/// The builder chosen on the command line.
#[derive(Debug, Clone, Default)]
pub struct BuilderOptions {
    /// `--builder URL`, the first one given.
    pub url: Option<String>,
    /// Further `--builder URL`s: a pool of builders for `kiln build`.
    pub more: Vec<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

/// The builder URLs in the order given and where they came from: every `--builder` (the first
/// is the one a single-builder command uses), else `BUILDKIT_HOST`, else the `builders` of
/// kiln's config file (`config_file`, read only then); none means the Docker Engine.
pub(crate) fn urls(
    options: &BuilderOptions,
    env: &BTreeMap<String, String>,
    config_file: Option<&Path>,
) -> Result<(Vec<String>, &'static str), AppError> {
    Ok(match (&options.url, env.get("BUILDKIT_HOST")) {
        (Some(url), _) => {
            let mut all = vec![url.clone()];
            all.extend(options.more.iter().cloned());
            (all, "--builder")
        }
        (None, Some(url)) if !url.is_empty() => (vec![url.clone()], "BUILDKIT_HOST"),
        _ => (
            config_builders(config_file, env)?,
            "builders in kiln's config file",
        ),
    })
}

/// kiln's config file: `$KILN_CONFIG`, else `$XDG_CONFIG_HOME/kiln/config.toml`, else
/// `~/.config/kiln/config.toml`; `None` without a place to look.
pub(crate) fn config_path(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let env = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("KILN_CONFIG")
        .or_else(|| env("XDG_CONFIG_HOME").map(|d| d.join("kiln/config.toml")))
        .or_else(|| env("HOME").map(|h| h.join(".config/kiln/config.toml")))
}

/// The config file as read: only `builders`, a list of builder URLs.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    builders: Vec<String>,
}

/// `builders` from kiln's config file (none when there is no file; `$KILN_CONFIG` must exist).
fn config_builders(
    path: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, AppError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !env.contains_key("KILN_CONFIG") => {
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(AppError::Io {
                path: path.to_path_buf(),
                action: "read kiln's config file",
                source,
            });
        }
    };
    let config: ConfigFile = toml::from_str(&text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                let (line, column) = kiln_manifest::line_column(&text, span.start);
                format!(":{line}:{column}")
            }
            None => String::new(),
        };
        AppError::Usage(format!("{}{place}: {}", path.display(), e.message())).with_hint(
            "kiln's config file takes `builders = [\"docker://\", \"unix:///run/buildkit/buildkitd.sock\"]`",
        )
    })?;
    Ok(config.builders)
}

/// The TLS files for a `tcp://` builder: each flag, else its `KILN_TLS_*` variable.
pub(crate) fn tls(options: &BuilderOptions, env: &BTreeMap<String, String>) -> Tls {
    let from_env = |key: &str| env.get(key).map(PathBuf::from);
    Tls {
        ca: options.tls_ca.clone().or_else(|| from_env("KILN_TLS_CA")),
        cert: options
            .tls_cert
            .clone()
            .or_else(|| from_env("KILN_TLS_CERT")),
        key: options.tls_key.clone().or_else(|| from_env("KILN_TLS_KEY")),
        server_name: options
            .tls_server_name
            .clone()
            .or_else(|| env.get("KILN_TLS_SERVER_NAME").cloned()),
    }
}

/// `url` (from `source`) as an endpoint with the TLS files; `docker://` is the engine at
/// `docker_socket`.
pub(crate) fn endpoint(
    url: &str,
    source: &'static str,
    docker_socket: impl FnOnce() -> Result<PathBuf, AppError>,
    tls: &Tls,
) -> Result<Endpoint, AppError> {
    let mut endpoint = if url == "docker://" || url == "docker" {
        Endpoint::Docker {
            socket: docker_socket()?,
        }
    } else {
        Endpoint::parse(url).map_err(|e| AppError::Usage(format!("{source}: {e}")))?
    };
    let wants_tls = *tls != Tls::default();
    match &mut endpoint {
        Endpoint::Tcp { tls: slot, .. } if wants_tls => *slot = Some(tls.clone()),
        Endpoint::Tcp { .. } => {}
        _ if wants_tls => {
            return Err(AppError::Usage(format!(
                "TLS settings apply to tcp:// builders only, not {endpoint}"
            )));
        }
        _ => {}
    }
    Ok(endpoint)
}

/// What to check when `endpoint` cannot be reached or drops the connection at once.
pub(crate) use kiln_solve::builder_hint as hint;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resolved, Settings};

    /// The builder a single-builder command uses, as resolved.
    fn choose(settings: &Settings) -> Result<(Endpoint, &'static str), AppError> {
        let resolved = Resolved::new(settings);
        resolved.builder().map(|(e, source)| (e.clone(), source))
    }

    /// The pool `kiln build` uses, as resolved.
    fn choose_all(settings: &Settings) -> Result<Vec<Endpoint>, AppError> {
        Resolved::new(settings).builders().map(<[Endpoint]>::to_vec)
    }

    fn settings(url: Option<&str>, env: &[(&str, &str)]) -> Settings {
        Settings {
            builder: BuilderOptions {
                url: url.map(str::to_string),
                ..BuilderOptions::default()
            },
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Settings::default()
        }
    }

    #[test]
    fn flag_beats_buildkit_host_beats_docker_host() {
        let env = [
            ("BUILDKIT_HOST", "tcp://10.1.1.1:1234"),
            ("DOCKER_HOST", "unix:///run/other.sock"),
        ];
        let (e, from) =
            choose(&settings(Some("unix:///run/buildkit/buildkitd.sock"), &env)).unwrap();
        assert_eq!(e.to_string(), "unix:///run/buildkit/buildkitd.sock");
        assert_eq!(from, "--builder");
        let (e, from) = choose(&settings(None, &env)).unwrap();
        assert_eq!(e.to_string(), "tcp://10.1.1.1:1234");
        assert_eq!(from, "BUILDKIT_HOST");
        let (e, from) = choose(&settings(None, &env[1..])).unwrap();
        assert_eq!(e.to_string(), "docker:///run/other.sock");
        assert_eq!(from, "DOCKER_HOST");
        let (e, _) = choose(&settings(Some("docker://"), &env[1..])).unwrap();
        assert_eq!(e.to_string(), "docker:///run/other.sock");
        let (e, _) = choose(&settings(None, &[])).unwrap();
        assert_eq!(e.to_string(), "docker:///var/run/docker.sock");
    }

    #[test]
    fn pools_come_from_repeated_flags_else_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "builders = [\"unix:///a.sock\", \"tcp://b:1234\"]\n").unwrap();
        let config = file.to_str().unwrap();
        let mut s = settings(Some("unix:///x.sock"), &[("KILN_CONFIG", config)]);
        s.builder.more = vec!["unix:///y.sock".into()];
        let names = |s: &Settings| -> Vec<String> {
            choose_all(s)
                .unwrap()
                .iter()
                .map(|e| e.to_string())
                .collect()
        };
        assert_eq!(names(&s), ["unix:///x.sock", "unix:///y.sock"]);
        // Without flags: the config file's list, in order; `choose` takes its first.
        let s = settings(None, &[("KILN_CONFIG", config)]);
        assert_eq!(names(&s), ["unix:///a.sock", "tcp://b:1234"]);
        assert_eq!(choose(&s).unwrap().0.to_string(), "unix:///a.sock");
        // BUILDKIT_HOST still wins over the file.
        let s = settings(
            None,
            &[("KILN_CONFIG", config), ("BUILDKIT_HOST", "unix:///z.sock")],
        );
        assert_eq!(names(&s), ["unix:///z.sock"]);
        // XDG_CONFIG_HOME/kiln/config.toml when KILN_CONFIG is not set; none is fine.
        std::fs::create_dir_all(dir.path().join("kiln")).unwrap();
        std::fs::copy(&file, dir.path().join("kiln/config.toml")).unwrap();
        let xdg = dir.path().to_str().unwrap();
        assert_eq!(
            names(&settings(None, &[("XDG_CONFIG_HOME", xdg)])),
            ["unix:///a.sock", "tcp://b:1234"]
        );
        assert_eq!(
            names(&settings(None, &[("XDG_CONFIG_HOME", "/nonexistent")])),
            ["docker:///var/run/docker.sock"]
        );
        // Errors name the file, line and column, and the key.
        std::fs::write(&file, "builders = [\"unix:///a.sock\"]\nbuilder = 1\n").unwrap();
        let err = choose_all(&settings(None, &[("KILN_CONFIG", config)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{config}:2:1")) && err.contains("builder"),
            "{err}"
        );
        std::fs::write(&file, "builders = \"unix:///a.sock\"\n").unwrap();
        let err = choose_all(&settings(None, &[("KILN_CONFIG", config)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{config}:1:12")), "{err}");
        // A named config file that is missing, and a builder given twice, are errors.
        let err = choose_all(&settings(None, &[("KILN_CONFIG", "/nonexistent/k.toml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/k.toml"), "{err}");
        let mut s = settings(Some("unix:///x.sock"), &[]);
        s.builder.more = vec!["unix:///x.sock".into()];
        assert!(
            choose_all(&s)
                .unwrap_err()
                .to_string()
                .contains("given twice")
        );
    }

    #[test]
    fn tls_only_for_tcp_and_bad_urls_name_their_source() {
        let mut s = settings(
            None,
            &[
                ("BUILDKIT_HOST", "tcp://b:1234"),
                ("KILN_TLS_CA", "/ca.pem"),
            ],
        );
        let (e, _) = choose(&s).unwrap();
        assert_eq!(e.to_string(), "tcp://b:1234 (TLS)");
        s.env
            .insert("BUILDKIT_HOST".into(), "unix:///b.sock".into());
        let err = choose(&s).unwrap_err().to_string();
        assert!(err.contains("tcp:// builders only"), "{err}");
        let err = choose(&settings(None, &[("BUILDKIT_HOST", "ssh://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BUILDKIT_HOST") && err.contains("ssh://x"),
            "{err}"
        );
    }
}
