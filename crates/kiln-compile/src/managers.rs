//! The package managers' commands for a target: kiln-manifest's manager table
//! ([`kiln_manifest::ManagerSpec`]) has the templates, this fills in the target's configured
//! files and lock, each one shell word. The lowering has no per-manager branches.

use std::borrow::Cow;

use kiln_manifest::Packages;

/// The refresh command for `packages` (its own `refresh`, else its manager's), with the
/// package files and lock it configures.
pub(crate) fn refresh_command(packages: &Packages) -> Cow<'_, str> {
    command(
        packages.refresh.as_deref(),
        packages.manager.spec().refresh,
        packages,
    )
}

/// The strict install command for `packages` (its own `install`, else its manager's).
pub(crate) fn install_command(packages: &Packages) -> Cow<'_, str> {
    command(
        packages.install.as_deref(),
        packages.manager.spec().install,
        packages,
    )
}

/// The manifest's command, else the manager's template filled in. (The loader requires the
/// manifest's own for a manager without a template.)
fn command<'a>(
    custom: Option<&'a str>,
    template: Option<&str>,
    packages: &Packages,
) -> Cow<'a, str> {
    match (custom, template) {
        (Some(custom), _) => Cow::Borrowed(custom),
        (None, Some(template)) => Cow::Owned(fill(template, packages)),
        (None, None) => Cow::Borrowed(""),
    }
}

/// `template` with `{files}` replaced by the package files and `{lock}` by the lock files, each
/// one shell word (a name starting with `-` as `./NAME`, so no tool takes it for an option),
/// joined by spaces; in one pass, so a file name is never itself expanded. (The loader gives a
/// manager whose template names `{lock}` exactly one lock file.)
fn fill(template: &str, packages: &Packages) -> String {
    let words = |paths: &[String]| {
        paths
            .iter()
            .map(|p| match p.starts_with('-') {
                true => shell_word(&format!("./{p}")).into_owned(),
                false => shell_word(p).into_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{files}") {
            out.push_str(&words(&packages.files));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{lock}") {
            out.push_str(&words(&packages.lock));
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `s` as one `/bin/sh` word: as it is when it has no character the shell treats specially,
/// else in single quotes.
fn shell_word(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'.' | b'_' | b'-' | b'+' | b'@' | b'%' | b',' | b':' | b'='
                )
        });
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', "'\\''")))
    }
}
