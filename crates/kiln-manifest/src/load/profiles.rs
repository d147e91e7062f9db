//! `[profiles]`: every profile read, the selected one's image overrides applied to each
//! reference a target names, and the report of what each rule matched.

use std::collections::BTreeMap;

use kiln_reference::Reference;
use regex::Regex;

use super::Doc;
use super::targets::TargetReader;
use crate::cx::{Cx, Sink, Value, Vars, join, one_of, suggest};
use crate::*;

const PROFILE_KEYS: &[&str] = &["image-overrides", "vars", "labels"];

/// One `image-overrides` rule, in the order it applies.
pub(super) struct Rule {
    pub(super) key: String,
    /// Dotted key path of the rule, for messages.
    pub(super) path: String,
    pub(super) matcher: Matcher,
    pub(super) template: String,
    pub(super) location: Location,
    /// Where its key is.
    pub(super) key_location: Location,
    /// How many references it rewrote, and the references it was tried on and did not match
    /// (normalised, as matched), for `kiln plan` and the warning about a rule that does nothing.
    pub(super) matched: std::cell::Cell<usize>,
    pub(super) missed: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

pub(super) enum Matcher {
    Exact(Reference),
    Regex(Regex),
}

pub(super) struct Profile {
    pub(super) name: String,
    pub(super) rules: Vec<Rule>,
    pub(super) labels: BTreeMap<String, String>,
}

/// Read every profile (so typos in unused ones are found too) and return the selected one.
pub(super) fn select_profile(
    docs: &[Doc<'_>],
    options: &LoadOptions,
    sink: &Sink,
    vars: &Vars,
) -> Option<Profile> {
    let mut names: Vec<String> = Vec::new();
    let mut selected: Option<Profile> = None;
    for doc in docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, sink, vars);
        let Some(section) = cx.section(&doc.table, "profiles") else {
            continue;
        };
        for (name, value) in section.iter() {
            let name_str: &str = name.get_ref();
            let path = join("profiles", name_str);
            let Some(table) = cx.table(value, &path) else {
                continue;
            };
            cx.keys(table, &path, PROFILE_KEYS);
            if !names.iter().any(|n| n == name_str) {
                names.push(name_str.to_string());
            }
            let mut scratch = Profile {
                name: name_str.to_string(),
                rules: Vec::new(),
                labels: BTreeMap::new(),
            };
            let into = if options.profile.as_deref() == Some(name_str) {
                selected.get_or_insert_with(|| Profile {
                    name: name_str.to_string(),
                    rules: Vec::new(),
                    labels: BTreeMap::new(),
                })
            } else {
                &mut scratch
            };
            if let Some(v) = table.get("labels")
                && let Some(labels) = cx.text_map(v, &join(&path, "labels"))
            {
                into.labels.extend(labels);
            }
            if let Some(v) = table.get("vars") {
                cx.table(v, &join(&path, "vars"));
            }
            if let Some(v) = table.get("image-overrides") {
                read_rules(&cx, v, &join(&path, "image-overrides"), &mut into.rules);
            }
        }
    }
    let wanted = options.profile.as_ref()?;
    if selected.is_none() {
        let first = &docs[0].source;
        let cx = Cx::new(&first.path, &first.text, sink, vars);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let expected = if refs.is_empty() {
            "a profile declared under [profiles]; none are".to_string()
        } else {
            one_of(&refs)
        };
        let hint = suggest(wanted, refs.iter().copied()).map(|s| format!("did you mean `{s}`?"));
        cx.error(
            0..0,
            &join("profiles", wanted),
            format!("unknown profile `{wanted}` (from --profile)"),
            Some(expected),
            hint,
        );
        return None;
    }
    selected
}

