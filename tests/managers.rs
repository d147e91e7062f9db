//! Poetry and npm end to end on the real engine: `kiln refresh` writes the manager's lock from
//! a real resolver run inside the build, a pinned `kiln build` installs exactly what is locked
//! (checked by running the image), and a declaration that no longer matches the lock fails the
//! build with the manager's own complaint. And for uv, pip and poetry: the environment the
//! packages are installed into is active afterwards, so plain `python3` finds them in the
//! smoke test and in the image, unless the manifest says `activate = false`.
//!
//! Poetry resolves against the local generated index (tests/support/pyindex.rs), declared as
//! the project's only (`primary`) source; poetry itself comes from PyPI through the host's CA
//! bundle. npm resolves against the real npm registry (through the CA bundle, which kiln hands
//! to node as `NODE_EXTRA_CA_CERTS`), with node and npm installed from Debian by a `pre` step;
//! so its assertions hold whatever the latest `is-number` 7.x is.

#[path = "support/project.rs"]
mod project;
#[path = "support/pyindex.rs"]
mod pyindex;

use project::{Image, git, kiln, read, repo};
use pyindex::PyIndex;

const BASE: &str = "kiln-base/debian-python:bookworm";

/// A manifest for one target `app` on the base image, RUN steps on the host network with the
/// host's CA bundle, workdir `/app`; `extra` is appended (packages, pre steps, smoke test).
fn manifest(image: &Image, extra: &str) -> String {
    format!(
        r#"version = 1
[target.app]
from  = "{BASE}"
image = "{image}"
network = "host"
ca-certificates = "host"
{extra}
[target.app.config]
workdir = "/app"
"#,
        image = image.0
    )
}

