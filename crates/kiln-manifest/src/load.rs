//! The loader: every file parsed with spans, variables and profiles resolved first, then each
//! target read strictly, then the cross-file checks (duplicate names, unknown references).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use kiln_reference::{Platform, Reference};
use regex::Regex;
use toml::de::{DeTable, DeValue};

use crate::cx::{Cx, Sink, Value, Vars, is_var_name, join, one_of, suggest};
use crate::*;

const TOP_KEYS: &[&str] = &["version", "vars", "defaults", "profiles", "target", "group"];
const VAR_KEYS: &[&str] = &["default", "env"];
const DEFAULT_KEYS: &[&str] = &["network", "ca-certificates", "platform", "cache"];
const PROFILE_KEYS: &[&str] = &["image-overrides", "vars", "labels"];
const TARGET_KEYS: &[&str] = &[
    "from",
    "context",
    "run",
    "copy",
    "packages",
    "smoke-test",
    "artifacts",
    "config",
    "build-env",
    "image",
    "network",
    "ca-certificates",
    "platform",
    "secrets",
];
const SECRET_KEYS: &[&str] = &["env", "file"];
const COPY_KEYS: &[&str] = &["from", "src", "dest", "chown", "chmod"];
const PACKAGE_KEYS: &[&str] = &[
    "manager", "files", "lock", "refresh", "install", "dir", "activate",
];
const ACTIVATE_EXPECTED: &str =
    "a boolean, or the environment's directory (absolute, or relative to `dir`)";
const MANAGERS: &[&str] = &["uv", "pip", "poetry", "npm", "custom"];
const SMOKE_KEYS: &[&str] = &["copy", "run"];
const ARTIFACT_KEYS: &[&str] = &["src", "extract-to", "chown"];
const CONFIG_KEYS: &[&str] = &[
    "entrypoint",
    "cmd",
    "env",
    "workdir",
    "user",
    "ports",
    "labels",
];
const GROUP_KEYS: &[&str] = &["targets"];
const NETWORKS: &[&str] = &["default", "host", "none"];

struct Doc<'s> {
    source: &'s Source,
    table: DeTable<'s>,
}

/// Per-file settings from `[defaults]`.
#[derive(Clone)]
struct Defaults {
    network: NetworkMode,
    ca: CaCertificates,
    ca_origin: Option<Origin>,
    platform: Platform,
    /// `[defaults] cache`: the registry repository for the remote build cache.
    cache: Option<Reference>,
}

/// One `image-overrides` rule, in the order it applies.
struct Rule {
    key: String,
    /// Dotted key path of the rule, for messages.
    path: String,
    matcher: Matcher,
    template: String,
    location: Location,
    /// Where its key is.
    key_location: Location,
    /// How many references it rewrote, and the references it was tried on and did not match
    /// (normalised, as matched), for `kiln plan` and the warning about a rule that does nothing.
    matched: std::cell::Cell<usize>,
    missed: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

enum Matcher {
    Exact(Reference),
    Regex(Regex),
}

struct Profile {
    name: String,
    rules: Vec<Rule>,
    labels: BTreeMap<String, String>,
}

/// A `[vars]` entry: its default, the environment variable it reads, and where it is.
struct VarDecl {
    default: Option<String>,
    env: Option<String>,
    location: Location,
}

pub(crate) fn load(sources: &[Source], options: &LoadOptions) -> Result<Manifest, Diagnostics> {
    let sink = Sink::default();
    let empty = Vars::default();
    let mut docs = Vec::new();
    for source in sources {
        let cx = Cx::new(&source.path, &source.text, &sink, &empty);
        match DeTable::parse(&source.text) {
            Ok(table) => {
                let table = table.into_inner();
                top_level(&cx, &table);
                docs.push(Doc { source, table });
            }
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim_end().to_string();
                cx.error(span, "", format!("invalid TOML: {message}"), None, None);
            }
        }
    }
    if docs.is_empty() {
        return Err(Diagnostics(sink.into_sorted()));
    }

