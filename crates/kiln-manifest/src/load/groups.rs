//! `[group.NAME]`: named lists of targets, checked against the targets' names.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::scalars::{NAME_RULE, valid_name};
use crate::cx::{Cx, join};
use crate::*;

const GROUP_KEYS: &[&str] = &["targets"];

pub(super) fn read_groups<'s>(
    cx: &Cx<'_>,
    doc: &DeTable<'_>,
    targets: &BTreeMap<String, Location>,
    groups: &mut BTreeMap<String, Group>,
    refs: &mut Vec<(&'s Source, String, Range<usize>, String)>,
    source: &'s Source,
) {
    let Some(section) = cx.section(doc, "group") else {
        return;
    };
    for (name, value) in section.iter() {
        let name_str: &str = name.get_ref();
        let path = join("group", name_str);
        if !valid_name(name_str) {
            cx.error(
                name.span(),
                &path,
                format!("invalid group name `{name_str}`"),
                Some(NAME_RULE.into()),
                None,
            );
        }
        if let Some(t) = targets.get(name_str) {
            cx.error(
                name.span(),
                &path,
                format!("group `{name_str}` has the name of the target at {t}"),
                Some("group names distinct from target names".into()),
                None,
            );
        }
        if let Some(g) = groups.get(name_str) {
            cx.error(
                name.span(),
                &path,
                format!(
                    "group `{name_str}` is declared twice; first at {}",
                    g.location
                ),
                None,
                None,
            );
            continue;
        }
        let Some(table) = cx.table(value, &path) else {
            continue;
        };
        cx.keys(table, &path, GROUP_KEYS);
        let key = join(&path, "targets");
        let Some(list) = table.get("targets") else {
            cx.error(
                name.span(),
                &key,
                "missing required key `targets`",
                Some("an array of target names".into()),
                None,
            );
            continue;
        };
        let Some(members) = cx.texts(list, &key) else {
            continue;
        };
        if let DeValue::Array(items) = list.get_ref() {
            for (member, item) in members.iter().zip(items.iter()) {
                refs.push((source, member.clone(), item.span(), key.clone()));
            }
        }
        groups.insert(
            name_str.to_string(),
            Group {
                name: name_str.to_string(),
                targets: members,
                location: cx.loc(name.span()),
            },
        );
    }
}
