//! Progress of a build: `tty` for a terminal (one live line per running stage with its current
//! step and elapsed time, drawn with indicatif), `plain` for logs and CI (one line per step
//! started, finished or failed, and each line of a step's output, all prefixed with the
//! stage), `json` for tools (one event object per line; the last one about a target says
//! what became of it, and errors are events too).
//!
//! Only this binary draws: the libraries report [`Progress`] values. The caller never holds
//! stderr's lock while indicatif draws (its ticker thread takes the draw state, then stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_app::{Event, Progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressFormat {
    Tty,
    Plain,
    Json,
}

/// Turns progress into lines (plain, json) or live lines on stderr (tty); remembers what it has
/// said so repeats are dropped.
pub struct Renderer {
    format: ProgressFormat,
    started: BTreeSet<String>,
    done: BTreeSet<String>,
    partial: BTreeMap<(String, i64), String>,
    tty: Option<Tty>,
}

impl Renderer {
    pub fn new(format: ProgressFormat) -> Renderer {
        Renderer {
            format,
            started: BTreeSet::new(),
            done: BTreeSet::new(),
            partial: BTreeMap::new(),
            tty: (format == ProgressFormat::Tty).then(|| Tty::new(ProgressDrawTarget::stderr())),
        }
    }

    /// The lines to print for `progress` (possibly none; tty draws itself and returns none).
    pub fn render(&mut self, progress: &Progress) -> Vec<String> {
        match self.format {
            ProgressFormat::Json => vec![json(progress).to_string()],
            ProgressFormat::Plain => self.plain(progress),
            ProgressFormat::Tty => {
                if let Some(tty) = &mut self.tty {
                    tty.show(progress);
                }
                Vec::new()
            }
        }
    }

    /// Stop drawing: live lines still running are left as they are.
    pub fn finish(&mut self) {
        if let Some(tty) = &mut self.tty {
            tty.finish();
        }
    }

    fn plain(&mut self, progress: &Progress) -> Vec<String> {
        let (target, stage, event) = match progress {
            Progress::Stage { target, stage } => return vec![format!("==> {target}/{stage}")],
            Progress::Finished { .. } | Progress::Target(_) => return Vec::new(),
            Progress::Warning { .. } => return vec![warning_line(progress)],
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

/// One live line per stage: spinner, `target/stage`, the step running now, elapsed time; a
/// finished stage keeps its line with a summary.
struct Tty {
    multi: MultiProgress,
    bars: BTreeMap<(String, &'static str), Bar>,
}

struct Bar {
    bar: ProgressBar,
    steps: BTreeSet<String>,
    cached: BTreeSet<String>,
    failed: Option<String>,
}

impl Tty {
    fn new(target: ProgressDrawTarget) -> Tty {
        Tty {
            multi: MultiProgress::with_draw_target(target),
            bars: BTreeMap::new(),
        }
    }

    fn show(&mut self, progress: &Progress) {
        match progress {
            Progress::Stage { target, stage } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:.bold} {wide_msg} {elapsed:>4}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(format!("{target}/{stage}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(
                    (target.clone(), stage),
                    Bar {
                        bar,
                        steps: BTreeSet::new(),
                        cached: BTreeSet::new(),
                        failed: None,
                    },
                );
            }
            Progress::Engine {
                target,
                stage,
                event:
                    Event::Vertex {
                        digest,
                        name,
                        cached,
                        started,
                        completed,
                        error,
                    },
            } => {
                let Some(bar) = self.bars.get_mut(&(target.clone(), *stage)) else {
                    return;
                };
                bar.steps.insert(digest.clone());
                if *cached {
                    bar.cached.insert(digest.clone());
                }
                if let Some(error) = error {
                    bar.failed = Some(format!("{name}: {error}"));
                } else if *started && !*completed {
                    bar.bar.set_message(name.clone());
                }
            }
            Progress::Engine { .. } | Progress::Target(_) => {}
            Progress::Warning { .. } => {
                // Above the live lines, which indicatif redraws under it.
                let _ = self.multi.println(warning_line(progress));
            }
            Progress::Finished { target, stage, ok } => {
                let Some(bar) = self.bars.remove(&(target.clone(), *stage)) else {
                    return;
                };
                let elapsed = bar.bar.elapsed().as_secs_f64();
                let summary = match (ok, &bar.failed) {
                    (true, _) => format!(
                        "done: {} steps, {} cached",
                        bar.steps.len(),
                        bar.cached.len()
                    ),
                    (false, Some(failed)) => format!("FAILED {failed}"),
                    (false, None) => "FAILED".to_string(),
                };
                bar.bar.set_style(
                    ProgressStyle::with_template("{prefix:.bold} {wide_msg}")
                        .expect("valid template"),
                );
                bar.bar
                    .finish_with_message(format!("{summary} ({elapsed:.1}s)"));
            }
        }
    }

    fn finish(&mut self) {
        for (_, bar) in std::mem::take(&mut self.bars) {
            bar.bar.abandon();
        }
    }
}

/// A warning as one line of text.
fn warning_line(progress: &Progress) -> String {
    match progress {
        Progress::Warning {
            target: Some(target),
            message,
        } => format!("warning: {target}: {message}"),
        Progress::Warning {
            target: None,
            message,
        } => format!("warning: {message}"),
        _ => String::new(),
    }
}

/// A warning as a JSON event.
pub fn json_warning(message: &str) -> String {
    serde_json::json!({"event": "warning", "target": null, "message": message}).to_string()
}

/// An error as the JSON event `--progress json` ends with.
pub fn json_error(message: &str, exit_code: i32) -> String {
    serde_json::json!({"event": "error", "message": message, "exit_code": exit_code}).to_string()
}

fn json(progress: &Progress) -> serde_json::Value {
    use serde_json::json;
    match progress {
        Progress::Target(outcome) => {
            let mut v = serde_json::to_value(outcome).unwrap_or_default();
            v["event"] = json!("target");
            v
        }
        Progress::Warning { target, message } => {
            json!({"event": "warning", "target": target, "message": message})
        }
        Progress::Stage { target, stage } => {
            json!({"event": "stage", "target": target, "stage": stage})
        }
        Progress::Finished { target, stage, ok } => {
            json!({"event": "finished", "target": target, "stage": stage, "ok": ok})
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
    fn tty_shows_the_running_step_then_a_summary_per_stage() {
        let mut tty = Tty::new(ProgressDrawTarget::hidden());
        tty.show(&Progress::Stage {
            target: "app".into(),
            stage: "image",
        });
        tty.show(&vertex(true, false, false));
        let key = ("app".to_string(), "image");
        let bar = tty.bars[&key].bar.clone();
        assert_eq!(bar.message(), "echo hi");
        assert_eq!(bar.prefix(), "app/image");
        tty.show(&vertex(true, true, true));
        tty.show(&Progress::Finished {
            target: "app".into(),
            stage: "image",
            ok: true,
        });
        assert!(bar.is_finished());
        assert!(
            bar.message().starts_with("done: 1 steps, 1 cached ("),
            "{}",
            bar.message()
        );
        assert!(tty.bars.is_empty());
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
