//! The machine the integration tests and `cargo xtask build` need: Debian's Docker Engine
//! (its embedded BuildKit is the engine), started through `kiln engine up`, and a base image
//! made from Debian's packages (nothing can be pulled from Docker Hub here), cached so reruns
//! are fast. Every step says what it does; nothing is done twice.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The base image the examples and integration tests build on.
pub const BASE_IMAGE: &str = "kiln-base/debian-python:bookworm";
/// What the tests need from Debian: a shell check that passes when it is there, and the
/// package that provides it.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("command -v dockerd", "docker.io"),
    ("command -v docker", "docker.io"),
    ("command -v debootstrap", "debootstrap"),
    // The builder tests: a TLS-terminating proxy, test certificates, process checks.
    ("command -v socat", "socat"),
    ("command -v openssl", "openssl"),
    ("command -v pgrep", "procps"),
    // The lock tests: git repositories, and a venv on the host for the package index test.
    ("command -v git", "git"),
    ("python3 -c 'import venv, ensurepip'", "python3-venv"),
    // The registry tests: a real registry on 127.0.0.1:5000.
    ("command -v docker-registry", "docker-registry"),
    // The crash test: kills `kiln refresh --commit` at each file-system call (fault injection).
    ("command -v strace", "strace"),
];

fn have(check: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("{check} >/dev/null 2>&1")])
        .env("PATH", path_with_sbin())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin")
}

