use std::path::Path;

use super::*;
use crate::BuilderOptions;

fn settings(options: BuilderOptions, env: &[(&str, &str)]) -> Settings {
    Settings {
        builder: options,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Settings::default()
    }
}

fn flag(url: &str) -> BuilderOptions {
    BuilderOptions {
        url: Some(url.to_string()),
        ..BuilderOptions::default()
    }
}

fn builder(s: &Settings) -> (String, &'static str) {
    let r = Resolved::new(s);
    let (e, from) = r.builder().unwrap();
    (e.to_string(), from)
}

fn pool(s: &Settings) -> Vec<String> {
    let r = Resolved::new(s);
    r.builders()
        .unwrap()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// A config file listing `builders`, named by `KILN_CONFIG`.
fn config_file(dir: &Path, builders: &[&str]) -> String {
    let file = dir.join("config.toml");
    let list: Vec<String> = builders.iter().map(|b| format!("{b:?}")).collect();
    std::fs::write(&file, format!("builders = [{}]\n", list.join(", "))).unwrap();
    file.display().to_string()
}

#[test]
fn builder_flag_beats_buildkit_host_beats_config_file_beats_docker_host_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &["unix:///from-config.sock"]);
    let all = [
        ("KILN_CONFIG", config.as_str()),
        ("BUILDKIT_HOST", "unix:///from-env.sock"),
        ("DOCKER_HOST", "unix:///docker.sock"),
    ];
    let s = settings(flag("unix:///from-flag.sock"), &all);
    assert_eq!(builder(&s), ("unix:///from-flag.sock".into(), "--builder"));
    let s = settings(BuilderOptions::default(), &all);
    assert_eq!(
        builder(&s),
        ("unix:///from-env.sock".into(), "BUILDKIT_HOST")
    );
    // An empty BUILDKIT_HOST is not set.
    let mut s = settings(BuilderOptions::default(), &all);
    s.env.insert("BUILDKIT_HOST".into(), String::new());
    assert_eq!(
        builder(&s),
        (
            "unix:///from-config.sock".into(),
            "builders in kiln's config file"
        )
    );
    let s = settings(BuilderOptions::default(), &all[2..]);
    assert_eq!(builder(&s), ("docker:///docker.sock".into(), "DOCKER_HOST"));
    let s = settings(BuilderOptions::default(), &[]);
    assert_eq!(
        builder(&s),
        (
            "docker:///var/run/docker.sock".into(),
            "the default Docker socket"
        )
    );
    // `docker://` is the engine at DOCKER_HOST, whoever names it.
    let s = settings(flag("docker://"), &all[2..]);
    assert_eq!(builder(&s), ("docker:///docker.sock".into(), "--builder"));
}

#[test]
fn the_pool_and_the_single_builder_come_from_the_same_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &["unix:///a.sock", "tcp://b:1234"]);
    let mut options = flag("unix:///x.sock");
    options.more = vec!["unix:///y.sock".into()];
    let s = settings(options, &[("KILN_CONFIG", &config)]);
    assert_eq!(pool(&s), ["unix:///x.sock", "unix:///y.sock"]);
    assert_eq!(builder(&s).0, "unix:///x.sock");
    let s = settings(BuilderOptions::default(), &[("KILN_CONFIG", &config)]);
    assert_eq!(pool(&s), ["unix:///a.sock", "tcp://b:1234"]);
    assert_eq!(builder(&s).0, "unix:///a.sock");
    // Given twice: an error for the pool only (a single-builder command takes the first).
    let mut options = flag("unix:///x.sock");
    options.more = vec!["unix:///x.sock".into()];
    let s = settings(options, &[]);
    assert_eq!(builder(&s).0, "unix:///x.sock");
    let r = Resolved::new(&s);
    let err = r.builders().unwrap_err();
    assert_eq!(
        err.to_string(),
        "--builder: the builder unix:///x.sock is given twice"
    );
    assert_eq!(err.exit_code(), 2);
    // A bad second URL fails the pool, not the single builder.
    let s = settings(
        BuilderOptions::default(),
        &[(
            "KILN_CONFIG",
            &config_file(dir.path(), &["unix:///a.sock", "ssh://x"]),
        )],
    );
    assert_eq!(builder(&s).0, "unix:///a.sock");
    let err = Resolved::new(&s).builders().unwrap_err().to_string();
    assert!(
        err.contains("builders in kiln's config file") && err.contains("ssh://x"),
        "{err}"
    );
}

