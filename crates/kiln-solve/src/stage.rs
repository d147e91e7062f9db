//! One stage's solve as the user sees it: its events labelled with the target and stage, its
//! start and end reported, and a failure turned into a [`SolveError::Step`] that names the step
//! the daemon marked failed, shows the end of its output and, for a known symptom, a hint.

use std::collections::BTreeMap;
use std::future::Future;

use kiln_buildkit::Event;
use tokio::sync::mpsc;

use crate::{Progress, SolveError, StepFailed};

/// Where a build's progress goes.
pub(crate) type Events = mpsc::UnboundedSender<Progress>;

/// What a daemon's error means for a kiln user, for errors that say it poorly.
const HINTS: &[(&str, &str)] = &[
    (
        "network bridge not found",
        "this engine has no bridge network (dockerd --bridge=none, as `kiln engine up` starts \
         it); set `network = \"host\"` or `network = \"none\"` on the target or in [defaults]",
    ),
    (
        "network.host is not allowed",
        "this buildkitd does not grant host networking; start it with \
         `--allow-insecure-entitlement network.host`, or use `network = \"default\"`",
    ),
    (
        "unknown exporter",
        "this daemon lacks the exporter kiln picked for it; `kiln engine status` shows what it is",
    ),
    (
        "was not upgraded: HTTP/1.1 404",
        "this Docker Engine has no BuildKit API (`POST /grpc`); it needs Docker 18.09 or newer",
    ),
];

/// The hint for a known symptom in `message` (a daemon's words), if any.
pub(crate) fn explain(message: &str) -> Option<&'static str> {
    HINTS
        .iter()
        .find(|(symptom, _)| message.contains(symptom))
        .map(|(_, hint)| *hint)
}

/// How many lines of a failed step's output the error shows.
const FAILURE_TAIL: usize = 40;

/// Run one stage's solve (`solve` gets the channel for its events), labelling its events with
/// the target and stage; a failure names the failed step and shows the end of its output.
pub(crate) async fn staged<T, F, Fut>(
    tx: &Events,
    target: &str,
    stage: &'static str,
    solve: F,
) -> Result<T, SolveError>
where
    F: FnOnce(mpsc::UnboundedSender<Event>) -> Fut,
    Fut: Future<Output = Result<T, kiln_buildkit::Error>>,
{
    let _ = tx.send(Progress::Stage {
        target: target.to_string(),
        stage,
    });
    let (events, rx) = mpsc::unbounded_channel();
    let (result, seen) = forwarding(tx, target, || stage, rx, solve(events)).await;
    finished(tx, target, stage, result, &seen)
}

/// Drive `solve` while forwarding its events to `tx`, labelled with `target` and the stage
/// `stage()` names when each arrives; its result and what its events said.
async fn forwarding<T>(
    tx: &Events,
    target: &str,
    stage: impl Fn() -> &'static str,
    mut rx: mpsc::UnboundedReceiver<Event>,
    solve: impl Future<Output = Result<T, kiln_buildkit::Error>>,
) -> (Result<T, kiln_buildkit::Error>, Seen) {
    tokio::pin!(solve);
    let mut seen = Seen::default();
    let result = {
        let mut forward = |event: Event| {
            remember(&event, &mut seen);
            let _ = tx.send(Progress::Engine {
                target: target.to_string(),
                stage: stage(),
                event,
            });
        };
        let result = loop {
            tokio::select! {
                result = &mut solve => break result,
                Some(event) = rx.recv() => forward(event),
            }
        };
        while let Ok(event) = rx.try_recv() {
            forward(event);
        }
        result
    };
    (result, seen)
}

/// Say `target`/`stage` finished, and turn a failed solve into its error.
fn finished<T>(
    tx: &Events,
    target: &str,
    stage: &'static str,
    result: Result<T, kiln_buildkit::Error>,
    seen: &Seen,
) -> Result<T, SolveError> {
    let _ = tx.send(Progress::Finished {
        target: target.to_string(),
        stage,
        ok: result.is_ok(),
    });
    result.map_err(|e| failure(target, stage, e, seen))
}

