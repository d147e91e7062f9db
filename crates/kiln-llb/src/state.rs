//! States and the graph of ops behind them (as BuildKit's `client/llb/state.go`): a state is
//! an op's output (or scratch) plus the env, cwd, user and platform the next RUN step
//! inherits. The ops that derive new states are in `source`, `exec` and `fileop`.

use std::fmt;
use std::sync::Arc;

use prost::Message;

use crate::marshal::Digest;
use crate::meta::{Meta, resolve, set_env};
use crate::pb;
use crate::platform::Platform;

/// One vertex: its inputs, its serialised op and digest, and its metadata. Nodes are built
/// bottom-up (an input always exists before the ops that use it), so each op is encoded once,
/// when it is created; the decoded op is not kept.
pub(crate) struct Node {
    pub(crate) inputs: Vec<Output>,
    pub(crate) metadata: Meta,
    pub(crate) encoded: Encoded,
}

pub(crate) struct Encoded {
    pub(crate) digest: Digest,
    pub(crate) bytes: Vec<u8>,
}

impl Node {
    pub(crate) fn new(
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

/// The index of `state`'s output among an op's `inputs`, added if it is not there yet; `-1`
/// for scratch (no input).
pub(crate) fn input_index(inputs: &mut Vec<Output>, state: &State) -> i64 {
    match state.output() {
        None => -1,
        Some(o) => match inputs.iter().position(|i| i.same(o)) {
            Some(p) => p as i64,
            None => {
                inputs.push(o.clone());
                inputs.len() as i64 - 1
            }
        },
    }
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> State {
        State::default()
    }

    /// A state of `output` with no env, cwd or user of its own (a source, a mount's result).
    pub(crate) fn from_output(output: Output, platform: Option<Platform>) -> State {
        State {
            output: Some(output),
            platform,
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
        set_env(env, key, value);
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

    /// This state's settings on another op's output.
    pub(crate) fn derive(&self, output: Output) -> State {
        State {
            output: Some(output),
            ..self.clone()
        }
    }
}
