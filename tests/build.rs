//! `kiln build` against the real engine: Docker Engine's embedded BuildKit, started by
//! `cargo xtask test` (`kiln engine up`), with the base image it imports from Debian packages.
//! Nothing here is faked: images are built, loaded into the engine and run.

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::Command;

use project::{Image, kiln_raw};

const BASE: &str = "kiln-base/debian-python:bookworm";

fn docker(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    (out.status.success(), out.stdout)
}

/// `docker run` of `image` without network; its success and stdout.
fn run_image(image: &Image, cmd: &[&str]) -> (bool, Vec<u8>) {
    let mut args = vec!["run", "--rm", "--network", "none", image.0.as_str()];
    args.extend(cmd);
    docker(&args)
}

fn project(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kiln.toml"), manifest).unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn builds_runs_and_copies_from_another_target() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("hello");
    let manifest = format!(
        r#"version = 1
[defaults]
network = "host"

[target.assets]
from = "{BASE}"
run  = ["mkdir -p /out && echo asset-from-another-target > /out/asset.txt"]

[target.hello]
from  = "{BASE}"
image = "{image}"
# The base's Env is in effect for RUN steps, as in a Dockerfile.
run   = ["mkdir -p /app && echo \"lang=$LANG\" > /app/lang.txt"]
copy  = [{{ src = "hello.py", dest = "/app/hello.py" }},
         {{ from = "target:assets", src = "/out/asset.txt", dest = "/app/asset.txt" }}]

[target.hello.smoke-test]
copy = ["tests/"]
run  = ["python3 tests/smoke.py"]

[target.hello.config]
workdir = "/app"
env = {{ GREETING = "hi" }}
"#,
        image = image.0
    );
    // The image tag is unique, so the file is too: the smoke test really runs.
    let hello = format!("print('hello from kiln')  # {}\n", image.0);
    let dir = project(
        &manifest,
        &[
            ("hello.py", &hello),
            (
                "tests/smoke.py",
                "import subprocess\nout = subprocess.check_output(['python3', '/app/hello.py'])\nassert out == b'hello from kiln\\n', out\nprint('smoke ok')\n",
            ),
            ("ignored.log", "not in the context"),
            (".dockerignore", "*.log\n"),
        ],
    );
    let run = kiln_raw(dir.path(), &["build", "hello"]);
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("smoke ok"),
        "the smoke test's output is shown: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("\nhello: docker.io/{} (sha256:", image.0)),
        "{}",
        run.stdout
    );

    let (ok, out) = run_image(&image, &["python3", "/app/hello.py"]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "hello from kiln\n");
    let (ok, out) = run_image(&image, &["cat", "/app/asset.txt"]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "asset-from-another-target\n");
    let (ok, out) = run_image(&image, &["cat", "lang.txt"]);
    assert!(ok, "the workdir is /app");
    assert_eq!(String::from_utf8_lossy(&out), "lang=C.UTF-8\n");

    // The image config: the base's Env and Cmd, with the manifest's env and workdir over them.
    let (ok, config) = docker(&["image", "inspect", "--format", "{{json .Config}}", &image.0]);
    assert!(ok);
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        config["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "GREETING=hi"
        ]),
        "{config}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["python3"]), "{config}");
    assert_eq!(config["WorkingDir"], "/app", "{config}");
    // .dockerignore applies to the context: the log file never reached the build.
    let (ok, _) = run_image(&image, &["test", "-e", "/app/ignored.log"]);
    assert!(!ok);

    // A second build is all cache.
    let again = kiln_raw(dir.path(), &["build", "hello"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        !again.stderr.contains("DONE [hello/") && !again.stderr.contains("DONE [assets/"),
        "every step cached (only the context transfer and the export run): {}",
        again.stderr
    );
}

