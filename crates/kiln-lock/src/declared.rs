//! What a declared-packages file asks for, to tell whether a lock file still matches it.

use std::collections::{BTreeMap, BTreeSet};

use crate::{LockError, normalize_python_name};

/// The package names `file_name` (pyproject.toml, requirements*.in, package.json) declares;
/// `None` for a file kiln does not know how to read. `pip_input`: the file is one of a pip
/// target's `files`, which pip-compile reads — every one but pyproject.toml, setup.py and
/// setup.cfg is then a requirements file, whatever it is named (`deps.in`, `base.txt`).
pub fn declared(
    file_name: &str,
    text: &str,
    pip_input: bool,
) -> Option<Result<BTreeSet<String>, LockError>> {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let invalid = |message: String| LockError::Invalid {
        file: file_name.to_string(),
        message,
    };
    Some(match base {
        "pyproject.toml" => toml::from_str::<toml::Value>(text)
            .map_err(|e| invalid(e.to_string()))
            .map(|doc| {
                let mut names = BTreeSet::new();
                let project = doc.get("project").and_then(|p| p.get("dependencies"));
                for dep in project.and_then(|d| d.as_array()).into_iter().flatten() {
                    if let Some(name) = dep.as_str().and_then(pep508_name) {
                        names.insert(name);
                    }
                }
                let poetry = doc
                    .get("tool")
                    .and_then(|t| t.get("poetry"))
                    .and_then(|p| p.get("dependencies"))
                    .and_then(|d| d.as_table());
                for name in poetry.into_iter().flat_map(|t| t.keys()) {
                    if name != "python" {
                        names.insert(normalize_python_name(name));
                    }
                }
                names
            }),
        "setup.py" | "setup.cfg" => return None,
        _ if pip_input || (base.starts_with("requirements") && base.ends_with(".in")) => Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty() && !l.starts_with('-'))
            .filter_map(pep508_name)
            .collect()),
        "package.json" => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| invalid(e.to_string()))
            .map(|doc| {
                ["dependencies", "devDependencies", "optionalDependencies"]
                    .iter()
                    .filter_map(|k| doc.get(k).and_then(|d| d.as_object()))
                    .flat_map(|d| d.keys().cloned())
                    .collect()
            }),
        _ => return None,
    })
}

/// The declared names the lock does not pin: a dependency added without a refresh.
pub fn unlocked(declared: &BTreeSet<String>, pins: &BTreeMap<String, String>) -> Vec<String> {
    declared
        .iter()
        .filter(|name| !pins.contains_key(*name))
        .cloned()
        .collect()
}

/// The distribution name at the start of a PEP 508 requirement, normalised.
fn pep508_name(requirement: &str) -> Option<String> {
    let name: String = requirement
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    (!name.is_empty()).then(|| normalize_python_name(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_declared_format_and_finds_unlocked_names() {
        let py = declared(
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = [\"Attrs>=23\", \"tabulate[widechars]; python_version>'3'\"]\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            py,
            BTreeSet::from(["attrs".to_string(), "tabulate".to_string()])
        );
        let poetry = declared(
            "pyproject.toml",
            "[tool.poetry.dependencies]\npython = \"^3.11\"\nRequests = \"^2\"\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(poetry, BTreeSet::from(["requests".to_string()]));
        let req = declared(
            "requirements.in",
            "# top\nsix\nidna>=3  # dns\n-r other.in\n",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(req, BTreeSet::from(["idna".to_string(), "six".to_string()]));
        let npm = declared(
            "package.json",
            r#"{"dependencies":{"is-number":"^7"},"devDependencies":{"@scope/x":"1"}}"#,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            npm,
            BTreeSet::from(["@scope/x".to_string(), "is-number".to_string()])
        );
        assert!(declared("Gemfile", "", false).is_none());
        assert!(declared("package.json", "{", false).unwrap().is_err());

        let pins = BTreeMap::from([("six".to_string(), "1.17.0".to_string())]);
        assert_eq!(unlocked(&req, &pins), ["idna"]);
    }

    #[test]
    fn a_pip_input_is_a_requirements_file_whatever_its_name() {
        let deps = declared("deps.in", "attrs\n", true);
        assert_eq!(
            deps.unwrap().unwrap(),
            BTreeSet::from(["attrs".to_string()])
        );
        // Not for another manager's lock, and never for setup.py / setup.cfg.
        assert!(declared("deps.in", "attrs\n", false).is_none());
        assert!(declared("setup.cfg", "[metadata]\n", true).is_none());
        assert!(declared("setup.py", "import x\n", true).is_none());
    }
}
