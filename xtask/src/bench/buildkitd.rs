//! `buildkitd`: kiln against `buildctl` on a standalone buildkitd, only when one is given
//! (`KILN_BENCH_BUILDKITD=unix:///path/buildkitd.sock`, or `tcp://host:port` without TLS; CI
//! has none, and the benchmark then says it is skipped). In a temporary directory, one target
//! on the base image (a RUN step and a file copied from the context) and the equivalent
//! Dockerfile; each is built once to warm the daemon's cache, then [`RUNS`] times, taking turns,
//! timing the whole command:
//! - `kiln --builder URL build --force` (the release binary): solves even though `kiln.lock`
//!   says it is up to date, and keeps the image in the builder's cache (no `--load`/`--push`);
//! - `buildctl --addr URL build --frontend dockerfile.v0 --local context=. --local
//!   dockerfile=.` (no `--output`: the result stays in the cache too); `buildctl` is
//!   `KILN_BENCH_BUILDCTL`, else the one on `PATH`.
//!
//! The base image must be pullable by the daemon: `KILN_BENCH_BASE`, else the base that
//! `cargo xtask test` pushes to the local registry (the daemon needs that registry marked
//! `http = true` in its buildkitd.toml). Both timed runs must be cache hits. Goal (issue 11): kiln's
//! median within 1.5 times buildctl's.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::engine::{Scratch, ms, output, succeeded};
use super::stats;

/// Timed runs per tool, after one warm-up.
const RUNS: usize = 9;
/// Goal: kiln's median at most this many times buildctl's.
const GOAL_RATIO: f64 = 1.5;

pub fn buildkitd(root: &Path) -> Result<Vec<String>, String> {
    let url = match std::env::var("KILN_BENCH_BUILDKITD") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!(
                "buildkitd benchmark: skipped (no buildkitd given: set \
                 KILN_BENCH_BUILDKITD=unix:///path/buildkitd.sock to run it)"
            );
            return Ok(Vec::new());
        }
    };
    let buildctl = std::env::var("KILN_BENCH_BUILDCTL").unwrap_or_else(|_| "buildctl".to_string());
    let base = std::env::var("KILN_BENCH_BASE")
        .unwrap_or_else(|_| crate::env::REGISTRY_BASES[0].to_string());
    let kiln = super::release_kiln(root)?;
    let scratch = Scratch::new("buildkitd")?;
    // Never loaded or pushed: the tag only names the image in the builder's cache.
    let image = format!("kiln-bench/buildkitd:{}", std::process::id());
    scratch.write(
        "kiln.toml",
        format!(
            r#"version = 1

[target.hello]
from  = "{base}"
image = "{image}"
run   = ["echo hello from the buildkitd benchmark > /hello"]
copy  = [{{ src = "msg.txt", dest = "/msg.txt" }}]
"#
        )
        .as_bytes(),
    )?;
    scratch.write(
        "Dockerfile",
        format!(
            "FROM {base}\nRUN echo hello from the buildkitd benchmark > /hello\nCOPY msg.txt /msg.txt\n"
        )
        .as_bytes(),
    )?;
    scratch.write("msg.txt", b"a file from the context\n")?;
    let dir = scratch.dir.clone();

    let kiln_run = || {
        let mut c = Command::new(&kiln);
        c.args(["--builder", &url, "build", "--force", "--progress", "plain"])
            .current_dir(&dir);
        c
    };
    let buildctl_run = || {
        let mut c = Command::new(&buildctl);
        c.args([
            "--addr",
            &url,
            "build",
            "--progress",
            "plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            "context=.",
            "--local",
            "dockerfile=.",
        ])
        .current_dir(&dir);
        c
    };
    let timed = |mut command: Command, what: &str| -> Result<(Duration, String), String> {
        let t = Instant::now();
        let out = output(&mut command, what)?;
        let elapsed = t.elapsed();
        succeeded(&out, what)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((elapsed, text))
    };

    eprintln!("bench buildkitd: {url}, warming the cache, then {RUNS} cached builds per tool");
    let (warm, _) = timed(kiln_run(), "kiln build")?;
    eprintln!("  warm-up kiln build: {}", ms(warm));
    let (warm, _) = timed(buildctl_run(), "buildctl build")?;
    eprintln!("  warm-up buildctl build: {}", ms(warm));
    let mut kiln_times = Vec::new();
    let mut buildctl_times = Vec::new();
    let (mut kiln_last, mut buildctl_last) = (String::new(), String::new());
    for _ in 0..RUNS {
        let (t, text) = timed(kiln_run(), "kiln build")?;
        kiln_times.push(t);
        kiln_last = text;
        let (t, text) = timed(buildctl_run(), "buildctl build")?;
        buildctl_times.push(t);
        buildctl_last = text;
    }
    // Both solved everything from the cache, and kiln said where the image is.
    let kiln_ran = kiln_last.lines().any(|l| l.contains("] DONE [hello/"));
    let buildctl_ran = buildctl_last.contains(" RUN ") && !buildctl_last.contains("CACHED");
    if kiln_ran || buildctl_ran {
        return Err(format!(
            "a timed build ran steps instead of using the cache:\nkiln:\n{kiln_last}\nbuildctl:\n{buildctl_last}"
        ));
    }
    if !kiln_last.contains("only in the builder's cache") {
        return Err(format!(
            "kiln did not say the image is only in the builder's cache:\n{kiln_last}"
        ));
    }

    let kiln_stats = stats(kiln_times);
    let buildctl_stats = stats(buildctl_times);
    let ratio = kiln_stats.median.as_secs_f64() / buildctl_stats.median.as_secs_f64();
    println!(
        "buildkitd benchmark: a cached forced build of one target (a RUN step, a COPY from the\n\
         context) and of the equivalent Dockerfile, on the same buildkitd; {RUNS} runs each after\n\
         one warm-up, taking turns; wall time of the whole command; both keep the result in the\n\
         daemon's cache\nbuildkitd: {url}\n"
    );
    println!(
        "| builder                                                 | min      | median   | max      | goal     |"
    );
    println!(
        "|---------------------------------------------------------|----------|----------|----------|----------|"
    );
    for (label, s, goal) in [
        ("`kiln build --force` (release)", &kiln_stats, "<= 1.5x"),
        (
            "`buildctl build --frontend dockerfile.v0`",
            &buildctl_stats,
            "",
        ),
    ] {
        println!(
            "| {label:<55} | {:>8} | {:>8} | {:>8} | {goal:<8} |",
            ms(s.min),
            ms(s.median),
            ms(s.max)
        );
    }
    println!(
        "| {:<55} | {:>8} | {:>8} | {:>8} | {:<8} |",
        "median ratio kiln / buildctl",
        "",
        format!("{ratio:.2}x"),
        "",
        "<= 1.50x"
    );

    let mut missed = Vec::new();
    if ratio > GOAL_RATIO {
        missed.push(format!(
            "kiln ({}) more than {GOAL_RATIO}x buildctl ({}) on buildkitd",
            ms(kiln_stats.median),
            ms(buildctl_stats.median)
        ));
    }
    Ok(missed)
}
