//! States and the operations that derive new states from them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prost::Message;

use crate::marshal::Digest;
use crate::pb;
use crate::platform::Platform;

/// The `PATH` a RUN step gets when neither the image nor the manifest set one (BuildKit's own
/// default for Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One vertex: its inputs, its serialised op and digest, and its metadata. Nodes are built
/// bottom-up (an input always exists before the ops that use it), so each op is encoded once,
/// when it is created; the decoded op is not kept.
pub(crate) struct Node {
    pub(crate) inputs: Vec<Output>,
    pub(crate) metadata: Meta,
    pub(crate) encoded: Encoded,
}

/// An op's metadata in compact form (static capability names, no maps); turned into
/// `pb::OpMetadata` only when a definition is marshalled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) name: Option<String>,
    pub(crate) caps: Vec<&'static str>,
    pub(crate) ignore_cache: bool,
}

impl Meta {
    pub(crate) fn to_pb(&self) -> pb::OpMetadata {
        let mut md = pb::OpMetadata {
            ignore_cache: self.ignore_cache,
            ..pb::OpMetadata::default()
        };
        if let Some(name) = &self.name {
            md.description
                .insert("llb.customname".to_string(), name.clone());
            md.caps.insert("meta.description".to_string(), true);
        }
        for cap in &self.caps {
            md.caps.insert((*cap).to_string(), true);
        }
        md
    }
}

pub(crate) struct Encoded {
    pub(crate) digest: Digest,
    pub(crate) bytes: Vec<u8>,
}

impl Node {
    fn new(
        inputs: Vec<Output>,
        op: pb::op::Op,
        platform: Option<&Platform>,
        metadata: Meta,
    ) -> Arc<Node> {
        let bytes = pb::Op {
            inputs: inputs
                .iter()
                .map(|i| pb::Input {
                    digest: i.node.encoded.digest.to_string(),
                    index: i.index,
                })
                .collect(),
            op: Some(op),
            platform: platform.map(pb::Platform::from),
            constraints: None,
        }
        .encode_to_vec();
        Arc::new(Node {
            inputs,
            metadata,
            encoded: Encoded {
                digest: Digest::of(&bytes),
                bytes,
            },
        })
    }
}

impl Drop for Node {
    /// Unlinks inputs iteratively: dropping a long chain must not recurse once per op. Only
    /// inputs this node owns alone are taken apart here; shared ones just lose a reference.
    fn drop(&mut self) {
        let mut stack: Vec<Node> = Vec::new();
        let take = |inputs: &mut Vec<Output>, stack: &mut Vec<Node>| {
            for input in inputs.drain(..) {
                if let Ok(node) = Arc::try_unwrap(input.node) {
                    stack.push(node);
                }
            }
        };
        take(&mut self.inputs, &mut stack);
        while let Some(mut node) = stack.pop() {
            take(&mut node.inputs, &mut stack);
        }
    }
}

/// One output of one op.
#[derive(Clone)]
pub(crate) struct Output {
    pub(crate) node: Arc<Node>,
    pub(crate) index: i64,
}

impl Output {
    fn same(&self, other: &Output) -> bool {
        Arc::ptr_eq(&self.node, &other.node) && self.index == other.index
    }
}

/// A filesystem (the output of an op, or empty: scratch) plus the process settings that the
/// next RUN step inherits: env, working directory, user, platform.
#[derive(Clone, Default)]
pub struct State {
    output: Option<Output>,
    /// Shared between the many states derived from one another; copied only on change.
    env: Arc<Vec<(String, String)>>,
    cwd: Option<String>,
    user: Option<String>,
    platform: Option<Platform>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            None => f.write_str("State(scratch)"),
            Some(o) => write!(f, "State({}[{}])", o.node.encoded.digest, o.index),
        }
    }
}

