//! The fuzz bodies: what one input does to kiln's offline pipeline. A panic (or an endless
//! loop) is a bug; an error for bad input is the expected outcome. They are shared by the
//! cargo-fuzz targets in `fuzz_targets/` and by `cargo xtask fuzz`, which runs them on stable as
//! a bounded randomized loop over the seed corpus.
//!
//! An input is one or more manifests: a line starting with `#=== ` starts the next file, so
//! mutations can merge targets, groups and profiles across files as `-f a -f b` does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_graph::{Graph, PackagesMode};
use kiln_manifest::{LoadOptions, Manifest, Source};

/// Where one input file ends and the next begins.
pub const FILE_MARKER: &str = "#=== ";

/// The manifest loader: parse, validate and resolve the input with the default options, then
/// with a profile, `--set` values and an environment taken from the input itself, rendering
/// every diagnostic.
pub fn manifest(data: &[u8]) {
    let Some(sources) = sources(data) else {
        return;
    };
    for options in options(&sources) {
        match kiln_manifest::load(&sources, &options) {
            Ok(manifest) => {
                let _ = format!("{manifest:?}");
                for target in manifest.targets.values() {
                    let _ = target.location.to_string();
                }
            }
            Err(diagnostics) => {
                let _ = diagnostics.to_string();
            }
        }
    }
}

/// The planner: what `kiln plan` does offline with a manifest that loads — the stage graph in
/// both package modes, selection (everything, and each target and group alone), lowering to
/// LLB, marshalling and digesting every stage, and each target's image config.
pub fn plan(data: &[u8]) {
    let Some(sources) = sources(data) else {
        return;
    };
    let Ok(manifest) = kiln_manifest::load(&sources, &LoadOptions::default()) else {
        return;
    };
    for mode in [PackagesMode::Pinned, PackagesMode::Refresh] {
        let graph = match Graph::build(&manifest, mode) {
            Ok(graph) => graph,
            Err(errors) => {
                for e in errors {
                    let _ = e.to_string();
                }
                continue;
            }
        };
        let mut selections: Vec<Vec<String>> = vec![Vec::new()];
        selections.extend(manifest.targets.keys().map(|t| vec![t.clone()]));
        selections.extend(manifest.groups.keys().map(|g| vec![g.clone()]));
        selections.push(vec!["no-such-target".to_string()]);
        for names in selections {
            lower(&manifest, &graph, &names);
        }
    }
}

fn lower(manifest: &Manifest, graph: &Graph, names: &[String]) {
    let selected = match graph.select(manifest, names) {
        Ok(selected) => selected,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for name in &selected {
        let _ = graph.depends_on(name);
    }
    let bases = kiln_compile::BaseConfigs::new();
    let compiled = match kiln_compile::compile(manifest, graph, &selected, &bases, None) {
        Ok(compiled) => compiled,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for target in &compiled {
        for stage in &target.stages {
            let _ = stage.state.digest();
            match kiln_llb::marshal(&stage.state) {
                Ok(definition) => {
                    let _ = definition.to_pb();
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        let _ = target.config.to_json();
        let _ = target
            .config
            .image_config(&manifest.targets[&target.name].platform);
    }
}

/// The input as manifest files, if it is UTF-8 (the loader's callers refuse other bytes).
pub fn sources(data: &[u8]) -> Option<Vec<Source>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut files = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with(FILE_MARKER) && !current.is_empty() {
            files.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    files.push(current);
    Some(
        files
            .into_iter()
            .enumerate()
            .map(|(i, text)| Source {
                path: if i == 0 {
                    PathBuf::from("kiln.toml")
                } else {
                    PathBuf::from(format!("m{i}/kiln.toml"))
                },
                text,
            })
            .collect(),
    )
}

/// The default options, then a profile named in the input (`[profiles.NAME…`) with every
/// `${NAME}` the input mentions set on the command line and in the environment.
fn options(sources: &[Source]) -> Vec<LoadOptions> {
    let text: String = sources.iter().map(|s| s.text.as_str()).collect();
    let profile = text.find("[profiles.").and_then(|at| {
        let rest = &text[at + "[profiles.".len()..];
        let end = rest.find([']', '.'])?;
        Some(rest[..end].trim_matches('"').to_string())
    });
    let mut vars = BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("${") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find('}') else { break };
        vars.insert(rest[..end].to_string(), "fuzz-1.0".to_string());
        rest = &rest[end..];
        if vars.len() >= 8 {
            break;
        }
    }
    vec![
        LoadOptions::default(),
        LoadOptions {
            profile,
            set: vars.clone(),
            env: vars,
        },
    ]
}

/// The seed corpus: every kiln manifest in the repository at `root` (the `.toml` files that
/// declare targets) and the manifests written out in its tests (raw strings that do), in a
/// stable order.
pub fn seeds(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "corpus" {
                    stack.push(path);
                }
            } else if kind.is_file() && (name.ends_with(".toml") || name.ends_with(".rs")) {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        if rel.ends_with(".toml") {
            if is_manifest(&text) {
                out.push((rel, text.into_bytes()));
            }
            continue;
        }
        for (i, literal) in string_literals(&text).into_iter().enumerate() {
            if is_manifest(&literal) {
                out.push((format!("{rel}#{i}"), literal.into_bytes()));
            }
        }
    }
    out
}

fn is_manifest(text: &str) -> bool {
    text.contains("version") && text.contains("[target.")
}

/// The string literals of Rust source, roughly: raw `r#"…"#` ones as written, ordinary ones
/// with their common escapes undone (`\n`, `\t`, `\"`, `\\`, line continuations); comments and
/// character literals skipped. Good enough for seeds.
fn string_literals(source: &str) -> Vec<String> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if let Some(body) = rest.strip_prefix("r#\"") {
            let end = body.find("\"#").unwrap_or(body.len());
            out.push(body[..end].to_string());
            i += 3 + end + 2;
        } else if b[i] == b'\'' {
            // A character literal ('"', '\'') or a lifetime.
            i += match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'\\'), _) => rest[2..].find('\'').map_or(1, |e| e + 3),
                (Some(_), Some(b'\'')) => 3,
                _ => 1,
            };
        } else if b[i] == b'"' {
            let mut literal = String::new();
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((at, c)) = chars.next() {
                match c {
                    '"' => {
                        end = at + 2;
                        break;
                    }
                    '\\' => match chars.next().map(|(_, e)| e) {
                        Some('n') => literal.push('\n'),
                        Some('t') => literal.push('\t'),
                        Some('\n') => {
                            // A line continuation: the next line's leading whitespace goes too.
                            let peek = chars.clone();
                            for (_, w) in peek {
                                if !w.is_whitespace() {
                                    break;
                                }
                                chars.next();
                            }
                        }
                        Some(other) => literal.push(other),
                        None => {}
                    },
                    c => literal.push(c),
                }
            }
            out.push(literal);
            i += end;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}
