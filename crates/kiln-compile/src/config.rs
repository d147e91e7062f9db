//! The image config a target ends up with: the manifest's `config` over what the base gives.

use std::collections::BTreeMap;

use kiln_llb::{Chown, State, UserSpec};
use kiln_manifest::ImageConfig;
use kiln_reference::Reference;
use serde::Serialize;

/// Configs of base images, as resolved from a registry or engine (empty when planning offline).
pub type BaseConfigs = BTreeMap<Reference, EffectiveConfig>;

/// A fully merged image config (the part of the OCI config kiln controls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EffectiveConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Environment in order of first definition; later definitions replace the value in place.
    #[serde(serialize_with = "env_list")]
    pub env: Vec<(String, String)>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(serialize_with = "port_set", skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl EffectiveConfig {
    /// This config with `manifest` applied on top. Setting an entrypoint without a cmd clears
    /// the inherited cmd, as a Dockerfile ENTRYPOINT does.
    pub fn apply(&self, manifest: &ImageConfig) -> EffectiveConfig {
        let mut out = self.clone();
        if let Some(entrypoint) = &manifest.entrypoint {
            out.entrypoint = Some(entrypoint.clone());
            if manifest.cmd.is_none() {
                out.cmd = None;
            }
        }
        if let Some(cmd) = &manifest.cmd {
            out.cmd = Some(cmd.clone());
        }
        // Like one Dockerfile `ENV A=… B=…`: every value refers to the environment before it.
        for (k, v) in &manifest.env {
            let v = expand(v, &self.env);
            set_env(&mut out.env, k, v);
        }
        if manifest.workdir.is_some() {
            out.workdir = manifest.workdir.clone();
        }
        if manifest.user.is_some() {
            out.user = manifest.user.clone();
        }
        for port in &manifest.ports {
            if !out.exposed_ports.contains(port) {
                out.exposed_ports.push(port.clone());
            }
        }
        out.exposed_ports.sort();
        out.labels
            .extend(manifest.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// This config with the environment (a venv) at `dir` active, as `ENV VIRTUAL_ENV=dir
    /// PATH=dir/bin:$PATH` would make it: `dir/bin` first on `PATH` (not twice when it already
    /// is first).
    pub fn activate(&self, dir: &str) -> EffectiveConfig {
        let dir = match dir.trim_end_matches('/') {
            "" => "/",
            d => d,
        };
        let bin = format!("{}/bin", dir.trim_end_matches('/'));
        let path = lookup(&self.env, "PATH");
        let path = if path.split(':').next() == Some(bin.as_str()) {
            path.to_string()
        } else if path.is_empty() {
            bin
        } else {
            format!("{bin}:{path}")
        };
        let mut out = self.clone();
        set_env(&mut out.env, "VIRTUAL_ENV", dir.to_string());
        set_env(&mut out.env, "PATH", path);
        out
    }

    /// `state` with this config's env and workdir in effect for RUN steps.
    pub fn apply_to_state(&self, state: &State) -> State {
        let mut state = state.clone();
        for (k, v) in &self.env {
            state = state.with_env(k, v);
        }
        if let Some(dir) = &self.workdir {
            state = state.with_cwd(dir);
        }
        state
    }

    /// What an image inherits from a base whose OCI image config JSON is `json` (as the
    /// engine's ResolveImageConfig returns it). Fields kiln does not control are dropped.
    pub fn from_image_config(json: &[u8]) -> Result<EffectiveConfig, String> {
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct Inner {
            entrypoint: Option<Vec<String>>,
            cmd: Option<Vec<String>>,
            env: Option<Vec<String>>,
            working_dir: Option<String>,
            user: Option<String>,
            exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
            labels: Option<BTreeMap<String, String>>,
        }
        #[derive(serde::Deserialize)]
        struct Outer {
            #[serde(default)]
            config: Option<Inner>,
        }
        let outer: Outer = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let inner = outer.config.unwrap_or_default();
        Ok(EffectiveConfig {
            entrypoint: inner.entrypoint,
            cmd: inner.cmd,
            env: inner
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
            workdir: inner.working_dir.filter(|d| !d.is_empty()),
            user: inner.user.filter(|u| !u.is_empty()),
            exposed_ports: inner
                .exposed_ports
                .unwrap_or_default()
                .into_keys()
                .collect(),
            labels: inner.labels.unwrap_or_default(),
        })
    }

    /// The OCI image config JSON for an image of `platform` with this config, as an image
    /// exporter takes it (it fills in the layers and history itself).
    pub fn image_config(&self, platform: &kiln_reference::Platform) -> Vec<u8> {
        #[derive(Serialize)]
        struct Image<'a> {
            architecture: &'a str,
            os: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            variant: Option<&'a str>,
            config: &'a EffectiveConfig,
        }
        serde_json::to_vec(&Image {
            architecture: &platform.architecture,
            os: &platform.os,
            variant: platform.variant.as_deref(),
            config: self,
        })
        .expect("config serialises")
    }

    /// Canonical JSON (keys in a fixed order), as hashed into the image stage's config digest.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }
}

/// Set `key` in an ordered environment: in place when present, else at the end.
fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// `name`'s value in `env`: empty when unset, except `PATH`, which every process gets anyway
/// ([`kiln_llb::DEFAULT_PATH`], what BuildKit and Docker give a process whose image sets none).
fn lookup<'e>(env: &'e [(String, String)], name: &str) -> &'e str {
    match env.iter().rev().find(|(k, _)| k == name) {
        Some((_, v)) => v,
        None if name == "PATH" => kiln_llb::DEFAULT_PATH,
        None => "",
    }
}