fn metadata(name: Option<&str>, caps: &[&'static str]) -> Meta {
    Meta {
        name: name.map(str::to_string),
        caps: caps.to_vec(),
        ignore_cache: false,
    }
}

/// `p` resolved against `base` unless absolute; a trailing slash is kept.
fn resolve(base: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        let rel = p.trim_start_matches("./");
        format!("{}/{}", base.trim_end_matches('/'), rel)
    }
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> State {
        State::default()
    }

    /// A registry image (`reference` fully qualified, e.g. `docker.io/library/debian:bookworm`).
    pub fn image(reference: &str, platform: &Platform) -> State {
        let op = pb::op::Op::Source(pb::SourceOp {
            identifier: format!("docker-image://{reference}"),
            attrs: BTreeMap::new(),
        });
        let md = metadata(None, &["source.image", "platform"]);
        State {
            output: Some(Output {
                node: Node::new(Vec::new(), op, Some(platform), md),
                index: 0,
            }),
            platform: Some(platform.clone()),
            ..State::default()
        }
    }

    /// Files uploaded by the client session under `name` (`local://name`).
    pub fn local(name: &str, options: &LocalOptions) -> State {
        let mut attrs = BTreeMap::new();
        let mut caps = vec!["source.local"];
        let json = |v: &[String]| serde_json::to_string(v).expect("strings serialise");
        if !options.include.is_empty() {
            attrs.insert("local.includepattern".to_string(), json(&options.include));
            caps.push("source.local.includepatterns");
        }
        if !options.exclude.is_empty() {
            attrs.insert("local.excludepatterns".to_string(), json(&options.exclude));
            caps.push("source.local.excludepatterns");
        }
        if !options.follow_paths.is_empty() {
            attrs.insert("local.followpaths".to_string(), json(&options.follow_paths));
            caps.push("source.local.followpaths");
        }
        if let Some(hint) = &options.shared_key_hint {
            attrs.insert("local.sharedkeyhint".to_string(), hint.clone());
            caps.push("source.local.sharedkeyhint");
        }
        if let Some(unique) = &options.unique {
            attrs.insert("local.unique".to_string(), unique.clone());
            caps.push("source.local.unique");
        }
        let op = pb::op::Op::Source(pb::SourceOp {
            identifier: format!("local://{name}"),
            attrs,
        });
        let md = metadata(options.name.as_deref(), &caps);
        State {
            output: Some(Output {
                node: Node::new(Vec::new(), op, None, md),
                index: 0,
            }),
            ..State::default()
        }
    }

    pub(crate) fn output(&self) -> Option<&Output> {
        self.output.as_ref()
    }

    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// The digest of the op that produces this state (`None` for scratch).
    /// Equal to the terminal digest of this state's marshalled [`crate::Definition`], without
    /// building the definition: O(1).
    pub fn digest(&self) -> Option<Digest> {
        let output = self.output.as_ref()?;
        Some(Digest::of(&crate::marshal::terminal_op(output)))
    }

    /// Set (or replace) an environment variable for later RUN steps.
    pub fn with_env(&self, key: &str, value: &str) -> State {
        let mut s = self.clone();
        let env = Arc::make_mut(&mut s.env);
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
        s
    }

    /// Set the working directory; a relative `dir` resolves against the current one.
    pub fn with_cwd(&self, dir: &str) -> State {
        let mut s = self.clone();
        s.cwd = Some(resolve(self.cwd(), dir));
        s
    }

    pub fn with_user(&self, user: &str) -> State {
        let mut s = self.clone();
        s.user = Some(user.to_string());
        s
    }

    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn cwd(&self) -> &str {
        self.cwd.as_deref().unwrap_or("/")
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    fn derive(&self, output: Output) -> State {
        State {
            output: Some(output),
            ..self.clone()
        }
    }

    /// Run a command on top of this state.
    pub fn run(&self, exec: Exec) -> ExecState {
        let mut inputs: Vec<Output> = Vec::new();
        let mut input_of = |state: &State| -> i64 {
            match &state.output {
                None => -1,
                Some(o) => match inputs.iter().position(|i| i.same(o)) {
                    Some(p) => p as i64,
                    None => {
                        inputs.push(o.clone());
                        inputs.len() as i64 - 1
                    }
                },
            }
        };
        let mut caps = vec!["exec.meta.base", "exec.mount.bind", "constraints"];
        if self.platform.is_some() {
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
        let mut env: Vec<String> = Vec::with_capacity(self.env.len() + exec.env.len() + 1);
        let pair = |k: &str, v: &str| {
            let mut s = String::with_capacity(k.len() + v.len() + 1);
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s
        };
        for (k, v) in self.env.iter() {
            let v = exec
                .env
                .iter()
                .find(|(key, _)| key == k)
                .map_or(v, |(_, v)| v);
            env.push(pair(k, v));
        }
        for (k, v) in &exec.env {
            if !self.env.iter().any(|(key, _)| key == k) {
                env.push(pair(k, v));
            }
        }
        if !self.env.iter().chain(&exec.env).any(|(k, _)| k == "PATH") {
            env.push(pair("PATH", DEFAULT_PATH));
        }
        let cwd = match &exec.cwd {
            Some(dir) => resolve(self.cwd(), dir),
            None => self.cwd().to_string(),
        };
        let user = exec
            .user
            .clone()
            .or_else(|| self.user.clone())
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
            node: Node::new(inputs, op, self.platform.as_ref(), md),
            outputs,
        }
    }

    /// Apply file actions on top of this state (relative paths resolve against its cwd).
    pub fn file(&self, actions: FileActions) -> State {
        if actions.actions.is_empty() {
            return self.clone();
        }
        let mut inputs: Vec<Output> = Vec::new();
        if let Some(o) = &self.output {
            inputs.push(o.clone());
        }
        let base_input = if self.output.is_some() { 0 } else { -1 };
        let mut secondary_of = |state: &State| -> i64 {
            match &state.output {
                None => -1,
                Some(o) => match inputs.iter().position(|i| i.same(o)) {
                    Some(p) => p as i64,
                    None => {
                        inputs.push(o.clone());
                        inputs.len() as i64 - 1
                    }
                },
            }
        };
        let secondaries: Vec<i64> = actions
            .actions
            .iter()
            .map(|a| match a {
                Action::Copy { source, .. } => secondary_of(source),
                _ => -1,
            })
            .collect();
        let n_inputs = inputs.len() as i64;
        let last = actions.actions.len() - 1;
        let cwd = self.cwd();
        let mut pb_actions = Vec::with_capacity(actions.actions.len());
        for (i, action) in actions.actions.iter().enumerate() {
            let input = if i == 0 {
                base_input
            } else {
                n_inputs + i as i64 - 1
            };
            let owner = |chown: &Option<Chown>| chown.as_ref().map(|c| c.to_pb(input));
            let pb_action = match action {
                Action::Mkdir {
                    path,
                    mode,
                    make_parents,
                    chown,
                } => pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                    path: resolve(cwd, path),
                    mode: *mode as i32,
                    make_parents: *make_parents,
                    owner: owner(chown),
                    timestamp: -1,
                }),
                Action::Mkfile {
                    path,
                    mode,
                    data,
                    chown,
                } => pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                    path: resolve(cwd, path),
                    mode: *mode as i32,
                    data: data.clone(),
                    owner: owner(chown),
                    timestamp: -1,
                }),
                Action::Rm {
                    path,
                    allow_not_found,
                    allow_wildcard,
                } => pb::file_action::Action::Rm(pb::FileActionRm {
                    path: resolve(cwd, path),
                    allow_not_found: *allow_not_found,
                    allow_wildcard: *allow_wildcard,
                }),
                Action::Copy {
                    source,
                    src,
                    dest,
                    options: o,
                } => pb::file_action::Action::Copy(pb::FileActionCopy {
                    src: resolve(source.cwd(), src),
                    dest: resolve(cwd, dest),
                    owner: owner(&o.chown),
                    mode: o.mode.map(|m| m as i32).unwrap_or(-1),
                    follow_symlink: o.follow_symlink,
                    dir_copy_contents: o.dir_copy_contents,
                    attempt_unpack_docker_compatibility: o.attempt_unpack,
                    create_dest_path: o.create_dest_path,
                    allow_wildcard: o.allow_wildcard,
                    allow_empty_wildcard: o.allow_empty_wildcard,
                    timestamp: -1,
                    include_patterns: o.include.clone(),
                    exclude_patterns: o.exclude.clone(),
                }),
            };
            pb_actions.push(pb::FileAction {
                input,
                secondary_input: secondaries[i],
                output: if i == last { 0 } else { -1 },
                action: Some(pb_action),
            });
        }
        let md = metadata(actions.name.as_deref(), &["file.base"]);
        let op = pb::op::Op::File(pb::FileOp {
            actions: pb_actions,
        });
        // Like BuildKit's own client: file ops are platform-independent and carry none.
        self.derive(Output {
            node: Node::new(inputs, op, None, md),
            index: 0,
        })
    }
}

