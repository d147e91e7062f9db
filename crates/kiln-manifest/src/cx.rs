//! Reading typed values out of a spanned TOML tree, reporting every problem as a
//! [`Diagnostic`] at the value's place in its file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::{Diagnostic, LineIndex, Location};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects diagnostics from every file of one load.
#[derive(Default)]
pub(crate) struct Sink(RefCell<Vec<Diagnostic>>);

impl Sink {
    pub(crate) fn push(&self, d: Diagnostic) {
        self.0.borrow_mut().push(d);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// All diagnostics, sorted by place, duplicates removed.
    pub(crate) fn into_sorted(self) -> Vec<Diagnostic> {
        let mut all = self.0.into_inner();
        all.sort_by(|a, b| {
            (&a.location, &a.key, &a.message).cmp(&(&b.location, &b.key, &b.message))
        });
        all.dedup();
        all
    }
}

/// Variable values as resolved for this load: `None` is declared but without a value.
#[derive(Default)]
pub(crate) struct Vars {
    pub(crate) values: BTreeMap<String, Option<String>>,
    /// Where each variable's value would come from, for "has no value" messages.
    pub(crate) env_names: BTreeMap<String, String>,
}

/// One file being read.
pub(crate) struct Cx<'a> {
    pub(crate) file: &'a Path,
    lines: LineIndex<'a>,
    pub(crate) sink: &'a Sink,
    pub(crate) vars: &'a Vars,
}

/// The closest candidate to `name`, if one is close enough to be a likely typo.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= limit && *c != name)
        .min()
        .map(|(_, c)| c.to_string())
}

