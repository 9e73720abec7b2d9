//! Removing images: `docker rmi`, prune, and the orphan sweep on open.

use std::collections::BTreeSet;
use std::io;

use super::super::digest::Digest;
use super::super::reference::Reference;
use super::names::{is_id_reference, name_key, resolve};
use super::{DeleteItem, Error, ImageStore, InUse, State, short_id};

impl ImageStore {
    /// Removes blobs and unpacked layers no image record references: what a
    /// crash between moving content in and writing the record leaves.
    /// Anything in `blobs/sha256/` or `layers/` not named by a digest goes
    /// too (short links are swept by `open_layers`).
    pub(super) fn remove_orphans(&self) -> Result<(), Error> {
        let state = self.lock();
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for entry in state.images.values() {
            blobs.insert(entry.record.id.clone());
            blobs.extend(entry.record.manifest.iter().map(|m| m.digest.clone()));
            for layer in &entry.record.layers {
                blobs.insert(layer.blob.digest.clone());
                layers.insert(layer.diff_id.clone());
            }
        }
        for (sub, referenced) in [("blobs/sha256", &blobs), ("layers", &layers)] {
            let dir = self.root.join(sub);
            for dirent in fs_err::read_dir(&dir).map_err(Error::io("list", &dir))? {
                let path = dirent.map_err(Error::io("list", &dir))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy());
                let known = name
                    .and_then(|n| Digest::from_hex(&n).ok())
                    .is_some_and(|d| referenced.contains(&d));
                if known {
                    continue;
                }
                tracing::info!(path = %path.display(), "removing unreferenced image store entry");
                let removed = match path.symlink_metadata() {
                    Ok(meta) if meta.is_dir() => fs_err::remove_dir_all(&path),
                    _ => fs_err::remove_file(&path),
                };
                removed.map_err(Error::io("remove orphaned", &path))?;
            }
        }
        Ok(())
    }

    /// Removes a name or an image, with Docker's untag-vs-delete rules.
    pub fn delete(
        &self,
        reference: &str,
        force: bool,
        in_use: InUse<'_>,
    ) -> Result<Vec<DeleteItem>, Error> {
        let mut state = self.lock();
        let id = resolve(&state, reference)?;
        let user = in_use(id.as_str());
        let by_id = is_id_reference(&state, reference, &id);
        let tags: Vec<String> = state
            .index
            .tags
            .iter()
            .filter(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
            .collect();
        let digests: Vec<String> = state
            .index
            .digests
            .iter()
            .filter(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
            .collect();
        let mut index = state.index.clone();
        let mut items = Vec::new();
        if by_id {
            if let Some((container, running)) = &user {
                if *running {
                    return Err(Error::InUse {
                        reference: reference.to_owned(),
                        forcible: false,
                        detail: format!(
                            "image is being used by running container {}",
                            short_id(container)
                        ),
                    });
                }
                if !force {
                    return Err(Error::InUse {
                        reference: reference.to_owned(),
                        forcible: true,
                        detail: format!(
                            "image is being used by stopped container {}",
                            short_id(container)
                        ),
                    });
                }
            }
            let repos: BTreeSet<String> = tags
                .iter()
                .chain(&digests)
                .filter_map(|name| Reference::parse(name).ok().map(|r| r.familiar_name()))
                .collect();
            if repos.len() > 1 && !force {
                return Err(Error::InUse {
                    reference: id.short().to_owned(),
                    forcible: true,
                    detail: "image is referenced in multiple repositories".to_owned(),
                });
            }
            for name in tags.iter().chain(&digests) {
                index.tags.remove(name);
                index.digests.remove(name);
                items.push(DeleteItem::Untagged {
                    name: name.clone(),
                    id: id.to_string(),
                });
            }
        } else {
            let name = name_key(reference);
            let remaining = tags.len() + digests.len();
            if remaining <= 1
                && let Some((container, _)) = &user
                && !force
            {
                return Err(Error::InUse {
                    reference: reference.to_owned(),
                    forcible: true,
                    detail: format!(
                        "container {} is using its referenced image {}",
                        short_id(container),
                        id.short()
                    ),
                });
            }
            index.tags.remove(&name);
            index.digests.remove(&name);
            items.push(DeleteItem::Untagged {
                name: name.clone(),
                id: id.to_string(),
            });
            // Like Docker: once a repository's last tag is gone, its digest
            // references go with it.
            let repo = Reference::parse(&name)
                .map(|r| r.familiar_name())
                .unwrap_or_default();
            let repo_has_tags = index.tags.iter().any(|(k, v)| {
                *v == id && Reference::parse(k).is_ok_and(|r| r.familiar_name() == repo)
            });
            if !repo_has_tags {
                for digest in &digests {
                    if Reference::parse(digest).is_ok_and(|r| r.familiar_name() == repo)
                        && *digest != name
                    {
                        index.digests.remove(digest);
                        items.push(DeleteItem::Untagged {
                            name: digest.clone(),
                            id: id.to_string(),
                        });
                    }
                }
            }
        }
        let still_named = index
            .tags
            .values()
            .chain(index.digests.values())
            .any(|v| *v == id);
        self.write_index(&index)?;
        state.index = index;
        if !still_named && user.is_none() {
            self.remove_image(&mut state, &id)?;
            items.push(DeleteItem::Deleted(id.to_string()));
        }
        Ok(items)
    }

    /// Deletes unnamed images (all unused ones with `all`) that no container
    /// uses. Returns the deleted IDs and the bytes reclaimed.
    pub fn prune(&self, all: bool, in_use: InUse<'_>) -> Result<(Vec<DeleteItem>, u64), Error> {
        let mut state = self.lock();
        let named: BTreeSet<Digest> = state
            .index
            .tags
            .values()
            .chain(state.index.digests.values())
            .cloned()
            .collect();
        // Like Docker: without `all`, an untagged image with children is an
        // intermediate (build cache) image, not a dangling one.
        let parents: BTreeSet<String> = state
            .images
            .values()
            .filter_map(|e| e.record.parent.clone())
            .collect();
        let candidates: Vec<Digest> = state
            .images
            .keys()
            .filter(|id| {
                (all || (!named.contains(*id) && !parents.contains(id.as_str())))
                    && in_use(id.as_str()).is_none()
            })
            .cloned()
            .collect();
        let mut items = Vec::new();
        let mut reclaimed = 0;
        let mut index = state.index.clone();
        for id in &candidates {
            for (name, _) in index
                .tags
                .iter()
                .chain(&index.digests)
                .filter(|(_, v)| *v == id)
            {
                items.push(DeleteItem::Untagged {
                    name: name.clone(),
                    id: id.to_string(),
                });
            }
            index.tags.retain(|_, v| v != id);
            index.digests.retain(|_, v| v != id);
        }
        self.write_index(&index)?;
        state.index = index;
        for id in candidates {
            reclaimed += state.images[&id]
                .record
                .layers
                .iter()
                .map(|l| l.size)
                .sum::<u64>();
            self.remove_image(&mut state, &id)?;
            items.push(DeleteItem::Deleted(id.to_string()));
        }
        Ok((items, reclaimed))
    }

    /// Drops the record of `id`, then every blob and layer no image still uses.
    fn remove_image(&self, state: &mut State, id: &Digest) -> Result<(), Error> {
        let path = self.record_path(id);
        fs_err::remove_file(&path).map_err(Error::io("remove image record", &path))?;
        let Some(entry) = state.images.remove(id) else {
            return Ok(());
        };
        let mut blobs_used = BTreeSet::new();
        let mut layers_used = BTreeSet::new();
        for other in state.images.values() {
            blobs_used.insert(other.record.id.clone());
            blobs_used.extend(other.record.manifest.iter().map(|m| m.digest.clone()));
            for layer in &other.record.layers {
                blobs_used.insert(layer.blob.digest.clone());
                layers_used.insert(layer.diff_id.clone());
            }
        }
        let mut blobs = vec![entry.record.id.clone()];
        blobs.extend(entry.record.manifest.iter().map(|m| m.digest.clone()));
        blobs.extend(entry.record.layers.iter().map(|l| l.blob.digest.clone()));
        for blob in blobs.into_iter().filter(|b| !blobs_used.contains(b)) {
            let path = self.blob_path(&blob);
            match fs_err::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io("remove blob", &path)(e));
                }
                _ => {}
            }
        }
        for layer in entry
            .record
            .layers
            .iter()
            .filter(|l| !layers_used.contains(&l.diff_id))
        {
            self.remove_layer(state, &layer.diff_id)?;
        }
        Ok(())
    }
}
