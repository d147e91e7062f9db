//! BuildKit's LLB messages (`solver/pb/ops.proto`, package `pb`), written by hand as prost
//! structs with BuildKit's field numbers. Only the fields kiln sets or reads are declared;
//! prost skips unknown fields when decoding, so definitions from newer clients still decode.
//! Maps are `BTreeMap` so that encoding is deterministic (keys in sorted order, as BuildKit's
//! own gogo marshaller writes them).

use std::collections::BTreeMap;

/// A vertex of the LLB graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<Input>,
    #[prost(oneof = "op::Op", tags = "2, 3, 4")]
    pub op: Option<op::Op>,
    #[prost(message, optional, tag = "10")]
    pub platform: Option<Platform>,
    #[prost(message, optional, tag = "11")]
    pub constraints: Option<WorkerConstraints>,
}

pub mod op {
    /// The kind of vertex.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        #[prost(message, tag = "2")]
        Exec(super::ExecOp),
        #[prost(message, tag = "3")]
        Source(super::SourceOp),
        #[prost(message, tag = "4")]
        File(super::FileOp),
    }
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Platform {
    #[prost(string, tag = "1")]
    pub architecture: String,
    #[prost(string, tag = "2")]
    pub os: String,
    #[prost(string, tag = "3")]
    pub variant: String,
    #[prost(string, tag = "4")]
    pub os_version: String,
    #[prost(string, repeated, tag = "5")]
    pub os_features: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerConstraints {
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
}

/// An edge: output `index` of the op whose marshalled bytes hash to `digest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Input {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecOp {
    #[prost(message, optional, tag = "1")]
    pub meta: Option<Meta>,
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    #[prost(enumeration = "NetMode", tag = "3")]
    pub network: i32,
    #[prost(enumeration = "SecurityMode", tag = "4")]
    pub security: i32,
    #[prost(message, repeated, tag = "5")]
    pub secretenv: Vec<SecretEnv>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    #[prost(string, repeated, tag = "1")]
    pub args: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub env: Vec<String>,
    #[prost(string, tag = "3")]
    pub cwd: String,
    #[prost(string, tag = "4")]
    pub user: String,
    #[prost(message, optional, tag = "5")]
    pub proxy_env: Option<ProxyEnv>,
    #[prost(message, repeated, tag = "6")]
    pub extra_hosts: Vec<HostIp>,
    #[prost(string, tag = "7")]
    pub hostname: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProxyEnv {
    #[prost(string, tag = "1")]
    pub http_proxy: String,
    #[prost(string, tag = "2")]
    pub https_proxy: String,
    #[prost(string, tag = "3")]
    pub ftp_proxy: String,
    #[prost(string, tag = "4")]
    pub no_proxy: String,
    #[prost(string, tag = "5")]
    pub all_proxy: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HostIp {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(string, tag = "2")]
    pub ip: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NetMode {
    /// The engine's sandbox network.
    Unset = 0,
    Host = 1,
    None = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SecurityMode {
    Sandbox = 0,
    Insecure = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretEnv {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bool, tag = "3")]
    pub optional: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(int64, tag = "1")]
    pub input: i64,
    #[prost(string, tag = "2")]
    pub selector: String,
    #[prost(string, tag = "3")]
    pub dest: String,
    #[prost(int64, tag = "4")]
    pub output: i64,
    #[prost(bool, tag = "5")]
    pub readonly: bool,
    #[prost(enumeration = "MountType", tag = "6")]
    pub mount_type: i32,
    #[prost(message, optional, tag = "19")]
    pub tmpfs_opt: Option<TmpfsOpt>,
    #[prost(message, optional, tag = "20")]
    pub cache_opt: Option<CacheOpt>,
    #[prost(message, optional, tag = "21")]
    pub secret_opt: Option<SecretOpt>,
    #[prost(message, optional, tag = "22")]
    pub ssh_opt: Option<SshOpt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MountType {
    Bind = 0,
    Secret = 1,
    Ssh = 2,
    Cache = 3,
    Tmpfs = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TmpfsOpt {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheOpt {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(enumeration = "CacheSharingOpt", tag = "2")]
    pub sharing: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CacheSharingOpt {
    Shared = 0,
    Private = 1,
    Locked = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretOpt {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SshOpt {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

/// A source: `docker-image://REF`, `local://NAME`, `git://…`, `https://…`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceOp {
    #[prost(string, tag = "1")]
    pub identifier: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

/// Per-vertex metadata; not part of the op's digest.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OpMetadata {
    #[prost(bool, tag = "1")]
    pub ignore_cache: bool,
    #[prost(btree_map = "string, string", tag = "2")]
    pub description: BTreeMap<String, String>,
    #[prost(message, optional, tag = "4")]
    pub export_cache: Option<ExportCache>,
    #[prost(btree_map = "string, bool", tag = "5")]
    pub caps: BTreeMap<String, bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportCache {
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// A marshalled LLB graph: op bytes in dependency order (the terminal op last) and metadata
/// keyed by op digest.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definition {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub def: Vec<Vec<u8>>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub metadata: BTreeMap<String, OpMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOp {
    #[prost(message, repeated, tag = "2")]
    pub actions: Vec<FileAction>,
}

/// One file action. `input`/`secondary_input` index the op's inputs, or, at
/// `inputs.len() + i`, the result of action `i`; -1 means none (scratch).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileAction {
    #[prost(int64, tag = "1")]
    pub input: i64,
    #[prost(int64, tag = "2")]
    pub secondary_input: i64,
    #[prost(int64, tag = "3")]
    pub output: i64,
    #[prost(oneof = "file_action::Action", tags = "4, 5, 6, 7")]
    pub action: Option<file_action::Action>,
}

pub mod file_action {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Action {
        #[prost(message, tag = "4")]
        Copy(super::FileActionCopy),
        #[prost(message, tag = "5")]
        Mkfile(super::FileActionMkFile),
        #[prost(message, tag = "6")]
        Mkdir(super::FileActionMkDir),
        #[prost(message, tag = "7")]
        Rm(super::FileActionRm),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionCopy {
    #[prost(string, tag = "1")]
    pub src: String,
    #[prost(string, tag = "2")]
    pub dest: String,
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    /// -1: keep the source's mode.
    #[prost(int32, tag = "4")]
    pub mode: i32,
    #[prost(bool, tag = "5")]
    pub follow_symlink: bool,
    #[prost(bool, tag = "6")]
    pub dir_copy_contents: bool,
    #[prost(bool, tag = "7")]
    pub attempt_unpack_docker_compatibility: bool,
    #[prost(bool, tag = "8")]
    pub create_dest_path: bool,
    #[prost(bool, tag = "9")]
    pub allow_wildcard: bool,
    #[prost(bool, tag = "10")]
    pub allow_empty_wildcard: bool,
    /// -1: no override.
    #[prost(int64, tag = "11")]
    pub timestamp: i64,
    #[prost(string, repeated, tag = "12")]
    pub include_patterns: Vec<String>,
    #[prost(string, repeated, tag = "13")]
    pub exclude_patterns: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkFile {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(int32, tag = "2")]
    pub mode: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkDir {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(int32, tag = "2")]
    pub mode: i32,
    #[prost(bool, tag = "3")]
    pub make_parents: bool,
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionRm {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(bool, tag = "2")]
    pub allow_not_found: bool,
    #[prost(bool, tag = "3")]
    pub allow_wildcard: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChownOpt {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserOpt>,
    #[prost(message, optional, tag = "2")]
    pub group: Option<UserOpt>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UserOpt {
    #[prost(oneof = "user_opt::User", tags = "1, 2")]
    pub user: Option<user_opt::User>,
}

pub mod user_opt {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum User {
        #[prost(message, tag = "1")]
        ByName(super::NamedUserOpt),
        #[prost(uint32, tag = "2")]
        ById(u32),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedUserOpt {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub input: i64,
}
