//! New images from upper directories and tars (what `docker commit`,
//! `docker import` and the builder publish), plus the two read-only views
//! behind `docker export` and `docker diff`. The container side of those
//! commands is `container::commit`; this module knows nothing of containers.
//!
//! A container's changes live in its overlayfs upper directory, in overlay
//! format: a deleted path is a character device 0:0, a directory whose
//! lower content is hidden carries `trusted.overlay.opaque=y`. Committing
//! turns that directory into an OCI layer tar, the inverse of
//! [`unpack`](super::unpack):
//!
//! * char device 0:0 `<name>` -> empty file `.wh.<name>`;
//! * opaque directory `<dir>` -> `<dir>/` plus empty file `<dir>/.wh..wh..opq`.
//!
//! Layers are stored uncompressed (blob digest = diff-id). The tar is
//! written into a store [`Staging`](super::store::Staging) area, unpacked
//! there by [`ImageStore::stage_layer`] and made visible, together with the
//! new config, by one [`ImageStore::commit`]: a failure leaves no trace.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest as _, Sha256};

use super::archive::{MEDIA_OCI_LAYER, host_architecture};
use super::digest::Digest;
use super::reference::Reference;
use super::store::{Descriptor, Image, LayerRecord, NewImage};
use super::unpack::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};
use super::{ContainerConfig, Error, History, ImageConfigFile, ImageStore, RootFs};
use crate::fsutil::inroot::read_link_at;
use crate::fsutil::tree;

/// Where the layer of a new image comes from.
pub enum LayerSource<'a> {
    /// An overlayfs upper directory (a container's changes).
    Upper(&'a Path),
    /// A layer tar (possibly gzip or zstd compressed).
    Tar(Box<dyn Read + Send + 'a>),
    /// No new layer: only the config changes (`empty_layer` history).
    Empty,
}

/// What [`create_image`] builds.
pub struct ImageSpec<'a> {
    /// The image the new one extends; `None` starts from nothing.
    pub parent: Option<&'a Image>,
    pub layer: LayerSource<'a>,
    /// The new image's container config (`config` of the config file).
    pub config: ContainerConfig,
    pub history: History,
    pub author: Option<String>,
    /// Familiar `repo:tag` names to point at the new image.
    pub tags: Vec<String>,
}

/// Creates an image: the parent's layers plus (optionally) one new layer,
/// with `spec.config`. Atomic through the store's staging. Returns the ID.
pub fn create_image(store: &ImageStore, spec: ImageSpec<'_>) -> Result<String, Error> {
    let mut staging = store.stage()?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut file = match spec.parent {
        Some(parent) => parent.config.clone(),
        None => ImageConfigFile {
            architecture: host_architecture().to_owned(),
            os: "linux".to_owned(),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: Vec::new(),
            },
            ..ImageConfigFile::default()
        },
    };
    let mut layers = spec.parent.map(|p| p.layers.clone()).unwrap_or_default();
    let empty_layer = matches!(spec.layer, LayerSource::Empty);
    let new_layer = match spec.layer {
        LayerSource::Empty => None,
        LayerSource::Upper(upper) => {
            let path = staging.dir().join("layer.tar");
            let out = fs_err::File::create(&path).map_err(Error::io("create", &path))?;
            let mut hashing = HashingWriter::new(io::BufWriter::new(out));
            write_upper_tar(upper, &mut hashing).map_err(Error::io("archive", upper))?;
            let (digest, size, writer) = hashing.finish();
            writer
                .into_inner()
                .map_err(|e| Error::io("write", &path)(e.into_error()))?
                .sync_all()
                .map_err(Error::io("sync", &path))?;
            staging.adopt_blob(digest.clone(), path);
            Some((digest, size))
        }
        LayerSource::Tar(reader) => {
            let reader =
                super::store::decompress(io::BufReader::new(reader)).map_err(|source| {
                    Error::ReadArchive {
                        what: "the layer tar".to_owned(),
                        source,
                    }
                })?;
            Some(staging.write_blob(reader, None)?)
        }
    };
    if let Some((digest, blob_size)) = new_layer {
        let size = store.stage_layer(&mut staging, &digest, &digest)?;
        file.rootfs.diff_ids.push(digest.clone());
        layers.push(LayerRecord {
            diff_id: digest.clone(),
            blob: Descriptor {
                media_type: MEDIA_OCI_LAYER.to_owned(),
                digest,
                size: blob_size,
            },
            size,
        });
    }
    if file.rootfs.kind.is_empty() {
        "layers".clone_into(&mut file.rootfs.kind);
    }
    file.created = Some(now.clone());
    if spec.author.is_some() {
        file.author = spec.author;
    }
    file.config = spec.config;
    file.history.push(History {
        created: Some(now),
        empty_layer,
        ..spec.history
    });
    let bytes = serde_json::to_vec(&file).expect("invariant: image configs serialize");
    let (id, _) = staging.write_blob(bytes.as_slice(), None)?;
    let mut tags = Vec::new();
    for tag in spec.tags {
        let parsed = Reference::parse(&tag).map_err(|source| Error::InvalidReference {
            reference: tag.clone(),
            source,
        })?;
        if parsed.digest.is_some() {
            return Err(Error::InvalidTarget { reference: tag });
        }
        tags.push(parsed.familiar_tagged());
    }
    store.commit_with_parent(
        &staging,
        &[NewImage {
            id: id.clone(),
            layers,
            manifest: None,
            tags,
            digests: Vec::new(),
        }],
        spec.parent.map(|p| p.id.as_str()),
    )?;
    Ok(id.to_string())
}

