//! A Docker Engine that kiln starts, owns and stops.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::{Api, ApiError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "no engine is running at {socket} and none is installed: install Docker Engine (Debian: `apt-get install docker.io`) or BuildKit (`buildkitd`), or point BUILDKIT_HOST at a running one"
    )]
    NotInstalled { socket: PathBuf },
    #[error("dockerd exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("dockerd did not answer on {socket} within {seconds} s; see {log}")]
    Timeout {
        socket: PathBuf,
        seconds: u64,
        log: PathBuf,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// What `up` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// An engine already answers; `owned` says whether kiln started it.
    Running { api_version: String, owned: bool },
    Started {
        pid: u32,
        api_version: String,
        log: PathBuf,
        elapsed: Duration,
    },
}

/// What `down` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped {
        pid: u32,
    },
    /// An engine runs, but kiln did not start it: left alone.
    NotOwned,
    NotRunning,
}

/// The local Docker Engine at `socket`, with kiln's bookkeeping under `state` (the caller's
/// state directory, `/engine`: this crate reads no environment for it).
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
    state: PathBuf,
}

impl Engine {
    pub fn new(socket: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Engine {
        Engine {
            socket: socket.into(),
            state: state_dir.into().join("engine"),
        }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.socket)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid_file(&self) -> PathBuf {
        self.state.join("dockerd.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.state.join("dockerd.log")
    }

    /// The API version if an engine answers on the socket.
    pub fn running(&self) -> Option<String> {
        self.api().ping().ok()
    }

    /// The pid of a dockerd that kiln started and that still runs.
    pub fn owned_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let program = cmdline.split(|b| *b == 0).next()?;
        program.ends_with(b"dockerd").then_some(pid)
    }

    /// Start dockerd unless an engine already answers. dockerd runs in its own process group
    /// (Ctrl-C on kiln does not stop it) without bridge networking, so RUN steps use the host
    /// network, which kiln's LLB requests.
    pub fn up(&self) -> Result<StartOutcome, EngineError> {
        if let Some(api_version) = self.running() {
            return Ok(StartOutcome::Running {
                api_version,
                owned: self.owned_pid().is_some(),
            });
        }
        let dockerd = find_program("dockerd").ok_or_else(|| EngineError::NotInstalled {
            socket: self.socket.clone(),
        })?;
        let io = |context: String| move |source| EngineError::Io { context, source };
        fs::create_dir_all(&self.state).map_err(io(format!("create {}", self.state.display())))?;
        let log_path = self.log_file();
        let log =
            fs::File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("log file".into()))?;
        let started = Instant::now();
        let mut child = Command::new(&dockerd)
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .arg(format!("--host=unix://{}", self.socket.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(io(format!("start {}", dockerd.display())))?;
        let pid = child.id();
        write_atomically(&self.pid_file(), format!("{pid}\n").as_bytes())
            .map_err(io(format!("write {}", self.pid_file().display())))?;
        let limit = Duration::from_secs(60);
        loop {
            if let Some(api_version) = self.running() {
                return Ok(StartOutcome::Started {
                    pid,
                    api_version,
                    log: log_path,
                    elapsed: started.elapsed(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let _ = fs::remove_file(self.pid_file());
                return Err(EngineError::Exited {
                    status: status.to_string(),
                    tail: tail(&log_path, 15),
                    log: log_path,
                });
            }
            if started.elapsed() > limit {
                return Err(EngineError::Timeout {
                    socket: self.socket.clone(),
                    seconds: limit.as_secs(),
                    log: log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the dockerd kiln started (SIGTERM, then wait up to 30 s); never another one.
    pub fn down(&self) -> Result<StopOutcome, EngineError> {
        let Some(pid) = self.owned_pid() else {
            let _ = fs::remove_file(self.pid_file());
            return Ok(if self.running().is_some() {
                StopOutcome::NotOwned
            } else {
                StopOutcome::NotRunning
            });
        };
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|source| EngineError::Io {
                context: "run kill".into(),
                source,
            })?;
        if status.success() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = fs::remove_file(self.pid_file());
        Ok(StopOutcome::Stopped { pid })
    }
}

/// `name` in `$PATH` or the sbin directories root's PATH may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Write to a temporary file in the same directory, fsync, rename.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_never_touches_an_engine_it_did_not_start() {
        let state = tempfile::tempdir().unwrap();
        let engine = Engine::new("/nonexistent/docker.sock", state.path());
        assert_eq!(engine.down().unwrap(), StopOutcome::NotRunning);
        // A pid file naming a process that is not dockerd (this test) is not ownership.
        fs::create_dir_all(state.path().join("engine")).unwrap();
        fs::write(engine.pid_file(), std::process::id().to_string()).unwrap();
        assert_eq!(engine.owned_pid(), None);
        assert_eq!(engine.down().unwrap(), StopOutcome::NotRunning);
        assert!(!engine.pid_file().exists(), "stale pid file removed");
    }
}
