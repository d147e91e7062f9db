//! The builders of one build: connecting to each (saying how to start one that does not
//! answer), where each puts images ([`Export`]), which builder each target builds on
//! ([`home`]: chains together, the rest spread by a stable hash) and, after a failure, whether
//! the builder still answers and which one takes over ([`next_alive`]).

use std::collections::BTreeMap;

use kiln_buildkit::{Client, Endpoint};

use crate::SolveError;
use crate::stage::explain;

/// One builder of the pool, connected.
pub(crate) struct Member {
    pub(crate) client: Client,
    pub(crate) export: Export,
}

/// Whether a builder still answers (its workers, within a few seconds): after a failed solve,
/// tells a builder that went away from a build that failed.
pub(crate) async fn answers(client: &Client) -> bool {
    let probe = async {
        let fresh = Client::connect(client.endpoint(), client.keepalive())
            .await
            .ok()?;
        fresh.workers().await.ok()
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), probe).await,
        Ok(Some(_))
    )
}

pub(crate) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The warning when builder `from` stopped answering during a solve that failed with `error`,
/// and its targets `moved` go to `to`: the error's first line, bare (the warning is the one
/// prefix; the error carries no `error:` of its own).
pub(crate) fn failover_warning(
    from: &Endpoint,
    error: &SolveError,
    moved: &[String],
    to: &str,
) -> String {
    format!(
        "builder {from} stopped answering ({}); moving {} to {to}",
        first_line(&error.to_string()),
        moved.join(", ")
    )
}

/// The warning when builder `endpoint` of a pool does not answer at the start (`error`'s first
/// line, bare as in [`failover_warning`]).
pub(crate) fn left_out_warning(endpoint: &Endpoint, error: &SolveError) -> String {
    format!(
        "builder {endpoint} is left out of this build: {}",
        first_line(&error.to_string())
    )
}

/// The first builder from `i` on (wrapping) that is alive.
pub(crate) fn next_alive(alive: &[bool], i: usize) -> Option<usize> {
    (0..alive.len())
        .map(|k| (i + k) % alive.len())
        .find(|&j| alive.get(j) == Some(&true))
}

/// Which of `builders` builders each selected target builds on: the targets joined by
/// dependencies (a chain of `target:` bases, copies from targets) stay together, on the
/// builder a stable hash (sha256) of the first name among them picks, so each meets its own
/// cache again on the next run.
pub(crate) fn home(
    graph: &kiln_graph::Graph,
    selected: &[String],
    builders: usize,
) -> BTreeMap<String, usize> {
    // Union-find over the dependency edges among the selected targets.
    let index: BTreeMap<&str, usize> = selected
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..selected.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, t) in selected.iter().enumerate() {
        for d in graph.depends_on(t) {
            if let Some(&j) = index.get(d) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let roots: Vec<usize> = (0..selected.len()).map(|i| root(&mut parent, i)).collect();
    // Each group is named by its smallest target name.
    let mut names: BTreeMap<usize, &str> = BTreeMap::new();
    for (t, r) in selected.iter().zip(&roots) {
        let name = names.entry(*r).or_insert(t.as_str());
        if t.as_str() < *name {
            *name = t.as_str();
        }
    }
    selected
        .iter()
        .zip(&roots)
        .map(|(t, r)| {
            let name = names.get(r).copied().unwrap_or(t.as_str());
            (t.clone(), stable_slot(name, builders))
        })
        .collect()
}

/// `name`'s builder among `builders`: the first 8 bytes of its sha256, modulo.
pub(crate) fn stable_slot(name: &str, builders: usize) -> usize {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % builders.max(1) as u64) as usize
}

/// Connect to the builder (pinging it after `keepalive` of silence), saying how to start one
/// when none answers.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    keepalive: std::time::Duration,
) -> Result<Client, SolveError> {
    let endpoint = endpoint.clone().probe().await;
    Client::connect(&endpoint, keepalive)
        .await
        .map_err(|source| SolveError::Connect {
            hint: explain(&source.to_string()).unwrap_or(builder_hint(&endpoint)),
            source,
        })
}

/// Where a build's images go, decided once from the builder and the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    /// Docker Engine's BuildKit: the `moby` exporter stores the image in the engine's image
    /// store (`--push` then pushes through the engine; `--load` has nothing to do).
    Moby,
    /// A standalone buildkitd with `--load`: its `docker` exporter's tarball streams through the
    /// session into the Docker Engine (`--push` then pushes through that engine).
    Load,
    /// A standalone buildkitd with `--push`: its `image` exporter pushes.
    Push,
    /// A standalone buildkitd without either: no exporter (its OCI worker keeps no image store
    /// kiln could use, a named image would exist nowhere), the image stays in its cache.
    Cache,
}

impl Export {
    pub(crate) fn choose(moby: bool, load: bool, push: bool) -> Export {
        match (moby, load, push) {
            (true, _, _) => Export::Moby,
            (false, true, _) => Export::Load,
            (false, false, true) => Export::Push,
            (false, false, false) => Export::Cache,
        }
    }
}

/// Whether the builder is Docker Engine's BuildKit, whose `moby` exporter stores images where
/// `docker run` finds them: the engine itself, or one worker named `moby` (also when reached
/// through a proxy).
pub(crate) async fn is_moby(client: &Client) -> Result<bool, SolveError> {
    if client.endpoint().is_docker() {
        return Ok(true);
    }
    let workers = client
        .workers()
        .await
        .map_err(|source| SolveError::Workers {
            source,
            hint: builder_hint(client.endpoint()),
        })?;
    if workers.is_empty() {
        return Err(SolveError::NoWorkers {
            endpoint: client.endpoint().to_string(),
        });
    }
    Ok(workers.iter().any(|w| w.id == "moby"))
}

/// How to get a builder that does not answer going, for `endpoint`'s kind of builder.
pub fn builder_hint(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Docker { .. } => "is the engine running? `kiln engine status`, `kiln engine up`",
        Endpoint::Tcp { tls: Some(_), .. } => {
            "is buildkitd listening there, and does it accept kiln's TLS files? A daemon that \
             requires a client certificate drops the connection without one (--tls-cert/--tls-key)"
        }
        _ => "is buildkitd running and listening there? (`--builder`, BUILDKIT_HOST)",
    }
}
