//! Staging: blobs and unpacked layers of one load or pull, outside the
//! live store until [`ImageStore::commit`] moves them in.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::super::digest::{Digest, HashingReader};
use super::super::unpack;
use super::{Error, ImageStore, create_private_dir, decompress, random_name};

impl ImageStore {
    /// A fresh staging area for a load or pull.
    pub fn stage(&self) -> Result<Staging, Error> {
        let dir = self.root.join("tmp").join(random_name());
        for sub in ["", "blobs", "layers"] {
            create_private_dir(&dir.join(sub))?;
        }
        Ok(Staging {
            dir,
            blobs: HashMap::new(),
            layers: HashMap::new(),
            next: 0,
        })
    }

    /// Whether the blob `digest` is already stored.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether the layer `diff_id` is already unpacked (and its unpacked size).
    fn known_layer(&self, diff_id: &Digest) -> Option<u64> {
        let state = self.lock();
        let size = state
            .images
            .values()
            .flat_map(|e| &e.record.layers)
            .find(|l| l.diff_id == *diff_id)
            .map(|l| l.size);
        size.filter(|_| self.layer_dir(diff_id).is_dir())
    }

    /// Decompresses the staged (or stored) blob `blob`, checks that its
    /// uncompressed sha256 is `diff_id`, and unpacks it into staging unless
    /// that layer is already in the store. Returns the unpacked size.
    pub fn stage_layer(
        &self,
        staging: &mut Staging,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<u64, Error> {
        if let Some(size) = staging.layers.get(diff_id).map(|(_, s)| *s) {
            return Ok(size);
        }
        let path = staging
            .blob(blob)
            .map_or_else(|| self.blob_path(blob), Path::to_path_buf);
        let file = fs_err::File::open(&path).map_err(Error::io("open layer blob", &path))?;
        let decompress_err = |source| Error::Decompress {
            layer: blob.to_string(),
            source,
        };
        let decompressed = decompress(BufReader::new(file)).map_err(decompress_err)?;
        let mut hashing = HashingReader::new(decompressed);
        let (dest, size) = match self.known_layer(diff_id) {
            Some(size) => {
                io::copy(&mut hashing, &mut io::sink()).map_err(decompress_err)?;
                (PathBuf::new(), size)
            }
            None => {
                staging.next += 1;
                let dest = staging.dir.join("layers").join(staging.next.to_string());
                fs_err::create_dir(&dest).map_err(Error::io("create layer staging", &dest))?;
                let stats = unpack::apply_layer(&mut hashing, &dest).map_err(|source| {
                    Error::ApplyLayer {
                        layer: diff_id.to_string(),
                        source,
                    }
                })?;
                io::copy(&mut hashing, &mut io::sink()).map_err(decompress_err)?;
                (dest, stats.size)
            }
        };
        let (actual, _) = hashing.finish();
        if actual != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("layer {blob}"),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        staging.layers.insert(diff_id.clone(), (dest, size));
        Ok(size)
    }
}

/// Staged blobs and layers of one load or pull; removed on drop.
pub struct Staging {
    pub(super) dir: PathBuf,
    /// digest -> staged file.
    pub(super) blobs: HashMap<Digest, PathBuf>,
    /// diff-id -> (staged dir, or empty if already in the store; unpacked size).
    pub(super) layers: HashMap<Digest, (PathBuf, u64)>,
    pub(super) next: u64,
}

impl Staging {
    /// The staging directory (scratch space for the caller too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The staged file of blob `digest`, if staged.
    pub fn blob(&self, digest: &Digest) -> Option<&Path> {
        self.blobs.get(digest).map(PathBuf::as_path)
    }

    /// Copies `reader` into a staged blob, hashing it. With `expected`,
    /// a different digest is an error. Returns digest and size.
    pub fn write_blob(
        &mut self,
        reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), Error> {
        self.next += 1;
        let path = self.dir.join("blobs").join(self.next.to_string());
        let mut file =
            fs_err::File::create(&path).map_err(Error::io("create staged blob", &path))?;
        let mut hashing = HashingReader::new(reader);
        io::copy(&mut hashing, &mut file).map_err(|source| Error::ReadBlob {
            what: expected.map_or_else(|| "blob".to_owned(), Digest::to_string),
            source,
        })?;
        file.sync_all()
            .map_err(Error::io("sync staged blob", &path))?;
        let (digest, size) = hashing.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                what: "blob".to_owned(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        self.blobs.entry(digest.clone()).or_insert(path);
        Ok((digest, size))
    }

    /// Registers an already staged file as blob `digest` (the caller hashed it).
    pub fn adopt_blob(&mut self, digest: Digest, path: PathBuf) {
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
