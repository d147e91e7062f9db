//! The machine-readable result of `kiln build` (`--metadata-file FILE`, `--format json`): per
//! selected target its [`Outcome`] — status, image name, image id, pushed digest, the builder it
//! ran on, how many steps were solved and how many taken from the cache, and how long it took.
//! Made from the [`Progress`] events a build emits, so it says the same as `--progress json`;
//! also made when the build fails, with the failed target `failed` (and its error) and the ones
//! it stopped `skipped`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::{AppError, Outcome, Progress};

pub use kiln_solve::Steps;

/// What `--metadata-file` holds: whether the command succeeded, and each selected target's
/// outcome by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    pub ok: bool,
    /// What the command failed with.
    pub error: Option<String>,
    pub targets: BTreeMap<String, Outcome>,
}

impl Metadata {
    /// The JSON text (pretty, newline-terminated).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string());
        text.push('\n');
        text
    }
}

/// Watches a build's progress: counts each target's steps, times it from its first stage to
/// its outcome, and completes the outcomes with those and the builder.
pub(crate) struct Recorder {
    builder: Option<String>,
    /// Per target, each vertex seen completed and whether it was ever solved (not cached).
    vertices: BTreeMap<String, BTreeMap<String, bool>>,
    started: BTreeMap<String, Instant>,
    failed: BTreeSet<String>,
    finished_ok: BTreeSet<String>,
    outcomes: BTreeMap<String, Outcome>,
}

impl Recorder {
    /// `builder`: where the build runs, as the endpoint says it.
    pub(crate) fn new(builder: Option<String>) -> Recorder {
        Recorder {
            builder,
            vertices: BTreeMap::new(),
            started: BTreeMap::new(),
            failed: BTreeSet::new(),
            finished_ok: BTreeSet::new(),
            outcomes: BTreeMap::new(),
        }
    }

    /// Take note of `progress`; a target's outcome gets its builder, steps and duration here,
    /// before it is shown.
    pub(crate) fn observe(&mut self, progress: &mut Progress) {
        match progress {
            Progress::Stage { target, .. } => {
                self.started
                    .entry(target.clone())
                    .or_insert_with(Instant::now);
            }
            Progress::Engine {
                target,
                event:
                    kiln_buildkit::Event::Vertex {
                        digest,
                        cached,
                        completed: true,
                        ..
                    },
                ..
            } => {
                let solved = self
                    .vertices
                    .entry(target.clone())
                    .or_default()
                    .entry(digest.clone())
                    .or_insert(false);
                *solved |= !*cached;
            }
            Progress::Finished { target, ok, .. } => {
                if *ok {
                    self.finished_ok.insert(target.clone());
                } else {
                    self.failed.insert(target.clone());
                }
            }
            Progress::Target(outcome) => {
                self.complete(outcome);
                self.outcomes
                    .insert(outcome.target.clone(), outcome.clone());
            }
            _ => {}
        }
    }

