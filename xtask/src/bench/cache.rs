//! `cache`: the remote build cache on a fresh runner (issue 12, item 5). In a temporary copy
//! of `examples/uv-app` (uv packages from PyPI, a smoke test), with `[defaults] cache` naming a
//! repository of the local registry unique to this run, on the second Docker Engine
//! (`tests/support/engine2.rs`, emptied before each build: no images, no build cache):
//! 1. cold: `kiln build` with nothing in the cache yet — every step runs, and the target's
//!    cache is pushed to `REF:uv-app`;
//! 2. the engine is emptied again, then `kiln build` of the same commit, which imports the
//!    cache from the registry.
//!
//! Both are whole commands (release binary, `--progress plain`), timed. The second must take
//! the packages step and the smoke test from the cache (its steps are counted from the
//! `CACHED`/`DONE` lines). Goal: the second at most 0.3 times the cold build's time.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::engine::{Scratch, copy_tree, ms, output, succeeded};

const GOAL_RATIO: f64 = 0.3;

pub fn cache(root: &Path) -> Result<Vec<String>, String> {
    let kiln = super::release_kiln(root)?;
    // Started here (not by `cargo xtask test`): stopped again at the end.
    let ours = !crate::engine2::answers();
    let scratch = Scratch::new("cache")?;
    let app = root.join("examples/uv-app");
    for file in ["pyproject.toml", "uv.lock"] {
        let data = std::fs::read(app.join(file))
            .map_err(|e| format!("read {}: {e}", app.join(file).display()))?;
        scratch.write(file, &data)?;
    }
    copy_tree(&app.join("src"), &scratch.dir.join("src"))?;
    copy_tree(&app.join("tests"), &scratch.dir.join("tests"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let repository = format!(
        "{}/kiln-bench/cache-{}-{nanos}",
        crate::env::REGISTRY,
        std::process::id()
    );
    let base = crate::env::REGISTRY_BASES[0];
    scratch.write(
        "kiln.toml",
        format!(
            r#"version = 1

[defaults]
network = "host"
ca-certificates = "host"
cache = "{repository}"

[target.uv-app]
from  = "{base}"
image = "kiln-bench/uv-app:cache"
copy  = [{{ src = "src/", dest = "/app/src" }}]

[target.uv-app.packages]
manager = "uv"
files   = ["pyproject.toml"]
lock    = "uv.lock"

[target.uv-app.smoke-test]
copy = ["tests/"]
run  = ["python tests/smoke.py"]

[target.uv-app.config]
env     = {{ PYTHONPATH = "/app/src" }}
workdir = "/app"
"#
        )
        .as_bytes(),
    )?;
    let dir = scratch.dir.clone();
    let build = |what: &str| -> Result<(Duration, String), String> {
        // An empty engine each time: a fresh CI runner.
        crate::engine2::reset()?;
        // kiln.lock would say "up to date" only with the image in the engine; it is not.
        let _ = std::fs::remove_file(dir.join("kiln.lock"));
        let mut command = Command::new(&kiln);
        command
            .args(["build", "--progress", "plain"])
            .env("DOCKER_HOST", crate::engine2::url())
            .env_remove("BUILDKIT_HOST")
            .current_dir(&dir);
        let t = Instant::now();
        let out = output(&mut command, what)?;
        let elapsed = t.elapsed();
        succeeded(&out, what)?;
        Ok((elapsed, String::from_utf8_lossy(&out.stderr).into_owned()))
    };

    eprintln!(
        "bench cache: uv-app on an emptied second engine ({}), cache {repository}",
        crate::engine2::url()
    );
    let (cold, cold_log) = build("cold kiln build")?;
    let cold_steps = steps(&cold_log);
    eprintln!(
        "  cold build: {} ({} steps run, {} cached)",
        ms(cold),
        cold_steps.0,
        cold_steps.1
    );
    let (warm, warm_log) = build("kiln build from the remote cache")?;
    let warm_steps = steps(&warm_log);
    let _ = if ours {
        crate::engine2::stop("TERM")
    } else {
        crate::engine2::reset()
    };
    let cached = |step: &str| {
        warm_log
            .lines()
            .any(|l| l.contains(&format!("CACHED [uv-app/{step}")))
    };
    let ratio = warm.as_secs_f64() / cold.as_secs_f64().max(f64::EPSILON);
    println!("cache benchmark (issue 12: a fresh runner imports the remote cache)");
    println!(
        "  cold build on an empty engine:       {:>9}  ({} steps run, {} cached)",
        ms(cold),
        cold_steps.0,
        cold_steps.1
    );
    println!(
        "  same commit, empty engine, cache:    {:>9}  ({} steps run, {} cached; packages {}, smoke test {})",
        ms(warm),
        warm_steps.0,
        warm_steps.1,
        if cached("packages") { "cached" } else { "RAN" },
        if cached("smoke-test") {
            "cached"
        } else {
            "RAN"
        },
    );
    println!("  ratio: {ratio:.2}x (goal: at most {GOAL_RATIO}x)");
    let mut missed = Vec::new();
    if !cached("packages") || !cached("smoke-test") {
        missed.push(format!(
            "the build from the cache ran its packages or smoke test steps:\n{warm_log}"
        ));
    }
    if ratio > GOAL_RATIO {
        missed.push(format!("{ratio:.2}x the cold build (goal {GOAL_RATIO}x)"));
    }
    Ok(missed)
}

/// (steps run, steps cached) of a plain-progress log: its `DONE [uv-app/…]` and
/// `CACHED [uv-app/…]` lines (the target's own steps, not context transfers, base pulls or
/// exports).
fn steps(log: &str) -> (usize, usize) {
    let count = |word: &str| {
        log.lines()
            .filter(|l| {
                l.split_once("] ")
                    .is_some_and(|(_, r)| r.starts_with(&format!("{word} [uv-app/")))
            })
            .count()
    };
    (count("DONE"), count("CACHED"))
}