    let vars = resolve_vars(&docs, options, &sink);
    let profile = select_profile(&docs, options, &sink, &vars);

    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut target_spans: BTreeMap<String, Location> = BTreeMap::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut rewrites = Vec::new();
    let mut refs = Vec::new();
    for doc in &docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, &sink, &vars);
        let defaults = read_defaults(&cx, &doc.table);
        let manifest_dir = normal_join(doc.source.path.parent().unwrap_or(Path::new("")), ".");
        let Some(section) = cx.section(&doc.table, "target") else {
            continue;
        };
        for (name, value) in section.iter() {
            let name_str: &str = name.get_ref();
            let location = cx.loc(name.span());
            if let Some(first) = target_spans.get(name_str) {
                cx.error(
                    name.span(),
                    &join("target", name_str),
                    format!("target `{name_str}` is declared twice; first at {first}"),
                    Some("target names unique across all manifests".into()),
                    None,
                );
                continue;
            }
            target_spans.insert(name_str.to_string(), location.clone());
            let reader = TargetReader {
                cx: &cx,
                name: name_str,
                path: join("target", name_str),
                name_span: name.span(),
                defaults: &defaults,
                manifest_dir: &manifest_dir,
                profile: profile.as_ref(),
            };
            if let Some((target, mut target_rewrites, target_refs)) = reader.read(value) {
                rewrites.append(&mut target_rewrites);
                refs.extend(
                    target_refs
                        .into_iter()
                        .map(|(r, span, key)| (doc.source, r, span, key)),
                );
                targets.insert(name_str.to_string(), target);
            }
        }
    }
    for doc in &docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, &sink, &vars);
        read_groups(
            &cx,
            &doc.table,
            &target_spans,
            &mut groups,
            &mut refs,
            doc.source,
        );
    }

    // Every `target:NAME` and group member must name a target.
    for (source, name, span, key) in refs {
        if !target_spans.contains_key(&name) {
            let cx = Cx::new(&source.path, &source.text, &sink, &vars);
            let hint = suggest(&name, target_spans.keys().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"));
            cx.error(
                span,
                &key,
                format!("unknown target `{name}`"),
                Some("the name of a declared target".into()),
                hint,
            );
        }
    }

    if !sink.is_empty() {
        return Err(Diagnostics(sink.into_sorted()));
    }
    if let Some(p) = &profile {
        for target in targets.values_mut() {
            for (k, v) in &p.labels {
                target.config.labels.insert(k.clone(), v.clone());
            }
        }
    }
    let (overrides, warnings) = match &profile {
        Some(p) => override_report(p),
        None => Default::default(),
    };
    Ok(Manifest {
        targets,
        groups,
        profile: profile.map(|p| p.name),
        rewrites,
        overrides,
        warnings,
        vars: vars
            .values
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
    })
}

fn top_level(cx: &Cx<'_>, table: &DeTable<'_>) {
    cx.keys(table, "", TOP_KEYS);
    match table.get("version") {
        None => cx.error(
            0..0,
            "version",
            "missing required key `version`",
            Some("`version = 1`".into()),
            None,
        ),
        Some(v) => {
            if let Some(n) = cx.integer(v, "version")
                && n != 1
            {
                cx.error(
                    v.span(),
                    "version",
                    format!("unsupported manifest version {n}"),
                    Some("1".into()),
                    None,
                );
            }
        }
    }
}

