//! Lowers a resolved manifest to LLB: each stage of each target (as laid out by `kiln-graph`)
//! becomes a `kiln_llb::State`, and each target's image gets its effective image config
//! (manifest settings over what it inherits). Pure: no IO; the build context is referenced by
//! name (`local://<target>`) and uploaded at solve time.

mod config;
mod managers;
pub mod platform;

pub use config::{BaseConfigs, EffectiveConfig, expand};

use std::collections::{BTreeMap, BTreeSet};

use kiln_graph::{Graph, PackagesMode, StageId, StageKind};
use kiln_llb::{CacheSharing, CopyOptions, Exec, FileActions, LocalOptions, Mount, NetMode, State};
use kiln_manifest::{
    Activate, Base, CaCertificates, CopySource, Manifest, NetworkMode, Packages, SmokeTest, Target,
};

/// Where the CA bundle secret is mounted inside RUN steps.
pub const CA_BUNDLE_PATH: &str = "/run/kiln/ca-certificates.crt";

/// The secret id the session serves a target's CA bundle under, if it has one: the host's
/// bundle is the same for every target (one id, so identical steps of different targets still
/// share the cache); a bundle file gets an id of its target's own, since targets built
/// together may trust different files.
pub fn ca_bundle_secret(target: &str, ca: &CaCertificates) -> Option<String> {
    match ca {
        CaCertificates::None => None,
        CaCertificates::Host => Some("kiln.ca-certificates".to_string()),
        CaCertificates::Path(_) => Some(format!("kiln.ca-certificates/{target}")),
    }
}

/// Where a target's `[secrets]` are mounted inside RUN steps: `/run/secrets/NAME`.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The secret id the session serves `target`'s secret `name` under: per target, so two
/// targets with a secret of the same name from different sources each get their own. `/`
/// is in neither a target nor a secret name, so ids never collide.
pub fn secret_id(target: &str, name: &str) -> String {
    format!("kiln.secret/{target}/{name}")
}
/// Environment variables pointed at the CA bundle for RUN steps only.
pub const CA_BUNDLE_ENV: [&str; 5] = [
    "SSL_CERT_FILE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
];

/// The local source a zip artifact is served as: kiln unpacks `target`'s `index`-th artifact
/// on the client into a directory the session serves under this name (BuildKit can only
/// unpack tar archives). Not a valid target name, so it never clashes with a context.
pub fn artifact_source(target: &str, index: usize) -> String {
    format!("{target}:artifact-{index}")
}

/// Why a target could not be lowered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("target `{target}` needs `{dependency}`, which was not compiled before it")]
    Order { target: String, dependency: String },
}

/// One stage's LLB.
#[derive(Clone)]
pub struct CompiledStage {
    pub id: StageId,
    pub state: State,
}

/// One target's stages and image config.
#[derive(Clone)]
pub struct CompiledTarget {
    pub name: String,
    pub stages: Vec<CompiledStage>,
    pub config: EffectiveConfig,
    /// The include patterns of every context source the stages read: the files of the context
    /// that can change what this target builds.
    pub context_includes: Vec<String>,
}

impl CompiledTarget {
    /// The state of one stage, if the target has it.
    pub fn stage(&self, kind: StageKind) -> Option<&State> {
        self.stages
            .iter()
            .find(|s| s.id.kind == kind)
            .map(|s| &s.state)
    }
}

/// Lower `targets` (in dependency order, as [`Graph::select`] returns them) to LLB.
///
/// `local_unique` names the client's working tree (e.g. a hash of its path) at solve time:
/// it keeps concurrent builds of different trees from sharing a context (see
/// [`kiln_llb::LocalOptions::unique`]). `None` when planning, so plans are reproducible.
pub fn compile(
    manifest: &Manifest,
    graph: &Graph,
    targets: &[String],
    bases: &BaseConfigs,
    local_unique: Option<&str>,
) -> Result<Vec<CompiledTarget>, CompileError> {
    let mut out: Vec<CompiledTarget> = Vec::with_capacity(targets.len());
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for name in targets {
        let target = &manifest.targets[name];
        let done = Done {
            index: &index,
            compiled: &out,
        };
        let compiled = compile_target(target, graph.mode(), done, bases, local_unique)?;
        index.insert(name, out.len());
        out.push(compiled);
    }
    Ok(out)
}

