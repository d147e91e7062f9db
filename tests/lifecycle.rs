//! The lock lifecycle end to end on the real engine with a real (local, generated) package
//! index: refresh writes a lock, a newer release moves it and `--commit` commits exactly the
//! lock, a pinned build keeps installing what is locked, a failing smoke test writes nothing,
//! a dirty lock file is never overwritten, and an interrupted write never tears a lock file.
//! The package tools themselves (uv, pip-tools) are installed from PyPI through the host's CA
//! bundle, once; every package the apps depend on comes from the local index.

#[path = "support/pyindex.rs"]
mod pyindex;

#[path = "support/project.rs"]
mod project;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use project::{Image, git, kiln, read, repo};
use pyindex::PyIndex;

const BASE: &str = "kiln-base/debian-python:bookworm";
const LIB: &str = "kiln-demo-lib";

/// A git repository holding a project that depends on `kiln-demo-lib` through `manager`.
fn project(manager: &str, index: &PyIndex, image: &Image) -> tempfile::TempDir {
    let (files, env, python): (&[(&str, &str)], String, &str) = match manager {
        "uv" => (
            &[(
                "pyproject.toml",
                "[project]\nname = \"lifecycle-app\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"kiln-demo-lib\"]\n",
            )],
            format!(
                "UV_INDEX_URL = \"{}\"\nUV_PYTHON_DOWNLOADS = \"never\"\nUV_LINK_MODE = \"copy\"",
                index.url()
            ),
            "/app/.venv/bin/python",
        ),
        _ => (
            &[("requirements.in", "kiln-demo-lib\n")],
            // pip-tools itself comes from PyPI; the app's packages from the local index.
            format!("PIP_EXTRA_INDEX_URL = \"{}\"", index.url()),
            "/opt/venv/bin/python",
        ),
    };
    let manifest = format!(
        r#"version = 1
[target.app]
from  = "{BASE}"
image = "{image}"
network = "host"
ca-certificates = "host"

[target.app.packages]
manager = "{manager}"

[target.app.build-env]
{env}

[target.app.smoke-test]
copy = ["tests/"]
run  = ["{python} tests/smoke.py"]

[target.app.config]
workdir = "/app"
"#,
        image = image.0
    );
    let smoke = "import os, sys\nimport kiln_demo_lib\nprint('smoke: kiln-demo-lib', kiln_demo_lib.__version__)\nif os.path.exists('tests/fail'):\n    sys.exit('smoke test failed on purpose')\n";
    let mut all = vec![("kiln.toml", manifest.as_str()), ("tests/smoke.py", smoke)];
    all.extend(files.iter().copied());
    repo(&all)
}

