//! `docker cp`: stat, read (as tar) and write (from tar) paths inside a
//! container, running or not.
//!
//! A running container's root is pinned once as a descriptor of
//! `/proc/<pid>/root` (opened after a pidfd of the process is held and the
//! pid checked against the record), so its volumes and binds are included.
//! A stopped (or created) one gets its overlay root and its volumes and
//! binds mounted in a private mount namespace for the duration of the
//! operation ([`super::offline_root`]; under the container's operation
//! lock, so it cannot start meanwhile), so it sees what a running
//! container would and the engine's mount table never changes.
//!
//! From there everything is descriptor-relative ([`crate::fsutil`]): paths
//! are resolved with `openat2(RESOLVE_IN_ROOT)`, archives are read by
//! walking descriptors with `O_NOFOLLOW`, and each entry of an archive
//! written into the container is created with `*at` calls relative to its
//! resolved parent, never through a symlink. A container that swaps
//! directories and symlinks while a copy runs changes only which of its
//! own files are copied.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;

use super::{Entry, Status, offline_root};
use crate::fsutil::Root;
use crate::fsutil::inroot::{is_not_found, split_parent};
use crate::fsutil::tree::{TarWalk, open_entry};
use crate::{Engine, Error, Result};

/// `X-Docker-Container-Path-Stat`: a path's stat, with Go `FileMode` bits.
#[derive(Debug, Clone, Serialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

// Go's os.FileMode type bits.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_NAMED_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR_DEVICE: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;

fn go_mode(meta: &std::fs::Metadata) -> u32 {
    let mode = meta.mode();
    let mut out = mode & 0o777;
    let kind = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        out |= GO_DIR;
    } else if kind.is_symlink() {
        out |= GO_SYMLINK;
    } else if kind.is_block_device() {
        out |= GO_DEVICE;
    } else if kind.is_char_device() {
        out |= GO_DEVICE | GO_CHAR_DEVICE;
    } else if kind.is_fifo() {
        out |= GO_NAMED_PIPE;
    } else if kind.is_socket() {
        out |= GO_SOCKET;
    }
    if mode & 0o4000 != 0 {
        out |= GO_SETUID;
    }
    if mode & 0o2000 != 0 {
        out |= GO_SETGID;
    }
    if mode & 0o1000 != 0 {
        out |= GO_STICKY;
    }
    out
}

/// Access to a container's root file system for one operation.
pub struct RootAccess {
    // Field order is drop order: the root, then the private mount
    // namespace holding its mounts, then the operation lock.
    root: Root,
    /// A stopped container's private mount namespace (see
    /// [`super::offline_root`]): closing it unmounts the root and binds.
    _namespace: Option<OwnedFd>,
    _op: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl RootAccess {
    /// The container's root, pinned for the whole operation.
    pub fn root(&self) -> &Root {
        &self.root
    }
}

/// Splits a container path into (parent, last component); `/` has no last.
fn split_last(path: &str) -> (String, Option<String>) {
    let mut parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let last = parts.pop().map(str::to_owned);
    (format!("/{}", parts.join("/")), last)
}

/// The root of the running container process `pid`, pinned: a pidfd is
/// taken first, the pid is checked to still be this container's, the root
/// is opened, and the pidfd is checked to still be alive. So the
/// descriptor is the root of the process the record names, not of a
/// process that reused its pid.
fn open_running_root(entry: &Entry, pid: i32) -> Result<Root> {
    let id = entry.snapshot().id;
    let gone = || Error::Conflict(format!("container {id} stopped during the copy; retry"));
    let process = rustix::process::Pid::from_raw(pid).ok_or_else(gone)?;
    let pidfd = rustix::process::pidfd_open(process, rustix::process::PidfdFlags::empty())
        .map_err(|e| match e {
            Errno::SRCH => gone(),
            e => Error::Runtime {
                context: format!("opening a pidfd for container {id} (pid {pid})"),
                source: Some(e.into()),
            },
        })?;
    if entry.running_pid() != Some(pid) {
        return Err(gone());
    }
    let root = Root::open(Path::new(&format!("/proc/{pid}/root"))).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            gone()
        } else {
            Error::Runtime {
                context: format!("opening the root of container {id} (pid {pid})"),
                source: Some(e),
            }
        }
    })?;
    // A pidfd polls readable once its process has exited.
    let mut poll = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready =
        nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO).map_err(|e| Error::Runtime {
            context: format!("polling the pidfd of container {id}"),
            source: Some(e.into()),
        })?;
    if ready != 0 {
        return Err(gone());
    }
    Ok(root)
}

