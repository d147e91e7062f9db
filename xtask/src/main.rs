//! Project automation, run as `cargo xtask <task>` (see matklad/cargo-xtask).
//!
//! - `build`: the main job on a fresh machine: install what is missing, start the engine,
//!   make the base image from Debian packages, then `kiln refresh` (only for a missing lock)
//!   and `kiln build` of `manifests/examples.toml` with the `debian` profile, and run the
//!   images.
//! - `test`: what CI runs: formatting, clippy, and the whole test suite, with
//!   `KILN_REQUIRE_ENGINE=1` so that the engine tests fail rather than skip without an engine.
//! - `bench [plan|engine|rebuild|context|seed|incremental|fresh-runner|cache|buildkitd|all]`: the benchmarks and their goals
//!   (default all): planning a 1,000-target manifest; a cached rebuild against `docker build` on
//!   the same engine; a 20,000-file context rebuilt after one change; kiln against `buildctl` on
//!   a standalone buildkitd, when one is given (see `bench.rs`).
//! - `fuzz [--seconds N] [--libfuzzer]`: a short bounded fuzz run (default 60 s) of the
//!   manifest loader and the planner over a seed corpus of every manifest in the repository
//!   (see `fuzz.rs`).

mod bench;
/// The second Docker Engine the cache and pool tests use (shared with the tests).
#[path = "../../tests/support/engine2.rs"]
mod engine2;
mod env;
mod fuzz;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("build") => build(&args[1..]),
        Some("bench") => bench::run(&root(), &args[1..]),
        Some("fuzz") => fuzz::run(&root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  build   set up the machine (engine, base image) and build the examples with kiln\n  test    run formatting and lint checks and every test (what CI runs)\n  bench   run the benchmarks and check their goals: bench [plan|engine|rebuild|context|seed|incremental|fresh-runner|cache|buildkitd|all]\n  fuzz    fuzz the manifest loader and planner for a short while: fuzz [--seconds N] [--libfuzzer]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Run a command in the workspace root, echoing it; error if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_env(program, args, &[])
}

/// [`run`] with extra environment variables.
pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed: {status}", args.join(" ")))
    }
}

/// The examples and the lock file each one needs before a pinned build.
const EXAMPLES: &[(&str, Option<&str>)] = &[
    ("hello", None),
    ("uv-app", Some("examples/uv-app/uv.lock")),
    ("pip-app", Some("examples/pip-app/requirements.txt")),
];

fn build(extra: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run(&cargo, &["build", "--quiet", "-p", "kiln-cli"])?;
    let kiln = root().join("target/debug/kiln");
    let kiln_s = kiln.to_str().expect("UTF-8 path");
    env::up(&kiln)?;
    let manifest = ["-f", "manifests/examples.toml", "--profile", "debian"];
    let missing: Vec<&str> = EXAMPLES
        .iter()
        .filter(|(_, lock)| lock.is_some_and(|l| !root().join(l).exists()))
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        eprintln!("build: no lock yet for {}: refreshing", missing.join(", "));
        let mut args = vec!["refresh"];
        args.extend(manifest);
        args.extend(&missing);
        run(kiln_s, &args)?;
    }
    let mut args = vec!["build"];
    args.extend(manifest);
    args.extend(extra.iter().map(String::as_str));
    run(kiln_s, &args)?;
    for (name, _) in EXAMPLES {
        let image = format!("kiln-examples/{name}:dev");
        run("docker", &["run", "--rm", "--network", "none", &image])?;
    }
    eprintln!(
        "build: done. Set up: Debian packages as needed, the engine (`kiln engine status`), the \
         base image kiln-base/debian-python:bookworm; built and ran the images kiln-examples/{{hello,uv-app,pip-app}}:dev"
    );
    Ok(())
}

fn test(extra: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run(&cargo, &["fmt", "--all", "--", "--check"])?;
    run(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The integration tests run against the real engine: make sure it is there.
    run(&cargo, &["build", "--quiet", "-p", "kiln-cli"])?;
    env::up(&root().join("target/debug/kiln"))?;
    // A second, separate engine for the remote-cache and builder-pool tests; stopped after
    // (only it: its pid file is its own, under the kiln dev cache dir).
    eprintln!(
        "test: starting a second Docker Engine at {}",
        engine2::url()
    );
    engine2::start()?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    let url = engine2::url();
    // KILN_REQUIRE_ENGINE=1: an engine test fails, rather than skips, without the engine, so
    // CI never counts a skipped test as passing.
    let result = run_env(
        &cargo,
        &args,
        &[(engine2::VAR, &url), ("KILN_REQUIRE_ENGINE", "1")],
    );
    if let Err(e) = engine2::stop("TERM") {
        eprintln!("test: {e}");
    }
    if let Err(e) = env::tidy_engine() {
        eprintln!("test: {e}");
    }
    result
}