/// A writer that hashes (sha256) and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hasher(self.hasher), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `meta` is an overlayfs whiteout (character device 0:0).
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Files the engine bind-mounts over in every container: when the image
/// lacks them, the runtime leaves empty mount points in the upper dir.
/// Docker keeps these in a hidden init layer; here they are skipped.
const MOUNT_STUBS: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Whether `rel` in the upper dir is only a mount point the engine made.
fn is_mount_stub(rel: &Path, meta: &Metadata) -> bool {
    meta.is_file() && meta.len() == 0 && MOUNT_STUBS.iter().any(|s| rel == Path::new(s))
}

/// Whether directory `path` is marked opaque.
fn read_opaque(path: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OVERLAY_OPAQUE_XATTR, &mut value), Ok(n) if value[..n] == *b"y")
}

/// Whether the open directory `dir` (readable descriptor) is opaque.
fn read_opaque_fd(dir: &OwnedFd) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::fgetxattr(dir, OVERLAY_OPAQUE_XATTR, &mut value), Ok(n) if value[..n] == *b"y")
}

/// A readable descriptor of the upper directory (the engine's own path;
/// below it, the walk is descriptor-relative and follows no symlink: a
/// running container writing into it can only change what is listed).
fn open_upper(upper: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Children of the readable directory `dir`, sorted by name (tars are
/// deterministic).
fn sorted_children(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    tree::sorted_names(tree::open_dir(dir)?)
}

/// A tar header for `meta` (mode, owner, mtime, type; size for files).
fn header_for(meta: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header
}

/// An empty regular file entry (whiteout markers).
fn marker_header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(0);
    header.set_mtime(0);
    header
}

/// The OCI whiteout entry for a deleted `rel`: `dir/.wh.<name>`.
fn whiteout_marker(rel: &Path) -> PathBuf {
    let mut marker = WHITEOUT_PREFIX.to_vec();
    marker.extend_from_slice(rel.file_name().unwrap_or_default().as_bytes());
    rel.with_file_name(OsString::from_vec(marker))
}

/// Writes the overlayfs upper directory `upper` as an OCI layer tar.
pub fn write_upper_tar(upper: &Path, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let top = open_upper(upper)?;
    for name in sorted_children(&top)? {
        append_upper(&mut builder, &top, &name, PathBuf::from(&name), &mut links)?;
    }
    builder.into_inner()?.flush()
}

fn append_upper<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    rel: PathBuf,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let entry = tree::open_entry(dir, name)?;
    let meta = entry.metadata()?;
    if is_mount_stub(&rel, &meta) {
        return Ok(());
    }
    if is_whiteout(&meta) {
        return builder.append_data(&mut marker_header(), whiteout_marker(&rel), io::empty());
    }
    let kind = meta.file_type();
    let mut header = header_for(&meta);
    if kind.is_dir() {
        builder.append_data(&mut header, &rel, io::empty())?;
        let sub = tree::open_dir(&entry)?;
        if read_opaque_fd(&sub) {
            let marker = rel.join(OsStr::from_bytes(OPAQUE_WHITEOUT));
            builder.append_data(&mut marker_header(), marker, io::empty())?;
        }
        for child in sorted_children(&sub)? {
            append_upper(builder, &sub, &child, rel.join(&child), links)?;
        }
        return Ok(());
    }
    append_entry(builder, header, (dir, name, &entry), &rel, &meta, links)
}

/// Appends one non-directory entry at `rel`: a symlink, a hard link to a
/// file already archived (by device and inode), a regular file, or another
/// special file; sockets are skipped (tar and Docker skip them). The entry
/// is `name` in directory `dir`, open (`O_PATH`, not followed) as `entry`.
fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    (dir, name, entry): (&OwnedFd, &OsStr, &std::fs::File),
    rel: &Path,
    meta: &std::fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = read_link_at(entry, "")?;
        header.set_size(0);
        return builder.append_link(&mut header, rel, target);
    }
    if kind.is_file() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            return builder.append_link(&mut header, rel, first);
        }
        links.insert(key, rel.to_path_buf());
    }
    if kind.is_file() {
        let file = tree::open_content(dir, name, meta)?;
        return builder.append_data(&mut header, rel, file);
    }
    if kind.is_socket() {
        return Ok(());
    }
    header.set_size(0);
    builder.append_data(&mut header, rel, io::empty())
}