/// The whole lifecycle for one package manager.
fn lifecycle(manager: &str, lock: &str, pinned_line: impl Fn(&str) -> String, python: &str) {
    let index = PyIndex::start();
    index.publish(LIB, "1.0.0", &[]);
    let image = Image::new(&format!("lifecycle-{manager}"));
    let dir = project(manager, &index, &image);
    let d = dir.path();

    // 1. The first refresh writes a lock pinning 1.0.0.
    let run = kiln(d, &["refresh"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("smoke: kiln-demo-lib 1.0.0"),
        "{}",
        run.stderr
    );
    assert!(
        read(d, lock).contains(&pinned_line("1.0.0")),
        "{}",
        read(d, lock)
    );
    assert!(
        run.stdout.contains(&format!("{lock} (1 added)")),
        "{}",
        run.stdout
    );
    git(d, &["add", lock]);
    git(d, &["commit", "-q", "-m", "lock"]);

    // 2. 1.1.0 is published: refresh --commit moves the lock and commits only the lock.
    index.publish(LIB, "1.1.0", &[]);
    std::fs::write(d.join("unrelated.txt"), "staged, not kiln's\n").unwrap();
    git(d, &["add", "unrelated.txt"]);
    let run = kiln(d, &["refresh", "--commit"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("kiln-demo-lib 1.0.0 → 1.1.0"),
        "{}",
        run.stdout
    );
    assert!(read(d, lock).contains(&pinned_line("1.1.0")));
    assert_eq!(
        git(d, &["show", "--name-only", "--format=", "HEAD"]).trim(),
        lock
    );
    let message = git(d, &["log", "-1", "--format=%B"]);
    assert!(message.contains("kiln-demo-lib 1.0.0 → 1.1.0"), "{message}");
    assert_eq!(
        git(d, &["status", "--porcelain"]).trim(),
        "A  unrelated.txt",
        "the user's staged file stays staged and uncommitted"
    );
    git(d, &["reset", "-q", "unrelated.txt"]);
    std::fs::remove_file(d.join("unrelated.txt")).unwrap();

    // 3. 1.2.0 is published; a pinned build still installs 1.1.0, and records kiln.lock.
    index.publish(LIB, "1.2.0", &[]);
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        image.run(&[
            python,
            "-c",
            "import kiln_demo_lib; print(kiln_demo_lib.__version__)"
        ]),
        "1.1.0"
    );
    let kiln_lock = read(d, "kiln.lock");
    assert!(
        kiln_lock.contains(&format!("image = \"docker.io/{}\"", image.0)),
        "{kiln_lock}"
    );
    git(d, &["add", "kiln.lock"]);
    git(d, &["commit", "-q", "-m", "kiln.lock"]);
    // Nothing changed: no work.
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("up to date"), "{}", run.stdout);
    assert!(
        !run.stderr.contains("==>"),
        "nothing solved: {}",
        run.stderr
    );

    // 4. A failing smoke test leaves the lock, kiln.lock and git untouched, and the error says
    // which upgrades it tried (1.2.0 is out) above the failing test's output.
    std::fs::write(d.join("tests/fail"), "").unwrap();
    let head = git(d, &["rev-parse", "HEAD"]);
    let (lock_before, kiln_before) = (read(d, lock), read(d, "kiln.lock"));
    let run = kiln(d, &["refresh", "--commit"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("smoke test failed on purpose"),
        "{}",
        run.stderr
    );
    let error = &run.stderr[run.stderr.rfind("error: app/refresh").expect("the error")..];
    let tried = format!(
        "  the refresh tried (nothing was written):\n    app: {lock} (1 upgraded)\n      ↑ kiln-demo-lib 1.1.0 → 1.2.0\n  step: [app/smoke-test 1]"
    );
    assert!(error.contains(&tried), "{error}");
    assert!(
        error.find(&tried) < error.find("smoke test failed on purpose"),
        "{error}"
    );
    assert_eq!(read(d, lock), lock_before);
    assert_eq!(read(d, "kiln.lock"), kiln_before);
    assert_eq!(git(d, &["rev-parse", "HEAD"]), head);
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 1, "a failing smoke test fails the build");
    assert_eq!(read(d, "kiln.lock"), kiln_before);
    std::fs::remove_file(d.join("tests/fail")).unwrap();

    // 5. A lock file with uncommitted edits is never overwritten.
    let edited = format!("{lock_before}# my edit\n");
    std::fs::write(d.join(lock), &edited).unwrap();
    let run = kiln(d, &["refresh"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("uncommitted edits"), "{}", run.stderr);
    assert_eq!(read(d, lock), edited);
    git(d, &["checkout", "-q", lock]);

    // 6. --commit on a detached HEAD refuses before any work, saying how to proceed.
    git(d, &["checkout", "-q", "--detach"]);
    let run = kiln(d, &["refresh", "--commit"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("HEAD is detached") && run.stderr.contains("git switch"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("==>"),
        "nothing was built: {}",
        run.stderr
    );
    git(d, &["checkout", "-q", "main"]);

    // 7. Killed between writing the new lock and renaming it over the old: the old lock is
    // whole, and the half-done file is not the lock.
    let marker = d.join("paused");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["refresh", "--progress", "plain"])
        .current_dir(d)
        .env("KILN_TEST_PAUSE_BEFORE_RENAME", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln ended before the rename hook"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no rename hook");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(read(d, lock), lock_before, "the lock is the old one, whole");
}

#[test]
fn uv_refresh_commit_pinned_build_and_safety() {
    if !project::require_engine() {
        return;
    }
    lifecycle(
        "uv",
        "uv.lock",
        |v| format!("name = \"kiln-demo-lib\"\nversion = \"{v}\""),
        "/app/.venv/bin/python",
    );
}

#[test]
fn pip_refresh_commit_pinned_build_and_safety() {
    if !project::require_engine() {
        return;
    }
    lifecycle(
        "pip",
        "requirements.txt",
        |v| format!("kiln-demo-lib=={v}"),
        "/opt/venv/bin/python",
    );
}

#[test]
fn a_whole_context_copy_is_up_to_date_after_its_build_and_never_holds_kiln_lock() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("whole-context");
    let manifest = format!(
        "version = 1\n[target.app]\nfrom = \"{BASE}\"\nimage = \"{}\"\nnetwork = \"host\"\ncopy = [{{ src = \".\", dest = \"/ctx\" }}]\n",
        image.0
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("kiln.toml"), manifest).unwrap();
    std::fs::write(d.join("data.txt"), "data\n").unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(read(d, "kiln.lock").contains("[[target]]"));
    // kiln.lock was written by that build; it is not an input, so nothing is out of date.
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("up to date"), "{}", run.stdout);
    let listing = image.run(&["ls", "/ctx"]);
    assert!(
        listing.contains("data.txt") && !listing.contains("kiln.lock"),
        "{listing}"
    );
}

