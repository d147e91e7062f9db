//! Deterministic marshalling of states into `pb.Definition`, and digests.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::pb;
use crate::state::{Node, Output, State};

/// A content digest, `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in Sha256::digest(bytes) {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        Digest(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a state could not be marshalled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarshalError {
    #[error("cannot marshal an empty (scratch) state: it has no operation to solve")]
    Scratch,
}

/// Bytes that are not an LLB definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LLB definition: {0}")]
pub struct DecodeError(String);

/// A marshalled LLB graph: op bytes with every op after its inputs and the terminal op (the
/// one with no operation and a single input, the result) last; metadata by op digest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Definition {
    pub def: Vec<Vec<u8>>,
    pub metadata: BTreeMap<String, pb::OpMetadata>,
}

impl Definition {
    pub fn to_pb(&self) -> pb::Definition {
        pb::Definition {
            def: self.def.clone(),
            metadata: self.metadata.clone(),
        }
    }

    pub fn from_pb(def: pb::Definition) -> Definition {
        Definition {
            def: def.def,
            metadata: def.metadata,
        }
    }

    /// The serialised `pb.Definition`, as `buildctl build` reads it from stdin.
    pub fn encode(&self) -> Vec<u8> {
        self.to_pb().encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Definition, DecodeError> {
        pb::Definition::decode(bytes)
            .map(Definition::from_pb)
            .map_err(|e| DecodeError(e.to_string()))
    }

    /// The digest of the terminal op: identifies the result of the whole graph.
    pub fn terminal_digest(&self) -> Digest {
        Digest::of(self.def.last().map(Vec::as_slice).unwrap_or_default())
    }

    /// Mark every exec and file op `ignore_cache` (`kiln build --no-cache`): BuildKit then
    /// runs each step again instead of taking it from its cache, whatever the daemon (the
    /// Control API has no such flag; op metadata is what v0.8 and newer all honour). Sources
    /// (images, contexts) are left as they are: they are fetched by content, not cached steps.
    /// Metadata is not part of an op's digest, so the graph itself is unchanged.
    pub fn ignore_cache(&mut self) -> Result<(), DecodeError> {
        let Some((_, ops)) = self.def.split_last() else {
            return Ok(());
        };
        for bytes in ops {
            let op = pb::Op::decode(bytes.as_slice()).map_err(|e| DecodeError(e.to_string()))?;
            if matches!(op.op, Some(pb::op::Op::Exec(_) | pb::op::Op::File(_))) {
                let md = self
                    .metadata
                    .entry(Digest::of(bytes).to_string())
                    .or_default();
                md.ignore_cache = true;
                md.caps.insert("meta.ignorecache".to_string(), true);
            }
        }
        Ok(())
    }

    /// Every op decoded, with its digest, in definition order.
    pub fn ops(&self) -> Result<Vec<(Digest, pb::Op)>, DecodeError> {
        self.def
            .iter()
            .map(|bytes| {
                pb::Op::decode(bytes.as_slice())
                    .map(|op| (Digest::of(bytes), op))
                    .map_err(|e| DecodeError(e.to_string()))
            })
            .collect()
    }
}

/// Marshal the graph that produces `state` into a definition. Deterministic: the same state
/// gives the same bytes on every run and machine (fields in number order, maps sorted, ops in
/// depth-first input order).
pub fn marshal(state: &State) -> Result<Definition, MarshalError> {
    let output = state.output().ok_or(MarshalError::Scratch)?;
    let mut def = Definition::default();
    let mut seen_nodes: HashSet<*const Node> = HashSet::new();
    let mut seen_digests: HashSet<&str> = HashSet::new();
    // Iterative post-order walk: deep chains must not overflow the stack.
    let mut stack: Vec<(&Arc<Node>, bool)> = vec![(&output.node, false)];
    let mut order: Vec<&Arc<Node>> = Vec::new();
    while let Some((node, expanded)) = stack.pop() {
        let ptr = Arc::as_ptr(node);
        if expanded {
            if seen_nodes.insert(ptr) {
                order.push(node);
            }
            continue;
        }
        if seen_nodes.contains(&ptr) {
            continue;
        }
        stack.push((node, true));
        for input in node.inputs.iter().rev() {
            if !seen_nodes.contains(&Arc::as_ptr(&input.node)) {
                stack.push((&input.node, false));
            }
        }
    }
    for node in order {
        let encoded = &node.encoded;
        if !seen_digests.insert(encoded.digest.as_str()) {
            continue;
        }
        def.def.push(encoded.bytes.clone());
        let metadata = node.metadata.to_pb();
        if metadata != pb::OpMetadata::default() {
            def.metadata.insert(encoded.digest.to_string(), metadata);
        }
    }
    def.def.push(terminal_op(output));
    Ok(def)
}

/// The serialised terminal op: no op, one input pointing at the result.
pub(crate) fn terminal_op(output: &Output) -> Vec<u8> {
    pb::Op {
        inputs: vec![pb::Input {
            digest: output.node.encoded.digest.to_string(),
            index: output.index,
        }],
        ..pb::Op::default()
    }
    .encode_to_vec()
}
