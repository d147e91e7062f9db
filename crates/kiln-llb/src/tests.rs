use super::*;
use pb::op::Op;

fn linux() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn sample() -> State {
    let base = State::image("docker.io/library/debian:bookworm", &linux())
        .with_env("A", "1")
        .with_cwd("/app");
    let ctx = State::local(
        "app",
        &LocalOptions {
            include: vec!["src".into()],
            shared_key_hint: Some("app".into()),
            ..LocalOptions::default()
        },
    );
    let copied = base.file(
        FileActions::default()
            .mkdir("data", 0o755, true)
            .copy(&ctx, "/src", "src/", CopyOptions::default())
            .name("copy"),
    );
    copied
        .run(
            Exec::shell("make")
                .network(NetMode::Host)
                .mount(Mount::Secret {
                    dest: "/run/secret".into(),
                    id: "s".into(),
                    uid: 0,
                    gid: 0,
                    mode: 0o400,
                    optional: false,
                })
                .mount(Mount::Cache {
                    dest: "/cache".into(),
                    id: "c".into(),
                    sharing: CacheSharing::Locked,
                }),
        )
        .root()
}

#[test]
fn marshalling_is_deterministic_and_inputs_precede_users() {
    let a = marshal(&sample()).unwrap();
    let b = marshal(&sample()).unwrap();
    assert_eq!(a.encode(), b.encode());
    let ops = a.ops().unwrap();
    assert_eq!(ops.len(), 5, "image, local, file, exec, terminal");
    for (i, (_, op)) in ops.iter().enumerate() {
        for input in &op.inputs {
            assert!(ops[..i].iter().any(|(d, _)| d.as_str() == input.digest));
        }
    }
    let decoded = Definition::decode(&a.encode()).unwrap();
    assert_eq!(decoded, a);
    assert_eq!(a.terminal_digest().as_str().len(), 71);
}

#[test]
fn a_changed_command_changes_every_digest_downstream_only() {
    let base = State::image("docker.io/library/debian:bookworm", &linux());
    let one = base.run(Exec::shell("echo 1")).root();
    let two = base.run(Exec::shell("echo 2")).root();
    let (d1, d2) = (marshal(&one).unwrap(), marshal(&two).unwrap());
    assert_eq!(d1.def[0], d2.def[0], "same source op");
    assert_ne!(d1.terminal_digest(), d2.terminal_digest());
}

#[test]
fn exec_carries_env_cwd_user_network_and_sorted_mounts() {
    let def = marshal(&sample()).unwrap();
    let ops = def.ops().unwrap();
    let (digest, exec) = ops
        .iter()
        .find_map(|(d, op)| match &op.op {
            Some(Op::Exec(e)) => Some((d, e)),
            _ => None,
        })
        .unwrap();
    let meta = exec.meta.as_ref().unwrap();
    assert_eq!(meta.args, ["/bin/sh", "-c", "make"]);
    assert_eq!(meta.env, ["A=1", &format!("PATH={}", state_default_path())]);
    assert_eq!(meta.cwd, "/app");
    assert_eq!(exec.network, pb::NetMode::Host as i32);
    let dests: Vec<&str> = exec.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(dests, ["/", "/cache", "/run/secret"]);
    assert_eq!((exec.mounts[0].input, exec.mounts[0].output), (0, 0));
    assert_eq!(exec.mounts[1].mount_type, pb::MountType::Cache as i32);
    assert_eq!(
        exec.mounts[1].cache_opt.as_ref().unwrap().sharing,
        pb::CacheSharingOpt::Locked as i32
    );
    assert_eq!((exec.mounts[2].input, exec.mounts[2].output), (-1, -1));
    assert_eq!(exec.mounts[2].secret_opt.as_ref().unwrap().mode, 0o400);
    let caps = &def.metadata[digest.as_str()].caps;
    for cap in ["exec.meta.network", "exec.mount.secret", "exec.mount.cache"] {
        assert!(caps.contains_key(cap), "{cap}: {caps:?}");
    }
}

fn state_default_path() -> &'static str {
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