/// The targets compiled so far, by name.
#[derive(Clone, Copy)]
struct Done<'a> {
    index: &'a BTreeMap<&'a str, usize>,
    compiled: &'a [CompiledTarget],
}

impl<'a> Done<'a> {
    fn get(&self, name: &str) -> Option<&'a CompiledTarget> {
        self.index.get(name).map(|&i| &self.compiled[i])
    }
}

fn compile_target(
    target: &Target,
    mode: PackagesMode,
    done: Done<'_>,
    bases: &BaseConfigs,
    local_unique: Option<&str>,
) -> Result<CompiledTarget, CompileError> {
    let platform = &target.platform;
    let dependency = |name: &str| {
        done.get(name).ok_or_else(|| CompileError::Order {
            target: target.name.clone(),
            dependency: name.to_string(),
        })
    };

    let (base_state, inherited) = match &target.from {
        Base::Image(reference) => (
            State::image(&reference.to_string(), platform),
            bases.get(reference).cloned().unwrap_or_default(),
        ),
        Base::Target(name) => {
            let dep = dependency(name)?;
            (
                dep.stage(StageKind::Image)
                    .expect("every target has an image stage")
                    .clone(),
                dep.config.clone(),
            )
        }
    };
    let config = inherited.apply(&target.config);
    let lower = Lowering {
        target,
        config: &config,
        includes: Default::default(),
        local_unique,
        env: std::cell::RefCell::new(config.env.clone()),
    };

    let mut stages = Vec::new();
    let mut push = |kind: StageKind, state: &State| {
        stages.push(CompiledStage {
            id: StageId::new(&target.name, kind),
            state: state.clone(),
        });
    };

    // pre: from + run, with the image's env in effect (as Dockerfile ENV). The steps run in the
    // workdir the base gives; the manifest's workdir is made after them, as a Dockerfile
    // WORKDIR after the RUNs: root-owned when new, left as it is when a step made it (a
    // `useradd -m -d /app` keeps its home). BuildKit would create an exec's missing cwd as root
    // before the step, so it must not be the steps' cwd.
    let mut state = config
        .apply_to_state(&base_state)
        .with_cwd(inherited.workdir.as_deref().unwrap_or("/"));
    for (i, cmd) in target.run.iter().enumerate() {
        let exec = lower.exec(cmd, &format!("[{}/pre {}] {cmd}", target.name, i + 1));
        state = state.run(exec).root();
    }
    if let Some(dir) = target.config.workdir.as_deref().filter(|d| *d != "/") {
        let mkdir = FileActions::default()
            .mkdir(dir, 0o755, true)
            .name(&format!("[{}/pre] workdir {dir}", target.name));
        state = state.file(mkdir);
    }
    state = state.with_cwd(config.workdir.as_deref().unwrap_or("/"));
    push(StageKind::Pre, &state);

    if let Some(packages) = &target.packages {
        let kind = match mode {
            PackagesMode::Pinned => StageKind::PackagesPinned,
            PackagesMode::Refresh => StageKind::PackagesRefresh,
        };
        state = lower.packages(&state, packages, kind);
        push(kind, &state);
    }
    // From here on the packages' environment is active, as `ENV VIRTUAL_ENV=… PATH=…/bin:$PATH`
    // after the install would make it: in the smoke test, the image and whatever builds on it.
    let config = match target.packages.as_ref().and_then(environment) {
        Some(dir) => {
            let active = config.activate(&dir);
            for key in ["VIRTUAL_ENV", "PATH"] {
                if let Some((k, v)) = active.env.iter().find(|(k, _)| k == key) {
                    state = state.with_env(k, v);
                }
            }
            *lower.env.borrow_mut() = active.env.clone();
            active
        }
        None => config.clone(),
    };

    // post: copies and artifacts.
    let mut actions = FileActions::default();
    let mut any = false;
    let context_includes: Vec<String> = target
        .copy
        .iter()
        .filter(|c| c.from == CopySource::Context)
        .map(|c| include_pattern(&c.src))
        .chain(
            target
                .artifacts
                .iter()
                .filter(|a| !a.is_zip())
                .map(|a| include_pattern(&a.src)),
        )
        .collect();
    let context = lower.context(context_includes);
    for copy in &target.copy {
        let source = match &copy.from {
            CopySource::Context => context.clone(),
            CopySource::Target(name) => dependency(name)?
                .stage(StageKind::Image)
                .expect("every target has an image stage")
                .clone(),
            CopySource::Image(reference) => State::image(&reference.to_string(), platform),
        };
        let src = match copy.from {
            CopySource::Context => format!("/{}", copy_src(copy.src.trim_start_matches("./"))),
            _ => copy_src(&copy.src),
        };
        let opts = CopyOptions {
            create_dest_path: true,
            allow_wildcard: true,
            dir_copy_contents: true,
            // A path named is followed if it is a symlink; what a wildcard matches is copied
            // as it is (an absolute symlink in the context is no error, `cp -a` style).
            follow_symlink: !has_wildcard(&copy.src),
            mode: copy.chmod,
            chown: copy.chown.as_deref().map(config::parse_chown),
            ..CopyOptions::default()
        };
        actions = actions.copy(&source, &src, &copy.dest, opts);
        any = true;
    }
    for (i, artifact) in target.artifacts.iter().enumerate() {
        let chown = artifact.chown.as_deref().map(config::parse_chown);
        if artifact.is_zip() {
            // Unpacked by kiln into a local source of its own; the archive's bytes still count
            // among the context files the target reads (its inputs hash).
            lower
                .includes
                .borrow_mut()
                .insert(include_pattern(&artifact.src));
            let opts = CopyOptions {
                create_dest_path: true,
                dir_copy_contents: true,
                chown,
                ..CopyOptions::default()
            };
            let unpacked = lower.artifact(i);
            actions = actions.copy(&unpacked, "/", &artifact.extract_to, opts);
        } else {
            let src = format!("/{}", artifact.src.trim_start_matches("./"));
            let unpack = CopyOptions {
                create_dest_path: true,
                attempt_unpack: true,
                ..CopyOptions::default()
            };
            match chown {
                None => actions = actions.copy(&context, &src, &artifact.extract_to, unpack),
                // BuildKit's unpacking keeps the owners in the tar (chown only reaches the
                // directory it creates), so unpack into scratch and copy that with the owner.
                Some(chown) => {
                    let unpacked = State::scratch().file(
                        FileActions::default()
                            .copy(&context, &src, "/", unpack)
                            .name(&format!("[{}/post] unpack {}", target.name, artifact.src)),
                    );
                    let opts = CopyOptions {
                        create_dest_path: true,
                        dir_copy_contents: true,
                        chown: Some(chown),
                        ..CopyOptions::default()
                    };
                    actions = actions.copy(&unpacked, "/", &artifact.extract_to, opts);
                }
            }
        }
        any = true;
    }
    if any {
        state = state.file(actions.name(&format!("[{}/post] copy", target.name)));
    }
    push(StageKind::Post, &state);

    if let Some(smoke) = &target.smoke_test {
        push(StageKind::SmokeTest, &lower.smoke_test(&state, smoke));
    }
    push(StageKind::Image, &state);

    let context_includes = lower.includes.into_inner().into_iter().collect();
    Ok(CompiledTarget {
        name: target.name.clone(),
        stages,
        config,
        context_includes,
    })
}

