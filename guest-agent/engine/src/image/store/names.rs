//! Resolving references to images, listing and tagging.

use std::collections::BTreeMap;

use super::super::digest::Digest;
use super::super::reference::{self, Reference};
use super::{Error, Image, ImageStore, State};

impl ImageStore {
    /// Resolves `reference` (name, name:tag, name@digest, full or short ID).
    pub fn get(&self, reference: &str) -> Result<Image, Error> {
        let state = self.lock();
        let id = resolve(&state, reference)?;
        Ok(self.image(&state, &id))
    }

    /// Every image in the store, newest first.
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        let state = self.lock();
        let mut images: Vec<Image> = state
            .images
            .keys()
            .map(|id| self.image(&state, id))
            .collect();
        images.sort_by(|a, b| b.loaded_at.cmp(&a.loaded_at).then_with(|| a.id.cmp(&b.id)));
        Ok(images)
    }

    fn image(&self, state: &State, id: &Digest) -> Image {
        let entry = &state.images[id];
        let names = |map: &BTreeMap<String, Digest>| -> Vec<String> {
            map.iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| k.clone())
                .collect()
        };
        Image {
            id: id.to_string(),
            digest: id.clone(),
            repo_tags: names(&state.index.tags),
            repo_digests: names(&state.index.digests),
            config: entry.config.clone(),
            layer_dirs: entry
                .record
                .layers
                .iter()
                .map(|l| self.layer_link(state, &l.diff_id))
                .collect(),
            layers: entry.record.layers.clone(),
            manifest: entry.record.manifest.clone(),
            size: entry.record.layers.iter().map(|l| l.size).sum(),
            loaded_at: entry.record.loaded_at,
            parent: entry.record.parent.clone(),
        }
    }

    /// Points `target` (`repo[:tag]`, tag defaults to `latest`) at the image
    /// `source` resolves to. Returns the image ID and the familiar tag.
    pub fn tag(&self, source: &str, target: &str) -> Result<(String, String), Error> {
        let parsed = Reference::parse(target).map_err(|source| Error::InvalidReference {
            reference: target.to_owned(),
            source,
        })?;
        if parsed.digest.is_some() || reference::is_full_hex_id(&parsed.familiar_name()) {
            return Err(Error::InvalidTarget {
                reference: target.to_owned(),
            });
        }
        let tag = parsed.familiar_tagged();
        let mut state = self.lock();
        let id = resolve(&state, source)?;
        let mut index = state.index.clone();
        index.tags.insert(tag.clone(), id.clone());
        self.write_index(&index)?;
        state.index = index;
        Ok((id.to_string(), tag))
    }

    /// Records `name` (`repo@sha256:...`) as a digest reference of image `id`.
    pub fn add_digest(&self, id: &Digest, name: &str) -> Result<(), Error> {
        let mut state = self.lock();
        if !state.images.contains_key(id) {
            return Err(Error::NotFound(id.to_string()));
        }
        let mut index = state.index.clone();
        index.digests.insert(name.to_owned(), id.clone());
        self.write_index(&index)?;
        state.index = index;
        Ok(())
    }
}

/// Whether `reference` named the image by ID rather than by a name.
pub(super) fn is_id_reference(state: &State, reference: &str, id: &Digest) -> bool {
    if reference.starts_with("sha256:") {
        return true;
    }
    let name = name_key(reference);
    if state.index.tags.contains_key(&name) || state.index.digests.contains_key(&name) {
        return false;
    }
    id.hex().starts_with(reference)
}

/// The index key a name reference maps to (`busybox` -> `busybox:latest`).
pub(super) fn name_key(reference: &str) -> String {
    match Reference::parse(reference) {
        Ok(r) => r.familiar_digested().unwrap_or_else(|| r.familiar_tagged()),
        Err(_) => reference.to_owned(),
    }
}

/// Finds the image ID `reference` names.
/// A full ID (`sha256:<hex>` or bare 64 hex) goes through the digest
/// parser; shorter hex is a prefix of one.
pub(super) fn resolve(state: &State, reference: &str) -> Result<Digest, Error> {
    let not_found = || Error::NotFound(reference.to_owned());
    let full = match reference.strip_prefix("sha256:") {
        Some(hex) if hex.len() < 64 => return by_prefix(state, hex).ok_or_else(not_found),
        Some(_) => Some(Digest::parse(reference)),
        None if reference::is_full_hex_id(reference) => Some(Digest::from_hex(reference)),
        None => None,
    };
    if let Some(id) = full {
        let id = id.map_err(|_| not_found())?;
        return state
            .images
            .contains_key(&id)
            .then_some(id)
            .ok_or_else(not_found);
    }
    if let Ok(parsed) = Reference::parse(reference) {
        let found = match parsed.familiar_digested() {
            Some(digested) => state.index.digests.get(&digested),
            None => state.index.tags.get(&parsed.familiar_tagged()),
        };
        if let Some(id) = found {
            return Ok(id.clone());
        }
    }
    by_prefix(state, reference).ok_or_else(not_found)
}

/// The one image whose hex ID starts with `prefix` (hex only, unambiguous).
fn by_prefix(state: &State, prefix: &str) -> Option<Digest> {
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut matches = state
        .images
        .keys()
        .filter(|id| id.hex().starts_with(prefix));
    let first = matches.next()?;
    matches.next().is_none().then(|| first.clone())
}
