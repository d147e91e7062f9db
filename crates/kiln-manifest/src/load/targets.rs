//! `[target.NAME]`: one target read strictly into a [`Target`], its `target:` references
//! collected for the cross-file check.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use kiln_reference::Reference;
use toml::de::{DeTable, DeValue};

use super::defaults::{Defaults, apply_common};
use super::profiles::Profile;
use super::scalars::{
    NAME_RULE, SECRET_NAME_RULE, in_context, mode, normal_join, port, valid_name, valid_secret_name,
};
use crate::cx::{Cx, Value, join};
use crate::*;

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

pub(super) type Refs = Vec<(String, Range<usize>, String)>;

pub(super) struct TargetReader<'a, 'c> {
    pub(super) cx: &'a Cx<'c>,
    pub(super) name: &'a str,
    pub(super) path: String,
    pub(super) name_span: Range<usize>,
    pub(super) defaults: &'a Defaults,
    pub(super) manifest_dir: &'a Path,
    pub(super) profile: Option<&'a Profile>,
}

impl TargetReader<'_, '_> {
    /// `target.NAME.field`; `field` is kiln's own (`copy[0].from`), never quoted.
    pub(super) fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.path)
    }

    pub(super) fn read(&self, value: &Value<'_>) -> Option<(Target, Vec<Rewrite>, Refs)> {
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
