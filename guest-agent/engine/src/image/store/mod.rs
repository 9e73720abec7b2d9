//! The content-addressed image store.
//!
//! ```text
//! <root>/blobs/sha256/<hex>     configs, manifests and layer blobs as received, verified
//! <root>/layers/<hex>/          one unpacked layer, keyed by its full diff-id, shared by images
//! <root>/l/<short>              symlink to ../layers/<hex>: the overlayfs lowerdir name
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
//! lies below it. The short link name (12 hex characters, longer only when
//! two layers share a prefix) keeps overlayfs mount options (one page) small
//! enough for many layers; see `layers` for it and for migrating stores
//! whose `l/<12 hex>` entries were the layer directories themselves.
//!
//! Every path in the store is built from a [`Digest`] (64 hex characters,
//! one path component): blob, layer and record names can never leave their
//! directory. The store root and every directory below it are 0700, so
//! setuid files from layers are out of reach of unprivileged users.
//!
//! The code: `names` (resolving references, tags, listing), `staging`
//! (staged blobs and unpacked layers of one load or pull), `remove`
//! (`docker rmi`, prune, the orphan sweep on open), `layers` (layer
//! directories and their short links) and `compression`.

mod compression;
mod layers;
mod names;
mod remove;
mod staging;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use compression::{Compression, decompress, sniff};
pub use staging::Staging;

use super::digest::Digest;
use super::{Error, ImageConfigFile};

/// Mode of the store root and every directory in it: root only.
const DIR_MODE: u32 = 0o700;

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
    /// `id`, parsed.
    digest: Digest,
}

impl Image {
    /// The 12-hex short ID Docker prints.
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }

    /// The image ID as a [`Digest`] (what `id` spells).
    pub fn digest(&self) -> &Digest {
        &self.digest
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
    pub digest: Digest,
    pub size: u64,
}

/// One layer of an image as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The blob as received (compressed or not).
    pub blob: Descriptor,
    /// Unpacked size in bytes.
    pub size: u64,
}

/// What is persisted per image in `imagedb/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    id: Digest,
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
    tags: BTreeMap<String, Digest>,
    /// `busybox@sha256:<manifest>` -> `sha256:<id>`.
    digests: BTreeMap<String, Digest>,
}

struct Entry {
    record: ImageRecord,
    config: ImageConfigFile,
}

struct State {
    index: Index,
    images: BTreeMap<Digest, Entry>,
    /// diff-id -> name of its short link in `l/`.
    links: BTreeMap<Digest, String>,
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
    /// Digest of the staged config blob.
    pub id: Digest,
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
    /// Opens (creating if needed) the store at `root`, wiping leftover
    /// staging, making every store directory 0700 (older stores were 0755)
    /// and moving layers of older stores to their full-digest directories.
    pub fn open(root: &Path) -> Result<Self, Error> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp).map_err(Error::io("clean staging", &tmp))?;
        }
        for dir in [
            root.to_owned(),
            root.join("blobs"),
            root.join("blobs/sha256"),
            root.join("layers"),
            root.join("l"),
            root.join("imagedb"),
            tmp,
        ] {
            create_private_dir(&dir)?;
        }
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
                links: BTreeMap::new(),
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
        {
            let mut state = store.lock();
            state.images = images;
            store.open_layers(&mut state)?;
        }
        store.remove_orphans()?;
        Ok(store)
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

    /// Path of the blob with `digest`: `blobs/sha256/<hex>`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("imagedb").join(format!("{}.json", id.hex()))
    }

    fn read_config(&self, id: &Digest) -> Result<ImageConfigFile, Error> {
        let path = self.blob_path(id);
        let bytes = fs_err::read(&path).map_err(Error::io("read image config", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::CorruptStore { path, source })
    }

    /// The raw config bytes of image `id` (what its ID hashes).
    pub fn config_bytes(&self, id: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(id);
        fs_err::read(&path).map_err(Error::io("read image config", &path))
    }

    fn write_index(&self, index: &Index) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(index).expect("invariant: the index serializes");
        write_atomic(&self.root.join("repositories.json"), &bytes)
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
                    return Err(Error::MissingBlob {
                        digest: blob.to_string(),
                    });
                }
            }
            for layer in &image.layers {
                let dest = self.layer_dir(&layer.diff_id);
                if !dest.is_dir() {
                    match staging.layers.get(&layer.diff_id) {
                        Some((src, _)) if src.is_dir() => {
                            fs_err::rename(src, &dest).map_err(Error::io("store layer", &dest))?;
                        }
                        _ => {
                            return Err(Error::MissingLayer {
                                diff_id: layer.diff_id.to_string(),
                            });
                        }
                    }
                }
                self.link_layer(&mut state, &layer.diff_id)?;
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

/// Creates `dir` (and missing parents) and makes it 0700, also when it
/// already existed with a wider mode.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    fs_err::create_dir_all(dir).map_err(Error::io("create", dir))?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(Error::io("restrict permissions of", dir))
}

/// A random hex name for temp files and staging directories.
pub fn random_name() -> String {
    format!("{:016x}", rand::random::<u64>())
}