/// Per-target lowering context.
struct Lowering<'a> {
    target: &'a Target,
    config: &'a EffectiveConfig,
    /// Every include pattern the target's context sources use.
    includes: std::cell::RefCell<BTreeSet<String>>,
    local_unique: Option<&'a str>,
    /// The environment in effect for the next RUN steps (the config's, then with the packages'
    /// environment active): what build-env values expand against.
    env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Lowering<'_> {
    /// A RUN step: `/bin/sh -c cmd` with build-env, network mode, the CA bundle and the
    /// target's secrets (mounted read-only; only their ids are in the LLB, never a value).
    fn exec(&self, cmd: &str, name: &str) -> Exec {
        let mut exec = Exec::shell(cmd)
            .name(name)
            .network(match self.target.network {
                NetworkMode::Default => NetMode::Sandbox,
                NetworkMode::Host => NetMode::Host,
                NetworkMode::None => NetMode::None,
            });
        let env = self.env.borrow();
        // The manager's defaults, below build-env and the config env in effect.
        let defaults = self
            .target
            .packages
            .as_ref()
            .map_or(&[][..], |p| p.manager.spec().env);
        for (k, v) in defaults {
            if !self.target.build_env.contains_key(*k) && !env.iter().any(|(e, _)| e == k) {
                exec = exec.env(k, v);
            }
        }
        for (k, v) in &self.target.build_env {
            exec = exec.env(k, &config::expand(v, &env));
        }
        if let Some(id) = ca_bundle_secret(&self.target.name, &self.target.ca_certificates) {
            exec = exec.mount(Mount::Secret {
                dest: CA_BUNDLE_PATH.to_string(),
                id,
                uid: 0,
                gid: 0,
                mode: 0o444,
                optional: false,
            });
            for var in CA_BUNDLE_ENV {
                exec = exec.env(var, CA_BUNDLE_PATH);
            }
        }
        for name in self.target.secrets.keys() {
            exec = exec.mount(Mount::Secret {
                dest: format!("{SECRETS_DIR}/{name}"),
                id: secret_id(&self.target.name, name),
                uid: 0,
                gid: 0,
                // Readable by the smoke test, which runs as the image's user.
                mode: 0o444,
                optional: false,
            });
        }
        exec
    }

    /// The build context, narrowed to `include` patterns so unrelated edits keep the cache.
    fn context(&self, include: Vec<String>) -> State {
        self.includes.borrow_mut().extend(include.iter().cloned());
        // BuildKit keeps one synced copy per (session shared key, name, hint) and makes it
        // match the include patterns of each sync: sources with different patterns sharing a
        // copy would undo each other's syncs (and race within one solve). One copy per
        // pattern set keeps each incremental and correct.
        let hint = format!("{}:{}", self.target.name, pattern_key(&include));
        State::local(
            &self.target.name,
            &LocalOptions {
                include,
                shared_key_hint: Some(hint),
                unique: self
                    .local_unique
                    .map(|u| format!("{u}:{}", self.target.name)),
                name: Some(format!("[{}] context", self.target.name)),
                ..LocalOptions::default()
            },
        )
    }

    /// The directory kiln unpacked the target's `index`-th artifact (a zip) into.
    fn artifact(&self, index: usize) -> State {
        let name = artifact_source(&self.target.name, index);
        State::local(
            &name,
            &LocalOptions {
                shared_key_hint: Some(name.clone()),
                unique: self.local_unique.map(|u| format!("{u}:{name}")),
                name: Some(format!(
                    "[{}] artifact {index} (unpacked)",
                    self.target.name
                )),
                ..LocalOptions::default()
            },
        )
    }

    fn packages(&self, state: &State, packages: &Packages, kind: StageKind) -> State {
        let t = &self.target.name;
        let spec = packages.manager.spec();
        let refresh = kind == StageKind::PackagesRefresh;
        let includes = packages
            .files
            .iter()
            .chain(&packages.lock)
            .map(|f| include_pattern(f))
            .collect();
        let context = self.context(includes);
        let mut actions = FileActions::default().mkdir(&packages.dir, 0o755, true);
        for file in &packages.files {
            actions = actions.copy(
                &context,
                &format!("/{file}"),
                &format!("{}/{file}", packages.dir),
                CopyOptions {
                    create_dest_path: true,
                    ..CopyOptions::default()
                },
            );
        }
        for lock in &packages.lock {
            // A refresh may start without a lock; a pinned install requires it. BuildKit only
            // tolerates a missing source for a wildcard, so a refresh names the lock file with
            // a one-character class (`uv.loc[k]`) that matches exactly that file, copied into
            // its directory.
            let (src, dest) = if refresh {
                let dest = match lock.rsplit_once('/') {
                    Some((sub, _)) => format!("{}/{sub}/", packages.dir),
                    None => format!("{}/", packages.dir),
                };
                (format!("/{}", wildcard_of(lock)), dest)
            } else {
                (format!("/{lock}"), format!("{}/{lock}", packages.dir))
            };
            actions = actions.copy(
                &context,
                &src,
                &dest,
                CopyOptions {
                    create_dest_path: true,
                    allow_wildcard: refresh,
                    allow_empty_wildcard: refresh,
                    ..CopyOptions::default()
                },
            );
        }
        // The tool first: editing the package files must not reinstall it.
        let setup = self.exec(
            spec.setup,
            &format!("[{t}/{}] set up {}", kind.as_str(), spec.manager.as_str()),
        );
        let state = state
            .run(setup)
            .root()
            .file(actions.name(&format!("[{t}/{}] copy package files", kind.as_str())))
            .with_cwd(&packages.dir);
        let command = if refresh {
            managers::refresh_command(packages)
        } else {
            managers::install_command(packages)
        };
        let mut exec = self
            .exec(&command, &format!("[{t}/{}] {command}", kind.as_str()))
            // A refresh must really resolve again, never replay a cached layer.
            .ignore_cache(refresh);
        if let Some(dir) = spec.cache_dir {
            exec = exec.mount(Mount::Cache {
                dest: dir.to_string(),
                id: format!("kiln-{}", spec.manager.as_str()),
                sharing: CacheSharing::Locked,
            });
        }
        // Back to the image's own workdir for what follows.
        state
            .run(exec)
            .root()
            .with_cwd(self.config.workdir.as_deref().unwrap_or("/"))
    }

    /// The smoke test runs where the app is: the workdir, else the packages' directory (where
    /// a manager installed them), else `/`; its files are copied there.
    fn smoke_test(&self, state: &State, smoke: &SmokeTest) -> State {
        let t = &self.target.name;
        let workdir = match (&self.config.workdir, &self.target.packages) {
            (Some(dir), _) => dir.as_str(),
            (None, Some(packages)) => packages.dir.as_str(),
            (None, None) => "/",
        };
        let mut state = state.with_cwd(workdir);
        if !smoke.copy.is_empty() {
            let context = self.context(smoke.copy.iter().map(|c| include_pattern(c)).collect());
            let mut actions = FileActions::default();
            for path in &smoke.copy {
                let rel = path.trim_start_matches("./");
                actions = actions.copy(
                    &context,
                    &format!("/{rel}"),
                    &format!(
                        "{}/{}",
                        workdir.trim_end_matches('/'),
                        rel.trim_start_matches('/')
                    ),
                    CopyOptions {
                        create_dest_path: true,
                        allow_wildcard: true,
                        dir_copy_contents: true,
                        ..CopyOptions::default()
                    },
                );
            }
            state = state.file(actions.name(&format!("[{t}/smoke-test] copy test files")));
        }
        for (i, cmd) in smoke.run.iter().enumerate() {
            let mut exec = self.exec(cmd, &format!("[{t}/smoke-test {}] {cmd}", i + 1));
            if let Some(user) = &self.config.user {
                exec = exec.user(user);
            }
            state = state.run(exec).root();
        }
        state
    }
}