/// Options of a local source.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Only paths matching one of these patterns are transferred.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub follow_paths: Vec<String>,
    /// Lets BuildKit reuse the previous upload's files for incremental transfer.
    pub shared_key_hint: Option<String>,
    /// Makes the op distinct per client directory. Without it, two concurrent builds whose
    /// local sources have the same name and patterns are merged into one vertex, and BuildKit
    /// reads the files from whichever build's session it picks.
    pub unique: Option<String>,
    /// Progress name.
    pub name: Option<String>,
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
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
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
        Some(State {
            output: Some(Output {
                node: self.node.clone(),
                index,
            }),
            platform: self.base.platform.clone(),
            ..State::default()
        })
    }
}

/// A user or group, by id or by name (resolved in the destination's /etc/passwd, /etc/group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    Id(u32),
    Name(String),
}

/// Owner of created or copied files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chown {
    pub user: UserSpec,
    pub group: Option<UserSpec>,
}

impl Chown {
    fn to_pb(&self, input: i64) -> pb::ChownOpt {
        let user = |u: &UserSpec| pb::UserOpt {
            user: Some(match u {
                UserSpec::Id(id) => pb::user_opt::User::ById(*id),
                UserSpec::Name(name) => pb::user_opt::User::ByName(pb::NamedUserOpt {
                    name: name.clone(),
                    input,
                }),
            }),
        };
        pb::ChownOpt {
            user: Some(user(&self.user)),
            group: self.group.as_ref().map(user),
        }
    }
}

