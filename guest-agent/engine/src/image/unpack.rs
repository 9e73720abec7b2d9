//! Applying one layer tar to an empty directory, in overlayfs format.
//!
//! Each image layer is unpacked into its own directory, which later serves
//! as one overlayfs lowerdir. OCI whiteouts become what overlayfs expects:
//!
//! * `.wh.<name>` -> a character device 0:0 named `<name>`;
//! * `.wh..wh..opq` -> xattr `trusted.overlay.opaque=y` on its directory.
//!
//! # Containment
//!
//! A layer is untrusted input. Every entry path is cleaned lexically first
//! (`..` that would climb above the layer root rejects the whole layer), and
//! every parent directory is then opened with `openat2(RESOLVE_IN_ROOT)`, so
//! symlinks (absolute or relative) met on the way resolve *inside* the layer
//! directory, as if it were `/`. The final component is always created with
//! an `*at` call relative to that parent fd and never followed: files are
//! opened `O_CREAT|O_EXCL|O_NOFOLLOW`, symlinks are created but not
//! followed. Hardlink targets resolve the same way. Nothing a layer says can
//! touch a path outside the directory it is applied to.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::ErrorKind;

/// Prefix of an OCI whiteout entry.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr that marks a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer entry {entry:?} escapes the layer root")]
    Escape { entry: String },
    #[error("layer entry {entry:?} has unsupported type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("failed to read the layer tar")]
    Read {
        #[source]
        source: io::Error,
    },
    #[error("failed to {op} layer entry {entry:?}")]
    Entry {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to open layer directory {path}")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Bad content is the client's fault; failing storage is ours.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Escape { .. } | Error::Unsupported { .. } | Error::Read { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Entry { source, .. } => {
                match source.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::NOSPC | Errno::IO | Errno::DQUOT | Errno::ROFS | Errno::NOMEM) => {
                        ErrorKind::Internal
                    }
                    _ => ErrorKind::InvalidArgument,
                }
            }
            Error::OpenRoot { .. } => ErrorKind::Internal,
        }
    }
}

/// What applying a layer found.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerStats {
    /// Sum of the sizes of the regular files written.
    pub size: u64,
}