fn read_rules(cx: &Cx<'_>, value: &Value<'_>, path: &str, rules: &mut Vec<Rule>) {
    let Some(table) = cx.table(value, path) else {
        return;
    };
    for (key, value) in table.iter() {
        let key_str: &str = key.get_ref();
        let key_path = join(path, key_str);
        let Some(template) = cx.text(value, &key_path) else {
            continue;
        };
        let matcher = if let Some(pattern) = key_str.strip_prefix("re:") {
            match Regex::new(pattern) {
                Ok(re) => Matcher::Regex(re),
                Err(e) => {
                    cx.error(
                        key.span(),
                        &key_path,
                        format!("invalid regular expression: {e}"),
                        None,
                        None,
                    );
                    continue;
                }
            }
        } else {
            match Reference::parse(key_str) {
                Ok(r) => Matcher::Exact(r),
                Err(e) => {
                    cx.error(
                        key.span(),
                        &key_path,
                        e.to_string(),
                        Some("an image reference, or `re:` and a regular expression".into()),
                        None,
                    );
                    continue;
                }
            }
        };
        rules.push(Rule {
            key: key_str.to_string(),
            path: key_path,
            matcher,
            template,
            location: cx.loc(value.span()),
            key_location: cx.loc(key.span()),
            matched: Default::default(),
            missed: Default::default(),
        });
    }
    // Exact rules are tried before regex rules; within each kind, file order.
    rules.sort_by_key(|r| matches!(r.matcher, Matcher::Regex(_)));
}

/// What each rule of the applied profile matched, and a warning for each rule that rewrote
/// nothing (most often a `re:` rule written against the reference as typed, not normalised).
pub(super) fn override_report(profile: &Profile) -> (Vec<OverrideRule>, Vec<Diagnostic>) {
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    for rule in &profile.rules {
        let missed: Vec<String> = rule.missed.borrow().iter().cloned().collect();
        let normalised = match &rule.matcher {
            Matcher::Exact(r) => Some(r.to_string()),
            Matcher::Regex(_) => None,
        };
        if rule.matched.get() == 0 {
            const SHOWN: usize = 5;
            let mut tried: Vec<String> = missed
                .iter()
                .take(SHOWN)
                .map(|r| format!("`{r}`"))
                .collect();
            if missed.len() > SHOWN {
                tried.push(format!("and {} more", missed.len() - SHOWN));
            }
            let against = match &normalised {
                Some(n) if *n != rule.key => format!(" (`{}` normalised is `{n}`)", rule.key),
                _ => String::new(),
            };
            let hint = if tried.is_empty() {
                "no reference reached it: the rules before it rewrote them all".to_string()
            } else {
                format!(
                    "rules match the normalised reference{against}; it was tried on {}",
                    tried.join(", ")
                )
            };
            warnings.push(Diagnostic {
                location: rule.key_location.clone(),
                key: rule.path.clone(),
                message: format!(
                    "profile `{}`: this override rewrites no image reference of any target",
                    profile.name
                ),
                expected: None,
                hint: Some(hint),
            });
        }
        rules.push(OverrideRule {
            rule: rule.key.clone(),
            normalised,
            location: rule.key_location.clone(),
            matched: rule.matched.get(),
            missed,
        });
    }
    (rules, warnings)
}

impl TargetReader<'_, '_> {
    pub(super) fn rewrite(
        &self,
        reference: Reference,
        field: &str,
        rewrites: &mut Vec<Rewrite>,
    ) -> Reference {
        let Some(profile) = self.profile else {
            return reference;
        };
        let old = reference.to_string();
        for rule in &profile.rules {
            let new_text = match &rule.matcher {
                Matcher::Exact(r) if *r == reference => rule.template.clone(),
                Matcher::Regex(re) if re.is_match(&old) => {
                    re.replacen(&old, 1, rule.template.as_str()).into_owned()
                }
                _ => {
                    rule.missed.borrow_mut().insert(old.clone());
                    continue;
                }
            };
            rule.matched.set(rule.matched.get() + 1);
            let new = match Reference::parse(&new_text) {
                Ok(r) => r,
                Err(e) => {
                    self.cx.sink.push(Diagnostic {
                        location: rule.location.clone(),
                        key: rule.path.clone(),
                        message: format!(
                            "turns `{old}` (`{}`) into an invalid reference: {}",
                            self.key(field),
                            e.reason
                        ),
                        expected: Some("an override whose result is an image reference".into()),
                        hint: None,
                    });
                    return reference;
                }
            };
            rewrites.push(Rewrite {
                target: self.name.to_string(),
                field: field.to_string(),
                old,
                new: new.to_string(),
                rule: rule.key.clone(),
            });
            return new;
        }
        reference
    }
}
