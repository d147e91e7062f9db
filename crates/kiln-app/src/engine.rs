//! `kiln engine status|up|down`: which engine kiln would use, and a Docker Engine kiln starts
//! and stops itself when none is running.

use kiln_docker::{Engine, StartOutcome, StopOutcome};

use crate::{AppError, Settings};

/// The engine at `DOCKER_HOST` (or the default socket), its bookkeeping in kiln's state
/// directory.
fn engine(settings: &Settings) -> Result<Engine, AppError> {
    let resolved = settings.resolved();
    Ok(Engine::new(resolved.docker_socket()?, resolved.state_dir()))
}

fn engine_error(e: kiln_docker::EngineError) -> AppError {
    AppError::Engine(e.to_string())
}

/// `kiln engine status`: which builder kiln would use and what it is.
pub fn engine_status(settings: &Settings) -> Result<String, AppError> {
    let (endpoint, source) = settings.resolved().builder()?;
    let status = match endpoint {
        kiln_buildkit::Endpoint::Docker { socket } => docker_status(
            &Engine::new(socket, settings.resolved().state_dir()),
            settings.resolved().keepalive(),
        ),
        _ => buildkitd_status(endpoint, settings.resolved().keepalive()),
    }?;
    Ok(format!("builder: {endpoint} (from {source})\n{status}"))
}

/// A standalone buildkitd (or anything speaking its API): what BuildKit says about itself.
fn buildkitd_status(
    endpoint: &kiln_buildkit::Endpoint,
    keepalive: std::time::Duration,
) -> Result<String, AppError> {
    crate::runtime::block_on(async {
        let endpoint = endpoint.clone().probe().await;
        let failed = |e: kiln_buildkit::Error| {
            AppError::Engine(e.to_string()).with_hint(crate::builder::hint(&endpoint))
        };
        let client = kiln_buildkit::Client::connect(&endpoint, keepalive)
            .await
            .map_err(failed)?;
        let mut out = match client.info().await.map_err(failed)? {
            Some(info) => format!(
                "buildkit: {} {}{} at {endpoint}",
                info.package,
                info.version,
                if info.revision.is_empty() {
                    String::new()
                } else {
                    format!(" (revision {})", info.revision)
                }
            ),
            None => format!("buildkit: version unknown (no Info RPC) at {endpoint}"),
        };
        out.push('\n');
        out.push_str(&buildkit_details(&client).await.map_err(failed)?);
        Ok(out)
    })?
}

/// The lines `engine status` shows for any BuildKit: its workers with their platforms (with
/// variants: `linux/amd64/v2`), and which entitlements it grants (asked of it: no daemon
/// reports them).
async fn buildkit_details(client: &kiln_buildkit::Client) -> Result<String, kiln_buildkit::Error> {
    let workers = client.workers().await?;
    let mut out = format!("workers: {}", workers.len());
    for w in &workers {
        out.push_str(&format!("\n  worker {}: {}", w.id, w.platforms.join(", ")));
        let label = |key: &str| {
            w.labels
                .get(&format!("org.mobyproject.buildkit.worker.{key}"))
                .map(|v| format!("{key} {v}"))
        };
        let about: Vec<String> = ["executor", "snapshotter", "network"]
            .iter()
            .filter_map(|k| label(k))
            .chain(w.buildkit_version.iter().map(|v| format!("BuildKit {v}")))
            .collect();
        if !about.is_empty() {
            out.push_str(&format!(" ({})", about.join(", ")));
        }
    }
    let mut granted = Vec::new();
    for entitlement in ENTITLEMENTS {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.grants(entitlement),
        )
        .await
        .unwrap_or_else(|_| {
            Err(kiln_buildkit::Error::Failed {
                action: "entitlement check",
                message: "no answer within 10 s".to_string(),
            })
        });
        granted.push(match answer {
            Ok(true) => format!("{entitlement} granted"),
            Ok(false) => format!("{entitlement} not granted"),
            Err(e) => format!("{entitlement} unknown ({e})"),
        });
    }
    out.push_str(&format!("\nentitlements: {}", granted.join(", ")));
    Ok(out)
}

/// The entitlements `engine status` asks about: `network.host` is what `network = "host"`
/// needs; `security.insecure` is the other one daemons refuse by default.
const ENTITLEMENTS: &[&str] = &["network.host", "security.insecure"];

