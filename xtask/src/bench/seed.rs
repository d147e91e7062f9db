//! The `seed` benchmark: kiln against the workflow it replaces, the seed's multi-stage
//! Dockerfile + Makefile (`benches/seed/`, written for `examples/uv-app`), on the same engine
//! (Docker Engine 20.10, as `cargo xtask test` leaves it, with the base image it imports).
//!
//! In a temporary directory (the repository is never touched), two copies of
//! `examples/uv-app` (`pyproject.toml`, `uv.lock`, `src/`, `tests/`):
//! - `make/`, with `benches/seed/Dockerfile` and `Makefile`. The Makefile copies the host's CA
//!   bundle into the context (RUN steps reach PyPI through an intercepting proxy) and runs
//!   `docker build` as it works here: the classic builder, `DOCKER_BUILDKIT=0 docker build
//!   --network host` (see [`super::engine`]). Its image is `kiln-bench-seed-PID:bench`.
//! - `kiln/`, a git repository (one commit: `kiln refresh` refuses a lock file with uncommitted
//!   edits) with a `kiln.toml` made from `manifests/examples.toml`: its `[defaults]` and the
//!   `uv-app` target as they are, but `from` the base image that the `debian` profile maps it
//!   to, `context = "."` and a unique image name. Run with the release kiln, `-f kiln.toml`.
//!
//! Three measurements, each side warmed up once, then [`RUNS`] runs taking turns
//! ([`REFRESH_RUNS`] for the refresh), wall time of the whole command, medians compared:
//! - a. no-op rebuild of the image and its smoke test, nothing changed: `make build smoke-test`
//!   (two classic `docker build`s, `--target target-image` and `--target smoke-test`; the
//!   classic builder walks every stage before the target, all from its cache) against `kiln
//!   build`, which must say `up to date` and solve nothing. Goal: kiln at most 1/10 of make.
//! - b. the same forced to solve: `kiln build --force` (smoke test and image solved from the
//!   cache, the image loaded into the engine) against ONE cached `docker build --target
//!   target-image` (the command `make build` runs), and against the same build through the
//!   engine's BuildKit (`POST /build?version=2&target=target-image`, which skips the unused
//!   stages and the smoke test). Goal: kiln no slower than either.
//! - c. refresh: `make python-pkg-refresh` (the refresh stage and the smoke test on it, in one
//!   classic build with `PYTHON_PKG_VERSIONS=refresh`, then `docker create`, `docker cp` of
//!   `/app/uv.lock`, `docker rm`, `docker rmi`) against `kiln refresh` (the `packages-refresh`
//!   stage and the smoke test in one BuildKit job, the lock read out of the result and written
//!   into the tree when it changed; a changed lock is committed between runs, untimed). Both
//!   really resolve against PyPI every time: kiln marks the refresh step no-cache; the Makefile
//!   passes `--build-arg REFRESH_STAMP=$(date +%s%N)`, declared by an `ARG` in the refresh
//!   stage, so the classic builder's cache key of the `uv lock --upgrade` RUN step changes on
//!   every run (the stages before it stay cached, as kiln's do). Goal: kiln no slower.
//!
//! The work is the same on both sides (uv installed into a venv with pip, `uv sync --locked
//! --no-dev`, `uv lock --upgrade && uv sync --frozen --no-dev`, the same copies and smoke test,
//! the same image config), except what the classic builder cannot do: kiln mounts the CA
//! bundle as a secret and keeps uv's download cache in a cache mount; the seed's bundle is a
//! context file in a layer and its refresh downloads the two wheels again.
//!
//! Checked: every timed run succeeded and was what it claims (cached, or really resolving);
//! the images exist, the engine's ids match what kiln reported, and the seed's, kiln's and
//! BuildKit's images print the same table; both refreshes produced a lock file naming attrs
//! and tabulate (the seed's copied out by `docker cp` during the timed runs). Everything made is
//! removed at the end (the tags, the seed's intermediate images of the refresh stage, the
//! temporary directory).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use super::engine::{
    Scratch, api_build, api_ok, classic_build, classic_ok, copy_tree, docker_socket, engine_ready,
    image_id, ms, output, run_image, secs, succeeded,
};
use super::{Stats, stats};
use crate::env::BASE_IMAGE;

