//! Exec ops, RUN steps (as BuildKit's `client/llb/exec.go`): the command, its environment,
//! working directory, user and network, its mounts, and the states it produces.

use std::sync::Arc;

use crate::meta::{DEFAULT_PATH, metadata, resolve, set_env};
use crate::pb;
use crate::state::{Node, Output, State, input_index};

impl State {
    /// Run a command on top of this state.
    pub fn run(&self, exec: Exec) -> ExecState {
        let mut inputs: Vec<Output> = Vec::new();
        let mut input_of = |state: &State| input_index(&mut inputs, state);
        let mut caps = vec!["exec.meta.base", "exec.mount.bind", "constraints"];
        if self.platform().is_some() {
            caps.push("platform");
        }
        let mut mounts = vec![pb::Mount {
            input: input_of(self),
            dest: "/".to_string(),
            mount_type: pb::MountType::Bind as i32,
            ..pb::Mount::default()
        }];
        for mount in &exec.mounts {
            let m = match mount {
                Mount::Bind {
                    dest,
                    source,
                    selector,
                    readonly,
                } => {
                    if selector.is_some() {
                        caps.push("exec.mount.selector");
                    }
                    pb::Mount {
                        input: input_of(source),
                        selector: selector.clone().unwrap_or_default(),
                        dest: dest.clone(),
                        readonly: *readonly,
                        mount_type: pb::MountType::Bind as i32,
                        ..pb::Mount::default()
                    }
                }
                Mount::Cache { dest, id, sharing } => {
                    caps.extend(["exec.mount.cache", "exec.mount.cache.sharing"]);
                    pb::Mount {
                        input: -1,
                        dest: dest.clone(),
                        mount_type: pb::MountType::Cache as i32,
                        cache_opt: Some(pb::CacheOpt {
                            id: id.clone(),
                            sharing: sharing.to_pb() as i32,
                        }),
                        ..pb::Mount::default()
                    }
                }
                Mount::Secret {
                    dest,
                    id,
                    uid,
                    gid,
                    mode,
                    optional,
                } => {
                    caps.push("exec.mount.secret");
                    pb::Mount {
                        input: -1,
                        dest: dest.clone(),
                        mount_type: pb::MountType::Secret as i32,
                        secret_opt: Some(pb::SecretOpt {
                            id: id.clone(),
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                            optional: *optional,
                        }),
                        ..pb::Mount::default()
                    }
                }
                Mount::Tmpfs { dest } => {
                    caps.push("exec.mount.tmpfs");
                    pb::Mount {
                        input: -1,
                        dest: dest.clone(),
                        mount_type: pb::MountType::Tmpfs as i32,
                        tmpfs_opt: Some(pb::TmpfsOpt::default()),
                        ..pb::Mount::default()
                    }
                }
            };
            mounts.push(m);
        }
        // Mounts in destination order (the root first), outputs numbered in that order:
        // the same exec always marshals the same way.
        mounts.sort_by(|a, b| a.dest.cmp(&b.dest));
        let mut next_output = 0;
        let mut outputs = Vec::new();
        for m in &mut mounts {
            let writable = m.mount_type == pb::MountType::Bind as i32 && !m.readonly;
            if writable {
                m.output = next_output;
                outputs.push((m.dest.clone(), next_output));
                next_output += 1;
            } else {
                m.output = -1;
            }
        }

        // KEY=VALUE, the state's environment overridden by the step's, PATH defaulted.
        let state_env = self.env();
        let mut env: Vec<String> = Vec::with_capacity(state_env.len() + exec.env.len() + 1);
        let pair = |k: &str, v: &str| {
            let mut s = String::with_capacity(k.len() + v.len() + 1);
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s
        };
        for (k, v) in state_env {
            let v = exec
                .env
                .iter()
                .find(|(key, _)| key == k)
                .map_or(v, |(_, v)| v);
            env.push(pair(k, v));
        }
        for (k, v) in &exec.env {
            if !state_env.iter().any(|(key, _)| key == k) {
                env.push(pair(k, v));
            }
        }
        if !state_env.iter().chain(&exec.env).any(|(k, _)| k == "PATH") {
            env.push(pair("PATH", DEFAULT_PATH));
        }
        let cwd = match &exec.cwd {
            Some(dir) => resolve(self.cwd(), dir),
            None => self.cwd().to_string(),
        };
        let user = exec
            .user
            .clone()
            .or_else(|| self.user().map(str::to_string))
            .unwrap_or_default();
        if exec.network != NetMode::Sandbox {
            caps.push("exec.meta.network");
        }
        if exec.ignore_cache {
            caps.push("meta.ignorecache");
        }
        let op = pb::op::Op::Exec(pb::ExecOp {
            meta: Some(pb::Meta {
                args: exec.args,
                env,
                cwd,
                user,
                ..pb::Meta::default()
            }),
            mounts,
            network: exec.network.to_pb() as i32,
            security: pb::SecurityMode::Sandbox as i32,
            secretenv: Vec::new(),
        });
        let mut md = metadata(exec.name.as_deref(), &caps);
        md.ignore_cache = exec.ignore_cache;
        ExecState {
            base: self.clone(),
            node: Node::new(inputs, op, self.platform(), md),
            outputs,
        }
    }
}

