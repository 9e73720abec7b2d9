//! Moving `/` off the initramfs.
//!
//! The kernel unpacks the initramfs into `rootfs`, which cannot be
//! `pivot_root`-ed away from, and the engine `pivot_root`s into every
//! container. So PID 1 first copies the initramfs into a tmpfs, moves that
//! tmpfs over `/`, chroots into it and re-executes itself (the classic
//! `switch_root`), marked by [`SWITCHED_ENV`] so it does this once.

use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

/// Set on the re-executed PID 1.
pub(super) const SWITCHED_ENV: &str = "BERTH_ROOT_SWITCHED";
const NEW_ROOT: &str = "/newroot";

/// Copies `/` into a tmpfs and re-executes `/init` from it; returns only on
/// failure.
pub(super) fn switch_to_tmpfs() -> anyhow::Error {
    match copy_and_move() {
        Ok(()) => {
            let err = std::process::Command::new("/init")
                .env(SWITCHED_ENV, "1")
                .exec();
            anyhow::Error::new(err).context("re-executing /init from the new root")
        }
        Err(err) => err,
    }
}

fn copy_and_move() -> Result<()> {
    std::fs::create_dir_all(NEW_ROOT).context("creating /newroot")?;
    mount(
        Some("rootfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .context("mounting the tmpfs root")?;
    copy_tree(Path::new("/"), Path::new(NEW_ROOT))?;
    std::env::set_current_dir(NEW_ROOT).context("entering /newroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the tmpfs over /")?;
    nix::unistd::chroot(".").context("chroot into the tmpfs root")?;
    std::env::set_current_dir("/").context("entering the new /")?;
    Ok(())
}

/// Copies directories, regular files (with their modes) and symlinks;
/// skips device nodes (devtmpfs provides them) and `/newroot` itself.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let src = entry.path();
        if src == Path::new(NEW_ROOT) {
            continue;
        }
        let dest = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .with_context(|| format!("stat {}", src.display()))?;
        if kind.is_symlink() {
            let target =
                std::fs::read_link(&src).with_context(|| format!("readlink {}", src.display()))?;
            std::os::unix::fs::symlink(target, &dest)
                .with_context(|| format!("symlink {}", dest.display()))?;
        } else if kind.is_dir() {
            std::fs::create_dir(&dest).with_context(|| format!("mkdir {}", dest.display()))?;
            let mode = std::fs::metadata(&src)
                .with_context(|| format!("stat {}", src.display()))?
                .permissions();
            std::fs::set_permissions(&dest, mode)
                .with_context(|| format!("chmod {}", dest.display()))?;
            copy_tree(&src, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
            // The initramfs copy is no longer needed: free its memory now.
            let _ = std::fs::remove_file(&src);
        }
    }
    Ok(())
}