impl Engine {
    /// Opens the container's root file system.
    pub async fn container_root(&self, key: &str) -> Result<RootAccess> {
        let entry: Arc<Entry> = self.container(key)?;
        if let Some(pid) = entry.running_pid() {
            return Ok(RootAccess {
                root: open_running_root(&entry, pid)?,
                _namespace: None,
                _op: None,
            });
        }
        // Keep the container from starting while its overlay is mounted here.
        let op = entry.op.clone().lock_owned().await;
        let record = entry.snapshot();
        if matches!(record.state.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "container {} started during the copy; retry",
                record.id
            )));
        }
        let work = entry.dir().join("work");
        match std::fs::remove_dir_all(&work) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &work)(e)),
        }
        std::fs::create_dir_all(&work).map_err(Error::io("create", &work))?;
        let lower: Vec<String> = if record.layers.is_empty() {
            vec![entry.dir().join("empty").display().to_string()]
        } else {
            record
                .layers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect()
        };
        let plan = offline_root::Plan {
            id: record.id.clone(),
            target: entry.dir().join("rootfs"),
            overlay: format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                entry.dir().join("upper").display(),
                work.display()
            ),
            readonly_rootfs: record.host_config.readonly_rootfs,
            mounts: record.mounts.clone(),
        };
        let mounted = tokio::task::spawn_blocking(move || offline_root::mount(plan))
            .await
            .map_err(|e| Error::Runtime {
                context: format!("mounting the root of container {}: {e}", record.id),
                source: None,
            })??;
        Ok(RootAccess {
            root: mounted.root,
            _namespace: Some(mounted.namespace),
            _op: Some(op),
        })
    }

    /// Stats `path` in the container (the last component is not followed).
    pub async fn stat_path(&self, key: &str, path: &str) -> Result<PathStat> {
        let access = self.container_root(key).await?;
        stat_in(access.root(), path)
    }
}

/// A container path opened without following its last component.
struct Opened {
    /// The resolved parent directory and the last component's name; `None`
    /// when the path names a directory as a whole (`/`, `..`).
    parent: Option<(OwnedFd, String)>,
    /// An `O_PATH` descriptor of the entry itself.
    entry: File,
    meta: std::fs::Metadata,
}

/// The error for a failed lookup of `path`: not found, or why not.
fn lookup_error(path: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |e| {
        if is_not_found(&e) {
            no_such_path(path)
        } else {
            Error::Io {
                op: "resolve inside the container",
                path: PathBuf::from(path),
                source: e,
            }
        }
    }
}

