//! Builders other than the Docker socket, against the real engine: a bridge makes Docker
//! Engine's embedded BuildKit look exactly like a standalone buildkitd (raw gRPC on a unix
//! socket or TCP, what `buildctl dial-stdio` gives), so kiln talks to it the standalone way —
//! the Control API directly and the session through the `Control.Session` tunnel — and socat
//! puts mutual TLS in front of it for `tcp://` with `--tls-*`. What a standalone buildkitd does
//! differently (no `moby` worker: `--load`, `--push`, images only in its cache, `Info`, platform
//! variants, a refused entitlement, a drain on SIGTERM) is verified against a real buildkitd
//! v0.24 by hand (the bridge is Docker's BuildKit v0.8 underneath); the parts of it that do not
//! need one have tests here and in the crates.

#[path = "support/project.rs"]
mod project;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use project::{Collected, Run, kiln_raw};

const BASE: &str = "kiln-base/debian-python:bookworm";
const DOCKER: &str = "/var/run/docker.sock";

/// Open `POST /grpc` on the engine and return the upgraded socket (read byte by byte up to
/// the end of the `101` response, so nothing after it is consumed).
fn engine_grpc() -> UnixStream {
    let mut s = UnixStream::connect(DOCKER).expect("the engine is up");
    s.write_all(
        b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "engine closed during upgrade"
        );
        buf.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    s
}

/// Copy bytes both ways between a client connection and a fresh upgraded engine connection.
fn bridge<C>(client: C, clone: impl Fn(&C) -> C + Send + 'static)
where
    C: Read + Write + Send + 'static,
{
    let engine = engine_grpc();
    let mut engine_read = engine.try_clone().unwrap();
    let mut engine_write = engine;
    let mut client_read = clone(&client);
    let mut client_write = client;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut engine_write);
        let _ = engine_write.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut engine_read, &mut client_write);
    });
}

/// A unix socket that speaks raw gRPC, like buildkitd's.
fn unix_bridge(dir: &Path) -> String {
    cuttable_bridge(dir).0
}

/// [`unix_bridge`], and the client connections it serves, to cut them as a daemon that goes
/// away would.
fn cuttable_bridge(dir: &Path) -> (String, Arc<Mutex<Vec<UnixStream>>>) {
    let path = dir.join("buildkitd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let clients: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
    let served = clients.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            served.lock().unwrap().push(client.try_clone().unwrap());
            bridge(client, |c| c.try_clone().unwrap());
        }
    });
    (format!("unix://{}", path.display()), clients)
}

/// A TCP port on 127.0.0.1 that speaks raw gRPC.
fn tcp_bridge() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            bridge(client, |c: &TcpStream| c.try_clone().unwrap());
        }
    });
    port
}

/// A project with one target that copies a file from the context; the file and tag are
/// unique, so the context really travels.
fn project(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let image = format!("kiln-test/{name}:{}-{nanos}", std::process::id());
    std::fs::write(
        dir.path().join("kiln.toml"),
        format!(
            r#"version = 1
[target.app]
from  = "{BASE}"
image = "{image}"
network = "host"
copy  = [{{ src = "msg.txt", dest = "/msg.txt" }}]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("msg.txt"),
        format!("through {name} {nanos}\n"),
    )
    .unwrap();
    (dir, image)
}

fn image_says(image: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", image, "cat", "/msg.txt"])
        .output()
        .unwrap();
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", image])
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn builds_through_a_buildkitd_unix_socket_with_the_session_tunnelled() {
    if !project::require_engine() {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let url = unix_bridge(sockets.path());
    let (dir, image) = project("unix");
    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(dir.path(), &["--builder", &url, "build"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("app: docker.io/kiln-test/unix:"),
        "{stdout}"
    );
    let want = std::fs::read_to_string(dir.path().join("msg.txt")).unwrap();
    assert_eq!(
        image_says(&image),
        want,
        "the context came through the tunnel"
    );

    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(dir.path(), &["--builder", &url, "engine", "status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("builder: {url} (from --builder)")),
        "{stdout}"
    );
    assert!(stdout.contains("worker moby: linux/amd64"), "{stdout}");
}

/// Test certificates: a CA, a server certificate for `localhost`, a client certificate.
fn certificates(dir: &Path) {
    let openssl = |args: &str| {
        let ok = Command::new("sh")
            .args(["-c", &format!("openssl {args}")])
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args}");
    };
    openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kiln-test-ca -keyout ca.key -out ca.pem",
    );
    for (name, cn) in [("server", "localhost"), ("client", "kiln-client")] {
        openssl(&format!(
            "req -newkey rsa:2048 -nodes -subj /CN={cn} -keyout {name}.key -out {name}.csr"
        ));
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=DNS:{cn}\n"),
        )
        .unwrap();
        openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile {name}.ext -out {name}.pem"
        ));
    }
}

struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn builds_over_tcp_with_mutual_tls_and_refuses_without_a_client_certificate() {
    if !project::require_engine() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let upstream = tcp_bridge();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = |f: &str| certs.path().join(f).display().to_string();
    let _socat = Socat(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
                c("server.pem"),
                c("server.key"),
                c("ca.pem")
            ))
            .arg(format!("TCP:127.0.0.1:{upstream}"))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (cargo xtask test installs it)"),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "socat did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("tcp://localhost:{port}");
    let (dir, image) = project("mtls");
    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(
        dir.path(),
        &[
            "--builder",
            &url,
            "--tls-ca",
            &c("ca.pem"),
            "--tls-cert",
            &c("client.pem"),
            "--tls-key",
            &c("client.key"),
            "build",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("app: docker.io/kiln-test/mtls:"),
        "{stdout}"
    );
    let want = std::fs::read_to_string(dir.path().join("msg.txt")).unwrap();
    assert_eq!(image_says(&image), want);

    // The server demands a client certificate: without one the handshake fails, clearly.
    let Run { code, stderr, .. } = kiln_raw(
        dir.path(),
        &[
            "--builder",
            &url,
            "--tls-ca",
            &c("ca.pem"),
            "engine",
            "status",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("lost the connection") && stderr.contains("requires a client certificate"),
        "{stderr}"
    );
}

/// Closing a session over the `Control.Session` tunnel costs nothing: kiln drops the session's
/// connection as BuildKit's Go client does, instead of waiting for a graceful h2 shutdown that
/// never completes over the tunnel (each of a build's sessions used to wait out a 2 s timer: a
/// cached forced build of one target took over 4 s).
#[test]
fn a_cached_forced_build_through_the_tunnel_loses_no_time_closing_sessions() {
    if !project::require_engine() {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let url = unix_bridge(sockets.path());
    let (dir, image) = project("close");
    let Run { code, stderr, .. } = kiln_raw(dir.path(), &["--builder", &url, "build"]);
    assert_eq!(code, 0, "{stderr}");
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let Run {
            code,
            stdout,
            stderr,
        } = kiln_raw(dir.path(), &["--builder", &url, "build", "--force"]);
        fastest = fastest.min(started.elapsed());
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("app: docker.io/kiln-test/close:"),
            "{stdout}"
        );
    }
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &image])
        .output();
    // Two sessions (base images, image stage): at least 4 s before.
    assert!(
        fastest < Duration::from_millis(1500),
        "a cached forced build took {fastest:?}"
    );
}

/// `kiln engine status` says what the builder is: its version (Docker 20.10's BuildKit v0.8
/// has no `Info`), its workers and platforms, and which entitlements it grants (asked of it).
#[test]
fn engine_status_shows_version_workers_and_entitlements() {
    if !project::require_engine() {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let url = unix_bridge(sockets.path());
    let dir = tempfile::tempdir().unwrap();
    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(dir.path(), &["--builder", &url, "engine", "status"]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "buildkit: version unknown (no Info RPC)",
        "workers: 1",
        "worker moby: linux/amd64, linux/386",
        "entitlements: network.host granted, security.insecure not granted",
    ] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }
    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(dir.path(), &["--builder", "docker://", "engine", "status"]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "engine: Docker Engine ",
        "buildkit: unknown (no Info RPC); embedded in the Docker Engine (BuildKit v0.8)",
        "worker moby: linux/amd64, linux/386",
        "entitlements: network.host granted, security.insecure not granted",
    ] {
        assert!(stdout.contains(line), "no `{line}` in:\n{stdout}");
    }
}

/// `--load` on a builder that is Docker's BuildKit: its `moby` exporter stores the image in the
/// engine already, and kiln reports it there, by the engine's id.
#[test]
fn load_through_dockers_buildkit_leaves_the_image_in_the_engine() {
    if !project::require_engine() {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let url = unix_bridge(sockets.path());
    let (dir, image) = project("load");
    let Run {
        code,
        stdout,
        stderr,
    } = kiln_raw(dir.path(), &["--builder", &url, "build", "--load"]);
    assert_eq!(code, 0, "{stderr}");
    let id = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "the engine has {image}");
    assert!(
        stdout.contains(&format!("app: docker.io/{image} ({id})")),
        "{stdout}"
    );
    let want = std::fs::read_to_string(dir.path().join("msg.txt")).unwrap();
    assert_eq!(image_says(&image), want);
}

/// A builder that goes away mid-build (every connection to it cut, its socket gone) is a clear
/// error within seconds, also on the buildkitd path (the session in the tunnel).
#[test]
fn a_builder_going_away_mid_build_is_a_clear_error_within_seconds() {
    if !project::require_engine() {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let (url, clients) = cuttable_bridge(sockets.path());
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("gone-{}-{nanos}", std::process::id());
    // The step sleeps: the build is mid-step when the builder goes away.
    std::fs::write(
        dir.path().join("kiln.toml"),
        format!(
            "version = 1\n[target.slow]\nfrom = \"{BASE}\"\nnetwork = \"host\"\nrun = [\"echo {marker} && sleep 60\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--builder", &url, "build", "--progress", "plain"])
        .current_dir(dir.path())
        .env_remove("DOCKER_HOST")
        .env_remove("BUILDKIT_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = Collected::start(child.stderr.take().unwrap());
    let started = said.wait_for_line(Duration::from_secs(60), |line| {
        line.contains(&marker) && !line.contains("echo")
    });
    if !started {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the step never started:\n{}", said.join());
    }
    let _ = std::fs::remove_file(sockets.path().join("buildkitd.sock"));
    for client in clients.lock().unwrap().iter() {
        let _ = client.shutdown(std::net::Shutdown::Both);
    }
    let cut = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if cut.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("kiln still runs 30 s after the builder went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = cut.elapsed();
    let said = said.join();
    assert_eq!(code, Some(1), "{said}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {said}");
    assert!(said.contains("lost the connection to BuildKit"), "{said}");
}
