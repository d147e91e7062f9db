//! Builders other than the Docker socket, against the real engine: a bridge makes Docker
//! Engine's embedded BuildKit look exactly like a standalone buildkitd (raw gRPC on a unix
//! socket or TCP, what `buildctl dial-stdio` gives), so kiln talks to it the standalone way —
//! the Control API directly and the session through the `Control.Session` tunnel — and socat
//! puts mutual TLS in front of it for `tcp://` with `--tls-*`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let path = dir.join("buildkitd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            bridge(client, |c| c.try_clone().unwrap());
        }
    });
    format!("unix://{}", path.display())
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

fn kiln(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env_remove("DOCKER_HOST")
        .env_remove("BUILDKIT_HOST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let sockets = tempfile::tempdir().unwrap();
    let url = unix_bridge(sockets.path());
    let (dir, image) = project("unix");
    let (code, stdout, stderr) = kiln(dir.path(), &["--builder", &url, "build"]);
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

    let (code, stdout, stderr) = kiln(dir.path(), &["--builder", &url, "engine", "status"]);
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
    let (code, stdout, stderr) = kiln(
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
    let (code, _, stderr) = kiln(
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