#[test]
fn config_file_kiln_config_beats_xdg_config_home_beats_home() {
    let path = |env: &[(&str, &str)]| {
        Resolved::new(&settings(BuilderOptions::default(), env))
            .config_file()
            .map(Path::to_path_buf)
    };
    let all = [
        ("KILN_CONFIG", "/k/config.toml"),
        ("XDG_CONFIG_HOME", "/xdg"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(path(&all), Some("/k/config.toml".into()));
    assert_eq!(path(&all[1..]), Some("/xdg/kiln/config.toml".into()));
    assert_eq!(
        path(&all[2..]),
        Some("/home/u/.config/kiln/config.toml".into())
    );
    // Empty values are not set.
    assert_eq!(
        path(&[("KILN_CONFIG", ""), ("XDG_CONFIG_HOME", ""), ("HOME", "/h")]),
        Some("/h/.config/kiln/config.toml".into())
    );
    assert_eq!(path(&[]), None);
}

#[test]
fn tls_flags_beat_the_environment() {
    let env = [
        ("BUILDKIT_HOST", "tcp://b:1234"),
        ("KILN_TLS_CA", "/env/ca.pem"),
        ("KILN_TLS_CERT", "/env/cert.pem"),
        ("KILN_TLS_KEY", "/env/key.pem"),
        ("KILN_TLS_SERVER_NAME", "env-name"),
    ];
    let r = Resolved::new(&settings(BuilderOptions::default(), &env));
    let from_env = Tls {
        ca: Some("/env/ca.pem".into()),
        cert: Some("/env/cert.pem".into()),
        key: Some("/env/key.pem".into()),
        server_name: Some("env-name".into()),
    };
    assert_eq!(r.tls(), &from_env);
    match r.builder().unwrap().0 {
        Endpoint::Tcp { tls, .. } => assert_eq!(tls.as_ref(), Some(&from_env)),
        other => panic!("{other}"),
    }
    let options = BuilderOptions {
        tls_ca: Some("/flag/ca.pem".into()),
        tls_server_name: Some("flag-name".into()),
        ..BuilderOptions::default()
    };
    let r = Resolved::new(&settings(options, &env));
    assert_eq!(r.tls().ca, Some("/flag/ca.pem".into()));
    assert_eq!(r.tls().cert, Some("/env/cert.pem".into()));
    assert_eq!(r.tls().server_name.as_deref(), Some("flag-name"));
    // TLS files and the engine with no builder named: not an error (nothing to apply them to).
    let r = Resolved::new(&settings(BuilderOptions::default(), &env[1..]));
    assert_eq!(r.builder().unwrap().1, "the default Docker socket");
}

#[test]
fn state_dir_kiln_state_dir_beats_xdg_state_home_beats_home() {
    let dir = |env: &[(&str, &str)]| {
        Resolved::new(&settings(BuilderOptions::default(), env))
            .state_dir()
            .to_path_buf()
    };
    let all = [
        ("KILN_STATE_DIR", "/state"),
        ("XDG_STATE_HOME", "/xdg-state"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(dir(&all), Path::new("/state"));
    assert_eq!(dir(&all[1..]), Path::new("/xdg-state/kiln"));
    assert_eq!(dir(&all[2..]), Path::new("/home/u/.local/state/kiln"));
    assert_eq!(dir(&[]), Path::new("/var/lib/kiln"));
}

#[test]
fn builder_keepalive_is_kiln_builder_keepalive_seconds_else_20() {
    let keepalive = |value: Option<&str>| {
        let env: Vec<(&str, &str)> = value
            .map(|v| ("KILN_BUILDER_KEEPALIVE", v))
            .into_iter()
            .collect();
        Resolved::new(&settings(BuilderOptions::default(), &env)).keepalive()
    };
    let secs = std::time::Duration::from_secs;
    assert_eq!(keepalive(None), secs(20));
    assert_eq!(keepalive(Some("1")), secs(1));
    assert_eq!(keepalive(Some(" 300 ")), secs(300));
    // Not a whole number of seconds above 0: the default, as before settings were resolved.
    for bad in ["", "0", "-1", "1.5", "soon"] {
        assert_eq!(keepalive(Some(bad)), secs(20), "{bad:?}");
    }
}

#[test]
fn docker_config_and_insecure_registries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths":{"ghcr.io":{"username":"u","password":"p"}}}"#,
    )
    .unwrap();
    let docker_config = dir.path().display().to_string();
    let env = [
        ("DOCKER_CONFIG", docker_config.as_str()),
        ("HOME", "/nonexistent-home"),
        ("KILN_INSECURE_REGISTRIES", " reg.lan:5000, ,other.lan "),
    ];
    let r = Resolved::new(&settings(BuilderOptions::default(), &env));
    assert_eq!(
        r.docker_config_file(),
        Some(dir.path().join("config.json").as_path())
    );
    let creds = r.docker_config().unwrap().credentials("ghcr.io").unwrap();
    assert_eq!(creds, Some(kiln_registry::Credentials::new("u", "p")));
    assert_eq!(r.insecure_registries(), ["reg.lan:5000", "other.lan"]);
    // The session answers from the same config.
    let auth = r.session_auth().unwrap();
    assert_eq!(
        auth.credentials("ghcr.io").unwrap(),
        Some(("u".to_string(), "p".to_string()))
    );
    assert_eq!(auth.credentials("quay.io").unwrap(), None);
    // Read once: a later edit of the file does not change this command's credentials.
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let creds = r.docker_config().unwrap().credentials("ghcr.io").unwrap();
    assert_eq!(creds, Some(kiln_registry::Credentials::new("u", "p")));
    // Without DOCKER_CONFIG (or with it empty): HOME's.
    let r = Resolved::new(&settings(
        BuilderOptions::default(),
        &[("DOCKER_CONFIG", ""), ("HOME", "/h")],
    ));
    assert_eq!(
        r.docker_config_file(),
        Some(Path::new("/h/.docker/config.json"))
    );
    assert!(r.insecure_registries().is_empty());
}

#[test]
fn a_bad_setting_fails_only_what_needs_it_and_the_same_way_each_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let docker_config = dir.path().display().to_string();
    let env = [
        ("BUILDKIT_HOST", "ssh://x"),
        ("DOCKER_HOST", "tcp://1.2.3.4:2375"),
        ("DOCKER_CONFIG", docker_config.as_str()),
        ("KILN_STATE_DIR", "/state"),
    ];
    let s = settings(BuilderOptions::default(), &env);
    let r = s.resolved();
    assert_eq!(r.state_dir(), Path::new("/state"));
    for _ in 0..2 {
        let err = r.builder().unwrap_err();
        assert!(err.to_string().contains("BUILDKIT_HOST: "), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = r.docker_socket().unwrap_err();
        assert!(err.to_string().contains("DOCKER_HOST=tcp://"), "{err}");
        let err = r.docker_config().unwrap_err().to_string();
        assert!(
            err.starts_with("registry credentials: ") && err.contains("config.json"),
            "{err}"
        );
    }
    // An unreadable config file: the same I/O error, naming the file, every time.
    let missing = dir.path().join("missing.toml").display().to_string();
    let s = settings(BuilderOptions::default(), &[("KILN_CONFIG", &missing)]);
    let r = Resolved::new(&s);
    let first = r.builders().unwrap_err().to_string();
    assert!(
        first.starts_with("cannot read kiln's config file") && first.contains(&missing),
        "{first}"
    );
    assert_eq!(r.builder().unwrap_err().to_string(), first);
    assert_eq!(r.builders().unwrap_err().to_string(), first);

    // A config file kiln cannot parse: a usage error (exit 2) with its hint, every time.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "builder = 3\n").unwrap();
    let bad = bad.display().to_string();
    let s = settings(BuilderOptions::default(), &[("KILN_CONFIG", &bad)]);
    let r = Resolved::new(&s);
    for _ in 0..2 {
        let err = r.builders().unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert_eq!(err.hints().len(), 1, "{err:?}");
        assert!(
            err.hints()[0].starts_with("kiln's config file takes"),
            "{err:?}"
        );
    }
}

#[test]
fn settings_resolve_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &["unix:///a.sock"]);
    let s = settings(BuilderOptions::default(), &[("KILN_CONFIG", &config)]);
    assert_eq!(
        s.resolved().builder().unwrap().0.to_string(),
        "unix:///a.sock"
    );
    // The file is read once: what it says later does not change this command's builder.
    config_file(dir.path(), &["unix:///b.sock"]);
    assert_eq!(
        s.resolved().builder().unwrap().0.to_string(),
        "unix:///a.sock"
    );
    assert!(std::ptr::eq(s.resolved(), s.resolved()));
    // A clone made after resolving keeps the value.
    assert_eq!(
        s.clone().resolved().builder().unwrap().0.to_string(),
        "unix:///a.sock"
    );
}
