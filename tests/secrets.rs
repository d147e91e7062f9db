//! Secrets and CA bundles for RUN steps, against the real engine: every RUN step of a target
//! reads its own secrets and bundle at the mount, and no value ever reaches the LLB, a layer,
//! the progress output or kiln.lock. A missing secret fails before anything is solved.

#[path = "support/project.rs"]
mod project;

use std::path::Path;
use std::process::Command;

use project::{Image, kiln_raw_env};
use sha2::{Digest, Sha256};

const BASE: &str = "kiln-base/debian-python:bookworm";

/// Raw stdout of `kiln ARGS` (for `plan --llb`, which prints a binary Definition).
fn kiln_bytes(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = project::kiln_command(dir, args).output().expect("run kiln");
    assert!(
        out.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A value no build has seen before.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A shell test that `path` holds exactly the bytes whose sha256 is `sha` (the manifest, and
/// so the LLB, only ever holds the hash).
fn holds(path: &str, sha: &str) -> String {
    format!("test $(sha256sum < {path} | cut -c1-64) = {sha}")
}

#[test]
fn secrets_reach_every_run_step_but_no_llb_layer_output_or_lock() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("secrets");
    let token = unique("KILN-TOKEN");
    let conf = unique("KILN-PIPCONF");
    let (token_sha, conf_sha) = (sha256_hex(token.as_bytes()), sha256_hex(conf.as_bytes()));
    let both = format!(
        "{} && {}",
        holds("/run/secrets/token", &token_sha),
        holds("/run/secrets/pip.conf", &conf_sha)
    );
    // Secrets are not in BuildKit's cache key: the unique image name in each command makes
    // every step new, so each really runs and really reads its secrets.
    let manifest = format!(
        r#"version = 1
[target.s]
from    = "{BASE}"
image   = "{image}"
network = "host"
run = ["{both} && ! sh -c 'echo x > /run/secrets/token' 2>/dev/null && echo {image} > /pre-ok"]

[target.s.secrets]
token      = {{ env = "KILN_TEST_TOKEN" }}
"pip.conf" = {{ file = "secrets/pip.conf" }}

[target.s.packages]
manager = "custom"
files   = ["deps.txt"]
lock    = ["deps.lock"]
install = "{both} && cp deps.lock /installed-ok && echo {image} >> /installed-ok"
refresh = "{both} && cp deps.txt deps.lock"

[target.s.smoke-test]
run = ["{both} && id -un && echo smoke-read-the-secrets-as-$(id -un)"]

[target.s.config]
user = "nobody"
"#,
        image = image.0
    );
    let dir = project::repo(&[
        ("kiln.toml", &manifest),
        ("secrets/pip.conf", &conf),
        ("deps.txt", "dep 1\n"),
        ("deps.lock", "dep 1 (locked)\n"),
    ]);
    let env = [("KILN_TEST_TOKEN", token.as_str())];

    let plain = kiln_raw_env(dir.path(), &["build", "--progress", "plain"], &env);
    assert_eq!(plain.code, 0, "{plain}");
    assert!(
        plain.stderr.contains("smoke-read-the-secrets-as-nobody"),
        "the smoke test (as the image's user) read them: {plain}"
    );
    let json = kiln_raw_env(
        dir.path(),
        &["build", "--force", "--progress", "json"],
        &env,
    );
    assert_eq!(json.code, 0, "{json}");
    let refresh = kiln_raw_env(
        dir.path(),
        &["refresh", "--dry-run", "--progress", "plain"],
        &env,
    );
    assert_eq!(refresh.code, 0, "the refresh command read them: {refresh}");
    for value in [&token, &conf] {
        for run in [&plain, &json, &refresh] {
            assert!(
                !run.stderr.contains(value.as_str()) && !run.stdout.contains(value.as_str()),
                "a secret value is in the output: {run}"
            );
        }
    }

    // The pre and install steps ran with the secrets (they fail otherwise).
    assert_eq!(image.run(&["cat", "/pre-ok"]), image.0);
    assert_eq!(
        image.run(&["cat", "/installed-ok"]),
        format!("dep 1 (locked)\n{}", image.0)
    );
    // The mount point holds nothing in the image.
    assert_eq!(
        image.run(&[
            "sh",
            "-c",
            "cat /run/secrets/token /run/secrets/pip.conf 2>/dev/null; true"
        ]),
        ""
    );

    // Not in any layer, nor in the image config: search the whole saved image.
    let saved = Command::new("docker")
        .args(["save", &image.0])
        .output()
        .unwrap();
    assert!(saved.status.success());
    assert!(saved.stdout.len() > 1_000_000, "a real image was saved");
    assert!(
        contains(&saved.stdout, &image.0),
        "the search finds what is there"
    );
    for value in [&token, &conf] {
        assert!(
            !contains(&saved.stdout, value),
            "a secret value is in a layer"
        );
    }

    // Not in the LLB of any stage (which does hold the hashes: the search works).
    for stage in ["s/pre", "s/packages-pinned", "s/smoke-test", "s/image"] {
        let llb = kiln_bytes(dir.path(), &["plan", "--llb", stage]);
        assert!(contains(&llb, &token_sha), "{stage}: the LLB is searched");
        for value in [&token, &conf] {
            assert!(
                !contains(&llb, value),
                "{stage}: a secret value is in the LLB"
            );
        }
    }
    let llb = kiln_bytes(
        dir.path(),
        &["plan", "--mode", "refresh", "--llb", "s/packages-refresh"],
    );
    assert!(!contains(&llb, &token) && !contains(&llb, &conf));
    let plan = kiln_bytes(dir.path(), &["plan", "--format", "json"]);
    assert!(!contains(&plan, &token) && !contains(&plan, &conf));

    // Not in kiln.lock, which records the build.
    let lock = project::read(dir.path(), "kiln.lock");
    assert!(lock.contains(&image.0), "{lock}");
    assert!(!lock.contains(&token) && !lock.contains(&conf), "{lock}");
}

#[test]
fn targets_built_together_each_get_their_own_ca_bundle_and_secrets() {
    if !project::require_engine() {
        return;
    }
    let host_bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").expect("host CA bundle");
    let custom = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        unique("KILN-CUSTOM-CA")
    );
    assert_ne!(host_bundle, custom.as_bytes());
    let (one, two) = (Image::new("ca-host"), Image::new("ca-custom"));
    let (token_one, token_two) = (unique("KILN-ONE"), unique("KILN-TWO"));
    let target = |name: &str, image: &Image, ca: &str, bundle: &[u8], token: &str, source: &str| {
        format!(
            r#"
[target.{name}]
from    = "{BASE}"
image   = "{image}"
network = "host"
ca-certificates = "{ca}"
secrets = {{ token = {source} }}
run = ["{} && {} && echo {image} > /ok"]
"#,
            holds("$SSL_CERT_FILE", &sha256_hex(bundle)),
            holds("/run/secrets/token", &sha256_hex(token.as_bytes())),
            image = image.0
        )
    };
    let manifest = format!(
        "version = 1\n{}{}",
        target(
            "one",
            &one,
            "host",
            &host_bundle,
            &token_one,
            r#"{ env = "KILN_TEST_TOKEN_ONE" }"#
        ),
        target(
            "two",
            &two,
            "certs/custom.pem",
            custom.as_bytes(),
            &token_two,
            r#"{ file = "token-two" }"#
        ),
    );
    let dir = project::repo(&[
        ("kiln.toml", &manifest),
        ("certs/custom.pem", &custom),
        ("token-two", &token_two),
    ]);
    let run = kiln_raw_env(
        dir.path(),
        &["build", "--progress", "plain"],
        &[("KILN_TEST_TOKEN_ONE", token_one.as_str())],
    );
    assert_eq!(
        run.code, 0,
        "each target checks its own bundle and token: {run}"
    );
    assert!(run.stderr.contains("[one/pre 1]") && run.stderr.contains("[two/pre 1]"));
    assert_eq!(one.run(&["cat", "/ok"]), one.0);
    assert_eq!(two.run(&["cat", "/ok"]), two.0);
}

#[test]
fn a_missing_secret_fails_before_anything_is_solved() {
    if !project::require_engine() {
        return;
    }
    let image = Image::new("missing-secret");
    let manifest = format!(
        r#"version = 1
[target.s]
from    = "{BASE}"
image   = "{image}"
network = "host"
run     = ["echo {image} > /ran"]
[target.s.secrets]
token   = {{ env = "KILN_TEST_UNSET_TOKEN" }}
netrc   = {{ file = "missing/netrc" }}
present = {{ env = "KILN_TEST_SET" }}
"#,
        image = image.0
    );
    let dir = project::repo(&[("kiln.toml", &manifest)]);
    for args in [&["build"][..], &["smoke-test"]] {
        let run = project::kiln_command(dir.path(), args)
            .args(["--progress", "plain"])
            .env_remove("KILN_TEST_UNSET_TOKEN")
            .env("KILN_TEST_SET", "x")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        // All of it, in file order: nothing was solved, no progress shown.
        assert_eq!(
            stderr.trim_end(),
            "error: kiln.toml:8:1: `target.s.secrets.token`: secret `token` comes from the \
             environment variable `KILN_TEST_UNSET_TOKEN`, which is not set\n  \
             hint: set `KILN_TEST_UNSET_TOKEN` for kiln, e.g. `KILN_TEST_UNSET_TOKEN=… kiln build`\n\
             error: kiln.toml:9:1: `target.s.secrets.netrc`: secret `netrc` comes from the file \
             `missing/netrc`, which cannot be read: No such file or directory (os error 2)\n  \
             hint: a relative `file` is relative to the manifest's directory",
            "{args:?}"
        );
    }
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image.0])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "nothing was built");
    // `kiln check` finds the missing file (an env var is only needed by a build).
    let check = kiln_raw_env(dir.path(), &["check"], &[]);
    assert_eq!(check.code, 1, "{check}");
    assert_eq!(
        check.stderr.trim_end(),
        "error: kiln.toml:9:1: `target.s.secrets.netrc`: secret file `missing/netrc` does not exist\n  expected: an existing path"
    );
}
