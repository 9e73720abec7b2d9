//! The content-addressed image store.
//!
//! ```text
//! <root>/blobs/sha256/<hex>     configs, manifests and layer blobs as received, verified
//! <root>/l/<12 hex of diff-id>  one unpacked layer (overlayfs lowerdir), shared by images
//! <root>/imagedb/<hex>.json     one record per image: layers, manifest, load time
//! <root>/repositories.json      the tag index: `repo:tag` / `repo@digest` -> image ID
//! <root>/tmp/<random>/          staging for loads and pulls; wiped on open
//! ```
//!
//! Writers stage everything (blobs, unpacked layers) under `tmp/`, outside
//! the live store, and [`ImageStore::commit`] moves it in under the store
//! lock with renames, writing the image record and then the tag index
//! atomically. A failed load or pull therefore leaves nothing behind but
//! its staging directory, which its [`Staging`] guard removes.
//!
//! Layer directories are keyed by diff-id, not chain-id: each holds only
//! its own layer's changes, so the same diff is the same directory whatever
//! lies below it. The short name keeps overlayfs mount options (one page)
//! small enough for many layers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::reference::{self, Reference};
use super::{Error, ImageConfigFile, unpack};

/// Length of the hex prefix naming an unpacked layer directory.
const LAYER_DIR_NAME_LEN: usize = 12;

/// A resolved image.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the config bytes.
    pub id: String,
    /// Familiar `repo:tag` names, sorted.
    pub repo_tags: Vec<String>,
    /// Familiar `repo@sha256:<manifest digest>` names, sorted.
    pub repo_digests: Vec<String>,
    pub config: ImageConfigFile,
    /// Unpacked layer directories, lowest first, ready to be overlayfs lowerdirs.
    pub layer_dirs: Vec<PathBuf>,
    /// The layers as stored, lowest first.
    pub layers: Vec<LayerRecord>,
    /// The manifest this image was loaded or pulled with, if any.
    pub manifest: Option<Descriptor>,
    /// Unpacked size of all layers in bytes.
    pub size: u64,
    /// When the image entered this store (seconds since the epoch).
    pub loaded_at: i64,
    /// The image this one was built or committed on (`docker build`'s
    /// intermediate images; hidden from `docker images` while they have
    /// children).
    pub parent: Option<String>,
}

impl Image {
    /// The 12-hex short ID Docker prints.
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }
}

/// The 12-hex short form of `sha256:<hex>` (or of bare hex).
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// A content descriptor (OCI `descriptor` subset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// One layer of an image as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// The blob as received (compressed or not).
    pub blob: Descriptor,
    /// Unpacked size in bytes.
    pub size: u64,
}

/// What is persisted per image in `imagedb/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    id: String,
    layers: Vec<LayerRecord>,
    #[serde(default)]
    manifest: Option<Descriptor>,
    loaded_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
}

/// The tag index, persisted as `repositories.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Index {
    /// `busybox:latest` -> `sha256:<id>`.
    tags: BTreeMap<String, String>,
    /// `busybox@sha256:<manifest>` -> `sha256:<id>`.
    digests: BTreeMap<String, String>,
}

struct Entry {
    record: ImageRecord,
    config: ImageConfigFile,
}

struct State {
    index: Index,
    images: BTreeMap<String, Entry>,
}

/// One line of a delete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteItem {
    /// `name` no longer points at image `id`.
    Untagged { name: String, id: String },
    /// Image `id` is gone.
    Deleted(String),
}

/// Whether a container uses an image: `Some((container id, running))`.
pub type InUse<'a> = &'a dyn Fn(&str) -> Option<(String, bool)>;

/// An image ready to be committed: config and layers already staged.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// `sha256:<hex>` of `config_bytes` (the staged config blob).
    pub id: String,
    pub layers: Vec<LayerRecord>,
    pub manifest: Option<Descriptor>,
    /// Familiar `repo:tag` names to point at this image.
    pub tags: Vec<String>,
    /// Familiar `repo@digest` names to point at this image.
    pub digests: Vec<String>,
}

