//! Values checked the same way wherever they appear: names, paths inside the context, ports,
//! modes.

use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::de::DeValue;

use crate::cx::{Cx, Value};

pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

pub(super) const NAME_RULE: &str =
    "lowercase letters, digits, `_`, `.` and `-`, starting with a letter or digit";

/// A secret name is the name of the file it is mounted as in `/run/secrets/`.
pub(super) fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) const SECRET_NAME_RULE: &str = "letters, digits, `_`, `.` and `-`, starting with a letter, digit or `_` (it is the file name in /run/secrets/)";

/// A relative path that stays inside its directory.
fn inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && !p.is_absolute()
        && p.components().all(|c| {
            !matches!(
                c,
                Component::ParentDir | Component::Prefix(_) | Component::RootDir
            )
        })
}

/// [`inside`], or an error at `span` saying the path leaves the build context.
pub(super) fn in_context(cx: &Cx<'_>, path: &str, span: Range<usize>, key: &str) -> bool {
    if inside(path) {
        return true;
    }
    cx.error(
        span,
        key,
        format!("`{path}` is outside the build context"),
        Some("a path relative to the context, without `..`".into()),
        None,
    );
    false
}

pub(super) fn port(cx: &Cx<'_>, v: &Value<'_>, key: &str) -> Option<String> {
    let expected = || Some("a port number 1–65535, or `PORT/tcp` / `PORT/udp`".to_string());
    let (number, proto) = match v.get_ref() {
        DeValue::Integer(_) => (cx.integer(v, key)?, "tcp".to_string()),
        DeValue::String(_) => {
            let s = cx.text(v, key)?;
            let (n, proto) = s.split_once('/').unwrap_or((&s, "tcp"));
            match n.parse::<i64>() {
                Ok(n) if proto == "tcp" || proto == "udp" || proto == "sctp" => {
                    (n, proto.to_string())
                }
                _ => {
                    cx.error(
                        v.span(),
                        key,
                        format!("invalid port `{s}`"),
                        expected(),
                        None,
                    );
                    return None;
                }
            }
        }
        _ => {
            cx.wrong_type(v, key, "a port number or string");
            return None;
        }
    };
    if !(1..=65535).contains(&number) {
        cx.error(
            v.span(),
            key,
            format!("port {number} is out of range"),
            expected(),
            None,
        );
        return None;
    }
    Some(format!("{number}/{proto}"))
}

pub(super) fn mode(cx: &Cx<'_>, v: &Value<'_>, key: &str) -> Option<u32> {
    let expected = || Some("an octal mode such as `0o755` or \"0755\"".to_string());
    let n = match v.get_ref() {
        DeValue::Integer(_) => cx.integer(v, key)?,
        DeValue::String(_) => {
            let s = cx.text(v, key)?;
            let digits = s.strip_prefix("0o").unwrap_or(&s);
            match i64::from_str_radix(digits, 8) {
                Ok(n) => n,
                Err(_) => {
                    cx.error(
                        v.span(),
                        key,
                        format!("invalid mode `{s}`"),
                        expected(),
                        None,
                    );
                    return None;
                }
            }
        }
        _ => {
            cx.wrong_type(v, key, "an octal mode");
            return None;
        }
    };
    if !(0..=0o7777).contains(&n) {
        cx.error(
            v.span(),
            key,
            format!("mode {n:#o} is out of range"),
            expected(),
            None,
        );
        return None;
    }
    Some(n as u32)
}

/// `base/rel` with `.` components dropped (so messages show `../examples/app`, not `./../examples/app`).
pub(super) fn normal_join(base: &Path, rel: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}
