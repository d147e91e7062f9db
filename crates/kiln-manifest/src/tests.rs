//! One test per error class, plus variable, profile and default resolution.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::*;

fn source(text: &str) -> Vec<Source> {
    vec![Source {
        path: PathBuf::from("dir/kiln.toml"),
        text: text.to_string(),
    }]
}

fn ok(text: &str) -> Manifest {
    load_with(text, LoadOptions::default()).unwrap_or_else(|d| panic!("{d}"))
}

fn load_with(text: &str, options: LoadOptions) -> Result<Manifest, Diagnostics> {
    load(&source(text), &options)
}

/// The diagnostics as `line:column key: message` lines.
fn errors(text: &str) -> Vec<String> {
    errors_with(text, LoadOptions::default())
}

fn errors_with(text: &str, options: LoadOptions) -> Vec<String> {
    let diags = load_with(text, options).expect_err("should fail");
    diags
        .0
        .iter()
        .map(|d| {
            assert_eq!(d.location.file, PathBuf::from("dir/kiln.toml"));
            let hint = d
                .hint
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            format!(
                "{}:{} {}: {}{hint}",
                d.location.line, d.location.column, d.key, d.message
            )
        })
        .collect()
}

const V: &str = "version = 1\n";

#[test]
fn a_full_target_resolves() {
    let m = ok(r#"version = 1
[defaults]
network = "host"
ca-certificates = "certs/ca.pem"
[target.base]
from = "python:3.11"
[target.app]
from = "target:base"
context = "../app"
run = ["echo hi"]
copy = [{ src = "src/", dest = "/app/src", chown = "1000:1000", chmod = 0o755 },
        { from = "target:base", src = "/etc/os-release", dest = "/x", chmod = "644" }]
image = "registry.example:5000/team/app:v1"
build-env = { PIP_INDEX_URL = "http://127.0.0.1/simple" }
platform = "linux/arm64/v8"
[target.app.packages]
manager = "pip"
[target.app.smoke-test]
copy = ["tests/"]
run = ["python -m pytest"]
[[target.app.artifacts]]
src = "model.tar.gz"
extract-to = "/opt/model"
[target.app.config]
entrypoint = ["python"]
cmd = []
env = { A = "1" }
workdir = "/srv"
user = "app"
ports = [5000, "53/udp"]
labels = { "org.opencontainers.image.title" = "app" }
[group.all]
targets = ["app", "base"]
"#);
    let app = &m.targets["app"];
    assert_eq!(app.from, Base::Target("base".into()));
    assert_eq!(app.context, PathBuf::from("dir/../app"));
    assert_eq!(app.manifest_dir, PathBuf::from("dir"));
    assert_eq!(app.copy[0].from, CopySource::Context);
    assert_eq!(app.copy[0].chmod, Some(0o755));
    assert_eq!(app.copy[0].chown.as_deref(), Some("1000:1000"));
    assert_eq!(
        (app.copy[0].location.line, app.copy[0].location.column),
        (11, 17)
    );
    assert_eq!(app.copy[1].from, CopySource::Target("base".into()));
    assert_eq!(app.copy[1].chmod, Some(0o644));
    assert_eq!(
        app.image.as_ref().unwrap().to_string(),
        "registry.example:5000/team/app:v1"
    );
    let p = app.packages.as_ref().unwrap();
    assert_eq!(
        (p.manager, p.files.as_slice(), p.lock.as_slice()),
        (
            Manager::Pip,
            &["requirements.in".to_string()][..],
            &["requirements.txt".to_string()][..]
        )
    );
    assert_eq!(p.dir, "/srv", "package dir defaults to the workdir");
    assert_eq!(app.config.ports, ["5000/tcp", "53/udp"]);
    assert_eq!(app.config.cmd, Some(vec![]));
    assert_eq!(app.network, NetworkMode::Host);
    assert_eq!(
        app.ca_certificates,
        CaCertificates::Path(PathBuf::from("dir/certs/ca.pem"))
    );
    assert_eq!(app.platform.to_string(), "linux/arm64/v8");
    assert_eq!(
        m.targets["base"].platform,
        kiln_reference::Platform::linux_amd64()
    );
    assert_eq!(m.targets["base"].context, PathBuf::from("dir"));
    assert_eq!(app.artifacts[0].extract_to, "/opt/model");
    assert_eq!(app.smoke_test.as_ref().unwrap().run, ["python -m pytest"]);
    assert_eq!(m.groups["all"].targets, ["app", "base"]);
    assert_eq!((app.location.line, app.location.column), (7, 9));
    match &m.targets["base"].from {
        Base::Image(r) => assert_eq!(r.to_string(), "docker.io/library/python:3.11"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn toml_syntax_errors_have_a_place() {
    let e = errors("version = 1\n[target.a\nfrom = 1\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("2:") && e[0].contains("invalid TOML"),
        "{e:?}"
    );
}

#[test]
fn version_is_required_and_must_be_one() {
    assert_eq!(
        errors("[target.a]\nfrom = \"debian\"\n"),
        ["1:1 version: missing required key `version`"]
    );
    assert_eq!(
        errors("version = 2\n"),
        ["1:11 version: unsupported manifest version 2"]
    );
    assert_eq!(
        errors("version = \"1\"\n"),
        ["1:11 version: expected an integer, found a string"]
    );
}

#[test]
fn unknown_keys_everywhere_get_suggestions() {
    let e = errors(&format!(
        "{V}verison = 1\n[defaults]\nnetwrok = \"host\"\n[target.a]\nfrom = \"debian\"\n[target.a.config]\nentrypiont = []\n[target.a.smoke-test]\nrun = [\"true\"]\ncopi = []\n"
    ));
    assert_eq!(
        e,
        [
            "2:1 verison: unknown key `verison` (did you mean `version`?)",
            "4:1 defaults.netwrok: unknown key `netwrok` (did you mean `network`?)",
            "8:1 target.a.config.entrypiont: unknown key `entrypiont` (did you mean `entrypoint`?)",
            "11:1 target.a.smoke-test.copi: unknown key `copi` (did you mean `copy`?)",
        ]
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let e = errors(&format!(
        "{V}[target.a]\nfrom = 3\nrun = [\"ok\", 4]\ncopy = \"x\"\n"
    ));
    assert_eq!(
        e,
        [
            "3:8 target.a.from: expected a string, found an integer",
            "4:14 target.a.run[1]: expected a string, found an integer",
            "5:8 target.a.copy: expected an array of tables, found a string",
        ]
    );
}

#[test]
fn bad_references_give_the_grammar_reason() {
    let e = errors(&format!(
        "{V}[target.a]\nfrom = \"debian:bad tag\"\nimage = \"registry/App:x\"\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("3:8 target.a.from: invalid image reference `debian:bad tag`"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("4:9 target.a.image: invalid image reference `registry/App:x`"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{V}[target.a]\nfrom = \"debian\"\nimage = \"target:b\"\n"
    ));
    assert!(e[0].contains("`target:` is not allowed here"), "{e:?}");
}

#[test]
fn unknown_and_self_target_references() {
    let e = errors(&format!(
        "{V}[target.worker]\nfrom = \"target:wrker\"\ncopy = [{{ from = \"target:nope\", src = \"/a\", dest = \"/b\" }}]\n[target.me]\nfrom = \"target:me\"\n[group.g]\ntargets = [\"worker\", \"wroker\"]\n"
    ));
    assert_eq!(
        e,
        [
            "3:8 target.worker.from: unknown target `wrker` (did you mean `worker`?)",
            "4:18 target.worker.copy[0].from: unknown target `nope`",
            "6:8 target.me.from: target `me` cannot depend on itself",
            "8:22 group.g.targets: unknown target `wroker` (did you mean `worker`?)",
        ]
    );
}

#[test]
fn names_and_missing_required_keys() {
    let e = errors(&format!(
        "{V}[target.Web]\nfrom = \"debian\"\n[target.ok]\nrun = []\n[group.ok]\ntargets = []\n"
    ));
    assert_eq!(
        e,
        [
            "2:9 target.Web: invalid target name `Web`",
            "4:9 target.ok.from: missing required key `from`",
            "6:8 group.ok: group `ok` has the name of the target at dir/kiln.toml:4:9",
        ]
    );
}

#[test]
fn copy_artifacts_packages_and_smoke_test_are_validated() {
    let e = errors(&format!(
        r#"{V}[target.a]
from = "debian"
copy = [{{ src = "../secret", dest = "/x" }}, {{ dest = "/y" }}, {{ src = "a", dest = "/z", chmod = 0o17777 }}]
artifacts = [{{ src = "m.tgz", extract-to = "relative" }}]
[target.a.packages]
manager = "pipx"
[target.b]
from = "debian"
[target.b.packages]
manager = "custom"
files = ["x"]
[target.b.smoke-test]
copy = ["/etc"]
run = []
"#
    ));
    assert_eq!(
        e,
        [
            "4:17 target.a.copy[0].src: `../secret` is outside the build context",
            "4:45 target.a.copy[1].src: missing required key `src`",
            "4:96 target.a.copy[2].chmod: mode 0o17777 is out of range",
            "5:44 target.a.artifacts[0].extract-to: `relative` is not an absolute path",
            "7:11 target.a.packages.manager: unknown package manager `pipx` (did you mean `pip`?)",
            "10:11 target.b.packages.install: missing required key `install` (the `custom` manager has no default)",
            "10:11 target.b.packages.lock: missing required key `lock` (the `custom` manager has no default)",
            "10:11 target.b.packages.refresh: missing required key `refresh` (the `custom` manager has no default)",
            "14:8 target.b.smoke-test.copy: `/etc` is outside the build context",
        ]
    );
}

#[test]
fn config_values_are_checked() {
    let e = errors(&format!(
        "{V}[target.a]\nfrom = \"debian\"\n[target.a.config]\nports = [0, \"80/xyz\", 70000]\nworkdir = \"app\"\nenv = {{ \"A=B\" = \"x\" }}\n"
    ));
    assert_eq!(
        e,
        [
            "5:10 target.a.config.ports[0]: port 0 is out of range",
            "5:13 target.a.config.ports[1]: invalid port `80/xyz`",
            "5:23 target.a.config.ports[2]: port 70000 is out of range",
            "6:11 target.a.config.workdir: `app` is not an absolute path",
            "7:7 target.a.config.env: invalid environment variable name `A=B`",
        ]
    );
}

#[test]
fn defaults_values_are_checked() {
    let e = errors(&format!(
        "{V}[defaults]\nnetwork = \"hots\"\nplatform = \"linux\"\n[target.a]\nfrom = \"debian\"\n"
    ));
    assert_eq!(
        e,
        [
            "3:11 defaults.network: unknown network mode `hots` (did you mean `host`?)",
            "4:12 defaults.platform: invalid platform `linux`",
        ]
    );
}

/// A target's lock files are read as its manager's format, whatever they are named; only a
/// `custom` target's are judged by name.
#[test]
fn lock_files_are_read_as_the_managers_format_whatever_their_name() {
    let m = ok(&format!(
        "{V}[target.p]\nfrom = \"debian\"\npackages = {{ manager = \"pip\", lock = \"locked.txt\" }}\n\
         [target.u]\nfrom = \"debian\"\npackages = {{ manager = \"uv\", lock = \"deps/uv.lock\" }}\n\
         [target.c]\nfrom = \"debian\"\npackages = {{ manager = \"custom\", files = [\"x.in\"], lock = [\"requirements-dev.txt\", \"x.lock\"], refresh = \"r\", install = \"i\" }}\n"
    ));
    let packages = |t: &str| m.targets[t].packages.clone().unwrap();
    assert_eq!(
        packages("p").lock_format("locked.txt"),
        Some(LockFormat::Requirements)
    );
    assert_eq!(
        packages("u").lock_format("deps/uv.lock"),
        Some(LockFormat::UvLock)
    );
    let c = packages("c");
    assert_eq!(
        c.lock_format("requirements-dev.txt"),
        Some(LockFormat::Requirements)
    );
    assert_eq!(c.lock_format("x.lock"), None);
}

#[test]
fn the_manager_table_names_each_manager_once_and_guesses_formats_from_default_names() {
    for m in MANAGERS {
        assert_eq!(Manager::from_name(m.name), Some(m.manager));
        assert_eq!(m.manager.spec(), m);
        assert_eq!(m.manager.as_str(), m.name);
        // Defaults and commands come together: a manager without defaults is all manifest.
        assert_eq!(m.files.is_empty(), m.refresh.is_none(), "{}", m.name);
        assert_eq!(m.lock.is_empty(), m.install.is_none(), "{}", m.name);
        if let Some(format) = m.lock_format {
            assert_eq!(LockFormat::for_file(format.file_name()), Some(format));
        }
    }
    assert_eq!(Manager::from_name("pipx"), None);
    assert!(Manager::Pip.spec().one_lock() && !Manager::Uv.spec().one_lock());
    assert_eq!(
        LockFormat::for_file("app/uv.lock"),
        Some(LockFormat::UvLock)
    );
    assert_eq!(
        LockFormat::for_file("requirements-dev.txt"),
        Some(LockFormat::Requirements)
    );
    assert_eq!(
        LockFormat::for_file("poetry.lock"),
        Some(LockFormat::PoetryLock)
    );
    assert_eq!(
        LockFormat::for_file("package-lock.json"),
        Some(LockFormat::PackageLockJson)
    );
    assert_eq!(LockFormat::for_file("requirements.in"), None);
}

#[test]
fn pip_takes_one_lock_unless_its_commands_are_the_targets_own() {
    let e = errors(&format!(
        "{V}[target.a]\nfrom = \"debian\"\npackages = {{ manager = \"pip\", lock = [\"a.txt\", \"b.txt\"] }}\n"
    ));
    assert_eq!(
        e,
        ["4:38 target.a.packages.lock: pip locks into one file, not 2"]
    );
    let own = "refresh = \"r\", install = \"i\"";
    let m = load_with(
        &format!("{V}[target.a]\nfrom = \"debian\"\npackages = {{ manager = \"pip\", lock = [\"a.txt\", \"b.txt\"], {own} }}\n"),
        LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        m.targets["a"].packages.as_ref().unwrap().lock,
        ["a.txt", "b.txt"]
    );
}

#[test]
fn a_target_platform_is_parsed_once_with_its_place() {
    let e = errors(&format!(
        "{V}[target.a]\nfrom = \"debian\"\nplatform = \"Linux/amd64\"\n"
    ));
    assert_eq!(
        e,
        ["4:12 target.a.platform: invalid platform `Linux/amd64`"]
    );
    let m = load_with(
        &format!("{V}[target.a]\nfrom = \"debian\"\nplatform = \"linux/arm/v7\"\n"),
        LoadOptions::default(),
    )
    .unwrap();
    let p = &m.targets["a"].platform;
    assert_eq!(
        (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
        ("linux", "arm", Some("v7"))
    );
}

#[test]
fn duplicate_targets_across_files_name_both_places() {
    let a = Source {
        path: "a.toml".into(),
        text: format!("{V}[target.x]\nfrom = \"debian\"\n"),
    };
    let b = Source {
        path: "b.toml".into(),
        text: format!("{V}\n[target.x]\nfrom = \"debian\"\n"),
    };
    let d = load(&[a, b], &LoadOptions::default()).unwrap_err();
    assert_eq!(d.0.len(), 1);
    assert_eq!(
        d.0[0].to_string(),
        "b.toml:3:9: `target.x`: target `x` is declared twice; first at a.toml:2:9\n  expected: target names unique across all manifests"
    );
}

fn options(profile: Option<&str>, set: &[(&str, &str)], env: &[(&str, &str)]) -> LoadOptions {
    let map = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    LoadOptions {
        profile: profile.map(str::to_string),
        set: map(set),
        env: map(env),
    }
}

const VARS: &str = r#"version = 1
[vars]
TAG = { default = "dev", env = "CI_TAG" }
REG = "127.0.0.1:5000"
NOVAL = { env = "NOT_SET" }
[profiles.prod.vars]
TAG = "release"
[target.a]
from = "debian"
image = "${REG}/a:${TAG}"
run = ["echo $HOME $$ $${TAG}"]
"#;

#[test]
fn variables_resolve_set_then_env_then_profile_then_default() {
    let image = |o: LoadOptions| {
        load_with(VARS, o).unwrap().targets["a"]
            .image
            .as_ref()
            .unwrap()
            .to_string()
    };
    assert_eq!(image(options(None, &[], &[])), "127.0.0.1:5000/a:dev");
    assert_eq!(
        image(options(Some("prod"), &[], &[])),
        "127.0.0.1:5000/a:release"
    );
    assert_eq!(
        image(options(Some("prod"), &[], &[("CI_TAG", "ci")])),
        "127.0.0.1:5000/a:ci"
    );
    assert_eq!(
        image(options(
            Some("prod"),
            &[("TAG", "set")],
            &[("CI_TAG", "ci")]
        )),
        "127.0.0.1:5000/a:set"
    );
    let m = load_with(VARS, LoadOptions::default()).unwrap();
    assert_eq!(m.targets["a"].run, ["echo $HOME $ ${TAG}"]);
    assert_eq!(m.vars.get("NOVAL"), None);
    assert_eq!(m.vars["REG"], "127.0.0.1:5000");
}

#[test]
fn variable_errors() {
    let text = VARS.replace("/a:${TAG}", "/a:${TGA}-${NOVAL}");
    assert_eq!(
        errors(&text),
        [
            "10:9 target.a.image: undeclared variable `TGA` (did you mean `TAG`? (write `$${TGA}` to keep it literal))",
            "10:9 target.a.image: variable `NOVAL` has no value (set the environment variable `NOT_SET` or pass `--set NOVAL=…`)",
        ]
    );
    // An undeclared `--set` is the command line's problem, not a place in a file.
    let e = load_with(VARS, options(None, &[("TAGG", "x")], &[])).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].location, Location::command_line("--set TAGG"));
    assert_eq!(
        e.to_string(),
        "error: --set TAGG: no variable `TAGG` is declared under [vars] in dir/kiln.toml\n  expected: one of `NOVAL`, `REG` or `TAG`\n  hint: did you mean `TAG`?"
    );
}

const PROFILES: &str = r#"version = 1
[vars]
REG = "127.0.0.1:5000"
[profiles.offline.image-overrides]
"re:^docker\\.io/library/(.+)$" = "${REG}/mirror/$1"
"python:3.11" = "${REG}/exact/python:3.11"
[profiles.offline]
labels = { env = "offline" }
[target.py]
from = "python:3.11"
image = "docker.io/library/py:1"
copy = [{ from = "docker.io/library/busybox:1", src = "/bin/sh", dest = "/sh" }]
[target.other]
from = "quay.io/x/y:1"
"#;

#[test]
fn profiles_rewrite_exact_before_regex_and_record_it() {
    let m = load_with(PROFILES, options(Some("offline"), &[], &[])).unwrap();
    let py = &m.targets["py"];
    assert_eq!(
        py.from,
        Base::Image(kiln_reference::Reference::parse("127.0.0.1:5000/exact/python:3.11").unwrap())
    );
    assert_eq!(
        py.copy[0].from,
        CopySource::Image(
            kiln_reference::Reference::parse("127.0.0.1:5000/mirror/busybox:1").unwrap()
        )
    );
    assert_eq!(
        py.image.as_ref().unwrap().to_string(),
        "127.0.0.1:5000/mirror/py:1"
    );
    assert_eq!(py.config.labels["env"], "offline");
    let fields: Vec<(&str, &str, &str)> = m
        .rewrites
        .iter()
        .map(|r| (r.field.as_str(), r.old.as_str(), r.rule.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("from", "docker.io/library/python:3.11", "python:3.11"),
            (
                "copy[0].from",
                "docker.io/library/busybox:1",
                "re:^docker\\.io/library/(.+)$"
            ),
            (
                "image",
                "docker.io/library/py:1",
                "re:^docker\\.io/library/(.+)$"
            ),
        ]
    );
    assert_eq!(m.profile.as_deref(), Some("offline"));
    // Without the profile nothing changes.
    let plain = load_with(PROFILES, LoadOptions::default()).unwrap();
    assert!(plain.rewrites.is_empty());
    assert!(plain.targets["py"].config.labels.is_empty());
}

#[test]
fn an_override_rule_that_rewrites_nothing_is_a_warning_naming_what_it_was_tried_on() {
    // `re:y$` is written against the reference as typed; it is matched normalised
    // (`quay.io/x/y:1`), so it matches nothing.
    let text = PROFILES.replace(
        "[profiles.offline]\n",
        "\"re:y$\" = \"${REG}/y\"\n\"debian\" = \"${REG}/debian\"\n[profiles.offline]\n",
    );
    let m = load_with(&text, options(Some("offline"), &[], &[])).unwrap();
    let rules: Vec<(&str, usize, Vec<&str>)> = m
        .overrides
        .iter()
        .map(|r| {
            (
                r.rule.as_str(),
                r.matched,
                r.missed.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            (
                "python:3.11",
                1,
                vec![
                    "docker.io/library/busybox:1",
                    "docker.io/library/py:1",
                    "quay.io/x/y:1"
                ]
            ),
            (
                "debian",
                0,
                vec![
                    "docker.io/library/busybox:1",
                    "docker.io/library/py:1",
                    "quay.io/x/y:1"
                ]
            ),
            ("re:^docker\\.io/library/(.+)$", 2, vec!["quay.io/x/y:1"]),
            ("re:y$", 0, vec!["quay.io/x/y:1"]),
        ]
    );
    assert_eq!(
        m.overrides[1].normalised.as_deref(),
        Some("docker.io/library/debian:latest")
    );
    let warnings: Vec<String> = m.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "dir/kiln.toml:8:1: `profiles.offline.image-overrides.debian`: profile `offline`: this override rewrites no image reference of any target\n  hint: rules match the normalised reference (`debian` normalised is `docker.io/library/debian:latest`); it was tried on `docker.io/library/busybox:1`, `docker.io/library/py:1`, `quay.io/x/y:1`",
            "dir/kiln.toml:7:1: `profiles.offline.image-overrides.\"re:y$\"`: profile `offline`: this override rewrites no image reference of any target\n  hint: rules match the normalised reference; it was tried on `quay.io/x/y:1`",
        ]
    );
    // Without the profile there is nothing to warn about.
    assert!(
        load_with(&text, LoadOptions::default())
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn profile_errors() {
    let e = errors_with(PROFILES, options(Some("ofline"), &[], &[]));
    assert_eq!(
        e,
        [
            "1:1 profiles.ofline: unknown profile `ofline` (from --profile) (did you mean `offline`?)"
        ]
    );
    let bad = PROFILES
        .replace("(.+)$\"", "(.+$\"")
        .replace("\"python:3.11\" =", "\"Python\" =");
    let e = errors(&bad);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("5:1 profiles.offline.image-overrides.\"re:^docker"),
        "{e:?}"
    );
    assert!(e[0].contains("invalid regular expression"), "{e:?}");
    assert!(
        e[1].starts_with("6:1 profiles.offline.image-overrides.Python: invalid image reference"),
        "{e:?}"
    );
    let broken = PROFILES.replace("${REG}/mirror/$1", "BAD REF $1");
    let e = errors_with(&broken, options(Some("offline"), &[], &[]));
    assert!(
        e.iter()
            .all(|l| l.starts_with("5:35 profiles.offline.image-overrides")),
        "{e:?}"
    );
    assert!(e[0].contains("into an invalid reference"), "{e:?}");
}

#[test]
fn loading_is_deterministic() {
    let a = format!("{:?}", ok(VARS));
    let b = format!("{:?}", ok(VARS));
    assert_eq!(a, b);
}

#[test]
fn secrets_come_from_an_env_var_or_a_file_next_to_the_manifest() {
    let m = ok(&format!(
        r#"{V}[vars]
TOKEN_VAR = "CI_TOKEN"
[target.a]
from = "debian"
[target.a.secrets]
token = {{ env = "${{TOKEN_VAR}}" }}
"pip.conf" = {{ file = "secrets/pip.conf" }}
netrc = {{ file = "/home/u/.netrc" }}
[target.b]
from = "debian"
"#
    ));
    let a = &m.targets["a"].secrets;
    assert_eq!(a.len(), 3);
    assert_eq!(a["token"].source, SecretSource::Env("CI_TOKEN".into()));
    assert_eq!(
        a["pip.conf"].source,
        SecretSource::File(PathBuf::from("dir/secrets/pip.conf"))
    );
    assert_eq!(
        a["netrc"].source,
        SecretSource::File(PathBuf::from("/home/u/.netrc"))
    );
    assert_eq!(a["token"].name, "token");
    assert_eq!(
        (a["token"].location.line, a["token"].location.column),
        (7, 1)
    );
    assert!(m.targets["b"].secrets.is_empty());
}

#[test]
fn secret_names_and_shapes_are_checked() {
    let e = errors(&format!(
        r#"{V}[target.a]
from = "debian"
[target.a.secrets]
".hidden" = {{ env = "A" }}
"a/b" = {{ env = "A" }}
both = {{ env = "A", file = "f" }}
neither = {{}}
typo = {{ evn = "A" }}
plain = "A"
bad-env = {{ env = "A=B" }}
empty = {{ file = "" }}
number = {{ file = 3 }}
[target.b]
from = "debian"
secrets = ["x"]
[target.c]
from = "debian"
secret = {{ x = {{ env = "A" }} }}
"#
    ));
    assert_eq!(
        e,
        [
            "5:1 target.a.secrets.\".hidden\": invalid secret name `.hidden`",
            "6:1 target.a.secrets.\"a/b\": invalid secret name `a/b`",
            "7:28 target.a.secrets.both: a secret comes from `env` or from `file`, not both",
            "8:11 target.a.secrets.neither: missing `env` or `file`: where the secret's value comes from",
            "9:8 target.a.secrets.typo: missing `env` or `file`: where the secret's value comes from",
            "9:10 target.a.secrets.typo.evn: unknown key `evn` (did you mean `env`?)",
            "10:9 target.a.secrets.plain: expected a table `{ env = \"VAR\" }` or `{ file = \"path\" }`, found a string",
            "11:19 target.a.secrets.bad-env.env: invalid environment variable name `A=B`",
            "12:18 target.a.secrets.empty.file: empty path",
            "13:19 target.a.secrets.number.file: expected a string, found an integer",
            "16:11 target.b.secrets: expected a table, found an array",
            "19:1 target.c.secret: unknown key `secret` (did you mean `secrets`?)",
        ]
    );
}

#[test]
fn packages_activate_is_a_boolean_or_a_directory() {
    let m = ok(&format!(
        "{V}[target.a]\nfrom = \"debian\"\npackages = {{ manager = \"uv\" }}\n[target.b]\nfrom = \"debian\"\npackages = {{ manager = \"pip\", activate = false }}\n[target.c]\nfrom = \"debian\"\npackages = {{ manager = \"npm\", activate = \"/opt/env\" }}\n[target.d]\nfrom = \"debian\"\npackages = {{ manager = \"uv\", activate = true }}\n"
    ));
    let activate = |t: &str| m.targets[t].packages.as_ref().unwrap().activate.clone();
    assert_eq!(activate("a"), Activate::Manager);
    assert_eq!(activate("b"), Activate::Off);
    assert_eq!(activate("c"), Activate::Dir("/opt/env".into()));
    assert_eq!(activate("d"), Activate::Manager);

    let e = errors(&format!(
        "{V}[target.a]\nfrom = \"debian\"\n[target.a.packages]\nmanager = \"uv\"\nactivate = 1\n[target.b]\nfrom = \"debian\"\n[target.b.packages]\nmanager = \"uv\"\nactivate = \"./\"\n[target.c]\nfrom = \"debian\"\n[target.c.packages]\nmanager = \"uv\"\nactivte = false\n"
    ));
    assert_eq!(
        e,
        [
            "6:12 target.a.packages.activate: expected a boolean, or the environment's directory (absolute, or relative to `dir`), found an integer",
            "11:12 target.b.packages.activate: `./` names no environment directory",
            "16:1 target.c.packages.activte: unknown key `activte` (did you mean `activate`?)",
        ]
    );
}

#[test]
fn env_tables_keep_inherited_references_and_explain_an_undeclared_one() {
    let m = ok(&format!(
        "{V}[vars]\nTAG = \"v1\"\n[target.a]\nfrom = \"debian\"\nbuild-env = {{ P = \"/b:$PATH\", Q = \"$${{PATH}}\", T = \"${{TAG}}\" }}\nconfig = {{ env = {{ PATH = \"/x/bin:$PATH\", R = \"$$HOME\" }} }}\n"
    ));
    let a = &m.targets["a"];
    assert_eq!(a.build_env["P"], "/b:$PATH");
    assert_eq!(a.build_env["Q"], "${PATH}");
    assert_eq!(a.build_env["T"], "v1");
    assert_eq!(a.config.env["PATH"], "/x/bin:$PATH");
    assert_eq!(a.config.env["R"], "$HOME");

    let e = errors(&format!(
        "{V}[vars]\nPATHS = \"x\"\n[target.a]\nfrom = \"debian\"\nbuild-env = {{ P = \"${{HOME}}/bin\" }}\nconfig = {{ env = {{ PATH = \"/x:${{PATH}}\" }}, labels = {{ l = \"${{HOME}}\" }} }}\n"
    ));
    assert_eq!(
        e,
        [
            "6:19 target.a.build-env.P: undeclared variable `HOME` (write `$HOME` (or `$${HOME}`) to use the inherited environment)",
            "7:27 target.a.config.env.PATH: undeclared variable `PATH` (did you mean the variable `PATHS`? Write `$PATH` (or `$${PATH}`) to use the inherited environment)",
            "7:58 target.a.config.labels.l: undeclared variable `HOME` (declare it under [vars], or write `$${HOME}` to keep it literal)",
        ]
    );
}

#[test]
fn defaults_cache_is_a_repository_for_every_target_of_its_file() {
    let m = ok(&format!(
        "{V}[defaults]\ncache = \"127.0.0.1:5000/team/cache\"\n[target.a]\nfrom = \"debian\"\n"
    ));
    let cache = m.targets["a"].cache.as_ref().expect("a cache");
    assert_eq!(cache.name(), "127.0.0.1:5000/team/cache");
    assert_eq!(
        ok(&format!("{V}[target.a]\nfrom = \"debian\"\n")).targets["a"].cache,
        None
    );
    let e = errors(&format!(
        "{V}[defaults]\ncache = \"reg.example/cache:v1\"\n[target.a]\nfrom = \"debian\"\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("3:9 defaults.cache: `reg.example/cache:v1` has a tag or digest"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{V}[defaults]\ncache = \"Bad Ref\"\n[target.a]\nfrom = \"debian\"\n"
    ));
    assert!(
        e[0].starts_with("3:9 defaults.cache: invalid image reference"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{V}[defaults]\ncache = 3\n[target.a]\nfrom = \"debian\"\n"
    ));
    assert!(e[0].starts_with("3:9 defaults.cache:"), "{e:?}");
}
