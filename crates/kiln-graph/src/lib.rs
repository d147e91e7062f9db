//! Builds the build graph: one petgraph DAG holding every target's generated stages (`pre`,
//! `packages-refresh` | `packages-pinned`, `post`, `smoke-test`, `image`) and the edges between
//! targets. Finds cycles (naming every target on them in order), selects targets by name or
//! group, and gives a deterministic topological order. Pure: no IO.

mod stage;

pub use stage::{PackagesMode, StageId, StageKind};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kiln_manifest::{Base, CopySource, Location, Manifest, Target};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

/// Why a graph could not be built or a selection made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Targets that depend on each other in a loop; `path` starts and ends with the same target.
    #[error("{location}: dependency cycle: {}", path.join(" → "))]
    Cycle {
        path: Vec<String>,
        location: Location,
    },
    /// A `target:NAME` reference that names no target.
    #[error("{location}: target `{target}` refers to unknown target `{name}`")]
    UnknownTarget {
        target: String,
        name: String,
        location: Location,
    },
    /// A selected name that is neither a target nor a group.
    #[error("no target or group named `{name}`{}", suggestion_text(suggestion))]
    UnknownSelection {
        name: String,
        suggestion: Option<String>,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("\n  hint: did you mean `{s}`?"))
        .unwrap_or_default()
}

/// Why an edge exists between two stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EdgeKind {
    /// The next stage in a target's own chain.
    Chain,
    /// The image stage waits for the smoke test to pass.
    Gate,
    /// `from = "target:X"`.
    From,
    /// `copy.from = "target:X"`.
    CopyFrom,
}

/// The stage DAG of a manifest.
#[derive(Debug, Clone)]
pub struct Graph {
    graph: DiGraph<StageId, EdgeKind>,
    nodes: BTreeMap<StageId, NodeIndex>,
    /// For each target, the targets it depends on (sorted, unique).
    target_deps: BTreeMap<String, BTreeSet<String>>,
    mode: PackagesMode,
}

