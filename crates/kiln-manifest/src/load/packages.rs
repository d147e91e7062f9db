//! `[target.NAME.packages]`: the manager, its files and lock (the manager's defaults when
//! not given), custom commands, `dir` and `activate`.

use std::ops::Range;

use toml::de::DeValue;

use super::scalars::in_context;
use super::targets::TargetReader;
use crate::cx::{Value, join, one_of, suggest};
use crate::*;

const PACKAGE_KEYS: &[&str] = &[
    "manager", "files", "lock", "refresh", "install", "dir", "activate",
];
const ACTIVATE_EXPECTED: &str =
    "a boolean, or the environment's directory (absolute, or relative to `dir`)";

impl TargetReader<'_, '_> {
    pub(super) fn packages(
        &self,
        v: &Value<'_>,
        key_span: Range<usize>,
        config: &ImageConfig,
    ) -> Option<Packages> {
        let cx = self.cx;
        let path = self.key("packages");
        let table = cx.table(v, &path)?;
        cx.keys(table, &path, PACKAGE_KEYS);
        let manager_key = join(&path, "manager");
        let names: Vec<&str> = MANAGERS.iter().map(|m| m.name).collect();
        let manager = match table.get("manager") {
            None => {
                cx.error(
                    key_span.clone(),
                    &manager_key,
                    "missing required key `manager`",
                    Some(one_of(&names)),
                    None,
                );
                return None;
            }
            Some(m) => {
                let s = cx.text(m, &manager_key)?;
                match Manager::from_name(&s) {
                    Some(manager) => manager,
                    None => {
                        let hint = suggest(&s, names.iter().copied())
                            .map(|s| format!("did you mean `{s}`?"));
                        cx.error(
                            m.span(),
                            &manager_key,
                            format!("unknown package manager `{s}`"),
                            Some(one_of(&names)),
                            hint,
                        );
                        return None;
                    }
                }
            }
        };
        let spec = manager.spec();
        // A key the manager has no default for, left out.
        let missing = |field: &str, expected: &str| {
            cx.error(
                key_span.clone(),
                &join(&path, field),
                format!(
                    "missing required key `{field}` (the `{}` manager has no default)",
                    spec.name
                ),
                Some(expected.into()),
                None,
            )
        };
        let mut ok = true;
        let mut list = |field: &str, default: &[&str]| -> Vec<String> {
            let key = join(&path, field);
            match table.get(field) {
                None if default.is_empty() => {
                    missing(field, "an array of paths relative to the context");
                    ok = false;
                    Vec::new()
                }
                None => default.iter().map(|s| s.to_string()).collect(),
                Some(v) => {
                    let values = match v.get_ref() {
                        DeValue::String(_) => cx.text(v, &key).map(|s| vec![s]),
                        _ => cx.texts(v, &key),
                    };
                    let Some(values) = values else {
                        ok = false;
                        return Vec::new();
                    };
                    for value in &values {
                        if !in_context(cx, value, v.span(), &key) {
                            ok = false;
                        }
                    }
                    if values.is_empty() {
                        cx.error(v.span(), &key, "must name at least one file", None, None);
                        ok = false;
                    }
                    values
                }
            }
        };
        let files = list("files", spec.files);
        let lock = list("lock", spec.lock);
        let command = |field: &str, template: Option<&str>| -> Option<String> {
            let key = join(&path, field);
            match table.get(field) {
                None if template.is_none() => {
                    missing(field, "a shell command");
                    None
                }
                None => None,
                Some(v) => cx.text(v, &key),
            }
        };
        let refresh = command("refresh", spec.refresh);
        let install = command("install", spec.install);
        // pip-compile writes one output file, and pip's commands name it.
        if spec.one_lock() && lock.len() > 1 && (refresh.is_none() || install.is_none()) {
            if let Some(v) = table.get("lock") {
                cx.error(
                    v.span(),
                    &join(&path, "lock"),
                    format!("{} locks into one file, not {}", spec.name, lock.len()),
                    Some("one path, or your own `refresh` and `install` commands".into()),
                    None,
                );
            }
            ok = false;
        }
        let dir = match table.get("dir") {
            Some(d) => {
                let s = cx.text(d, &join(&path, "dir"))?;
                if !s.starts_with('/') {
                    cx.error(
                        d.span(),
                        &join(&path, "dir"),
                        format!("`{s}` is not an absolute path"),
                        Some("an absolute directory inside the image".into()),
                        None,
                    );
                    return None;
                }
                s
            }
            None => config.workdir.clone().unwrap_or_else(|| "/app".to_string()),
        };
        let activate = match table.get("activate") {
            None => Activate::Manager,
            Some(v) => {
                let key = join(&path, "activate");
                match v.get_ref() {
                    DeValue::Boolean(true) => Activate::Manager,
                    DeValue::Boolean(false) => Activate::Off,
                    DeValue::String(_) => {
                        let s = cx.text(v, &key)?;
                        if s.trim_start_matches("./").trim_end_matches('/').is_empty() {
                            cx.error(
                                v.span(),
                                &key,
                                format!("`{s}` names no environment directory"),
                                Some(ACTIVATE_EXPECTED.into()),
                                None,
                            );
                            return None;
                        }
                        Activate::Dir(s)
                    }
                    _ => {
                        cx.wrong_type(v, &key, ACTIVATE_EXPECTED);
                        return None;
                    }
                }
            }
        };
        // A manager without a default command needs the manifest's (said above).
        if (spec.refresh.is_none() && refresh.is_none())
            || (spec.install.is_none() && install.is_none())
        {
            return None;
        }
        if !ok {
            return None;
        }
        let location = table.get("files").map(|v| v.span()).unwrap_or(key_span);
        Some(Packages {
            manager,
            files,
            lock,
            refresh,
            install,
            dir,
            activate,
            location: cx.loc(location),
        })
    }
}