/// Variable values: `--set` over the environment over the profile's `vars` over the default.
fn resolve_vars(docs: &[Doc<'_>], options: &LoadOptions, sink: &Sink) -> Vars {
    let empty = Vars::default();
    let mut declared: BTreeMap<String, VarDecl> = BTreeMap::new();
    for doc in docs {
        let cx = Cx::new(&doc.source.path, &doc.source.text, sink, &empty);
        let Some(section) = cx.section(&doc.table, "vars") else {
            continue;
        };
        for (name, value) in section.iter() {
            let name_str: &str = name.get_ref();
            let key = join("vars", name_str);
            if !is_var_name(name_str) {
                cx.error(
                    name.span(),
                    &key,
                    format!("invalid variable name `{name_str}`"),
                    Some("letters, digits and `_`, not starting with a digit".into()),
                    None,
                );
                continue;
            }
            if let Some(first) = declared.get(name_str) {
                cx.error(
                    name.span(),
                    &key,
                    format!(
                        "variable `{name_str}` is declared twice; first at {}",
                        first.location
                    ),
                    None,
                    None,
                );
                continue;
            }
            let (default, env) = match value.get_ref() {
                DeValue::String(s) => (Some(s.to_string()), None),
                DeValue::Table(t) => {
                    cx.keys(t, &key, VAR_KEYS);
                    let default = t
                        .get("default")
                        .and_then(|v| cx.raw(v, &join(&key, "default")));
                    let env = t.get("env").and_then(|v| cx.raw(v, &join(&key, "env")));
                    (default, env)
                }
                _ => {
                    cx.wrong_type(value, &key, "a string or a table with `default` and `env`");
                    continue;
                }
            };
            declared.insert(
                name_str.to_string(),
                VarDecl {
                    default,
                    env,
                    location: cx.loc(name.span()),
                },
            );
        }
    }

    // The selected profile's `vars` (read raw here; the profile itself is read later).
    let mut from_profile: BTreeMap<String, String> = BTreeMap::new();
    if let Some(wanted) = &options.profile {
        for doc in docs {
            let cx = Cx::new(&doc.source.path, &doc.source.text, sink, &empty);
            let Some(DeValue::Table(profiles)) = doc.table.get("profiles").map(|v| v.get_ref())
            else {
                continue;
            };
            let Some(DeValue::Table(profile)) = profiles.get(wanted.as_str()).map(|v| v.get_ref())
            else {
                continue;
            };
            let Some(section) = profile.get("vars") else {
                continue;
            };
            let path = format!("{}.vars", join("profiles", wanted));
            let Some(section) = cx.table(section, &path) else {
                continue;
            };
            for (name, value) in section.iter() {
                let name_str: &str = name.get_ref();
                let key = join(&path, name_str);
                if !declared.contains_key(name_str) {
                    let hint = suggest(name_str, declared.keys().map(String::as_str))
                        .map(|s| format!("did you mean `{s}`?"));
                    cx.error(
                        name.span(),
                        &key,
                        format!("profile sets undeclared variable `{name_str}`"),
                        Some("a variable declared under [vars]".into()),
                        hint,
                    );
                    continue;
                }
                if let Some(v) = cx.raw(value, &key) {
                    from_profile.insert(name_str.to_string(), v);
                }
            }
        }
    }

    // A problem of the command line, not of a file: said as `--set NAME`.
    for name in options.set.keys() {
        if !declared.contains_key(name) {
            let hint = suggest(name, declared.keys().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"));
            let files: Vec<String> = docs
                .iter()
                .map(|d| format!("{}", d.source.path.display()))
                .collect();
            sink.push(Diagnostic {
                location: Location::command_line(format!("--set {name}")),
                key: String::new(),
                message: format!(
                    "no variable `{name}` is declared under [vars] in {}",
                    files.join(", ")
                ),
                expected: Some(one_of(
                    &declared.keys().map(String::as_str).collect::<Vec<_>>(),
                ))
                .filter(|s| !s.is_empty()),
                hint,
            });
        }
    }

    let mut vars = Vars::default();
    for (name, decl) in declared {
        let VarDecl { default, env, .. } = decl;
        let value = options
            .set
            .get(&name)
            .cloned()
            .or_else(|| env.as_ref().and_then(|e| options.env.get(e).cloned()))
            .or_else(|| from_profile.get(&name).cloned())
            .or(default);
        if let Some(env) = env {
            vars.env_names.insert(name.clone(), env);
        }
        vars.values.insert(name, value);
    }
    vars
}

/// Read every profile (so typos in unused ones are found too) and return the selected one.
fn select_profile(
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
fn override_report(profile: &Profile) -> (Vec<OverrideRule>, Vec<Diagnostic>) {
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

fn read_defaults(cx: &Cx<'_>, doc: &DeTable<'_>) -> Defaults {
    let mut d = Defaults {
        network: NetworkMode::Default,
        ca: CaCertificates::None,
        ca_origin: None,
        platform: Platform::linux_amd64(),
        cache: None,
    };
    let Some(table) = cx.section(doc, "defaults") else {
        return d;
    };
    cx.keys(table, "defaults", DEFAULT_KEYS);
    apply_common(cx, table, "defaults", &mut d);
    if let Some(v) = table.get("cache") {
        if let Some(s) = cx.text(v, "defaults.cache") {
            let expected = "a registry repository without tag or digest, e.g. \
                            `registry.example.com/team/cache`";
            match Reference::parse(&s) {
                Ok(r) if r.tag().is_none() && r.digest().is_none() => d.cache = Some(r),
                Ok(_) => cx.error(
                    v.span(),
                    "defaults.cache",
                    format!("`{s}` has a tag or digest; kiln tags the cache per target"),
                    Some(expected.into()),
                    None,
                ),
                Err(e) => cx.error(
                    v.span(),
                    "defaults.cache",
                    e.to_string(),
                    Some(expected.into()),
                    None,
                ),
            }
        }
    }
    d
}

/// `network`, `ca-certificates` and `platform`, in `[defaults]` or a target.
fn apply_common(cx: &Cx<'_>, table: &DeTable<'_>, path: &str, d: &mut Defaults) {
    if let Some(v) = table.get("network") {
        let key = join(path, "network");
        if let Some(s) = cx.text(v, &key) {
            match s.as_str() {
                "default" => d.network = NetworkMode::Default,
                "host" => d.network = NetworkMode::Host,
                "none" => d.network = NetworkMode::None,
                other => cx.error(
                    v.span(),
                    &key,
                    format!("unknown network mode `{other}`"),
                    Some(one_of(NETWORKS)),
                    suggest(other, NETWORKS.iter().copied())
                        .map(|s| format!("did you mean `{s}`?")),
                ),
            }
        }
    }
    if let Some(v) = table.get("ca-certificates") {
        let key = join(path, "ca-certificates");
        if let Some(s) = cx.text(v, &key) {
            d.ca_origin = Some(Origin {
                key: key.clone(),
                location: cx.loc(v.span()),
            });
            d.ca = match s.as_str() {
                "none" => CaCertificates::None,
                "host" => CaCertificates::Host,
                "" => {
                    cx.error(
                        v.span(),
                        &key,
                        "empty path",
                        Some("`none`, `host` or the path of a CA bundle".into()),
                        None,
                    );
                    CaCertificates::None
                }
                path => {
                    let dir = cx.file.parent().unwrap_or(Path::new(""));
                    CaCertificates::Path(dir.join(path))
                }
            };
        }
    }
    if let Some(v) = table.get("platform") {
        let key = join(path, "platform");
        if let Some(s) = cx.text(v, &key) {
            if let Ok(platform) = s.parse::<Platform>() {
                d.platform = platform;
            } else {
                cx.error(
                    v.span(),
                    &key,
                    format!("invalid platform `{s}`"),
                    Some("`os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm64/v8`".into()),
                    None,
                );
            }
        }
    }
}

type Refs = Vec<(String, Range<usize>, String)>;

struct TargetReader<'a, 'c> {
    cx: &'a Cx<'c>,
    name: &'a str,
    path: String,
    name_span: Range<usize>,
    defaults: &'a Defaults,
    manifest_dir: &'a Path,
    profile: Option<&'a Profile>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

const NAME_RULE: &str =
    "lowercase letters, digits, `_`, `.` and `-`, starting with a letter or digit";

/// A secret name is the name of the file it is mounted as in `/run/secrets/`.
fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const SECRET_NAME_RULE: &str = "letters, digits, `_`, `.` and `-`, starting with a letter, digit or `_` (it is the file name in /run/secrets/)";

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
fn in_context(cx: &Cx<'_>, path: &str, span: Range<usize>, key: &str) -> bool {
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

impl TargetReader<'_, '_> {
    /// `target.NAME.field`; `field` is kiln's own (`copy[0].from`), never quoted.
    fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.path)
    }

    fn read(&self, value: &Value<'_>) -> Option<(Target, Vec<Rewrite>, Refs)> {
        let cx = self.cx;
        if !valid_name(self.name) {
            cx.error(
                self.name_span.clone(),
                &self.path,
                format!("invalid target name `{}`", self.name),
                Some(NAME_RULE.into()),
                None,
            );
        }
        let table = cx.table(value, &self.path)?;
        cx.keys(table, &self.path, TARGET_KEYS);
        let mut rewrites = Vec::new();
        let mut refs = Vec::new();
        let mut ok = true;

        let from = match table.get("from") {
            None => {
                cx.error(
                    self.name_span.clone(),
                    &self.key("from"),
                    "missing required key `from`",
                    Some("an image reference or `target:NAME`".into()),
                    None,
                );
                None
            }
            Some(v) => self.image_or_target(v, "from", &mut rewrites, &mut refs),
        };

        let mut common = self.defaults.clone();
        apply_common(cx, table, &self.path, &mut common);

        let context = match table.get("context") {
            None => self.manifest_dir.to_path_buf(),
            Some(v) => match cx.text(v, &self.key("context")) {
                Some(c) if !c.is_empty() => normal_join(self.manifest_dir, &c),
                Some(_) => {
                    cx.error(
                        v.span(),
                        &self.key("context"),
                        "empty path",
                        Some("a directory, relative to this manifest".into()),
                        None,
                    );
                    self.manifest_dir.to_path_buf()
                }
                None => self.manifest_dir.to_path_buf(),
            },
        };

        let run = table
            .get("run")
            .and_then(|v| cx.texts(v, &self.key("run")))
            .unwrap_or_default();

        let mut copy = Vec::new();
        if let Some(v) = table.get("copy") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let field = format!("copy[{i}]");
                        match self.copy(item, &field, &mut rewrites, &mut refs) {
                            Some(c) => copy.push(c),
                            None => ok = false,
                        }
                    }
                }
                _ => cx.wrong_type(v, &self.key("copy"), "an array of tables"),
            }
        }

        let config = table
            .get("config")
            .map(|v| self.config(v))
            .unwrap_or_default();
        let packages = table.get("packages").and_then(|v| {
            let key = table
                .get_key_value("packages")
                .map(|(k, _)| k.span())
                .unwrap_or(v.span());
            self.packages(v, key, &config)
        });
        let smoke_test = table.get("smoke-test").and_then(|v| {
            let key = table
                .get_key_value("smoke-test")
                .map(|(k, _)| k.span())
                .unwrap_or(v.span());
            self.smoke_test(v, key)
        });

        let mut artifacts = Vec::new();
        if let Some(v) = table.get("artifacts") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(a) = self.artifact(item, &format!("artifacts[{i}]")) {
                            artifacts.push(a);
                        }
                    }
                }
                _ => cx.wrong_type(v, &self.key("artifacts"), "an array of tables"),
            }
        }

        let build_env = table
            .get("build-env")
            .and_then(|v| cx.env_map(v, &self.key("build-env")))
            .unwrap_or_default();
        for name in build_env.keys() {
            if name.is_empty() || name.contains('=') {
                cx.error(
                    table["build-env"].span(),
                    &self.key("build-env"),
                    format!("invalid environment variable name `{name}`"),
                    None,
                    None,
                );
            }
        }

        let secrets = match table.get("secrets") {
            None => BTreeMap::new(),
            Some(v) => self.secrets(v).unwrap_or_else(|| {
                ok = false;
                BTreeMap::new()
            }),
        };

        let image = table.get("image").and_then(|v| {
            match self.image_or_target(v, "image", &mut rewrites, &mut refs)? {
                Base::Image(r) => Some(r),
                Base::Target(_) => None,
            }
        });

        let from = from?;
        if !ok {
            return None;
        }
        Some((
            Target {
                name: self.name.to_string(),
                location: cx.loc(self.name_span.clone()),
                manifest_dir: self.manifest_dir.to_path_buf(),
                from,
                context,
                run,
                copy,
                packages,
                smoke_test,
                artifacts,
                config,
                build_env,
                image,
                network: common.network,
                ca_certificates: common.ca,
                platform: common.platform,
                secrets,
                context_origin: table.get("context").map(|v| Origin {
                    key: self.key("context"),
                    location: cx.loc(v.span()),
                }),
                ca_certificates_origin: common.ca_origin,
                cache: common.cache,
            },
            rewrites,
            refs,
        ))
    }

    /// `from`, a copy's `from`, or `image` (where `target:` is not allowed).
    fn image_or_target(
        &self,
        v: &Value<'_>,
        field: &str,
        rewrites: &mut Vec<Rewrite>,
        refs: &mut Refs,
    ) -> Option<Base> {
        let cx = self.cx;
        let key = self.key(field);
        let text = cx.text(v, &key)?;
        if let Some(name) = text.strip_prefix("target:") {
            if field == "image" {
                cx.error(v.span(), &key, "`image` names the image this target is tagged as; `target:` is not allowed here", Some("an image reference such as `registry.example/app:tag`".into()), None);
                return None;
            }
            if name == self.name {
                cx.error(
                    v.span(),
                    &key,
                    format!("target `{name}` cannot depend on itself"),
                    None,
                    None,
                );
                return None;
            }
            refs.push((name.to_string(), v.span(), key));
            return Some(Base::Target(name.to_string()));
        }
        let reference = match Reference::parse(&text) {
            Ok(r) => r,
            Err(e) => {
                let expected = if field == "image" {
                    "an image reference"
                } else {
                    "an image reference or `target:NAME`"
                };
                cx.error(v.span(), &key, e.to_string(), Some(expected.into()), None);
                return None;
            }
        };
        Some(Base::Image(self.rewrite(reference, field, rewrites)))
    }

    fn rewrite(&self, reference: Reference, field: &str, rewrites: &mut Vec<Rewrite>) -> Reference {
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

    fn copy(
        &self,
        item: &Value<'_>,
        field: &str,
        rewrites: &mut Vec<Rewrite>,
        refs: &mut Refs,
    ) -> Option<Copy> {
        let cx = self.cx;
        let path = self.key(field);
        let table = cx.table(item, &path)?;
        cx.keys(table, &path, COPY_KEYS);
        let from = match table.get("from") {
            None => Some(CopySource::Context),
            Some(v) => self
                .image_or_target(v, &format!("{field}.from"), rewrites, refs)
                .map(|b| match b {
                    Base::Image(r) => CopySource::Image(r),
                    Base::Target(t) => CopySource::Target(t),
                }),
        };
        let src = self.required_text(table, item, &path, "src", "a path");
        let dest = self.required_text(table, item, &path, "dest", "a path inside the image");
        let chown = table
            .get("chown")
            .and_then(|v| cx.text(v, &join(&path, "chown")));
        let chmod = table
            .get("chmod")
            .and_then(|v| mode(cx, v, &join(&path, "chmod")));
        let (from, src, dest) = (from?, src?, dest?);
        let src_span = table.get("src").map(|v| v.span()).unwrap_or(item.span());
        if from == CopySource::Context
            && !in_context(cx, &src.0, src_span.clone(), &join(&path, "src"))
        {
            return None;
        }
        Some(Copy {
            from,
            src: src.0,
            dest: dest.0,
            chown,
            chmod,
            location: cx.loc(src_span),
        })
    }

    /// `[target.T.secrets]`: `NAME = { env = "VAR" }` or `NAME = { file = "path" }`.
    fn secrets(&self, v: &Value<'_>) -> Option<BTreeMap<String, Secret>> {
        let cx = self.cx;
        let path = self.key("secrets");
        let table = cx.table(v, &path)?;
        let shape = "`{ env = \"VAR\" }` or `{ file = \"path\" }`";
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, value) in table.iter() {
            let name_str: &str = name.get_ref();
            let key = join(&path, name_str);
            if !valid_secret_name(name_str) {
                cx.error(
                    name.span(),
                    &key,
                    format!("invalid secret name `{name_str}`"),
                    Some(SECRET_NAME_RULE.into()),
                    None,
                );
                ok = false;
                continue;
            }
            let DeValue::Table(entry) = value.get_ref() else {
                cx.wrong_type(value, &key, &format!("a table {shape}"));
                ok = false;
                continue;
            };
            cx.keys(entry, &key, SECRET_KEYS);
            let source = match (entry.get("env"), entry.get("file")) {
                (Some(_), Some(file)) => {
                    cx.error(
                        file.span(),
                        &key,
                        "a secret comes from `env` or from `file`, not both",
                        Some(shape.into()),
                        None,
                    );
                    None
                }
                (None, None) => {
                    cx.error(
                        value.span(),
                        &key,
                        "missing `env` or `file`: where the secret's value comes from",
                        Some(shape.into()),
                        None,
                    );
                    None
                }
                (Some(env), None) => {
                    let env_key = join(&key, "env");
                    cx.text(env, &env_key).and_then(|var| {
                        if var.is_empty() || var.contains(['=', '\0']) {
                            cx.error(
                                env.span(),
                                &env_key,
                                format!("invalid environment variable name `{var}`"),
                                Some("the name of an environment variable".into()),
                                None,
                            );
                            return None;
                        }
                        Some(SecretSource::Env(var))
                    })
                }
                (None, Some(file)) => {
                    let file_key = join(&key, "file");
                    cx.text(file, &file_key).and_then(|f| {
                        if f.is_empty() {
                            cx.error(
                                file.span(),
                                &file_key,
                                "empty path",
                                Some("a file, relative to this manifest".into()),
                                None,
                            );
                            return None;
                        }
                        // As `ca-certificates` paths: beside the manifest, as it was named.
                        let dir = cx.file.parent().unwrap_or(Path::new(""));
                        Some(SecretSource::File(dir.join(f)))
                    })
                }
            };
            match source {
                Some(source) => {
                    out.insert(
                        name_str.to_string(),
                        Secret {
                            name: name_str.to_string(),
                            source,
                            location: cx.loc(name.span()),
                        },
                    );
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn required_text(
        &self,
        table: &DeTable<'_>,
        parent: &Value<'_>,
        path: &str,
        key: &str,
        expected: &str,
    ) -> Option<(String, Range<usize>)> {
        match table.get(key) {
            None => {
                self.cx.error(
                    parent.span(),
                    &join(path, key),
                    format!("missing required key `{key}`"),
                    Some(expected.into()),
                    None,
                );
                None
            }
            Some(v) => {
                let s = self.cx.text(v, &join(path, key))?;
                if s.is_empty() {
                    self.cx.error(
                        v.span(),
                        &join(path, key),
                        "must not be empty",
                        Some(expected.into()),
                        None,
                    );
                    return None;
                }
                Some((s, v.span()))
            }
        }
    }

    fn packages(
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
        let manager = match table.get("manager") {
            None => {
                cx.error(
                    key_span.clone(),
                    &manager_key,
                    "missing required key `manager`",
                    Some(one_of(MANAGERS)),
                    None,
                );
                return None;
            }
            Some(m) => {
                let s = cx.text(m, &manager_key)?;
                match s.as_str() {
                    "uv" => Manager::Uv,
                    "pip" => Manager::Pip,
                    "poetry" => Manager::Poetry,
                    "npm" => Manager::Npm,
                    "custom" => Manager::Custom,
                    other => {
                        let hint = suggest(other, MANAGERS.iter().copied())
                            .map(|s| format!("did you mean `{s}`?"));
                        cx.error(
                            m.span(),
                            &manager_key,
                            format!("unknown package manager `{other}`"),
                            Some(one_of(MANAGERS)),
                            hint,
                        );
                        return None;
                    }
                }
            }
        };
        let (default_files, default_lock): (&[&str], &[&str]) = match manager {
            Manager::Uv => (&["pyproject.toml"], &["uv.lock"]),
            Manager::Poetry => (&["pyproject.toml"], &["poetry.lock"]),
            Manager::Pip => (&["requirements.in"], &["requirements.txt"]),
            Manager::Npm => (&["package.json"], &["package-lock.json"]),
            Manager::Custom => (&[], &[]),
        };
        let mut ok = true;
        let mut list = |field: &str, default: &[&str]| -> Vec<String> {
            let key = join(&path, field);
            match table.get(field) {
                None if manager == Manager::Custom => {
                    cx.error(
                        key_span.clone(),
                        &key,
                        format!(
                            "missing required key `{field}` (the `custom` manager has no default)"
                        ),
                        Some("an array of paths relative to the context".into()),
                        None,
                    );
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
        let files = list("files", default_files);
        let lock = list("lock", default_lock);
        let command = |field: &str| -> Option<String> {
            let key = join(&path, field);
            match table.get(field) {
                None if manager == Manager::Custom => {
                    cx.error(
                        key_span.clone(),
                        &key,
                        format!(
                            "missing required key `{field}` (the `custom` manager has no default)"
                        ),
                        Some("a shell command".into()),
                        None,
                    );
                    None
                }
                None => None,
                Some(v) => cx.text(v, &key),
            }
        };
        let refresh = command("refresh");
        let install = command("install");
        // pip-compile writes one output file, and pip's commands name it.
        if manager == Manager::Pip && lock.len() > 1 && (refresh.is_none() || install.is_none()) {
            if let Some(v) = table.get("lock") {
                cx.error(
                    v.span(),
                    &join(&path, "lock"),
                    format!("pip locks into one file, not {}", lock.len()),
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
        if manager == Manager::Custom && (refresh.is_none() || install.is_none()) {
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

    fn smoke_test(&self, v: &Value<'_>, key_span: Range<usize>) -> Option<SmokeTest> {
        let cx = self.cx;
        let path = self.key("smoke-test");
        let table = cx.table(v, &path)?;
        cx.keys(table, &path, SMOKE_KEYS);
        let copy = match table.get("copy") {
            None => Vec::new(),
            Some(c) => {
                let copy = cx.texts(c, &join(&path, "copy"))?;
                if !copy
                    .iter()
                    .all(|p| in_context(cx, p, c.span(), &join(&path, "copy")))
                {
                    return None;
                }
                copy
            }
        };
        let run = match table.get("run") {
            None => {
                cx.error(
                    key_span.clone(),
                    &join(&path, "run"),
                    "missing required key `run`",
                    Some("an array of shell commands".into()),
                    None,
                );
                return None;
            }
            Some(r) => {
                let run = cx.texts(r, &join(&path, "run"))?;
                if run.is_empty() {
                    cx.error(
                        r.span(),
                        &join(&path, "run"),
                        "a smoke test needs at least one command",
                        None,
                        None,
                    );
                    return None;
                }
                run
            }
        };
        Some(SmokeTest {
            copy,
            run,
            location: cx.loc(key_span),
        })
    }

    fn artifact(&self, item: &Value<'_>, field: &str) -> Option<Artifact> {
        let cx = self.cx;
        let path = self.key(field);
        let table = cx.table(item, &path)?;
        cx.keys(table, &path, ARTIFACT_KEYS);
        let src = self.required_text(
            table,
            item,
            &path,
            "src",
            "an archive path relative to the context",
        );
        let to = self.required_text(
            table,
            item,
            &path,
            "extract-to",
            "an absolute directory inside the image",
        );
        let chown = table
            .get("chown")
            .and_then(|v| cx.text(v, &join(&path, "chown")));
        let (src, to) = (src?, to?);
        if !in_context(cx, &src.0, src.1.clone(), &join(&path, "src")) {
            return None;
        }
        if !to.0.starts_with('/') {
            cx.error(
                to.1,
                &join(&path, "extract-to"),
                format!("`{}` is not an absolute path", to.0),
                Some("an absolute directory inside the image".into()),
                None,
            );
            return None;
        }
        Some(Artifact {
            src: src.0,
            extract_to: to.0,
            chown,
            location: cx.loc(src.1),
        })
    }

    fn config(&self, v: &Value<'_>) -> ImageConfig {
        let cx = self.cx;
        let path = self.key("config");
        let mut config = ImageConfig::default();
        let Some(table) = cx.table(v, &path) else {
            return config;
        };
        cx.keys(table, &path, CONFIG_KEYS);
        let key = |k: &str| join(&path, k);
        config.entrypoint = table
            .get("entrypoint")
            .and_then(|v| cx.texts(v, &key("entrypoint")));
        config.cmd = table.get("cmd").and_then(|v| cx.texts(v, &key("cmd")));
        if let Some(v) = table.get("env") {
            config.env = cx.env_map(v, &key("env")).unwrap_or_default();
            for name in config.env.keys() {
                if name.is_empty() || name.contains('=') {
                    cx.error(
                        v.span(),
                        &key("env"),
                        format!("invalid environment variable name `{name}`"),
                        None,
                        None,
                    );
                }
            }
        }
        if let Some(v) = table.get("workdir")
            && let Some(w) = cx.text(v, &key("workdir"))
        {
            if w.starts_with('/') {
                config.workdir = Some(w);
            } else {
                cx.error(
                    v.span(),
                    &key("workdir"),
                    format!("`{w}` is not an absolute path"),
                    Some("an absolute directory inside the image".into()),
                    None,
                );
            }
        }
        config.user = table.get("user").and_then(|v| cx.text(v, &key("user")));
        if let Some(v) = table.get("ports") {
            if let DeValue::Array(items) = v.get_ref() {
                for (i, item) in items.iter().enumerate() {
                    if let Some(p) = port(cx, item, &format!("{}[{i}]", key("ports"))) {
                        config.ports.push(p);
                    }
                }
            } else {
                cx.wrong_type(v, &key("ports"), "an array of ports");
            }
        }
        config.labels = table
            .get("labels")
            .and_then(|v| cx.text_map(v, &key("labels")))
            .unwrap_or_default();
        config
    }
}

fn port(cx: &Cx<'_>, v: &Value<'_>, key: &str) -> Option<String> {
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

fn mode(cx: &Cx<'_>, v: &Value<'_>, key: &str) -> Option<u32> {
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
fn normal_join(base: &Path, rel: &str) -> PathBuf {
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

fn read_groups<'s>(
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
