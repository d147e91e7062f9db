//! The loader: every file parsed with spans, variables and profiles resolved first, then each
//! target read strictly, then the cross-file checks (duplicate names, unknown references).

mod defaults;
mod groups;
mod packages;
mod profiles;
mod scalars;
mod targets;
mod vars;

use std::collections::BTreeMap;
use std::path::Path;

use toml::de::DeTable;

use crate::cx::{Cx, Sink, Vars, join, suggest};
use crate::*;
use defaults::read_defaults;
use groups::read_groups;
use profiles::{override_report, select_profile};
use scalars::normal_join;
use targets::TargetReader;
use vars::resolve_vars;

const TOP_KEYS: &[&str] = &["version", "vars", "defaults", "profiles", "target", "group"];

struct Doc<'s> {
    source: &'s Source,
    table: DeTable<'s>,
}

pub(crate) fn load(sources: &[Source], options: &LoadOptions) -> Result<Manifest, Diagnostics> {
    let sink = Sink::default();
    let empty = Vars::default();
    let mut docs = Vec::new();
    for source in sources {
        let cx = Cx::new(&source.path, &source.text, &sink, &empty);
        match DeTable::parse(&source.text) {
            Ok(table) => {
                let table = table.into_inner();
                top_level(&cx, &table);
                docs.push(Doc { source, table });
            }
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim_end().to_string();
                cx.error(span, "", format!("invalid TOML: {message}"), None, None);
            }
        }
    }
    if docs.is_empty() {
        return Err(Diagnostics(sink.into_sorted()));
    }

    let vars = resolve_vars(&docs, options, &sink);
    let profile = select_profile(&docs, options, &sink, &vars);

    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut target_spans: BTreeMap<String, Location> = BTreeMap::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut rewrites = Vec::new();
    let mut refs = Vec::new();
    for doc in &docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, &sink, &vars);
        let defaults = read_defaults(&cx, &doc.table);
        let manifest_dir = normal_join(doc.source.path.parent().unwrap_or(Path::new("")), ".");
        let Some(section) = cx.section(&doc.table, "target") else {
            continue;
        };
        for (name, value) in section.iter() {
            let name_str: &str = name.get_ref();
            let location = cx.loc(name.span());
            if let Some(first) = target_spans.get(name_str) {
                cx.error(
                    name.span(),
                    &join("target", name_str),
                    format!("target `{name_str}` is declared twice; first at {first}"),
                    Some("target names unique across all manifests".into()),
                    None,
                );
                continue;
            }
            target_spans.insert(name_str.to_string(), location.clone());
            let reader = TargetReader {
                cx: &cx,
                name: name_str,
                path: join("target", name_str),
                name_span: name.span(),
                defaults: &defaults,
                manifest_dir: &manifest_dir,
                profile: profile.as_ref(),
            };
            if let Some((target, mut target_rewrites, target_refs)) = reader.read(value) {
                rewrites.append(&mut target_rewrites);
                refs.extend(
                    target_refs
                        .into_iter()
                        .map(|(r, span, key)| (doc.source, r, span, key)),
                );
                targets.insert(name_str.to_string(), target);
            }
        }
    }
    for doc in &docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, &sink, &vars);
        read_groups(
            &cx,
            &doc.table,
            &target_spans,
            &mut groups,
            &mut refs,
            doc.source,
        );
    }

    // Every `target:NAME` and group member must name a target.
    for (source, name, span, key) in refs {
        if !target_spans.contains_key(&name) {
            let cx = Cx::new(&source.path, &source.text, &sink, &vars);
            let hint = suggest(&name, target_spans.keys().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"));
            cx.error(
                span,
                &key,
                format!("unknown target `{name}`"),
                Some("the name of a declared target".into()),
                hint,
            );
        }
    }

    if !sink.is_empty() {
        return Err(Diagnostics(sink.into_sorted()));
    }
    if let Some(p) = &profile {
        for target in targets.values_mut() {
            for (k, v) in &p.labels {
                target.config.labels.insert(k.clone(), v.clone());
            }
        }
    }
    let (overrides, warnings) = match &profile {
        Some(p) => override_report(p),
        None => Default::default(),
    };
    Ok(Manifest {
        targets,
        groups,
        profile: profile.map(|p| p.name),
        rewrites,
        overrides,
        warnings,
        vars: vars
            .values
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
    })
}

fn top_level(cx: &Cx<'_>, table: &DeTable<'_>) {
    cx.keys(table, "", TOP_KEYS);
    match table.get("version") {
        None => cx.error(
            0..0,
            "version",
            "missing required key `version`",
            Some("`version = 1`".into()),
            None,
        ),
        Some(v) => {
            if let Some(n) = cx.integer(v, "version")
                && n != 1
            {
                cx.error(
                    v.span(),
                    "version",
                    format!("unsupported manifest version {n}"),
                    Some("1".into()),
                    None,
                );
            }
        }
    }
}