#[test]
fn a_failing_smoke_test_fails_the_build_and_shows_its_output() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("failing");
    let manifest = format!(
        r#"version = 1
[target.bad]
from  = "{BASE}"
image = "{image}"
network = "host"
[target.bad.smoke-test]
run = ["echo checking-something && exit 3"]
"#,
        image = image.0
    );
    let dir = project(&manifest, &[]);
    let run = kiln_raw(dir.path(), &["build"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("checking-something"), "{}", run.stderr);
    assert!(
        run.stderr.contains("error: bad/smoke-test"),
        "{}",
        run.stderr
    );
    // The error itself names the failed step and ends with its output.
    let error = &run.stderr[run.stderr.find("error: ").unwrap()..];
    assert!(
        error.contains("step: [bad/smoke-test 1] echo checking-something && exit 3")
            && error.contains("last output:\n    checking-something"),
        "{error}"
    );
    let (exists, _) = docker(&["image", "inspect", &image.0]);
    assert!(!exists, "no image is tagged when the smoke test fails");
}

#[test]
fn the_ca_bundle_secret_is_used_but_never_stored_or_shown() {
    if !project::require_engine() {
        return;
    }
    // Only the prefix appears in the manifest (the step checks it); the whole value must not
    // appear anywhere but in the bundle file.
    let secret = format!(
        "KILN-SECRET-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let image = Image::new("secret");
    let manifest = format!(
        r#"version = 1
[target.s]
from  = "{BASE}"
image = "{image}"
network = "host"
ca-certificates = "bundle.pem"
# Secrets are not part of BuildKit's cache key: the image tag makes this step new each run.
run = ["grep -q '^KILN-SECRET-' $SSL_CERT_FILE && wc -c < $SSL_CERT_FILE > /size && echo {image} > /run-id"]
"#,
        image = image.0
    );
    let dir = project(&manifest, &[("bundle.pem", &secret)]);
    let run = kiln_raw(dir.path(), &["build", "--progress", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains(&secret) && !run.stdout.contains(&secret),
        "not in the logs"
    );
    let (ok, out) = run_image(&image, &["cat", "/size"]);
    assert!(ok);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        secret.len().to_string(),
        "the step saw the bundle"
    );
    let (ok, out) = run_image(&image, &["ls", "/run/kiln"]);
    assert!(
        !ok || out.is_empty(),
        "the mount point holds nothing in the image"
    );
    // Not in any layer: search the saved image.
    let (ok, saved) = docker(&["save", &image.0]);
    assert!(ok);
    assert!(
        !saved.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "secret found in the image layers"
    );
    // Not in the LLB.
    let llb = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["plan", "--llb", "s"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(llb.status.success());
    assert!(
        !llb.stdout
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
    );
}

/// The base image's `PATH`, as its config says.
fn base_path() -> String {
    let (ok, env) = docker(&["image", "inspect", "--format", "{{json .Config.Env}}", BASE]);
    assert!(ok);
    let env: Vec<String> = serde_json::from_slice(&env).unwrap();
    env.iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .expect("the base sets PATH")
        .to_string()
}

#[test]
fn env_values_expand_the_inherited_environment_as_dockerfile_env_does() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("env-expansion");
    let child = Image::new("env-expansion-child");
    // `$PATH` and `$${LANG}` (kiln's `$$` keeps `${LANG}` for the expansion) refer to the
    // environment in effect; `\$` is a literal dollar.
    let manifest = format!(
        r#"version = 1
[defaults]
network = "host"

[target.app]
from  = "{BASE}"
image = "{image}"
run   = ["ls / > /dev/null && printenv PATH > /build-path && printenv LANG_SEEN > /lang"]
build-env = {{ PATH = "/y/bin:$PATH", LANG_SEEN = "$${{LANG}}" }}

[target.app.config]
env = {{ PATH = "/x/bin:$PATH", LITERAL = "\\$PATH" }}

[target.child]
from  = "target:app"
image = "{child}"
config = {{ env = {{ PATH = "/z/bin:$${{PATH}}" }} }}
"#,
        image = image.0,
        child = child.0
    );
    let dir = project(&manifest, &[]);
    let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let base = base_path();
    let text = |image: &Image, cmd: &[&str]| {
        let (ok, out) = run_image(image, cmd);
        assert!(ok, "{cmd:?} in {}", image.0);
        String::from_utf8_lossy(&out).trim().to_string()
    };
    // The image still finds `ls`: its PATH is the base's with /x/bin in front.
    assert!(text(&image, &["ls", "/"]).contains("build-path"));
    assert_eq!(
        text(&image, &["printenv", "PATH"]),
        format!("/x/bin:{base}")
    );
    assert_eq!(text(&image, &["printenv", "LITERAL"]), "$PATH");
    // build-env expanded against the config env in effect for the RUN step.
    assert_eq!(
        text(&image, &["cat", "/build-path"]),
        format!("/y/bin:/x/bin:{base}")
    );
    assert_eq!(text(&image, &["cat", "/lang"]), "C.UTF-8");
    // build-env stays out of the image config.
    let (ok, config) = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &image.0,
    ]);
    assert!(ok);
    assert!(!String::from_utf8_lossy(&config).contains("/y/bin"));
    // A target built on it refers to its environment.
    assert_eq!(
        text(&child, &["printenv", "PATH"]),
        format!("/z/bin:/x/bin:{base}")
    );
    assert!(text(&child, &["ls", "/"]).contains("lang"));
}

