//! `cache`: the remote build cache on a fresh runner (issue 12, item 5). In a temporary copy
//! of `examples/uv-app` (uv packages from PyPI, a smoke test), with `[defaults] cache` naming a
//! repository of the local registry unique to this run, on each kind of builder:
//! - Docker Engine 20.10: the second engine (`tests/support/engine2.rs`), emptied before each
//!   build (no images, no build cache); inline cache pushed as `REF:uv-app`. Then the base
//!   image alone is pulled into the emptied engine with `docker pull`, timed: the part of any
//!   build there that no cache can save (its `moby` exporter needs every layer in the image
//!   store, the base's too).
//! - a standalone buildkitd, when `KILN_BENCH_BUILDKITD` names one (as for `bench
//!   buildkitd`; `KILN_BENCH_BUILDCTL` is its buildctl): emptied with `buildctl prune --all`
//!   before each build, registry cache `mode=max`, the image pushed (`--push`, as a CI runner
//!   does). Without one, this half says it is skipped.
//!
//! On each: 1. cold: `kiln build` with nothing in the cache yet — every step runs, and the
//! target's cache is exported; 2. the builder is emptied again, then `kiln build` of the same
//! commit, which imports the cache from the registry. Both are whole commands (release binary,
//! `--progress plain`), timed. The second must take the packages step and the smoke test from
//! the cache (its steps are counted from the `CACHED`/`DONE` lines) on both. Goal: the second
//! at most 0.3 times the cold build's time, checked on the buildkitd (skipped, and said so,
//! without one); on Docker Engine 20.10 the ratio is printed beside the base pull that bounds
//! it from below.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::engine::{Scratch, copy_tree, ms, output, succeeded};

const GOAL_RATIO: f64 = 0.3;

pub fn cache(root: &Path) -> Result<Vec<String>, String> {
    let kiln = super::release_kiln(root)?;
    let app = root.join("examples/uv-app");
    println!("cache benchmark (issue 12: a fresh runner imports the remote cache)");
    let mut missed = Vec::new();

    // Docker Engine 20.10: the second engine, emptied before each build.
    // Started here (not by `cargo xtask test`): stopped again at the end.
    let ours = !crate::engine2::answers();
    let docker = Scratch::new("cache")?;
    let repository = project(&docker, &app, "kiln-bench/uv-app:cache")?;
    eprintln!(
        "bench cache: uv-app on an emptied second engine ({}), cache {repository}",
        crate::engine2::url()
    );
    let run = |what: &str| {
        // An empty engine each time: a fresh CI runner.
        crate::engine2::reset()?;
        let mut command = Command::new(&kiln);
        command
            .args(["build", "--progress", "plain"])
            .env("DOCKER_HOST", crate::engine2::url())
            .env_remove("BUILDKIT_HOST");
        build(command, &docker.dir, what)
    };
    // Its moby exporter puts every layer in the engine's image store, the base's too, so a
    // build there can never be faster than pulling the base: the ratio is shown, and the goal
    // is held to a builder that can build without that (a buildkitd, below).
    let mut measured = measure(
        run,
        "Docker Engine 20.10 (second engine)",
        false,
        &mut missed,
    );
    if measured.is_ok() {
        // What no cache can save there.
        measured = crate::engine2::reset().and_then(|()| {
            let base = crate::env::REGISTRY_BASES[0];
            let mut pull = Command::new("docker");
            pull.args(["-H", &crate::engine2::url(), "pull", "--quiet", base]);
            let t = Instant::now();
            succeeded(&output(&mut pull, "docker pull")?, "docker pull")?;
            println!(
                "    `docker pull` of the base alone into the emptied engine: {:>9}",
                ms(t.elapsed())
            );
            Ok(())
        });
    }
    let _ = if ours {
        crate::engine2::stop("TERM")
    } else {
        crate::engine2::reset()
    };
    measured?;

    // A standalone buildkitd (registry cache, mode=max) when one is given, as `bench buildkitd`
    // takes it: emptied with `buildctl prune --all` before each build; the image is pushed.
    let url = match std::env::var("KILN_BENCH_BUILDKITD") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!(
                "  buildkitd: skipped (no buildkitd given: set \
                 KILN_BENCH_BUILDKITD=unix:///path/buildkitd.sock to run it; the {GOAL_RATIO}x \
                 goal is checked there)"
            );
            return Ok(missed);
        }
    };
    let buildctl = std::env::var("KILN_BENCH_BUILDCTL").unwrap_or_else(|_| "buildctl".to_string());
    let standalone = Scratch::new("cache-buildkitd")?;
    let image = format!(
        "{}/kiln-bench/uv-app:cache-{}",
        crate::env::REGISTRY,
        std::process::id()
    );
    let repository = project(&standalone, &app, &image)?;
    eprintln!("bench cache: uv-app on an emptied buildkitd ({url}), cache {repository}, --push");
    let run = |what: &str| {
        let mut prune = Command::new(&buildctl);
        prune.args(["--addr", &url, "prune", "--all"]);
        succeeded(
            &output(&mut prune, "buildctl prune --all")?,
            "buildctl prune --all",
        )?;
        let mut command = Command::new(&kiln);
        command.args(["--builder", &url, "build", "--push", "--progress", "plain"]);
        build(command, &standalone.dir, what)
    };
    measure(run, &format!("buildkitd ({url})"), true, &mut missed)?;
    Ok(missed)
}

