//! Remote build caches: each target's cache reference (`REPO:<target>`) and the credentials
//! to push it with.

use std::collections::BTreeMap;

use kiln_manifest::Manifest;
use kiln_reference::Reference;

use crate::{BuildOptions, Goal};

/// The remote caches of one build.
#[derive(Debug, Clone, Default)]
pub struct RemoteCache {
    /// Per target with a remote cache: its reference (`REPO:<target>`).
    pub refs: BTreeMap<String, String>,
    /// Per cache reference: the registry credentials to push it with (Docker Engine).
    pub auth: BTreeMap<String, String>,
}

/// Each selected target's remote cache reference (`--cache`, else its file's
/// `[defaults] cache`, tagged with the target's name; none for a refresh, which must resolve
/// again), and the credentials to push each with (`credentials`: the registry's
/// `Authorization` header for a reference, asked once per reference).
pub fn remote_cache<E>(
    manifest: &Manifest,
    selected: &[String],
    options: &BuildOptions,
    mut credentials: impl FnMut(&Reference) -> Result<String, E>,
) -> Result<RemoteCache, E> {
    let mut cache = RemoteCache::default();
    if options.goal == Goal::Refresh {
        return Ok(cache);
    }
    for name in selected {
        let Some(repository) = options
            .cache
            .as_ref()
            .or(manifest.targets[name].cache.as_ref())
        else {
            continue;
        };
        let reference = cache_reference(repository, name);
        cache
            .auth
            .insert(reference.to_string(), credentials(&reference)?);
        cache.refs.insert(name.clone(), reference.to_string());
    }
    Ok(cache)
}

/// `--cache REF`: a registry repository, without tag or digest (kiln tags it per target).
pub fn cache_repository(text: &str) -> Result<Reference, String> {
    match Reference::parse(text) {
        Ok(r) if r.tag().is_none() && r.digest().is_none() => Ok(r),
        Ok(_) => Err(format!(
            "`{text}` has a tag or digest; give a repository (kiln tags it per target), e.g. \
             registry.example.com/team/cache"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `REPO:<target>`: a target name as a tag (characters a tag cannot hold become `-`).
pub(crate) fn cache_reference(repository: &Reference, target: &str) -> Reference {
    let mut tag: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.replace_range(..1, "_");
    }
    Reference::parse(&format!("{}:{tag}", repository.name())).unwrap_or_else(|_| repository.clone())
}
