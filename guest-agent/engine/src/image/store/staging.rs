//! Staging: blobs and unpacked layers of one load or pull, outside the
//! live store until [`ImageStore::commit`] moves them in.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::unpack;
use super::{Error, ImageStore, decompress, random_name};

impl ImageStore {
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
}

/// Staged blobs and layers of one load or pull; removed on drop.
pub struct Staging {
    pub(super) dir: PathBuf,
    /// digest -> staged file.
    pub(super) blobs: HashMap<String, PathBuf>,
    /// diff-id -> (staged dir, or empty if already in the store; unpacked size).
    pub(super) layers: HashMap<String, (PathBuf, u64)>,
    pub(super) next: u64,
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
