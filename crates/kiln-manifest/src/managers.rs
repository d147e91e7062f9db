//! Package managers as data: kiln's one table of them. The loader reads each manager's name,
//! default files and lock and which keys it requires from here; kiln-compile its setup,
//! commands, cache, environment and env defaults; kiln-lock is handed its [`LockFormat`].
//! Nothing else in kiln special-cases a manager: a new one is a [`Manager`] variant and a row.

use crate::{Manager, Packages};

/// The lock file formats kiln reads (kiln-lock's readers, one per format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockFormat {
    /// `uv.lock`
    UvLock,
    /// pip-compile output (`name==version`, optionally with hashes), whatever the file is named
    Requirements,
    /// `poetry.lock`
    PoetryLock,
    /// npm `package-lock.json`, lockfile version 2 or 3
    PackageLockJson,
}

impl LockFormat {
    /// The usual file name (the default lock of the manager that writes the format), used in
    /// error messages.
    pub fn file_name(self) -> &'static str {
        MANAGERS
            .iter()
            .find(|m| m.lock_format == Some(self))
            .and_then(|m| m.lock.first().copied())
            .unwrap_or("lock file")
    }

    /// A guess from a file name (any directories are ignored): a manager's default lock name,
    /// or pip-compile's conventional `requirements*.txt`. Only for a lock file no manager is
    /// known for (a `custom` target's, one named by an image's labels); a target's lock files
    /// are read as [`Packages::lock_format`] says.
    pub fn for_file(name: &str) -> Option<LockFormat> {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        if let Some(m) = MANAGERS.iter().find(|m| m.lock.contains(&base)) {
            return m.lock_format;
        }
        (base.starts_with("requirements") && base.ends_with(".txt"))
            .then_some(LockFormat::Requirements)
    }
}

/// One package manager: what the manifest may leave out, and how the build drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerSpec {
    pub manager: Manager,
    /// The manifest's `manager = "NAME"`.
    pub name: &'static str,
    /// `files` when the manifest gives none, relative to the context. Empty: `files` is
    /// required.
    pub files: &'static [&'static str],
    /// `lock` when the manifest gives none. Empty: `lock` is required.
    pub lock: &'static [&'static str],
    /// How kiln-lock reads this manager's lock files, whatever they are named. `None`: kiln
    /// does not know the format (`custom`), so it guesses from the name
    /// ([`LockFormat::for_file`]).
    pub lock_format: Option<LockFormat>,
    /// Shell command that makes the tool available when the image lacks it. It installs into
    /// its own venv under `/opt/kiln`, so PEP 668 ("externally managed") images are respected.
    pub setup: &'static str,
    /// Resolve, upgrade and write the lock file(s), then install from them. A template:
    /// `{files}` and `{lock}` stand for the target's `files` and `lock` (kiln-compile fills
    /// them in, shell-quoted); a template that names `{lock}` takes exactly one lock file
    /// ([`ManagerSpec::one_lock`]). `None`: the manifest must give `refresh`.
    pub refresh: Option<&'static str>,
    /// Install exactly what the lock says; fail when the lock does not match the declared files.
    /// A template, as `refresh` is. `None`: the manifest must give `install`.
    pub install: Option<&'static str>,
    /// Cache mount target for the tool's download cache (`None`: no cache mount).
    pub cache_dir: Option<&'static str>,
    /// The environment the install puts the packages in, made active (`PATH`, `VIRTUAL_ENV`)
    /// after it unless the manifest says `activate = false`: relative to the packages `dir`,
    /// or absolute. `None`: the manager makes no environment to activate.
    pub venv: Option<&'static str>,
    /// Environment every RUN step of a target that uses this manager gets, unless the
    /// manifest's `build-env` or the config env in effect sets the variable.
    pub env: &'static [(&'static str, &'static str)],
}

const UV: ManagerSpec = ManagerSpec {
    manager: Manager::Uv,
    name: "uv",
    files: &["pyproject.toml"],
    lock: &["uv.lock"],
    lock_format: Some(LockFormat::UvLock),
    setup: "command -v uv >/dev/null 2>&1 || { python3 -m venv /opt/kiln/uv && /opt/kiln/uv/bin/pip install --quiet --disable-pip-version-check uv && ln -sf /opt/kiln/uv/bin/uv /usr/local/bin/uv; }",
    refresh: Some("uv lock --upgrade && uv sync --frozen --no-dev"),
    install: Some("uv sync --locked --no-dev"),
    cache_dir: Some("/root/.cache/uv"),
    // uv's project environment.
    venv: Some(".venv"),
    env: &[
        // The cache is a cache mount, another file system: hardlinks from it cannot work.
        ("UV_LINK_MODE", "copy"),
        // The image's python3, never one downloaded by uv.
        ("UV_PYTHON_DOWNLOADS", "never"),
    ],
};

