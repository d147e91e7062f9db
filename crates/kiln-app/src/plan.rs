//! `kiln plan`: the resolved targets, their stages and LLB digests, as text, JSON, DOT or
//! Mermaid; and `kiln plan --llb STAGE`, one stage's serialised Definition.

use std::fmt::Write as _;

use kiln_compile::CompiledTarget;
use kiln_graph::StageKind;
use kiln_manifest::{Base, Manifest, OverrideRule, Rewrite};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{AppError, Loaded, PackagesMode, Settings, load};

/// Output formats of `kiln plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Serialize)]
struct PlanDoc<'a> {
    mode: PackagesMode,
    profile: Option<&'a str>,
    rewrites: &'a [Rewrite],
    /// The profile's override rules in the order tried, with what each matched.
    overrides: &'a [OverrideRule],
    targets: Vec<TargetDoc<'a>>,
}

#[derive(Serialize)]
struct TargetDoc<'a> {
    name: &'a str,
    from: String,
    image: Option<String>,
    depends_on: Vec<&'a str>,
    stages: Vec<StageDoc>,
    config: &'a kiln_compile::EffectiveConfig,
    config_digest: String,
    /// Each lock file (as the manifest names it) → package → pinned version.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    packages: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct StageDoc {
    name: &'static str,
    id: String,
    digest: String,
    inputs: Vec<String>,
}

/// Render the plan of `targets` (none: the default selection) in `format`.
pub fn plan(
    settings: &Settings,
    targets: &[String],
    format: PlanFormat,
    mode: PackagesMode,
) -> Result<String, AppError> {
    let loaded = load(settings, mode)?;
    let (_, compiled) = loaded.compile(targets)?;
    let doc = document(&settings.cwd, &loaded, &compiled, mode);
    Ok(match format {
        PlanFormat::Json => {
            let mut s = serde_json::to_string_pretty(&doc).expect("plan serialises");
            s.push('\n');
            s
        }
        PlanFormat::Text => text(&doc),
        PlanFormat::Dot => dot(&doc),
        PlanFormat::Mermaid => mermaid(&doc),
    })
}

/// The serialised LLB Definition of one stage: `TARGET/STAGE`, or `TARGET` for its image.
pub fn plan_llb(settings: &Settings, stage: &str, mode: PackagesMode) -> Result<Vec<u8>, AppError> {
    let loaded = load(settings, mode)?;
    let (target, kind) = match stage.split_once('/') {
        Some((t, k)) => (t, k),
        None => (stage, "image"),
    };
    if let Some(group) = loaded.manifest.groups.get(target) {
        return Err(AppError::Usage(format!(
            "`{target}` is a group, not a target: --llb writes one stage of one target"
        ))
        .with_hint(format!(
            "name one of its targets: {}",
            group.targets.join(", ")
        )));
    }
    let (_, compiled) = loaded.compile(&[target.to_string()])?;
    let Some(compiled) = compiled.iter().find(|c| c.name == target) else {
        return Err(AppError::Usage(format!(
            "`{target}` is not a target; --llb takes TARGET or TARGET/STAGE"
        )));
    };
    let available = || {
        compiled
            .stages
            .iter()
            .map(|s| format!("`{}`", s.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = StageKind::parse(kind).ok_or_else(|| {
        AppError::Usage(format!(
            "unknown stage `{kind}` of target `{target}`; expected one of {}",
            available()
        ))
    })?;
    let state = compiled.stage(kind).ok_or_else(|| {
        AppError::Usage(format!(
            "target `{target}` has no `{}` stage in {} mode; expected one of {}",
            kind.as_str(),
            mode_name(mode),
            available()
        ))
    })?;
    let definition = kiln_llb::marshal(state).map_err(|e| AppError::Usage(e.to_string()))?;
    Ok(definition.encode())
}

fn mode_name(mode: PackagesMode) -> &'static str {
    match mode {
        PackagesMode::Pinned => "pinned",
        PackagesMode::Refresh => "refresh",
    }
}

fn document<'a>(
    cwd: &std::path::Path,
    loaded: &'a Loaded,
    compiled: &'a [CompiledTarget],
    mode: PackagesMode,
) -> PlanDoc<'a> {
    let manifest: &Manifest = &loaded.manifest;
    let targets = compiled
        .iter()
        .map(|c| {
            let target = &manifest.targets[&c.name];
            let stages = c
                .stages
                .iter()
                .map(|s| StageDoc {
                    name: s.id.kind.as_str(),
                    id: s.id.to_string(),
                    digest: s
                        .state
                        .digest()
                        .expect("a stage is never scratch")
                        .to_string(),
                    inputs: loaded
                        .graph
                        .stage_inputs(&s.id)
                        .into_iter()
                        .map(|(id, _)| id.to_string())
                        .collect(),
                })
                .collect();
            TargetDoc {
                name: &c.name,
                from: match &target.from {
                    Base::Image(r) => r.to_string(),
                    Base::Target(t) => format!("target:{t}"),
                },
                image: target.image.as_ref().map(ToString::to_string),
                depends_on: loaded.graph.depends_on(&c.name),
                stages,
                config: &c.config,
                config_digest: format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(c.config.to_json()))
                ),
                packages: crate::affected::target_pins(cwd, target),
            }
        })
        .collect();
    PlanDoc {
        mode,
        profile: manifest.profile.as_deref(),
        rewrites: &manifest.rewrites,
        overrides: &manifest.overrides,
        targets,
    }
}