/// Timed runs per command of a and b, after one warm-up (they take well under a second; the
/// engine's BuildKit is shared with whatever else runs on the machine, so many samples).
const RUNS: usize = 9;
/// Timed runs per command of c (each resolves against PyPI).
const REFRESH_RUNS: usize = 5;
/// Goal a: kiln's no-op at most this share of the seed's.
const GOAL_NOOP_SHARE: f64 = 0.10;
/// The files of `examples/uv-app` both sides build from.
const APP_FILES: &[&str] = &["pyproject.toml", "uv.lock", "src", "tests"];
/// Rows of the table: a (2), b (3), c (2).
const ROWS: usize = 7;

/// One timed command.
struct Timed {
    name: &'static str,
    command: Command,
    /// Whether a timed run did what it claims (from its output), else why not.
    check: fn(&Output) -> Result<(), String>,
    times: Vec<Duration>,
    /// The warm-up's output and the last run's.
    first: Option<Output>,
    last: Option<Output>,
}

impl Timed {
    fn new(name: &'static str, command: Command, check: fn(&Output) -> Result<(), String>) -> Self {
        Timed {
            name,
            command,
            check,
            times: Vec::new(),
            first: None,
            last: None,
        }
    }

    fn run(&mut self) -> Result<Duration, String> {
        let t = Instant::now();
        let out = output(&mut self.command, self.name)?;
        let elapsed = t.elapsed();
        succeeded(&out, self.name)?;
        // The warm-up may do more (build what is not cached yet); the timed runs must not.
        let checked = if self.first.is_none() {
            Ok(())
        } else {
            (self.check)(&out)
        };
        checked.map_err(|why| {
            let text = both(&out);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("{}: {why}:\n{tail}", self.name)
        })?;
        if self.first.is_none() {
            self.first = Some(out.clone());
        }
        self.last = Some(out);
        Ok(elapsed)
    }

    fn stats(&self) -> Stats {
        stats(self.times.clone())
    }

    fn output(&self) -> &Output {
        self.last.as_ref().expect("ran at least once")
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Warm each command up once, then time `runs` runs, taking turns; `between` runs (untimed)
/// after every run of every command, with its index.
fn measure(
    what: &str,
    runs: usize,
    commands: &mut [&mut Timed],
    between: &mut dyn FnMut(usize) -> Result<(), String>,
) -> Result<(), String> {
    eprintln!("bench seed: {what}: one warm-up, then {runs} runs each");
    for (i, c) in commands.iter_mut().enumerate() {
        let t = c.run()?;
        eprintln!("  warm-up {}: {}", c.name, secs(t));
        between(i)?;
    }
    for _ in 0..runs {
        for (i, c) in commands.iter_mut().enumerate() {
            let t = c.run()?;
            c.times.push(t);
            between(i)?;
        }
    }
    Ok(())
}

/// The classic builder ran no step: every one came from its cache.
fn classic_cached(out: &Output) -> Result<(), String> {
    if !classic_ok(out) {
        return Err("no image tagged".to_string());
    }
    if both(out).contains("Running in") {
        return Err("a step ran instead of coming from the cache".to_string());
    }
    Ok(())
}

/// A container a Makefile run may leave behind when it fails half-way; removed when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// The copy of `examples/uv-app` a side builds from.
fn copy_app(root: &Path, to: &Path) -> Result<(), String> {
    let app = root.join("examples/uv-app");
    std::fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    for file in APP_FILES {
        let (src, dest) = (app.join(file), to.join(file));
        if src.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest)
                .map_err(|e| format!("copy {} to {}: {e}", src.display(), dest.display()))?;
        }
    }
    Ok(())
}