/// The image store under `<engine root>/images`.
pub struct ImageStore {
    root: PathBuf,
    state: Mutex<State>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, wiping leftover staging.
    pub fn open(root: &Path) -> Result<Self, Error> {
        for dir in [
            root.join("blobs/sha256"),
            root.join("l"),
            root.join("imagedb"),
        ] {
            fs_err::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        }
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp).map_err(Error::io("clean staging", &tmp))?;
        }
        fs_err::create_dir_all(&tmp).map_err(Error::io("create", &tmp))?;
        let index_path = root.join("repositories.json");
        let index: Index = match fs_err::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::CorruptStore {
                path: index_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(Error::io("read", &index_path)(e)),
        };
        let store = Self {
            root: root.to_owned(),
            state: Mutex::new(State {
                index,
                images: BTreeMap::new(),
            }),
        };
        let imagedb = root.join("imagedb");
        let mut images = BTreeMap::new();
        for dirent in fs_err::read_dir(&imagedb).map_err(Error::io("list", &imagedb))? {
            let path = dirent.map_err(Error::io("list", &imagedb))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = fs_err::read(&path).map_err(Error::io("read", &path))?;
            let record: ImageRecord =
                serde_json::from_slice(&bytes).map_err(|source| Error::CorruptStore {
                    path: path.clone(),
                    source,
                })?;
            let config = store.read_config(&record.id)?;
            images.insert(record.id.clone(), Entry { record, config });
        }
        store.lock().images = images;
        store.remove_orphans()?;
        Ok(store)
    }

    /// Removes blobs and unpacked layers no image record references: what a
    /// crash between moving content in and writing the record leaves.
    fn remove_orphans(&self) -> Result<(), Error> {
        let state = self.lock();
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for entry in state.images.values() {
            blobs.insert(entry.record.id.clone());
            blobs.extend(entry.record.manifest.iter().map(|m| m.digest.clone()));
            for layer in &entry.record.layers {
                blobs.insert(layer.blob.digest.clone());
                layers.insert(self.layer_dir(&layer.diff_id));
            }
        }
        let blob_dir = self.root.join("blobs/sha256");
        for dirent in fs_err::read_dir(&blob_dir).map_err(Error::io("list", &blob_dir))? {
            let path = dirent.map_err(Error::io("list", &blob_dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !blobs.contains(&format!("sha256:{name}")) {
                tracing::info!(blob = %name, "removing unreferenced blob");
                fs_err::remove_file(&path).map_err(Error::io("remove orphaned blob", &path))?;
            }
        }
        let layer_dir = self.root.join("l");
        for dirent in fs_err::read_dir(&layer_dir).map_err(Error::io("list", &layer_dir))? {
            let path = dirent.map_err(Error::io("list", &layer_dir))?.path();
            if !layers.contains(&path) {
                tracing::info!(layer = %path.display(), "removing unreferenced layer");
                fs_err::remove_dir_all(&path).map_err(Error::io("remove orphaned layer", &path))?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob with `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// The unpacked directory of the layer with `diff_id`.
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root
            .join("l")
            .join(&hex[..hex.len().min(LAYER_DIR_NAME_LEN)])
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.root
            .join("imagedb")
            .join(format!("{}.json", id.strip_prefix("sha256:").unwrap_or(id)))
    }

    fn read_config(&self, id: &str) -> Result<ImageConfigFile, Error> {
        let path = self.blob_path(id);
        let bytes = fs_err::read(&path).map_err(Error::io("read image config", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::CorruptStore { path, source })
    }

    /// The raw config bytes of image `id` (what its ID hashes).
    pub fn config_bytes(&self, id: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(id);
        fs_err::read(&path).map_err(Error::io("read image config", &path))
    }

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

    fn image(&self, state: &State, id: &str) -> Image {
        let entry = &state.images[id];
        let names = |map: &BTreeMap<String, String>| -> Vec<String> {
            map.iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| k.clone())
                .collect()
        };
        Image {
            id: id.to_owned(),
            repo_tags: names(&state.index.tags),
            repo_digests: names(&state.index.digests),
            config: entry.config.clone(),
            layer_dirs: entry
                .record
                .layers
                .iter()
                .map(|l| self.layer_dir(&l.diff_id))
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
        Ok((id, tag))
    }

    /// Records `name` (`repo@sha256:...`) as a digest reference of image `id`.
    pub fn add_digest(&self, id: &str, name: &str) -> Result<(), Error> {
        let mut state = self.lock();
        if !state.images.contains_key(id) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let mut index = state.index.clone();
        index.digests.insert(name.to_owned(), id.to_owned());
        self.write_index(&index)?;
        state.index = index;
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
        let user = in_use(&id);
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
                    reference: short_id(&id).to_owned(),
                    forcible: true,
                    detail: "image is referenced in multiple repositories".to_owned(),
                });
            }
            for name in tags.iter().chain(&digests) {
                index.tags.remove(name);
                index.digests.remove(name);
                items.push(DeleteItem::Untagged {
                    name: name.clone(),
                    id: id.clone(),
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
                        short_id(&id)
                    ),
                });
            }
            index.tags.remove(&name);
            index.digests.remove(&name);
            items.push(DeleteItem::Untagged {
                name: name.clone(),
                id: id.clone(),
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
                            id: id.clone(),
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
            items.push(DeleteItem::Deleted(id));
        }
        Ok(items)
    }

    /// Deletes unnamed images (all unused ones with `all`) that no container
    /// uses. Returns the deleted IDs and the bytes reclaimed.
    pub fn prune(&self, all: bool, in_use: InUse<'_>) -> Result<(Vec<DeleteItem>, u64), Error> {
        let mut state = self.lock();
        let named: BTreeSet<String> = state
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
        let candidates: Vec<String> = state
            .images
            .keys()
            .filter(|id| {
                (all || (!named.contains(*id) && !parents.contains(*id))) && in_use(id).is_none()
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
                    id: id.clone(),
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
            items.push(DeleteItem::Deleted(id));
        }
        Ok((items, reclaimed))
    }

    /// Drops the record of `id`, then every blob and layer no image still uses.
    fn remove_image(&self, state: &mut State, id: &str) -> Result<(), Error> {
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
            let dir = self.layer_dir(&layer.diff_id);
            // Rename first so a crash never leaves a half-deleted live layer.
            let doomed = self.root.join("tmp").join(format!("rm-{}", random_name()));
            if fs_err::rename(&dir, &doomed).is_ok() {
                fs_err::remove_dir_all(&doomed).map_err(Error::io("remove layer", &doomed))?;
            }
        }
        Ok(())
    }

    fn write_index(&self, index: &Index) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(index).expect("invariant: the index serializes");
        write_atomic(&self.root.join("repositories.json"), &bytes)
    }

    /// A fresh staging area for a load or pull.
    pub fn stage(&self) -> Result<Staging, Error> {
        let dir = self.root.join("tmp").join(random_name());
        for sub in ["blobs", "layers"] {
            let path = dir.join(sub);
            fs_err::create_dir_all(&path).map_err(Error::io("create staging", &path))?;
        }
        Ok(Staging {
            dir,
            blobs: HashMap::new(),
            layers: HashMap::new(),
            next: 0,
        })
    }

    /// Whether the blob `digest` is already stored.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether the layer `diff_id` is already unpacked (and its unpacked size).
    fn known_layer(&self, diff_id: &str) -> Option<u64> {
        let state = self.lock();
        let size = state
            .images
            .values()
            .flat_map(|e| &e.record.layers)
            .find(|l| l.diff_id == diff_id)
            .map(|l| l.size);
        size.filter(|_| self.layer_dir(diff_id).is_dir())
    }

    /// Decompresses the staged (or stored) blob `blob`, checks that its
    /// uncompressed sha256 is `diff_id`, and unpacks it into staging unless
    /// that layer is already in the store. Returns the unpacked size.
    pub fn stage_layer(
        &self,
        staging: &mut Staging,
        blob: &str,
        diff_id: &str,
    ) -> Result<u64, Error> {
        if let Some(size) = staging.layers.get(diff_id).map(|(_, s)| *s) {
            return Ok(size);
        }
        let path = staging
            .blob(blob)
            .map_or_else(|| self.blob_path(blob), Path::to_path_buf);
        let file = fs_err::File::open(&path).map_err(Error::io("open layer blob", &path))?;
        let decompressed =
            decompress(BufReader::new(file)).map_err(|source| Error::Decompress {
                layer: blob.to_owned(),
                source,
            })?;
        let mut hashing = HashingReader::new(decompressed);
        let known = self.known_layer(diff_id);
        let size = if let Some(size) = known {
            io::copy(&mut hashing, &mut io::sink()).map_err(|source| Error::Decompress {
                layer: blob.to_owned(),
                source,
            })?;
            size
        } else {
            staging.next += 1;
            let dest = staging.dir.join("layers").join(staging.next.to_string());
            fs_err::create_dir(&dest).map_err(Error::io("create layer staging", &dest))?;
            let stats =
                unpack::apply_layer(&mut hashing, &dest).map_err(|source| Error::ApplyLayer {
                    layer: diff_id.to_owned(),
                    source,
                })?;
            io::copy(&mut hashing, &mut io::sink()).map_err(|source| Error::Decompress {
                layer: blob.to_owned(),
                source,
            })?;
            staging
                .layers
                .insert(diff_id.to_owned(), (dest, stats.size));
            stats.size
        };
        let (actual, _) = hashing.finish();
        if actual != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("layer {blob}"),
                expected: diff_id.to_owned(),
                actual,
            });
        }
        if known.is_some() {
            staging
                .layers
                .insert(diff_id.to_owned(), (PathBuf::new(), size));
        }
        Ok(size)
    }

    /// Moves the staged blobs and layers `images` need into the store, writes
    /// their records and points their tags at them. Returns, per image, the
    /// tags it took over from other images.
    pub fn commit(&self, staging: &Staging, images: &[NewImage]) -> Result<(), Error> {
        self.commit_with_parent(staging, images, None)
    }

    /// [`ImageStore::commit`] of images built on `parent` (commit, build).
    pub fn commit_with_parent(
        &self,
        staging: &Staging,
        images: &[NewImage],
        parent: Option<&str>,
    ) -> Result<(), Error> {
        let tmp = self.root.join("tmp");
        let tmp_fd = fs_err::File::open(&tmp).map_err(Error::io("open", &tmp))?;
        rustix::fs::syncfs(&tmp_fd).map_err(|e| Error::io("sync staged images", &tmp)(e.into()))?;
        let mut state = self.lock();
        let mut index = state.index.clone();
        for image in images {
            let mut blobs = vec![image.id.clone()];
            blobs.extend(image.manifest.iter().map(|m| m.digest.clone()));
            blobs.extend(image.layers.iter().map(|l| l.blob.digest.clone()));
            for blob in blobs {
                let dest = self.blob_path(&blob);
                if let Some(src) = staging.blob(&blob)
                    && !dest.exists()
                {
                    fs_err::rename(src, &dest).map_err(Error::io("store blob", &dest))?;
                }
                if !dest.is_file() {
                    return Err(Error::MissingBlob { digest: blob });
                }
            }
            for layer in &image.layers {
                let dest = self.layer_dir(&layer.diff_id);
                if dest.is_dir() {
                    continue;
                }
                match staging.layers.get(&layer.diff_id) {
                    Some((src, _)) if src.is_dir() => {
                        fs_err::rename(src, &dest).map_err(Error::io("store layer", &dest))?;
                    }
                    _ => {
                        return Err(Error::MissingLayer {
                            diff_id: layer.diff_id.clone(),
                        });
                    }
                }
            }
            let loaded_at = state
                .images
                .get(&image.id)
                .map_or_else(|| chrono::Utc::now().timestamp(), |e| e.record.loaded_at);
            let record = ImageRecord {
                id: image.id.clone(),
                layers: image.layers.clone(),
                manifest: image.manifest.clone().or_else(|| {
                    state
                        .images
                        .get(&image.id)
                        .and_then(|e| e.record.manifest.clone())
                }),
                loaded_at,
                parent: parent.map(str::to_owned).or_else(|| {
                    state
                        .images
                        .get(&image.id)
                        .and_then(|e| e.record.parent.clone())
                }),
            };
            let bytes =
                serde_json::to_vec_pretty(&record).expect("invariant: image records serialize");
            write_atomic(&self.record_path(&image.id), &bytes)?;
            let config = self.read_config(&image.id)?;
            state
                .images
                .insert(image.id.clone(), Entry { record, config });
            for tag in &image.tags {
                index.tags.insert(tag.clone(), image.id.clone());
            }
            for digest in &image.digests {
                index.digests.insert(digest.clone(), image.id.clone());
            }
        }
        self.write_index(&index)?;
        state.index = index;
        Ok(())
    }
}

/// Whether `reference` named the image by ID rather than by a name.
fn is_id_reference(state: &State, reference: &str, id: &str) -> bool {
    if reference.starts_with("sha256:") {
        return true;
    }
    let name = name_key(reference);
    if state.index.tags.contains_key(&name) || state.index.digests.contains_key(&name) {
        return false;
    }
    id.strip_prefix("sha256:")
        .is_some_and(|hex| hex.starts_with(reference))
}

/// The index key a name reference maps to (`busybox` -> `busybox:latest`).
fn name_key(reference: &str) -> String {
    match Reference::parse(reference) {
        Ok(r) => r.familiar_digested().unwrap_or_else(|| r.familiar_tagged()),
        Err(_) => reference.to_owned(),
    }
}

/// Finds the image ID `reference` names.
fn resolve(state: &State, reference: &str) -> Result<String, Error> {
    let not_found = || Error::NotFound(reference.to_owned());
    if let Some(hex) = reference.strip_prefix("sha256:") {
        return by_prefix(state, hex).ok_or_else(not_found);
    }
    if reference::is_full_hex_id(reference) {
        let id = format!("sha256:{reference}");
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
fn by_prefix(state: &State, prefix: &str) -> Option<String> {
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut matches = state.images.keys().filter(|id| {
        id.strip_prefix("sha256:")
            .is_some_and(|h| h.starts_with(prefix))
    });
    let first = matches.next()?;
    matches.next().is_none().then(|| first.clone())
}

/// Staged blobs and layers of one load or pull; removed on drop.
pub struct Staging {
    dir: PathBuf,
    /// digest -> staged file.
    blobs: HashMap<String, PathBuf>,
    /// diff-id -> (staged dir, or empty if already in the store; unpacked size).
    layers: HashMap<String, (PathBuf, u64)>,
    next: u64,
}

impl Staging {
    /// The staging directory (scratch space for the caller too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The staged file of blob `digest`, if staged.
    pub fn blob(&self, digest: &str) -> Option<&Path> {
        self.blobs.get(digest).map(PathBuf::as_path)
    }

    /// Copies `reader` into a staged blob, hashing it. With `expected`,
    /// a different digest is an error. Returns digest and size.
    pub fn write_blob(
        &mut self,
        reader: impl Read,
        expected: Option<&str>,
    ) -> Result<(String, u64), Error> {
        self.next += 1;
        let path = self.dir.join("blobs").join(self.next.to_string());
        let mut file =
            fs_err::File::create(&path).map_err(Error::io("create staged blob", &path))?;
        let mut hashing = HashingReader::new(reader);
        io::copy(&mut hashing, &mut file).map_err(|source| Error::ReadBlob {
            what: expected.unwrap_or("blob").to_owned(),
            source,
        })?;
        file.sync_all()
            .map_err(Error::io("sync staged blob", &path))?;
        let (digest, size) = hashing.finish();
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Error::DigestMismatch {
                what: "blob".to_owned(),
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        self.blobs.entry(digest.clone()).or_insert(path);
        Ok((digest, size))
    }

    /// Registers an already staged file as blob `digest` (the caller hashed it).
    pub fn adopt_blob(&mut self, digest: String, path: PathBuf) {
        self.blobs.entry(digest).or_insert(path);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "could not remove image staging");
        }
    }
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:<hex>` of everything read, and its length.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Layer compression, detected from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Sniffs the compression of a blob from its magic number.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `reader` in the decompressor its magic number calls for.
pub fn decompress<'a>(
    mut reader: impl BufRead + Send + 'a,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let head = reader.fill_buf()?;
    Ok(match sniff(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(reader).map_err(io::Error::other)?)
        }
    })
}

/// Writes `bytes` to `path` via a synced temp file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .expect("invariant: store files live in a directory");
    let tmp = dir.join(format!(".{}.tmp", random_name()));
    let result = (|| {
        let mut file = fs_err::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs_err::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io("write", path))
}

/// A random hex name for temp files and staging directories.
pub fn random_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with one image whose config is `config` and which has no layers.
    fn store_with(config: &str, tags: &[&str]) -> (tempfile::TempDir, ImageStore, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let id = add(&store, config, tags);
        (dir, store, id)
    }

    fn add(store: &ImageStore, config: &str, tags: &[&str]) -> String {
        let mut staging = store.stage().unwrap();
        let (id, _) = staging.write_blob(config.as_bytes(), None).unwrap();
        let image = NewImage {
            id: id.clone(),
            layers: Vec::new(),
            manifest: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            digests: Vec::new(),
        };
        store.commit(&staging, &[image]).unwrap();
        id
    }

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn get_resolves_names_ids_and_prefixes() {
        let (_dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
        let hex = id.strip_prefix("sha256:").unwrap();
        for reference in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            &id,
            hex,
            &hex[..6],
        ] {
            assert_eq!(store.get(reference).unwrap().id, id, "{reference}");
        }
        let err = store.get("busybox:nope").unwrap_err();
        assert_eq!(err.to_string(), "No such image: busybox:nope");
    }

    #[test]
    fn store_reopens_with_tags_and_records() {
        let (dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
        drop(store);
        let store = ImageStore::open(dir.path()).unwrap();
        let image = store.get("busybox").unwrap();
        assert_eq!(
            (image.id, image.repo_tags),
            (id, vec!["busybox:latest".to_owned()])
        );
    }

    #[test]
    fn rmi_by_name_untags_until_the_last_name_then_deletes() {
        let (_dir, store, id) = store_with(CONFIG, &["busybox:latest", "busybox:other"]);
        let none = |_: &str| None;
        assert_eq!(
            store.delete("busybox:other", false, &none).unwrap(),
            vec![DeleteItem::Untagged {
                name: "busybox:other".into(),
                id: id.clone()
            }]
        );
        assert_eq!(
            store.delete("busybox", false, &none).unwrap(),
            vec![
                DeleteItem::Untagged {
                    name: "busybox:latest".into(),
                    id: id.clone()
                },
                DeleteItem::Deleted(id.clone())
            ]
        );
        assert!(store.list().unwrap().is_empty());
        assert!(!store.blob_path(&id).exists());
    }

    #[test]
    fn rmi_refuses_image_of_running_container_even_forced() {
        let (_dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
        let running = |_: &str| Some(("c0ffee".repeat(10), true));
        let err = store.delete(&id, true, &running).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
        assert!(
            err.to_string()
                .contains("image is being used by running container c0ffeec0ffee"),
            "{err}"
        );
        let stopped = |_: &str| Some(("c0ffee".repeat(10), false));
        assert_eq!(
            store.delete(&id, false, &stopped).unwrap_err().kind(),
            crate::ErrorKind::Conflict
        );
        assert_eq!(
            store.delete("busybox", false, &stopped).unwrap_err().kind(),
            crate::ErrorKind::Conflict
        );
    }

    #[test]
    fn rmi_by_id_with_multiple_repositories_needs_force() {
        let (_dir, store, id) = store_with(CONFIG, &["busybox:latest", "other:latest"]);
        let none = |_: &str| None;
        assert_eq!(
            store.delete(&id, false, &none).unwrap_err().kind(),
            crate::ErrorKind::Conflict
        );
        let items = store.delete(&id, true, &none).unwrap();
        assert_eq!(items.last(), Some(&DeleteItem::Deleted(id)));
    }

    #[test]
    fn tag_moves_name_and_leaves_old_image_dangling() {
        let (_dir, store, first) = store_with(CONFIG, &["busybox:latest"]);
        let second = add(&store, &CONFIG.replace("amd64", "arm64"), &[]);
        store.tag(&second, "busybox").unwrap();
        assert_eq!(store.get("busybox").unwrap().id, second);
        assert!(store.get(&first).unwrap().repo_tags.is_empty());
        let (deleted, _) = store.prune(false, &|_: &str| None).unwrap();
        assert_eq!(deleted, vec![DeleteItem::Deleted(first)]);
    }

    #[test]
    fn ambiguous_or_unknown_prefix_is_not_found() {
        let (_dir, store, _id) = store_with(CONFIG, &[]);
        assert_eq!(
            store.get("zz").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(
            store.get("").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }

    #[test]
    fn write_blob_rejects_wrong_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let mut staging = store.stage().unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = staging.write_blob(&b"abc"[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
    }

    #[test]
    fn open_removes_unreferenced_blobs_and_layers() {
        let (dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
        drop(store);
        let orphan_blob = dir.path().join("blobs/sha256").join("ab".repeat(32));
        let orphan_layer = dir.path().join("l/abababababab");
        std::fs::write(&orphan_blob, b"x").unwrap();
        std::fs::create_dir_all(orphan_layer.join("bin")).unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        assert!(!orphan_blob.exists() && !orphan_layer.exists());
        assert!(store.blob_path(&id).is_file());
    }

    #[test]
    fn staging_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let staging = store.stage().unwrap();
        let path = staging.dir().to_owned();
        assert!(path.is_dir());
        drop(staging);
        assert!(!path.exists());
    }

    #[test]
    fn decompress_handles_gzip_zstd_and_plain() {
        let data = b"layer bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let zst = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for encoded in [gz.finish().unwrap(), zst, data.clone()] {
            let mut out = Vec::new();
            decompress(&encoded[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn sniff_detects_compression() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"ustar"), Compression::None);
    }
}
