//! The daemon's status stream as kiln's own progress events.

use crate::proto::control;

/// One thing that happened in a solve. Vertex updates repeat for the same digest as its state
/// changes: key by `digest` and let later events replace earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Vertex {
        digest: String,
        name: String,
        cached: bool,
        started: bool,
        completed: bool,
        /// Set on the vertex that failed.
        error: Option<String>,
    },
    /// Output of a RUN step: `stream` 1 is stdout, 2 stderr.
    Log {
        vertex: String,
        stream: i64,
        data: Vec<u8>,
    },
    /// Sub-progress inside a vertex (bytes transferred, layers exported).
    Progress {
        vertex: String,
        id: String,
        current: i64,
        total: i64,
        completed: bool,
    },
}

impl Event {
    pub(crate) fn from_status(update: control::StatusResponse) -> Vec<Event> {
        let mut out = Vec::new();
        for v in update.vertexes {
            out.push(Event::Vertex {
                digest: v.digest,
                name: v.name,
                cached: v.cached,
                started: v.started.is_some(),
                completed: v.completed.is_some(),
                error: (!v.error.is_empty()).then_some(v.error),
            });
        }
        for s in update.statuses {
            out.push(Event::Progress {
                vertex: s.vertex,
                id: s.id,
                current: s.current,
                total: s.total,
                completed: s.completed.is_some(),
            });
        }
        for l in update.logs {
            out.push(Event::Log {
                vertex: l.vertex,
                stream: l.stream,
                data: l.msg,
            });
        }
        out
    }
}
