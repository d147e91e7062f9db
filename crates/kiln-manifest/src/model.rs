//! The resolved manifest: what every other crate sees after parsing, validation, variable
//! substitution and profile overrides. Nothing here refers back to TOML.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_reference::{Platform, Reference};
use serde::Serialize;

/// A place in a manifest file, 1-based line and column; line 0 is no place in a file but the
/// command line (`file` then says what on it, e.g. `--set NAME`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// A problem with a command-line argument, shown as `what`.
    pub fn command_line(what: impl Into<PathBuf>) -> Location {
        Location {
            file: what.into(),
            line: 0,
            column: 0,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.file.display());
        }
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// All manifests of one invocation, merged and resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Targets by name (names are unique across all files).
    pub targets: BTreeMap<String, Target>,
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
    /// The profile that was applied, if any.
    pub profile: Option<String>,
    /// Every image reference a profile override rewrote, in the order found.
    pub rewrites: Vec<Rewrite>,
    /// The applied profile's `image-overrides` rules, in the order they are tried, with what
    /// each matched.
    pub overrides: Vec<OverrideRule>,
    /// Problems that do not stop a command (printed as warnings), e.g. an override rule that
    /// rewrites nothing.
    #[serde(skip)]
    pub warnings: Vec<crate::Diagnostic>,
    /// Resolved values of every declared variable.
    pub vars: BTreeMap<String, String>,
}

/// One image reference rewritten by a profile's `image-overrides`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// Target whose field was rewritten.
    pub target: String,
    /// Which field: `from`, `copy[N].from` or `image`.
    pub field: String,
    /// Reference before the override (normalised).
    pub old: String,
    /// Reference after the override (normalised).
    pub new: String,
    /// The override key that matched (exact reference or `re:…`).
    pub rule: String,
}

/// One `image-overrides` rule of the applied profile. Rules match the normalised reference
/// (`python` is `docker.io/library/python:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideRule {
    /// The key as written: an image reference, or `re:` and a regular expression.
    pub rule: String,
    /// An exact rule's reference, normalised (what it is compared with).
    pub normalised: Option<String>,
    /// Where the rule's key is.
    pub location: Location,
    /// How many references it rewrote (each is in [`Manifest::rewrites`]).
    pub matched: usize,
    /// The distinct references (normalised, as matched) it was tried on and did not match.
    pub missed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    pub targets: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Target {
    pub name: String,
    /// Where `[target.NAME]` is declared.
    pub location: Location,
    /// Directory of the manifest that declares this target (relative paths resolve from here).
    pub manifest_dir: PathBuf,
    pub from: Base,
    /// Build context directory: `context` resolved against `manifest_dir` (default: `manifest_dir`).
    pub context: PathBuf,
    /// Shell commands of the `pre` stage, run with `/bin/sh -c`.
    pub run: Vec<String>,
    pub copy: Vec<Copy>,
    pub packages: Option<Packages>,
    pub smoke_test: Option<SmokeTest>,
    pub artifacts: Vec<Artifact>,
    pub config: ImageConfig,
    /// Environment for RUN steps only; never written to the image config.
    pub build_env: BTreeMap<String, String>,
    /// Name the target image is tagged with, after variables and profile overrides.
    pub image: Option<Reference>,
    pub network: NetworkMode,
    pub ca_certificates: CaCertificates,
    /// Platform, `os/arch[/variant]` in the manifest (default `linux/amd64`), validated by the
    /// loader.
    pub platform: Platform,
    /// Secrets by name, mounted at `/run/secrets/NAME` in every RUN step of this target.
    pub secrets: BTreeMap<String, Secret>,
    /// Where `context` was set, when it was (for errors about the path it names).
    pub context_origin: Option<Origin>,
    /// Where `ca-certificates` was set: on the target or in `[defaults]`.
    pub ca_certificates_origin: Option<Origin>,
    /// `[defaults] cache` of its file: the registry repository its build cache is exported
    /// to and imported from (tagged per target); `--cache` wins over it.
    pub cache: Option<Reference>,
}

/// Where a value came from: the dotted key as written (`target.app.context`,
/// `defaults.ca-certificates`) and the place of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub key: String,
    pub location: Location,
}

