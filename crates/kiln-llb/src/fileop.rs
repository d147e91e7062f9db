//! File ops (as BuildKit's `client/llb/fileop.go`): copy, mkdir, mkfile and rm actions
//! chained into one FileOp, with the owners of what they create.

use crate::meta::{metadata, resolve};
use crate::pb;
use crate::state::{Node, Output, State, input_index};

impl State {
    /// Apply file actions on top of this state (relative paths resolve against its cwd).
    pub fn file(&self, actions: FileActions) -> State {
        if actions.actions.is_empty() {
            return self.clone();
        }
        let mut inputs: Vec<Output> = Vec::new();
        if let Some(o) = self.output() {
            inputs.push(o.clone());
        }
        let base_input = if self.output().is_some() { 0 } else { -1 };
        let mut secondary_of = |state: &State| input_index(&mut inputs, state);
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