impl Graph {
    /// Build the graph of every target in `manifest`.
    pub fn build(manifest: &Manifest, mode: PackagesMode) -> Result<Graph, Vec<GraphError>> {
        let mut errors = Vec::new();
        let mut target_deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, target) in &manifest.targets {
            let deps = target_deps.entry(name.clone()).or_default();
            for (dep, _) in dependencies(target) {
                if manifest.targets.contains_key(dep) {
                    deps.insert(dep.to_string());
                } else {
                    errors.push(GraphError::UnknownTarget {
                        target: name.clone(),
                        name: dep.to_string(),
                        location: target.location.clone(),
                    });
                }
            }
        }
        errors.extend(find_cycles(manifest, &target_deps));
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut graph = DiGraph::new();
        let mut nodes = BTreeMap::new();
        for (name, target) in &manifest.targets {
            let chain = stage::chain(target, mode);
            let mut previous: Option<NodeIndex> = None;
            for kind in &chain {
                let id = StageId::new(name, *kind);
                let node = graph.add_node(id.clone());
                nodes.insert(id, node);
                if let Some(prev) = previous {
                    // Image hangs off post (not off the smoke test); the gate edge is added below.
                    if *kind != StageKind::Image || graph[prev].kind != StageKind::SmokeTest {
                        graph.add_edge(prev, node, EdgeKind::Chain);
                    }
                }
                if *kind != StageKind::Image {
                    previous = Some(node);
                }
            }
            if chain.contains(&StageKind::SmokeTest) {
                let post = nodes[&StageId::new(name, StageKind::Post)];
                let smoke = nodes[&StageId::new(name, StageKind::SmokeTest)];
                let image = nodes[&StageId::new(name, StageKind::Image)];
                graph.add_edge(post, image, EdgeKind::Chain);
                graph.add_edge(smoke, image, EdgeKind::Gate);
            }
        }
        for (name, target) in &manifest.targets {
            for (dep, kind) in dependencies(target) {
                let from = nodes[&StageId::new(dep, StageKind::Image)];
                let to_kind = match kind {
                    EdgeKind::From => StageKind::Pre,
                    _ => StageKind::Post,
                };
                let to = nodes[&StageId::new(name, to_kind)];
                if graph.find_edge(from, to).is_none() {
                    graph.add_edge(from, to, kind);
                }
            }
        }
        Ok(Graph {
            graph,
            nodes,
            target_deps,
            mode,
        })
    }

    /// The packages mode this graph was built for.
    pub fn mode(&self) -> PackagesMode {
        self.mode
    }

    /// Targets that `target` depends on directly, sorted by name.
    pub fn depends_on(&self, target: &str) -> Vec<&str> {
        self.target_deps
            .get(target)
            .map(|d| d.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The stages of one target in chain order.
    pub fn stages_of(&self, target: &str) -> Vec<&StageId> {
        let mut stages: Vec<&StageId> = self
            .nodes
            .range(StageId::new(target, StageKind::Pre)..=StageId::new(target, StageKind::Image))
            .map(|(id, _)| id)
            .collect();
        stages.sort_by_key(|s| s.kind);
        stages
    }

    /// Whether a stage exists.
    pub fn contains(&self, stage: &StageId) -> bool {
        self.nodes.contains_key(stage)
    }

    /// Stages `stage` needs before it can run, sorted.
    pub fn stage_inputs(&self, stage: &StageId) -> Vec<(&StageId, EdgeKind)> {
        let Some(&node) = self.nodes.get(stage) else {
            return Vec::new();
        };
        let mut inputs: Vec<_> = self
            .graph
            .edges_directed(node, Direction::Incoming)
            .map(|e| {
                (
                    &self.graph[petgraph::visit::EdgeRef::source(&e)],
                    *e.weight(),
                )
            })
            .collect();
        // The stage's own chain first, then the other targets it uses.
        inputs.sort_by_key(|(stage, kind)| (*kind, *stage));
        inputs
    }

    /// Every edge between stages, sorted (for rendering).
    pub fn edges(&self) -> Vec<(&StageId, &StageId, EdgeKind)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_indices()
            .map(|e| {
                let (a, b) = self.graph.edge_endpoints(e).expect("edge exists");
                (&self.graph[a], &self.graph[b], self.graph[e])
            })
            .collect();
        edges.sort();
        edges
    }

    /// The targets `names` asks for themselves (targets, and the members of groups; none: the
    /// `default` group, else every target), without the dependencies [`Graph::select`] adds.
    pub fn named(manifest: &Manifest, names: &[String]) -> Result<BTreeSet<String>, GraphError> {
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        if names.is_empty() {
            match manifest.groups.get("default") {
                Some(group) => wanted.extend(group.targets.iter().cloned()),
                None => wanted.extend(manifest.targets.keys().cloned()),
            }
        }
        for name in names {
            if manifest.targets.contains_key(name) {
                wanted.insert(name.clone());
            } else if let Some(group) = manifest.groups.get(name) {
                wanted.extend(group.targets.iter().cloned());
            } else {
                let candidates = manifest.targets.keys().chain(manifest.groups.keys());
                return Err(GraphError::UnknownSelection {
                    name: name.clone(),
                    suggestion: kiln_manifest::suggest(name, candidates.map(String::as_str)),
                });
            }
        }
        Ok(wanted)
    }

    /// Resolve `names` (targets or groups; none means the `default` group, else every target)
    /// to the targets to build, dependencies included, in deterministic topological order.
    pub fn select(&self, manifest: &Manifest, names: &[String]) -> Result<Vec<String>, GraphError> {
        let mut wanted = Graph::named(manifest, names)?;
        // Close over dependencies.
        let mut stack: Vec<String> = wanted.iter().cloned().collect();
        while let Some(t) = stack.pop() {
            for dep in self.depends_on(&t) {
                if wanted.insert(dep.to_string()) {
                    stack.push(dep.to_string());
                }
            }
        }
        Ok(self
            .topo_targets()
            .into_iter()
            .filter(|t| wanted.contains(*t))
            .map(str::to_string)
            .collect())
    }

    /// Every target in topological order; ties broken by name, so the order is deterministic.
    pub fn topo_targets(&self) -> Vec<&str> {
        let mut indegree: BTreeMap<&str, usize> = self
            .target_deps
            .iter()
            .map(|(t, deps)| (t.as_str(), deps.len()))
            .collect();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, deps) in &self.target_deps {
            for d in deps {
                dependents.entry(d.as_str()).or_default().push(t.as_str());
            }
        }
        let mut ready: BTreeSet<&str> = indegree
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(t, _)| *t)
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(t) = ready.pop_first() {
            order.push(t);
            for d in dependents.get(t).into_iter().flatten() {
                let n = indegree.get_mut(d).expect("known target");
                *n -= 1;
                if *n == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    /// Every stage in topological order (targets in [`Graph::topo_targets`] order, each
    /// target's stages in chain order).
    pub fn topo_stages(&self) -> Vec<&StageId> {
        self.topo_targets()
            .into_iter()
            .flat_map(|t| self.stages_of(t))
            .collect()
    }
}

/// The targets `target` names in `from` and copy sources, with the kind of edge.
fn dependencies(target: &Target) -> Vec<(&str, EdgeKind)> {
    let mut deps = Vec::new();
    if let Base::Target(name) = &target.from {
        deps.push((name.as_str(), EdgeKind::From));
    }
    for copy in &target.copy {
        if let CopySource::Target(name) = &copy.from {
            deps.push((name.as_str(), EdgeKind::CopyFrom));
        }
    }
    deps
}

/// One error per strongly connected component that forms a cycle, naming its targets in
/// dependency order starting from the smallest name.
fn find_cycles(manifest: &Manifest, deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<GraphError> {
    let mut graph: DiGraph<&str, ()> = DiGraph::new();
    let index: BTreeMap<&str, NodeIndex> = deps
        .keys()
        .map(|t| (t.as_str(), graph.add_node(t.as_str())))
        .collect();
    for (t, ds) in deps {
        for d in ds {
            // Edge t -> d: "t depends on d".
            graph.add_edge(index[t.as_str()], index[d.as_str()], ());
        }
    }
    let mut errors = Vec::new();
    let mut components = petgraph::algo::tarjan_scc(&graph);
    for scc in &mut components {
        scc.sort_by_key(|n| graph[*n]);
    }
    components.sort_by_key(|scc| scc.first().map(|n| graph[*n]));
    for scc in components {
        let members: BTreeSet<&str> = scc.iter().map(|n| graph[*n]).collect();
        let start = *members.first().expect("non-empty component");
        let self_loop = deps[start].contains(start);
        if members.len() == 1 && !self_loop {
            continue;
        }
        // Walk the cycle from the smallest name, always taking the smallest next member,
        // until we are back at the start.
        let mut path = vec![start.to_string()];
        let mut seen = BTreeSet::from([start]);
        let mut current = start;
        loop {
            let next = cycle_step(deps, &members, current, start, &seen);
            path.push(next.to_string());
            if next == start {
                break;
            }
            seen.insert(next);
            current = next;
        }
        errors.push(GraphError::Cycle {
            path,
            location: manifest.targets[start].location.clone(),
        });
    }
    errors
}

/// The next target on a cycle through `members`: back to `start` if possible once the path is
/// longer than one, else the smallest unvisited member from which `start` is reachable.
fn cycle_step<'a>(
    deps: &'a BTreeMap<String, BTreeSet<String>>,
    members: &BTreeSet<&'a str>,
    current: &str,
    start: &'a str,
    seen: &BTreeSet<&str>,
) -> &'a str {
    let next: Vec<&str> = deps[current]
        .iter()
        .map(String::as_str)
        .filter(|d| members.contains(d))
        .collect();
    if next.contains(&start) {
        return start;
    }
    next.iter()
        .copied()
        .find(|n| !seen.contains(n) && reaches(deps, members, n, start, seen))
        .unwrap_or(start)
}

/// Whether `to` is reachable from `from` inside `members` without passing through `avoid`.
fn reaches(
    deps: &BTreeMap<String, BTreeSet<String>>,
    members: &BTreeSet<&str>,
    from: &str,
    to: &str,
    avoid: &BTreeSet<&str>,
) -> bool {
    let mut stack = vec![from];
    let mut visited: BTreeSet<&str> = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if !visited.insert(n) {
            continue;
        }
        for d in deps[n].iter().map(String::as_str) {
            if d == to {
                return true;
            }
            if members.contains(d) && !avoid.contains(d) {
                stack.push(d);
            }
        }
    }
    false
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target, self.kind.as_str())
    }
}

#[cfg(test)]
mod tests;
