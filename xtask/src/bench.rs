//! `cargo xtask bench [plan|engine|rebuild|context|seed|incremental|fresh-runner|cache|buildkitd|all]`
//! (default `all`): the benchmarks and their goals. Exits non-zero when any goal of the
//! benchmarks run is missed. Timings of a
//! debug build say nothing, so the task re-runs itself from a release build of xtask.
//!
//! - `plan`: the planning benchmark. Generates a manifest of 1,000 targets in a tree (every
//!   target with run steps, copies, packages and a smoke test, a third of them also copying from
//!   another target) and measures, in this process, load (parse + validate + resolve + graph),
//!   compile to LLB and marshal of every stage, with a counting allocator for peak heap; then the
//!   whole `kiln plan --format json` command as a release subprocess, wall time and peak RSS.
//!   Goals (issue 2): under 100 ms and under 50 MB.
//! - `engine`: the benchmarks below (all but `buildkitd`), against the real engine (Docker Engine 20.10's
//!   embedded BuildKit, started by `cargo xtask test`, with the base image it imports). See
//!   [`engine`] for what the first two build.
//!   - `rebuild`: a cached rebuild of a two-target manifest with `kiln build` (release
//!     subprocess) against `docker build` of the equivalent multi-stage Dockerfile on the same
//!     engine, median wall time of several runs after a warm-up. Goal: kiln no slower.
//!   - `context`: a 20,000-file build context (about 70 MB), built, then rebuilt after one file
//!     changes (in process, through `kiln_app::build`, which reports what the daemon pulled).
//!     Goal: the rebuild transfers under 1% of the context's bytes.
//!   - `seed`: kiln against the workflow it replaces, the seed's multi-stage Dockerfile +
//!     Makefile for `examples/uv-app` (`benches/seed/`, classic `docker build`), on temporary
//!     copies; medians of several runs after a warm-up. See [`seed`] for what each side does.
//!     Goals: (a) a no-op `kiln build` (up to date, solves nothing) at most 1/10 of `make build
//!     smoke-test`; (b) `kiln build --force` (all cached) no slower than one cached `docker
//!     build` of the target image, classic or through BuildKit; (c) `kiln refresh` no slower
//!     than `make python-pkg-refresh` (both really re-resolving against PyPI).
//!   - `incremental`: 8 independent targets, one edited, `kiln build` of all against `kiln build`
//!     of that one (see [`incremental`]). Goal (issue 12): within 1.3x.
//!   - `fresh-runner`: 8 targets pushed to the local registry, their images removed from the
//!     engine, `kiln build --push` (up to date from the registry's digests). Goal: under 1 s.
//! - `cache`: a cold build on an emptied second Docker Engine, then the same commit on the
//!   emptied engine again, importing the remote cache the first pushed; the same on a
//!   buildkitd emptied by `buildctl prune --all` when `KILN_BENCH_BUILDKITD` names one. See
//!   [`cache`]. Goal (issue 12): the packages and smoke test steps cached, at most 0.3x the
//!   cold build (checked on the buildkitd; Docker's ratio is shown beside its base pull).
//! - `buildkitd`: only with `KILN_BENCH_BUILDKITD=unix:///…/buildkitd.sock` (skipped, saying
//!   so, without): a cached `kiln build --force` of one target against `buildctl build` of the
//!   equivalent Dockerfile on that standalone buildkitd. See [`buildkitd`]. Goal (issue 11):
//!   kiln's median within 1.5x buildctl's.

#![allow(unsafe_code)]

mod buildkitd;
mod cache;
mod engine;
mod incremental;
mod seed;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln_app::{PackagesMode, PlanFormat, Settings};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TARGETS: usize = 1000;
const ITERATIONS: usize = 20;
const GOAL_TIME: Duration = Duration::from_millis(100);
const GOAL_MEMORY: usize = 50 * 1024 * 1024;