/// The error of a failed solve of `target`/`stage`: a failed RUN names the step the daemon
/// marked failed and shows the end of its output.
fn failure(
    target: &str,
    stage: &'static str,
    source: kiln_buildkit::Error,
    seen: &Seen,
) -> SolveError {
    let mut step = None;
    let mut output = None;
    if let Some(digest) = &seen.failed {
        step = Some(
            seen.names
                .get(digest)
                .cloned()
                .unwrap_or_else(|| "?".to_string()),
        );
        if let Some(log) = seen.logs.get(digest) {
            let text = String::from_utf8_lossy(log);
            let mut tail: Vec<String> = text
                .lines()
                .rev()
                .take(FAILURE_TAIL)
                .map(str::to_string)
                .collect();
            tail.reverse();
            output = Some(tail);
        }
    }
    let mut failed = StepFailed {
        target: target.to_string(),
        stage,
        source,
        step,
        output,
        hint: None,
    };
    // A known symptom anywhere in the message, the step's output included.
    failed.hint = explain(&failed.to_string());
    SolveError::Step(Box::new(failed))
}

/// Moves a one-job solve from its first stage to the next (see [`staged_phases`]).
pub(crate) struct Phase {
    tx: Events,
    target: String,
    first: &'static str,
    then: &'static str,
    passed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Phase {
    /// The first stage passed: it is finished, the next starts.
    pub(crate) fn next(&self) {
        use std::sync::atomic::Ordering;
        if self.first == self.then || self.passed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.tx.send(Progress::Finished {
            target: self.target.clone(),
            stage: self.first,
            ok: true,
        });
        let _ = self.tx.send(Progress::Stage {
            target: self.target.clone(),
            stage: self.then,
        });
    }

    fn stage(&self) -> &'static str {
        if self.passed.load(std::sync::atomic::Ordering::SeqCst) {
            self.then
        } else {
            self.first
        }
    }
}

/// [`staged`] for a job that solves two stages in turn (`first`, then `then` once `solve`
/// calls [`Phase::next`]): events, the end of a stage and a failure are labelled with the
/// stage in progress, so a failed smoke test reads as before, `TARGET/smoke-test: …`.
pub(crate) async fn staged_phases<T, F, Fut>(
    tx: &Events,
    target: &str,
    first: &'static str,
    then: &'static str,
    solve: F,
) -> Result<T, SolveError>
where
    F: FnOnce(mpsc::UnboundedSender<Event>, Phase) -> Fut,
    Fut: Future<Output = Result<T, kiln_buildkit::Error>>,
{
    let passed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let phase = Phase {
        tx: tx.clone(),
        target: target.to_string(),
        first,
        then,
        passed: passed.clone(),
    };
    let label = Phase {
        tx: tx.clone(),
        target: target.to_string(),
        first,
        then,
        passed,
    };
    let _ = tx.send(Progress::Stage {
        target: target.to_string(),
        stage: first,
    });
    let (events, rx) = mpsc::unbounded_channel();
    let (result, seen) = forwarding(tx, target, || label.stage(), rx, solve(events, phase)).await;
    finished(tx, target, label.stage(), result, &seen)
}

/// What a failure message needs from the events: step names, their output, and which step
/// the daemon said failed.
#[derive(Default)]
struct Seen {
    names: BTreeMap<String, String>,
    logs: BTreeMap<String, Vec<u8>>,
    failed: Option<String>,
}

fn remember(event: &Event, seen: &mut Seen) {
    let Seen {
        names,
        logs,
        failed,
    } = seen;
    match event {
        Event::Vertex {
            digest,
            name,
            error,
            ..
        } => {
            names.insert(digest.clone(), name.clone());
            if error.is_some() {
                *failed = Some(digest.clone());
            }
        }
        Event::Log { vertex, data, .. } => logs
            .entry(vertex.clone())
            .or_default()
            .extend_from_slice(data),
        Event::Progress { .. } => {}
    }
}