fn open_unfollowed(root: &Root, path: &str) -> Result<Opened> {
    let (parent, last) = split_parent(path);
    let lookup = lookup_error(path);
    let (parent, entry) = match last {
        Some(name) => {
            let dir = root
                .open_with(parent, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(&lookup)?;
            let entry = open_entry(&dir, OsStr::new(name)).map_err(&lookup)?;
            (Some((dir, name.to_owned())), entry)
        }
        None => (None, File::from(root.resolve(path).map_err(&lookup)?)),
    };
    let meta = entry.metadata().map_err(&lookup)?;
    Ok(Opened {
        parent,
        entry,
        meta,
    })
}

/// Stats a container path inside `root`.
pub fn stat_in(root: &Root, path: &str) -> Result<PathStat> {
    let opened = open_unfollowed(root, path)?;
    let meta = &opened.meta;
    let link_target = if meta.file_type().is_symlink() {
        crate::fsutil::inroot::read_link_at(&opened.entry, "")
            .map_err(lookup_error(path))?
            .display()
            .to_string()
    } else {
        String::new()
    };
    let mtime = chrono::DateTime::from_timestamp(
        meta.mtime(),
        u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    )
    .unwrap_or_default()
    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(PathStat {
        name: split_last(path).1.unwrap_or_else(|| "/".into()),
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        mode: go_mode(meta),
        mtime,
        link_target,
    })
}

fn no_such_path(path: &str) -> Error {
    Error::NoSuchPath(format!("Could not find the file {path} in container"))
}

/// Writes a tar of `path` (named by its last component) to `out`.
pub fn archive_in(root: &Root, path: &str, out: impl Write) -> Result<()> {
    let opened = open_unfollowed(root, path)?;
    let name = PathBuf::from(split_last(path).1.unwrap_or_else(|| ".".into()));
    let failed = |e: io::Error| Error::Runtime {
        context: format!("archiving {path}"),
        source: Some(e),
    };
    let mut builder = tar::Builder::new(out);
    let mut walk = TarWalk::new(&mut builder);
    match &opened.parent {
        Some((dir, last)) => walk.append_at(dir, OsStr::new(last), &name),
        None => walk.append_opened(opened.entry, &opened.meta, &name),
    }
    .map_err(failed)?;
    builder.finish().map_err(failed)
}

/// Writes the tree of `root` as a tar (`docker export`), not descending
/// into other file systems (a running container's `/proc`, `/sys`,
/// volumes).
pub fn export_root(root: &Root, out: impl Write) -> io::Result<()> {
    let top = File::from(root.resolve("/")?);
    let meta = top.metadata()?;
    let mut builder = tar::Builder::new(out);
    TarWalk::new(&mut builder)
        .one_device(meta.dev())
        .append_children(&top, &meta, Path::new(""))?;
    builder.into_inner()?.flush()
}

/// dockerd's check before extracting: a destination on a read-only volume
/// or bind, or on a read-only root file system, is refused up front (the
/// mount the resolved directory is on decides, as `checkIfPathIsInAVolume`
/// and `ReadonlyRootfs` do in dockerd).
fn check_writable(root: &Root, dir: &OwnedFd, path: &str) -> Result<()> {
    let failed = |e: Errno| Error::Io {
        op: "check the mount of",
        path: PathBuf::from(path),
        source: e.into(),
    };
    let flags = rustix::fs::fstatvfs(dir).map_err(failed)?.f_flag;
    if !flags.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Ok(());
    }
    let mount_id = |fd: BorrowedFd<'_>| {
        rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)
            .map(|st| st.stx_mnt_id)
            .map_err(failed)
    };
    Err(Error::InvalidArgument(
        if mount_id(dir.as_fd())? == mount_id(root.fd())? {
            "container rootfs is marked read-only"
        } else {
            "mounted volume is marked read-only"
        }
        .into(),
    ))
}