/// A manifest of `n` targets: a binary tree by `from`, plus copy edges.
pub fn generate(n: usize) -> String {
    let mut s = String::from(
        "version = 1\n\n[vars]\nREGISTRY = { default = \"127.0.0.1:5000\" }\nTAG = { default = \"dev\", env = \"BENCH_TAG\" }\n\n[defaults]\nnetwork = \"host\"\nca-certificates = \"host\"\n\n",
    );
    for i in 0..n {
        s.push_str(&format!("[target.t{i:04}]\n"));
        if i == 0 {
            s.push_str("from = \"docker.io/library/python:3.11-slim-bookworm\"\n");
        } else {
            s.push_str(&format!("from = \"target:t{:04}\"\n", (i - 1) / 2));
        }
        s.push_str(&format!(
            "image = \"${{REGISTRY}}/bench/t{i:04}:${{TAG}}\"\nrun = [\"apt-get update\", \"echo step {i} > /step\"]\n"
        ));
        s.push_str(&format!(
            "copy = [{{ src = \"src/\", dest = \"/app/t{i}\" }}{}]\n",
            if i % 3 == 2 {
                format!(
                    ", {{ from = \"target:t{:04}\", src = \"/step\", dest = \"/from-sibling\" }}",
                    i - 1
                )
            } else {
                String::new()
            }
        ));
        s.push_str("build-env = { PIP_INDEX_URL = \"http://127.0.0.1:8080/simple\" }\n");
        s.push_str(&format!("[target.t{i:04}.packages]\nmanager = \"uv\"\n"));
        s.push_str(&format!(
            "[target.t{i:04}.smoke-test]\ncopy = [\"tests/\"]\nrun = [\"python tests/smoke.py {i}\"]\n"
        ));
        s.push_str(&format!(
            "[target.t{i:04}.config]\nworkdir = \"/app\"\nenv = {{ N = \"{i}\" }}\nlabels = {{ \"org.opencontainers.image.title\" = \"t{i}\" }}\n\n"
        ));
    }
    s
}

struct Stats {
    min: Duration,
    median: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        min: samples[0],
        median: samples[samples.len() / 2],
        max: samples[samples.len() - 1],
    }
}

/// The benchmarks `cargo xtask bench` knows, in the order `all` runs them.
const BENCHES: &[&str] = &[
    "plan",
    "rebuild",
    "context",
    "seed",
    "incremental",
    "fresh-runner",
    "cache",
    "buildkitd",
];

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let selected: Vec<&str> = match args {
        [] => BENCHES.to_vec(),
        [one] => match one.as_str() {
            "all" => BENCHES.to_vec(),
            "engine" => vec!["rebuild", "context", "seed", "incremental", "fresh-runner"],
            name if BENCHES.contains(&name) => vec![name],
            other => {
                return Err(format!(
                    "unknown benchmark `{other}`: expected plan, engine, rebuild, context, seed, incremental, fresh-runner, cache, buildkitd or all"
                ));
            }
        },
        _ => {
            return Err(
                "usage: cargo xtask bench [plan|engine|rebuild|context|seed|incremental|fresh-runner|cache|buildkitd|all]"
                    .to_string(),
            );
        }
    };
    // Timings of a debug build say nothing: re-run this task from a release build of xtask.
    if cfg!(debug_assertions) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut all = vec!["run", "--quiet", "--release", "-p", "xtask", "--", "bench"];
        all.extend(args.iter().map(String::as_str));
        return crate::run(&cargo, &all);
    }
    let mut missed = Vec::new();
    for (i, bench) in selected.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let goals = match *bench {
            "plan" => plan(root)?,
            "rebuild" => engine::rebuild(root)?,
            "context" => engine::context()?,
            "seed" => seed::seed(root)?,
            "cache" => cache::cache(root)?,
            "incremental" => incremental::incremental(root)?,
            "fresh-runner" => incremental::fresh_runner(root)?,
            "buildkitd" => buildkitd::buildkitd(root)?,
            _ => unreachable!("checked above"),
        };
        missed.extend(goals.into_iter().map(|goal| format!("{bench}: {goal}")));
    }
    if missed.is_empty() {
        println!("\nall goals met");
        Ok(())
    } else {
        Err(format!("goal missed: {}", missed.join("; ")))
    }
}

/// The release `kiln` binary, built (or found up to date) by cargo.
fn release_kiln(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    crate::run(&cargo, &["build", "--quiet", "--release", "-p", "kiln-cli"])?;
    Ok(root.join("target/release/kiln"))
}

