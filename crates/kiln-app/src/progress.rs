//! Progress of a build as lines of text: `plain` for logs and CI (one line per step started,
//! finished or failed, and each line of a step's output, all prefixed with the stage), `json`
//! for tools (one event object per line).

use std::collections::{BTreeMap, BTreeSet};

use kiln_buildkit::Event;

use crate::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressFormat {
    Plain,
    Json,
}

/// Turns progress into lines; remembers what it has said so repeats are dropped.
pub struct Renderer {
    format: ProgressFormat,
    started: BTreeSet<String>,
    done: BTreeSet<String>,
    names: BTreeMap<String, String>,
    partial: BTreeMap<(String, i64), String>,
}

impl Renderer {
    pub fn new(format: ProgressFormat) -> Renderer {
        Renderer {
            format,
            started: BTreeSet::new(),
            done: BTreeSet::new(),
            names: BTreeMap::new(),
            partial: BTreeMap::new(),
        }
    }

    /// The lines to print for `progress` (possibly none).
    pub fn render(&mut self, progress: &Progress) -> Vec<String> {
        match self.format {
            ProgressFormat::Json => vec![json(progress).to_string()],
            ProgressFormat::Plain => self.plain(progress),
        }
    }

    fn plain(&mut self, progress: &Progress) -> Vec<String> {
        let (target, stage, event) = match progress {
            Progress::Stage { target, stage } => return vec![format!("==> {target}/{stage}")],
            Progress::Engine {
                target,
                stage,
                event,
            } => (target, stage, event),
        };
        let prefix = format!("[{target}/{stage}]");
        match event {
            Event::Vertex {
                digest,
                name,
                cached,
                started,
                completed,
                error,
            } => {
                self.names.insert(digest.clone(), name.clone());
                let mut out = Vec::new();
                if let Some(error) = error {
                    out.push(format!("{prefix} FAILED {name}: {error}"));
                } else if *completed && self.done.insert(digest.clone()) {
                    out.push(format!(
                        "{prefix} {} {name}",
                        if *cached { "CACHED" } else { "DONE" }
                    ));
                } else if *started
                    && !*completed
                    && !self.done.contains(digest)
                    && self.started.insert(digest.clone())
                {
                    out.push(format!("{prefix} RUN {name}"));
                }
                out
            }
            Event::Log {
                vertex,
                stream,
                data,
            } => {
                let key = (vertex.clone(), *stream);
                let buffer = self.partial.entry(key).or_default();
                buffer.push_str(&String::from_utf8_lossy(data));
                let mut out = Vec::new();
                while let Some(i) = buffer.find('\n') {
                    let line: String = buffer.drain(..=i).collect();
                    out.push(format!(
                        "{prefix} | {}",
                        line.trim_end_matches(['\n', '\r'])
                    ));
                }
                out
            }
            Event::Progress { .. } => Vec::new(),
        }
    }
}

fn json(progress: &Progress) -> serde_json::Value {
    use serde_json::json;
    match progress {
        Progress::Stage { target, stage } => {
            json!({"event": "stage", "target": target, "stage": stage})
        }
        Progress::Engine {
            target,
            stage,
            event,
        } => match event {
            Event::Vertex {
                digest,
                name,
                cached,
                started,
                completed,
                error,
            } => json!({
                "event": "vertex", "target": target, "stage": stage, "digest": digest, "name": name,
                "cached": cached, "started": started, "completed": completed, "error": error,
            }),
            Event::Log {
                vertex,
                stream,
                data,
            } => json!({
                "event": "log", "target": target, "stage": stage, "digest": vertex,
                "stream": if *stream == 2 { "stderr" } else { "stdout" },
                "text": String::from_utf8_lossy(data),
            }),
            Event::Progress {
                vertex,
                id,
                current,
                total,
                completed,
            } => json!({
                "event": "progress", "target": target, "stage": stage, "digest": vertex, "id": id,
                "current": current, "total": total, "completed": completed,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(started: bool, completed: bool, cached: bool) -> Progress {
        Progress::Engine {
            target: "app".into(),
            stage: "image",
            event: Event::Vertex {
                digest: "sha256:1".into(),
                name: "echo hi".into(),
                cached,
                started,
                completed,
                error: None,
            },
        }
    }

    #[test]
    fn plain_says_each_step_once_and_splits_logs_into_lines() {
        let mut r = Renderer::new(ProgressFormat::Plain);
        assert_eq!(r.render(&vertex(false, false, false)), Vec::<String>::new());
        assert_eq!(
            r.render(&vertex(true, false, false)),
            ["[app/image] RUN echo hi"]
        );
        assert_eq!(r.render(&vertex(true, false, false)), Vec::<String>::new());
        let log = |s: &str| Progress::Engine {
            target: "app".into(),
            stage: "image",
            event: Event::Log {
                vertex: "sha256:1".into(),
                stream: 1,
                data: s.as_bytes().to_vec(),
            },
        };
        assert_eq!(r.render(&log("hel")), Vec::<String>::new());
        assert_eq!(r.render(&log("lo\nwor")), ["[app/image] | hello"]);
        assert_eq!(
            r.render(&vertex(true, true, false)),
            ["[app/image] DONE echo hi"]
        );
        assert_eq!(r.render(&vertex(true, true, false)), Vec::<String>::new());
    }

    #[test]
    fn json_is_one_object_per_event() {
        let mut r = Renderer::new(ProgressFormat::Json);
        let lines = r.render(&vertex(true, true, true));
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["event"], "vertex");
        assert_eq!(v["cached"], true);
    }
}