fn text(doc: &PlanDoc) -> String {
    let mut out = String::new();
    if let Some(profile) = doc.profile {
        let _ = writeln!(
            out,
            "profile {profile}: image-overrides, each matched against the normalised reference"
        );
        for rule in doc.overrides {
            let normalised = match &rule.normalised {
                Some(n) if *n != rule.rule => format!(" (= {n})"),
                _ => String::new(),
            };
            let _ = writeln!(out, "  {}{normalised}  {}", rule.rule, rule.location);
            for r in doc.rewrites.iter().filter(|r| r.rule == rule.rule) {
                let _ = writeln!(out, "    {} {}: {} → {}", r.target, r.field, r.old, r.new);
            }
            if rule.matched == 0 {
                let tried = if rule.missed.is_empty() {
                    "no reference reached it".to_string()
                } else {
                    format!("tried on {}", rule.missed.join(", "))
                };
                let _ = writeln!(out, "    matches nothing: {tried}");
            }
        }
    }
    for t in &doc.targets {
        let _ = write!(out, "{}  from {}", t.name, t.from);
        if let Some(image) = &t.image {
            let _ = write!(out, "  image {image}");
        }
        out.push('\n');
        let width = t.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &t.stages {
            let _ = writeln!(out, "  {:width$}  {}", s.name, s.digest);
        }
    }
    out
}

fn node_id(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn dot(doc: &PlanDoc) -> String {
    let mut out = String::from("digraph kiln {\n  rankdir=LR;\n  node [shape=box];\n");
    for (i, t) in doc.targets.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label=\"{}\";", t.name);
        for s in &t.stages {
            let _ = writeln!(
                out,
                "    {} [label=\"{}\\n{}\"];",
                node_id(&s.id),
                s.name,
                &s.digest[..19]
            );
        }
        out.push_str("  }\n");
    }
    for t in &doc.targets {
        for s in &t.stages {
            for input in &s.inputs {
                let _ = writeln!(out, "  {} -> {};", node_id(input), node_id(&s.id));
            }
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(doc: &PlanDoc) -> String {
    let mut out = String::from("flowchart LR\n");
    for t in &doc.targets {
        let _ = writeln!(
            out,
            "  subgraph {}[\"{}\"]",
            node_id(&format!("t_{}", t.name)),
            t.name
        );
        for s in &t.stages {
            let _ = writeln!(out, "    {}[\"{}\"]", node_id(&s.id), s.name);
        }
        out.push_str("  end\n");
    }
    for t in &doc.targets {
        for s in &t.stages {
            for input in &s.inputs {
                let _ = writeln!(out, "  {} --> {}", node_id(input), node_id(&s.id));
            }
        }
    }
    out
}

/// Marshal the full Definition of every stage of every target, as a build sends them; returns
/// how many and their total size in bytes. Used by the planning benchmark.
pub fn marshal_all(settings: &Settings, mode: PackagesMode) -> Result<(usize, usize), AppError> {
    let loaded = load(settings, mode)?;
    let (_, compiled) = loaded.compile(&[])?;
    let (mut count, mut bytes) = (0, 0);
    for stage in compiled.iter().flat_map(|c| &c.stages) {
        let definition =
            kiln_llb::marshal(&stage.state).map_err(|e| AppError::Usage(e.to_string()))?;
        count += 1;
        bytes += definition.encode().len();
    }
    Ok((count, bytes))
}
