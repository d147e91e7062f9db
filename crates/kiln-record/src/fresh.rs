//! Whether a target must be solved, given what `kiln.lock` recorded of it and what an image
//! store (the engine) or a registry says now. Asking them is the caller's.

use kiln_lock::KilnLock;
use kiln_manifest::Base;
use kiln_reference::Reference;

use crate::Inputs;

/// An image store (a Docker Engine's), as the up-to-date decision asks it.
pub trait ImageStore {
    /// The id of the image the store has under `reference` (a name, or an image id), if any;
    /// a store that does not answer has none.
    fn image_id(&self, reference: &str) -> Option<String>;

    /// The id of the image a base `reference` names now. Unless the caller knows better (a
    /// pool of engines: the first that has the base, as another may have pulled it from its
    /// registry into no image store), this store's.
    fn base_image_id(&self, reference: &str) -> Option<String> {
        self.image_id(reference)
    }
}

/// Whether a target must be solved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    /// Its inputs are what `kiln.lock` recorded and the store has its image under its name.
    UpToDate,
    /// Its inputs are what `kiln.lock` recorded and the store still has the recorded image,
    /// but not under the name the target now resolves to: tag `id` as `image`.
    Rename { image: String, id: String },
    /// It must be solved, and why.
    Stale(Stale),
}

/// Why a target must be solved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// No image store can vouch for its image (no engine builds or loads it).
    NoStore,
    /// `kiln.lock` has no record of it (for this profile), or it has no inputs.
    NotRecorded,
    /// A base image it rests on is not pinned in `kiln.lock`.
    Unpinned,
    /// Its inputs are not what `kiln.lock` recorded.
    InputsChanged,
    /// Its base is pinned by an image id the store no longer has under the base's name.
    BaseMoved { base: String },
    /// It has no image name (or one with a digest), or `kiln.lock` recorded no image id.
    NoImage,
    /// The store has not the recorded image (under any name).
    NotInStore,
    /// The registry does not serve the recorded pushed digest under the tag (or recorded none).
    NotInRegistry,
}

/// Whether `target` is up to date with `recorded` (its record in `kiln.lock` for the profile)
/// given its inputs `now` and what `store` has: the inputs are what was recorded and every
/// base pinned, a base pinned by image id is still that image in the store, and the store has
/// the recorded image id under the name the target resolves to now (after `--set`,
/// environment and profile) — or under another name only: [`Fresh::Rename`].
pub fn freshness(
    target: &kiln_manifest::Target,
    recorded: Option<&kiln_lock::Target>,
    now: Option<&Inputs>,
    lock: &KilnLock,
    store: &dyn ImageStore,
) -> Fresh {
    let (Some(recorded), Some(now)) = (recorded, now) else {
        return Fresh::Stale(Stale::NotRecorded);
    };
    if !now.pinned {
        return Fresh::Stale(Stale::Unpinned);
    }
    if recorded.inputs != now.hash {
        return Fresh::Stale(Stale::InputsChanged);
    }
    // Every local base still the image that was pinned.
    if let Base::Image(reference) = &target.from {
        let name = reference.without_digest().to_string();
        if let Some(pinned) = lock.base(&name).and_then(|b| b.image_id.as_deref()) {
            if store.base_image_id(&reference.to_string()).as_deref() != Some(pinned) {
                return Fresh::Stale(Stale::BaseMoved { base: name });
            }
        }
    }
    let (Some(image), Some(id)) = (named(target), &recorded.image_id) else {
        return Fresh::Stale(Stale::NoImage);
    };
    let image = image.to_string();
    if store.image_id(&image).as_ref() == Some(id) && recorded.image.as_ref() == Some(&image) {
        return Fresh::UpToDate;
    }
    if store.image_id(id).as_ref() == Some(id) {
        Fresh::Rename {
            image,
            id: id.clone(),
        }
    } else {
        Fresh::Stale(Stale::NotInStore)
    }
}

/// With `--push`: what to ask the registry about `target` — the tag it resolves to now and
/// the pushed digest `kiln.lock` recorded — when its inputs are what was recorded, every
/// base pinned and its name the recorded one; else why it is stale without asking. It is up
/// to date when the registry serves that digest for the tag.
pub fn registry_question<'a>(
    target: &'a kiln_manifest::Target,
    recorded: Option<&'a kiln_lock::Target>,
    now: Option<&Inputs>,
) -> Result<(&'a Reference, &'a str), Stale> {
    let (Some(recorded), Some(now)) = (recorded, now) else {
        return Err(Stale::NotRecorded);
    };
    let (Some(image), Some(digest)) = (named(target), &recorded.digest) else {
        return Err(Stale::NotInRegistry);
    };
    if !now.pinned {
        return Err(Stale::Unpinned);
    }
    if recorded.inputs != now.hash {
        return Err(Stale::InputsChanged);
    }
    if recorded.image.as_deref() != Some(image.to_string().as_str()) {
        return Err(Stale::NotInRegistry);
    }
    Ok((image, digest))
}

/// The name the target resolves to now, unless it names a digest (nothing to tag).
fn named(target: &kiln_manifest::Target) -> Option<&Reference> {
    target.image.as_ref().filter(|i| i.digest().is_none())
}
