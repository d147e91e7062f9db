//! Driving the `kiln` binary against a throwaway git repository, and looking inside the images
//! it builds: what the real-engine tests share.
//!
//! ```ignore
//! #[path = "support/project.rs"]
//! mod project;
//!
//! let image = project::Image::new("app");
//! let repo = project::repo(&[("kiln.toml", &manifest), ("tests/smoke.py", "…")]);
//! let run = project::kiln(repo.path(), &["build"]);
//! assert_eq!(image.run(&["python3", "-c", "print(1)"]), "1");
//! ```
#![allow(dead_code)]

#[path = "engine.rs"]
mod engine;
pub use engine::require_engine;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one `kiln` invocation did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `kiln ARGS` in `dir` against the local Docker Engine (no `DOCKER_HOST` or `BUILDKIT_HOST`
/// inherited), stdin closed, not yet run: for a test that spawns it or adds to it.
pub fn kiln_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DOCKER_HOST")
        .env_remove("BUILDKIT_HOST")
        .stdin(Stdio::null());
    cmd
}

/// Run `kiln ARGS --progress plain` in `dir` against the local Docker Engine.
pub fn kiln(dir: &Path, args: &[&str]) -> Run {
    kiln_env(dir, args, &[])
}

/// [`kiln`] with extra environment variables (e.g. `DOCKER_HOST` of another engine).
pub fn kiln_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = args.to_vec();
    args.extend(["--progress", "plain"]);
    kiln_raw_env(dir, &args, env)
}

/// [`kiln`] without `--progress plain` added: kiln picks the progress mode itself (plain
/// without a terminal) unless `ARGS` name one.
pub fn kiln_raw(dir: &Path, args: &[&str]) -> Run {
    kiln_raw_env(dir, args, &[])
}

/// [`kiln_raw`] with extra environment variables.
pub fn kiln_raw_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    kiln_command(dir, args)
        .envs(env.iter().copied())
        .output()
        .expect("run kiln")
        .into()
}

/// `git ARGS` in `dir`; panics with git's stderr when it fails. Returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The file's text, or "" when it does not exist.
pub fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// Write `files` (path relative to the repository, text) into a new git repository on
/// branch `main` and commit them.
pub fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    git(d, &["config", "user.name", "kiln test"]);
    git(d, &["config", "user.email", "kiln-test@example.invalid"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "project"]);
    dir
}

/// A unique image name, removed at the end.
pub struct Image(pub String);

impl Image {
    pub fn new(name: &str) -> Image {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Image(format!("kiln-test/{name}:{}-{nanos}", std::process::id()))
    }

    /// What `COMMAND` prints when run in the image (no network, the image's workdir); panics
    /// when it fails.
    pub fn run(&self, command: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["run", "--rm", "--network", "none", &self.0])
            .args(command)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command:?} in {}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .output();
    }
}

/// What a child writes to one of its pipes, read by a thread of its own as it comes.
/// [`Collected::join`] waits for that thread to read to the end of the pipe (the child has
/// exited and closed it), so a test reads everything the child wrote without sleeping first.
pub struct Collected {
    text: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
}

impl Collected {
    /// Start reading `pipe` (e.g. `child.stderr.take().unwrap()`).
    pub fn start(mut pipe: impl Read + Send + 'static) -> Collected {
        let text: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Collected { text, reader }
    }

    /// What has come so far.
    pub fn so_far(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Wait up to `limit` until a whole line that has come satisfies `wanted`; whether one did.
    pub fn wait_for_line(&self, limit: Duration, wanted: impl Fn(&str) -> bool) -> bool {
        let start = Instant::now();
        loop {
            let text = self.so_far();
            let whole = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
            if whole.lines().any(&wanted) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the child wrote to the pipe: waits until the reader reaches its end.
    pub fn join(self) -> String {
        let Collected { text, reader } = self;
        reader.join().expect("the pipe's reader thread");
        let text = text.lock().unwrap();
        String::from_utf8_lossy(&text).into_owned()
    }
}
