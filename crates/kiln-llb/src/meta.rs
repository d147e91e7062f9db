//! What a state carries for the steps after it (as BuildKit's `client/llb/meta.go`): the
//! default `PATH`, working directories resolved against the current one, environment
//! variables set or replaced by name; and an op's own metadata (progress name, capabilities,
//! `ignore_cache`).

use crate::pb;

/// The `PATH` a RUN step gets when neither the image nor the manifest set one (BuildKit's own
/// default for Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `p` resolved against `base` unless absolute; a trailing slash is kept.
pub(crate) fn resolve(base: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        let rel = p.trim_start_matches("./");
        format!("{}/{}", base.trim_end_matches('/'), rel)
    }
}

/// Set `key` to `value` in `env`: in its place if it is there, else added last.
pub(crate) fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
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

pub(crate) fn metadata(name: Option<&str>, caps: &[&'static str]) -> Meta {
    Meta {
        name: name.map(str::to_string),
        caps: caps.to_vec(),
        ignore_cache: false,
    }
}
