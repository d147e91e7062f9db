//! The benchmarks against the real engine: Docker Engine 20.10 with its embedded BuildKit, as
//! `cargo xtask test` leaves it (`kiln engine up`, the base image imported). Everything they
//! make (a temporary directory, uniquely tagged images) is removed when they end. The helpers
//! here (the scratch directory, `docker build` with the classic builder and through the Engine
//! API, their success checks) also serve the `seed` benchmark ([`super::seed`]).
//!
//! `rebuild`: in a temporary directory, a manifest of two targets on the base image — `lib`
//! (two RUN steps) and `app` (`from = "target:lib"`, a file copied from the context, a workdir
//! and an env) — and the equivalent multi-stage Dockerfile. Each builder builds once to warm its
//! cache, then rebuilds [`REBUILDS`] times (the builders take turns, so a busy moment of the
//! machine hits all of them), timing the whole command:
//! - `kiln build`, the release binary, as a subprocess;
//! - `docker build` with the classic builder (`DOCKER_BUILDKIT=0`): the `docker` CLI here is
//!   28.x, which refuses `DOCKER_BUILDKIT=1` without the buildx plugin ("BuildKit is enabled but
//!   the buildx component is missing or broken"), and buildx is not installed, so the classic
//!   builder is the `docker build` that works against this daemon;
//! - the same daemon's BuildKit behind the Engine API's build endpoint (`POST /build?version=2`,
//!   as the Docker 20.10 CLI drove it with `DOCKER_BUILDKIT=1`, but with the context sent as a tar
//!   body instead of through a session), with `tar -c . | curl`.
//!
//! All three must produce the image (checked by id, and by running it: the three images must
//! print the same thing). Goal: kiln's median no slower than either docker baseline's.
//!
//! `context`: 20,000 files (200 directories of 100, 2–5 KB each, about 70 MB) and a manifest of
//! one target that copies the whole context to `/ctx`, with a smoke test whose RUN step checks
//! the number of files that arrived. Built in this process through `kiln_app::build`, which says
//! per target what the daemon pulled from the context; then one file changes and it is built
//! again. Goal: the rebuild pulls under 1% of the context's bytes (file data; the stat entries of
//! the walk travel too and are counted apart). The changed content must be in the image.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln_app::{BuildOptions, Built, Settings};

use super::{Stats, stats};
use crate::env::BASE_IMAGE;

/// Timed cached rebuilds per builder, after one warm-up build.
const REBUILDS: usize = 7;
const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;
/// The file the `context` benchmark changes between its two builds.
const CHANGED: &str = "d107/f042.txt";
/// Goal of the `context` benchmark: the rebuild pulls under this share of the context's bytes.
const GOAL_CONTEXT_SHARE: f64 = 0.01;

/// A temporary directory and the image tags made in it, removed when dropped (also on errors).
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    pub(super) images: Vec<String>,
}