#[test]
fn check_locked_names_the_input_that_changed() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("which-input");
    let manifest = format!(
        r#"version = 1
[target.dep]
from = "{BASE}"
network = "none"
copy = [{{ src = "data/", dest = "/data" }}]

[target.app]
from  = "target:dep"
image = "{image}"
network = "none"
run = ["echo {image} > /id"]
copy = [{{ src = "app.py", dest = "/app/app.py" }}]

[target.app.packages]
manager = "custom"
files = ["deps.txt"]
lock = ["deps.lock"]
refresh = "cp deps.txt deps.lock"
install = "cat deps.lock"
"#,
        image = image.0
    );
    let dir = repo(&[
        ("kiln.toml", &manifest),
        ("data/x.txt", "x\n"),
        ("app.py", "print('app')\n"),
        ("deps.txt", "a==1\n"),
        ("deps.lock", "a==1\n"),
    ]);
    let d = dir.path();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    let kiln_lock = read(d, "kiln.lock");
    assert!(kiln_lock.contains("[target.parts]"), "{kiln_lock}");
    git(d, &["add", "kiln.lock"]);
    git(d, &["commit", "-q", "-m", "kiln.lock"]);
    let inputs_lines = |run: &project::Run| -> Vec<String> {
        run.stderr
            .lines()
            .filter(|l| l.contains("inputs changed"))
            .map(str::to_string)
            .collect()
    };
    let check = || kiln(d, &["check", "--locked"]);
    // Nothing changed yet (the local base is pinned by the engine's image id).
    assert_eq!(inputs_lines(&check()), Vec::<String>::new());
    let changed = |what: &str| {
        format!("its inputs changed since kiln.lock was written: {what}; run `kiln build")
    };

    std::fs::write(d.join("deps.lock"), "a==2\n").unwrap();
    let lines = inputs_lines(&check());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("target `app`") && lines[0].contains(&changed("lock file `deps.lock`")),
        "{lines:?}"
    );
    git(d, &["checkout", "-q", "deps.lock"]);

    std::fs::write(d.join("data/x.txt"), "y\n").unwrap();
    let lines = inputs_lines(&check());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("target `app`")
            && lines[0].contains(&changed("target `dep`, which it builds on")),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("target `dep`") && lines[1].contains(&changed("context file(s) `data`")),
        "{lines:?}"
    );
    git(d, &["checkout", "-q", "data/x.txt"]);

    std::fs::write(d.join("kiln.toml"), manifest.replace("> /id", "> /id2")).unwrap();
    let lines = inputs_lines(&check());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&changed(
            "its manifest entry `[target.app]` (kiln.toml:7:9)"
        )),
        "{lines:?}"
    );
    git(d, &["checkout", "-q", "kiln.toml"]);

    // The base is pinned (by image id, a local image) to something else.
    // Another valid digest (kiln.lock's digests are validated): its first hex digit changed.
    let at = kiln_lock.find("image-id = \"sha256:").unwrap() + "image-id = \"sha256:".len();
    let other = if &kiln_lock[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let repinned = format!("{}{other}{}", &kiln_lock[..at], &kiln_lock[at + 1..]);
    assert_ne!(repinned, kiln_lock);
    std::fs::write(d.join("kiln.lock"), repinned).unwrap();
    let lines = inputs_lines(&check());
    assert!(
        lines[0].contains("target `app`")
            && lines[1].contains(&changed(&format!(
                "its base `docker.io/{BASE}` (pinned to another digest in kiln.lock)"
            ))),
        "{lines:?}"
    );
}

