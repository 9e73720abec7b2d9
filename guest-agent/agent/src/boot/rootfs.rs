//! Making `/` something `pivot_root(2)` can leave.
//!
//! The kernel unpacks the initramfs into `rootfs`, the one mount without a
//! parent, and `pivot_root` refuses a root that has no parent; the engine
//! `pivot_root`s into every container. The classic `switch_root` answer is
//! to copy the initramfs into a tmpfs, which cost about 190 ms of TCG time
//! for the 24 MB tree (measured). Instead PID 1 bind-mounts `/` onto
//! `/newroot`, moves that bind mount over `/` and chroots into it: the new
//! root is a mount whose parent is rootfs, which `pivot_root` accepts, and
//! nothing is copied. The files stay where the kernel unpacked them, in
//! memory, as they did in the tmpfs copy.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

const NEW_ROOT: &str = "/newroot";

/// Re-roots this process (PID 1, before it starts anything) on a bind
/// mount of the initramfs; children inherit the new root.
pub(super) fn make_pivotable() -> Result<()> {
    std::fs::create_dir_all(NEW_ROOT).context("creating /newroot")?;
    mount(
        Some("/"),
        NEW_ROOT,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("bind-mounting / on /newroot")?;
    std::env::set_current_dir(NEW_ROOT).context("entering /newroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the bind mount over /")?;
    nix::unistd::chroot(".").context("chroot into the bind mount")?;
    std::env::set_current_dir("/").context("entering the new /")?;
    // The mount point, seen from inside: an empty directory of the tree.
    let _ = std::fs::remove_dir(NEW_ROOT);
    Ok(())
}