const PIP: ManagerSpec = ManagerSpec {
    manager: Manager::Pip,
    name: "pip",
    files: &["requirements.in"],
    lock: &["requirements.txt"],
    lock_format: Some(LockFormat::Requirements),
    setup: "test -x /opt/kiln/pip-tools/bin/pip-compile || { python3 -m venv /opt/kiln/pip-tools && /opt/kiln/pip-tools/bin/pip install --quiet --disable-pip-version-check pip-tools; }; test -x /opt/venv/bin/python || python3 -m venv /opt/venv",
    refresh: Some(
        "/opt/kiln/pip-tools/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --output-file {lock} {files} && /opt/venv/bin/pip install --disable-pip-version-check --require-hashes --no-deps -r {lock}",
    ),
    install: Some(
        "/opt/venv/bin/pip install --disable-pip-version-check --require-hashes --no-deps -r {lock}",
    ),
    cache_dir: Some("/root/.cache/pip"),
    venv: Some("/opt/venv"),
    env: &[("PIP_DISABLE_PIP_VERSION_CHECK", "1")],
};

const POETRY: ManagerSpec = ManagerSpec {
    manager: Manager::Poetry,
    name: "poetry",
    files: &["pyproject.toml"],
    lock: &["poetry.lock"],
    lock_format: Some(LockFormat::PoetryLock),
    setup: "command -v poetry >/dev/null 2>&1 || { python3 -m venv /opt/kiln/poetry && /opt/kiln/poetry/bin/pip install --quiet --disable-pip-version-check poetry && ln -sf /opt/kiln/poetry/bin/poetry /usr/local/bin/poetry; }",
    refresh: Some("poetry update --no-interaction && poetry install --no-interaction --no-root"),
    install: Some(
        "poetry check --lock --no-interaction && poetry install --no-interaction --no-root",
    ),
    cache_dir: Some("/root/.cache/pypoetry"),
    venv: Some(".venv"),
    // Poetry's default home for project venvs is under its cache dir, which kiln mounts as a
    // cache: the installed packages would never reach the image. So the venv goes into the
    // project (`<dir>/.venv`, as uv's does), and the venv path points away from the cache
    // mount so that a venv left there by another build is never picked up.
    env: &[
        ("POETRY_VIRTUALENVS_IN_PROJECT", "true"),
        ("POETRY_VIRTUALENVS_PATH", "/opt/kiln/poetry-venvs"),
    ],
};

const NPM: ManagerSpec = ManagerSpec {
    manager: Manager::Npm,
    name: "npm",
    files: &["package.json"],
    lock: &["package-lock.json"],
    lock_format: Some(LockFormat::PackageLockJson),
    setup: "command -v npm >/dev/null 2>&1",
    refresh: Some("npm update --no-audit --no-fund && npm install --no-audit --no-fund"),
    install: Some("npm ci --no-audit --no-fund"),
    cache_dir: Some("/root/.npm"),
    // `node_modules` is found from the package dir; there is no environment to activate.
    venv: None,
    env: &[("NPM_CONFIG_UPDATE_NOTIFIER", "false")],
};

/// The manifest says everything: files, lock and both commands.
const CUSTOM: ManagerSpec = ManagerSpec {
    manager: Manager::Custom,
    name: "custom",
    files: &[],
    lock: &[],
    lock_format: None,
    setup: "true",
    refresh: None,
    install: None,
    cache_dir: None,
    venv: None,
    env: &[],
};

/// Every manager, in the order messages list them.
pub const MANAGERS: &[ManagerSpec] = &[UV, PIP, POETRY, NPM, CUSTOM];

impl Manager {
    /// This manager's row of the table.
    pub fn spec(self) -> &'static ManagerSpec {
        match self {
            Manager::Uv => &UV,
            Manager::Pip => &PIP,
            Manager::Poetry => &POETRY,
            Manager::Npm => &NPM,
            Manager::Custom => &CUSTOM,
        }
    }

    /// The manager the manifest calls `name`.
    pub fn from_name(name: &str) -> Option<Manager> {
        MANAGERS.iter().find(|m| m.name == name).map(|m| m.manager)
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }
}

impl ManagerSpec {
    /// Whether the default commands take exactly one lock file (they name `{lock}`, as
    /// pip-compile's `--output-file` does): more than one needs the manifest's own `refresh`
    /// and `install`.
    pub fn one_lock(&self) -> bool {
        [self.refresh, self.install]
            .iter()
            .flatten()
            .any(|t| t.contains("{lock}"))
    }
}

impl Packages {
    /// How kiln-lock reads `lock` (one of `self.lock`): as the manager's lock format, whatever
    /// the file is named; for a manager without one (`custom`), as its name suggests.
    pub fn lock_format(&self, lock: &str) -> Option<LockFormat> {
        self.manager
            .spec()
            .lock_format
            .or_else(|| LockFormat::for_file(lock))
    }
}