/// The Docker Engine `engine` and its embedded BuildKit.
fn docker_status(engine: &Engine, keepalive: std::time::Duration) -> Result<String, AppError> {
    let socket = engine.socket().display().to_string();
    let v = engine.api().version().map_err(|e| {
        AppError::Engine(format!("no engine answers: {e}")).with_hint("`kiln engine up` starts one")
    })?;
    // The engine's BuildKit, asked through its `/grpc` endpoint.
    let endpoint = kiln_buildkit::Endpoint::Docker {
        socket: engine.socket().to_path_buf(),
    };
    let buildkit = crate::runtime::block_on(async {
        let client = kiln_buildkit::Client::connect(&endpoint, keepalive).await?;
        let version = match client.info().await? {
            Some(info) => info.version,
            None => "unknown (no Info RPC)".to_string(),
        };
        Ok::<_, kiln_buildkit::Error>((version, buildkit_details(&client).await?))
    })?;
    let buildkit = match buildkit {
        Ok((version, details)) => format!(
            "buildkit: {version}; embedded in the Docker Engine ({})\n{details}",
            embedded_buildkit(&v.version)
        ),
        Err(e) => format!(
            "buildkit: embedded in the Docker Engine ({}), but its BuildKit API does not answer: {e}",
            embedded_buildkit(&v.version)
        ),
    };
    Ok(format!(
        "engine: Docker Engine {} (API {}, {}/{}) at unix://{socket}\n{buildkit}\nowner: {}",
        v.version,
        v.api_version,
        v.os,
        v.arch,
        match engine.owned_pid() {
            Some(pid) => format!("kiln (pid {pid}, log {})", engine.log_file().display()),
            None => "not kiln (kiln engine down leaves it alone)".to_string(),
        }
    ))
}

/// Which BuildKit a Docker release embeds (from moby's vendoring at each tag).
fn embedded_buildkit(docker_version: &str) -> &'static str {
    let mut parts = docker_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    match (major, minor) {
        (20, _) => "BuildKit v0.8",
        (23, _) => "BuildKit v0.10",
        (24, _) => "BuildKit v0.11",
        (25, _) => "BuildKit v0.12",
        (26, _) => "BuildKit v0.13",
        (27, m) if m < 5 => "BuildKit v0.14",
        (27, _) => "BuildKit v0.18",
        (28, m) if m < 5 => "BuildKit v0.20",
        (28, _) => "BuildKit v0.25",
        _ => "BuildKit version unknown to kiln",
    }
}

/// `kiln engine up`. `waiting` gets a line every few seconds while a dockerd starts.
pub fn engine_up(settings: &Settings, waiting: &mut dyn FnMut(&str)) -> Result<String, AppError> {
    let engine = engine(settings)?;
    let mut report = |elapsed: std::time::Duration, last: &str| {
        waiting(&format!(
            "engine: waiting for dockerd ({} s so far, up to {} s); its log says: {}",
            elapsed.as_secs(),
            kiln_docker::START_LIMIT.as_secs(),
            log_message(last)
        ))
    };
    match engine.up(&mut report).map_err(engine_error)? {
        StartOutcome::Running { api_version, owned } => Ok(format!(
            "engine: already running at unix://{} (API {api_version}{})",
            engine.socket().display(),
            if owned { ", started by kiln" } else { "" }
        )),
        StartOutcome::Started {
            pid,
            api_version,
            log,
            elapsed,
        } => Ok(format!(
            "engine: started dockerd (pid {pid}, API {api_version}) in {:.1} s; log {}\n  bridge networking is off: RUN steps use the host network",
            elapsed.as_secs_f64(),
            log.display()
        )),
    }
}

/// The `msg="…"` of a dockerd log line, or the line.
fn log_message(line: &str) -> &str {
    line.split_once("msg=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(line.trim(), |(msg, _)| msg)
}

/// `kiln engine down`.
pub fn engine_down(settings: &Settings) -> Result<String, AppError> {
    let engine = engine(settings)?;
    Ok(match engine.down().map_err(engine_error)? {
        StopOutcome::Stopped { pid } => format!("engine: stopped dockerd (pid {pid})"),
        StopOutcome::NotOwned => format!(
            "engine: the engine at unix://{} was not started by kiln; left running",
            engine.socket().display()
        ),
        StopOutcome::NotRunning => "engine: not running".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_versions_map_to_their_buildkit() {
        assert_eq!(embedded_buildkit("20.10.24+dfsg1"), "BuildKit v0.8");
        assert_eq!(embedded_buildkit("28.2.2"), "BuildKit v0.20");
        assert_eq!(
            embedded_buildkit("99.0"),
            "BuildKit version unknown to kiln"
        );
    }

    #[test]
    fn waiting_lines_show_the_message_of_the_log_line() {
        let line = r#"time="2026-12-01T13:04:13.76Z" level=info msg="Daemon has completed initialization""#;
        assert_eq!(log_message(line), "Daemon has completed initialization");
        assert_eq!(log_message("  Starting up\n"), "Starting up");
    }

    #[test]
    fn only_unix_docker_hosts_are_managed() {
        let mut settings = Settings::default();
        settings
            .env
            .insert("DOCKER_HOST".into(), "tcp://1.2.3.4:2375".into());
        assert!(
            engine_up(&settings, &mut |_| {})
                .unwrap_err()
                .to_string()
                .contains("unix socket")
        );
        // A new command: settings are resolved once per `Settings`.
        let mut settings = Settings::default();
        settings
            .env
            .insert("DOCKER_HOST".into(), "unix:///nonexistent/d.sock".into());
        settings
            .env
            .insert("KILN_STATE_DIR".into(), "/nonexistent-kiln-state".into());
        let err = engine_status(&settings).unwrap_err().report();
        assert!(
            err.contains("/nonexistent/d.sock") && err.contains("kiln engine up"),
            "{err}"
        );
    }
}
