//! fsutil's wire messages (`types/wire.proto`, `types/stat.proto`, package `fsutil.types`),
//! written by hand with fsutil's field numbers.

use std::collections::BTreeMap;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Packet {
    #[prost(enumeration = "PacketType", tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub stat: Option<Stat>,
    #[prost(uint32, tag = "3")]
    pub id: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PacketType {
    PacketStat = 0,
    PacketReq = 1,
    PacketData = 2,
    PacketFin = 3,
    PacketErr = 4,
}

/// One file's metadata. `mode` is Go's `os.FileMode` (dir = 1<<31, symlink = 1<<27), not
/// Unix `st_mode`; `mod_time` is Unix nanoseconds.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Stat {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(uint32, tag = "2")]
    pub mode: u32,
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    #[prost(uint32, tag = "4")]
    pub gid: u32,
    #[prost(int64, tag = "5")]
    pub size: i64,
    #[prost(int64, tag = "6")]
    pub mod_time: i64,
    #[prost(string, tag = "7")]
    pub linkname: String,
    #[prost(int64, tag = "8")]
    pub devmajor: i64,
    #[prost(int64, tag = "9")]
    pub devminor: i64,
    #[prost(btree_map = "string, bytes", tag = "10")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}