/// Applies the (already decompressed) layer tar in `reader` to `dest`, an
/// existing, normally empty directory. Stops at the tar's end-of-archive
/// marker; the caller drains whatever follows if it hashes the stream.
pub fn apply_layer(reader: impl Read, dest: &Path) -> Result<LayerStats, Error> {
    let root = rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::OpenRoot {
        path: dest.to_owned(),
        source: e.into(),
    })?;
    let mut archive = tar::Archive::new(reader);
    let mut stats = LayerStats::default();
    let mut dir_times: Vec<(Vec<Vec<u8>>, i64)> = Vec::new();
    for entry in archive.entries().map_err(|source| Error::Read { source })? {
        let mut entry = entry.map_err(|source| Error::Read { source })?;
        let raw_path = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let comps = clean_path(&raw_path).ok_or_else(|| Error::Escape {
            entry: display.clone(),
        })?;
        let meta = Meta::of(&mut entry).map_err(|source| Error::Read { source })?;
        let fail = |op: &'static str| {
            let entry = display.clone();
            move |e: Errno| Error::Entry {
                entry,
                op,
                source: e.into(),
            }
        };
        let Some((name, parents)) = comps.split_last() else {
            // `./` itself: the layer root's own metadata.
            if kind.is_dir() {
                meta.apply_fd(&root).map_err(fail("set metadata on"))?;
                dir_times.push((Vec::new(), meta.mtime));
            }
            continue;
        };
        let name = OsStr::from_bytes(name);
        let parent =
            open_dir(&root, parents, true).map_err(fail("create parent directories of"))?;
        if name.as_bytes() == OPAQUE_WHITEOUT {
            rustix::fs::fsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(fail("mark opaque"))?;
            continue;
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                continue; // aufs metadata (`.wh..wh.plnk`, ...): meaningless here
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(Error::Escape { entry: display });
            }
            let hidden = OsStr::from_bytes(hidden);
            remove_existing(&parent, hidden).map_err(fail("replace"))?;
            rustix::fs::mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(fail("create whiteout for"))?;
            meta.apply_at(&parent, hidden, false)
                .map_err(fail("set metadata on"))?;
            continue;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            remove_existing(&parent, name).map_err(fail("replace"))?;
            let fd = rustix::fs::openat(
                &parent,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(fail("create"))?;
            let mut file = File::from(fd);
            let expected = entry.size();
            let written = io::copy(&mut entry, &mut file).map_err(|source| Error::Entry {
                entry: display.clone(),
                op: "write",
                source,
            })?;
            if written != expected {
                return Err(Error::Read {
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            stats.size += written;
            meta.apply_fd(&file).map_err(fail("set metadata on"))?;
            meta.set_times_fd(&file).map_err(fail("set times on"))?;
        } else if kind.is_dir() {
            match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) => {
                    rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                        .map_err(fail("replace"))?;
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
                        .map_err(fail("create"))?;
                }
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
                        .map_err(fail("create"))?;
                }
                Err(e) => return Err(fail("inspect")(e)),
            }
            let dir = rustix::fs::openat(
                &parent,
                name,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(fail("open"))?;
            meta.apply_fd(&dir).map_err(fail("set metadata on"))?;
            dir_times.push((comps.clone(), meta.mtime));
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::Unsupported {
                    entry: display.clone(),
                    kind: "symlink without target".into(),
                })?
                .into_owned();
            remove_existing(&parent, name).map_err(fail("replace"))?;
            rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                .map_err(fail("create symlink"))?;
            meta.apply_at(&parent, name, true)
                .map_err(fail("set metadata on"))?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| Error::Unsupported {
                    entry: display.clone(),
                    kind: "hardlink without target".into(),
                })?
                .into_owned();
            let target_comps = clean_path(&target).ok_or_else(|| Error::Escape {
                entry: display.clone(),
            })?;
            let Some((target_name, target_parents)) = target_comps.split_last() else {
                return Err(Error::Escape { entry: display });
            };
            if target_comps == comps {
                continue;
            }
            let target_parent = open_dir(&root, target_parents, false)
                .map_err(fail("resolve hardlink target of"))?;
            remove_existing(&parent, name).map_err(fail("replace"))?;
            rustix::fs::linkat(
                &target_parent,
                OsStr::from_bytes(target_name),
                &parent,
                name,
                AtFlags::empty(),
            )
            .map_err(fail("create hardlink"))?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let file_type = if kind.is_character_special() {
                FileType::CharacterDevice
            } else if kind.is_block_special() {
                FileType::BlockDevice
            } else {
                FileType::Fifo
            };
            let header = entry.header();
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            remove_existing(&parent, name).map_err(fail("replace"))?;
            rustix::fs::mknodat(
                &parent,
                name,
                file_type,
                Mode::empty(),
                rustix::fs::makedev(major, minor),
            )
            .map_err(fail("create device"))?;
            meta.apply_at(&parent, name, false)
                .map_err(fail("set metadata on"))?;
        } else {
            return Err(Error::Unsupported {
                entry: display,
                kind: format!("{kind:?}"),
            });
        }
    }
    // Directory times last: creating entries inside a directory changes it.
    for (comps, mtime) in dir_times.iter().rev() {
        if let Ok(dir) = open_dir(&root, comps, false) {
            let _ = rustix::fs::futimens(&dir, &timestamps(*mtime));
        }
    }
    Ok(stats)
}

/// Ownership, mode, mtime and xattrs of one entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Self> {
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions()? {
            for extension in extensions {
                let extension = extension?;
                if let Ok(key) = extension.key()
                    && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                    && !name.starts_with("trusted.overlay.")
                {
                    xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
                }
            }
        }
        let header = entry.header();
        let id = |v: io::Result<u64>| v.ok().and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        Ok(Self {
            uid: id(header.uid()),
            gid: id(header.gid()),
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            mtime: header
                .mtime()
                .ok()
                .and_then(|t| i64::try_from(t).ok())
                .unwrap_or(0),
            xattrs,
        })
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs.
    fn apply_fd(&self, fd: impl AsFd) -> Result<(), Errno> {
        let fd = fd.as_fd();
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.mode))?;
        for (name, value) in &self.xattrs {
            if let Err(err) = rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                tracing::debug!(xattr = %name, error = %err, "layer xattr not applied");
            }
        }
        Ok(())
    }

    /// For entries that cannot be opened (symlinks, devices, whiteouts).
    fn apply_at(&self, parent: impl AsFd, name: &OsStr, symlink: bool) -> Result<(), Errno> {
        let parent = parent.as_fd();
        rustix::fs::chownat(
            parent,
            name,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        if !symlink {
            // Just created by mknodat in a directory only this thread writes.
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(self.mode),
                AtFlags::empty(),
            )?;
        }
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(self.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    fn set_times_fd(&self, fd: impl AsFd) -> Result<(), Errno> {
        rustix::fs::futimens(fd, &timestamps(self.mtime))
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

/// Splits a tar path into normal components: drops empty and `.` parts and
/// resolves `..` lexically. `None` if `..` would climb above the root.
pub fn clean_path(raw: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut comps: Vec<Vec<u8>> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                comps.pop()?;
            }
            name => comps.push(name.to_vec()),
        }
    }
    Some(comps)
}