/// Three independent targets (each its own file and a unique step) and one that builds on the
/// first: `manifest` for them, with `images` as their names.
fn incremental_manifest(images: &[Image]) -> String {
    let mut manifest = "version = 1\n[defaults]\nnetwork = \"none\"\n".to_string();
    for (i, image) in images.iter().enumerate() {
        let name = ["a", "b", "c", "d"][i];
        let from = if name == "d" {
            "target:a".to_string()
        } else {
            BASE.to_string()
        };
        manifest.push_str(&format!(
            "\n[target.{name}]\nfrom = \"{from}\"\nimage = \"{}\"\nrun = [\"echo {} > /id-{name}\"]\ncopy = [{{ src = \"{name}.txt\", dest = \"/{name}.txt\" }}]\n",
            image.0, image.0
        ));
    }
    manifest
}

#[test]
fn only_the_targets_whose_inputs_changed_are_solved() {
    if !project::require_engine() {
        return;
    }
    let images: Vec<Image> = ["inc-a", "inc-b", "inc-c", "inc-d"]
        .iter()
        .map(|n| Image::new(n))
        .collect();
    let manifest = incremental_manifest(&images);
    let dir = repo(&[
        ("kiln.toml", &manifest),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        ("c.txt", "c\n"),
        ("d.txt", "d\n"),
    ]);
    let d = dir.path();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");

    // Only b's file changes: b is solved, a, c and d (which builds on a) are not.
    std::fs::write(d.join("b.txt"), "b, edited\n").unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    for name in ["a", "c", "d"] {
        assert!(
            run.stdout.contains(&format!("{name}: docker.io/"))
                && !run.stderr.contains(&format!("==> {name}/")),
            "{name} is up to date and not solved\n{run}"
        );
    }
    assert_eq!(run.stdout.matches("up to date").count(), 3, "{run}");
    assert!(run.stderr.contains("==> b/image"), "{run}");
    assert_eq!(images[1].run(&["cat", "/b.txt"]), "b, edited");

    // a changes: a and d (its image is d's base) are solved, b and c are not.
    std::fs::write(d.join("a.txt"), "a, edited\n").unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains("==> a/image") && run.stderr.contains("==> d/image"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("==> b/") && !run.stderr.contains("==> c/"),
        "{run}"
    );
    assert_eq!(images[3].run(&["cat", "/a.txt"]), "a, edited");

    // Everything up to date: --no-cache still solves what is selected, every step again.
    let run = kiln(d, &["build", "c", "--no-cache"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("==> c/image"), "{run}");
    let step = format!("echo {} > /id-c", images[2].0);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(" DONE ") && l.contains(&step)),
        "the step ran again\n{run}"
    );
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.contains(" CACHED ") && l.contains(&step)),
        "the step was not taken from the cache\n{run}"
    );
    // Without --no-cache the same step is cached again.
    let run = kiln(d, &["build", "c", "--force"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(" CACHED ") && l.contains(&step)),
        "{run}"
    );
}
