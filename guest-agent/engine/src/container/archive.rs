//! `docker cp`: stat, read (as tar) and write (from tar) paths inside a
//! container, running or not.
//!
//! A running container is reached through `/proc/<pid>/root`, so its
//! volumes and binds are included. A stopped one gets its overlay root
//! mounted for the duration of the operation (under the container's
//! operation lock, so it cannot start meanwhile).
//!
//! Every path, and every entry of an archive written into the container, is
//! resolved inside the container's root: symlinks are followed as the
//! container would see them and never lead out of it.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags};
use serde::Serialize;

use super::{Entry, Status};
use crate::runtime::resolve_in_root;
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
    root: PathBuf,
    /// Set when we mounted the overlay ourselves (stopped container).
    mounted: Option<PathBuf>,
    _op: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl RootAccess {
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for RootAccess {
    fn drop(&mut self) {
        if let Some(target) = self.mounted.take() {
            let _ = nix::mount::umount2(&target, MntFlags::MNT_DETACH);
        }
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

/// Resolves `path` inside `root`, following every symlink but the last
/// component (which `docker cp` copies as a link).
fn resolve_nofollow(root: &Path, path: &str) -> PathBuf {
    let (parent, last) = split_last(path);
    let parent = resolve_in_root(root, &parent);
    match last.as_deref() {
        Some("..") => parent
            .parent()
            .filter(|p| p.starts_with(root))
            .unwrap_or(root)
            .to_owned(),
        Some(name) => parent.join(name),
        None => parent,
    }
}

impl Engine {
    /// Opens the container's root file system.
    pub async fn container_root(&self, key: &str) -> Result<RootAccess> {
        let entry: Arc<Entry> = self.container(key)?;
        if let Some(pid) = entry.running_pid() {
            return Ok(RootAccess {
                root: PathBuf::from(format!("/proc/{pid}/root")),
                mounted: None,
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
        let target = entry.dir().join("rootfs");
        let work = entry.dir().join("work");
        let _ = std::fs::remove_dir_all(&work);
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
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            entry.dir().join("upper").display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| Error::Runtime {
            context: format!("mounting the root of container {}", record.id),
            source: Some(e.into()),
        })?;
        Ok(RootAccess {
            root: target.clone(),
            mounted: Some(target),
            _op: Some(op),
        })
    }

    /// Stats `path` in the container (the last component is not followed).
    pub async fn stat_path(&self, key: &str, path: &str) -> Result<PathStat> {
        let access = self.container_root(key).await?;
        stat_in(access.root(), path)
    }
}

/// Stats a container path below `root`.
pub fn stat_in(root: &Path, path: &str) -> Result<PathStat> {
    let host = resolve_nofollow(root, path);
    let meta = std::fs::symlink_metadata(&host).map_err(|_| no_such_path(path))?;
    let link_target = if meta.file_type().is_symlink() {
        std::fs::read_link(&host)
            .map(|t| t.display().to_string())
            .unwrap_or_default()
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
        mode: go_mode(&meta),
        mtime,
        link_target,
    })
}

fn no_such_path(path: &str) -> Error {
    Error::NoSuchPath(format!("Could not find the file {path} in container"))
}

/// Writes a tar of `path` (named by its last component) to `out`.
pub fn archive_in(root: &Path, path: &str, out: impl Write) -> Result<()> {
    let host = resolve_nofollow(root, path);
    let meta = std::fs::symlink_metadata(&host).map_err(|_| no_such_path(path))?;
    let name = split_last(path).1.unwrap_or_else(|| ".".into());
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let result = if meta.is_dir() {
        builder.append_dir_all(&name, &host)
    } else {
        builder.append_path_with_name(&host, &name)
    };
    result.map_err(|e| Error::Runtime {
        context: format!("archiving {path}"),
        source: Some(e),
    })?;
    builder.finish().map_err(|e| Error::Runtime {
        context: format!("archiving {path}"),
        source: Some(e),
    })
}

/// Extracts the tar from `input` into directory `path` of the container.
/// Each entry is resolved inside `root`; `..` entries are refused.
pub fn extract_in(root: &Path, path: &str, input: impl Read, keep_owner: bool) -> Result<()> {
    let dir = resolve_in_root(root, path);
    let meta = std::fs::metadata(&dir).map_err(|_| no_such_path(path))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let container_dir = dir
        .strip_prefix(root)
        .map(|p| format!("/{}", p.display()))
        .unwrap_or_else(|_| "/".into());
    let bad =
        |e: std::io::Error| Error::InvalidArgument(format!("invalid tar archive for {path}: {e}"));
    let mut archive = tar::Archive::new(input);
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
        let Some(name) = relative.file_name().map(|n| n.to_owned()) else {
            continue;
        };
        let parent_in_container =
            Path::new(&container_dir).join(relative.parent().unwrap_or(Path::new("")));
        let parent = resolve_in_root(root, &parent_in_container.to_string_lossy());
        std::fs::create_dir_all(&parent).map_err(Error::io("create", &parent))?;
        let target = parent.join(&name);
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644);
        let kind = header.entry_type();
        let io = |op: &'static str| Error::io(op, target.clone());
        match kind {
            tar::EntryType::Directory => {
                if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    let _ = std::fs::remove_file(&target);
                    std::fs::create_dir(&target).map_err(io("create directory"))?;
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(io("chmod"))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(bad)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target).map_err(io("create symlink"))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(bad)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let source = resolve_in_root(
                    root,
                    &Path::new(&container_dir).join(&link).to_string_lossy(),
                );
                let _ = std::fs::remove_file(&target);
                std::fs::hard_link(&source, &target).map_err(io("create hard link"))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                    std::fs::remove_file(&target).map_err(io("replace"))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io("create"))?;
                std::io::copy(&mut entry, &mut file).map_err(io("write"))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(io("chmod"))?;
            }
            // Devices, fifos and extension headers are not copied in.
            _ => continue,
        }
        let (uid, gid) = if keep_owner {
            (
                header.uid().unwrap_or(0) as u32,
                header.gid().unwrap_or(0) as u32,
            )
        } else {
            (0, 0)
        };
        let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
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
        let dir = stat_in(root.path(), "/d").unwrap();
        assert_ne!(dir.mode & GO_DIR, 0);
        let link = stat_in(root.path(), "/l").unwrap();
        assert_ne!(link.mode & GO_SYMLINK, 0);
        assert_eq!(link.link_target, "/d");
        assert!(matches!(
            stat_in(root.path(), "/missing"),
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
        extract_in(root.path(), "/", &bytes[..], false).unwrap();
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
            extract_in(root.path(), "/", &bytes[..], false),
            Err(Error::InvalidArgument(_))
        ));
    }
}
