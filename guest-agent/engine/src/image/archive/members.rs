//! The members of a `docker load` tar: every regular file staged as a blob
//! (hashed on the way), symlinks kept as archive paths and resolved only
//! inside the archive, never on disk.
//!
//! Every `blobs/sha256/<name>` member, regular file or symlink, must have
//! a [`Digest`] as its name and content that hashes to it; a symlink is
//! followed through the archive's own members and the file it ends at is
//! what is checked.

use std::collections::HashMap;
use std::io::{self, Read};

use super::super::digest::Digest;
use super::super::store::Staging;
use super::super::{Error, unpack};

/// The archive directory holding blobs by digest.
const BLOBS: &str = "blobs/sha256/";
/// Most symlinks a lookup follows (archives rarely chain more than one).
const MAX_LINKS: usize = 16;

/// A regular file of the archive, staged as a blob.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub digest: Digest,
    pub size: u64,
}

/// The archive's members by cleaned path.
#[derive(Default)]
pub(super) struct Members {
    files: HashMap<String, Member>,
    symlinks: HashMap<String, String>,
}

impl Members {
    /// Whether a regular file is at exactly `path`.
    pub fn has_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// The regular file at `path`, following symlinks inside the archive.
    pub fn get(&self, path: &str) -> Result<&Member, Error> {
        let mut path = clean(path)
            .ok_or_else(|| Error::InvalidArchive(format!("path {path:?} escapes the archive")))?;
        for _ in 0..MAX_LINKS {
            if let Some(member) = self.files.get(&path) {
                return Ok(member);
            }
            let Some(target) = self.symlinks.get(&path) else {
                return Err(Error::InvalidArchive(format!(
                    "{path:?} is missing from the archive"
                )));
            };
            // Absolute targets are relative to the archive root.
            let base = match target.starts_with('/') {
                true => "",
                false => path.rsplit_once('/').map_or("", |(dir, _)| dir),
            };
            path = clean(&format!("{base}/{target}")).ok_or_else(|| {
                Error::InvalidArchive(format!("symlink {path:?} escapes the archive"))
            })?;
        }
        Err(Error::InvalidArchive(format!(
            "too many symlinks resolving {path:?} in the archive"
        )))
    }

    /// The blob `digest` (`blobs/sha256/<hex>`) that `field` names, checked
    /// against its content (and against `size` when the descriptor gives one).
    pub fn blob(&self, digest: &Digest, size: u64, field: &str) -> Result<&Member, Error> {
        let path = blob_path(digest);
        let member = self.get(&path)?;
        if member.digest != *digest {
            return Err(Error::DigestMismatch {
                what: format!("{field} ({path})"),
                expected: digest.to_string(),
                actual: member.digest.to_string(),
            });
        }
        if size != 0 && size != member.size {
            return Err(Error::InvalidArchive(format!(
                "{field} ({path}) gives size {size} but the blob has {} bytes",
                member.size
            )));
        }
        Ok(member)
    }