/// Install the Debian packages that are missing (as root, with apt-get).
fn packages() -> Result<(), String> {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !is_root {
        return Err(format!(
            "missing Debian packages {}; install them as root: apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    eprintln!("env: installing Debian packages: {}", missing.join(" "));
    crate::run_env(
        "apt-get",
        &["update", "-q"],
        &[("DEBIAN_FRONTEND", "noninteractive")],
    )?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    crate::run_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

/// `kiln engine up`, through the release of kiln the tests use.
fn engine(kiln: &Path) -> Result<(), String> {
    let path = path_with_sbin();
    crate::run_env(
        kiln.to_str().unwrap(),
        &["engine", "up"],
        &[("PATH", &path)],
    )
}

fn cache_dir() -> PathBuf {
    std::env::var_os("KILN_DEV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln-dev"))
}

/// The base image's config, set at import the way Debian-derived language images set theirs
/// (the build tests check that targets inherit it).
const BASE_CHANGES: &str = "--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8' --change 'CMD [\"python3\"]'";

/// The base image in the engine's store: imported from a cached rootfs tarball, which is
/// made with debootstrap when absent. An image with an older config is imported again.
fn base_image() -> Result<(), String> {
    let inspect = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .Config}}",
            BASE_IMAGE,
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    let config = String::from_utf8_lossy(&inspect.stdout);
    if inspect.status.success() && config.contains("LANG=C.UTF-8") {
        return Ok(());
    }
    let cache = cache_dir();
    let tarball = cache.join("debian-python-bookworm.tar");
    if !tarball.exists() {
        std::fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
        let rootfs = cache.join("rootfs.tmp");
        let _ = std::fs::remove_dir_all(&rootfs);
        eprintln!("env: making the base root filesystem with debootstrap (about a minute)");
        let t = Instant::now();
        let rootfs_s = rootfs.to_str().unwrap();
        crate::run_env(
            "debootstrap",
            &[
                "--variant=minbase",
                "--include=python3,python3-pip,python3-venv,ca-certificates",
                "bookworm",
                rootfs_s,
            ],
            &[("PATH", &path_with_sbin())],
        )?;
        let partial = cache.join("debian-python-bookworm.tar.tmp");
        crate::run_env(
            "tar",
            &["-C", rootfs_s, "-cf", partial.to_str().unwrap(), "."],
            &[],
        )?;
        std::fs::rename(&partial, &tarball).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&rootfs);
        eprintln!(
            "env: rootfs cached in {} ({:.0} s)",
            tarball.display(),
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!("env: importing {} as {BASE_IMAGE}", tarball.display());
    crate::run_env(
        "sh",
        &[
            "-c",
            &format!(
                "docker import {BASE_CHANGES} {} {BASE_IMAGE}",
                tarball.display()
            ),
        ],
        &[],
    )
}

/// The local registry the tests push to and pull from.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// Names the base image is pushed under: kiln's own, and the Docker Hub name it stands in for
/// (Debian bookworm's python3 is 3.11), which the `local` profiles map onto this registry.
pub const REGISTRY_BASES: &[&str] = &[
    "127.0.0.1:5000/kiln/debian-python:bookworm",
    "127.0.0.1:5000/library/python:3.11-slim-bookworm",
];

fn registry_answers() -> bool {
    std::net::TcpStream::connect_timeout(
        &REGISTRY.parse().expect("an address"),
        std::time::Duration::from_millis(300),
    )
    .is_ok_and(|mut s| {
        use std::io::{Read, Write};
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut answer = [0u8; 12];
        s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
            && s.read_exact(&mut answer).is_ok()
            && answer.starts_with(b"HTTP/1.")
    })
}

/// Debian's `docker-registry` serving on 127.0.0.1:5000 without auth, its data and log in the
/// cache dir; started in its own process group so it outlives this command. Then the base
/// image is pushed under [`REGISTRY_BASES`].
fn registry() -> Result<(), String> {
    if !registry_answers() {
        let dir = cache_dir().join("registry");
        std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {REGISTRY}\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
        eprintln!(
            "env: starting docker-registry on {REGISTRY} (log {})",
            dir.join("registry.log").display()
        );
        use std::os::unix::process::CommandExt;
        Command::new("docker-registry")
            .args(["serve", config.to_str().expect("UTF-8 path")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let start = Instant::now();
        while !registry_answers() {
            if start.elapsed() > std::time::Duration::from_secs(20) {
                return Err(format!(
                    "docker-registry did not answer on {REGISTRY} within 20 s"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    for name in REGISTRY_BASES {
        crate::run("docker", &["tag", BASE_IMAGE, name])?;
        let push = Command::new("docker")
            .args(["push", name])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run docker push: {e}"))?;
        if !push.success() {
            return Err(format!("docker push {name} failed"));
        }
    }
    Ok(())
}

/// Everything the integration tests need; `kiln` is the binary that runs `engine up`.
pub fn up(kiln: &Path) -> Result<(), String> {
    packages()?;
    engine(kiln)?;
    base_image()?;
    registry()
}

/// The build cache `tidy_engine` leaves in the first engine.
const KEEP_BUILD_CACHE: &str = "3gb";

/// After the tests: remove the images they tagged (`kiln-test/…`, in the local registry's
/// namespace or not) and the untagged ones left behind, and trim the first engine's build
/// cache to [`KEEP_BUILD_CACHE`], most recently used kept. Without it the engine of a
/// developer's machine grew by every run (1,666 images and 20,387 cache records after a few
/// weeks here), and dockerd, which reads every cache record before it answers, took 31 s to
/// start on a cold disk. What the next run reuses (the base image, recent cache) stays.
pub fn tidy_engine() -> Result<(), String> {
    let started = std::time::Instant::now();
    let list = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .map_err(|e| format!("cannot run docker images: {e}"))?;
    let images: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|name| {
            let repo = name
                .strip_prefix(REGISTRY)
                .map_or(*name, |r| r.trim_start_matches('/'));
            repo.starts_with("kiln-test/") && !name.ends_with(":<none>")
        })
        .map(str::to_string)
        .collect();
    for chunk in images.chunks(100) {
        let mut args = vec!["rmi", "--force"];
        args.extend(chunk.iter().map(String::as_str));
        // Quietly: an image another name still holds stays, which is fine.
        let _ = Command::new("docker").args(&args).output();
    }
    let quiet = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run docker {}: {e}", args.join(" ")))
    };
    quiet(&["image", "prune", "--force"])?;
    quiet(&[
        "builder",
        "prune",
        "--force",
        "--keep-storage",
        KEEP_BUILD_CACHE,
    ])?;
    eprintln!(
        "test: tidied the engine: removed {} images tagged kiln-test/… and the untagged ones, trimmed the build cache to {KEEP_BUILD_CACHE} ({:.0} s)",
        images.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
