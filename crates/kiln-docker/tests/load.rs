//! `Api::load` against the real engine (started by `cargo xtask test`, with the base image it
//! imports): an image tarball streamed in chunks is loaded under the name it carries, and an
//! upload that breaks off loads nothing.

// The workspace tests' gate: skipped without an engine, a failure with KILN_REQUIRE_ENGINE=1.
#[path = "../../../tests/support/engine.rs"]
mod engine;

use std::process::Command;

use kiln_docker::Api;

const BASE: &str = "kiln-base/debian-python:bookworm";
const SOCKET: &str = "/var/run/docker.sock";

fn docker(args: &[&str]) -> Vec<u8> {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A `docker save` tarball of the base image under a tag unique to this test, and the tag; the
/// tag itself is removed from the engine again, so only a load can bring it back.
fn tarball(name: &str) -> (Vec<u8>, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("kiln-test/{name}:{}-{nanos}", std::process::id());
    docker(&["tag", BASE, &tag]);
    let tar = docker(&["save", &tag]);
    docker(&["image", "rm", &tag]);
    (tar, tag)
}

#[test]
fn loads_a_tarball_sent_in_chunks_under_its_name() {
    if !engine::require_engine() {
        return;
    }
    let (tar, tag) = tarball("load");
    let api = Api::new(SOCKET);
    assert!(api.image(&tag).unwrap().is_none());
    // Small, uneven chunks, as they come out of the session.
    let chunks: Vec<Result<Vec<u8>, String>> = tar.chunks(4093).map(|c| Ok(c.to_vec())).collect();
    let loaded = api.load(chunks).expect("the engine loads it");
    assert!(
        loaded.iter().any(|l| l.contains(&tag)),
        "the engine names what it loaded: {loaded:?}"
    );
    let image = api.image(&tag).unwrap().expect("the image is in the store");
    let base = api.image(BASE).unwrap().unwrap();
    assert_eq!(image.id, base.id);
    docker(&["image", "rm", &tag]);
}

#[test]
fn an_upload_that_breaks_off_loads_nothing() {
    if !engine::require_engine() {
        return;
    }
    let (tar, tag) = tarball("broken");
    let api = Api::new(SOCKET);
    let half = tar.len() / 2;
    let chunks = vec![
        Ok(tar[..half].to_vec()),
        Err("the daemon cancelled the export".to_string()),
    ];
    let error = api
        .load(chunks)
        .expect_err("an incomplete tarball is not loaded");
    assert!(
        error
            .to_string()
            .contains("the daemon cancelled the export"),
        "{error}"
    );
    // Kept as a fixed pause: it is the time the engine gets to (wrongly) load what it was
    // sent, and the absence after it is what is tested; no condition marks a load that never
    // happens (the engine emits no event for a failed one).
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(api.image(&tag).unwrap().is_none(), "nothing was loaded");
}