#[test]
fn the_workdir_is_made_after_the_run_steps_and_keeps_the_owner_they_gave_it() {
    if !project::require_engine() {
        return;
    }
    // The user's home is the workdir: `useradd -m` must find it missing and make it app's.
    let image = Image::new("workdir-owner");
    let manifest = format!(
        r#"version = 1
[target.w]
from  = "{BASE}"
image = "{image}"
network = "none"
run = ["useradd -m -d /app app"]
[target.w.smoke-test]
run = ["echo {image} > /app/written-by-the-smoke-test && test \"$(id -un)\" = app"]
[target.w.config]
workdir = "/app"
user = "app"
"#,
        image = image.0
    );
    let dir = project(&manifest, &[]);
    let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (ok, out) = run_image(&image, &["stat", "-c", "%U", "/app"]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "app");
    let (ok, out) = run_image(&image, &["pwd"]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "/app");
    // The skeleton useradd copies in is there: the home was new when it ran.
    let (ok, _) = run_image(&image, &["test", "-f", "/app/.bashrc"]);
    assert!(ok, "useradd -m populated the home it created");

    // A workdir no step makes is still created, root-owned, as a Dockerfile WORKDIR.
    let image = Image::new("workdir-new");
    let manifest = format!(
        "version = 1\n[target.n]\nfrom = \"{BASE}\"\nimage = \"{}\"\nconfig = {{ workdir = \"/srv/data\" }}\n",
        image.0
    );
    let dir = project(&manifest, &[]);
    let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (ok, out) = run_image(&image, &["stat", "-c", "%U %a", "/srv/data"]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "root 755");
}

#[test]
fn without_a_workdir_the_smoke_test_runs_where_the_packages_were_installed() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("no-workdir");
    // A custom manager that "installs" by copying its lock into the packages dir (/app).
    let manifest = format!(
        r#"version = 1
[target.p]
from  = "{BASE}"
image = "{image}"
network = "none"
[target.p.packages]
manager = "custom"
files = ["deps.txt"]
lock = ["deps.lock"]
refresh = "cp deps.txt deps.lock"
install = "mkdir -p site && cp deps.lock site/installed.txt"
[target.p.smoke-test]
copy = ["tests/"]
run = ["python3 tests/smoke.py"]
"#,
        image = image.0
    );
    let smoke = format!(
        "import os, sys\n# {}\nprint('smoke file', __file__, 'cwd', os.getcwd())\nassert os.getcwd() == '/app', os.getcwd()\nassert __file__ == '/app/tests/smoke.py', __file__\nassert open('site/installed.txt').read() == 'pkg==1\\n'\n",
        image.0
    );
    let dir = project(
        &manifest,
        &[
            ("deps.txt", "pkg==1\n"),
            ("deps.lock", "pkg==1\n"),
            ("tests/smoke.py", &smoke),
        ],
    );
    let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("smoke file /app/tests/smoke.py cwd /app"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("//tests"), "{}", run.stderr);
}