/// The planning benchmark; returns the goals it missed.
fn plan(root: &Path) -> Result<Vec<String>, String> {
    let dir = std::env::temp_dir().join(format!("kiln-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let manifest = dir.join("kiln.toml");
    let text = generate(TARGETS);
    std::fs::write(&manifest, &text).map_err(|e| e.to_string())?;
    let settings = Settings {
        files: vec![manifest.clone()],
        cwd: dir.clone(),
        ..Settings::default()
    };

    // In process: each phase, with the heap peak of one full run.
    let mut load = Vec::new();
    let mut full = Vec::new();
    let mut marshal = Vec::new();
    let mut def_stats = (0, 0);
    let mut peak = 0;
    let mut stages = 0;
    for i in 0..=ITERATIONS {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t0 = Instant::now();
        let loaded = kiln_app::load(&settings, PackagesMode::Pinned).map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        drop(loaded);
        let t2 = Instant::now();
        let out = kiln_app::plan(&settings, &[], PlanFormat::Json, PackagesMode::Pinned)
            .map_err(|e| e.to_string())?;
        let t3 = Instant::now();
        let (definitions, bytes) =
            kiln_app::marshal_all(&settings, PackagesMode::Pinned).map_err(|e| e.to_string())?;
        let t4 = Instant::now();
        def_stats = (definitions, bytes);
        stages = out.matches("\"digest\": \"sha256:").count();
        drop(out);
        if i > 0 {
            load.push(t1 - t0);
            full.push(t3 - t2);
            marshal.push(t4 - t3);
            peak = peak.max(PEAK.load(Ordering::Relaxed) - base);
        }
    }

    // As a user runs it: the release binary, whole process.
    let kiln = release_kiln(root)?;
    let mut wall = Vec::new();
    let mut rss = 0;
    for _ in 0..ITERATIONS {
        let t0 = Instant::now();
        let child = Command::new(&kiln)
            .args(["-f", manifest.to_str().unwrap(), "plan", "--format", "json"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", kiln.display()))?;
        let (code, peak) = wait_with_rss(child)?;
        wall.push(t0.elapsed());
        rss = rss.max(peak);
        if code != 0 {
            return Err(format!("kiln plan failed: exit code {code}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let load = stats(load);
    let full = stats(full);
    let marshal = stats(marshal);
    let wall = stats(wall);
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mb = |b: usize| format!("{:.1} MB", b as f64 / 1024.0 / 1024.0);
    println!(
        "planning benchmark: {TARGETS} targets, {stages} stages, manifest {} KB, {ITERATIONS} runs each",
        text.len() / 1024
    );
    println!(
        "(plan encodes every op once and digests every stage; the info line marshals each of the\n\
         {} stages as a standalone Definition with all its ancestors, {:.1} MB in all, which no\n\
         command does: a build sends only the stages it solves)\n",
        def_stats.0,
        def_stats.1 as f64 / 1024.0 / 1024.0
    );
    println!(
        "| measure                                   | min      | median   | max      | goal     |"
    );
    println!(
        "|-------------------------------------------|----------|----------|----------|----------|"
    );
    println!(
        "| load: parse+validate+resolve+graph        | {:>8} | {:>8} | {:>8} |          |",
        ms(load.min),
        ms(load.median),
        ms(load.max)
    );
    println!(
        "| plan: load+compile+marshal all LLB+json   | {:>8} | {:>8} | {:>8} | < 100 ms |",
        ms(full.min),
        ms(full.median),
        ms(full.max)
    );
    println!(
        "| info: every stage's whole Definition      | {:>8} | {:>8} | {:>8} |          |",
        ms(marshal.min),
        ms(marshal.median),
        ms(marshal.max)
    );
    println!(
        "| `kiln plan --format json` process, wall   | {:>8} | {:>8} | {:>8} | < 100 ms |",
        ms(wall.min),
        ms(wall.median),
        ms(wall.max)
    );
    println!(
        "| plan: peak heap (counting allocator)      | {:>8} |          |          | < 50 MB  |",
        mb(peak)
    );
    println!(
        "| `kiln plan` process: peak RSS             | {:>8} |          |          | < 50 MB  |",
        mb(rss)
    );

    let mut missed = Vec::new();
    if full.median >= GOAL_TIME || wall.median >= GOAL_TIME {
        missed.push("time (< 100 ms)".to_string());
    }
    if peak >= GOAL_MEMORY || rss >= GOAL_MEMORY {
        missed.push("memory (< 50 MB)".to_string());
    }
    Ok(missed)
}

/// Peak resident set size of the largest waited-for child process, in bytes.
/// Wait for `child` and return its exit status and its own peak RSS in bytes (wait4 reports
/// the rusage of exactly that process, not of every child this process ever had).
fn wait_with_rss(child: std::process::Child) -> Result<(i32, usize), String> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 only writes into the status and rusage we pass; a zeroed rusage is valid.
    // The child is reaped here, so `child` must not be waited on again (it is dropped unwaited).
    let (rc, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::wait4(pid, &mut status, 0, &mut usage);
        (rc, usage)
    };
    drop(child);
    if rc != pid {
        return Err(format!(
            "wait4({pid}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage.ru_maxrss as usize * 1024))
}