/// A secret a target's RUN steps read: where its value comes from. The value itself is read
/// at build time by the caller and never enters the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Secret {
    /// The file name under `/run/secrets/`.
    pub name: String,
    pub source: SecretSource,
    /// Where `[target.T.secrets] NAME` is declared.
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "from")]
pub enum SecretSource {
    /// The value of this environment variable of the invocation.
    Env(String),
    /// The content of this file; a relative path is resolved against the manifest directory.
    File(PathBuf),
}

/// What a target starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "ref")]
pub enum Base {
    /// A registry image, normalised (`docker.io/library/…`), after profile overrides.
    Image(Reference),
    /// The `image` stage of another target (`target:NAME`).
    Target(String),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Copy {
    pub from: CopySource,
    /// Source path: relative to the context for `Context`, absolute inside the image otherwise.
    pub src: String,
    /// Destination; relative paths resolve against the image's workdir.
    pub dest: String,
    /// Optional `user[:group]` owner of the copied files.
    pub chown: Option<String>,
    /// Optional octal mode, e.g. 0o755.
    pub chmod: Option<u32>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "ref")]
pub enum CopySource {
    /// The target's build context.
    Context,
    /// Another target's image stage (`target:NAME`).
    Target(String),
    /// A registry image.
    Image(Reference),
}

/// A package manager; what each is and does is its row of the table, [`Manager::spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Manager {
    Uv,
    Pip,
    Poetry,
    Npm,
    Custom,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Packages {
    pub manager: Manager,
    /// Declared package files, relative to the context.
    pub files: Vec<String>,
    /// Lock files written back by `kiln refresh`, relative to the context.
    pub lock: Vec<String>,
    /// Custom refresh command (required for `custom`, optional override otherwise).
    pub refresh: Option<String>,
    /// Custom strict install command (required for `custom`, optional override otherwise).
    pub install: Option<String>,
    /// Directory inside the image where package files live (default: config workdir, else `/app`).
    pub dir: String,
    /// Whether the environment the packages are installed into is made active (`PATH`,
    /// `VIRTUAL_ENV`) for the smoke test, later RUN steps and the image.
    pub activate: Activate,
    pub location: Location,
}

/// `[target.T.packages] activate`: which environment, if any, is made active after the install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "dir")]
pub enum Activate {
    /// The environment the manager installs into (the manager table, [`crate::ManagerSpec`], says where;
    /// a manager that makes none activates nothing). `activate = true` or no key.
    #[default]
    Manager,
    /// Nothing is activated. `activate = false`.
    Off,
    /// This directory (absolute, or relative to the packages `dir`). `activate = "DIR"`.
    Dir(String),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SmokeTest {
    /// Context paths copied into the smoke-test stage (into the workdir, else the packages'
    /// directory, else `/`: where the smoke test runs).
    pub copy: Vec<String>,
    /// Shell commands; all must exit 0.
    pub run: Vec<String>,
    pub location: Location,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Artifact {
    /// Archive path relative to the context: a zip (`.zip`, unpacked by kiln), or a tar,
    /// optionally gzip, bzip2 or xz compressed (unpacked by BuildKit).
    pub src: String,
    /// Absolute directory the archive is unpacked into.
    pub extract_to: String,
    /// Optional `user[:group]` owner of everything unpacked, as `copy` has.
    pub chown: Option<String>,
    pub location: Location,
}

impl Artifact {
    /// Whether kiln unpacks it itself (BuildKit's unpacking knows only tar archives).
    pub fn is_zip(&self) -> bool {
        self.src.to_ascii_lowercase().ends_with(".zip")
    }
}

/// OCI image config set by the manifest; `None`/empty means "inherit from the base image".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Exposed ports as `PORT/PROTO` (`5000` becomes `5000/tcp`).
    pub ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// The engine's sandbox network.
    #[default]
    Default,
    Host,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum CaCertificates {
    #[default]
    None,
    /// The host's bundle (`/etc/ssl/certs/ca-certificates.crt` on Debian).
    Host,
    /// A bundle file; relative paths resolve against the manifest directory.
    Path(PathBuf),
}
