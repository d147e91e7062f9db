//! `incremental`: per-target up to date. In a temporary directory, a manifest of [`TARGETS`]
//! independent targets on the base image, each with a step of its own, a file of its own copied
//! in and a smoke test reading it.
//! All are built once; then, [`RUNS`] times and taking turns, one target's file is edited and
//! (a) `kiln build` of all of them, (b) `kiln build` of that one target alone is timed (the
//! release binary, the whole command). (a) must solve that target only and say the others are
//! up to date. Goal: median (a) within [`GOAL_RATIO`] of median (b).
//!
//! `fresh-runner`: [`TARGETS`] targets on a base pushed to the local registry (127.0.0.1:5000,
//! as `cargo xtask test` runs it), pinned, built and pushed with `kiln build --push`; then
//! every image (and the base's tag) is removed from the engine, as on a fresh CI runner, and
//! `kiln build --push` is timed [`RUNS`] times. It must solve nothing and say every target is
//! up to date in its registry. Goal: median under [`GOAL_FRESH`].

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::engine::{Scratch, engine_ready, ms, output, run_image, succeeded};
use super::stats;
use crate::env::BASE_IMAGE;

const TARGETS: usize = 8;
const RUNS: usize = 5;
/// The target whose file is edited.
const EDITED: usize = 3;
const GOAL_RATIO: f64 = 1.3;
const GOAL_FRESH: Duration = Duration::from_secs(1);
const REGISTRY: &str = "127.0.0.1:5000";

fn manifest(images: &[String]) -> String {
    let mut s = "version = 1\n[defaults]\nnetwork = \"none\"\n".to_string();
    for (i, image) in images.iter().enumerate() {
        s.push_str(&format!(
            "\n[target.t{i}]\nfrom = \"{BASE_IMAGE}\"\nimage = \"{image}\"\n\
             run = [\"echo {image} > /id && sleep 0.2\"]\n\
             copy = [{{ src = \"t{i}.txt\", dest = \"/t{i}.txt\" }}]\n\
             [target.t{i}.smoke-test]\nrun = [\"sha256sum /t{i}.txt && sleep 0.2\"]\n"
        ));
    }
    s
}