    fn complete(&self, outcome: &mut Outcome) {
        let steps = self.vertices.get(&outcome.target);
        outcome.steps = crate::metadata::Steps {
            solved: steps.map_or(0, |s| s.values().filter(|v| **v).count()),
            cached: steps.map_or(0, |s| s.values().filter(|v| !**v).count()),
        };
        outcome.duration_ms = self.started.get(&outcome.target).map_or(0, |t| {
            u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        // A target kiln did not solve ran on no builder.
        if outcome.status != "up-to-date" && outcome.builder.is_none() {
            outcome.builder = self.builder.clone();
        }
    }

    /// The metadata of `selected` once the command ended with `error` (or not): a target with
    /// an outcome has it; else one whose stage failed, or whose push the error names, failed;
    /// one whose stages all finished is built (it is in the builder's cache, but nothing was
    /// recorded); any other was skipped.
    pub(crate) fn finish(&self, selected: &[String], error: Option<&AppError>) -> Metadata {
        // As the error is shown, without the `error: ` every message starts with.
        let message = error.map(AppError::unprefixed);
        let mut targets = BTreeMap::new();
        for name in selected {
            if let Some(outcome) = self.outcomes.get(name) {
                targets.insert(name.clone(), outcome.clone());
                continue;
            }
            let names_it = message.as_deref().is_some_and(|m| {
                m.starts_with(&format!("{name}/")) || m.starts_with(&format!("{name}: "))
            });
            let status = if self.failed.contains(name) || names_it {
                "failed"
            } else if self.finished_ok.contains(name) {
                "built"
            } else {
                "skipped"
            };
            let mut outcome = Outcome {
                target: name.clone(),
                status,
                error: message.clone().filter(|_| status == "failed"),
                ..Outcome::default()
            };
            if status != "skipped" {
                self.complete(&mut outcome);
            }
            targets.insert(name.clone(), outcome);
        }
        // An error no target owns (a push, the builder gone): every target without an outcome
        // of its own is as the error left it, and the command failed.
        Metadata {
            ok: error.is_none(),
            error: message,
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_buildkit::Event;

    fn vertex(target: &str, digest: &str, cached: bool) -> Progress {
        Progress::Engine {
            target: target.into(),
            stage: "image",
            event: Event::Vertex {
                digest: digest.into(),
                name: digest.into(),
                cached,
                started: true,
                completed: true,
                error: None,
            },
        }
    }

    #[test]
    fn steps_are_counted_once_per_vertex_and_failures_and_skips_are_said() {
        let mut r = Recorder::new(Some("docker:///var/run/docker.sock".into()));
        let mut events = vec![
            Progress::Stage {
                target: "a".into(),
                stage: "smoke-test",
            },
            vertex("a", "d1", false),
            vertex("a", "d2", true),
            // The image stage takes what the smoke test solved from the cache: still solved.
            vertex("a", "d1", true),
            vertex("a", "d3", true),
            Progress::Target(Outcome {
                target: "a".into(),
                status: "built",
                ..Outcome::default()
            }),
            Progress::Target(Outcome {
                target: "u".into(),
                status: "up-to-date",
                ..Outcome::default()
            }),
            Progress::Stage {
                target: "b".into(),
                stage: "smoke-test",
            },
            vertex("b", "d4", false),
            Progress::Finished {
                target: "b".into(),
                stage: "smoke-test",
                ok: false,
            },
        ];
        for p in &mut events {
            r.observe(p);
        }
        let Progress::Target(shown) = &events[5] else {
            unreachable!()
        };
        assert_eq!(
            shown.steps,
            Steps {
                solved: 1,
                cached: 2
            }
        );
        let error = AppError::from(kiln_solve::SolveError::Step(Box::new(
            kiln_solve::StepFailed {
                target: "b".to_string(),
                stage: "smoke-test",
                source: kiln_buildkit::Error::Failed {
                    action: "solve",
                    message: "exit code: 1".to_string(),
                },
                step: None,
                output: None,
                hint: None,
            },
        )));
        let selected: Vec<String> = ["a", "b", "c", "u"].map(String::from).to_vec();
        let m = r.finish(&selected, Some(&error));
        assert!(!m.ok);
        let a = &m.targets["a"];
        assert_eq!((a.status, a.steps.solved, a.steps.cached), ("built", 1, 2));
        assert_eq!(a.builder.as_deref(), Some("docker:///var/run/docker.sock"));
        let b = &m.targets["b"];
        assert_eq!(b.status, "failed");
        assert_eq!(
            b.error.as_deref(),
            Some("b/smoke-test: solve failed: exit code: 1")
        );
        assert_eq!(b.steps.solved, 1);
        assert_eq!(m.targets["c"].status, "skipped");
        assert_eq!(m.targets["c"].builder, None);
        let u = &m.targets["u"];
        assert_eq!((u.status, &u.builder), ("up-to-date", &None));
        let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(json["targets"]["a"]["steps"]["solved"], 1);
        assert_eq!(json["targets"]["b"]["status"], "failed");
        assert_eq!(json["ok"], false);
    }
}