/// "`a`, `b` or `c`".
pub(crate) fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("one of {} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl<'a> Cx<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str, sink: &'a Sink, vars: &'a Vars) -> Self {
        Cx {
            file,
            lines: LineIndex::new(text),
            sink,
            vars,
        }
    }

    pub(crate) fn loc(&self, span: Range<usize>) -> Location {
        let (line, column) = self.lines.line_column(span.start);
        Location {
            file: self.file.to_path_buf(),
            line,
            column,
        }
    }

    pub(crate) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
        expected: Option<String>,
        hint: Option<String>,
    ) {
        self.sink.push(Diagnostic {
            location: self.loc(span),
            key: key.to_string(),
            message: message.into(),
            expected,
            hint,
        });
    }

    pub(crate) fn wrong_type(&self, v: &Value<'_>, key: &str, expected: &str) {
        let found = v.get_ref().type_str();
        self.error(
            v.span(),
            key,
            format!("expected {expected}, found {} {found}", article(found)),
            None,
            None,
        );
    }

    /// Report every key of `table` not in `allowed`, with a suggestion for likely typos.
    pub(crate) fn keys(&self, table: &DeTable<'_>, path: &str, allowed: &[&str]) {
        for (k, _) in table.iter() {
            let name: &str = k.get_ref();
            if !allowed.contains(&name) {
                self.error(
                    k.span(),
                    &join(path, name),
                    format!("unknown key `{name}`"),
                    Some(one_of(allowed)),
                    suggest(name, allowed.iter().copied()).map(|s| format!("did you mean `{s}`?")),
                );
            }
        }
    }

    pub(crate) fn table<'t, 'i>(&self, v: &'t Value<'i>, key: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(v, key, "a table");
                None
            }
        }
    }

    /// A top-level table of a document, if present (a type error if it is not a table).
    pub(crate) fn section<'t, 'i>(
        &self,
        doc: &'t DeTable<'i>,
        key: &str,
    ) -> Option<&'t DeTable<'i>> {
        doc.get(key).and_then(|v| self.table(v, key))
    }

    /// A string taken literally (no variable substitution).
    pub(crate) fn raw(&self, v: &Value<'_>, key: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(v, key, "a string");
                None
            }
        }
    }

    /// A string with `${VAR}` substituted.
    pub(crate) fn text(&self, v: &Value<'_>, key: &str) -> Option<String> {
        let raw = self.raw(v, key)?;
        self.substitute(&raw, v.span(), key)
    }

    /// An array of strings, each with `${VAR}` substituted.
    pub(crate) fn texts(&self, v: &Value<'_>, key: &str) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(v, key, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.text(item, &format!("{key}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A table of strings, values with `${VAR}` substituted.
    pub(crate) fn text_map(&self, v: &Value<'_>, key: &str) -> Option<BTreeMap<String, String>> {
        self.map(v, key, Dollars::Kiln)
    }

    /// An environment table (`config.env`, `build-env`): a table of strings with `${VAR}`
    /// substituted. What is left (`$NAME`, and the `${NAME}` written as `$${NAME}`) refers to
    /// the inherited environment and is expanded when the target is compiled.
    pub(crate) fn env_map(&self, v: &Value<'_>, key: &str) -> Option<BTreeMap<String, String>> {
        self.map(v, key, Dollars::Env)
    }

    fn map(&self, v: &Value<'_>, key: &str, dollars: Dollars) -> Option<BTreeMap<String, String>> {
        let table = self.table(v, key)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, item) in table.iter() {
            let name: &str = k.get_ref();
            let key = join(key, name);
            let value = self
                .raw(item, &key)
                .and_then(|raw| self.substitute_in(&raw, item.span(), &key, dollars));
            match value {
                Some(s) => {
                    out.insert(name.to_string(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn integer(&self, v: &Value<'_>, key: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(v.span(), key, "integer out of range", None, None);
                    None
                }
            },
            _ => {
                self.wrong_type(v, key, "an integer");
                None
            }
        }
    }

    /// Replace `${NAME}` by the variable's value and `$$` by `$`. Anything else after `$` is
    /// kept (shell `$HOME`, regex `$1`, `${1}`).
    pub(crate) fn substitute(&self, raw: &str, span: Range<usize>, key: &str) -> Option<String> {
        self.substitute_in(raw, span, key, Dollars::Kiln)
    }

    fn substitute_in(
        &self,
        raw: &str,
        span: Range<usize>,
        key: &str,
        dollars: Dollars,
    ) -> Option<String> {
        if !raw.contains('$') {
            return Some(raw.to_string());
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        let mut ok = true;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let name = after
                .strip_prefix('{')
                .and_then(|inner| inner.find('}').map(|end| &inner[..end]))
                .filter(|n| is_var_name(n));
            let Some(name) = name else {
                out.push('$');
                rest = after;
                continue;
            };
            rest = &after[name.len() + 2..];
            match self.vars.values.get(name) {
                Some(Some(value)) => out.push_str(value),
                Some(None) => {
                    ok = false;
                    let hint = match self.vars.env_names.get(name) {
                        Some(env) => {
                            format!("set the environment variable `{env}` or pass `--set {name}=…`")
                        }
                        None => format!("pass `--set {name}=…`"),
                    };
                    self.error(
                        span.clone(),
                        key,
                        format!("variable `{name}` has no value"),
                        None,
                        Some(hint),
                    );
                }
                None => {
                    ok = false;
                    let suggestion = suggest(name, self.vars.values.keys().map(String::as_str));
                    let hint = match (dollars, suggestion) {
                        (Dollars::Kiln, Some(s)) => {
                            format!("did you mean `{s}`? (write `$${{{name}}}` to keep it literal)")
                        }
                        (Dollars::Kiln, None) => format!(
                            "declare it under [vars], or write `$${{{name}}}` to keep it literal"
                        ),
                        (Dollars::Env, Some(s)) => format!(
                            "did you mean the variable `{s}`? Write `${name}` (or `$${{{name}}}`) to use the inherited environment"
                        ),
                        (Dollars::Env, None) => format!(
                            "write `${name}` (or `$${{{name}}}`) to use the inherited environment"
                        ),
                    };
                    self.error(
                        span.clone(),
                        key,
                        format!("undeclared variable `{name}`"),
                        None,
                        Some(hint),
                    );
                }
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }
}

/// What a `$` left after variable substitution means in a value.
#[derive(Clone, Copy)]
enum Dollars {
    /// Nothing to kiln (a shell's or a regex's).
    Kiln,
    /// The inherited environment's variable (environment tables).
    Env,
}

pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `path.key`, or `key` at the top level; keys that are not bare are quoted.
pub(crate) fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("fron", ["from", "run"]), Some("from".into()));
        assert_eq!(suggest("wrker", ["web", "worker"]), Some("worker".into()));
        assert_eq!(suggest("xyz", ["from", "run"]), None);
    }

    #[test]
    fn locations_are_one_based_lines_and_char_columns() {
        let sink = Sink::default();
        let vars = Vars::default();
        let text = "a = 1\nbé = \"x\"\n";
        let cx = Cx::new(Path::new("k.toml"), text, &sink, &vars);
        let at = text.find("\"x\"").unwrap();
        let loc = cx.loc(at..at + 3);
        assert_eq!((loc.line, loc.column), (2, 6));
        assert_eq!((cx.loc(0..1).line, cx.loc(0..1).column), (1, 1));
    }

    #[test]
    fn substitution_keeps_shell_and_regex_dollars() {
        let sink = Sink::default();
        let mut vars = Vars::default();
        vars.values.insert("TAG".into(), Some("v1".into()));
        vars.values.insert("EMPTY".into(), None);
        let cx = Cx::new(Path::new("k.toml"), "", &sink, &vars);
        assert_eq!(
            cx.substitute("a:${TAG} $HOME $1 ${1} $$ $${TAG}", 0..0, "k")
                .unwrap(),
            "a:v1 $HOME $1 ${1} $ ${TAG}"
        );
        assert!(sink.is_empty());
        assert_eq!(cx.substitute("${TGA}", 0..0, "k"), None);
        assert_eq!(cx.substitute("${EMPTY}", 0..0, "k"), None);
        let all = sink.into_sorted();
        assert_eq!(all.len(), 2);
        assert!(
            all.iter()
                .any(|d| d.hint.as_deref().unwrap().contains("did you mean `TAG`"))
        );
    }
}
