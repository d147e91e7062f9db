//! `kiln pin`: resolve every base image (and image a target copies from) to its digest in the
//! registry — the multi-arch index and the platform's manifest — and record them in
//! `kiln.lock`; builds then use `reference@digest`, so a re-pushed tag changes nothing until
//! `kiln pin --update`. Resolution talks to the registry directly (`kiln-registry`), with
//! credentials from the Docker CLI config and plain HTTP for loopback registries and those in
//! `KILN_INSECURE_REGISTRIES` (comma-separated hosts). An image that only the Docker Engine
//! has (built or imported there, never pulled or pushed under that name) has no registry digest:
//! it is pinned by the engine's image id, and `check --locked` compares that with the engine.

use std::collections::BTreeMap;

use kiln_graph::PackagesMode;
use kiln_manifest::{Base, CopySource};
use kiln_reference::Reference;
use kiln_registry::{Credentials, Registry};

use crate::build::relative;
use crate::{AppError, LocalImage, Settings, load};

/// `kiln pin` options.
#[derive(Debug, Clone, Default)]
pub struct PinOptions {
    pub targets: Vec<String>,
    /// Resolve again even what `kiln.lock` already pins.
    pub update: bool,
}

/// Registry access as the user configured it (see [`crate::Resolved`]): credentials and
/// insecure hosts.
pub(crate) struct Access<'a> {
    config: &'a kiln_registry::DockerConfig,
    insecure: &'a [String],
}

impl Access<'_> {
    pub(crate) fn new(settings: &Settings) -> Result<Access<'_>, AppError> {
        let resolved = settings.resolved();
        Ok(Access {
            config: resolved.docker_config()?,
            insecure: resolved.insecure_registries(),
        })
    }

    /// The engine's `X-Registry-Auth` header for `reference`'s registry: base64url JSON
    /// credentials, or `{}` when there are none.
    pub(crate) fn auth_header(&self, reference: &Reference) -> Result<String, AppError> {
        use base64::Engine as _;
        let json = match self.credentials(reference)? {
            Some(c) => serde_json::json!({
                "username": c.username,
                "password": c.secret,
                "serveraddress": reference.domain(),
            }),
            None => serde_json::json!({}),
        };
        Ok(base64::engine::general_purpose::URL_SAFE.encode(json.to_string()))
    }

    fn credentials(&self, reference: &Reference) -> Result<Option<Credentials>, AppError> {
        self.config
            .credentials(reference.domain())
            .map_err(AppError::from)
    }

    /// A client for `reference`'s registry.
    pub(crate) fn registry(&self, reference: &Reference) -> Result<Registry, AppError> {
        Ok(Registry::new(
            reference,
            self.credentials(reference)?,
            self.insecure,
        ))
    }
}