/// A copy of `examples/uv-app` in `scratch` whose `[defaults] cache` names a repository of the
/// local registry unique to this run (returned), building `image`.
fn project(scratch: &Scratch, app: &Path, image: &str) -> Result<String, String> {
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
image = "{image}"
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
    Ok(repository)
}

/// Run `command` (a `kiln build` on an emptied builder) in `dir`, timed; its progress log.
fn build(mut command: Command, dir: &Path, what: &str) -> Result<(Duration, String), String> {
    // kiln.lock would say "up to date"; on an empty builder the point is to build.
    let _ = std::fs::remove_file(dir.join("kiln.lock"));
    command.current_dir(dir);
    let t = Instant::now();
    let out = output(&mut command, what)?;
    let elapsed = t.elapsed();
    succeeded(&out, what)?;
    Ok((elapsed, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// The cold build, then the same commit from the cache, on one kind of builder (`run` empties
/// it first); prints both and the ratio, and adds to `missed` a step that was not cached and,
/// when `goal`, a ratio above the goal.
fn measure(
    run: impl Fn(&str) -> Result<(Duration, String), String>,
    builder: &str,
    goal: bool,
    missed: &mut Vec<String>,
) -> Result<(), String> {
    let (cold, cold_log) = run("cold kiln build")?;
    let cold_steps = steps(&cold_log);
    eprintln!(
        "  cold build: {} ({} steps run, {} cached)",
        ms(cold),
        cold_steps.0,
        cold_steps.1
    );
    let (warm, warm_log) = run("kiln build from the remote cache")?;
    let warm_steps = steps(&warm_log);
    let cached = |step: &str| {
        warm_log
            .lines()
            .any(|l| l.contains(&format!("CACHED [uv-app/{step}")))
    };
    let ratio = warm.as_secs_f64() / cold.as_secs_f64().max(f64::EPSILON);
    println!("  {builder}:");
    println!(
        "    cold build on an empty builder:      {:>9}  ({} steps run, {} cached)",
        ms(cold),
        cold_steps.0,
        cold_steps.1
    );
    println!(
        "    same commit, empty builder, cache:   {:>9}  ({} steps run, {} cached; packages {}, smoke test {})",
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
    if goal {
        println!("    ratio: {ratio:.2}x (goal: at most {GOAL_RATIO}x)");
    } else {
        println!(
            "    ratio: {ratio:.2}x (not held to the {GOAL_RATIO}x goal: every build here pulls \
             the base, timed below)"
        );
    }
    if !cached("packages") || !cached("smoke-test") {
        missed.push(format!(
            "{builder}: the build from the cache ran its packages or smoke test steps:\n{warm_log}"
        ));
    }
    if goal && ratio > GOAL_RATIO {
        missed.push(format!(
            "{builder}: {ratio:.2}x the cold build (goal {GOAL_RATIO}x)"
        ));
    }
    Ok(())
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
