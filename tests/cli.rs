//! Integration tests of the `kiln` binary: `check` and `plan` on manifests in
//! `tests/fixtures/`, with snapshots of what a user sees.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("utf-8 stdout")
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Run kiln in `dir` with a clean environment (no inherited KILN_* variables).
fn kiln_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kiln");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn kiln(fixture: &str, args: &[&str]) -> Run {
    kiln_in(&fixtures().join(fixture), args, &[])
}

fn json(run: &Run) -> serde_json::Value {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    serde_json::from_slice(&run.stdout).expect("plan json")
}

#[test]
fn check_accepts_a_valid_manifest() {
    let run = kiln("app", &["check"]);
    assert_eq!(
        (run.code, run.stdout().as_str()),
        (0, "ok: 3 targets in 1 manifest\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_reports_every_error_with_file_line_and_key() {
    let run = kiln("errors", &["check"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    insta::assert_snapshot!("check_errors", run.stderr);
}

#[test]
fn check_reports_cycles_naming_every_target_in_order() {
    let run = kiln("cycle", &["check"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim_end(),
        "error: kiln.toml:9:9: dependency cycle: a → b → c → a"
    );
}

#[test]
fn check_reports_missing_context_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        "version = 1\n[target.a]\nfrom = \"debian:bookworm\"\ncopy = [{ src = \"nope/\", dest = \"/x\" }]\n",
    )
    .unwrap();
    let run = kiln_in(dir.path(), &["check"], &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with(
            "error: kiln.toml:4:17: `target.a.copy[0].src`: `nope/` does not exist in context"
        ),
        "{}",
        run.stderr
    );
}

/// Paths a manifest reads stay inside the repository that holds it (here a git work tree),
/// symlinks resolved, unless `--allow fs.read=PATH` grants more.
#[test]
fn check_refuses_paths_outside_the_repository_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join(".git")).unwrap();
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    std::fs::create_dir_all(d.join("app")).unwrap();
    std::os::unix::fs::symlink("/etc", d.join("app/etc")).unwrap();
    std::fs::write(
        d.join("manifests/evil.toml"),
        "version = 1\n[defaults]\nca-certificates = \"/etc/shadow\"\n\n[target.a]\nfrom = \"debian:bookworm\"\ncontext = \"/\"\ncopy = [{ src = \"etc/shadow\", dest = \"/x\" }]\n\n[target.b]\nfrom = \"debian:bookworm\"\ncontext = \"../app/etc\"\nca-certificates = \"host\"\n\n[target.ok]\nfrom = \"debian:bookworm\"\ncontext = \"../app\"\nca-certificates = \"none\"\n\n[target.s]\nfrom = \"debian:bookworm\"\nca-certificates = \"none\"\n[target.s.secrets]\ntoken = { file = \"../app/etc/shadow\" }\n",
    )
    .unwrap();
    let run = kiln_in(d, &["check"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(
        lines,
        [
            "error: manifests/evil.toml:3:19: `defaults.ca-certificates`: reads `/etc/shadow`, outside the repository that holds it",
            "error: manifests/evil.toml:7:11: `target.a.context`: reads `/`, outside the repository that holds it",
            "error: manifests/evil.toml:12:11: `target.b.context`: reads `manifests/../app/etc` (resolved: `/etc`), outside the repository that holds it",
            "error: manifests/evil.toml:24:1: `target.s.secrets.token`: reads `manifests/../app/etc/shadow` (resolved: `/etc/shadow`), outside the repository that holds it",
        ]
        .map(|l| l.replace(
            "outside the repository that holds it",
            &format!(
                "outside {} (the git repository that holds manifests/evil.toml)",
                d.canonicalize().unwrap().display()
            )
        )),
        "{}",
        run.stderr
    );
    for flag in [
        "--allow fs.read=/etc/shadow`",
        "--allow fs.read=/`",
        "--allow fs.read=/etc`",
    ] {
        assert!(run.stderr.contains(flag), "{flag}: {}", run.stderr);
    }
    let run = kiln_in(
        d,
        &["check", "--allow", "fs.read=/etc", "--allow", "fs.read=/"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = kiln_in(d, &["check", "--allow", "fs.read=/etc"], &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("`target.a.context`") && !run.stderr.contains("target.b"));
    let run = kiln_in(d, &["check", "--allow", "/etc"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("expected fs.read=PATH"),
        "{}",
        run.stderr
    );
}

#[test]
fn plan_json_has_targets_dependencies_and_stage_digests() {
    let doc = json(&kiln("app", &["plan", "--format", "json"]));
    let targets = doc["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "assets", "app"]);
    let app = &targets[2];
    assert_eq!(app["depends_on"], serde_json::json!(["assets", "base"]));
    assert_eq!(app["image"], "127.0.0.1:5000/data/app:dev");
    let stages: Vec<&str> = app["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["pre", "packages-pinned", "post", "smoke-test", "image"]
    );
    for t in targets {
        for s in t["stages"].as_array().unwrap() {
            let d = s["digest"].as_str().unwrap();
            assert!(
                d.len() == 71
                    && d.starts_with("sha256:")
                    && d[7..]
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{d}"
            );
        }
    }
    // The image stage is the post filesystem; the smoke test adds to it.
    let digest = |name: &str| {
        app["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["digest"]
            .clone()
    };
    assert_eq!(digest("post"), digest("image"));
    assert_ne!(digest("post"), digest("smoke-test"));
}

#[test]
fn plan_is_byte_identical_across_runs_and_pinned_by_snapshot() {
    let a = kiln("app", &["plan", "--format", "json"]);
    let b = kiln("app", &["plan", "--format", "json"]);
    assert_eq!(a.stdout, b.stdout);
    // Digests in the snapshot are the cross-machine check: any machine must print these.
    insta::assert_snapshot!("plan_app_json", a.stdout());
    insta::assert_snapshot!("plan_app_text", kiln("app", &["plan"]).stdout());
    insta::assert_snapshot!(
        "plan_app_refresh_text",
        kiln("app", &["plan", "--mode", "refresh"]).stdout()
    );
}

#[test]
fn plan_renders_dot_and_mermaid() {
    insta::assert_snapshot!(
        "plan_app_dot",
        kiln("app", &["plan", "--format", "dot"]).stdout()
    );
    insta::assert_snapshot!(
        "plan_app_mermaid",
        kiln("app", &["plan", "--format", "mermaid"]).stdout()
    );
}

#[test]
fn plan_selects_by_target_and_group_with_dependencies() {
    let doc = json(&kiln("app", &["plan", "--format", "json", "assets"]));
    let names: Vec<&str> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "assets"]);
    let run = kiln("app", &["plan", "asets"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.trim_end(),
        "error: no target or group named `asets`\n  hint: did you mean `assets`?"
    );
}

#[test]
fn vars_come_from_set_then_env_then_default() {
    let image = |env: &[(&str, &str)], args: &[&str]| {
        let mut all = vec!["plan", "--format", "json"];
        all.extend(args);
        let doc = json(&kiln_in(&fixtures().join("app"), &all, env));
        doc["targets"][2]["image"].as_str().unwrap().to_string()
    };
    assert_eq!(image(&[], &[]), "127.0.0.1:5000/data/app:dev");
    assert_eq!(
        image(&[("KILN_TEST_BUILD_TAG", "ci-7")], &[]),
        "127.0.0.1:5000/data/app:ci-7"
    );
    assert_eq!(
        image(
            &[("KILN_TEST_BUILD_TAG", "ci-7")],
            &[
                "--set",
                "BUILD_TAG=v1.2",
                "--set",
                "REGISTRY=registry.example:443"
            ]
        ),
        "registry.example:443/data/app:v1.2"
    );
}

#[test]
fn profile_rewrites_are_shown_old_to_new_and_change_digests() {
    let plain = json(&kiln("profiles", &["plan", "--format", "json"]));
    let offline = json(&kiln(
        "profiles",
        &["--profile", "offline", "plan", "--format", "json"],
    ));
    assert_ne!(
        plain["targets"][0]["stages"][0]["digest"],
        offline["targets"][0]["stages"][0]["digest"]
    );
    let text = kiln("profiles", &["--profile", "offline", "plan"]).stdout();
    insta::assert_snapshot!("plan_profiles_offline_text", text);
    let run = kiln("profiles", &["--profile", "ofline", "plan"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("did you mean `offline`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn llb_output_is_a_definition_buildkit_can_read() {
    let run = kiln("app", &["plan", "--llb", "app/smoke-test"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let again = kiln("app", &["plan", "--llb", "app/smoke-test"]);
    assert_eq!(run.stdout, again.stdout, "LLB bytes must be deterministic");
    let def = kiln_llb::Definition::decode(&run.stdout).expect("decodes");
    let ops = def.ops().expect("ops decode");
    assert!(ops.len() >= 8, "{} ops", ops.len());
    // The terminal op is last and only points at the result.
    let (_, last) = ops.last().unwrap();
    assert!(last.op.is_none());
    assert_eq!(last.inputs.len(), 1);
    // Every input refers to an op defined earlier.
    for (i, (_, op)) in ops.iter().enumerate() {
        for input in &op.inputs {
            assert!(
                ops[..i].iter().any(|(d, _)| d.as_str() == input.digest),
                "dangling input {}",
                input.digest
            );
        }
    }
    // The base image and the context are sources.
    let sources: Vec<String> = ops
        .iter()
        .filter_map(|(_, op)| match &op.op {
            Some(kiln_llb::pb::op::Op::Source(s)) => Some(s.identifier.clone()),
            _ => None,
        })
        .collect();
    assert!(
        sources.contains(&"docker-image://docker.io/library/python:3.11-slim-bookworm".to_string()),
        "{sources:?}"
    );
    assert!(sources.contains(&"local://app".to_string()), "{sources:?}");
    // The smoke test runs as the image user, with the CA bundle as a secret, on the host network.
    let smoke = ops
        .iter()
        .filter_map(|(_, op)| match &op.op {
            Some(kiln_llb::pb::op::Op::Exec(e)) => Some(e),
            _ => None,
        })
        .find(|e| e.meta.as_ref().unwrap().args.last().unwrap() == "python tests/smoke.py")
        .expect("smoke-test exec");
    let meta = smoke.meta.as_ref().unwrap();
    assert_eq!(meta.user, "1000:1000");
    assert_eq!(meta.cwd, "/app");
    assert!(
        meta.env
            .contains(&"SSL_CERT_FILE=/run/kiln/ca-certificates.crt".to_string()),
        "{:?}",
        meta.env
    );
    assert!(
        meta.env.contains(&"PYTHONUNBUFFERED=1".to_string()),
        "{:?}",
        meta.env
    );
    assert_eq!(smoke.network, kiln_llb::pb::NetMode::Host as i32);
    assert!(
        smoke
            .mounts
            .iter()
            .any(|m| m.mount_type == kiln_llb::pb::MountType::Secret as i32
                && m.dest == "/run/kiln/ca-certificates.crt")
    );
}

#[test]
fn llb_of_an_unknown_stage_names_the_choices() {
    let run = kiln("app", &["plan", "--llb", "app/packages-refresh"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.trim_end(),
        "error: target `app` has no `packages-refresh` stage in pinned mode; expected one of `app/pre`, `app/packages-pinned`, `app/post`, `app/smoke-test`, `app/image`"
    );
}

#[test]
fn manifests_are_found_at_the_git_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::create_dir_all(root.join("manifests")).unwrap();
    std::fs::create_dir_all(root.join("deep/er")).unwrap();
    std::fs::write(
        root.join("manifests/a.toml"),
        "version = 1\n[target.a]\nfrom = \"debian:bookworm\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("manifests/b.toml"),
        "version = 1\n[target.b]\nfrom = \"target:a\"\n",
    )
    .unwrap();
    let run = kiln_in(&root.join("deep/er"), &["check"], &[]);
    assert_eq!(
        (run.code, run.stdout().as_str()),
        (0, "ok: 2 targets in 2 manifests\n"),
        "{}",
        run.stderr
    );
    // The same target in two files is an error naming both.
    std::fs::write(
        root.join("manifests/c.toml"),
        "version = 1\n[target.a]\nfrom = \"debian:bookworm\"\n",
    )
    .unwrap();
    let run = kiln_in(&root.join("deep/er"), &["check"], &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("../../manifests/c.toml:2:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("../../manifests/a.toml:2:"),
        "{}",
        run.stderr
    );
}

#[test]
fn no_manifest_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = kiln_in(dir.path(), &["plan"], &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("error: no manifest found"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_thousand_target_tree_plans() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("version = 1\n");
    for i in 0..1000 {
        let from = if i == 0 {
            "\"debian:bookworm\"".to_string()
        } else {
            format!("\"target:t{}\"", (i - 1) / 2)
        };
        text.push_str(&format!(
            "[target.t{i}]\nfrom = {from}\nrun = [\"echo {i}\"]\n"
        ));
    }
    std::fs::write(dir.path().join("kiln.toml"), text).unwrap();
    let doc = json(&kiln_in(dir.path(), &["plan", "--format", "json"], &[]));
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1000);
    assert_eq!(targets[0]["name"], "t0");
    let digests: std::collections::BTreeSet<&str> = targets
        .iter()
        .map(|t| t["stages"][0]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 1000, "every pre stage differs");
}

#[test]
fn the_repository_examples_check_and_plan() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = kiln_in(&root.join("examples/hello"), &["check"], &[]);
    assert_eq!(
        (run.code, run.stdout().as_str()),
        (0, "ok: 3 targets in 1 manifest\n"),
        "{}",
        run.stderr
    );
    let doc = json(&kiln_in(
        &root,
        &["--set", "BUILD_TAG=t1", "plan", "--format", "json"],
        &[],
    ));
    assert_eq!(
        doc["targets"][0]["image"],
        "docker.io/kiln-examples/hello:t1"
    );
}

#[test]
fn build_refuses_a_malformed_docker_config_naming_file_and_line_before_building() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        "{\n  \"auths\": {\n    oops\n  }\n}\n",
    )
    .unwrap();
    let dir = fixtures().join("app");
    let docker_config = config.path().to_str().unwrap();
    // A socket that does not exist: the error must come before any connection attempt.
    let run = kiln_in(
        &dir,
        &["build"],
        &[
            ("DOCKER_CONFIG", docker_config),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let file = config.path().join("config.json");
    assert!(
        run.stderr.contains(&format!(
            "registry credentials: {} is not a valid Docker config",
            file.display()
        )) && run.stderr.contains("line 3"),
        "{}",
        run.stderr
    );
}

#[test]
fn llb_of_a_group_says_to_name_a_target_instead_of_panicking() {
    let run = kiln("app", &["plan", "--llb", "default"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: `default` is a group, not a target"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    // The hint is its own line below the message, with the group's targets.
    let hint = run.stderr.lines().nth(1).unwrap_or_default();
    assert!(
        hint.starts_with("  hint: name one of its targets: "),
        "{}",
        run.stderr
    );
}

#[test]
fn an_environment_variable_that_is_not_utf8_is_ignored_with_a_warning() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("check")
        .current_dir(fixtures().join("app"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BADVAR", bad)
        .output()
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 3 targets in 1 manifest\n"
    );
    assert_eq!(
        stderr.trim_end(),
        "warning: ignoring environment variables that are not UTF-8: BADVAR"
    );
}

#[test]
fn completion_scripts_complete_subcommands_and_flags() {
    // bash: source the script and ask it, as the shell does on <Tab>.
    let run = kiln("app", &["completion", "bash"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let script = std::env::temp_dir().join(format!("kiln-completion-{}.bash", std::process::id()));
    std::fs::write(&script, &run.stdout).unwrap();
    let ask = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _kiln kiln '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = ask("kiln re");
    assert_eq!(
        subcommands.lines().collect::<Vec<_>>(),
        ["refresh"],
        "{subcommands}"
    );
    let flags = ask("kiln build --f");
    assert!(flags.lines().any(|l| l == "--force"), "{flags}");
    let _ = std::fs::remove_file(&script);

    let zsh = kiln("app", &["completion", "zsh"]);
    assert_eq!(zsh.code, 0, "{}", zsh.stderr);
    assert!(
        zsh.stdout().starts_with("#compdef kiln"),
        "{}",
        zsh.stdout()
    );
    assert!(zsh.stdout().contains("smoke-test"));
    let fish = kiln("app", &["completion", "fish"]);
    assert_eq!(fish.code, 0, "{}", fish.stderr);
    assert!(
        fish.stdout().contains("complete -c kiln") && fish.stdout().contains("refresh"),
        "{}",
        fish.stdout()
    );
    let bad = kiln("app", &["completion", "tcsh"]);
    assert_eq!(bad.code, 2, "an unknown shell is a usage error");
}

#[test]
fn plan_shows_what_each_override_rule_matched_and_a_rule_that_matches_nothing_is_a_warning() {
    // `re:python$` is what a user writes against `from = "python"`; rules match the
    // normalised `docker.io/library/python:latest`, so it rewrites nothing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        r#"version = 1
[profiles.ci.image-overrides]
"re:python$" = "mirror.local/python:3.11"
"re:^docker\\.io/library/(.+)$" = "mirror.local/$1"
[target.app]
from = "python"
"#,
    )
    .unwrap();
    let warning = "warning: kiln.toml:3:1: `profiles.ci.image-overrides.\"re:python$\"`: profile `ci`: this override rewrites no image reference of any target\n  hint: rules match the normalised reference; it was tried on `docker.io/library/python:latest`\n";
    let plan = kiln_in(dir.path(), &["--profile", "ci", "plan"], &[]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(plan.stderr, warning);
    let text = plan.stdout();
    assert!(
        text.starts_with(
            "profile ci: image-overrides, each matched against the normalised reference\n  re:python$  kiln.toml:3:1\n    matches nothing: tried on docker.io/library/python:latest\n  re:^docker\\.io/library/(.+)$  kiln.toml:4:1\n    app from: docker.io/library/python:latest → mirror.local/python:latest\n"
        ),
        "{text}"
    );
    let json = json(&kiln_in(
        dir.path(),
        &["--profile", "ci", "plan", "--format", "json"],
        &[],
    ));
    assert_eq!(json["overrides"][0]["rule"], "re:python$");
    assert_eq!(json["overrides"][0]["matched"], 0);
    assert_eq!(
        json["overrides"][0]["missed"],
        serde_json::json!(["docker.io/library/python:latest"])
    );
    assert_eq!(json["overrides"][1]["matched"], 1);

    let check = kiln_in(dir.path(), &["--profile", "ci", "check"], &[]);
    assert_eq!(
        (check.code, check.stdout().as_str(), check.stderr.as_str()),
        (0, "ok: 1 target in 1 manifest\n", warning)
    );
    // build warns too (here before failing to reach a builder that does not exist).
    let build = kiln_in(
        dir.path(),
        &[
            "--profile",
            "ci",
            "build",
            "--builder",
            "unix:///nonexistent/buildkitd.sock",
        ],
        &[],
    );
    assert_eq!(build.code, 1, "{}", build.stderr);
    assert!(build.stderr.starts_with(warning), "{}", build.stderr);
    // Without the profile, no warning.
    let check = kiln_in(dir.path(), &["check"], &[]);
    assert_eq!((check.code, check.stderr.as_str()), (0, ""));
}

/// A pip target's lock is a pip-compile lock whatever it is named: `plan`, `sbom` and
/// `affected` read `locked.txt` as one (kiln once judged the format by the name
/// `requirements*.txt` and silently read nothing).
#[test]
fn a_pip_lock_with_any_name_is_read_as_a_pip_compile_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("kiln.toml"),
        "version = 1\n[target.p]\nfrom = \"debian:bookworm\"\npackages = { manager = \"pip\", files = \"deps.in\", lock = \"locked.txt\" }\n",
    )
    .unwrap();
    std::fs::write(d.join("deps.in"), "six\n").unwrap();
    std::fs::write(
        d.join("locked.txt"),
        "six==1.17.0 \\\n    --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274\n",
    )
    .unwrap();

    let doc = json(&kiln_in(d, &["plan", "--format", "json"], &[]));
    assert_eq!(
        doc["targets"][0]["packages"],
        serde_json::json!({ "locked.txt": { "six": "1.17.0" } })
    );

    let run = kiln_in(d, &["sbom", "p"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sbom: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let purls: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert_eq!(purls, ["pkg:pypi/six@1.17.0"], "{sbom}");

    let run = kiln_in(d, &["affected", "--package", "six==1.17.0"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout().starts_with("p"), "{}", run.stdout());

    // `deps.in` is read as pip-compile's input whatever its name: a package added there and
    // not locked is drift `check --locked` names (it read only `requirements*.in` before).
    std::fs::write(d.join("deps.in"), "six\nattrs\n").unwrap();
    let run = kiln_in(d, &["check", "--locked"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("deps.in declares attrs but locked.txt does not pin it"),
        "{}",
        run.stderr
    );
}
