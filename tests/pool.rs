//! Builder pools (`--builder` given several times, `builders` in kiln's config file) against
//! two real Docker Engines: the first (the default socket) and a second one
//! (`tests/support/engine2.rs`, started here when `cargo xtask test` did not). Targets spread
//! across them by a stable hash, a chain of `target:` bases stays on one, and when the second
//! engine is killed mid-build its targets move to the first. Only the second engine is ever
//! stopped.

#[path = "support/engine2.rs"]
mod engine2;
#[path = "support/project.rs"]
mod project;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

use project::{Image, kiln, kiln_env, repo};

const BASE: &str = "127.0.0.1:5000/kiln/debian-python:bookworm";
const ENGINE1: &str = "docker:///var/run/docker.sock";

/// The tests here share (and one kills) the second engine: one at a time.
static ENGINE2: Mutex<()> = Mutex::new(());

fn engine2_builder() -> String {
    format!("docker://{}", engine2::socket().display())
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Independent targets `names` (each RUN step sleeps `sleep` s, so that the build is still
/// running when an engine is killed; unique per test run), plus `chained` built on the first
/// of them.
fn manifest(names: &[&str], images: &BTreeMap<String, Image>, sleep: u32) -> String {
    let n = nonce();
    let mut m = String::from("version = 1\n");
    for t in names {
        m.push_str(&format!(
            r#"[target.{t}]
from    = "{BASE}"
image   = "{image}"
network = "host"
run     = ["echo {t}-{n} > /id && sleep {sleep}"]
[target.{t}.smoke-test]
run = ["grep -q {t}-{n} /id"]
"#,
            image = images[*t].0
        ));
    }
    m.push_str(&format!(
        r#"[target.chained]
from    = "target:{first}"
image   = "{image}"
network = "host"
run     = ["echo chained > /chained"]
"#,
        first = names[0],
        image = images["chained"].0
    ));
    m
}

/// `TARGET -> builder` from kiln's stdout lines `TARGET: IMAGE (ID) (on BUILDER)`.
fn builders(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let (target, rest) = l.split_once(": ")?;
            let builder = rest.rsplit_once("(on ")?.1.strip_suffix(')')?;
            Some((target.to_string(), builder.to_string()))
        })
        .collect()
}

