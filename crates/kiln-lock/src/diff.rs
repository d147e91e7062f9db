//! How two sets of pins differ.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// The difference between two lock files' pins; every list is sorted by package name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// (name, version)
    pub added: Vec<(String, String)>,
    /// (name, version)
    pub removed: Vec<(String, String)>,
    /// (name, old version, new version)
    pub upgraded: Vec<(String, String, String)>,
    /// (name, old version, new version)
    pub downgraded: Vec<(String, String, String)>,
}

/// What changed from `old` to `new` (maps as returned by [`crate::pins`]).
pub fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Changes {
    let mut c = Changes::default();
    for (name, v) in old {
        match new.get(name) {
            None => c.removed.push((name.clone(), v.clone())),
            Some(n) if n == v => {}
            Some(n) if compare_versions(n, v) == Ordering::Less => {
                c.downgraded.push((name.clone(), v.clone(), n.clone()))
            }
            Some(n) => c.upgraded.push((name.clone(), v.clone(), n.clone())),
        }
    }
    for (name, v) in new {
        if !old.contains_key(name) {
            c.added.push((name.clone(), v.clone()));
        }
    }
    c
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }

    /// One line for a commit message, e.g. "3 upgraded, 1 added"; "no changes" when empty.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            (self.upgraded.len(), "upgraded"),
            (self.downgraded.len(), "downgraded"),
            (self.added.len(), "added"),
            (self.removed.len(), "removed"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One line per change, all sorted by name: `+ attrs 23.1.0`, `- six 1.16.0`,
/// `↑ requests 2.31.0 → 2.32.3`, `↓ urllib3 2.2.3 → 1.26.20`.
impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<(&str, String)> = Vec::new();
        lines.extend(
            self.added
                .iter()
                .map(|(n, v)| (n.as_str(), format!("+ {n} {v}"))),
        );
        lines.extend(
            self.removed
                .iter()
                .map(|(n, v)| (n.as_str(), format!("- {n} {v}"))),
        );
        for (arrow, list) in [("↑", &self.upgraded), ("↓", &self.downgraded)] {
            lines.extend(
                list.iter()
                    .map(|(n, a, b)| (n.as_str(), format!("{arrow} {n} {a} → {b}"))),
            );
        }
        lines.sort();
        for (_, line) in lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Dot-separated components compared numerically where both are numbers, else as strings.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn classifies_and_displays_changes() {
        let old = map(&[
            ("certifi", "2024.8.30"),
            ("requests", "2.31.0"),
            ("six", "1.16.0"),
            ("urllib3", "2.2.3"),
            ("idna", "3.9"),
        ]);
        let new = map(&[
            ("attrs", "23.1.0"),
            ("certifi", "2024.8.30"),
            ("requests", "2.32.3"),
            ("urllib3", "1.26.20"),
            ("idna", "3.10"),
        ]);
        let c = diff(&old, &new);
        assert_eq!(c.added, [("attrs".into(), "23.1.0".into())]);
        assert_eq!(c.removed, [("six".into(), "1.16.0".into())]);
        assert_eq!(c.upgraded.len(), 2, "3.9 → 3.10 is numeric: {c:?}");
        assert_eq!(c.summary(), "2 upgraded, 1 downgraded, 1 added, 1 removed");
        assert_eq!(
            c.to_string(),
            "+ attrs 23.1.0\n↑ idna 3.9 → 3.10\n↑ requests 2.31.0 → 2.32.3\n\
             - six 1.16.0\n↓ urllib3 2.2.3 → 1.26.20\n"
        );
    }

    #[test]
    fn no_changes() {
        let m = map(&[("a", "1")]);
        let c = diff(&m, &m);
        assert!(c.is_empty());
        assert_eq!(c.summary(), "no changes");
        assert_eq!(c.to_string(), "");
    }

    #[test]
    fn version_order() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(compare_versions("2.0.0rc1", "2.0.0rc2"), Ordering::Less);
        assert_eq!(compare_versions("1.2", "1.2"), Ordering::Equal);
    }
}