/// `manifests/examples.toml`'s `[defaults]` and `uv-app` target (comment lines left out), with
/// `from` the base image the `debian` profile maps it to, the context `.` and `image`.
fn kiln_manifest(root: &Path, image: &str) -> Result<String, String> {
    let path = root.join("manifests/examples.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut out = String::from(
        "# Made by `cargo xtask bench seed` from manifests/examples.toml: the uv-app target as\n\
         # `--profile debian` builds it.\nversion = 1\n",
    );
    let mut section = String::new();
    let mut replaced = 0;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
        }
        let keep = section == "[defaults]"
            || section == "[target.uv-app]"
            || section.starts_with("[target.uv-app.");
        if !keep || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('[') {
            out.push('\n');
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        if section == "[target.uv-app]" && ["from", "context", "image"].contains(&key) {
            let value = match key {
                "from" => BASE_IMAGE,
                "context" => ".",
                _ => image,
            };
            out.push_str(&format!("{key} = \"{value}\"\n"));
            replaced += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if replaced != 3 || out.contains("${") || !out.contains("[target.uv-app.packages]") {
        return Err(format!(
            "cannot make the uv-app manifest from {}: got\n{out}",
            path.display()
        ));
    }
    Ok(out)
}

/// `git` in `dir`, with an identity of its own.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = output(
        Command::new("git")
            .args([
                "-c",
                "user.name=kiln bench",
                "-c",
                "user.email=bench@kiln.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir),
        "git",
    )?;
    succeeded(&out, &format!("git {}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn modified(path: &Path) -> Result<SystemTime, String> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("stat {}: {e}", path.display()))
}

/// The lock file names both dependencies.
fn check_lock(path: &Path, who: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    for package in ["attrs", "tabulate"] {
        if !text.contains(&format!("name = \"{package}\"")) {
            return Err(format!("{who}'s uv.lock has no {package}:\n{text}"));
        }
    }
    Ok(text)
}

/// Both sides: the seed's image names, the images kiln and BuildKit's API make, the two trees
/// and how to run `make` and `kiln` in them.
struct Sides {
    /// The seed's `TARGET_IMAGE_NAME`, also part of a container name (no `/`).
    name: String,
    seed_image: String,
    smoke_image: String,
    refresh_image: String,
    kiln_image: String,
    api_image: String,
    make_dir: PathBuf,
    kiln_dir: PathBuf,
    /// `kiln.toml` in `kiln_dir`.
    manifest: PathBuf,
    kiln: PathBuf,
    socket: String,
}

impl Sides {
    /// The names, every image registered with `scratch` to be removed at the end.
    fn new(scratch: &mut Scratch, kiln: PathBuf, socket: String) -> Sides {
        let name = format!("kiln-bench-seed-{}", std::process::id());
        let seed_image = format!("{name}:bench");
        let smoke_image = format!("{name}:smoke-test");
        let refresh_image = format!("{name}:python-pkg-refresh");
        scratch.images.extend([
            seed_image.clone(),
            smoke_image.clone(),
            refresh_image.clone(),
        ]);
        let kiln_dir = scratch.dir.join("kiln");
        Sides {
            name,
            seed_image,
            smoke_image,
            refresh_image,
            kiln_image: scratch.image("seed-kiln"),
            api_image: scratch.image("seed-buildkit-api"),
            make_dir: scratch.dir.join("make"),
            manifest: kiln_dir.join("kiln.toml"),
            kiln_dir,
            kiln,
            socket,
        }
    }

    /// The two trees: `make/` with the seed's Dockerfile and Makefile, `kiln/` a git
    /// repository with its manifest, committed.
    fn prepare(&self, root: &Path) -> Result<(), String> {
        copy_app(root, &self.make_dir)?;
        for file in ["Dockerfile", "Makefile"] {
            let src = root.join("benches/seed").join(file);
            std::fs::copy(&src, self.make_dir.join(file))
                .map_err(|e| format!("copy {}: {e}", src.display()))?;
        }
        copy_app(root, &self.kiln_dir)?;
        std::fs::write(&self.manifest, kiln_manifest(root, &self.kiln_image)?)
            .map_err(|e| format!("write {}: {e}", self.manifest.display()))?;
        git(&self.kiln_dir, &["init", "--quiet"])?;
        git(&self.kiln_dir, &["add", "."])?;
        git(&self.kiln_dir, &["commit", "--quiet", "-m", "uv-app"])?;
        Ok(())
    }

    /// `make TARGETS` in the seed's tree, with its image name and tag.
    fn make(&self, targets: &[&str]) -> Command {
        let mut c = Command::new("make");
        c.args(targets)
            .arg(format!("TARGET_IMAGE_NAME={}", self.name))
            .arg("BUILD_TAG=bench")
            .current_dir(&self.make_dir);
        c
    }

    /// The release kiln on the manifest, with plain progress.
    fn kiln(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kiln);
        c.arg("-f")
            .arg(&self.manifest)
            .args(args)
            .args(["--progress", "plain"])
            .current_dir(&self.kiln_dir);
        c
    }
}

/// a. No-op rebuild of the image and its smoke test: `make build smoke-test` and `kiln build`.
/// The seed's intermediate images of the refresh stage are registered with `scratch`.
fn noop_rebuild(sides: &Sides, scratch: &mut Scratch) -> Result<(Timed, Timed), String> {
    let mut make_noop = Timed::new(
        "make build smoke-test",
        sides.make(&["build", "smoke-test"]),
        |out| {
            let text = String::from_utf8_lossy(&out.stdout);
            if text.matches("Successfully tagged").count() != 2 {
                return Err("not two images tagged".to_string());
            }
            Ok(())
        },
    );
    let mut kiln_noop = Timed::new("kiln build", sides.kiln(&["build"]), |out| {
        let said = String::from_utf8_lossy(&out.stdout);
        let log = String::from_utf8_lossy(&out.stderr);
        if log.contains("==> uv-app/") {
            return Err("it solved".to_string());
        }
        if !said.contains(") up to date") {
            return Err("not up to date".to_string());
        }
        Ok(())
    });
    measure(
        "a. no-op rebuild",
        RUNS,
        &mut [&mut make_noop, &mut kiln_noop],
        &mut |_| Ok(()),
    )?;
    // The timed seed runs came from the cache (the warm-up built everything).
    classic_cached(make_noop.output()).map_err(|why| {
        format!(
            "make build smoke-test: {why}:\n{}",
            both(make_noop.output())
        )
    })?;
    // `make build` walks the refresh stage too (the classic builder builds every stage before
    // the target); the intermediate images it made there belong to no tag. When the warm-up
    // made them, the last one is removed at the end, also on errors (which removes the others
    // with it).
    let refresh_leaf = {
        let log = both(make_noop.first.as_ref().expect("warmed up"));
        let start = log.find("AS python-pkg-refresh").unwrap_or(0);
        let end = log.find("AS python-pkg-pinned").unwrap_or(start);
        let stage = &log[start..end];
        stage
            .lines()
            .filter_map(|l| l.trim().strip_prefix("---> "))
            .rfind(|id| id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
            .filter(|_| stage.contains("Running in"))
            .map(str::to_string)
    };
    scratch.images.extend(refresh_leaf);
    Ok((make_noop, kiln_noop))
}

/// b. One forced, cached solve: `kiln build --force`, the classic `docker build --target
/// target-image` and the same through the engine's BuildKit API.
fn forced_build(sides: &Sides) -> Result<(Timed, Timed, Timed), String> {
    let mut kiln_force = Timed::new(
        "kiln build --force",
        sides.kiln(&["build", "--force"]),
        |out| {
            let log = String::from_utf8_lossy(&out.stderr);
            if String::from_utf8_lossy(&out.stdout).contains("up to date") {
                return Err("it did not solve".to_string());
            }
            if log.contains("DONE [uv-app/") {
                return Err("a step ran instead of coming from the cache".to_string());
            }
            Ok(())
        },
    );
    let mut classic = Timed::new(
        "DOCKER_BUILDKIT=0 docker build",
        classic_build(
            &sides.make_dir,
            &sides.seed_image,
            &["--target", "target-image"],
        ),
        classic_cached,
    );
    let mut api = Timed::new(
        "POST /build?version=2",
        api_build(
            &sides.make_dir,
            &sides.socket,
            &sides.api_image,
            "&target=target-image",
        ),
        |out| {
            if api_ok(out) {
                Ok(())
            } else {
                Err("no image".to_string())
            }
        },
    );
    measure(
        "b. forced cached build",
        RUNS,
        &mut [&mut kiln_force, &mut classic, &mut api],
        &mut |_| Ok(()),
    )?;
    Ok((kiln_force, classic, api))
}

/// c. Refresh against PyPI: `make python-pkg-refresh` and `kiln refresh`, kiln's changed lock
/// committed between runs; also how many times it changed.
fn refresh(sides: &Sides) -> Result<(Timed, Timed, usize), String> {
    let seed_lock = sides.make_dir.join("uv.lock");
    let before = modified(&seed_lock)?;
    let mut make_refresh = Timed::new(
        "make python-pkg-refresh",
        sides.make(&["python-pkg-refresh"]),
        |out| {
            let text = both(out);
            // The RUN step ran (uv printed its resolution), the lock was copied out.
            if !text.contains("Resolved ") || !text.contains("Running in") {
                return Err("the refresh step did not run".to_string());
            }
            if !text.contains("docker cp ") || !classic_ok(out) {
                return Err("no image, or no lock copied out".to_string());
            }
            Ok(())
        },
    );
    let mut kiln_refresh = Timed::new("kiln refresh", sides.kiln(&["refresh"]), |out| {
        let log = String::from_utf8_lossy(&out.stderr);
        if !log.contains("RUN [uv-app/packages-refresh] uv lock --upgrade")
            || !log.contains("Resolved ")
        {
            return Err("the refresh step did not run".to_string());
        }
        if !String::from_utf8_lossy(&out.stdout).contains("uv.lock") {
            return Err("it said nothing about uv.lock".to_string());
        }
        Ok(())
    });
    let kiln_dir = &sides.kiln_dir;
    let mut lock_commits = 0;
    measure(
        "c. refresh",
        REFRESH_RUNS,
        &mut [&mut make_refresh, &mut kiln_refresh],
        &mut |i| {
            // kiln refuses a lock with uncommitted edits: commit what the last refresh wrote.
            if i == 1 && !git(kiln_dir, &["status", "--porcelain", "uv.lock"])?.is_empty() {
                git(kiln_dir, &["commit", "--quiet", "-m", "refresh", "uv.lock"])?;
                lock_commits += 1;
            }
            Ok(())
        },
    )?;
    if modified(&seed_lock)? == before {
        return Err("make python-pkg-refresh never wrote uv.lock".to_string());
    }
    Ok((make_refresh, kiln_refresh, lock_commits))
}

/// What the outputs were checked to be: the engine's ids of the seed's, its smoke test's,
/// kiln's and BuildKit's images, and whether both locks are the same.
struct Checked {
    ids: Vec<String>,
    locks_identical: bool,
}

/// The outputs are real: both locks name both packages, the images exist (the refresh's
/// does not), kiln reported the engine's id, and the images print the same table.
fn check_outputs(sides: &Sides, kiln_force: &Timed) -> Result<Checked, String> {
    let seed_lock_text = check_lock(&sides.make_dir.join("uv.lock"), "the seed")?;
    let kiln_lock_text = check_lock(&sides.kiln_dir.join("uv.lock"), "kiln")?;
    let mut ids = Vec::new();
    for image in [
        &sides.seed_image,
        &sides.smoke_image,
        &sides.kiln_image,
        &sides.api_image,
    ] {
        ids.push(image_id(image)?);
    }
    if image_id(&sides.refresh_image).is_ok() {
        return Err(format!(
            "make python-pkg-refresh left {} behind",
            sides.refresh_image
        ));
    }
    let kiln_said = String::from_utf8_lossy(&kiln_force.output().stdout).into_owned();
    if !kiln_said.contains(&format!("({})", ids[2])) {
        return Err(format!(
            "kiln reported another image id than the engine's {}: {kiln_said}",
            ids[2]
        ));
    }
    let tables: Vec<String> = [&sides.seed_image, &sides.kiln_image, &sides.api_image]
        .iter()
        .map(|image| run_image(image, &[]))
        .collect::<Result<_, _>>()?;
    if tables.iter().any(|t| *t != tables[0]) || !tables[0].contains("| kiln ") {
        return Err(format!("the images print different things: {tables:?}"));
    }
    Ok(Checked {
        ids,
        locks_identical: seed_lock_text == kiln_lock_text,
    })
}

/// The median of row `i`, in seconds.
fn median(s: &[Stats], i: usize) -> f64 {
    s[i].median.as_secs_f64()
}

/// The table of the [`ROWS`] rows (their stats `s`), the ratios against the goals, the images
/// and the locks.
fn report(rows: &[&str; ROWS], s: &[Stats], sides: &Sides, checked: &Checked, lock_commits: usize) {
    // The machine is shared: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "seed benchmark: examples/uv-app built by the seed's Dockerfile + Makefile (benches/seed/,\n\
         classic builder) and by kiln (the uv-app target of manifests/examples.toml on {BASE_IMAGE}),\n\
         on the same engine; one warm-up, then {RUNS} runs each (a, b) or {REFRESH_RUNS} (c), taking\n\
         turns; wall time of the whole command; a: nothing changed, b: forced solve, all cached,\n\
         c: re-resolve against PyPI; load average at the end {}\n",
        load.join(" ")
    );
    println!(
        "| command                                            | min       | median    | max       | goal      |"
    );
    println!(
        "|----------------------------------------------------|-----------|-----------|-----------|-----------|"
    );
    let goals = ["", "<= 1/10 a", "", "", "<= both b", "", "<= c make"];
    for ((label, st), goal) in rows.iter().zip(s).zip(goals) {
        println!(
            "| {label:<50} | {:>9} | {:>9} | {:>9} | {goal:<9} |",
            ms(st.min),
            ms(st.median),
            ms(st.max)
        );
    }
    for (label, ratio, goal) in [
        (
            "a  median ratio kiln / make",
            median(s, 1) / median(s, 0),
            "<= 0.10x",
        ),
        (
            "b  median ratio kiln / docker build (classic)",
            median(s, 4) / median(s, 2),
            "<= 1.00x",
        ),
        (
            "b  median ratio kiln / BuildKit via the API",
            median(s, 4) / median(s, 3),
            "<= 1.00x",
        ),
        (
            "c  median ratio kiln / make",
            median(s, 6) / median(s, 5),
            "<= 1.00x",
        ),
    ] {
        println!(
            "| {label:<50} | {:>9} | {:>9} | {:>9} | {goal:<9} |",
            "",
            format!("{ratio:.3}x"),
            ""
        );
    }
    let ids = &checked.ids;
    println!(
        "\nimages: seed {} {}, smoke test {} {}, kiln {} {},\n\
         BuildKit {} {}; all print the same table",
        sides.seed_image,
        ids[0],
        sides.smoke_image,
        ids[1],
        sides.kiln_image,
        ids[2],
        sides.api_image,
        ids[3]
    );
    println!(
        "locks: both name attrs and tabulate; seed's and kiln's are {}; kiln's changed {lock_commits} time(s)",
        if checked.locks_identical {
            "identical"
        } else {
            "different"
        }
    );
}

/// The goals the rows' stats `s` miss.
fn missed_goals(s: &[Stats]) -> Vec<String> {
    let mut missed = Vec::new();
    if median(s, 1) > median(s, 0) * GOAL_NOOP_SHARE {
        missed.push(format!(
            "a: kiln's no-op ({}) above 1/10 of make's ({})",
            ms(s[1].median),
            ms(s[0].median)
        ));
    }
    for (i, what) in [(2, "docker build (classic)"), (3, "BuildKit via the API")] {
        if median(s, 4) > median(s, i) {
            missed.push(format!(
                "b: kiln build --force ({}) slower than {what} ({})",
                ms(s[4].median),
                ms(s[i].median)
            ));
        }
    }
    if median(s, 6) > median(s, 5) {
        missed.push(format!(
            "c: kiln refresh ({}) slower than make python-pkg-refresh ({})",
            ms(s[6].median),
            ms(s[5].median)
        ));
    }
    missed
}

/// The seed benchmark; returns the goals it missed.
pub fn seed(root: &Path) -> Result<Vec<String>, String> {
    engine_ready()?;
    let kiln = super::release_kiln(root)?;
    let socket = docker_socket()?;
    let mut scratch = Scratch::new("seed")?;
    let sides = Sides::new(&mut scratch, kiln, socket);
    let _container = Container(format!("{}-python-pkg-refresh", sides.name));
    sides.prepare(root)?;

    let (make_noop, kiln_noop) = noop_rebuild(&sides, &mut scratch)?;
    let (kiln_force, classic, api) = forced_build(&sides)?;
    let (make_refresh, kiln_refresh, lock_commits) = refresh(&sides)?;
    let checked = check_outputs(&sides, &kiln_force)?;

    let rows: [(&str, &Timed); ROWS] = [
        ("a  `make build smoke-test` (2 classic builds)", &make_noop),
        ("a  `kiln build` (up to date)", &kiln_noop),
        (
            "b  `docker build --target target-image` (classic)",
            &classic,
        ),
        ("b  BuildKit `POST /build?version=2&target=…`", &api),
        ("b  `kiln build --force`", &kiln_force),
        ("c  `make python-pkg-refresh` (+ docker cp)", &make_refresh),
        ("c  `kiln refresh`", &kiln_refresh),
    ];
    let s: Vec<Stats> = rows.iter().map(|(_, t)| t.stats()).collect();
    report(
        &rows.map(|(label, _)| label),
        &s,
        &sides,
        &checked,
        lock_commits,
    );
    Ok(missed_goals(&s))
}