/// Whether a RUN step of [`manifest`] (`echo … > /id && sleep N`) runs on the second engine:
/// a process with that command line that descends from the second dockerd (its BuildKit runs
/// steps through runc, a child of the daemon).
fn step_runs_on_engine2() -> bool {
    let Some(dockerd) = engine2::pid() else {
        return false;
    };
    let found = Command::new("pgrep")
        .args(["-f", "> /id && sleep "])
        .output()
        .unwrap();
    String::from_utf8_lossy(&found.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .any(|pid| descends_from(pid, dockerd))
}

/// Whether `ancestor` is among `pid`'s parents (`/proc/PID/stat`: `pid (comm) state ppid …`).
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    while let Some(ppid) = parent(pid) {
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

fn has_image(docker_host: &str, image: &str) -> bool {
    Command::new("docker")
        .args(["-H", docker_host, "image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn images(names: &[&str]) -> BTreeMap<String, Image> {
    names
        .iter()
        .chain(&["chained"])
        .map(|t| (t.to_string(), Image::new(&format!("pool-{t}"))))
        .collect()
}

const NAMES: &[&str] = &["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];

#[test]
fn targets_spread_across_two_engines_and_a_chain_stays_on_one() {
    if !project::require_engine() {
        return;
    }
    let _one = ENGINE2.lock().unwrap_or_else(|e| e.into_inner());
    engine2::start().expect("the second engine");
    let images = images(NAMES);
    let dir = repo(&[("kiln.toml", &manifest(NAMES, &images, 0))]);
    let e2 = engine2_builder();
    let run = kiln(
        dir.path(),
        &["--builder", ENGINE1, "--builder", &e2, "build"],
    );
    assert_eq!(run.code, 0, "{run}");
    let on = builders(&run.stdout);
    assert_eq!(on.len(), NAMES.len() + 1, "{run}");
    // Both engines get work, and the chain stays with its base's builder.
    let used: std::collections::BTreeSet<&String> = on.values().collect();
    assert_eq!(used.len(), 2, "{on:?}");
    assert_eq!(on["chained"], on[NAMES[0]], "{on:?}");
    // Each image is in the image store of the engine it was built on.
    let e2_host = engine2::url();
    for (target, builder) in &on {
        let host = if *builder == e2 {
            e2_host.as_str()
        } else {
            "unix:///var/run/docker.sock"
        };
        assert!(
            has_image(host, &images[target].0),
            "{target} not on {builder}: {run}"
        );
    }

    // The same spread again: the hash is stable (and the config file's `builders` list is a
    // pool like repeated --builder flags).
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("config.toml");
    std::fs::write(&file, format!("builders = [\"{ENGINE1}\", \"{e2}\"]\n")).unwrap();
    let file_s = file.to_str().unwrap();
    let again = kiln_env(
        dir.path(),
        &["build", "--force"],
        &[("KILN_CONFIG", file_s)],
    );
    assert_eq!(again.code, 0, "{again}");
    assert_eq!(builders(&again.stdout), on, "{again}");
    // Nothing changed: every target is up to date in the engine that holds its image, the
    // second engine's too (not rebuilt because the first engine lacks it), and no solve runs.
    let noop = kiln_env(dir.path(), &["build"], &[("KILN_CONFIG", file_s)]);
    assert_eq!(noop.code, 0, "{noop}");
    assert_eq!(builders(&noop.stdout), on, "{noop}");
    for target in on.keys() {
        assert!(
            noop.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{target}: ")) && l.contains(" up to date (on ")),
            "{target} not up to date: {noop}"
        );
    }
    assert!(!noop.stderr.contains("DONE"), "a step was solved: {noop}");
    for (target, builder) in &on {
        if *builder == e2 {
            let _ = Command::new("docker")
                .args(["-H", &e2_host, "image", "rm", "-f", &images[target].0])
                .output();
        }
    }

    // A config file kiln cannot read is an error naming the file, line and key.
    std::fs::write(&file, "builders = [\"docker://\"]\nbuilder = 3\n").unwrap();
    let bad = kiln_env(dir.path(), &["build"], &[("KILN_CONFIG", file_s)]);
    assert_eq!(bad.code, 2, "{bad}");
    assert!(
        bad.stderr.contains(&format!("{file_s}:2:1")) && bad.stderr.contains("builder"),
        "{bad}"
    );
    assert!(
        bad.stderr
            .contains("\n  hint: kiln's config file takes `builders = ["),
        "{bad}"
    );
}

#[test]
fn a_builder_killed_mid_build_hands_its_targets_to_the_other() {
    if !project::require_engine() {
        return;
    }
    let _one = ENGINE2.lock().unwrap_or_else(|e| e.into_inner());
    engine2::start().expect("the second engine");
    let images = images(NAMES);
    let dir = repo(&[("kiln.toml", &manifest(NAMES, &images, 8))]);
    let e2 = engine2_builder();
    // Killed once a step runs there (mid-build), not after a guessed delay.
    let killer = std::thread::spawn(|| {
        let start = std::time::Instant::now();
        while !step_runs_on_engine2() {
            if start.elapsed() > std::time::Duration::from_secs(120) {
                return Err("no step ran on the second engine within 120 s".to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        engine2::stop("KILL")
    });
    let run = kiln(
        dir.path(),
        &["--builder", ENGINE1, "--builder", &e2, "build"],
    );
    killer.join().unwrap().expect("kill the second engine");
    let restarted = engine2::start();
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .contains(&format!("warning: builder {e2} stopped answering")),
        "{run}"
    );
    assert!(run.stderr.contains(&format!("to {ENGINE1}")), "{run}");
    // The builder's error is in the warning once, bare: no `error: ` prefix nested in it (the
    // error's own words may say "connection error:").
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains(&format!("warning: builder {e2} stopped answering")))
        .unwrap_or_default();
    assert!(
        warning.contains(" stopped answering (") && !warning.contains("(error: "),
        "{warning}\n{run}"
    );
    // Every target ended on the first engine and is in its image store.
    let on = builders(&run.stdout);
    assert_eq!(on.len(), NAMES.len() + 1, "{run}");
    for (target, builder) in &on {
        assert_eq!(builder, ENGINE1, "{target}: {run}");
        assert!(
            has_image("unix:///var/run/docker.sock", &images[target].0),
            "{target}: {run}"
        );
    }
    restarted.expect("the second engine again");
}