    /// Checks that every `blobs/sha256/<name>` symlink is named by a digest
    /// and ends, inside the archive, at a file with that content.
    fn verify_blob_symlinks(&self) -> Result<(), Error> {
        for path in self.symlinks.keys() {
            let Some(name) = path.strip_prefix(BLOBS) else {
                continue;
            };
            let named = named_digest(path, name)?;
            let member = self.get(path)?;
            if member.digest != named {
                return Err(Error::DigestMismatch {
                    what: format!("symlink {path}"),
                    expected: named.to_string(),
                    actual: member.digest.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// `blobs/sha256/<hex>`: where the blob `digest` lives in an OCI layout.
pub(super) fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS}{}", digest.hex())
}

fn named_digest(path: &str, name: &str) -> Result<Digest, Error> {
    Digest::from_hex(name).map_err(|source| Error::InvalidDigest {
        what: format!("archive member {path}"),
        source,
    })
}

/// `path` without `.`, `..` and empty components; `None` if `..` climbs
/// out of the archive.
pub(super) fn clean(path: &str) -> Option<String> {
    let comps = unpack::clean_path(path.as_bytes())?;
    let comps: Vec<String> = comps
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .collect();
    Some(comps.join("/"))
}

/// Streams the outer tar into staging and checks every blob's name.
pub(super) fn stage(staging: &mut Staging, reader: impl Read) -> Result<Members, Error> {
    let mut archive = tar::Archive::new(reader);
    let mut members = Members::default();
    let read_err = |what: &str| {
        let what = what.to_owned();
        move |source| Error::ReadArchive { what, source }
    };
    for entry in archive.entries().map_err(read_err("the tar header"))? {
        let entry = entry.map_err(read_err("a tar header"))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = clean(&raw)
            .ok_or_else(|| Error::InvalidArchive(format!("path {raw:?} escapes the archive")))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::InvalidArchive(format!("symlink {path:?} has no target")))?;
            let target = String::from_utf8_lossy(&target).into_owned();
            members.symlinks.insert(path, target);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let (digest, written) = staging.write_blob(entry, None).map_err(|e| match e {
            Error::ReadBlob { source, .. } => Error::ReadArchive {
                what: path.clone(),
                source,
            },
            other => other,
        })?;
        if written != size {
            return Err(Error::ReadArchive {
                what: path,
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        if let Some(name) = path.strip_prefix(BLOBS) {
            let named = named_digest(&path, name)?;
            if named != digest {
                return Err(Error::DigestMismatch {
                    what: path,
                    expected: named.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        members.files.insert(path, Member { digest, size });
    }
    members.verify_blob_symlinks()?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Members {
        Members {
            files: files
                .iter()
                .map(|(p, bytes)| {
                    let member = Member {
                        digest: Digest::of(bytes),
                        size: bytes.len() as u64,
                    };
                    ((*p).to_owned(), member)
                })
                .collect(),
            symlinks: symlinks
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn paths_escaping_the_archive_are_rejected() {
        let m = members(&[], &[("a/up", "../../etc/passwd")]);
        for path in ["../etc/passwd", "a/up"] {
            assert!(
                matches!(m.get(path), Err(Error::InvalidArchive(e)) if e.contains("escapes")),
                "{path}"
            );
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_archive_only() {
        let m = members(
            &[("real/layer.tar", b"x"), ("etc/passwd", b"archive's own")],
            &[
                ("l/layer.tar", "../real/layer.tar"),
                ("abs", "/etc/passwd"),
                ("loop", "loop"),
            ],
        );
        assert_eq!(m.get("l/layer.tar").unwrap().digest, Digest::of(b"x"));
        assert_eq!(
            m.get("abs").unwrap().digest,
            Digest::of(b"archive's own"),
            "an absolute target names the archive's root, not the host's"
        );
        let err = m.get("loop").unwrap_err().to_string();
        assert!(err.contains("too many symlinks"), "{err}");
    }

    #[test]
    fn blob_symlink_must_end_at_matching_content() {
        let good = Digest::of(b"good");
        let ok = members(&[("real", b"good")], &[(&blob_path(&good), "../../real")]);
        ok.verify_blob_symlinks().unwrap();
        assert_eq!(ok.blob(&good, 4, "test").unwrap().size, 4);

        let other = Digest::of(b"other");
        let bad = members(&[("real", b"good")], &[(&blob_path(&other), "../../real")]);
        let err = bad.verify_blob_symlinks().unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        let misnamed = members(&[("real", b"good")], &[("blobs/sha256/etc", "../../real")]);
        let err = misnamed.verify_blob_symlinks().unwrap_err().to_string();
        assert!(err.contains("blobs/sha256/etc"), "{err}");
    }

    #[test]
    fn blob_checks_size_when_given() {
        let digest = Digest::of(b"four");
        let m = members(&[(&blob_path(&digest), b"four")], &[]);
        m.blob(&digest, 0, "field").unwrap();
        let err = m.blob(&digest, 5, "field").unwrap_err().to_string();
        assert!(err.contains("size 5"), "{err}");
    }
}