/// One line of `docker diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute path in the container.
    pub path: String,
    /// 0 modified, 1 added, 2 deleted (Docker's `Kind`).
    pub kind: u8,
}

pub const CHANGE_MODIFIED: u8 = 0;
pub const CHANGE_ADDED: u8 = 1;
pub const CHANGE_DELETED: u8 = 2;

/// The metadata of `rel` in the stack of `layers` (lowest first), if it
/// exists there, honouring whiteouts and opaque directories.
fn lower_metadata(layers: &[PathBuf], rel: &Path) -> Option<Metadata> {
    for layer in layers.iter().rev() {
        let path = layer.join(rel);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            return (!is_whiteout(&meta)).then_some(meta);
        }
        // An opaque ancestor in this layer hides everything below it.
        let mut ancestor = rel.parent();
        while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty()) {
            if read_opaque(&layer.join(dir)) {
                return None;
            }
            ancestor = dir.parent();
        }
    }
    None
}

/// The changes in `upper` relative to `layers`, sorted by path.
pub fn changes(upper: &Path, layers: &[PathBuf]) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    walk_changes(&open_upper(upper)?, layers, Path::new(""), &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Walks the readable upper directory `dir` (at `rel`) by descriptors.
fn walk_changes(
    dir: &OwnedFd,
    layers: &[PathBuf],
    rel: &Path,
    out: &mut Vec<Change>,
) -> io::Result<()> {
    for name in sorted_children(dir)? {
        let child = rel.join(&name);
        let entry = tree::open_entry(dir, &name)?;
        let meta = entry.metadata()?;
        let path = format!("/{}", child.display());
        if is_whiteout(&meta) {
            out.push(Change {
                path,
                kind: CHANGE_DELETED,
            });
            continue;
        }
        if is_mount_stub(&child, &meta) {
            continue;
        }
        let below = lower_metadata(layers, &child);
        let kind = if below.is_some() {
            CHANGE_MODIFIED
        } else {
            CHANGE_ADDED
        };
        if !meta.is_dir() {
            out.push(Change { path, kind });
            continue;
        }
        let before = out.len();
        let sub = tree::open_dir(&entry)?;
        walk_changes(&sub, layers, &child, out)?;
        // A directory copied up only to hold mount points, unchanged
        // itself, is not a change.
        let unchanged = below.is_some_and(|b| {
            b.mode() == meta.mode() && b.uid() == meta.uid() && b.gid() == meta.gid()
        });
        if out.len() > before || !unchanged || read_opaque_fd(&sub) {
            out.push(Change { path, kind });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn upper_tar_lists_files_and_directories_in_order() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/motd"), "hi\n").unwrap();
        std::os::unix::fs::symlink("motd", upper.path().join("etc/link")).unwrap();
        let mut tar = Vec::new();
        write_upper_tar(upper.path(), &mut tar).unwrap();
        assert_eq!(entries(&tar), vec!["etc", "etc/link", "etc/motd"]);
    }

    #[test]
    fn upper_tar_round_trips_through_unpack() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("a/b")).unwrap();
        std::fs::write(upper.path().join("a/b/f"), "data").unwrap();
        let mut tar = Vec::new();
        write_upper_tar(upper.path(), &mut tar).unwrap();
        let dest = tempfile::tempdir().unwrap();
        super::super::unpack::apply_layer(tar.as_slice(), dest.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("a/b/f")).unwrap(),
            "data"
        );
    }

    #[test]
    fn whiteout_marker_prefixes_the_last_component() {
        assert_eq!(
            whiteout_marker(Path::new("etc/passwd")),
            PathBuf::from("etc/.wh.passwd")
        );
        assert_eq!(whiteout_marker(Path::new("top")), PathBuf::from(".wh.top"));
    }

    #[test]
    fn changes_without_lower_layers_are_additions() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("tmp")).unwrap();
        std::fs::write(upper.path().join("tmp/new"), "x").unwrap();
        let found = changes(upper.path(), &[]).unwrap();
        assert_eq!(
            found,
            vec![
                Change {
                    path: "/tmp".into(),
                    kind: CHANGE_ADDED
                },
                Change {
                    path: "/tmp/new".into(),
                    kind: CHANGE_ADDED
                },
            ]
        );
    }

    #[test]
    fn changes_skip_engine_mount_points() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/hosts"), "").unwrap();
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir(lower.path().join("etc")).unwrap();
        let mode = std::fs::metadata(upper.path().join("etc"))
            .unwrap()
            .permissions();
        std::fs::set_permissions(lower.path().join("etc"), mode).unwrap();
        let found = changes(upper.path(), &[lower.path().to_owned()]).unwrap();
        assert_eq!(found, Vec::new());
    }

    #[test]
    fn changes_of_paths_in_a_lower_layer_are_modifications() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir(lower.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/hosts"), "old").unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/hosts"), "new").unwrap();
        let found = changes(upper.path(), &[lower.path().to_owned()]).unwrap();
        assert!(found.iter().all(|c| c.kind == CHANGE_MODIFIED), "{found:?}");
    }
}
