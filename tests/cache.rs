//! The remote build cache (`--cache REF`, `[defaults] cache`) against two real Docker Engines
//! and the real registry on 127.0.0.1:5000: what one engine built, a second, empty one takes
//! from the cache. Docker Engine 20.10 exports inline cache only, so kiln stores each target's
//! last stage as `REF:<target>` and pushes it; every build imports it from there.

#[path = "support/engine2.rs"]
mod engine2;
#[path = "support/project.rs"]
mod project;

use std::process::Command;

use project::{Image, git, kiln, kiln_env, repo};

const BASE: &str = "127.0.0.1:5000/kiln/debian-python:bookworm";
const REGISTRY: &str = "127.0.0.1:5000";

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// The tags the registry has for `repository` (plain HTTP).
fn tags(repository: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(REGISTRY).expect("the registry is up");
    write!(s, "GET /v2/{repository}/tags/list HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

fn docker2(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(["-H", &engine2::url()])
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker -H engine2 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_second_empty_engine_takes_the_steps_from_the_remote_cache() {
    if !project::require_engine() {
        return;
    }
    // Empty: no images (an older copy of the base under the same tag would be another base,
    // with other cache keys), no build cache.
    engine2::reset().expect("the second engine, emptied");
    let n = nonce();
    let image = Image::new("cached");
    let plain = Image::new("cached-plain");
    let cache_repo = format!("kiln-test/cache-{n}");
    // Engine 1 keeps the images that carry the cache (`REF:TARGET`): removed at the end.
    let _app_cache = Image(format!("{REGISTRY}/{cache_repo}:app"));
    let _plain_cache = Image(format!("{REGISTRY}/{cache_repo}:plain"));
    let manifest = format!(
        r#"version = 1
[defaults]
cache = "{REGISTRY}/{cache_repo}"

[target.app]
from    = "{BASE}"
image   = "{image}"
network = "host"
run     = ["echo {n} > /nonce && sleep 1"]
copy    = [{{ src = "msg.txt", dest = "/msg.txt" }}]

[target.app.smoke-test]
run = ["test -s /msg.txt && grep -q {n} /nonce"]

# No smoke test: the image itself carries the inline cache, also tagged as REF:plain.
[target.plain]
from    = "{BASE}"
image   = "{plain}"
network = "host"
run     = ["echo plain-{n} > /nonce"]
"#,
        image = image.0,
        plain = plain.0
    );
    let dir = repo(&[("kiln.toml", &manifest), ("msg.txt", "cached\n")]);

    // Engine 1 builds it cold (the cache has nothing yet: not an error) and pushes the cache.
    let run = kiln(dir.path(), &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("RUN [app/pre 1]"), "{run}");
    let listed = tags(&cache_repo);
    assert!(listed.contains(r#""tags":["app","plain"]"#), "{listed}");

    // The same commit on the second engine, which has never seen these steps: all of them
    // come from the cache; the image is in that engine's store and runs there.
    let clone = tempfile::tempdir().unwrap();
    let path = clone.path().to_str().unwrap();
    git(dir.path(), &["clone", "-q", ".", path]);
    let docker2_host = engine2::url();
    let run = kiln_env(clone.path(), &["build"], &[("DOCKER_HOST", &docker2_host)]);
    assert_eq!(run.code, 0, "{run}");
    for step in [
        "[app/pre 1]",
        "[app/post] copy",
        "[app/smoke-test 1]",
        "[plain/pre 1]",
    ] {
        assert!(
            run.stderr.contains(&format!("CACHED {step}")),
            "{step}: {run}"
        );
    }
    assert_eq!(
        docker2(&[
            "run",
            "--rm",
            "--network",
            "none",
            &image.0,
            "cat",
            "/nonce"
        ]),
        n
    );
    assert_eq!(
        docker2(&[
            "run",
            "--rm",
            "--network",
            "none",
            &plain.0,
            "cat",
            "/nonce"
        ]),
        format!("plain-{n}")
    );
    let _ = Command::new("docker")
        .args(["-H", &docker2_host, "image", "rm", "-f", &image.0, &plain.0])
        .output();

    // `--cache` wins over `[defaults] cache`; a tag is refused with the reason.
    let run = kiln(
        dir.path(),
        &["build", "--cache", "127.0.0.1:5000/x/cache:v1"],
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("has a tag or digest"), "{run}");
}
