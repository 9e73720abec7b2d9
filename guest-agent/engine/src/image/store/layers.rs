//! Unpacked layers and their short names.
//!
//! A layer lives in `layers/<64 hex of its diff-id>/`: the full digest is the
//! key, so two layers can never share a directory. Overlayfs takes its
//! lowerdirs in one page of mount options, so images name their layers by
//! a short symlink, `l/<name>` -> `../layers/<hex>`, where `<name>` is the
//! first 12 hex characters of the diff-id, or more of them when another
//! layer already holds that prefix. A link keeps its name for the layer's
//! life (containers record the paths they were created with).
//!
//! Stores written before the full-digest keying held each layer directly in
//! `l/<12 hex>`. Opening such a store moves every one of those directories to
//! `layers/<hex>` of the layer whose diff-id it prefixes and leaves a link
//! with the old name in its place, so existing containers keep their paths.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::super::digest::Digest;
use super::{Error, ImageStore, State, random_name};

/// Hex characters of a diff-id a link name starts with.
const SHORT_LEN: usize = 12;
/// What a link's target starts with: `l/` and `layers/` are siblings.
const LINK_TARGET_PREFIX: &str = "../layers/";

impl ImageStore {
    /// The unpacked directory of the layer `diff_id`: `layers/<hex>`.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The short path (`l/<name>`, a symlink to [`ImageStore::layer_dir`])
    /// by which images hand layer `diff_id` to overlayfs.
    pub(super) fn layer_link(&self, state: &State, diff_id: &Digest) -> PathBuf {
        match state.links.get(diff_id) {
            Some(name) => self.root.join("l").join(name),
            None => self.layer_dir(diff_id),
        }
    }

    /// Gives layer `diff_id` (already in `layers/`) a short link unless it
    /// has one: the shortest free prefix of its hex, 12 characters or more.
    pub(super) fn link_layer(&self, state: &mut State, diff_id: &Digest) -> Result<(), Error> {
        if state.links.contains_key(diff_id) {
            return Ok(());
        }
        let links = self.root.join("l");
        let taken: BTreeSet<&str> = state.links.values().map(String::as_str).collect();
        let hex = diff_id.hex();
        let name = (SHORT_LEN..=hex.len())
            .map(|n| &hex[..n])
            .find(|n| !taken.contains(n) && links.join(n).symlink_metadata().is_err())
            .ok_or_else(|| {
                Error::io("link layer", links.join(hex))(io::ErrorKind::AlreadyExists.into())
            })?
            .to_owned();
        let link = links.join(&name);
        std::os::unix::fs::symlink(format!("{LINK_TARGET_PREFIX}{hex}"), &link)
            .map_err(Error::io("link layer", &link))?;
        state.links.insert(diff_id.clone(), name);
        Ok(())
    }

    /// Removes layer `diff_id`: its link, then its directory (renamed out
    /// of `layers/` first so a crash never leaves a half-deleted live layer).
    pub(super) fn remove_layer(&self, state: &mut State, diff_id: &Digest) -> Result<(), Error> {
        if let Some(name) = state.links.remove(diff_id) {
            let link = self.root.join("l").join(name);
            match fs_err::remove_file(&link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io("remove layer link", &link)(e));
                }
                _ => {}
            }
        }
        let dir = self.layer_dir(diff_id);
        let doomed = self.root.join("tmp").join(format!("rm-{}", random_name()));
        match fs_err::rename(&dir, &doomed) {
            Ok(()) => fs_err::remove_dir_all(&doomed).map_err(Error::io("remove layer", &doomed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove layer", &dir)(e)),
        }
    }

    /// Reads `l/` on open: keeps links to referenced layers, migrates
    /// directories of older stores (see the module docs), removes anything
    /// else, then links every referenced layer that has no link yet.
    pub(super) fn open_layers(&self, state: &mut State) -> Result<(), Error> {
        // Referenced diff-ids, with when their first image was stored: in an
        // old store, the first image to store a 12-hex prefix owns its dir.
        let mut referenced: BTreeMap<Digest, i64> = BTreeMap::new();
        for entry in state.images.values() {
            for layer in &entry.record.layers {
                let first = referenced
                    .entry(layer.diff_id.clone())
                    .or_insert(entry.record.loaded_at);
                *first = (*first).min(entry.record.loaded_at);
            }
        }
        let links = self.root.join("l");
        for dirent in fs_err::read_dir(&links).map_err(Error::io("list", &links))? {
            let path = dirent.map_err(Error::io("list", &links))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let meta = fs_err::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            if meta.is_symlink() {
                let target = fs_err::read_link(&path).map_err(Error::io("read link", &path))?;
                let layer = target
                    .to_str()
                    .and_then(|t| t.strip_prefix(LINK_TARGET_PREFIX))
                    .and_then(|hex| Digest::from_hex(hex).ok())
                    .filter(|d| referenced.contains_key(d));
                match layer {
                    // A second link to one layer stays too (a container may
                    // have recorded either); images use the better name.
                    Some(layer) if self.layer_dir(&layer).is_dir() => {
                        let rank = |n: &str| (!layer.hex().starts_with(n), n.len(), n.to_owned());
                        let better = state
                            .links
                            .get(&layer)
                            .is_none_or(|kept| rank(&name) < rank(kept));
                        if better {
                            state.links.insert(layer, name);
                        }
                    }
                    _ => {
                        tracing::info!(link = %path.display(), "removing unreferenced layer link");
                        fs_err::remove_file(&path).map_err(Error::io("remove", &path))?;
                    }
                }
            } else if meta.is_dir() {
                self.migrate_layer_dir(state, &referenced, &path, name)?;
            } else {
                fs_err::remove_file(&path).map_err(Error::io("remove", &path))?;
            }
        }
        for diff_id in referenced.keys() {
            if self.layer_dir(diff_id).is_dir() {
                self.link_layer(state, diff_id)?;
            }
        }
        Ok(())
    }

    /// Moves `l/<name>`, a layer directory of an older store, to
    /// `layers/<hex>` of the referenced layer it belongs to, leaving a link
    /// of the same name; removes it if no image references it.
    fn migrate_layer_dir(
        &self,
        state: &mut State,
        referenced: &BTreeMap<Digest, i64>,
        path: &Path,
        name: String,
    ) -> Result<(), Error> {
        let mut owners: Vec<(&i64, &Digest)> = referenced
            .iter()
            .filter(|(d, _)| name.len() == SHORT_LEN && d.hex().starts_with(&name))
            .filter(|(d, _)| !self.layer_dir(d).exists())
            .map(|(d, first)| (first, d))
            .collect();
        owners.sort();
        let Some((_, owner)) = owners.first() else {
            tracing::info!(layer = %path.display(), "removing unreferenced layer");
            return fs_err::remove_dir_all(path).map_err(Error::io("remove orphaned layer", path));
        };
        let dest = self.layer_dir(owner);
        fs_err::rename(path, &dest).map_err(Error::io("migrate layer", path))?;
        std::os::unix::fs::symlink(format!("{LINK_TARGET_PREFIX}{}", owner.hex()), path)
            .map_err(Error::io("link layer", path))?;
        tracing::info!(layer = %owner, from = %path.display(), "moved layer to its full-digest directory");
        for (_, lost) in &owners[1..] {
            tracing::warn!(
                layer = %lost,
                "this layer shared a 12-character directory with {owner} in an older store and \
                 was never stored; remove and load or pull its images again"
            );
        }
        state.links.insert((*owner).clone(), name);
        Ok(())
    }
}
