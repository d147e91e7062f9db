//! What versions a package manager's lock file pins.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{LockError, LockFormat};

/// Package name → pinned version. Python names are normalised (PEP 503). A name pinned at
/// several versions (uv forks, nested npm packages) maps to the distinct versions joined by ", ".
pub fn pins(format: LockFormat, text: &str) -> Result<BTreeMap<String, String>, LockError> {
    let file = format.file_name();
    let mut out = BTreeMap::new();
    match format {
        LockFormat::UvLock | LockFormat::PoetryLock => {
            #[derive(Deserialize)]
            struct Doc {
                #[serde(default)]
                package: Vec<Package>,
            }
            #[derive(Deserialize)]
            struct Package {
                name: String,
                version: Option<String>,
                source: Option<toml::Table>,
            }
            let doc: Doc =
                toml::from_str(text).map_err(|e| LockError::from_toml(file, text, &e))?;
            for p in doc.package {
                // Local projects (the project itself, workspace members) are not pins.
                let local = p.source.as_ref().is_some_and(|s| {
                    format == LockFormat::UvLock
                        && (s.contains_key("editable") || s.contains_key("virtual"))
                });
                if let (false, Some(version)) = (local, p.version) {
                    insert(&mut out, normalize_python_name(&p.name), version);
                }
            }
        }
        LockFormat::Requirements => requirements(text, &mut out)?,
        LockFormat::PackageLockJson => {
            let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                let offset = text
                    .split_inclusive('\n')
                    .take(e.line().saturating_sub(1))
                    .map(str::len)
                    .sum::<usize>();
                LockError::at(
                    file,
                    text,
                    offset + e.column().saturating_sub(1),
                    e.to_string(),
                )
            })?;
            let Some(packages) = doc.get("packages").and_then(|p| p.as_object()) else {
                return Err(LockError::Invalid {
                    file: file.into(),
                    message: "no \"packages\" object (lockfileVersion 1 is not supported; \
                              regenerate with npm 7 or newer)"
                        .into(),
                });
            };
            for (key, entry) in packages {
                // "" is the root project; keys without node_modules/ are workspace folders.
                let Some((_, name)) = key.rsplit_once("node_modules/") else {
                    continue;
                };
                if let Some(version) = entry.get("version").and_then(|v| v.as_str()) {
                    insert(&mut out, name.to_string(), version.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// PEP 503: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize_python_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn insert(out: &mut BTreeMap<String, String>, name: String, version: String) {
    match out.get_mut(&name) {
        Some(have) if have.split(", ").any(|v| v == version) => {}
        Some(have) => {
            let mut all: Vec<&str> = have.split(", ").chain([version.as_str()]).collect();
            all.sort_by(|a, b| crate::diff::compare_versions(a, b));
            *have = all.join(", ");
        }
        None => {
            out.insert(name, version);
        }
    }
}

/// The requirements of a pip-compile file, one per logical line (comments dropped, `\`
/// continuations joined, trimmed), each with the byte offset its first line starts at. Option
/// lines (`-r`, `--index-url`, …) and blank lines are left out: they pin nothing.
pub(crate) fn requirement_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut logical = String::new();
    let mut start = 0; // byte offset where the logical line began
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        if logical.is_empty() {
            start = offset;
        }
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        // A comment runs to the end of the line: at the start or after whitespace.
        let line = match line.find('#') {
            Some(0) => "",
            Some(p) if line[..p].ends_with(char::is_whitespace) => &line[..p],
            _ => line,
        };
        if let Some(cont) = line.trim_end().strip_suffix('\\') {
            logical.push_str(cont);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let req = std::mem::take(&mut logical);
        let req = req.trim();
        if !req.is_empty() && !req.starts_with('-') {
            lines.push((start, req.to_string()));
        }
    }
    lines
}

/// pip-compile output: `name[extras]==version ; marker \` plus `--hash=` continuation lines.
fn requirements(text: &str, out: &mut BTreeMap<String, String>) -> Result<(), LockError> {
    let file = LockFormat::Requirements.file_name();
    for (start, req) in requirement_lines(text) {
        let spec = req.split(';').next().unwrap_or("");
        let spec = spec.split(" --").next().unwrap_or("").trim();
        if let Some((name, version)) = spec.split_once("==") {
            let name = name.split('[').next().unwrap_or("");
            let version = version.trim_start_matches('=').trim();
            if !name.trim().is_empty() && !version.is_empty() {
                insert(out, normalize_python_name(name), version.to_string());
                continue;
            }
        } else if spec.contains(" @ ") {
            continue; // direct reference (URL or path): no version to pin
        }
        return Err(LockError::at(
            file,
            text,
            start,
            format!("`{spec}` is not pinned as name==version"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UV_LOCK: &str = r#"version = 1
revision = 2
requires-python = ">=3.11"

[[package]]
name = "certifi"
version = "2024.8.30"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.pythonhosted.org/packages/b0/ee/certifi-2024.8.30.tar.gz", hash = "sha256:bec941d2aa8195e248a60b31ff9f0558284cf01a52591ceda73ea9afffd69fd9", size = 168507 }
wheels = [
    { url = "https://files.pythonhosted.org/packages/12/90/certifi-2024.8.30-py3-none-any.whl", hash = "sha256:922820b53db7a7257ffbda3f597266d435245903d80737e34f8a45ff3e3230d8", size = 167321 },
]

[[package]]
name = "Charset_Normalizer"
version = "3.4.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "requests"
version = "2.32.3"
source = { registry = "https://pypi.org/simple" }
dependencies = [
    { name = "certifi" },
    { name = "charset-normalizer" },
]

[[package]]
name = "uv-app"
version = "0.1.0"
source = { editable = "." }
dependencies = [
    { name = "requests" },
]

[package.metadata]
requires-dist = [{ name = "requests", specifier = ">=2.31" }]
"#;

    const REQUIREMENTS: &str = r#"#
# This file is autogenerated by pip-compile with Python 3.11
# by the following command:
#
#    pip-compile --generate-hashes requirements.in
#
--index-url https://pypi.org/simple

certifi==2024.8.30 \
    --hash=sha256:922820b53db7a7257ffbda3f597266d435245903d80737e34f8a45ff3e3230d8 \
    --hash=sha256:bec941d2aa8195e248a60b31ff9f0558284cf01a52591ceda73ea9afffd69fd9
    # via requests
colorama==0.4.6 ; sys_platform == "win32" \
    --hash=sha256:08695f5cb7ed6e0531a20572697297273c47b8cae5a63ffc6d6ed5c201be6e44
    # via click
Requests[socks]==2.32.3 \
    --hash=sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6
    # via -r requirements.in
zope.interface==7.1.1  # via twisted
"#;

    #[test]
    fn uv_lock_skips_the_editable_project_and_normalises() {
        let p = pins(LockFormat::UvLock, UV_LOCK).unwrap();
        let got: Vec<_> = p.iter().map(|(k, v)| format!("{k} {v}")).collect();
        assert_eq!(
            got,
            [
                "certifi 2024.8.30",
                "charset-normalizer 3.4.0",
                "requests 2.32.3"
            ]
        );
    }

    #[test]
    fn uv_lock_forked_versions_are_joined() {
        let text = "[[package]]\nname = \"numpy\"\nversion = \"2.0.2\"\n\n\
                    [[package]]\nname = \"numpy\"\nversion = \"1.26.4\"\n";
        let p = pins(LockFormat::UvLock, text).unwrap();
        assert_eq!(p["numpy"], "1.26.4, 2.0.2");
    }

    #[test]
    fn requirements_with_hashes_markers_extras_and_comments() {
        let p = pins(LockFormat::Requirements, REQUIREMENTS).unwrap();
        let got: Vec<_> = p.iter().map(|(k, v)| format!("{k} {v}")).collect();
        assert_eq!(
            got,
            [
                "certifi 2024.8.30",
                "colorama 0.4.6",
                "requests 2.32.3",
                "zope-interface 7.1.1"
            ]
        );
    }

    #[test]
    fn requirements_unpinned_line_is_an_error_with_its_line() {
        let e = pins(
            LockFormat::Requirements,
            "# top\nsix==1.16.0\nrequests>=2.31\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "requirements.txt:3:1: `requests>=2.31` is not pinned as name==version"
        );
    }

    #[test]
    fn poetry_lock() {
        let text = r#"# This file is automatically @generated by Poetry 1.8.3 and should not be changed by hand.

[[package]]
name = "attrs"
version = "23.2.0"
description = "Classes Without Boilerplate"
optional = false
python-versions = ">=3.7"
files = [
    {file = "attrs-23.2.0-py3-none-any.whl", hash = "sha256:99b87a485a5820b23b879f04c2305b44b951b502fd64be915879d77a7e8fc6f1"},
]

[package.extras]
tests = ["attrs[tests-no-zope]", "zope-interface"]

[[package]]
name = "typing_extensions"
version = "4.12.2"
description = "Backported and Experimental Type Hints for Python 3.8+"
optional = false
python-versions = ">=3.8"
files = []

[metadata]
lock-version = "2.0"
python-versions = "^3.11"
content-hash = "0d1f8f2d"
"#;
        let p = pins(LockFormat::PoetryLock, text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["attrs"], "23.2.0");
        assert_eq!(p["typing-extensions"], "4.12.2");
    }

    #[test]
    fn package_lock_v3_scoped_and_nested() {
        let text = r#"{
  "name": "web-app",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": { "name": "web-app", "version": "1.0.0", "dependencies": { "@babel/core": "^7.25.0", "debug": "^4.3.7" } },
    "node_modules/@babel/core": { "version": "7.25.2", "resolved": "https://registry.npmjs.org/@babel/core/-/core-7.25.2.tgz", "integrity": "sha512-BBt3opiCOxUr9euZ5/ro/Xv8/V7yJ5bjYMqG/C1YAo8MIKAnumZalCN+msbci3Pigy4lIQfPUpfMM27HMGaYEA==" },
    "node_modules/debug": { "version": "4.3.7" },
    "node_modules/send": { "version": "0.19.0" },
    "node_modules/send/node_modules/debug": { "version": "2.6.9" },
    "node_modules/send/node_modules/@scope/inner": { "version": "1.0.1" },
    "packages/shared": { "version": "0.0.1" },
    "node_modules/shared": { "resolved": "packages/shared", "link": true }
  }
}"#;
        let p = pins(LockFormat::PackageLockJson, text).unwrap();
        let got: Vec<_> = p.iter().map(|(k, v)| format!("{k} {v}")).collect();
        assert_eq!(
            got,
            [
                "@babel/core 7.25.2",
                "@scope/inner 1.0.1",
                "debug 2.6.9, 4.3.7",
                "send 0.19.0"
            ]
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = pins(LockFormat::UvLock, "version = 1\n[[package]\n").unwrap_err();
        assert!(matches!(e, LockError::Syntax { line: 2, .. }), "{e}");
        let e = pins(LockFormat::PackageLockJson, "{\n  \"packages\": [\n}").unwrap_err();
        assert!(matches!(e, LockError::Syntax { line: 3, .. }), "{e}");
        let e = pins(LockFormat::PackageLockJson, r#"{"lockfileVersion": 1}"#).unwrap_err();
        assert!(e.to_string().contains("lockfileVersion 1"), "{e}");
    }

    #[test]
    fn normalizes_python_names() {
        assert_eq!(normalize_python_name("Zope__.Interface"), "zope-interface");
    }
}