#[test]
fn zip_and_tar_artifacts_are_unpacked_and_chown_applies_to_what_they_hold() {
    if !project::require_engine() {
        return;
    }
    use std::io::Write;
    let image = Image::new("artifacts");
    let manifest = format!(
        r#"version = 1
[target.a]
from  = "{BASE}"
image = "{image}"
network = "none"
run = ["useradd -u 1234 -M appuser"]
artifacts = [
  {{ src = "dist/data.zip", extract-to = "/opt/zip", chown = "appuser:appuser" }},
  {{ src = "dist/data.tar.gz", extract-to = "/opt/tar", chown = "1234:1234" }},
  {{ src = "dist/plain.zip", extract-to = "/opt/plain" }},
]
"#,
        image = image.0
    );
    let dir = project(&manifest, &[("src/tar/dir/file.txt", "from the tar\n")]);
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    let zip = |path: &Path, entries: &[(&str, &str)]| {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o640);
        for (name, text) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(text.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    };
    // The unique tag in a file makes the layers new each run.
    zip(
        &dist.join("data.zip"),
        &[
            ("top.txt", image.0.as_str()),
            ("nested/deeper/file.txt", "from the zip\n"),
        ],
    );
    zip(&dist.join("plain.zip"), &[("x.txt", "plain\n")]);
    let tar = Command::new("tar")
        .args(["-czf", "../dist/data.tar.gz", "-C", "tar", "."])
        .current_dir(dir.path().join("src"))
        .status()
        .unwrap();
    assert!(tar.success());

    let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let sh = |script: &str| {
        let (ok, out) = run_image(&image, &["sh", "-c", script]);
        assert!(ok, "{script}");
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(
        sh(
            "cat /opt/zip/top.txt; echo; cat /opt/zip/nested/deeper/file.txt /opt/tar/dir/file.txt /opt/plain/x.txt"
        ),
        format!("{}\nfrom the zip\nfrom the tar\nplain\n", image.0)
    );
    assert_eq!(
        sh(
            "stat -c '%U:%G %a %n' /opt/zip/top.txt /opt/zip/nested /opt/zip/nested/deeper/file.txt /opt/tar/dir /opt/tar/dir/file.txt /opt/plain/x.txt"
        ),
        "appuser:appuser 640 /opt/zip/top.txt\n\
         appuser:appuser 755 /opt/zip/nested\n\
         appuser:appuser 640 /opt/zip/nested/deeper/file.txt\n\
         appuser:appuser 755 /opt/tar/dir\n\
         appuser:appuser 644 /opt/tar/dir/file.txt\n\
         root:root 640 /opt/plain/x.txt\n"
    );
    // The archives themselves are not in the image.
    assert_eq!(
        sh("find /opt -name '*.zip' -o -name '*.tar.gz' | wc -l"),
        "0\n"
    );

    // The zip's bytes are an input: unchanged, the build is up to date; changed, it rebuilds.
    let again = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
    zip(
        &dist.join("data.zip"),
        &[
            ("top.txt", image.0.as_str()),
            ("nested/deeper/file.txt", "changed\n"),
        ],
    );
    let rebuilt = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(rebuilt.code, 0, "{}", rebuilt.stderr);
    assert!(!rebuilt.stdout.contains("up to date"), "{}", rebuilt.stdout);
    assert_eq!(sh("cat /opt/zip/nested/deeper/file.txt"), "changed\n");

    // An entry that would land outside extract-to is refused by check and build, naming the
    // manifest entry, before anything is solved.
    zip(&dist.join("plain.zip"), &[("../../etc/evil", "x")]);
    for command in ["check", "build"] {
        let bad = kiln_raw(dir.path(), &[command, "--progress", "plain"]);
        assert_eq!(bad.code, 1, "{command}: {}", bad.stderr);
        assert!(
            bad.stderr.contains("kiln.toml:10:11: `target.a.artifacts[2].src`: dist/plain.zip: entry `../../etc/evil` has `..` in its path"),
            "{command}: {}",
            bad.stderr
        );
        assert!(
            !bad.stderr.contains("==>"),
            "nothing solved: {}",
            bad.stderr
        );
    }
}

/// A manifest reads no host file outside its repository: `context = "/"` (or `../..`) and
/// `ca-certificates = "/etc/shadow"` fail `kiln build` before anything is solved, naming the
/// key, the path and the flag; `--allow fs.read=DIR` lets a context outside through.
#[test]
fn a_manifest_cannot_read_host_files_outside_its_repository_unless_allowed() {
    if !project::require_engine() {
        return;
    }
    for (name, extra) in [
        (
            "context",
            "context = \"/\"\ncopy = [{ src = \"etc/shadow\", dest = \"/stolen\" }]\n",
        ),
        (
            "dotdot",
            "context = \"../../../../../../../..\"\ncopy = [{ src = \"etc/shadow\", dest = \"/stolen\" }]\n",
        ),
        (
            "ca",
            "ca-certificates = \"/etc/shadow\"\nrun = [\"cp $SSL_CERT_FILE /stolen\"]\n",
        ),
    ] {
        let image = Image::new(&format!("escape-{name}"));
        let manifest = format!(
            "version = 1\n[target.x]\nfrom = \"{BASE}\"\nimage = \"{}\"\n{extra}",
            image.0
        );
        let dir = project(&manifest, &[]);
        let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
        assert_eq!(run.code, 1, "{name}: {}\n{}", run.stdout, run.stderr);
        let key = if name == "ca" {
            "`target.x.ca-certificates`"
        } else {
            "`target.x.context`"
        };
        assert!(
            run.stderr.contains("kiln.toml:5:")
                && run.stderr.contains(key)
                && run.stderr.contains("--allow fs.read=/"),
            "{name}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("==>"),
            "{name}: nothing solved: {}",
            run.stderr
        );
        assert!(
            !docker(&["image", "inspect", &image.0]).0,
            "{name}: no image was made"
        );
        assert!(!dir.path().join("kiln.lock").exists());
    }

    // A context outside the manifest's directory (not in git) builds once it is allowed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("data.txt"), "from outside\n").unwrap();
    let image = Image::new("allowed");
    let manifest = format!(
        "version = 1\n[target.x]\nfrom = \"{BASE}\"\nimage = \"{}\"\ncontext = \"{}\"\ncopy = [{{ src = \"data.txt\", dest = \"/data.txt\" }}]\n",
        image.0,
        outside.path().display()
    );
    let dir = project(&manifest, &[]);
    let run = kiln_raw(dir.path(), &["build", "--progress", "plain"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let allow = format!("fs.read={}", outside.path().display());
    let run = kiln_raw(
        dir.path(),
        &["build", "--progress", "plain", "--allow", &allow],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (ok, out) = run_image(&image, &["cat", "/data.txt"]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "from outside\n");
}

/// `kiln build a & kiln build b` on one manifest: both targets end up in kiln.lock (each run
/// merges its own entries into kiln.lock as it finds it, under a lock), and both are then up
/// to date.
#[test]
fn concurrent_builds_of_different_targets_both_record_in_kiln_lock() {
    if !project::require_engine() {
        return;
    }
    let (a, b) = (Image::new("concurrent-a"), Image::new("concurrent-b"));
    let manifest = format!(
        "version = 1\n[defaults]\nnetwork = \"none\"\n\n[target.a]\nfrom = \"{BASE}\"\nimage = \"{}\"\nrun = [\"echo a {} > /a\"]\n\n[target.b]\nfrom = \"{BASE}\"\nimage = \"{}\"\nrun = [\"echo b {} > /b\"]\n",
        a.0, a.0, b.0, b.0
    );
    let dir = project(&manifest, &[]);
    let spawn = |target: &str| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", target, "--progress", "plain"])
            .current_dir(dir.path())
            .env_remove("DOCKER_HOST")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn("a"), spawn("b"));
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lock = std::fs::read_to_string(dir.path().join("kiln.lock")).unwrap();
    for image in [&a, &b] {
        assert!(
            lock.contains(&format!("image = \"docker.io/{}\"", image.0)),
            "{lock}"
        );
    }
    let run = kiln_raw(dir.path(), &["build", "a", "b", "--progress", "plain"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("up to date").count(),
        2,
        "{}",
        run.stdout
    );
}
