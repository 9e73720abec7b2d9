//! Host file changes turned into guest inotify events.
//!
//! virtio-fs gives the guest kernel no notice of changes made on the host,
//! so inotify watchers in the VM and in containers would see nothing. The
//! host agent watches the share paths the guest asks for (the bind sources
//! of running containers, [`interest`]) and sends each change's guest path;
//! the agent then makes the guest kernel raise events on that path through
//! the share's writable view ([`super::shares::hidden_view`]), with
//! operations that change neither content nor modification time:
//!
//! | host change                          | guest watchers see                                  |
//! |--------------------------------------|-----------------------------------------------------|
//! | file created or modified             | `IN_ATTRIB`, `IN_OPEN`, `IN_CLOSE_WRITE` on the file |
//! | directory created or changed         | `IN_ATTRIB` (`IN_ISDIR`) on the directory            |
//! | file or directory deleted            | `IN_ATTRIB` on its parent directory                  |
//! | renamed                              | the delete row for the old name, the create row for the new |
//!
//! Directory watchers get the file's name with events on a file, as inotify
//! always reports child events. The events come from a same-mode `chmod` and
//! an open-for-write that writes nothing; on the host these change only
//! `ctime`, and the host agent drops the events they echo back because the
//! file's content signature (existence, size, mtime, mode) is unchanged.
//! `IN_CREATE`/`IN_DELETE` cannot be raised without creating or deleting a
//! file on the host, so they are not; re-stat watchers (chokidar, webpack,
//! nodemon) treat the events above as changes and re-read the directory.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_engine::Engine;
use berth_proto::control::FsChange;
use berth_proto::shares::Share;

/// Raises guest events for host changes (see the module table).
pub(crate) fn raise(shares: &[Share], changes: &[FsChange]) {
    for change in changes {
        let Some(view) = writable_view(shares, Path::new(&change.path)) else {
            tracing::debug!(path = change.path, "change outside every share");
            continue;
        };
        if change.exists && touch(&view).is_ok() {
            continue;
        }
        // Gone (or not visible yet): tell the nearest existing directory.
        let mut dir = view.parent();
        while let Some(d) = dir {
            if touch(d).is_ok() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// Where `path` (a guest path under a share's mount point) is writable.
fn writable_view(shares: &[Share], path: &Path) -> Option<PathBuf> {
    shares.iter().find_map(|s| {
        let rel = path.strip_prefix(&s.mount_point).ok()?;
        Some(super::shares::hidden_view(s).join(rel))
    })
}

/// `chmod` to the current mode (IN_ATTRIB), and for regular files an open
/// for writing without a write (IN_OPEN, IN_CLOSE_WRITE).
fn touch(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(std::io::Error::other("symlink"));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    if meta.is_file() {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc_flags())
            .open(path);
    }
    Ok(())
}

/// `O_NONBLOCK | O_NOFOLLOW`: a FIFO never blocks us, a symlink swapped in
/// is never followed.
fn libc_flags() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// The share paths running containers bind: what the host should watch.
pub(crate) fn interest(engine: &Engine, shares: &[Share]) -> BTreeSet<String> {
    engine
        .containers()
        .iter()
        .filter(|c| {
            matches!(
                c.state.status,
                berth_engine::container::Status::Running | berth_engine::container::Status::Paused
            )
        })
        .flat_map(|c| c.mounts.iter())
        .filter(|m| m.kind == "bind")
        // `/tmp/x` on a Mac is `/private/tmp/x`: the path the host knows.
        .map(|m| berth_proto::shares::unalias(shares, Path::new(&m.source)))
        .filter(|source| shares.iter().any(|s| source.starts_with(&s.mount_point)))
        .map(|p| p.display().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_view_maps_a_guest_path_into_its_share() {
        let shares = vec![Share {
            tag: "berth0".into(),
            mount_point: "/Users/me".into(),
            writable: false,
        }];
        assert_eq!(
            writable_view(&shares, Path::new("/Users/me/src/a.js")),
            Some(PathBuf::from("/run/berth/shares/berth0/src/a.js"))
        );
        assert_eq!(writable_view(&shares, Path::new("/etc/passwd")), None);
    }

    #[test]
    fn touch_keeps_content_mtime_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "content").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&file).unwrap();

        touch(&file).unwrap();

        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "content");
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
        assert_eq!(after.mode(), before.mode());
    }
}