impl Scratch {
    pub(super) fn new(name: &str) -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("kiln-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Scratch {
            dir,
            images: Vec::new(),
        })
    }

    /// A tag unique to this run, removed at the end.
    pub(super) fn image(&mut self, name: &str) -> String {
        let tag = format!("kiln-bench/{name}:{}", std::process::id());
        self.images.push(tag.clone());
        tag
    }

    pub(super) fn write(&self, path: &str, contents: &[u8]) -> Result<(), String> {
        let full = self.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::write(&full, contents).map_err(|e| format!("write {}: {e}", full.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for image in &self.images {
            let _ = Command::new("docker")
                .args(["image", "rm", "-f", image])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copy the directory tree `from` into `to` (regular files and directories; `__pycache__`
/// and `.venv` left out).
pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read {}: {e}", from.display()))?;
        let name = entry.file_name();
        if name == "__pycache__" || name == ".venv" {
            continue;
        }
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let (src, dest) = (entry.path(), to.join(&name));
        if kind.is_dir() {
            copy_tree(&src, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dest)
                .map_err(|e| format!("copy {} to {}: {e}", src.display(), dest.display()))?;
        }
    }
    Ok(())
}

pub(super) fn output(command: &mut Command, what: &str) -> Result<Output, String> {
    command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))
}

/// Error unless `out` succeeded, with the end of what it printed.
pub(super) fn succeeded(out: &Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    Err(format!("{what} failed ({}):\n{tail}", out.status))
}

/// Docker's id of `image`, or an error when the engine has no such image.
pub(super) fn image_id(image: &str) -> Result<String, String> {
    let out = output(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]),
        "docker image inspect",
    )?;
    succeeded(&out, &format!("docker image inspect {image}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What `cmd` prints in a container of `image`, without network.
pub(super) fn run_image(image: &str, cmd: &[&str]) -> Result<String, String> {
    let mut args = vec!["run", "--rm", "--network", "none", image];
    args.extend(cmd);
    let out = output(Command::new("docker").args(&args), "docker run")?;
    succeeded(&out, &format!("docker run {image}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The engine answers and has the base image the benchmarks build on.
pub(super) fn engine_ready() -> Result<(), String> {
    image_id(BASE_IMAGE).map(drop).map_err(|e| {
        format!(
            "{e}\nthe engine benchmarks need the engine and the base image {BASE_IMAGE}: `cargo xtask test` sets both up"
        )
    })
}

/// The Docker Engine's unix socket (`DOCKER_HOST` when it names one).
pub(super) fn docker_socket() -> Result<String, String> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host
            .strip_prefix("unix://")
            .map(str::to_string)
            .ok_or_else(|| format!("DOCKER_HOST={host}: the benchmark needs a unix socket")),
        _ => Ok("/var/run/docker.sock".to_string()),
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(super) fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MB", b as f64 / 1024.0 / 1024.0),
        b if b >= 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `n` with thousands separators.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rebuild_manifest(image: &str) -> String {
    format!(
        r#"version = 1

[defaults]
network = "host"

[target.lib]
from = "{BASE_IMAGE}"
run  = ["mkdir -p /opt/lib && echo lib-1 > /opt/lib/version",
        "python3 -c 'print(40 + 2)' > /opt/lib/answer"]

[target.app]
from  = "target:lib"
image = "{image}"
copy  = [{{ src = "app.py", dest = "/app/app.py" }}]

[target.app.config]
workdir = "/app"
env = {{ APP_MODE = "bench" }}
"#
    )
}

fn rebuild_dockerfile() -> String {
    format!(
        r#"FROM {BASE_IMAGE} AS lib
RUN mkdir -p /opt/lib && echo lib-1 > /opt/lib/version
RUN python3 -c 'print(40 + 2)' > /opt/lib/answer

FROM lib AS app
COPY app.py /app/app.py
WORKDIR /app
ENV APP_MODE=bench
"#
    )
}

/// `docker build` as it works on this machine, in `dir`, tagging `image`: the classic builder
/// (`DOCKER_BUILDKIT=0`; the 28.x CLI refuses BuildKit without buildx) with the host network
/// (the engine runs without a bridge); `extra` goes before the context (`--target`,
/// `--build-arg`). Check its output with [`classic_ok`].
pub(super) fn classic_build(dir: &Path, image: &str, extra: &[&str]) -> Command {
    let mut classic = Command::new("docker");
    classic
        .args(["build", "--network", "host", "-t", image])
        .args(extra)
        .args(["-f", "Dockerfile", "."])
        .env("DOCKER_BUILDKIT", "0")
        .current_dir(dir);
    classic
}

/// Whether a [`classic_build`] really tagged its image.
pub(super) fn classic_ok(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout).contains("Successfully tagged")
}

/// The same engine's BuildKit behind the Engine API's build endpoint (`POST
/// /v1.41/build?version=2`, as the Docker 20.10 CLI drove it with `DOCKER_BUILDKIT=1`, but with
/// `dir` sent as a tar body instead of through a session), tagging `image`; `query` adds
/// parameters (`&target=…`, URL-encoded). Check its output with [`api_ok`].
pub(super) fn api_build(dir: &Path, socket: &str, image: &str, query: &str) -> Command {
    let url = format!(
        "http://localhost/v1.41/build?version=2&networkmode=host&dockerfile=Dockerfile&t={}{query}",
        image.replace('/', "%2F").replace(':', "%3A")
    );
    let mut api = Command::new("bash");
    api.args([
        "-c",
        "set -o pipefail; tar -c . | curl -sS --fail --unix-socket \"$1\" -X POST \
         -H 'Content-Type: application/x-tar' --data-binary @- \"$2\"",
        "bash",
        socket,
        &url,
    ])
    .current_dir(dir);
    api
}

/// Whether an [`api_build`] produced its image: errors come in the JSON stream of a 200
/// response.
pub(super) fn api_ok(out: &Output) -> bool {
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("\"moby.image.id\"") && !text.contains("\"errorDetail\"")
}

/// One way of building the rebuild benchmark's image.
pub(super) struct Builder {
    pub(super) name: &'static str,
    pub(super) image: String,
    pub(super) command: Command,
    /// Whether the build really succeeded, from its output (some report failure in-band).
    pub(super) ok: fn(&Output) -> bool,
    pub(super) times: Vec<Duration>,
    pub(super) last: Option<Output>,
}

impl Builder {
    pub(super) fn build(&mut self) -> Result<Duration, String> {
        let t = Instant::now();
        let out = output(&mut self.command, self.name)?;
        let elapsed = t.elapsed();
        succeeded(&out, self.name)?;
        if !(self.ok)(&out) {
            return Err(format!(
                "{} failed:\n{}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.last = Some(out);
        Ok(elapsed)
    }
}

/// The cached-rebuild benchmark; returns the goals it missed.
pub fn rebuild(root: &Path) -> Result<Vec<String>, String> {
    engine_ready()?;
    let kiln = super::release_kiln(root)?;
    let socket = docker_socket()?;
    let mut scratch = Scratch::new("rebuild")?;
    let kiln_image = scratch.image("rebuild-kiln");
    let classic_image = scratch.image("rebuild-docker-classic");
    let api_image = scratch.image("rebuild-buildkit-api");
    scratch.write("kiln.toml", rebuild_manifest(&kiln_image).as_bytes())?;
    scratch.write("Dockerfile", rebuild_dockerfile().as_bytes())?;
    scratch.write("app.py", b"print('hello from the rebuild benchmark')\n")?;
    let dir = scratch.dir.clone();

    let mut kiln_build = Command::new(&kiln);
    kiln_build
        .args(["build", "--progress", "plain"])
        .current_dir(&dir);
    let classic = classic_build(&dir, &classic_image, &[]);
    let api = api_build(&dir, &socket, &api_image, "");
    let mut builders = [
        Builder {
            name: "kiln build",
            image: kiln_image.clone(),
            command: kiln_build,
            ok: |_| true,
            times: Vec::new(),
            last: None,
        },
        Builder {
            name: "DOCKER_BUILDKIT=0 docker build",
            image: classic_image,
            command: classic,
            ok: classic_ok,
            times: Vec::new(),
            last: None,
        },
        Builder {
            name: "tar | curl POST /build?version=2",
            image: api_image,
            command: api,
            ok: api_ok,
            times: Vec::new(),
            last: None,
        },
    ];

    eprintln!("bench rebuild: warming the caches, then {REBUILDS} cached rebuilds per builder");
    for builder in &mut builders {
        let warm = builder.build()?;
        eprintln!("  warm-up {}: {}", builder.name, secs(warm));
    }
    for _ in 0..REBUILDS {
        for builder in &mut builders {
            let t = builder.build()?;
            builder.times.push(t);
        }
    }

    // Every builder made its image, and the three images hold and say the same.
    let mut ids = Vec::new();
    let mut shown = Vec::new();
    for builder in &builders {
        let id = image_id(&builder.image)?;
        let said = run_image(
            &builder.image,
            &[
                "sh",
                "-c",
                "cat /opt/lib/version /opt/lib/answer /app/app.py; pwd; echo $APP_MODE",
            ],
        )?;
        shown.push(said);
        ids.push(id);
    }
    if shown.iter().any(|s| *s != shown[0]) {
        return Err(format!(
            "the images differ: {}",
            shown
                .iter()
                .zip(&builders)
                .map(|(s, b)| format!("\n{}:\n{s}", b.name))
                .collect::<String>()
        ));
    }
    let kiln_out = builders[0].last.as_ref().expect("built");
    let kiln_said = String::from_utf8_lossy(&kiln_out.stdout);
    if !kiln_said.contains(&format!("({})", ids[0])) {
        return Err(format!(
            "kiln reported another image id than the engine's {}: {kiln_said}",
            ids[0]
        ));
    }
    // The timed runs were rebuilds from the cache.
    let kiln_log = String::from_utf8_lossy(&kiln_out.stderr);
    let kiln_cached = !kiln_log.contains("DONE [lib/") && !kiln_log.contains("DONE [app/");
    let classic_log =
        String::from_utf8_lossy(&builders[1].last.as_ref().expect("built").stdout).into_owned();
    let classic_cached = !classic_log.contains("Running in");
    if !kiln_cached || !classic_cached {
        return Err(format!(
            "a timed rebuild ran steps instead of using the cache:\nkiln:\n{kiln_log}\ndocker build:\n{classic_log}"
        ));
    }

    let medians: Vec<Stats> = builders.iter().map(|b| stats(b.times.clone())).collect();
    println!(
        "rebuild benchmark: cached rebuild of two targets (lib: 2 RUN steps; app: from lib, COPY from\n\
         the context, WORKDIR, ENV) and of the equivalent two-stage Dockerfile, on the same engine;\n\
         {REBUILDS} runs each after one warm-up, builders taking turns; wall time of the whole command\n"
    );
    println!(
        "| builder                                             | min      | median   | max      | goal        |"
    );
    println!(
        "|-----------------------------------------------------|----------|----------|----------|-------------|"
    );
    let labels = [
        "`kiln build` (release)",
        "`DOCKER_BUILDKIT=0 docker build` (classic builder)",
        "BuildKit: `tar | curl POST /build?version=2`",
    ];
    for (i, (label, s)) in labels.iter().zip(&medians).enumerate() {
        println!(
            "| {label:<51} | {:>8} | {:>8} | {:>8} | {:<11} |",
            ms(s.min),
            ms(s.median),
            ms(s.max),
            if i == 0 { "<= both" } else { "" }
        );
    }
    let kiln_median = medians[0].median.as_secs_f64();
    for (label, s) in [
        ("median ratio kiln / docker build (classic)", &medians[1]),
        ("median ratio kiln / BuildKit via the API", &medians[2]),
    ] {
        println!(
            "| {label:<51} | {:>8} | {:>8} | {:>8} | {:<11} |",
            "",
            format!("{:.2}x", kiln_median / s.median.as_secs_f64()),
            "",
            "<= 1.00x"
        );
    }
    println!("\nimages:");
    for (builder, id) in builders.iter().zip(&ids) {
        println!("  {:<34} {} {id}", builder.name, builder.image);
    }

    let mut missed = Vec::new();
    for (name, s) in [
        ("docker build (classic builder)", &medians[1]),
        ("BuildKit via the Engine API", &medians[2]),
    ] {
        if medians[0].median > s.median {
            missed.push(format!(
                "kiln ({}) slower than {name} ({})",
                ms(medians[0].median),
                ms(s.median)
            ));
        }
    }
    Ok(missed)
}

/// `len` bytes of text that differ from file to file (`seed`), cheap to make.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if i % 64 == 63 {
                return b'\n';
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// The content of the changed file at build `n`: unique to this run, so the daemon has not seen
/// it (the copy and the smoke test really run on both builds).
fn changed_content(n: usize) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut text = format!("build {n} of bench run {}-{nanos}\n", std::process::id()).into_bytes();
    text.extend(filler(n as u64, 3000));
    text.push(b'\n');
    text
}

/// `kiln_app::build` of every target in `dir`; the progress lines are shown when it fails.
fn build_in_process(dir: &Path, what: &str) -> Result<(Vec<Built>, Duration), String> {
    let settings = Settings {
        cwd: dir.to_path_buf(),
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        ..Settings::default()
    };
    let mut lines = Vec::new();
    let t = Instant::now();
    let built = kiln_app::build(&settings, &BuildOptions::default(), &mut |p| {
        lines.push(format!("{p:?}"))
    });
    let elapsed = t.elapsed();
    match built {
        Ok(built) => Ok((built, elapsed)),
        Err(e) => {
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            Err(format!("{what} failed: {e}\n{tail}"))
        }
    }
}

/// The build-context benchmark; returns the goals it missed.
pub fn context() -> Result<Vec<String>, String> {
    engine_ready()?;
    let mut scratch = Scratch::new("context")?;
    let image = scratch.image("context");

    eprintln!(
        "bench context: writing {} files",
        count(DIRS * FILES_PER_DIR)
    );
    let mut total: u64 = 0;
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            let path = format!("d{d:03}/f{f:03}.txt");
            let contents = if path == CHANGED {
                changed_content(1)
            } else {
                let i = d * FILES_PER_DIR + f;
                filler(i as u64, 2048 + (i * 7919) % 3072)
            };
            total += contents.len() as u64;
            scratch.write(&path, &contents)?;
        }
    }
    let files = DIRS * FILES_PER_DIR + 1;
    let manifest = format!(
        r#"version = 1

[defaults]
network = "host"

[target.ctx]
from  = "{BASE_IMAGE}"
image = "{image}"
# "./", not ".": kiln-compile turns "." into the include pattern ".", which matches no file
# (the copy succeeds with an empty /ctx); "./" becomes "**".
copy  = [{{ src = "./", dest = "/ctx" }}]

[target.ctx.smoke-test]
# Every file of the context (the {DIRS} x {FILES_PER_DIR} files and this manifest) arrived.
run = ["n=$(find /ctx -type f | wc -l) && echo \"files in /ctx: $n\" && test $n -eq {files}"]
"#
    );
    scratch.write("kiln.toml", manifest.as_bytes())?;
    total += manifest.len() as u64;

    let (first, first_time) = build_in_process(&scratch.dir, "the first build")?;
    let changed = changed_content(2);
    scratch.write(CHANGED, &changed)?;
    let (second, second_time) = build_in_process(&scratch.dir, "the rebuild")?;

    let ctx = |built: &[Built]| -> Result<Built, String> {
        built
            .iter()
            .find(|b| b.target == "ctx")
            .cloned()
            .ok_or_else(|| "no `ctx` among the built targets".to_string())
    };
    let (first, second) = (ctx(&first)?, ctx(&second)?);
    // The image is the rebuilt one and holds the new content.
    let id = image_id(&image)?;
    if second.image_id.as_deref() != Some(id.as_str()) {
        return Err(format!(
            "the engine's {image} is {id}, the rebuild reported {:?}",
            second.image_id
        ));
    }
    let inside = run_image(&image, &["cat", &format!("/ctx/{CHANGED}")])?;
    if inside.as_bytes() != changed.as_slice() {
        return Err(format!(
            "/ctx/{CHANGED} in {image} is not the changed content: {}",
            inside.lines().next().unwrap_or("")
        ));
    }

    let share = |bytes: u64| bytes as f64 / total as f64;
    println!(
        "context benchmark: {} files in {DIRS} directories plus the manifest, {} in all; built, then\n\
         rebuilt after changing {CHANGED} ({}); one target copying the whole context, with a smoke\n\
         test counting the files (two solves, each pulling the context); in process through\n\
         kiln_app::build, wall time of the whole build; bytes are file data the daemon pulled\n",
        count(files),
        size(total),
        size(changed.len() as u64)
    );
    println!(
        "| build                       | wall     | stat entries | files pulled | bytes pulled | of context | goal  |"
    );
    println!(
        "|-----------------------------|----------|--------------|--------------|--------------|------------|-------|"
    );
    for (label, built, time, goal) in [
        ("first build", &first, first_time, ""),
        ("rebuild, one file changed", &second, second_time, "< 1 %"),
    ] {
        println!(
            "| {label:<27} | {:>8} | {:>12} | {:>12} | {:>12} | {:>10} | {goal:<5} |",
            secs(time),
            count(built.context.entries),
            count(built.context.files),
            size(built.context.bytes),
            format!("{:.3} %", share(built.context.bytes) * 100.0),
        );
    }
    println!("\nimage: {image} {id} holds the changed /ctx/{CHANGED}");

    let mut missed = Vec::new();
    if share(second.context.bytes) >= GOAL_CONTEXT_SHARE {
        missed.push(format!(
            "the rebuild pulled {} of the context's {} (goal: under 1%)",
            size(second.context.bytes),
            size(total)
        ));
    }
    Ok(missed)
}
