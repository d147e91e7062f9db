//! The registry side against real services: Debian's docker-registry on 127.0.0.1:5000
//! (started by `cargo xtask test`, which also pushes the Debian-built base image there) and
//! the real engine. Every test pushes its own base under a unique name, so tests never move
//! each other's tags.

#[path = "support/project.rs"]
mod project;

use std::io::{Read, Write};
use std::process::Command;

use project::{Image, kiln, read, repo};

const BASE: &str = "kiln-base/debian-python:bookworm";
const REGISTRY: &str = "127.0.0.1:5000";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A name in the local registry, unique to this test run; its local tags are removed at the
/// end.
struct Remote(String);

impl Remote {
    fn new(name: &str) -> Remote {
        Remote(format!("{REGISTRY}/{}", Image::new(name).0))
    }

    /// Push `local` (an image in the engine) under this name.
    fn push(&self, local: &str) {
        docker(&["tag", local, &self.0]);
        docker(&["push", &self.0]);
    }

    /// The push digest `kiln.lock` in `dir` records for this image.
    fn recorded_digest(&self, dir: &std::path::Path) -> String {
        let lock = read(dir, "kiln.lock");
        let at = lock
            .find(&format!("image = \"{}\"", self.0))
            .unwrap_or_else(|| panic!("{} not in kiln.lock:\n{lock}", self.0));
        let rest = &lock[at..];
        let line = rest
            .lines()
            .find(|l| l.starts_with("digest = "))
            .unwrap_or_else(|| panic!("no digest for {}:\n{lock}", self.0));
        line.trim_start_matches("digest = ")
            .trim_matches('"')
            .to_string()
    }

    /// The registry's `Docker-Content-Digest` for this tag, asked with plain HTTP.
    fn registry_digest(&self) -> String {
        let rest = self.0.strip_prefix(&format!("{REGISTRY}/")).unwrap();
        let (repo, tag) = rest.rsplit_once(':').unwrap();
        let mut s = std::net::TcpStream::connect(REGISTRY).expect("the registry is up");
        write!(
            s,
            "HEAD /v2/{repo}/manifests/{tag} HTTP/1.0\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json\r\n\r\n"
        )
        .unwrap();
        let mut head = String::new();
        s.read_to_string(&mut head).unwrap();
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no digest for {}: {head}", self.0))
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .output();
    }
}

fn manifest(base: &str, image: &str, extra: &str) -> String {
    format!(
        r#"version = 1
[target.app]
from    = "{base}"
image   = "{image}"
network = "host"
copy    = [{{ src = "msg.txt", dest = "/msg.txt" }}]
{extra}
[target.app.smoke-test]
run = ["test -s /msg.txt"]
"#
    )
}