/// Extracts the tar from `input` into directory `path` of the container.
/// Each entry's parent is resolved inside `root` and the entry is created
/// relative to that descriptor without following a symlink at its name;
/// `..` entries are refused.
pub fn extract_in(root: &Root, path: &str, input: impl Read, keep_owner: bool) -> Result<()> {
    let dir = root.resolve(path).map_err(lookup_error(path))?;
    let meta = crate::fsutil::inroot::metadata(&dir).map_err(lookup_error(path))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Error::InvalidArgument(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    check_writable(root, &dir, path)?;
    let bad = |e: io::Error| Error::InvalidArgument(format!("invalid tar archive for {path}: {e}"));
    let mut archive = tar::Archive::new(input);
    // The last entry's parent: tar entries come grouped by directory.
    let mut cached: Option<(PathBuf, OwnedFd)> = None;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let entry_path = entry.path().map_err(bad)?.into_owned();
        if entry_path
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(Error::InvalidArgument(format!(
                "invalid tar archive for {path}: entry {} leaves the destination",
                entry_path.display()
            )));
        }
        let relative: PathBuf = entry_path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Some(name) = relative.file_name().map(OsStr::to_os_string) else {
            continue;
        };
        let parent_rel = relative.parent().unwrap_or(Path::new("")).to_owned();
        let in_container = format!("{path}/{}", relative.display());
        let io = |op: &'static str| Error::io(op, PathBuf::from(&in_container));
        let parent = match cached.take() {
            Some((rel, fd)) if rel == parent_rel => fd,
            _ if parent_rel.as_os_str().is_empty() => {
                rustix::io::fcntl_dupfd_cloexec(&dir, 0).map_err(|e| io("open")(e.into()))?
            }
            _ => root
                .mkdir_all(&format!("{path}/{}", parent_rel.display()), 0o755)
                .map_err(io("create the parent directory of"))?,
        };
        let header = entry.header().clone();
        let mode = Mode::from_raw_mode(header.mode().map_err(bad)? & 0o7777);
        let (uid, gid) = if keep_owner {
            (
                u32::try_from(header.uid().map_err(bad)?).map_err(|e| bad(io::Error::other(e)))?,
                u32::try_from(header.gid().map_err(bad)?).map_err(|e| bad(io::Error::other(e)))?,
            )
        } else {
            (0, 0)
        };
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );
        // chown before chmod: chown clears set-user-ID and set-group-ID bits.
        let lchown = |parent: &OwnedFd| {
            rustix::fs::chownat(
                parent,
                name.as_os_str(),
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io("chown")(e.into()))
        };
        let existing = rustix::fs::statat(&parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
        let existing_dir =
            matches!(&existing, Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        let remove_existing = |parent: &OwnedFd| -> Result<()> {
            if existing.is_ok() && !existing_dir {
                rustix::fs::unlinkat(parent, name.as_os_str(), AtFlags::empty())
                    .map_err(|e| io("replace")(e.into()))?;
            }
            Ok(())
        };
        match header.entry_type() {
            tar::EntryType::Directory => {
                remove_existing(&parent)?;
                if !existing_dir {
                    match rustix::fs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700))
                    {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io("create directory")(e.into())),
                    }
                }
                let made = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io("open directory")(e.into()))?;
                rustix::fs::fchown(&made, uid, gid).map_err(|e| io("chown")(e.into()))?;
                rustix::fs::fchmod(&made, mode).map_err(|e| io("chmod")(e.into()))?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name().map_err(bad)?.ok_or_else(|| {
                    bad(io::Error::other(format!(
                        "symlink {} has no target",
                        entry_path.display()
                    )))
                })?;
                remove_existing(&parent)?;
                rustix::fs::symlinkat(link.as_ref(), &parent, name.as_os_str())
                    .map_err(|e| io("create symlink")(e.into()))?;
                lchown(&parent)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name().map_err(bad)?.ok_or_else(|| {
                    bad(io::Error::other(format!(
                        "hard link {} has no target",
                        entry_path.display()
                    )))
                })?;
                let source_path = format!("{path}/{}", link.display());
                let source = root
                    .open_with(&source_path, OFlags::PATH | OFlags::NOFOLLOW)
                    .map_err(lookup_error(&source_path))?;
                remove_existing(&parent)?;
                rustix::fs::linkat(&source, "", &parent, name.as_os_str(), AtFlags::EMPTY_PATH)
                    .map_err(|e| io("create hard link")(e.into()))?;
                lchown(&parent)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&parent)?;
                let file = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io("create")(e.into()))?;
                let mut file = File::from(file);
                std::io::copy(&mut entry, &mut file).map_err(io("write"))?;
                rustix::fs::fchown(&file, uid, gid).map_err(|e| io("chown")(e.into()))?;
                rustix::fs::fchmod(&file, mode).map_err(|e| io("chmod")(e.into()))?;
            }
            // Devices, fifos and extension headers are not copied in.
            _ => {}
        }
        cached = Some((parent_rel, parent));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reports_go_mode_bits_and_links() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/d", root.path().join("l")).unwrap();
        let dir = stat_in(&Root::open(root.path()).unwrap(), "/d").unwrap();
        assert_ne!(dir.mode & GO_DIR, 0);
        let link = stat_in(&Root::open(root.path()).unwrap(), "/l").unwrap();
        assert_ne!(link.mode & GO_SYMLINK, 0);
        assert_eq!(link.link_target, "/d");
        assert!(matches!(
            stat_in(&Root::open(root.path()).unwrap(), "/missing"),
            Err(Error::NoSuchPath(_))
        ));
    }

    #[test]
    fn extract_stays_inside_the_root_through_absolute_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // /escape -> <outside> as an absolute host path: must resolve inside root.
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        tar.append_data(&mut header, "escape/x", &b"hi"[..])
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        extract_in(&Root::open(root.path()).unwrap(), "/", &bytes[..], false).unwrap();
        assert!(!outside.path().join("x").exists());
        assert!(
            root.path()
                .join(outside.path().strip_prefix("/").unwrap())
                .join("x")
                .exists()
        );
    }

    #[test]
    fn extract_refuses_parent_entries() {
        let root = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_path("x").unwrap();
        header.as_mut_bytes()[..5].copy_from_slice(b"../up");
        header.set_cksum();
        tar.append(&header, &b""[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        assert!(matches!(
            extract_in(&Root::open(root.path()).unwrap(), "/", &bytes[..], false),
            Err(Error::InvalidArgument(_))
        ));
    }
}
