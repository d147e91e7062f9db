//! Project automation, run as `cargo xtask <task>` (see matklad/cargo-xtask).
//!
//! - `test`: what CI runs: formatting, clippy, and the whole test suite.
//! - `bench [plan|engine|rebuild|context|all]`: the benchmarks and their goals (default all):
//!   planning a 1,000-target manifest; a cached rebuild against `docker build` on the same
//!   engine; a 20,000-file context rebuilt after one change (see `bench.rs`).

mod bench;
mod env;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench::run(&root(), &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  test    run formatting and lint checks and every test (what CI runs)\n  bench   run the benchmarks and check their goals: bench [plan|engine|rebuild|context|all]"
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
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    run(&cargo, &args)
}
