//! A second Docker Engine beside the first, for the tests of remote caches and builder pools:
//! `cargo xtask test` starts it before the tests and stops it after (this file is compiled
//! into xtask too), and hands its socket to them in `KILN_TEST_ENGINE2`. Its data, exec root,
//! pid file, log and socket live in `/var/cache/kiln-dev/engine2` (`$KILN_DEV_CACHE`), so
//! nothing here ever touches the first engine: `stop` signals only the pid this file's own
//! pid file names, and only when that process is a dockerd started with this socket.
#![allow(dead_code)]

// Also a module of project.rs in the tests that use both: a second copy of a few pure
// functions, so that xtask, which has no project.rs, gets the same ping.
#[allow(clippy::duplicate_mod)]
#[path = "engine.rs"]
mod engine;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variable the tests read the second engine's socket from (`unix:///…/docker2.sock`).
pub const VAR: &str = "KILN_TEST_ENGINE2";

/// Where the second engine keeps everything.
pub fn dir() -> PathBuf {
    std::env::var_os("KILN_DEV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln-dev"))
        .join("engine2")
}

pub fn socket() -> PathBuf {
    dir().join("docker2.sock")
}

/// `unix://` URL of the socket, as `--builder` and `DOCKER_HOST` take it.
pub fn url() -> String {
    format!("unix://{}", socket().display())
}

fn pid_file() -> PathBuf {
    dir().join("dockerd.pid")
}

pub fn log_file() -> PathBuf {
    dir().join("dockerd.log")
}

/// Whether a Docker Engine answers `GET /_ping` on the socket.
pub fn answers() -> bool {
    engine::answers(&socket())
}

/// The pid of the second engine's dockerd, when it runs (by its pid file, checked against
/// the process's command line: a dockerd with this socket).
pub fn pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !running(pid) {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = cmdline.split(|b| *b == 0).next()?.ends_with(b"dockerd")
        && String::from_utf8_lossy(&cmdline).contains(&*socket().to_string_lossy());
    ours.then_some(pid)
}

/// Start the second engine unless it answers; wait until it does (about 8 s).
pub fn start() -> Result<(), String> {
    if answers() {
        return Ok(());
    }
    // Ours, but not answering (yet, or any more): stop it rather than race it.
    if pid().is_some() {
        stop("TERM")?;
    }
    let dir = dir();
    for sub in ["data", "exec"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // A killed dockerd leaves its pid file (and, while unreaped, its pid), which the next
    // one would refuse to start over; and its socket. Its containerd's pid file too: a
    // machine restored from a snapshot keeps it, and when that pid has been reused by another
    // process, dockerd waits on it as if it were containerd and never answers. Ours is not
    // running here (no answer, `pid()` is none), so both files are stale.
    let _ = std::fs::remove_file(pid_file());
    let _ = std::fs::remove_file(socket());
    let containerd_pid = dir.join("exec/containerd/containerd.pid");
    if let Ok(text) = std::fs::read_to_string(&containerd_pid) {
        let ours = text.trim().parse::<u32>().is_ok_and(|pid| {
            running(pid)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        });
        if !ours {
            let _ = std::fs::remove_file(&containerd_pid);
        }
    }
    let log = std::fs::File::create(log_file()).map_err(|e| e.to_string())?;
    let dockerd = [
        "/usr/sbin/dockerd",
        "/usr/bin/dockerd",
        "/usr/local/bin/dockerd",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("dockerd");
    let mut child = Command::new(dockerd)
        .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
        .arg(format!("--data-root={}", dir.join("data").display()))
        .arg(format!("--exec-root={}", dir.join("exec").display()))
        .arg(format!("--pidfile={}", pid_file().display()))
        .arg(format!("--host={}", url()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {dockerd}: {e}"))?;
    let started = Instant::now();
    while !answers() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the second dockerd exited ({status}); last lines of {}:\n{}",
                log_file().display(),
                log_tail()
            ));
        }
        // As long as `kiln engine up` waits: a large build cache on a cold disk delays the API.
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "the second dockerd did not answer on {} within 300 s; last lines of {}:\n{}",
                socket().display(),
                log_file().display(),
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The last lines of the second engine's log.
fn log_tail() -> String {
    let text = std::fs::read_to_string(log_file()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Stop the second engine with `signal` (`TERM`, or `KILL` to kill it mid-build) and wait
/// until it is gone. Only ever the process [`pid`] names.
pub fn stop(signal: &str) -> Result<(), String> {
    let Some(pid) = pid() else {
        return Ok(());
    };
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(pid) {
        if Instant::now() > deadline {
            return Err(format!(
                "the second dockerd ({pid}) did not stop within 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its containerd runs in its own group under the exec root; dockerd stops it on TERM,
    // but a KILLed dockerd leaves it, and the next start takes it over again.
    Ok(())
}

/// Whether `pid` still runs (a zombie does not: when this process started the engine, a
/// killed one stays its unreaped child).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) STATE …`; comm may hold spaces, so read after the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Empty the second engine: stop it, remove its data (images, build cache), start it again.
pub fn reset() -> Result<(), String> {
    stop("TERM")?;
    let data = dir().join("data");
    unmount_below(&data)?;
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| format!("remove {}: {e}", data.display()))?;
    }
    start()
}

/// Unmount what a stopped (or killed) second engine left mounted at or below `path` — its
/// data root's own bind mount, a killed build's overlay root filesystems — deepest first.
/// Only mount points below the second engine's own directory are touched.
fn unmount_below(path: &std::path::Path) -> Result<(), String> {
    let dir = dir();
    if !path.starts_with(&dir) {
        return Err(format!("{} is not the second engine's", path.display()));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| std::path::Path::new(p).starts_with(path))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let status = Command::new("umount")
            .arg(point)
            .status()
            .map_err(|e| format!("cannot run umount: {e}"))?;
        if !status.success() {
            return Err(format!("umount {point} failed ({status})"));
        }
    }
    Ok(())
}