#[test]
fn pin_push_and_the_locked_gate() {
    if !project::require_engine() {
        return;
    }
    let base = Remote::new("base");
    base.push(BASE);
    let app = Remote::new("app");
    let dir = repo(&[
        ("kiln.toml", &manifest(&base.0, &app.0, "")),
        ("msg.txt", "hello from the registry test\n"),
    ]);
    let d = dir.path();

    // Nothing pinned or built yet: the gate names both problems.
    let run = kiln(d, &["check", "--locked"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("has no digest in kiln.lock; run `kiln pin`"),
        "{run}"
    );
    assert!(
        run.stderr.contains("target `app`: not in kiln.lock"),
        "{run}"
    );

    // pin records the registry's digest for the base tag.
    let run = kiln(d, &["pin"]);
    assert_eq!(run.code, 0, "{run}");
    let base_digest = base.registry_digest();
    assert!(
        read(d, "kiln.lock").contains(&format!("digest = \"{base_digest}\"")),
        "{}",
        read(d, "kiln.lock")
    );

    // build --push records the digest the registry reports for the pushed tag.
    let run = kiln(d, &["build", "--push"]);
    assert_eq!(run.code, 0, "{run}");
    let pushed = app.registry_digest();
    assert!(
        run.stdout.contains(&format!("pushed {}@{pushed}", app.0)),
        "{run}"
    );
    assert!(
        read(d, "kiln.lock").contains(&format!("digest = \"{pushed}\"")),
        "{}",
        read(d, "kiln.lock")
    );
    // The image pulls by that digest and runs.
    docker(&["image", "rm", "-f", &app.0]);
    let by_digest = format!("{}@{pushed}", app.0.rsplit_once(':').unwrap().0);
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &by_digest,
        "cat",
        "/msg.txt",
    ]);
    assert_eq!(out, "hello from the registry test");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &by_digest])
        .output();

    // Right after pin + build the gate passes.
    let run = kiln(d, &["check", "--locked"]);
    assert_eq!(run.code, 0, "{run}");

    // A manifest change fails it, naming the target; a rebuild makes it pass again.
    std::fs::write(
        d.join("kiln.toml"),
        manifest(&base.0, &app.0, "run = [\"echo changed > /changed\"]"),
    )
    .unwrap();
    let run = kiln(d, &["check", "--locked"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("target `app`: its inputs changed"),
        "{run}"
    );
    assert_eq!(kiln(d, &["build"]).code, 0);
    assert_eq!(kiln(d, &["check", "--locked"]).code, 0);

    // So does a change to a file the target copies.
    std::fs::write(d.join("msg.txt"), "changed\n").unwrap();
    let run = kiln(d, &["check", "--locked"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("target `app`: its inputs changed"),
        "{run}"
    );
    assert_eq!(kiln(d, &["build"]).code, 0);
    assert_eq!(kiln(d, &["check", "--locked"]).code, 0, "after rebuilding");
}

#[test]
fn a_moved_base_tag_changes_nothing_until_pin_update() {
    if !project::require_engine() {
        return;
    }
    let base = Remote::new("moving-base");
    base.push(BASE);
    let image = Image::new("pinned");
    let dir = repo(&[
        ("kiln.toml", &manifest(&base.0, &image.0, "")),
        ("msg.txt", "pinned\n"),
    ]);
    let d = dir.path();
    assert_eq!(kiln(d, &["pin"]).code, 0);
    let first = base.registry_digest();

    // Someone pushes a different image under the same base tag.
    let other = Image::new("other-base");
    let other_dir = repo(&[(
        "kiln.toml",
        &format!(
            "version = 1\n[target.o]\nfrom = \"{BASE}\"\nimage = \"{}\"\nnetwork = \"host\"\nrun = [\"echo moved > /moved\"]\n",
            other.0
        ),
    )]);
    assert_eq!(kiln(other_dir.path(), &["build"]).code, 0);
    base.push(&other.0);
    assert_ne!(base.registry_digest(), first, "the tag moved");

    // The pinned build still uses the first image.
    let run = kiln(d, &["build", "--force"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        image.run(&["sh", "-c", "test -e /moved && echo moved || echo pinned"]),
        "pinned"
    );

    // pin --update takes the moved tag, and the next build uses it.
    let run = kiln(d, &["pin", "--update"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains(&format!("{first} → ")), "{run}");
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        image.run(&["sh", "-c", "test -e /moved && echo moved || echo pinned"]),
        "moved"
    );
}

#[test]
fn a_profile_maps_docker_hub_onto_the_local_registry() {
    if !project::require_engine() {
        return;
    }
    // Docker Hub is unreachable here: the build works only through the profile's mapping.
    let image = Image::new("offline");
    let manifest = format!(
        r#"version = 1
[profiles.local.image-overrides]
"re:^docker\\.io/library/(.+)$" = "{REGISTRY}/library/$1"

[target.app]
from    = "python:3.11-slim-bookworm"
image   = "{}"
network = "host"
copy    = [{{ src = "msg.txt", dest = "/msg.txt" }}]
"#,
        image.0
    );
    let dir = repo(&[("kiln.toml", &manifest), ("msg.txt", "offline\n")]);
    let d = dir.path();
    let run = kiln(d, &["plan", "--profile", "local"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains(&format!(
            "docker.io/library/python:3.11-slim-bookworm → {REGISTRY}/library/python:3.11-slim-bookworm"
        )),
        "{run}"
    );
    let run = kiln(d, &["--profile", "local", "build"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(image.run(&["cat", "/msg.txt"]), "offline");
    assert_eq!(
        read(d, "kiln.toml"),
        manifest,
        "the user's file is untouched"
    );
}

#[test]
fn a_failed_push_is_reported_and_records_nothing() {
    if !project::require_engine() {
        return;
    }
    // Nothing listens on port 1: the push fails (after its retries) and kiln.lock stays as it
    // was, with no digest for an image that never reached a registry.
    let image = "127.0.0.1:1/kiln-test/unreachable:v1";
    let dir = repo(&[
        ("kiln.toml", &manifest(BASE, image, "")),
        ("msg.txt", "never pushed\n"),
    ]);
    let d = dir.path();
    let before = read(d, "kiln.lock");
    let run = kiln(d, &["build", "--push"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("push of 127.0.0.1:1/kiln-test/unreachable:v1 failed (attempt 3 of 3)"),
        "{run}"
    );
    assert_eq!(read(d, "kiln.lock"), before, "nothing recorded");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", image])
        .output();
}

#[test]
fn each_profile_is_recorded_apart_so_every_tenant_builds_and_checks_side_by_side() {
    if !project::require_engine() {
        return;
    }
    let base = Remote::new("tenant-base");
    base.push(BASE);
    let stem = Image::new("tenant");
    let images: Vec<Image> = ["eyeson", "personal"]
        .iter()
        .map(|t| Image(format!("{}-{t}", stem.0)))
        .collect();
    let manifest = format!(
        r#"version = 1
[vars]
TENANT = "none"

[profiles.eyeson.vars]
TENANT = "eyeson"

[profiles.personal.vars]
TENANT = "personal"

[target.app]
from    = "{}"
image   = "{}-${{TENANT}}"
network = "none"
run     = ["echo ${{TENANT}} > /tenant"]
"#,
        base.0, stem.0
    );
    let dir = repo(&[("kiln.toml", &manifest)]);
    let d = dir.path();
    let run = kiln(d, &["pin"]);
    assert_eq!(run.code, 0, "{run}");
    for tenant in ["eyeson", "personal"] {
        let run = kiln(d, &["--profile", tenant, "build"]);
        assert_eq!(run.code, 0, "{run}");
    }
    assert_eq!(images[0].run(&["cat", "/tenant"]), "eyeson");
    assert_eq!(images[1].run(&["cat", "/tenant"]), "personal");
    let lock = read(d, "kiln.lock");
    assert_eq!(lock.matches("name = \"app\"").count(), 2, "{lock}");
    assert!(
        lock.contains("profile = \"eyeson\"") && lock.contains("profile = \"personal\""),
        "{lock}"
    );
    // The later build did not overwrite the earlier one's record.
    for tenant in ["eyeson", "personal"] {
        let run = kiln(d, &["--profile", tenant, "check", "--locked"]);
        assert_eq!(run.code, 0, "{tenant}: {run}");
        let run = kiln(d, &["--profile", tenant, "build"]);
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains("up to date"), "{tenant}: {run}");
    }
    // Without a profile the target was never built: said so, with the command that records it.
    let run = kiln(d, &["check", "--locked"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .contains("target `app`: not in kiln.lock; run `kiln build app`"),
        "{run}"
    );
    // A profile's own inputs changing is its own problem, named with its own command.
    let edited = manifest.replace("echo ${TENANT}", "echo tenant=${TENANT}");
    std::fs::write(d.join("kiln.toml"), edited).unwrap();
    let run = kiln(d, &["--profile", "eyeson", "check", "--locked"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr.contains("run `kiln build --profile eyeson app`"),
        "{run}"
    );
}

#[test]
fn the_metadata_file_says_what_became_of_each_target_also_when_the_build_fails() {
    if !project::require_engine() {
        return;
    }
    let base = Remote::new("meta-base");
    base.push(BASE);
    let (app, tool) = (Remote::new("meta-app"), Remote::new("meta-tool"));
    let manifest = format!(
        r#"version = 1
[defaults]
network = "none"

[target.app]
from  = "{base}"
image = "{app}"
run   = ["echo {app} > /id"]

[target.app.smoke-test]
run = ["test -s /id"]

[target.tool]
from  = "{base}"
image = "{tool}"
run   = ["echo {tool} > /id"]
"#,
        base = base.0,
        app = app.0,
        tool = tool.0
    );
    let dir = repo(&[("kiln.toml", &manifest)]);
    let d = dir.path();
    assert_eq!(kiln(d, &["pin"]).code, 0);
    let run = kiln(d, &["build", "--push", "--metadata-file", "out/meta.json"]);
    assert_eq!(run.code, 0, "{run}");
    let meta: serde_json::Value = serde_json::from_str(&read(d, "out/meta.json")).unwrap();
    assert_eq!(meta["ok"], true, "{meta:#}");
    for (name, remote) in [("app", &app), ("tool", &tool)] {
        let t = &meta["targets"][name];
        assert_eq!(t["status"], "built", "{meta:#}");
        assert_eq!(t["image"], remote.0.as_str(), "{meta:#}");
        assert_eq!(
            t["image_id"],
            docker(&["image", "inspect", "--format", "{{.Id}}", &remote.0]).as_str()
        );
        assert_eq!(t["pushed"], remote.registry_digest().as_str(), "{meta:#}");
        assert_eq!(t["builder"], "docker:///var/run/docker.sock", "{meta:#}");
        assert!(t["steps"]["solved"].as_u64().unwrap() >= 1, "{meta:#}");
        assert!(t["duration_ms"].as_u64().unwrap() > 0, "{meta:#}");
    }

    // Nothing changed: --format json says so on stdout, with the recorded ids.
    let run = kiln(d, &["build", "--format", "json"]);
    assert_eq!(run.code, 0, "{run}");
    let meta: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(meta["targets"]["app"]["status"], "up-to-date", "{meta:#}");
    assert_eq!(meta["targets"]["app"]["builder"], serde_json::Value::Null);
    assert_eq!(meta["targets"]["app"]["steps"]["solved"], 0);

    // app's smoke test fails, and a target built on it never starts: the file is still
    // written, saying which failed and which was skipped, and kiln fails.
    let failing = manifest.replace("test -s /id", "exit 3")
        + "\n[target.later]\nfrom = \"target:app\"\nrun = [\"true\"]\n";
    std::fs::write(d.join("kiln.toml"), failing).unwrap();
    let run = kiln(
        d,
        &[
            "build",
            "--format",
            "json",
            "--metadata-file",
            "out/meta.json",
        ],
    );
    assert_eq!(run.code, 1, "{run}");
    let meta: serde_json::Value = serde_json::from_str(&read(d, "out/meta.json")).unwrap();
    let stdout: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(meta, stdout);
    assert_eq!(meta["ok"], false);
    assert_eq!(meta["targets"]["app"]["status"], "failed", "{meta:#}");
    assert!(
        meta["targets"]["app"]["error"]
            .as_str()
            .unwrap()
            .contains("app/smoke-test"),
        "{meta:#}"
    );
    assert_eq!(meta["targets"]["later"]["status"], "skipped", "{meta:#}");
    // tool's own inputs did not change: up to date, not solved, not stopped by app.
    assert_eq!(meta["targets"]["tool"]["status"], "up-to-date", "{meta:#}");
}

#[test]
fn a_fresh_runner_takes_pushed_targets_as_up_to_date_from_the_registry() {
    if !project::require_engine() {
        return;
    }
    let base = Remote::new("fresh-base");
    base.push(BASE);
    let (app, tool) = (Remote::new("fresh-app"), Remote::new("fresh-tool"));
    let target = |name: &str, remote: &Remote| {
        format!(
            "\n[target.{name}]\nfrom = \"{}\"\nimage = \"{}\"\nnetwork = \"none\"\nrun = [\"echo {} > /id\"]\n",
            base.0, remote.0, remote.0
        )
    };
    let manifest = format!(
        "version = 1\n{}{}",
        target("app", &app),
        target("tool", &tool)
    );
    let dir = repo(&[("kiln.toml", &manifest)]);
    let d = dir.path();
    assert_eq!(kiln(d, &["pin"]).code, 0);
    let run = kiln(d, &["build", "--push"]);
    assert_eq!(run.code, 0, "{run}");
    let pushed = app.registry_digest();

    // A fresh runner: the engine has neither image (nor the base under its name).
    for image in [&app.0, &tool.0, &base.0] {
        docker(&["image", "rm", image]);
    }
    let in_engine = |image: &str| {
        Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .unwrap()
            .status
            .success()
    };
    let run = kiln(d, &["build", "--push", "--format", "json"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(!run.stderr.contains("==>"), "nothing solved\n{run}");
    let meta: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(meta["targets"]["app"]["status"], "up-to-date", "{meta:#}");
    assert_eq!(
        meta["targets"]["app"]["pushed"],
        pushed.as_str(),
        "{meta:#}"
    );
    assert_eq!(meta["targets"]["tool"]["status"], "up-to-date", "{meta:#}");
    assert!(
        !in_engine(&app.0) && !in_engine(&tool.0),
        "nothing was pulled"
    );

    // The tag moved in the registry (someone pushed another image): app is built and pushed
    // again; tool, still served as recorded, is not.
    docker(&["tag", BASE, &app.0]);
    docker(&["push", &app.0]);
    docker(&["image", "rm", &app.0]);
    let run = kiln(d, &["build", "--push"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("==> app/image"), "{run}");
    assert!(!run.stderr.contains("==> tool/"), "{run}");
    assert!(run.stdout.contains(&format!("pushed {}@", app.0)), "{run}");
    assert_eq!(app.recorded_digest(d), app.registry_digest());
}

#[test]
fn a_changed_image_name_is_tagged_without_a_solve_and_recorded() {
    if !project::require_engine() {
        return;
    }
    // The image name comes from a variable, as a pipeline sets it: `--set BUILD_TAG=v2`.
    let repository = Image::new("renamed").0.replace(':', "-");
    let dev = Image(format!("{repository}:dev"));
    let v2 = Image(format!("{repository}:v2"));
    let manifest = format!(
        r#"version = 1
[vars]
BUILD_TAG = "dev"

[target.app]
from    = "{BASE}"
image   = "{repository}:${{BUILD_TAG}}"
network = "host"
copy    = [{{ src = "msg.txt", dest = "/msg.txt" }}]
"#
    );
    let dir = repo(&[("kiln.toml", &manifest), ("msg.txt", "renamed\n")]);
    let d = dir.path();
    let run = kiln(d, &["pin"]);
    assert_eq!(run.code, 0, "{run}");
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &dev.0]);
    assert_eq!(kiln(d, &["check", "--locked"]).code, 0);

    // Same inputs, another name: `check --locked` names the change ...
    let run = kiln(d, &["check", "--locked", "--set", "BUILD_TAG=v2"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "target `app`: its image name changed since kiln.lock was written (docker.io/{repository}:dev → docker.io/{repository}:v2)"
        )),
        "{run}"
    );
    // ... and the build tags the image it has, without solving anything.
    let run = kiln(d, &["build", "--set", "BUILD_TAG=v2"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains(&format!(
            "app: docker.io/{repository}:v2 ({id}) up to date, tagged with its new name (no solve)"
        )),
        "{run}"
    );
    assert!(!run.stderr.contains("==>"), "nothing was solved: {run}");
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &v2.0]),
        id
    );
    assert_eq!(v2.run(&["cat", "/msg.txt"]), "renamed");
    assert!(
        read(d, "kiln.lock").contains(&format!("image = \"docker.io/{repository}:v2\"")),
        "{}",
        read(d, "kiln.lock")
    );
    let run = kiln(d, &["check", "--locked", "--set", "BUILD_TAG=v2"]);
    assert_eq!(run.code, 0, "{run}");
    // Now the default name is the changed one.
    assert_eq!(kiln(d, &["check", "--locked"]).code, 1);
    let run = kiln(d, &["build", "--set", "BUILD_TAG=v2"]);
    assert!(run.stdout.contains("up to date\n"), "{run}");

    // A content change still solves, under the name it resolves to.
    std::fs::write(d.join("msg.txt"), "changed\n").unwrap();
    let run = kiln(d, &["build"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("==>"), "{run}");
    assert_eq!(dev.run(&["cat", "/msg.txt"]), "changed");
    assert_eq!(v2.run(&["cat", "/msg.txt"]), "renamed");
    assert_eq!(kiln(d, &["check", "--locked"]).code, 0);
}

#[test]
fn an_image_only_the_engine_has_is_pinned_by_its_image_id() {
    if !project::require_engine() {
        return;
    }
    // The base was imported into the engine, never pulled: no registry has it under its name.
    let image = Image::new("local-base");
    let dir = repo(&[
        ("kiln.toml", &manifest(BASE, &image.0, "")),
        ("msg.txt", "local\n"),
    ]);
    let d = dir.path();
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", BASE]);
    let run = kiln(d, &["pin"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.contains(&format!(
            "docker.io/{BASE}: pinned by the engine's image id {id} (the image exists only in the local engine"
        )),
        "{run}"
    );
    let lock = read(d, "kiln.lock");
    assert!(lock.contains(&format!("image-id = \"{id}\"")), "{lock}");
    assert!(!lock.contains("digest ="), "{lock}");
    assert_eq!(kiln(d, &["build"]).code, 0);
    let run = kiln(d, &["check", "--locked"]);
    assert_eq!(run.code, 0, "{run}");

    // Neither a registry nor the engine has it: both are said.
    let absent = format!("{REGISTRY}/{}", Image::new("absent").0);
    let dir = repo(&[
        ("kiln.toml", &manifest(&absent, &image.0, "")),
        ("msg.txt", "absent\n"),
    ]);
    let run = kiln(dir.path(), &["pin"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("not found in the registry")
            && run
                .stderr
                .contains(&format!("the Docker Engine has no image {absent} either")),
        "{run}"
    );
}

#[test]
fn an_unreachable_registry_is_reported_as_such_not_as_a_lost_builder() {
    if !project::require_engine() {
        return;
    }
    // Nothing listens on port 1: the engine cannot reach that registry; BuildKit is fine.
    let image = Image::new("unreachable-base");
    let dir = repo(&[
        (
            "kiln.toml",
            &manifest("127.0.0.1:1/kiln-test/base:v1", &image.0, ""),
        ),
        ("msg.txt", "never built\n"),
    ]);
    let run = kiln(dir.path(), &["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("cannot reach the registry 127.0.0.1:1"),
        "{run}"
    );
    assert!(!run.stderr.contains("lost the connection"), "{run}");
}
