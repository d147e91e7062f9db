//! Source ops, the states a chain starts from (as BuildKit's `client/llb/source.go`): a
//! registry image and a local directory the client session uploads.

use std::collections::BTreeMap;

use crate::meta::metadata;
use crate::pb;
use crate::platform::Platform;
use crate::state::{Node, Output, State};

impl State {
    /// A registry image (`reference` fully qualified, e.g. `docker.io/library/debian:bookworm`).
    pub fn image(reference: &str, platform: &Platform) -> State {
        let op = pb::op::Op::Source(pb::SourceOp {
            identifier: format!("docker-image://{reference}"),
            attrs: BTreeMap::new(),
        });
        let md = metadata(None, &["source.image", "platform"]);
        State::from_output(
            Output {
                node: Node::new(Vec::new(), op, Some(platform), md),
                index: 0,
            },
            Some(platform.clone()),
        )
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
        State::from_output(
            Output {
                node: Node::new(Vec::new(), op, None, md),
                index: 0,
            },
            None,
        )
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
