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
        for (k, v) in &manifest.env {
            match out.env.iter_mut().find(|(key, _)| key == k) {
                Some(entry) => entry.1 = v.clone(),
                None => out.env.push((k.clone(), v.clone())),
            }
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
    pub fn image_config(&self, platform: &kiln_llb::Platform) -> Vec<u8> {
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