/// Network of a RUN step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetMode {
    #[default]
    Sandbox,
    Host,
    None,
}

impl NetMode {
    fn to_pb(self) -> pb::NetMode {
        match self {
            NetMode::Sandbox => pb::NetMode::Unset,
            NetMode::Host => pb::NetMode::Host,
            NetMode::None => pb::NetMode::None,
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

impl CacheSharing {
    fn to_pb(self) -> pb::CacheSharingOpt {
        match self {
            CacheSharing::Shared => pb::CacheSharingOpt::Shared,
            CacheSharing::Private => pb::CacheSharingOpt::Private,
            CacheSharing::Locked => pb::CacheSharingOpt::Locked,
        }
    }
}

/// A mount of a RUN step besides its root filesystem.
#[derive(Debug, Clone)]
pub enum Mount {
    /// Another state's filesystem (or the `selector` path of it).
    Bind {
        dest: String,
        source: State,
        selector: Option<String>,
        readonly: bool,
    },
    /// A persistent cache directory shared across builds by `id`.
    Cache {
        dest: String,
        id: String,
        sharing: CacheSharing,
    },
    /// A file served by the client session under `id`; never part of any layer.
    Secret {
        dest: String,
        id: String,
        uid: u32,
        gid: u32,
        mode: u32,
        optional: bool,
    },
    Tmpfs {
        dest: String,
    },
}

/// A RUN step.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub args: Vec<String>,
    /// Added to (or replacing) the state's environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub network: NetMode,
    pub mounts: Vec<Mount>,
    /// Progress name (`llb.customname`).
    pub name: Option<String>,
    /// Never reuse a cached result of this step.
    pub ignore_cache: bool,
}

impl Exec {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Exec {
        Exec {
            args: args.into_iter().map(Into::into).collect(),
            ..Exec::default()
        }
    }

    /// `/bin/sh -c command`.
    pub fn shell(command: &str) -> Exec {
        Exec::new(["/bin/sh", "-c", command])
    }

    pub fn env(mut self, key: &str, value: &str) -> Exec {
        set_env(&mut self.env, key, value);
        self
    }

    pub fn cwd(mut self, dir: &str) -> Exec {
        self.cwd = Some(dir.to_string());
        self
    }

    pub fn user(mut self, user: &str) -> Exec {
        self.user = Some(user.to_string());
        self
    }

    pub fn network(mut self, network: NetMode) -> Exec {
        self.network = network;
        self
    }

    pub fn mount(mut self, mount: Mount) -> Exec {
        self.mounts.push(mount);
        self
    }

    pub fn name(mut self, name: &str) -> Exec {
        self.name = Some(name.to_string());
        self
    }

    pub fn ignore_cache(mut self, ignore: bool) -> Exec {
        self.ignore_cache = ignore;
        self
    }
}

/// The result of a RUN step: its root filesystem and writable bind mounts.
#[derive(Clone)]
pub struct ExecState {
    base: State,
    node: Arc<Node>,
    outputs: Vec<(String, i64)>,
}

impl ExecState {
    /// The root filesystem after the step, with the base state's env, cwd and user.
    pub fn root(&self) -> State {
        self.base.derive(Output {
            node: self.node.clone(),
            index: 0,
        })
    }

    /// The contents of the writable bind mount at `dest` after the step.
    pub fn mount(&self, dest: &str) -> Option<State> {
        let index = self.outputs.iter().find(|(d, _)| d == dest)?.1;
        Some(State::from_output(
            Output {
                node: self.node.clone(),
                index,
            },
            self.base.platform().cloned(),
        ))
    }
}