#[test]
fn file_actions_chain_and_resolve_relative_paths() {
    let def = marshal(&sample()).unwrap();
    let ops = def.ops().unwrap();
    let (digest, file_op, inputs) = ops
        .iter()
        .find_map(|(d, op)| match &op.op {
            Some(Op::File(f)) => Some((d, f, &op.inputs)),
            _ => None,
        })
        .unwrap();
    assert_eq!(inputs.len(), 2, "base and context");
    let [mkdir, copy] = file_op.actions.as_slice() else {
        panic!()
    };
    assert_eq!(
        (mkdir.input, mkdir.secondary_input, mkdir.output),
        (0, -1, -1)
    );
    assert_eq!((copy.input, copy.secondary_input, copy.output), (2, 1, 0));
    match (&mkdir.action, &copy.action) {
        (Some(pb::file_action::Action::Mkdir(m)), Some(pb::file_action::Action::Copy(c))) => {
            assert_eq!((m.path.as_str(), m.timestamp), ("/app/data", -1));
            assert_eq!(
                (c.src.as_str(), c.dest.as_str(), c.mode, c.timestamp),
                ("/src", "/app/src/", -1, -1)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        def.metadata[digest.as_str()].description["llb.customname"],
        "copy"
    );
}

#[test]
fn local_sources_carry_patterns_as_json() {
    let def = marshal(&sample()).unwrap();
    let local = def
        .ops()
        .unwrap()
        .into_iter()
        .find_map(|(_, op)| match op.op {
            Some(Op::Source(s)) if s.identifier.starts_with("local://") => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(local.identifier, "local://app");
    assert_eq!(local.attrs["local.includepattern"], r#"["src"]"#);
    assert_eq!(local.attrs["local.sharedkeyhint"], "app");
}

#[test]
fn images_carry_their_platform() {
    let def = marshal(&State::image(
        "docker.io/library/debian:bookworm",
        &"linux/arm64/v8".parse().unwrap(),
    ))
    .unwrap();
    let (_, op) = &def.ops().unwrap()[0];
    let p = op.platform.as_ref().unwrap();
    assert_eq!(
        (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
        ("linux", "arm64", "v8")
    );
}

#[test]
fn scratch_cannot_be_marshalled() {
    assert_eq!(marshal(&State::scratch()), Err(MarshalError::Scratch));
}

#[test]
fn writable_bind_mounts_are_outputs() {
    let base = State::image("docker.io/library/debian:bookworm", &linux());
    let exec = base.run(Exec::shell("touch /out/x").mount(Mount::Bind {
        dest: "/out".into(),
        source: State::scratch(),
        selector: None,
        readonly: false,
    }));
    let out = exec.mount("/out").unwrap();
    let def = marshal(&out).unwrap();
    let ops = def.ops().unwrap();
    let (_, terminal) = ops.last().unwrap();
    assert_eq!(terminal.inputs[0].index, 1);
    assert!(exec.mount("/nope").is_none());
}

#[test]
fn deep_chains_marshal_without_recursion_limits() {
    let mut state = State::image("docker.io/library/debian:bookworm", &linux());
    for i in 0..20_000 {
        state = state.run(Exec::shell(&format!("echo {i}"))).root();
    }
    // digest() first: it must encode the chain bottom-up too, and agree with marshal.
    let digest = state.digest().unwrap();
    let def = marshal(&state).unwrap();
    assert_eq!(def.def.len(), 20_002);
    assert_eq!(digest, def.terminal_digest());
}

#[test]
fn state_digest_is_the_definition_terminal_digest() {
    let base = State::image("docker.io/library/debian:bookworm", &linux());
    let a = base.run(Exec::shell("echo a")).root();
    let b = a.file(FileActions::default().mkdir("/x", 0o755, true));
    for s in [&base, &a, &b] {
        assert_eq!(s.digest().unwrap(), marshal(s).unwrap().terminal_digest());
    }
    assert_ne!(a.digest(), b.digest());
    assert_eq!(State::scratch().digest(), None);
}

#[test]
fn ignore_cache_marks_steps_and_leaves_sources_and_digests() {
    let mut def = marshal(&sample()).unwrap();
    let before = def.terminal_digest();
    def.ignore_cache().unwrap();
    assert_eq!(def.terminal_digest(), before);
    let mut steps = 0;
    for (digest, op) in def.ops().unwrap() {
        let md = def.metadata.get(digest.as_str());
        match op.op {
            Some(Op::Exec(_) | Op::File(_)) => {
                steps += 1;
                let md = md.expect("a step has metadata");
                assert!(md.ignore_cache);
                assert_eq!(md.caps.get("meta.ignorecache"), Some(&true));
            }
            Some(Op::Source(_)) => assert!(md.is_none_or(|m| !m.ignore_cache)),
            None => {}
        }
    }
    assert!(steps >= 2, "{steps}");
}