/// Options of a copy action.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    pub create_dest_path: bool,
    pub allow_wildcard: bool,
    pub allow_empty_wildcard: bool,
    /// Copy a directory's contents rather than the directory itself.
    pub dir_copy_contents: bool,
    pub follow_symlink: bool,
    /// Unpack a tar archive source (ADD semantics).
    pub attempt_unpack: bool,
    pub mode: Option<u32>,
    pub chown: Option<Chown>,
    /// Newer BuildKit only (not v0.8): filter the copied tree.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Action {
    Mkdir {
        path: String,
        mode: u32,
        make_parents: bool,
        chown: Option<Chown>,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
        chown: Option<Chown>,
    },
    Rm {
        path: String,
        allow_not_found: bool,
        allow_wildcard: bool,
    },
    Copy {
        source: State,
        src: String,
        dest: String,
        options: CopyOptions,
    },
}

/// A sequence of file actions, applied in order as one FileOp.
#[derive(Debug, Clone, Default)]
pub struct FileActions {
    actions: Vec<Action>,
    name: Option<String>,
}

impl FileActions {
    pub fn mkdir(mut self, path: &str, mode: u32, make_parents: bool) -> FileActions {
        self.actions.push(Action::Mkdir {
            path: path.to_string(),
            mode,
            make_parents,
            chown: None,
        });
        self
    }

    pub fn mkfile(mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> FileActions {
        self.actions.push(Action::Mkfile {
            path: path.to_string(),
            mode,
            data: data.into(),
            chown: None,
        });
        self
    }

    pub fn rm(mut self, path: &str, allow_not_found: bool) -> FileActions {
        self.actions.push(Action::Rm {
            path: path.to_string(),
            allow_not_found,
            allow_wildcard: false,
        });
        self
    }

    /// Copy `src` of `source` (relative to its cwd) to `dest` (relative to the target's cwd).
    pub fn copy(
        mut self,
        source: &State,
        src: &str,
        dest: &str,
        options: CopyOptions,
    ) -> FileActions {
        self.actions.push(Action::Copy {
            source: source.clone(),
            src: src.to_string(),
            dest: dest.to_string(),
            options,
        });
        self
    }

    /// Progress name.
    pub fn name(mut self, name: &str) -> FileActions {
        self.name = Some(name.to_string());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}