fn poetry_pyproject(index: &PyIndex, deps: &str) -> String {
    format!(
        r#"[project]
name = "managers-app"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [{deps}]

[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "local"
url = "{}/"
priority = "primary"
"#,
        index.url()
    )
}

#[test]
fn poetry_refresh_moves_the_lock_and_a_pinned_build_keeps_it() {
    if !project::require_engine() {
        return;
    }
    const LIB: &str = "kiln-demo-lib";
    let index = PyIndex::start();
    index.publish(LIB, "1.0.0", &[]);
    index.publish("kiln-other-lib", "1.0.0", &[]);
    let image = Image::new("managers-poetry");
    // Poetry's project venv (/app/.venv) is active: the image's plain python3 is its python.
    let python = "python3";
    let kiln_toml = manifest(
        &image,
        &format!(
            r#"[target.app.packages]
manager = "poetry"

[target.app.smoke-test]
copy = ["tests/"]
run  = ["{python} tests/smoke.py"]
"#
        ),
    );
    let dir = repo(&[
        ("kiln.toml", &kiln_toml),
        (
            "pyproject.toml",
            &poetry_pyproject(&index, "\"kiln-demo-lib\""),
        ),
        (
            "tests/smoke.py",
            "import kiln_demo_lib\nprint('smoke: kiln-demo-lib', kiln_demo_lib.__version__)\n",
        ),
    ]);
    let d = dir.path();
    let pinned = |v: &str| format!("name = \"kiln-demo-lib\"\nversion = \"{v}\"");

    // The first refresh resolves against the index and writes poetry.lock pinning 1.0.0.
    let run = kiln(d, &["refresh"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("smoke: kiln-demo-lib 1.0.0"), "{run}");
    assert!(read(d, "poetry.lock").contains(&pinned("1.0.0")), "{run}");
    assert!(run.stdout.contains("poetry.lock (1 added)"), "{run}");
    git(d, &["add", "poetry.lock"]);
    git(d, &["commit", "-q", "-m", "lock"]);

    // 1.1.0 is published: a refresh moves the lock.
    index.publish(LIB, "1.1.0", &[]);
    let run = kiln(d, &["refresh", "--commit"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("kiln-demo-lib 1.0.0 → 1.1.0"), "{run}");
    assert!(read(d, "poetry.lock").contains(&pinned("1.1.0")));
    assert_eq!(
        git(d, &["show", "--name-only", "--format=", "HEAD"]).trim(),
        "poetry.lock"
    );

    // 1.2.0 is published; the pinned build (`poetry check --lock && poetry install`) still
    // installs 1.1.0, into the image (not into poetry's cache mount).
    index.publish(LIB, "1.2.0", &[]);
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        image.run(&[
            python,
            "-c",
            "import kiln_demo_lib; print(kiln_demo_lib.__version__)"
        ]),
        "1.1.0"
    );

    // A dependency added to pyproject.toml without re-locking fails the pinned build.
    std::fs::write(
        d.join("pyproject.toml"),
        poetry_pyproject(&index, "\"kiln-demo-lib\", \"kiln-other-lib\""),
    )
    .unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("poetry check --lock"), "{run}");
    assert!(run.stderr.contains("poetry lock"), "poetry's advice: {run}");
}

/// A uv or pip project depending on `kiln-demo-lib` from `index`, whose smoke test imports it
/// with plain `python3`; `activate` is the packages table's extra line, if any.
fn activation_project(
    manager: &str,
    index: &PyIndex,
    image: &Image,
    activate: &str,
) -> tempfile::TempDir {
    let (file, env) = match manager {
        "uv" => (
            (
                "pyproject.toml",
                "[project]\nname = \"activation-app\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = [\"kiln-demo-lib\"]\n",
            ),
            // No UV_LINK_MODE or UV_PYTHON_DOWNLOADS: the uv manager brings them.
            format!("UV_INDEX_URL = \"{}\"", index.url()),
        ),
        _ => (
            ("requirements.in", "kiln-demo-lib\n"),
            format!("PIP_EXTRA_INDEX_URL = \"{}\"", index.url()),
        ),
    };
    let kiln_toml = manifest(
        image,
        &format!(
            r#"[target.app.packages]
manager = "{manager}"
{activate}

[target.app.build-env]
{env}

[target.app.smoke-test]
run = ["python3 -c 'import sys, kiln_demo_lib; print(\"smoke:\", sys.prefix, kiln_demo_lib.__version__)'"]
"#
        ),
    );
    repo(&[("kiln.toml", &kiln_toml), file])
}

/// uv's `<dir>/.venv` and pip's `/opt/venv` are active after the install: the smoke test's and
/// the image's `python3` import the packages, and `VIRTUAL_ENV` names the environment.
fn the_environment_is_active(manager: &str, lock: &str, venv: &str) {
    let index = PyIndex::start();
    index.publish("kiln-demo-lib", "1.0.0", &[]);
    let image = Image::new(&format!("activation-{manager}"));
    let dir = activation_project(manager, &index, &image, "");
    let d = dir.path();

    // The refresh's smoke test runs on the refreshed environment.
    let run = kiln(d, &["refresh", "--commit"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains(&format!("smoke: {venv} 1.0.0")),
        "{run}"
    );
    assert!(read(d, lock).contains("kiln-demo-lib"), "{run}");

    // The pinned build's smoke test, then the image.
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains(&format!("smoke: {venv} 1.0.0")),
        "{run}"
    );
    assert_eq!(
        image.run(&[
            "python3",
            "-c",
            "import kiln_demo_lib; print(kiln_demo_lib.__version__)"
        ]),
        "1.0.0"
    );
    assert_eq!(image.run(&["printenv", "VIRTUAL_ENV"]), venv);
    assert!(
        image
            .run(&["printenv", "PATH"])
            .starts_with(&format!("{venv}/bin:")),
        "the environment first on PATH"
    );
    // The image still finds the base's tools.
    assert!(image.run(&["ls", "/"]).contains("usr"));

    // `activate = false`: the packages are installed, but plain python3 does not see them.
    let off = Image::new(&format!("activation-{manager}-off"));
    let dir = activation_project(manager, &index, &off, "activate = false");
    let d = dir.path();
    let run = kiln(d, &["refresh"]);
    assert_eq!(
        run.code, 1,
        "the smoke test's python3 cannot import it: {run}"
    );
    assert!(
        run.stderr.contains("No module named 'kiln_demo_lib'"),
        "{run}"
    );
}

#[test]
fn uv_environment_is_active_in_the_smoke_test_and_the_image() {
    if !project::require_engine() {
        return;
    }
    the_environment_is_active("uv", "uv.lock", "/app/.venv");
}

#[test]
fn pip_environment_is_active_in_the_smoke_test_and_the_image() {
    if !project::require_engine() {
        return;
    }
    the_environment_is_active("pip", "requirements.txt", "/opt/venv");
}

const NODE_PRE: &str = "apt-get update && apt-get install -y --no-install-recommends nodejs npm";
const IS_NUMBER: &str =
    "console.log(require('is-number')(5), require('is-number/package.json').version)";

fn package_json(range: &str) -> String {
    format!(
        "{{\n  \"name\": \"managers-app\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \"dependencies\": {{ \"is-number\": \"{range}\" }}\n}}\n"
    )
}

#[test]
fn npm_refresh_locks_ci_installs_it_and_a_mismatch_fails() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("managers-npm");
    let kiln_toml = manifest(
        &image,
        &format!(
            r#"run = ["{NODE_PRE}"]

[target.app.packages]
manager = "npm"

[target.app.smoke-test]
run = ["node -e \"{IS_NUMBER}\""]
"#
        ),
    );
    let dir = repo(&[
        ("kiln.toml", &kiln_toml),
        ("package.json", &package_json("^7.0.0")),
    ]);
    let d = dir.path();

    // The refresh resolves against the npm registry and writes package-lock.json.
    let run = kiln(d, &["refresh"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("package-lock.json (1 added)"), "{run}");
    let lock: serde_json::Value = serde_json::from_str(&read(d, "package-lock.json")).unwrap();
    let entry = &lock["packages"]["node_modules/is-number"];
    let locked = entry["version"]
        .as_str()
        .expect("is-number's version in the lock");
    assert!(locked.starts_with("7."), "{locked}");
    assert!(
        entry["integrity"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha512-")),
        "{entry}"
    );
    assert!(run.stderr.contains(&format!("true {locked}")), "{run}");
    git(d, &["add", "package-lock.json"]);
    git(d, &["commit", "-q", "-m", "lock"]);

    // The pinned build installs the locked version with `npm ci`; the image runs it.
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("npm ci"), "{run}");
    assert_eq!(
        image.run(&["node", "-e", IS_NUMBER]),
        format!("true {locked}")
    );

    // package.json no longer matches the lock: `npm ci` refuses and so does the build.
    std::fs::write(d.join("package.json"), package_json("^6.0.0")).unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("npm ci"), "{run}");
    assert!(
        run.stderr.contains("package.json and package-lock.json"),
        "npm ci's complaint: {run}"
    );
    assert!(
        run.stderr.contains(&format!(
            "lock file's is-number@{locked} does not satisfy is-number@6"
        )),
        "{run}"
    );
}
