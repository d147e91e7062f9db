//! Which BuildKit to use: `--builder URL`, else `BUILDKIT_HOST`, else the Docker Engine at
//! `DOCKER_HOST` or the default socket. TLS files for a `tcp://` builder come from
//! `--tls-ca/--tls-cert/--tls-key` or `KILN_TLS_CA/KILN_TLS_CERT/KILN_TLS_KEY`.

use std::path::PathBuf;

use kiln_buildkit::{Endpoint, Tls};

use crate::{AppError, Settings};

/// The builder chosen on the command line.
#[derive(Debug, Clone, Default)]
pub struct BuilderOptions {
    /// `--builder URL`.
    pub url: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
}

/// The endpoint kiln will use and where that choice came from.
pub fn choose(settings: &Settings) -> Result<(Endpoint, &'static str), AppError> {
    let options = &settings.builder;
    let (url, source) = match (&options.url, settings.env.get("BUILDKIT_HOST")) {
        (Some(url), _) => (Some(url.clone()), "--builder"),
        (None, Some(url)) if !url.is_empty() => (Some(url.clone()), "BUILDKIT_HOST"),
        _ => (None, ""),
    };
    let Some(url) = url else {
        let socket = crate::engine::docker_socket(settings)?;
        let source = if settings.env.contains_key("DOCKER_HOST") {
            "DOCKER_HOST"
        } else {
            "the default Docker socket"
        };
        return Ok((Endpoint::Docker { socket }, source));
    };
    let mut endpoint = if url == "docker://" || url == "docker" {
        Endpoint::Docker {
            socket: crate::engine::docker_socket(settings)?,
        }
    } else {
        Endpoint::parse(&url).map_err(|e| AppError::Usage(format!("{source}: {e}")))?
    };
    let from_env = |key: &str| settings.env.get(key).map(PathBuf::from);
    let tls = Tls {
        ca: options.tls_ca.clone().or_else(|| from_env("KILN_TLS_CA")),
        cert: options
            .tls_cert
            .clone()
            .or_else(|| from_env("KILN_TLS_CERT")),
        key: options.tls_key.clone().or_else(|| from_env("KILN_TLS_KEY")),
        server_name: options
            .tls_server_name
            .clone()
            .or_else(|| settings.env.get("KILN_TLS_SERVER_NAME").cloned()),
    };
    let wants_tls = tls != Tls::default();
    match &mut endpoint {
        Endpoint::Tcp { tls: slot, .. } if wants_tls => *slot = Some(tls),
        Endpoint::Tcp { .. } => {}
        _ if wants_tls => {
            return Err(AppError::Usage(format!(
                "TLS settings apply to tcp:// builders only, not {endpoint}"
            )));
        }
        _ => {}
    }
    Ok((endpoint, source))
}

/// What to check when `endpoint` cannot be reached or drops the connection at once.
pub(crate) fn hint(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Docker { .. } => "is the engine running? `kiln engine status`, `kiln engine up`",
        Endpoint::Tcp { tls: Some(_), .. } => {
            "is buildkitd listening there, and does it accept kiln's TLS files? A daemon that \
             requires a client certificate drops the connection without one (--tls-cert/--tls-key)"
        }
        _ => "is buildkitd running and listening there? (`--builder`, BUILDKIT_HOST)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