/// The directory of the environment `packages` installs into and the manifest activates, if any.
fn environment(packages: &Packages) -> Option<String> {
    let dir = match &packages.activate {
        Activate::Off => return None,
        Activate::Manager => packages.manager.spec().venv?,
        Activate::Dir(dir) => dir.as_str(),
    };
    if dir.starts_with('/') {
        return Some(dir.to_string());
    }
    let rel = dir.trim_start_matches("./").trim_end_matches('/');
    Some(format!("{}/{rel}", packages.dir.trim_end_matches('/')))
}

/// A short stable key for a set of include patterns (FNV-1a, hex).
fn pattern_key(include: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in include.join("\n").bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `path` as a wildcard that matches only itself: its last character as a class (`a.lock` →
/// `a.loc[k]`; glob metacharacters are escaped first).
fn wildcard_of(path: &str) -> String {
    let escaped: String = path
        .chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => format!("\\{c}"),
            c => c.to_string(),
        })
        .collect();
    match path.chars().last() {
        Some(last) if !"*?[]\\".contains(last) => {
            let cut = escaped.len() - last.len_utf8();
            format!("{}[{last}]", &escaped[..cut])
        }
        _ => escaped,
    }
}

/// The local-source include pattern for a context path (`./src/` → `src`). In a manifest
/// path `*`, `?` and `[…]` are wildcards and `\` is an ordinary character (file names may
/// have it); in a pattern `\` escapes, so it is doubled.
fn include_pattern(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_end_matches('/');
    if p.is_empty() || p == "." {
        "**".to_string()
    } else {
        p.replace('\\', "\\\\")
    }
}

fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// A manifest copy source as BuildKit's wildcard copy reads it: a component without a
/// wildcard is taken literally, one with a wildcard is a `filepath.Match` pattern, where `\`
/// escapes, so there a literal `\` is doubled.
fn copy_src(path: &str) -> String {
    path.split('/')
        .map(|c| {
            if has_wildcard(c) {
                c.replace('\\', "\\\\")
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests;
