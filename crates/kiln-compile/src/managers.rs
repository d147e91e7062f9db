//! Package managers as data: the tool each needs, how it gets into the image when absent,
//! how it refreshes a lock and how it installs strictly from one. The compiler reads this table;
//! nothing else in kiln special-cases a manager.

use std::borrow::Cow;

use kiln_manifest::{Manager, Packages};

/// How one package manager is driven inside the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerSpec {
    pub manager: Manager,
    /// Shell command that makes the tool available when the image lacks it. It installs into
    /// its own venv under `/opt/kiln`, so PEP 668 ("externally managed") images are respected.
    pub setup: &'static str,
    /// Resolve, upgrade and write the lock file(s), then install from them. A template:
    /// `{files}` and `{lock}` stand for the target's `files` and `lock` (see
    /// [`ManagerSpec::refresh_command`]).
    pub refresh: &'static str,
    /// Install exactly what the lock says; fail when the lock does not match the declared files.
    /// A template, as `refresh` is.
    pub install: &'static str,
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
    setup: "command -v uv >/dev/null 2>&1 || { python3 -m venv /opt/kiln/uv && /opt/kiln/uv/bin/pip install --quiet --disable-pip-version-check uv && ln -sf /opt/kiln/uv/bin/uv /usr/local/bin/uv; }",
    refresh: "uv lock --upgrade && uv sync --frozen --no-dev",
    install: "uv sync --locked --no-dev",
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
    setup: "test -x /opt/kiln/pip-tools/bin/pip-compile || { python3 -m venv /opt/kiln/pip-tools && /opt/kiln/pip-tools/bin/pip install --quiet --disable-pip-version-check pip-tools; }; test -x /opt/venv/bin/python || python3 -m venv /opt/venv",
    refresh: "/opt/kiln/pip-tools/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --output-file {lock} {files} && /opt/venv/bin/pip install --disable-pip-version-check --require-hashes --no-deps -r {lock}",
    install: "/opt/venv/bin/pip install --disable-pip-version-check --require-hashes --no-deps -r {lock}",
    cache_dir: Some("/root/.cache/pip"),
    venv: Some("/opt/venv"),
    env: &[("PIP_DISABLE_PIP_VERSION_CHECK", "1")],
};

const POETRY: ManagerSpec = ManagerSpec {
    manager: Manager::Poetry,
    setup: "command -v poetry >/dev/null 2>&1 || { python3 -m venv /opt/kiln/poetry && /opt/kiln/poetry/bin/pip install --quiet --disable-pip-version-check poetry && ln -sf /opt/kiln/poetry/bin/poetry /usr/local/bin/poetry; }",
    refresh: "poetry update --no-interaction && poetry install --no-interaction --no-root",
    install: "poetry check --lock --no-interaction && poetry install --no-interaction --no-root",
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
    setup: "command -v npm >/dev/null 2>&1",
    refresh: "npm update --no-audit --no-fund && npm install --no-audit --no-fund",
    install: "npm ci --no-audit --no-fund",
    cache_dir: Some("/root/.npm"),
    // `node_modules` is found from the package dir; there is no environment to activate.
    venv: None,
    env: &[("NPM_CONFIG_UPDATE_NOTIFIER", "false")],
};

const CUSTOM: ManagerSpec = ManagerSpec {
    manager: Manager::Custom,
    setup: "true",
    refresh: "",
    install: "",
    cache_dir: None,
    venv: None,
    env: &[],
};

/// The spec for `manager`.
pub fn spec(manager: Manager) -> &'static ManagerSpec {
    match manager {
        Manager::Uv => &UV,
        Manager::Pip => &PIP,
        Manager::Poetry => &POETRY,
        Manager::Npm => &NPM,
        Manager::Custom => &CUSTOM,
    }
}

impl ManagerSpec {
    /// The refresh command for `packages` (its own `refresh`, else this manager's), with the
    /// package files and lock it configures.
    pub fn refresh_command<'a>(&self, packages: &'a Packages) -> Cow<'a, str> {
        match &packages.refresh {
            Some(custom) => Cow::Borrowed(custom),
            None => Cow::Owned(fill(self.refresh, packages)),
        }
    }

    /// The strict install command for `packages` (its own `install`, else this manager's).
    pub fn install_command<'a>(&self, packages: &'a Packages) -> Cow<'a, str> {
        match &packages.install {
            Some(custom) => Cow::Borrowed(custom),
            None => Cow::Owned(fill(self.install, packages)),
        }
    }
}

/// `template` with `{files}` replaced by the package files and `{lock}` by the lock files, each
/// one shell word (a name starting with `-` as `./NAME`, so no tool takes it for an option),
/// joined by spaces; in one pass, so a file name is never itself expanded. (The loader gives a
/// manager whose template names `{lock}` exactly one lock file.)
fn fill(template: &str, packages: &Packages) -> String {
    let words = |paths: &[String]| {
        paths
            .iter()
            .map(|p| match p.starts_with('-') {
                true => shell_word(&format!("./{p}")).into_owned(),
                false => shell_word(p).into_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{files}") {
            out.push_str(&words(&packages.files));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{lock}") {
            out.push_str(&words(&packages.lock));
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `s` as one `/bin/sh` word: as it is when it has no character the shell treats specially,
/// else in single quotes.
fn shell_word(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'.' | b'_' | b'-' | b'+' | b'@' | b'%' | b',' | b':' | b'='
                )
        });
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', "'\\''")))
    }
}
