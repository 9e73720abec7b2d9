//! The file system of a container that is not running, as its processes
//! would see it: the overlay root with the container's volumes and binds
//! mounted at their destinations (dockerd mounts them for archive
//! operations on a stopped container too).
//!
//! Everything is mounted in a private mount namespace that only a
//! short-lived thread ever enters: the thread unshares `CLONE_NEWNS`, makes
//! every mount private (nothing propagates back to the engine's
//! namespace), mounts the overlay and the binds, opens the root and a
//! descriptor of the namespace itself, and exits. The namespace descriptor
//! keeps the mounts alive while the operation walks the root descriptor;
//! closing it tears the whole tree down. So the engine's mount table never
//! changes, and no error path or crash can leave a mount behind.
//!
//! Mount destinations are resolved as the runtime helper resolves them:
//! inside the root with [`Root::mkdir_all`]/[`Root::create_file`] (a
//! destination that is a symlink chain stays inside the root or fails with
//! `ELOOP`), and the bind lands on the resolved descriptor through
//! `/proc/self/fd/N`. Read-only volumes and binds are mounted read-only;
//! a read-only root file system is remounted read-only after the binds.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use rustix::fs::{Mode, OFlags};

use super::MountPoint;
use crate::fsutil::inroot::{metadata, proc_fd_path};
use crate::fsutil::{Root, tree};
use crate::{Error, Result};

/// What to mount for one stopped container.
pub(super) struct Plan {
    pub id: String,
    /// The overlay mount point (the container's `rootfs` directory).
    pub target: PathBuf,
    /// overlay mount options (`lowerdir=...,upperdir=...,workdir=...`).
    pub overlay: String,
    pub readonly_rootfs: bool,
    pub mounts: Vec<MountPoint>,
}

/// A mounted root: the root descriptor and the private namespace that
/// holds its mounts. Dropping it unmounts everything (drop the root first).
pub(super) struct Mounted {
    pub root: Root,
    pub namespace: OwnedFd,
}

/// Mounts `plan` in a fresh private mount namespace (on a dedicated
/// thread, which exits when done) and returns its root.
pub(super) fn mount(plan: Plan) -> Result<Mounted> {
    let id = plan.id.clone();
    std::thread::Builder::new()
        .name("berth-cp-mount".into())
        .spawn(move || build(&plan))
        .map_err(|e| Error::Runtime {
            context: format!("starting a mount thread for container {id}"),
            source: Some(e),
        })?
        .join()
        .map_err(|_| Error::Runtime {
            context: format!("the mount thread for container {id} panicked"),
            source: None,
        })?
}

fn failed(id: &str, what: String) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} for container {id}");
    move |e| Error::Runtime {
        context,
        source: Some(e),
    }
}

fn nix_failed(id: &str, what: String) -> impl FnOnce(nix::Error) -> Error {
    let inner = failed(id, what);
    move |e| inner(e.into())
}

/// Runs on the mount thread: from the `unshare` on, this thread alone is in
/// the new namespace; it is gone once the thread returns.
fn build(plan: &Plan) -> Result<Mounted> {
    let id = plan.id.as_str();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(nix_failed(id, "unsharing a mount namespace".into()))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_failed(id, "making the copy namespace private".into()))?;
    nix::mount::mount(
        Some("overlay"),
        &plan.target,
        Some("overlay"),
        MsFlags::empty(),
        Some(plan.overlay.as_str()),
    )
    .map_err(nix_failed(id, "mounting the root file system".into()))?;
    let root = Root::open(&plan.target).map_err(failed(
        id,
        format!("opening the root at {}", plan.target.display()),
    ))?;
    for m in plan.mounts.iter().filter(|m| m.kind != "tmpfs") {
        bind(id, &root, m)?;
    }
    if plan.readonly_rootfs {
        nix::mount::mount(
            None::<&str>,
            &plan.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(nix_failed(id, "remounting the root read-only".into()))?;
    }
    let namespace = rustix::fs::open(
        "/proc/thread-self/ns/mnt",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed(id, "opening the copy mount namespace".into())(e.into()))?;
    Ok(Mounted { root, namespace })
}

/// Bind-mounts volume or bind `m` at its destination inside `root`, as the
/// runtime helper does at start (copy-up of image content into an empty
/// volume included).
fn bind(id: &str, root: &Root, m: &MountPoint) -> Result<()> {
    let destination = m.destination.as_str();
    let source = Path::new(&m.source);
    let source_meta = std::fs::metadata(source).map_err(failed(
        id,
        format!("{} source {} of {destination}", m.kind, source.display()),
    ))?;
    let is_dir = source_meta.is_dir();
    let target = if is_dir {
        root.mkdir_all(destination, 0o755)
    } else {
        root.create_file(destination)
    }
    .map_err(failed(
        id,
        format!("creating the mount point {destination}"),
    ))?;
    let kind = metadata(&target)
        .map_err(failed(id, format!("stat of the mount point {destination}")))?
        .st_mode
        & libc::S_IFMT;
    if kind == libc::S_IFLNK || (kind == libc::S_IFDIR) != is_dir {
        return Err(Error::Runtime {
            context: format!(
                "mount point {destination} of container {id} is not a {} inside the container root",
                if is_dir { "directory" } else { "file" }
            ),
            source: None,
        });
    }
    if m.kind == "volume" && is_dir && !m.mode.split(',').any(|o| o == "nocopy") {
        let volume = rustix::fs::open(
            source,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(id, format!("opening volume {}", source.display()))(e.into()))?;
        tree::copy_up(&target, &volume).map_err(failed(
            id,
            format!("copying image content into volume {}", source.display()),
        ))?;
    }
    let on = proc_fd_path(&target);
    nix::mount::mount(
        Some(source),
        &on,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_failed(
        id,
        format!("mounting {} on {destination}", source.display()),
    ))?;
    if !m.rw {
        use std::os::unix::fs::MetadataExt;
        // Remount what is now on top of the destination: the bind.
        let top = root.resolve(destination).map_err(failed(
            id,
            format!("re-opening the mount point {destination}"),
        ))?;
        let st = metadata(&top).map_err(failed(id, format!("stat of {destination}")))?;
        if st.st_dev != source_meta.dev() || st.st_ino != source_meta.ino() {
            return Err(Error::Runtime {
                context: format!(
                    "mount point {destination} of container {id} changed while it was being mounted"
                ),
                source: None,
            });
        }
        nix::mount::mount(
            None::<&str>,
            &proc_fd_path(&top),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(nix_failed(
            id,
            format!("remounting {destination} read-only"),
        ))?;
    }
    Ok(())
}
