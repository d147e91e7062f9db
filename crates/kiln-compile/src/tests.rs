//! Lowering tests: manifests in, decoded LLB out.

use super::*;
use kiln_llb::pb;
use kiln_manifest::{LoadOptions, Source, load};

fn compile_text(text: &str, mode: PackagesMode) -> Vec<CompiledTarget> {
    let source = Source {
        path: "kiln.toml".into(),
        text: format!("version = 1\n{text}"),
    };
    let manifest = load(&[source], &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let graph = Graph::build(&manifest, mode).unwrap();
    let targets = graph.select(&manifest, &[]).unwrap();
    compile(&manifest, &graph, &targets, &BaseConfigs::new(), None).unwrap()
}

fn execs(state: &State) -> Vec<(pb::ExecOp, pb::OpMetadata)> {
    let def = kiln_llb::marshal(state).unwrap();
    def.ops()
        .unwrap()
        .into_iter()
        .filter_map(|(digest, op)| match op.op {
            Some(pb::op::Op::Exec(e)) => Some((
                e,
                def.metadata
                    .get(digest.as_str())
                    .cloned()
                    .unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

fn last_arg(e: &pb::ExecOp) -> &str {
    e.meta.as_ref().unwrap().args.last().unwrap()
}

const APP: &str = r#"
[target.app]
from = "python:3.11-slim-bookworm"
run = ["echo pre"]
ca-certificates = "host"
network = "host"
build-env = { UV_INDEX_URL = "http://127.0.0.1:8080/simple" }
packages = { manager = "uv" }
smoke-test = { run = ["python -c 'import app'"], copy = ["tests/"] }
copy = [{ src = "src/", dest = "/app/src" }]
config = { workdir = "/app", env = { A = "1" }, user = "1000" }
"#;

#[test]
fn refresh_really_resolves_and_pinned_installs_strictly() {
    let refresh = compile_text(APP, PackagesMode::Refresh);
    let state = refresh[0].stage(StageKind::PackagesRefresh).unwrap();
    let steps = execs(state);
    let (exec, meta) = steps
        .iter()
        .find(|(e, _)| last_arg(e).starts_with("uv lock --upgrade"))
        .expect("refresh exec");
    assert!(
        meta.ignore_cache,
        "a refresh must not replay a cached layer"
    );
    assert_eq!(exec.meta.as_ref().unwrap().cwd, "/app");
    assert!(
        exec.mounts
            .iter()
            .any(|m| m.mount_type == pb::MountType::Cache as i32 && m.dest == "/root/.cache/uv")
    );

    let pinned = compile_text(APP, PackagesMode::Pinned);
    let state = pinned[0].stage(StageKind::PackagesPinned).unwrap();
    let steps = execs(state);
    let (_, meta) = steps
        .iter()
        .find(|(e, _)| last_arg(e) == "uv sync --locked --no-dev")
        .expect("install exec");
    assert!(!meta.ignore_cache);
}

#[test]
fn run_steps_get_build_env_ca_bundle_and_network_but_the_image_does_not() {
    let t = &compile_text(APP, PackagesMode::Pinned)[0];
    let execs = execs(t.stage(StageKind::Pre).unwrap());
    let (pre, _) = execs
        .iter()
        .find(|(e, _)| last_arg(e) == "echo pre")
        .unwrap();
    let meta = pre.meta.as_ref().unwrap();
    assert_eq!(pre.network, pb::NetMode::Host as i32);
    for var in CA_BUNDLE_ENV {
        assert!(
            meta.env.contains(&format!("{var}={CA_BUNDLE_PATH}")),
            "{var}: {:?}",
            meta.env
        );
    }
    assert!(
        meta.env
            .contains(&"UV_INDEX_URL=http://127.0.0.1:8080/simple".to_string())
    );
    assert!(
        meta.env.contains(&"A=1".to_string()),
        "config env applies to RUN: {:?}",
        meta.env
    );
    let secret = pre
        .mounts
        .iter()
        .find(|m| m.mount_type == pb::MountType::Secret as i32)
        .expect("secret mount");
    assert_eq!(secret.dest, CA_BUNDLE_PATH);
    // The image config carries config env (and the packages' environment) only.
    assert_eq!(
        t.config.to_json(),
        format!(
            r#"{{"Env":["A=1","VIRTUAL_ENV=/app/.venv","PATH=/app/.venv/bin:{}"],"WorkingDir":"/app","User":"1000"}}"#,
            kiln_llb::DEFAULT_PATH
        )
    );
}

#[test]
fn smoke_test_runs_as_the_image_user_in_its_workdir() {
    let t = &compile_text(APP, PackagesMode::Pinned)[0];
    let execs = execs(t.stage(StageKind::SmokeTest).unwrap());
    let (smoke, _) = execs
        .iter()
        .find(|(e, _)| last_arg(e) == "python -c 'import app'")
        .unwrap();
    let meta = smoke.meta.as_ref().unwrap();
    assert_eq!((meta.user.as_str(), meta.cwd.as_str()), ("1000", "/app"));
    // Installs and pre steps run as root.
    let (pre, _) = execs
        .iter()
        .find(|(e, _)| last_arg(e) == "echo pre")
        .unwrap();
    assert_eq!(pre.meta.as_ref().unwrap().user, "");
}

#[test]
fn editing_tests_does_not_touch_the_package_stage() {
    // The package stage reads only package files from the context; its digest must not
    // depend on smoke-test or copy settings.
    let a = compile_text(APP, PackagesMode::Pinned);
    let b = compile_text(
        &APP.replace("copy = [\"tests/\"]", "copy = [\"other-tests/\"]"),
        PackagesMode::Pinned,
    );
    let digest = |t: &CompiledTarget, k| {
        kiln_llb::marshal(t.stage(k).unwrap())
            .unwrap()
            .terminal_digest()
    };
    assert_eq!(
        digest(&a[0], StageKind::PackagesPinned),
        digest(&b[0], StageKind::PackagesPinned)
    );
    assert_ne!(
        digest(&a[0], StageKind::SmokeTest),
        digest(&b[0], StageKind::SmokeTest)
    );
}

#[test]
fn from_target_inherits_config_and_filesystem() {
    let targets = compile_text(
        r#"
[target.base]
from = "debian:bookworm"
run = ["echo base"]
config = { workdir = "/srv", env = { X = "1" }, entrypoint = ["/bin/base"], cmd = ["--help"] }
[target.child]
from = "target:base"
config = { entrypoint = ["/bin/child"], env = { Y = "2" } }
"#,
        PackagesMode::Pinned,
    );
    let child = targets.iter().find(|t| t.name == "child").unwrap();
    assert_eq!(
        child.config.entrypoint.as_deref(),
        Some(&["/bin/child".to_string()][..])
    );
    assert_eq!(
        child.config.cmd, None,
        "a new entrypoint clears the inherited cmd"
    );
    assert_eq!(child.config.workdir.as_deref(), Some("/srv"));
    assert_eq!(child.config.env.len(), 2);
    let base_image = kiln_llb::marshal(targets[0].stage(StageKind::Image).unwrap()).unwrap();
    let child_def = kiln_llb::marshal(child.stage(StageKind::Pre).unwrap()).unwrap();
    let child_ops: Vec<_> = child_def
        .ops()
        .unwrap()
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let base_head = &base_image.ops().unwrap()[base_image.def.len() - 2].0;
    assert!(
        child_ops.contains(base_head),
        "child builds on base's image"
    );
}

#[test]
fn managers_are_data() {
    let install = |m: Manager| m.spec().install.unwrap_or_default();
    for m in [Manager::Uv, Manager::Pip, Manager::Poetry, Manager::Npm] {
        let s = m.spec();
        assert_eq!(s.manager, m);
        assert!(s.refresh.is_some_and(|c| !c.is_empty()) && !install(m).is_empty());
        assert!(!s.setup.is_empty());
    }
    assert!(install(Manager::Pip).contains("--require-hashes"));
    assert!(install(Manager::Npm).starts_with("npm ci"));
    assert!(install(Manager::Uv).contains("--locked"));
}

use kiln_manifest::Manager;

/// The commands a pip target runs, pinned and refreshing.
fn pip_commands(packages: &str) -> (String, String) {
    let text = format!("[target.p]\nfrom = \"debian\"\npackages = {packages}\n");
    let pinned = &compile_text(&text, PackagesMode::Pinned)[0];
    let refresh = &compile_text(&text, PackagesMode::Refresh)[0];
    let last = |state: &State| {
        let all = execs(state);
        let (e, _) = all.last().unwrap();
        last_arg(e).to_string()
    };
    (
        last(pinned.stage(StageKind::PackagesPinned).unwrap()),
        last(refresh.stage(StageKind::PackagesRefresh).unwrap()),
    )
}

#[test]
fn pip_commands_name_the_configured_files_and_lock() {
    const PIP: &str =
        "/opt/venv/bin/pip install --disable-pip-version-check --require-hashes --no-deps -r";
    const COMPILE: &str = "/opt/kiln/pip-tools/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --output-file";
    // The defaults are the commands kiln always ran (their digests are in snapshots).
    let (install, refresh) = pip_commands("{ manager = \"pip\" }");
    assert_eq!(install, format!("{PIP} requirements.txt"));
    assert_eq!(
        refresh,
        format!("{COMPILE} requirements.txt requirements.in && {PIP} requirements.txt")
    );

    let (install, refresh) = pip_commands(
        "{ manager = \"pip\", files = [\"reqs/base.in\", \"dev extras.in\", \"-x.in\"], lock = \"locks/py{lock}'s.txt\" }",
    );
    let lock = "'locks/py{lock}'\\''s.txt'";
    assert_eq!(install, format!("{PIP} {lock}"));
    assert_eq!(
        refresh,
        format!("{COMPILE} {lock} reqs/base.in 'dev extras.in' ./-x.in && {PIP} {lock}")
    );

    // A target's own commands win over the templates.
    let (install, refresh) = pip_commands(
        "{ manager = \"pip\", lock = [\"a.txt\"], install = \"i {lock}\", refresh = \"r\" }",
    );
    assert_eq!((install.as_str(), refresh.as_str()), ("i {lock}", "r"));
}

#[test]
fn base_image_config_round_trips_through_oci_json() {
    let json = br#"{"architecture":"amd64","os":"linux","config":{
        "Env":["PATH=/usr/local/bin:/usr/bin","LANG=C.UTF-8"],"Cmd":["python3"],
        "WorkingDir":"","User":"app","ExposedPorts":{"8080/tcp":{}},"Labels":{"a":"b"}},
        "rootfs":{"type":"layers","diff_ids":[]}}"#;
    let base = EffectiveConfig::from_image_config(json).unwrap();
    assert_eq!(
        base.env,
        vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string())
        ]
    );
    assert_eq!(base.cmd, Some(vec!["python3".to_string()]));
    assert_eq!(base.workdir, None, "an empty WorkingDir is no workdir");
    assert_eq!(base.user.as_deref(), Some("app"));
    assert_eq!(base.exposed_ports, vec!["8080/tcp".to_string()]);

    let out = base.image_config(&kiln_reference::Platform::linux_amd64());
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["architecture"], "amd64");
    assert_eq!(value["os"], "linux");
    assert_eq!(value["config"]["Env"][1], "LANG=C.UTF-8");
    assert_eq!(
        value["config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );
    assert_eq!(EffectiveConfig::from_image_config(&out).unwrap(), base);
    assert!(EffectiveConfig::from_image_config(b"not json").is_err());
}

#[test]
fn the_whole_context_is_every_file_however_it_is_spelled() {
    for spelling in [".", "./", "", "./."] {
        assert_eq!(include_pattern(spelling), "**", "{spelling:?}");
    }
    assert_eq!(include_pattern("./src/"), "src");
}

#[test]
fn a_backslash_in_a_path_is_a_character_not_an_escape() {
    // The include pattern escapes it (patterns read `\` as an escape) ...
    assert_eq!(include_pattern("a\\b.txt"), "a\\\\b.txt");
    assert_eq!(include_pattern("dir\\x/*.txt"), "dir\\\\x/*.txt");
    // ... and the copy source only where BuildKit reads a pattern: a wildcard component.
    assert_eq!(copy_src("a\\b.txt"), "a\\b.txt");
    assert_eq!(copy_src("dir\\x/a\\*.txt"), "dir\\x/a\\\\*.txt");
    assert!(has_wildcard("*") && has_wildcard("a/[ab]") && !has_wildcard("a\\b"));
}

#[test]
fn a_lock_wildcard_matches_only_that_file() {
    assert_eq!(wildcard_of("uv.lock"), "uv.loc[k]");
    assert_eq!(
        wildcard_of("sub/requirements.txt"),
        "sub/requirements.tx[t]"
    );
}

#[test]
fn every_run_step_mounts_the_targets_own_secrets_and_ca_bundle() {
    let text = r#"
[target.a]
from = "debian"
run = ["echo pre"]
ca-certificates = "host"
packages = { manager = "uv" }
smoke-test = { run = ["echo smoke"] }
[target.a.secrets]
token = { env = "A_TOKEN" }
"pip.conf" = { file = "pip.conf" }
[target.b]
from = "target:a"
run = ["echo b"]
ca-certificates = "bundle.pem"
secrets = { token = { env = "B_TOKEN" } }
"#;
    for mode in [PackagesMode::Pinned, PackagesMode::Refresh] {
        let compiled = compile_text(text, mode);
        for t in &compiled {
            let mut expected: Vec<(String, String)> = match t.name.as_str() {
                "a" => vec![
                    ("/run/secrets/pip.conf".into(), secret_id("a", "pip.conf")),
                    ("/run/secrets/token".into(), secret_id("a", "token")),
                ],
                _ => vec![("/run/secrets/token".into(), secret_id("b", "token"))],
            };
            let ca = match t.name.as_str() {
                "a" => CaCertificates::Host,
                _ => CaCertificates::Path("bundle.pem".into()),
            };
            expected.push((
                CA_BUNDLE_PATH.into(),
                ca_bundle_secret(&t.name, &ca).unwrap(),
            ));
            expected.sort();
            let last = t
                .stage(StageKind::SmokeTest)
                .or(t.stage(StageKind::Post))
                .unwrap();
            let steps = execs(last);
            // `b` rests on `a`'s image: only its own step is `b`'s.
            let own: Vec<_> = steps
                .iter()
                .filter(|(_, m)| {
                    m.description
                        .get("llb.customname")
                        .is_some_and(|n| n.starts_with(&format!("[{}/", t.name)))
                })
                .collect();
            let want = if t.name == "a" { 4 } else { 1 };
            assert_eq!(own.len(), want, "{}: pre, setup, install, smoke", t.name);
            for (exec, meta) in own {
                let mut secrets: Vec<(String, String)> = exec
                    .mounts
                    .iter()
                    .filter(|m| m.mount_type == pb::MountType::Secret as i32)
                    .map(|m| {
                        let opt = m.secret_opt.as_ref().unwrap();
                        assert_eq!(opt.mode, 0o444);
                        assert!(!opt.optional);
                        (m.dest.clone(), opt.id.clone())
                    })
                    .collect();
                secrets.sort();
                assert_eq!(secrets, expected, "{:?}", meta.description);
            }
        }
    }
    assert_ne!(secret_id("a", "token"), secret_id("b", "token"));
    // The host's bundle is one for all; a bundle file is its target's own.
    let file = CaCertificates::Path("ca.pem".into());
    assert_eq!(
        ca_bundle_secret("a", &CaCertificates::Host),
        ca_bundle_secret("b", &CaCertificates::Host)
    );
    assert_ne!(ca_bundle_secret("a", &file), ca_bundle_secret("b", &file));
    assert_ne!(
        ca_bundle_secret("a", &file),
        ca_bundle_secret("a", &CaCertificates::Host)
    );
    assert_eq!(ca_bundle_secret("a", &CaCertificates::None), None);
    // Dots are allowed in both names: the separator keeps ids apart.
    assert_ne!(secret_id("a.b", "c"), secret_id("a", "b.c"));
}

fn env_of(e: &pb::ExecOp) -> Vec<String> {
    e.meta.as_ref().unwrap().env.clone()
}

/// The value of `key` in a `KEY=VALUE` list.
fn var<'e>(env: &'e [String], key: &str) -> Option<&'e str> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The exec whose command is `cmd`, in the LLB of `state`.
fn exec_of(state: &State, cmd: &str) -> pb::ExecOp {
    execs(state)
        .into_iter()
        .map(|(e, _)| e)
        .find(|e| last_arg(e) == cmd)
        .unwrap_or_else(|| panic!("no exec `{cmd}`"))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn expansion_is_dockerfile_env_style() {
    let e = env(&[("A", "a"), ("B", "b"), ("EMPTY", ""), ("PATH", "/usr/bin")]);
    let cases = [
        ("$A", "a"),
        ("${A}", "a"),
        ("$A$B", "ab"),
        ("${A}_$B.x", "a_b.x"),
        ("$A_B", ""), // the name is `A_B`, unset
        ("/x/bin:$PATH", "/x/bin:/usr/bin"),
        ("$UNSET|${UNSET}", "|"),
        (r"\$A", "$A"),
        (r"a\b", r"a\b"),
        ("$1 ${1} $ a$", "$1 ${1} $ a$"),
        ("${A", "${A"),
        ("${A:?x}", "${A:?x}"),
        ("${UNSET:-dflt} ${EMPTY:-dflt} ${A:-dflt}", "dflt dflt a"),
        ("${A:+alt} ${EMPTY:+alt} ${UNSET:+alt}", "alt  "),
        ("${UNSET:-$B/${A}}", "b/a"),
        ("${UNSET:-x", "${UNSET:-x"),
        ("é$A€", "éa€"),
        ("no dollars", "no dollars"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, &e), want, "{input:?}");
    }
    // A PATH nobody set is the PATH every process gets.
    assert_eq!(
        expand("/x:$PATH", &[]),
        format!("/x:{}", kiln_llb::DEFAULT_PATH)
    );
}

#[test]
fn config_env_refers_to_the_inherited_environment() {
    let base = EffectiveConfig {
        env: env(&[("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8")]),
        ..EffectiveConfig::default()
    };
    let manifest = kiln_manifest::ImageConfig {
        env: [
            ("PATH", "/x/bin:$PATH"),
            ("OLD_PATH", "${PATH}"),
            ("LITERAL", r"\$PATH"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let out = base.apply(&manifest);
    // Like one `ENV` instruction: every value sees the environment before the table.
    assert_eq!(
        out.env,
        env(&[
            ("PATH", "/x/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("LITERAL", "$PATH"),
            ("OLD_PATH", "/usr/bin:/bin"),
        ])
    );
}

const UV_APP: &str = r#"
[target.app]
from = "python:3.11-slim-bookworm"
run = ["echo pre"]
packages = { manager = "uv" }
smoke-test = { run = ["python3 -c 'import app'"] }
config = { workdir = "/app", env = { PATH = "/c/bin:$PATH" } }
"#;

#[test]
fn the_packages_environment_is_active_after_the_install() {
    let t = &compile_text(UV_APP, PackagesMode::Pinned)[0];
    let venv = "/app/.venv";
    let active_path = format!("{venv}/bin:/c/bin:{}", kiln_llb::DEFAULT_PATH);
    // Not before: the pre steps and the install itself run without it.
    let packages = t.stage(StageKind::PackagesPinned).unwrap();
    for cmd in ["echo pre", "uv sync --locked --no-dev"] {
        let e = env_of(&exec_of(packages, cmd));
        assert_eq!(var(&e, "VIRTUAL_ENV"), None, "{cmd}: {e:?}");
        assert_eq!(
            var(&e, "PATH"),
            Some(format!("/c/bin:{}", kiln_llb::DEFAULT_PATH).as_str())
        );
    }
    // The smoke test and the image config have it.
    let smoke = env_of(&exec_of(
        t.stage(StageKind::SmokeTest).unwrap(),
        "python3 -c 'import app'",
    ));
    assert_eq!(var(&smoke, "VIRTUAL_ENV"), Some(venv));
    assert_eq!(var(&smoke, "PATH"), Some(active_path.as_str()));
    assert_eq!(
        t.config.env,
        env(&[("PATH", &active_path), ("VIRTUAL_ENV", venv)])
    );

    // Each manager's own place; a target built on it inherits it.
    let text = r#"
[target.pip]
from = "debian"
packages = { manager = "pip" }
[target.poetry]
from = "debian"
packages = { manager = "poetry", dir = "/srv/" }
[target.npm]
from = "debian"
packages = { manager = "npm" }
[target.off]
from = "debian"
packages = { manager = "uv", activate = false }
[target.custom]
from = "debian"
packages = { manager = "custom", files = ["f"], lock = ["l"], refresh = "r", install = "i", activate = "./env/" }
[target.child]
from = "target:pip"
run = ["echo child"]
"#;
    let targets = compile_text(text, PackagesMode::Pinned);
    let venv_of = |name: &str| {
        let t = targets.iter().find(|t| t.name == name).unwrap();
        t.config
            .env
            .iter()
            .find(|(k, _)| k == "VIRTUAL_ENV")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(venv_of("pip").as_deref(), Some("/opt/venv"));
    assert_eq!(venv_of("poetry").as_deref(), Some("/srv/.venv"));
    assert_eq!(venv_of("npm"), None, "npm makes no environment");
    assert_eq!(venv_of("off"), None, "activate = false");
    assert_eq!(venv_of("custom").as_deref(), Some("/app/env"));
    assert_eq!(venv_of("child").as_deref(), Some("/opt/venv"));
    let child = targets.iter().find(|t| t.name == "child").unwrap();
    let e = env_of(&exec_of(child.stage(StageKind::Pre).unwrap(), "echo child"));
    assert_eq!(var(&e, "VIRTUAL_ENV"), Some("/opt/venv"));
    assert_eq!(
        var(&e, "PATH"),
        Some(format!("/opt/venv/bin:{}", kiln_llb::DEFAULT_PATH).as_str())
    );
}

#[test]
fn manager_defaults_sit_below_build_env_and_stay_out_of_the_image() {
    let t = &compile_text(UV_APP, PackagesMode::Pinned)[0];
    let packages = t.stage(StageKind::PackagesPinned).unwrap();
    for cmd in ["echo pre", "uv sync --locked --no-dev"] {
        let e = env_of(&exec_of(packages, cmd));
        assert_eq!(var(&e, "UV_LINK_MODE"), Some("copy"), "{cmd}");
        assert_eq!(var(&e, "UV_PYTHON_DOWNLOADS"), Some("never"), "{cmd}");
    }
    assert!(
        !t.config.to_json().contains("UV_"),
        "{}",
        t.config.to_json()
    );

    let text = UV_APP.replace(
        "packages = {",
        "build-env = { UV_LINK_MODE = \"hardlink\" }\npackages = {",
    );
    let t = &compile_text(&text, PackagesMode::Refresh)[0];
    let e = env_of(&exec_of(
        t.stage(StageKind::PackagesRefresh).unwrap(),
        Manager::Uv.spec().refresh.unwrap_or_default(),
    ));
    assert_eq!(var(&e, "UV_LINK_MODE"), Some("hardlink"));
    assert_eq!(var(&e, "UV_PYTHON_DOWNLOADS"), Some("never"));
    // A target without packages gets none.
    let t = &compile_text(
        "[target.a]\nfrom = \"debian\"\nrun = [\"echo a\"]\n",
        PackagesMode::Pinned,
    )[0];
    let e = env_of(&exec_of(t.stage(StageKind::Pre).unwrap(), "echo a"));
    assert_eq!(var(&e, "UV_LINK_MODE"), None);
}

#[test]
fn build_env_expands_against_the_environment_in_effect() {
    let text = UV_APP.replace(
        "packages = {",
        "build-env = { PATH = \"/y/bin:$PATH\", WHERE = \"${VIRTUAL_ENV:-none}\" }\npackages = {",
    );
    let t = &compile_text(&text, PackagesMode::Pinned)[0];
    let pre = env_of(&exec_of(t.stage(StageKind::Pre).unwrap(), "echo pre"));
    assert_eq!(
        var(&pre, "PATH"),
        Some(format!("/y/bin:/c/bin:{}", kiln_llb::DEFAULT_PATH).as_str())
    );
    assert_eq!(var(&pre, "WHERE"), Some("none"));
    let smoke = env_of(&exec_of(
        t.stage(StageKind::SmokeTest).unwrap(),
        "python3 -c 'import app'",
    ));
    assert_eq!(
        var(&smoke, "PATH"),
        Some(format!("/y/bin:/app/.venv/bin:/c/bin:{}", kiln_llb::DEFAULT_PATH).as_str())
    );
    assert_eq!(var(&smoke, "WHERE"), Some("/app/.venv"));
    // build-env never reaches the image.
    assert!(!t.config.to_json().contains("/y/bin"));
    // Planning is deterministic.
    let again = &compile_text(&text, PackagesMode::Pinned)[0];
    for kind in [
        StageKind::Pre,
        StageKind::PackagesPinned,
        StageKind::SmokeTest,
    ] {
        assert_eq!(
            kiln_llb::marshal(t.stage(kind).unwrap())
                .unwrap()
                .terminal_digest(),
            kiln_llb::marshal(again.stage(kind).unwrap())
                .unwrap()
                .terminal_digest()
        );
    }
}

fn mkdirs(state: &State) -> Vec<pb::FileActionMkDir> {
    let def = kiln_llb::marshal(state).unwrap();
    def.ops()
        .unwrap()
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::File(f)) => Some(f.actions),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Mkdir(m)) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn pre_steps_run_in_the_inherited_workdir_and_the_workdir_is_made_after_them() {
    // A step that makes the workdir (a user's home) must find it missing, and keep its owner.
    let text = r#"
[target.app]
from = "python:3.11-slim-bookworm"
run = ["useradd -m -d /app app"]
config = { workdir = "/app", user = "app" }
"#;
    let t = &compile_text(text, PackagesMode::Pinned)[0];
    let pre = t.stage(StageKind::Pre).unwrap();
    let (step, _) = &execs(pre)[0];
    assert_eq!(step.meta.as_ref().unwrap().cwd, "/");
    let made = mkdirs(pre);
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(
        (made[0].path.as_str(), made[0].mode, made[0].make_parents),
        ("/app", 0o755, true)
    );
    assert!(
        made[0].owner.is_none(),
        "root-owned when new, as Docker does"
    );
    // The mkdir comes after the step: the pre stage's last op is the file op.
    let def = kiln_llb::marshal(pre).unwrap();
    let ops = def.ops().unwrap();
    assert!(
        matches!(ops[ops.len() - 2].1.op, Some(pb::op::Op::File(_))),
        "the workdir is made after the run steps"
    );

    // With a base whose WorkingDir is /srv, the steps run there.
    let source = Source {
        path: "kiln.toml".into(),
        text: format!("version = 1\n{text}"),
    };
    let manifest = load(&[source], &LoadOptions::default()).unwrap();
    let graph = Graph::build(&manifest, PackagesMode::Pinned).unwrap();
    let reference = kiln_reference::Reference::parse("python:3.11-slim-bookworm").unwrap();
    let bases = BaseConfigs::from([(
        reference,
        EffectiveConfig {
            workdir: Some("/srv".into()),
            ..EffectiveConfig::default()
        },
    )]);
    let t = &compile(&manifest, &graph, &["app".into()], &bases, None).unwrap()[0];
    let (step, _) = &execs(t.stage(StageKind::Pre).unwrap())[0];
    assert_eq!(step.meta.as_ref().unwrap().cwd, "/srv");
}

#[test]
fn without_a_workdir_the_smoke_test_runs_where_the_packages_are() {
    let t = &compile_text(
        r#"
[target.app]
from = "python:3.11-slim-bookworm"
packages = { manager = "uv" }
smoke-test = { run = ["python3 tests/smoke.py"], copy = ["./tests/"] }
"#,
        PackagesMode::Pinned,
    )[0];
    let smoke = t.stage(StageKind::SmokeTest).unwrap();
    let (step, _) = execs(smoke)
        .into_iter()
        .find(|(e, _)| last_arg(e) == "python3 tests/smoke.py")
        .unwrap();
    assert_eq!(step.meta.as_ref().unwrap().cwd, "/app");
    let def = kiln_llb::marshal(smoke).unwrap();
    let dests: Vec<String> = def
        .ops()
        .unwrap()
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::File(f)) => Some(f.actions),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Copy(c)) if c.src.starts_with("/tests") => Some(c.dest),
            _ => None,
        })
        .collect();
    assert_eq!(dests, ["/app/tests/"]);
    // The image keeps no workdir of its own.
    assert_eq!(t.config.workdir, None);
}

#[test]
fn zip_artifacts_come_from_their_own_local_source_and_chown_reaches_unpacked_tars() {
    let t = &compile_text(
        r#"
[target.app]
from = "debian:bookworm"
artifacts = [
  { src = "a.zip", extract-to = "/opt/a", chown = "1000:1000" },
  { src = "b.tar.gz", extract-to = "/opt/b", chown = "app" },
  { src = "c.tar", extract-to = "/opt/c" },
]
"#,
        PackagesMode::Pinned,
    )[0];
    let def = kiln_llb::marshal(t.stage(StageKind::Post).unwrap()).unwrap();
    let ops = def.ops().unwrap();
    let sources: Vec<String> = ops
        .iter()
        .filter_map(|(_, op)| match &op.op {
            Some(pb::op::Op::Source(s)) if s.identifier.starts_with("local://") => {
                Some(s.identifier.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(sources.contains(&"local://app:artifact-0".to_string()));
    let context_patterns: Vec<String> = ops
        .iter()
        .filter_map(|(_, op)| match &op.op {
            Some(pb::op::Op::Source(s)) if s.identifier == "local://app" => {
                s.attrs.get("local.includepattern").cloned()
            }
            _ => None,
        })
        .collect();
    assert_eq!(context_patterns, [r#"["b.tar.gz","c.tar"]"#]);
    assert_eq!(artifact_source("app", 0), "app:artifact-0");
    let copies: Vec<pb::FileActionCopy> = ops
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::File(f)) => Some(f.actions),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Copy(c)) => Some(c),
            _ => None,
        })
        .collect();
    let to = |dest: &str| copies.iter().find(|c| c.dest == dest).unwrap();
    // The zip: its unpacked directory's contents, with the owner.
    assert_eq!(to("/opt/a").src, "/");
    assert!(to("/opt/a").owner.is_some() && !to("/opt/a").attempt_unpack_docker_compatibility);
    // A tar with chown: unpacked into scratch, then copied with the owner.
    let unpack = copies.iter().find(|c| c.src == "/b.tar.gz").unwrap();
    assert!(unpack.attempt_unpack_docker_compatibility && unpack.owner.is_none());
    assert_eq!(unpack.dest, "/");
    assert!(to("/opt/b").owner.is_some() && to("/opt/b").dir_copy_contents);
    // Without chown, BuildKit unpacks straight into place.
    assert!(to("/opt/c").attempt_unpack_docker_compatibility);
    // The zip is still a context file of the target (its bytes are in the inputs hash), but
    // the context source does not send it.
    assert!(t.context_includes.contains(&"a.zip".to_string()));
}
