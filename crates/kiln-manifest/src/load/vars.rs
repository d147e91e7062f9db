//! `[vars]`: each variable's value, `--set` over the environment over the selected profile's
//! `vars` over the default.

use std::collections::BTreeMap;

use toml::de::DeValue;

use super::Doc;
use crate::cx::{Cx, Sink, Vars, is_var_name, join, one_of, suggest};
use crate::*;

const VAR_KEYS: &[&str] = &["default", "env"];

/// A `[vars]` entry: its default, the environment variable it reads, and where it is.
struct VarDecl {
    default: Option<String>,
    env: Option<String>,
    location: Location,
}

/// Variable values: `--set` over the environment over the profile's `vars` over the default.
pub(super) fn resolve_vars(docs: &[Doc<'_>], options: &LoadOptions, sink: &Sink) -> Vars {
    let empty = Vars::default();
    let mut declared: BTreeMap<String, VarDecl> = BTreeMap::new();
    for doc in docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, sink, &empty);
        let Some(section) = cx.section(&doc.table, "vars") else {
            continue;
        };
        for (name, value) in section.iter() {
            let name_str: &str = name.get_ref();
            let key = join("vars", name_str);
            if !is_var_name(name_str) {
                cx.error(
                    name.span(),
                    &key,
                    format!("invalid variable name `{name_str}`"),
                    Some("letters, digits and `_`, not starting with a digit".into()),
                    None,
                );
                continue;
            }
            if let Some(first) = declared.get(name_str) {
                cx.error(
                    name.span(),
                    &key,
                    format!(
                        "variable `{name_str}` is declared twice; first at {}",
                        first.location
                    ),
                    None,
                    None,
                );
                continue;
            }
            let (default, env) = match value.get_ref() {
                DeValue::String(s) => (Some(s.to_string()), None),
                DeValue::Table(t) => {
                    cx.keys(t, &key, VAR_KEYS);
                    let default = t
                        .get("default")
                        .and_then(|v| cx.raw(v, &join(&key, "default")));
                    let env = t.get("env").and_then(|v| cx.raw(v, &join(&key, "env")));
                    (default, env)
                }
                _ => {
                    cx.wrong_type(value, &key, "a string or a table with `default` and `env`");
                    continue;
                }
            };
            declared.insert(
                name_str.to_string(),
                VarDecl {
                    default,
                    env,
                    location: cx.loc(name.span()),
                },
            );
        }
    }

    // The selected profile's `vars` (read raw here; the profile itself is read later).
    let mut from_profile: BTreeMap<String, String> = BTreeMap::new();
    if let Some(wanted) = &options.profile {
        for doc in docs {
            let cx = Cx::new(&doc.source.path, &doc.source.text, sink, &empty);
            let Some(DeValue::Table(profiles)) = doc.table.get("profiles").map(|v| v.get_ref())
            else {
                continue;
            };
            let Some(DeValue::Table(profile)) = profiles.get(wanted.as_str()).map(|v| v.get_ref())
            else {
                continue;
            };
            let Some(section) = profile.get("vars") else {
                continue;
            };
            let path = format!("{}.vars", join("profiles", wanted));
            let Some(section) = cx.table(section, &path) else {
                continue;
            };
            for (name, value) in section.iter() {
                let name_str: &str = name.get_ref();
                let key = join(&path, name_str);
                if !declared.contains_key(name_str) {
                    let hint = suggest(name_str, declared.keys().map(String::as_str))
                        .map(|s| format!("did you mean `{s}`?"));
                    cx.error(
                        name.span(),
                        &key,
                        format!("profile sets undeclared variable `{name_str}`"),
                        Some("a variable declared under [vars]".into()),
                        hint,
                    );
                    continue;
                }
                if let Some(v) = cx.raw(value, &key) {
                    from_profile.insert(name_str.to_string(), v);
                }
            }
        }
    }

    // A problem of the command line, not of a file: said as `--set NAME`.
    for name in options.set.keys() {
        if !declared.contains_key(name) {
            let hint = suggest(name, declared.keys().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"));
            let files: Vec<String> = docs
                .iter()
                .map(|d| format!("{}", d.source.path.display()))
                .collect();
            sink.push(Diagnostic {
                location: Location::command_line(format!("--set {name}")),
                key: String::new(),
                message: format!(
                    "no variable `{name}` is declared under [vars] in {}",
                    files.join(", ")
                ),
                expected: Some(one_of(
                    &declared.keys().map(String::as_str).collect::<Vec<_>>(),
                ))
                .filter(|s| !s.is_empty()),
                hint,
            });
        }
    }

    let mut vars = Vars::default();
    for (name, decl) in declared {
        let VarDecl { default, env, .. } = decl;
        let value = options
            .set
            .get(&name)
            .cloned()
            .or_else(|| env.as_ref().and_then(|e| options.env.get(e).cloned()))
            .or_else(|| from_profile.get(&name).cloned())
            .or(default);
        if let Some(env) = env {
            vars.env_names.insert(name.clone(), env);
        }
        vars.values.insert(name, value);
    }
    vars
}
