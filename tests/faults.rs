//! Faults during a real build (Docker Engine's embedded BuildKit, started by `cargo xtask
//! test`): Ctrl-C cancels and exits 130 promptly; the engine's socket closing mid-build (what
//! kiln sees when the daemon dies) gives a clear error and a non-zero exit, never a hang.

#[path = "support/project.rs"]
mod project;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use project::Collected;

const BASE: &str = "kiln-base/debian-python:bookworm";

/// A project whose only step prints `marker` and then sleeps for a minute; the marker is unique
/// per run, so the step is never a cache hit.
fn sleeping_project(marker: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"version = 1
[target.slow]
from = "{BASE}"
network = "host"
run  = ["echo {marker} && sleep 60"]
"#
    );
    std::fs::write(dir.path().join("kiln.toml"), manifest).unwrap();
    dir
}

fn marker(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Start `kiln build --progress plain` in `dir` with `docker_host`, and wait until the step
/// has printed `marker`. Returns the child and its stderr, being collected.
fn start_build(dir: &Path, docker_host: &str, marker: &str) -> (Child, Collected) {
    start_build_env(dir, docker_host, marker, &[])
}

/// [`start_build`] with more environment variables.
fn start_build_env(
    dir: &Path,
    docker_host: &str,
    marker: &str,
    env: &[(&str, &str)],
) -> (Child, Collected) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress", "plain"])
        .current_dir(dir)
        .env("DOCKER_HOST", docker_host)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kiln");
    let said = Collected::start(child.stderr.take().unwrap());
    let started = said.wait_for_line(Duration::from_secs(60), |line| {
        line.contains(marker) && !line.contains("echo")
    });
    if !started {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the step never started; kiln said:\n{}", said.join());
    }
    (child, said)
}

/// Wait up to `limit` for `child` to exit; its exit code and how long it took.
fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln still running {limit:?} after the fault: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the step's process (`sh -c "echo MARKER && sleep 60"`) is gone within 5 s: the
/// daemon cancelled the job rather than leaving it running.
fn step_stops(marker: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if !step_runs(marker) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn step_runs(marker: &str) -> bool {
    let found = Command::new("pgrep").args(["-f", marker]).output().unwrap();
    found.status.success()
}

#[test]
fn ctrl_c_cancels_the_build_and_exits_130_within_2_seconds() {
    if !project::require_engine() {
        return;
    }
    let marker = marker("interrupt");
    let dir = sleeping_project(&marker);
    let (mut child, seen) = start_build(dir.path(), "unix:///var/run/docker.sock", &marker);
    assert!(step_runs(&marker), "the step runs before Ctrl-C");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (code, took) = wait_exit(&mut child, Duration::from_secs(10));
    let said = seen.join();
    assert_eq!(code, Some(130), "{said}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(said.contains("interrupted"), "{said}");
    assert!(step_stops(&marker), "the step still runs after Ctrl-C");
}

/// A unix socket that forwards to the engine's until `cut`, which closes every connection, or
/// `freeze`, which stops forwarding but keeps every connection open (an engine or proxy that
/// was SIGSTOPped).
struct Proxy {
    path: PathBuf,
    streams: Arc<Mutex<Vec<UnixStream>>>,
    frozen: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(upstream: &'static str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let streams: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let open = streams.clone();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = UnixStream::connect(upstream) else {
                    break;
                };
                let mut list = open.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Frozen: hold what came and never answer, but keep it open.
                            while stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            path,
            streams,
            frozen,
            _dir: dir,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        let _ = std::fs::remove_file(&self.path);
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn the_engine_going_away_mid_build_is_a_clear_error_not_a_hang() {
    if !project::require_engine() {
        return;
    }
    let marker = marker("cut");
    let dir = sleeping_project(&marker);
    let proxy = Proxy::start("/var/run/docker.sock");
    let host = format!("unix://{}", proxy.path.display());
    let (mut child, seen) = start_build(dir.path(), &host, &marker);
    assert!(step_runs(&marker), "the step runs before the cut");
    proxy.cut();
    let (code, took) = wait_exit(&mut child, Duration::from_secs(30));
    let said = seen.join();
    assert_eq!(code, Some(1), "{said}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        said.contains("lost the connection to BuildKit"),
        "the error says what happened: {said}"
    );
    assert!(step_stops(&marker), "the step still runs with no client");
}

#[test]
fn a_frozen_engine_fails_the_build_within_a_minute_not_never() {
    if !project::require_engine() {
        return;
    }
    // Every connection stays open but nothing comes back: the keepalive pings go unanswered.
    let marker = marker("freeze");
    let dir = sleeping_project(&marker);
    let proxy = Proxy::start("/var/run/docker.sock");
    let host = format!("unix://{}", proxy.path.display());
    let (mut child, seen) = start_build(dir.path(), &host, &marker);
    proxy.freeze();
    let (code, took) = wait_exit(&mut child, Duration::from_secs(70));
    let said = seen.join();
    assert_eq!(code, Some(1), "{said}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {said}");
    assert!(
        said.contains(
            "BuildKit stopped answering during solve: no reply to a keepalive ping within 20 s"
        ),
        "the error says what happened: {said}"
    );
}

#[test]
fn kiln_builder_keepalive_sets_how_soon_a_frozen_engine_fails() {
    if !project::require_engine() {
        return;
    }
    // The variable reaches every connection (resolved once with the other settings): with 2 s
    // the frozen engine is an error within seconds, and the error names the 2 s.
    let marker = marker("freeze2");
    let dir = sleeping_project(&marker);
    let proxy = Proxy::start("/var/run/docker.sock");
    let host = format!("unix://{}", proxy.path.display());
    let (mut child, seen) = start_build_env(
        dir.path(),
        &host,
        &marker,
        &[("KILN_BUILDER_KEEPALIVE", "2")],
    );
    proxy.freeze();
    let (code, took) = wait_exit(&mut child, Duration::from_secs(40));
    let said = seen.join();
    assert_eq!(code, Some(1), "{said}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {said}");
    assert!(
        said.contains(
            "BuildKit stopped answering during solve: no reply to a keepalive ping within 2 s"
        ),
        "the error says what happened: {said}"
    );
}

#[test]
fn a_long_silent_step_on_a_healthy_engine_outlives_many_keepalive_pings() {
    if !project::require_engine() {
        return;
    }
    // Pings after 1 s of silence, 1 s to answer: a 12 s step without output sees a dozen.
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "version = 1\n[target.quiet]\nfrom = \"{BASE}\"\nnetwork = \"host\"\nrun = [\"sleep 12 && echo {}\"]\n",
        marker("quiet")
    );
    std::fs::write(dir.path().join("kiln.toml"), manifest).unwrap();
    let run = project::kiln_env(dir.path(), &["build"], &[("KILN_BUILDER_KEEPALIVE", "1")]);
    assert_eq!(run.code, 0, "{run}");
}
