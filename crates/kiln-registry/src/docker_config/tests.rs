use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use super::{AuthError, Credentials, DockerConfig};

/// Real helper programs, written once so no test execs a script another is still writing.
fn helpers() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let scripts = [
            // Echoes the server URL it was asked for as the secret.
            ("test", r#"read -r url; printf '{"ServerURL":"%s","Username":"helper","Secret":"%s"}' "$url" "$url""#),
            ("store", r#"printf '{"ServerURL":"x","Username":"store","Secret":"s"}'"#),
            ("token", r#"printf '{"ServerURL":"x","Username":"<token>","Secret":"tok"}'"#),
            ("none", "echo 'credentials not found in native keychain'; exit 1"),
            ("broken", "echo 'keychain locked' >&2; exit 3"),
        ];
        for (name, body) in scripts {
            let file = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&file, format!("#!/bin/sh\n[ \"$1\" = get ] || exit 9\n{body}\n")).unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        dir
    })
    .path()
}

/// A config dir holding `json` (if any), loaded through `DockerConfig::load`.
fn load(json: Option<&str>) -> (tempfile::TempDir, Result<DockerConfig, AuthError>) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(json) = json {
        std::fs::write(dir.path().join("config.json"), json).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", helpers().display());
    let config_dir = dir.path().display().to_string();
    let env = BTreeMap::from([
        ("DOCKER_CONFIG".to_string(), config_dir),
        ("HOME".to_string(), "/nonexistent".to_string()),
        ("PATH".to_string(), path),
    ]);
    let config = DockerConfig::load(&env);
    (dir, config)
}

fn creds(json: &str, host: &str) -> Result<Option<Credentials>, AuthError> {
    load(Some(json)).1.unwrap().credentials(host)
}

fn c(username: &str, secret: &str) -> Option<Credentials> {
    Some(Credentials::new(username, secret))
}

#[test]
fn no_file_or_no_home_is_anonymous() {
    let (_dir, config) = load(None);
    assert_eq!(config.unwrap().credentials("ghcr.io").unwrap(), None);
    let config = DockerConfig::load(&BTreeMap::new()).unwrap();
    assert_eq!(config.credentials("registry-1.docker.io").unwrap(), None);
    assert_eq!(creds("", "ghcr.io").unwrap(), None);
    assert_eq!(
        creds(r#"{"auths":{"ghcr.io":{}}}"#, "ghcr.io").unwrap(),
        None
    );
}

#[test]
fn auths_base64_and_normalised_keys() {
    // base64("user:pa:ss"), base64("me:pw")
    let json = r#"{"auths":{
        "https://ghcr.io": {"auth": "dXNlcjpwYTpzcw=="},
        "http://127.0.0.1:5000/v1/": {"auth": "bWU6cHc="}}}"#;
    assert_eq!(creds(json, "ghcr.io").unwrap(), c("user", "pa:ss"));
    assert_eq!(creds(json, "127.0.0.1:5000").unwrap(), c("me", "pw"));
    assert_eq!(creds(json, "127.0.0.1:5001").unwrap(), None);
    assert_eq!(creds(json, "quay.io").unwrap(), None);
}

#[test]
fn username_password_fields_and_identity_token() {
    let json = r#"{"auths":{
        "quay.io": {"username": "u", "password": "p"},
        "example.com": {"username": "u", "identitytoken": "idt"}}}"#;
    assert_eq!(creds(json, "quay.io").unwrap(), c("u", "p"));
    assert_eq!(creds(json, "example.com").unwrap(), c("", "idt"));
}

#[test]
fn docker_hub_key_mapping() {
    for key in [
        "https://index.docker.io/v1/",
        "index.docker.io",
        "docker.io",
        "registry-1.docker.io",
    ] {
        let json = format!(r#"{{"auths":{{"{key}":{{"username":"hub","password":"pw"}}}}}}"#);
        for host in ["registry-1.docker.io", "docker.io"] {
            assert_eq!(
                creds(&json, host).unwrap(),
                c("hub", "pw"),
                "{key} for {host}"
            );
        }
        assert_eq!(creds(&json, "ghcr.io").unwrap(), None);
    }
    // A helper is asked for the Hub by the key `docker login` stores it under.
    let json = r#"{"credsStore":"test"}"#;
    assert_eq!(
        creds(json, "registry-1.docker.io").unwrap(),
        c("helper", "https://index.docker.io/v1/")
    );
}

#[test]
fn cred_helpers_beat_creds_store_beat_auths() {
    let json = r#"{"credHelpers":{"ghcr.io":"test"},"credsStore":"store",
        "auths":{"ghcr.io":{"auth":"bWU6cHc="},"quay.io":{"auth":"bWU6cHc="}}}"#;
    assert_eq!(creds(json, "ghcr.io").unwrap(), c("helper", "ghcr.io"));
    assert_eq!(creds(json, "quay.io").unwrap(), c("store", "s"));
    let json = r#"{"credHelpers":{"ghcr.io":"test"},"auths":{"quay.io":{"auth":"bWU6cHc="}}}"#;
    assert_eq!(creds(json, "quay.io").unwrap(), c("me", "pw"));
    assert_eq!(
        creds(r#"{"credsStore":"token"}"#, "ghcr.io").unwrap(),
        c("", "tok")
    );
}

#[test]
fn helper_not_found_is_anonymous_other_failures_are_errors() {
    let json = r#"{"credsStore":"none","auths":{"ghcr.io":{"auth":"bWU6cHc="}}}"#;
    assert_eq!(creds(json, "ghcr.io").unwrap(), None);
    let err = creds(r#"{"credsStore":"broken"}"#, "ghcr.io")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker-credential-broken") && err.contains("keychain locked"),
        "{err}"
    );
}

#[test]
fn missing_helper_binary_is_named() {
    let err = creds(r#"{"credHelpers":{"ghcr.io":"nope"}}"#, "ghcr.io").unwrap_err();
    assert!(
        matches!(&err, AuthError::HelperMissing(p) if p == "docker-credential-nope"),
        "{err}"
    );
    assert!(err.to_string().contains("docker-credential-nope"), "{err}");
}

#[test]
fn malformed_file_names_file_and_line() {
    let (dir, config) = load(Some("{\n  \"auths\": {\n    \"ghcr.io\": {,}\n}"));
    let err = config.unwrap_err().to_string();
    let file = dir.path().join("config.json");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("line 3"),
        "{err}"
    );
    let (_dir, config) = load(Some(r#"{"auths":{"ghcr.io":{"auth":"not base64!"}}}"#));
    let err = config.unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("ghcr.io"),
        "{err}"
    );
}