/// Opens the directory `comps` below `root`, resolving every component
/// (symlinks included) inside `root`. With `create`, missing directories
/// are made (0755, root-owned, like Docker's implicit parents).
fn open_dir(root: &OwnedFd, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, Errno> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut path = PathBuf::from(".");
    for comp in comps {
        path.push(OsStr::from_bytes(comp));
    }
    match open_in_root(root, &path, flags) {
        Err(Errno::NOENT) if create => {}
        other => return other,
    }
    let mut path = PathBuf::from(".");
    let mut dir = open_in_root(root, &path, flags)?;
    for comp in comps {
        path.push(OsStr::from_bytes(comp));
        dir = match open_in_root(root, &path, flags) {
            Ok(next) => next,
            Err(Errno::NOENT) => {
                rustix::fs::mkdirat(&dir, OsStr::from_bytes(comp), Mode::from_raw_mode(0o755))?;
                open_in_root(root, &path, flags)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, retried
/// on the `EAGAIN` the kernel returns when a concurrent rename raced it.
fn open_in_root(root: &OwnedFd, path: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

/// Removes whatever is at `parent/name` (a directory recursively); absent is fine.
fn remove_existing(parent: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            // The fd's /proc link pins the already-contained parent; std's
            // remove_dir_all opens `name` with O_NOFOLLOW and recurses by fd.
            let path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
            std::fs::remove_dir_all(&path)
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        }
        Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    /// Builds a tar in memory from `(path, kind)` entries.
    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(1_000_000);
            header.set_uid(0);
            header.set_gid(0);
            match item {
                Item::File(path, data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(0o644);
                    header.set_size(data.len() as u64);
                    append_raw(&mut header, path);
                    builder.append(&header, *data).unwrap();
                }
                Item::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    append_raw(&mut header, path);
                    builder.append(&header, io::empty()).unwrap();
                }
                Item::Symlink(path, target) | Item::Hardlink(path, target) => {
                    let kind = if matches!(item, Item::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    header.set_entry_type(kind);
                    header.set_mode(0o777);
                    header.set_size(0);
                    append_raw(&mut header, path);
                    let target_bytes = target.as_bytes();
                    header.as_old_mut().linkname[..target_bytes.len()]
                        .copy_from_slice(target_bytes);
                    header.set_cksum();
                    builder.append(&header, io::empty()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    /// Writes `path` verbatim (the tar crate's setters refuse `..`).
    fn append_raw(header: &mut tar::Header, path: &str) {
        let name = &mut header.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
    }

    /// A layer dir nested in a sandbox, so escapes land in the sandbox.
    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let sandbox = tempfile::tempdir().unwrap();
        let layer = sandbox.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        (sandbox, layer)
    }

    #[test]
    fn clean_path_resolves_dots_and_rejects_climbing_out() {
        assert_eq!(
            clean_path(b"./a//b/./c").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(clean_path(b"a/../b").unwrap(), vec![b"b".to_vec()]);
        assert_eq!(
            clean_path(b"/etc/passwd").unwrap(),
            vec![b"etc".to_vec(), b"passwd".to_vec()]
        );
        assert!(clean_path(b"../x").is_none());
        assert!(clean_path(b"a/../../x").is_none());
    }

    #[test]
    fn files_dirs_and_links_are_created_with_metadata() {
        let (_sandbox, layer) = sandbox();
        let tar = tar_of(&[
            Item::Dir("bin/"),
            Item::File("bin/busybox", b"binary"),
            Item::Symlink("bin/sh", "busybox"),
            Item::Hardlink("bin/cat", "bin/busybox"),
            Item::File("deep/implicit/file", b"x"),
        ]);
        let stats = apply_layer(&tar[..], &layer).unwrap();
        assert_eq!(stats.size, 7);
        assert_eq!(std::fs::read(layer.join("bin/busybox")).unwrap(), b"binary");
        assert_eq!(
            std::fs::read_link(layer.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let (a, b) = (
            layer.join("bin/busybox").metadata().unwrap(),
            layer.join("bin/cat").metadata().unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o7777, 0o644);
        assert_eq!(layer.join("bin").metadata().unwrap().mtime(), 1_000_000);
        assert!(layer.join("deep/implicit/file").is_file());
    }

    #[test]
    fn dot_dot_entry_is_rejected_and_writes_nothing_outside() {
        let (sandbox, layer) = sandbox();
        let err = apply_layer(&tar_of(&[Item::File("../escaped", b"x")])[..], &layer).unwrap_err();
        assert!(matches!(err, Error::Escape { .. }), "{err}");
        assert!(!sandbox.path().join("escaped").exists());
    }

    #[test]
    fn write_through_absolute_symlink_stays_inside_the_layer() {
        let (sandbox, layer) = sandbox();
        let outside = sandbox.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = outside.to_str().unwrap().to_owned();
        let tar = tar_of(&[
            Item::Symlink("evil", &target),
            Item::File("evil/pwned", b"x"),
        ]);
        let _ = apply_layer(&tar[..], &layer);
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn write_through_relative_symlink_stays_inside_the_layer() {
        let (sandbox, layer) = sandbox();
        let tar = tar_of(&[Item::Symlink("up", "../.."), Item::File("up/pwned", b"x")]);
        apply_layer(&tar[..], &layer).unwrap();
        assert!(!sandbox.path().join("pwned").exists());
        assert!(
            layer.join("pwned").is_file(),
            "`..` at the layer root stays at the root"
        );
    }

    #[test]
    fn hardlink_to_outside_file_is_not_created() {
        let (sandbox, layer) = sandbox();
        let secret = sandbox.path().join("secret");
        std::fs::write(&secret, b"s").unwrap();
        let absolute = tar_of(&[Item::Hardlink("link", secret.to_str().unwrap())]);
        assert!(apply_layer(&absolute[..], &layer).is_err());
        let relative = tar_of(&[Item::Hardlink("link", "../secret")]);
        assert!(matches!(
            apply_layer(&relative[..], &layer),
            Err(Error::Escape { .. })
        ));
        assert_eq!(secret.metadata().unwrap().nlink(), 1);
        assert!(!layer.join("link").exists());
    }

    #[test]
    fn hardlink_through_symlinked_dir_resolves_inside() {
        let (sandbox, layer) = sandbox();
        std::fs::write(sandbox.path().join("secret"), b"s").unwrap();
        let tar = tar_of(&[
            Item::Symlink("up", ".."),
            Item::Hardlink("link", "up/secret"),
        ]);
        assert!(apply_layer(&tar[..], &layer).is_err());
        assert_eq!(sandbox.path().join("secret").metadata().unwrap().nlink(), 1);
    }

    #[test]
    fn whiteout_becomes_char_device_and_opaque_becomes_xattr() {
        let (_sandbox, layer) = sandbox();
        let tar = tar_of(&[
            Item::File("etc/.wh.gone", b""),
            Item::Dir("opaque/"),
            Item::File("opaque/.wh..wh..opq", b""),
            Item::File("opaque/kept", b"k"),
        ]);
        apply_layer(&tar[..], &layer).unwrap();
        let whiteout = layer.join("etc/gone").symlink_metadata().unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!layer.join("etc/.wh.gone").exists());
        let mut value = [0u8; 8];
        let len = rustix::fs::getxattr(layer.join("opaque"), OVERLAY_OPAQUE_XATTR, &mut value[..])
            .unwrap();
        assert_eq!(&value[..len], b"y");
        assert!(!layer.join("opaque/.wh..wh..opq").exists());
    }

    #[test]
    fn whiteout_of_parent_path_is_rejected() {
        let (sandbox, layer) = sandbox();
        std::fs::write(sandbox.path().join("x"), b"keep").unwrap();
        let err = apply_layer(&tar_of(&[Item::File("../.wh.x", b"")])[..], &layer).unwrap_err();
        assert!(matches!(err, Error::Escape { .. }));
        let err = apply_layer(&tar_of(&[Item::File(".wh...", b"")])[..], &layer).unwrap_err();
        assert!(matches!(err, Error::Escape { .. }));
        assert_eq!(std::fs::read(sandbox.path().join("x")).unwrap(), b"keep");
    }

    #[test]
    fn later_entry_replaces_earlier_one() {
        let (_sandbox, layer) = sandbox();
        let tar = tar_of(&[
            Item::Dir("a/"),
            Item::File("a/x", b"1"),
            Item::File("a", b"now a file"),
        ]);
        apply_layer(&tar[..], &layer).unwrap();
        assert_eq!(std::fs::read(layer.join("a")).unwrap(), b"now a file");
    }

    #[test]
    fn truncated_tar_is_a_read_error() {
        let (_sandbox, layer) = sandbox();
        let tar = tar_of(&[Item::File("big", &[7u8; 4096])]);
        let err = apply_layer(&tar[..1024], &layer).unwrap_err();
        assert!(
            matches!(err, Error::Read { .. } | Error::Entry { op: "write", .. }),
            "{err}"
        );
    }
}