/// `value` with references to the environment `env` expanded, as Dockerfile `ENV` does:
///
/// - `$NAME` and `${NAME}` (NAME: a letter or `_`, then letters, digits and `_`) become the
///   variable's value; an unset variable is empty, except `PATH` (see [`lookup`]);
/// - `${NAME:-word}` is `word` when NAME is unset or empty, `${NAME:+word}` is `word` when it
///   is set and not empty (`word` is expanded too);
/// - `\$` is a literal `$`;
/// - anything else stays as written: a `$` not followed by a name (`$1`, `$`, `${1}`, an
///   unterminated `${A`) and every other backslash.
///
/// Pure and total: the same inputs give the same string, and no input is an error.
pub fn expand(value: &str, env: &[(String, String)]) -> String {
    if !value.contains('$') {
        return value.to_string();
    }
    let mut x = Expander {
        s: value,
        i: 0,
        env,
    };
    x.word(false)
}

struct Expander<'a> {
    s: &'a str,
    i: usize,
    env: &'a [(String, String)],
}

impl<'a> Expander<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.i..).unwrap_or("")
    }

    /// Text up to the end, or (`in_braces`) up to the `}` that closes the enclosing `${`,
    /// which is left for the caller.
    fn word(&mut self, in_braces: bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.rest().chars().next() {
            match c {
                '}' if in_braces => break,
                '\\' if self.rest().starts_with("\\$") => {
                    out.push('$');
                    self.i += 2;
                }
                '$' => {
                    let text = self.dollar();
                    out.push_str(&text);
                }
                c => {
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
        out
    }

    /// The expansion of the reference at `$`; a lone `$` when none starts there.
    fn dollar(&mut self) -> String {
        let start = self.i;
        self.i += 1;
        let literal = |x: &mut Self| {
            x.i = start + 1;
            "$".to_string()
        };
        if !self.rest().starts_with('{') {
            return match self.name() {
                "" => literal(self),
                name => lookup(self.env, name).to_string(),
            };
        }
        self.i += 1;
        let name = self.name();
        if name.is_empty() {
            return literal(self);
        }
        let rest = self.rest();
        if rest.starts_with('}') {
            self.i += 1;
            return lookup(self.env, name).to_string();
        }
        let op = if rest.starts_with(":-") {
            '-'
        } else if rest.starts_with(":+") {
            '+'
        } else {
            return literal(self);
        };
        self.i += 2;
        let word = self.word(true);
        if !self.rest().starts_with('}') {
            return literal(self);
        }
        self.i += 1;
        let value = lookup(self.env, name);
        match (op, value.is_empty()) {
            ('-', true) | ('+', false) => word,
            ('-', false) => value.to_string(),
            _ => String::new(),
        }
    }

    /// The variable name at the cursor (possibly empty), consumed.
    fn name(&mut self) -> &'a str {
        let rest = self.rest();
        let mut len = 0;
        for (n, c) in rest.char_indices() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (n > 0 && c.is_ascii_digit());
            if !ok {
                break;
            }
            len = n + 1;
        }
        self.i += len;
        rest.get(..len).unwrap_or("")
    }
}

fn env_list<S: serde::Serializer>(env: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(env.iter().map(|(k, v)| format!("{k}={v}")))
}

fn port_set<S: serde::Serializer>(ports: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(ports.iter().map(|p| (p, BTreeMap::<String, String>::new())))
}

/// `user[:group]`, numeric parts as ids.
pub(crate) fn parse_chown(spec: &str) -> Chown {
    let part = |s: &str| match s.parse::<u32>() {
        Ok(id) => UserSpec::Id(id),
        Err(_) => UserSpec::Name(s.to_string()),
    };
    match spec.split_once(':') {
        Some((user, group)) => Chown {
            user: part(user),
            group: Some(part(group)),
        },
        None => Chown {
            user: part(spec),
            group: None,
        },
    }
}
