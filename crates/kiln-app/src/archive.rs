//! `kiln build --output-image PATH`: each named target's image saved from the image store that
//! holds it (the Docker Engine kiln builds on, or the one `--load` loaded into) as a
//! `docker load`-able tarball, written atomically, for workflows that move images without a
//! registry (the seed's "save the image as sha256:*.tar").

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::{AppError, BuildOptions, Loaded, Settings};

pub use kiln_solve::Archive;

/// The file target `target` goes to: `dest` itself when one target is saved, else
/// `dest/TARGET.tar`.
pub fn path_for(dest: &Path, target: &str, several: bool) -> PathBuf {
    if several {
        dest.join(format!("{target}.tar"))
    } else {
        dest.to_path_buf()
    }
}

/// Save `image` (a name or id the engine knows) from `api` to `path`, replacing it atomically:
/// a failed or interrupted save leaves no half-written archive.
pub fn save(
    api: &kiln_docker::Api,
    target: &str,
    image: &str,
    path: &Path,
) -> Result<Archive, AppError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AppError::Io {
            path: dir.to_path_buf(),
            action: "create the directory for",
            source,
        })?;
    }
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0;
    let mut failed = None;
    let written = kiln_lock::write_atomic_with(path, |file| {
        let mut tee = Tee {
            file,
            hasher: &mut hasher,
        };
        match api.save(image, &mut tee) {
            Ok(n) => {
                bytes = n;
                tee.flush()
            }
            Err(e) => {
                let message = e.to_string();
                failed = Some(e);
                Err(std::io::Error::other(message))
            }
        }
    });
    if let Some(source) = failed {
        return Err(AppError::Save {
            target: target.to_string(),
            image: image.to_string(),
            path: path.to_path_buf(),
            source: Box::new(source),
        });
    }
    written.map_err(|source| AppError::Io {
        path: path.to_path_buf(),
        action: "write the image archive",
        source,
    })?;
    Ok(Archive {
        path: path.to_path_buf(),
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        bytes,
    })
}

/// Writes to the file and hashes what it writes.
struct Tee<'a> {
    file: &'a mut std::fs::File,
    hasher: &'a mut sha2::Sha256,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `--output-image`: which targets are saved, where, and from which image store.
pub(crate) struct Archives<'a> {
    dest: Option<&'a std::path::Path>,
    named: std::collections::BTreeSet<String>,
    store: Option<&'a kiln_docker::Api>,
}

impl<'a> Archives<'a> {
    /// Refuses, before any build, what cannot be saved: no image store to save from.
    pub(crate) fn new(
        settings: &Settings,
        loaded: &Loaded,
        options: &'a BuildOptions,
        store: Option<&'a kiln_docker::Api>,
    ) -> Result<Archives<'a>, AppError> {
        let Some(dest) = options.output_image.as_deref() else {
            return Ok(Archives {
                dest: None,
                named: Default::default(),
                store,
            });
        };
        if store.is_none() {
            return Err(AppError::Usage(format!(
                "--output-image {}: the builder keeps no image store kiln can save from",
                crate::build::relative(settings, dest).display()
            ))
            .with_hint("add --load to load the images into the Docker Engine first"));
        }
        let named = kiln_graph::Graph::named(&loaded.manifest, &options.targets)?;
        Ok(Archives {
            dest: Some(dest),
            named,
            store,
        })
    }

    /// Save `target`'s image when it is one of the named targets: by its name, so the archive
    /// loads under that tag (by its id when it has no name).
    pub(crate) fn save(
        &self,
        target: &str,
        image: Option<&String>,
        image_id: Option<&String>,
        out: &mut String,
    ) -> Result<Option<Archive>, AppError> {
        let (Some(dest), Some(store)) = (self.dest, self.store) else {
            return Ok(None);
        };
        if !self.named.contains(target) {
            return Ok(None);
        }
        let Some(id) = image.or(image_id) else {
            return Err(AppError::NoImageToSave {
                target: target.to_string(),
            });
        };
        let path = path_for(dest, target, self.named.len() > 1);
        let archive = save(store, target, id, &path)?;
        out.push_str(&format!(
            "{target}: saved {} ({}, {} bytes)\n",
            path.display(),
            archive.digest,
            archive.bytes
        ));
        Ok(Some(archive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_target_is_the_file_itself_several_go_into_a_directory() {
        assert_eq!(
            path_for(Path::new("out/app.tar"), "app", false),
            Path::new("out/app.tar")
        );
        assert_eq!(
            path_for(Path::new("out"), "app", true),
            Path::new("out/app.tar")
        );
    }
}
