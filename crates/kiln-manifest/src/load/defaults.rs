//! `[defaults]`: the per-file settings a target starts from (`network`, `ca-certificates`,
//! `platform`, and the remote `cache`), and the keys a target can override them with.

use std::path::Path;

use kiln_reference::{Platform, Reference};
use toml::de::DeTable;

use crate::cx::{Cx, join, one_of, suggest};
use crate::*;

const DEFAULT_KEYS: &[&str] = &["network", "ca-certificates", "platform", "cache"];
const NETWORKS: &[&str] = &["default", "host", "none"];

/// Per-file settings from `[defaults]`.
#[derive(Clone)]
pub(super) struct Defaults {
    pub(super) network: NetworkMode,
    pub(super) ca: CaCertificates,
    pub(super) ca_origin: Option<Origin>,
    pub(super) platform: Platform,
    /// `[defaults] cache`: the registry repository for the remote build cache.
    pub(super) cache: Option<Reference>,
}

pub(super) fn read_defaults(cx: &Cx<'_>, doc: &DeTable<'_>) -> Defaults {
    let mut d = Defaults {
        network: NetworkMode::Default,
        ca: CaCertificates::None,
        ca_origin: None,
        platform: Platform::linux_amd64(),
        cache: None,
    };
    let Some(table) = cx.section(doc, "defaults") else {
        return d;
    };
    cx.keys(table, "defaults", DEFAULT_KEYS);
    apply_common(cx, table, "defaults", &mut d);
    if let Some(v) = table.get("cache") {
        if let Some(s) = cx.text(v, "defaults.cache") {
            let expected = "a registry repository without tag or digest, e.g. \
                            `registry.example.com/team/cache`";
            match Reference::parse(&s) {
                Ok(r) if r.tag().is_none() && r.digest().is_none() => d.cache = Some(r),
                Ok(_) => cx.error(
                    v.span(),
                    "defaults.cache",
                    format!("`{s}` has a tag or digest; kiln tags the cache per target"),
                    Some(expected.into()),
                    None,
                ),
                Err(e) => cx.error(
                    v.span(),
                    "defaults.cache",
                    e.to_string(),
                    Some(expected.into()),
                    None,
                ),
            }
        }
    }
    d
}

/// `network`, `ca-certificates` and `platform`, in `[defaults]` or a target.
pub(super) fn apply_common(cx: &Cx<'_>, table: &DeTable<'_>, path: &str, d: &mut Defaults) {
    if let Some(v) = table.get("network") {
        let key = join(path, "network");
        if let Some(s) = cx.text(v, &key) {
            match s.as_str() {
                "default" => d.network = NetworkMode::Default,
                "host" => d.network = NetworkMode::Host,
                "none" => d.network = NetworkMode::None,
                other => cx.error(
                    v.span(),
                    &key,
                    format!("unknown network mode `{other}`"),
                    Some(one_of(NETWORKS)),
                    suggest(other, NETWORKS.iter().copied())
                        .map(|s| format!("did you mean `{s}`?")),
                ),
            }
        }
    }
    if let Some(v) = table.get("ca-certificates") {
        let key = join(path, "ca-certificates");
        if let Some(s) = cx.text(v, &key) {
            d.ca_origin = Some(Origin {
                key: key.clone(),
                location: cx.loc(v.span()),
            });
            d.ca = match s.as_str() {
                "none" => CaCertificates::None,
                "host" => CaCertificates::Host,
                "" => {
                    cx.error(
                        v.span(),
                        &key,
                        "empty path",
                        Some("`none`, `host` or the path of a CA bundle".into()),
                        None,
                    );
                    CaCertificates::None
                }
                path => {
                    let dir = cx.file.parent().unwrap_or(Path::new(""));
                    CaCertificates::Path(dir.join(path))
                }
            };
        }
    }
    if let Some(v) = table.get("platform") {
        let key = join(path, "platform");
        if let Some(s) = cx.text(v, &key) {
            if let Ok(platform) = s.parse::<Platform>() {
                d.platform = platform;
            } else {
                cx.error(
                    v.span(),
                    &key,
                    format!("invalid platform `{s}`"),
                    Some("`os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm64/v8`".into()),
                    None,
                );
            }
        }
    }
}
