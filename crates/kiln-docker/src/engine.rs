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
    #[error(
        "dockerd did not answer on {socket} within {seconds} s (it still runs, pid {pid}); last lines of {log}:\n{tail}"
    )]
    Timeout {
        socket: PathBuf,
        seconds: u64,
        pid: u32,
        log: PathBuf,
        tail: String,
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

/// How long `up` waits for a dockerd it started. A warm start takes 2–6 s, but dockerd opens
/// its API only once its embedded BuildKit has read every build-cache record: with a large
/// cache on a cold disk (a CI runner restored from a snapshot) that alone took 31 s here.
pub const START_LIMIT: Duration = Duration::from_secs(300);

/// How often `up` reports that it is still waiting.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The local Docker Engine at `socket`, with kiln's bookkeeping under `state` (the caller's
/// state directory, `/engine`: this crate reads no environment for it).
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
    state: PathBuf,
    /// dockerd's own pid file and exec root (its defaults; passed explicitly so that the
    /// stale files a killed engine leaves there are the ones `up` checks).
    daemon_pid_file: PathBuf,
    exec_root: PathBuf,
}

impl Engine {
    pub fn new(socket: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Engine {
        Engine {
            socket: socket.into(),
            state: state_dir.into().join("engine"),
            daemon_pid_file: PathBuf::from("/var/run/docker.pid"),
            exec_root: PathBuf::from("/var/run/docker"),
        }
    }

    /// Use `pid_file` and `exec_root` for dockerd instead of its defaults.
    pub fn with_daemon_paths(
        mut self,
        pid_file: impl Into<PathBuf>,
        exec_root: impl Into<PathBuf>,
    ) -> Engine {
        self.daemon_pid_file = pid_file.into();
        self.exec_root = exec_root.into();
        self
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
        runs_program(pid, "dockerd").then_some(pid)
    }

    /// Remove the pid files a killed dockerd and its containerd leave behind, when the pid
    /// they name is not a running dockerd/containerd. /run is not always a tmpfs (a VM or
    /// container restored from a disk snapshot keeps it), and a reused pid in a stale file
    /// makes dockerd refuse to start ("pid file found") or wait on a containerd that is some
    /// other process. Returns the files removed.
    pub fn remove_stale_pid_files(&self) -> Vec<PathBuf> {
        let files = [
            (self.daemon_pid_file.clone(), "dockerd"),
            (
                self.exec_root.join("containerd/containerd.pid"),
                "containerd",
            ),
        ];
        files
            .into_iter()
            .filter(|(file, program)| {
                let Ok(text) = fs::read_to_string(file) else {
                    return false;
                };
                let alive = text
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| runs_program(pid, program));
                !alive && fs::remove_file(file).is_ok()
            })
            .map(|(file, _)| file)
            .collect()
    }

    /// Start dockerd unless an engine already answers. dockerd runs in its own process group
    /// (Ctrl-C on kiln does not stop it) without bridge networking, so RUN steps use the host
    /// network, which kiln's LLB requests. `waiting` is called every few seconds while
    /// dockerd starts, with the time so far and the last line of its log.
    pub fn up(&self, waiting: &mut dyn FnMut(Duration, &str)) -> Result<StartOutcome, EngineError> {
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
        self.remove_stale_pid_files();
        let started = Instant::now();
        let mut child = Command::new(&dockerd)
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .arg(format!("--host=unix://{}", self.socket.display()))
            .arg(format!("--pidfile={}", self.daemon_pid_file.display()))
            .arg(format!("--exec-root={}", self.exec_root.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(io(format!("start {}", dockerd.display())))?;
        let pid = child.id();
        write_atomically(&self.pid_file(), format!("{pid}\n").as_bytes())
            .map_err(io(format!("write {}", self.pid_file().display())))?;
        let mut next_report = REPORT_EVERY;
        // A starting dockerd creates its socket early but answers only once it has finished
        // starting: a ping with the usual 30 s read timeout would sit in that gap, and neither
        // see dockerd exit nor report progress.
        let probe = self.api().with_timeout(Duration::from_secs(1));
        loop {
            if let Ok(api_version) = probe.ping() {
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
            let elapsed = started.elapsed();
            if elapsed > START_LIMIT {
                return Err(EngineError::Timeout {
                    socket: self.socket.clone(),
                    seconds: START_LIMIT.as_secs(),
                    pid,
                    tail: tail(&log_path, 15),
                    log: log_path,
                });
            }
            if elapsed >= next_report {
                waiting(elapsed, &tail(&log_path, 1));
                next_report += REPORT_EVERY;
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

/// Whether `pid` is a live (not zombie) process whose program's name ends with `program`.
fn runs_program(pid: u32, program: &str) -> bool {
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // `pid (comm) STATE …`; comm may hold spaces, so read after the last `)`.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X")
    });
    let named = fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .next()
            .is_some_and(|p| p.ends_with(program.as_bytes()))
    });
    !zombie && named
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

    #[test]
    fn stale_daemon_pid_files_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("docker.pid");
        let containerd = dir.path().join("exec/containerd/containerd.pid");
        let engine = Engine::new("/nonexistent/docker.sock", dir.path())
            .with_daemon_paths(&pid_file, dir.path().join("exec"));
        fs::create_dir_all(containerd.parent().unwrap()).unwrap();
        // A reused pid: a live process that is not dockerd (this test), as containerd writes
        // it (no newline), and one that names no process at all.
        fs::write(&pid_file, std::process::id().to_string()).unwrap();
        fs::write(&containerd, format!("{}\n", u32::MAX - 1)).unwrap();
        let removed = engine.remove_stale_pid_files();
        assert_eq!(removed, vec![pid_file.clone(), containerd.clone()]);
        assert!(!pid_file.exists() && !containerd.exists());

        // A file naming a live process whose program is dockerd: kept.
        let fake = dir.path().join("dockerd");
        fs::copy("/bin/sleep", &fake).unwrap();
        let mut child = Command::new(&fake).arg("30").spawn().unwrap();
        fs::write(&pid_file, child.id().to_string()).unwrap();
        // Until it has exec'd, the child is still this test's program.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !runs_program(child.id(), "dockerd") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let kept = engine.remove_stale_pid_files();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(kept.is_empty(), "{kept:?}");
        assert!(pid_file.exists());
        // Once it is gone (reaped), the same file is stale.
        assert_eq!(engine.remove_stale_pid_files(), vec![pid_file.clone()]);
    }
}