pub fn incremental(root: &Path) -> Result<Vec<String>, String> {
    engine_ready()?;
    let kiln = super::release_kiln(root)?;
    let mut scratch = Scratch::new("incremental")?;
    let images: Vec<String> = (0..TARGETS)
        .map(|i| scratch.image(&format!("incremental-t{i}")))
        .collect();
    scratch.write("kiln.toml", manifest(&images).as_bytes())?;
    for i in 0..TARGETS {
        scratch.write(&format!("t{i}.txt"), format!("t{i}\n").as_bytes())?;
    }
    let dir = scratch.dir.clone();
    let build = |args: &[&str]| -> Result<(Duration, String), String> {
        let t = Instant::now();
        let out = output(
            Command::new(&kiln)
                .arg("build")
                .args(args)
                .args(["--progress", "plain"])
                .current_dir(&dir),
            "kiln build",
        )?;
        let elapsed = t.elapsed();
        succeeded(&out, "kiln build")?;
        Ok((
            elapsed,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    eprintln!("bench incremental: {TARGETS} targets built once, then {RUNS} edits of t{EDITED}");
    build(&[])?;
    let edited = format!("t{EDITED}");
    let mut all = Vec::new();
    let mut one = Vec::new();
    for run in 0..RUNS {
        for (times, args) in [(&mut all, vec![]), (&mut one, vec![edited.as_str()])] {
            let text = format!("t{EDITED} edit {run} {}\n", times.len() + args.len() * 100);
            scratch.write(&format!("{edited}.txt"), text.as_bytes())?;
            let (t, log) = build(&args)?;
            if args.is_empty() {
                let fresh = log.matches("up to date").count();
                let solved: Vec<usize> = (0..TARGETS)
                    .filter(|i| log.contains(&format!("==> t{i}/")))
                    .collect();
                if fresh != TARGETS - 1 || solved != [EDITED] {
                    return Err(format!(
                        "kiln build after editing {edited} solved {solved:?} and said {fresh} up to date:\n{log}"
                    ));
                }
            }
            let said = run_image(&images[EDITED], &["cat", &format!("/{edited}.txt")])?;
            if said != text {
                return Err(format!("{} holds {said:?}, not {text:?}", images[EDITED]));
            }
            times.push(t);
        }
    }
    let (all, one) = (stats(all), stats(one));
    let ratio = all.median.as_secs_f64() / one.median.as_secs_f64();
    println!(
        "incremental benchmark: {TARGETS} independent targets (a RUN, a COPY, a smoke test), t{EDITED}'s file\n\
         edited before each build; {RUNS} runs each, taking turns; wall time of the whole command\n"
    );
    println!(
        "| build                                  | min      | median   | max      | goal     |"
    );
    println!(
        "|----------------------------------------|----------|----------|----------|----------|"
    );
    for (label, s) in [
        (format!("`kiln build` ({TARGETS} targets, 1 edited)"), &all),
        (
            format!("`kiln build t{EDITED}` (the edited one alone)"),
            &one,
        ),
    ] {
        println!(
            "| {label:<38} | {:>8} | {:>8} | {:>8} |          |",
            ms(s.min),
            ms(s.median),
            ms(s.max)
        );
    }
    println!(
        "| {:<38} | {:>8} | {:>8} | {:>8} | <= {GOAL_RATIO:.2}x |",
        "median ratio all / one",
        "",
        format!("{ratio:.2}x"),
        ""
    );
    let mut missed = Vec::new();
    if ratio > GOAL_RATIO {
        missed.push(format!(
            "building {TARGETS} targets with one edited took {ratio:.2}x building that one alone (goal <= {GOAL_RATIO}x)"
        ));
    }
    Ok(missed)
}

pub fn fresh_runner(root: &Path) -> Result<Vec<String>, String> {
    engine_ready()?;
    let kiln = super::release_kiln(root)?;
    let mut scratch = Scratch::new("fresh-runner")?;
    // Names in the registry, unique to this run; their local tags go when the bench ends.
    let mut remote = |name: &str| {
        let tag = format!("{REGISTRY}/kiln-bench/{name}:{}", std::process::id());
        scratch.images.push(tag.clone());
        tag
    };
    let base = remote("fresh-base");
    let images: Vec<String> = (0..TARGETS)
        .map(|i| remote(&format!("fresh-t{i}")))
        .collect();
    let docker = |args: &[&str]| -> Result<(), String> {
        let out = output(Command::new("docker").args(args), "docker")?;
        succeeded(&out, &format!("docker {}", args.join(" ")))
    };
    docker(&["tag", BASE_IMAGE, &base])?;
    docker(&["push", &base]).map_err(|e| {
        format!("{e}\nthe fresh-runner benchmark needs the registry on {REGISTRY}: `cargo xtask test` starts it")
    })?;
    let mut manifest = "version = 1\n[defaults]\nnetwork = \"none\"\n".to_string();
    for (i, image) in images.iter().enumerate() {
        manifest.push_str(&format!(
            "\n[target.t{i}]\nfrom = \"{base}\"\nimage = \"{image}\"\nrun = [\"echo {image} > /id\"]\n"
        ));
    }
    scratch.write("kiln.toml", manifest.as_bytes())?;
    let dir = scratch.dir.clone();
    let kiln_run = |args: &[&str]| -> Result<(Duration, String, String), String> {
        let t = Instant::now();
        let out = output(
            Command::new(&kiln)
                .args(args)
                .args(["--progress", "plain"])
                .current_dir(&dir),
            "kiln",
        )?;
        let elapsed = t.elapsed();
        succeeded(&out, &format!("kiln {}", args.join(" ")))?;
        Ok((
            elapsed,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    eprintln!(
        "bench fresh-runner: {TARGETS} targets pushed, then {RUNS} builds on an engine without them"
    );
    kiln_run(&["pin"])?;
    kiln_run(&["build", "--push"])?;
    for image in images.iter().chain([&base]) {
        docker(&["image", "rm", image])?;
    }
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let (t, stdout, stderr) = kiln_run(&["build", "--push"])?;
        let fresh = stdout.matches("up to date in its registry").count();
        if fresh != TARGETS || stderr.contains("==>") {
            return Err(format!(
                "kiln build --push on an empty engine said {fresh} of {TARGETS} up to date:\n{stdout}{stderr}"
            ));
        }
        times.push(t);
    }
    if let Some(pulled) = images
        .iter()
        .find(|image| super::engine::image_id(image).is_ok())
    {
        return Err(format!("{pulled} was pulled into the engine"));
    }
    let s = stats(times);
    println!(
        "fresh-runner benchmark: {TARGETS} targets pushed to {REGISTRY}, their images removed from the\n\
         engine; `kiln build --push` checks each pushed digest with the registry instead of solving\n"
    );
    println!(
        "| build                                  | min      | median   | max      | goal     |"
    );
    println!(
        "|----------------------------------------|----------|----------|----------|----------|"
    );
    println!(
        "| {:<38} | {:>8} | {:>8} | {:>8} | < {:<6} |",
        format!("`kiln build --push` ({TARGETS}, empty engine)"),
        ms(s.min),
        ms(s.median),
        ms(s.max),
        format!("{} s", GOAL_FRESH.as_secs())
    );
    println!(
        "| {:<38} | {:>8} | {:>8} | {:>8} | < 1.00x  |",
        "median / goal",
        "",
        format!("{:.2}x", s.median.as_secs_f64() / GOAL_FRESH.as_secs_f64()),
        ""
    );
    let mut missed = Vec::new();
    if s.median >= GOAL_FRESH {
        missed.push(format!(
            "{TARGETS} pushed targets on an empty engine took {} (goal < {})",
            ms(s.median),
            ms(GOAL_FRESH)
        ));
    }
    Ok(missed)
}