/// Run `kiln pin`; returns what to print.
pub fn pin(settings: &Settings, options: &PinOptions) -> Result<String, AppError> {
    let loaded = load(settings, PackagesMode::Pinned)?;
    let selected = loaded.graph.select(&loaded.manifest, &options.targets)?;
    let mut wanted: BTreeMap<Reference, kiln_llb::Platform> = BTreeMap::new();
    for name in &selected {
        let target = &loaded.manifest.targets[name];
        let platform = &target.platform;
        let images = std::iter::once(match &target.from {
            Base::Image(r) => Some(r),
            Base::Target(_) => None,
        })
        .chain(target.copy.iter().map(|c| match &c.from {
            CopySource::Image(r) => Some(r),
            _ => None,
        }))
        .flatten();
        for reference in images {
            wanted.insert(reference.without_digest(), platform.clone());
        }
    }
    let access = Access::new(settings)?;
    let engine = crate::build::docker_api(settings)?;
    let mut lock = loaded.lock.clone();
    let mut out = String::new();
    for (reference, platform) in &wanted {
        let name = reference.to_string();
        let old = lock.base(&name).cloned().unwrap_or_default();
        if old.digest.is_some() && !options.update {
            out.push_str(&format!(
                "{name}: pinned {} (kept; --update resolves again)\n",
                old.digest.as_deref().unwrap_or_default()
            ));
            continue;
        }
        let local = engine
            .as_ref()
            .and_then(|api| api.image(&name).ok().flatten());
        if let Some(image) = local.as_ref().filter(|i| only_local(i, reference)) {
            match old.image_id.as_deref() {
                Some(id) if old.digest.is_none() && id == image.id => out.push_str(&format!(
                    "{name}: pinned by the engine's image id {id} (unchanged)\n"
                )),
                Some(id) if old.digest.is_none() && !options.update => {
                    out.push_str(&format!(
                        "{name}: pinned by the engine's image id {id} (kept; the engine now has {} under that name, --update takes it)\n",
                        image.id
                    ));
                    continue;
                }
                _ => out.push_str(&format!(
                    "{name}: pinned by the engine's image id {} (the image exists only in the local engine: built or imported there, no registry digest)\n",
                    image.id
                )),
            }
            lock.set_base(kiln_lock::Base {
                reference: name,
                digest: None,
                platform_digest: None,
                image_id: Some(image.id.clone()),
            });
            continue;
        }
        let registry = access.registry(reference)?;
        let resolved = crate::runtime::block_on(registry.resolve(
            reference,
            &platform.os,
            &platform.architecture,
            platform.variant.as_deref(),
        ))?
        .map_err(|source| AppError::Pin {
            name: name.clone(),
            local: match (&engine, &local) {
                (None, _) => LocalImage::NotAsked,
                (Some(_), None) => LocalImage::Missing,
                (Some(_), Some(_)) => LocalImage::FromRegistry,
            },
            source: Box::new(source),
        })?;
        let moved = old.digest.as_deref() != Some(resolved.digest.as_str());
        out.push_str(&match (&old.digest, moved) {
            (Some(before), true) => format!("{name}: {before} → {}", resolved.digest),
            (Some(_), false) => format!("{name}: {} (unchanged)", resolved.digest),
            (None, _) => format!("{name}: {}", resolved.digest),
        });
        if resolved.platform_digest != resolved.digest {
            out.push_str(&format!(
                " ({} manifest {})",
                platform, resolved.platform_digest
            ));
        }
        out.push('\n');
        lock.set_base(kiln_lock::Base {
            reference: name,
            digest: Some(resolved.digest),
            platform_digest: Some(resolved.platform_digest),
            // The image the engine has under a new digest is a different one.
            image_id: if moved { None } else { old.image_id },
        });
    }
    if lock != loaded.lock {
        // Merged into kiln.lock as it is now (a concurrent build may have written it), under
        // the same lock builds take.
        let _held = kiln_record::lock_kiln_lock(&kiln_record::Disk, &loaded.lock_path)?;
        let mut current = kiln_record::read_kiln_lock(&kiln_record::Disk, &loaded.lock_path)?;
        for reference in wanted.keys() {
            if let Some(base) = lock.base(&reference.to_string()) {
                current.set_base(base.clone());
            }
        }
        let lock = current;
        kiln_lock::write_atomic(&loaded.lock_path, lock.to_toml().as_bytes()).map_err(
            |source| AppError::Io {
                path: loaded.lock_path.clone(),
                action: "write",
                source,
            },
        )?;
        out.push_str(&format!(
            "wrote {}\n",
            relative(settings, &loaded.lock_path).display()
        ));
    }
    if wanted.is_empty() {
        out.push_str("nothing to pin: the selected targets use no image references\n");
    }
    Ok(out)
}

/// Whether the engine's `image` exists only there: no registry digest for `reference`'s
/// repository (it was built or imported under that name, not pulled or pushed).
pub(crate) fn only_local(image: &kiln_docker::ImageInfo, reference: &Reference) -> bool {
    let repository = reference.name();
    !image.repo_digests.iter().flatten().any(|d| {
        Reference::parse(d)
            .map(|r| r.name() == repository)
            .unwrap_or(false)
    })
}
