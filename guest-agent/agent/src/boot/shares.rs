//! The host's file shares (virtio-fs), mounted by PID 1 before the agent
//! starts, so that containers restarted at boot find their bind sources.
//!
//! Each share (`berth.share=` on the kernel command line, see
//! `berth_proto::shares`) is mounted read-write at a hidden path,
//! [`SHARES_DIR`]`/<tag>`, then bind-mounted at its mount point, read-only
//! unless the share is writable, and at its aliases
//! ([`berth_proto::shares::ALIASES`]: a Mac's `/private/tmp` at `/tmp`
//! too). The hidden writable view is the agent's alone: it raises change
//! events through it ([`super::fsevents`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_proto::shares::{Share, parse_cmdline};
use nix::mount::{MsFlags, mount};

/// Where each share's writable view is mounted.
pub(crate) const SHARES_DIR: &str = "/run/berth/shares";

/// The shares the host configured for this boot.
pub(crate) fn configured() -> Vec<Share> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (shares, bad) = parse_cmdline(&cmdline);
    for word in bad {
        tracing::warn!("ignoring malformed share parameter {word}");
    }
    shares
}

/// The agent's writable view of `share`.
pub(crate) fn hidden_view(share: &Share) -> PathBuf {
    Path::new(SHARES_DIR).join(&share.tag)
}

/// Mounts every configured share; a share that fails is logged and skipped.
pub(super) fn mount_all() {
    for share in configured() {
        match mount_share(&share) {
            Ok(()) => tracing::info!(
                tag = share.tag,
                at = %share.mount_point.display(),
                writable = share.writable,
                "mounted share"
            ),
            Err(err) => tracing::error!(tag = share.tag, "mounting share: {err:#}"),
        }
    }
}

fn mount_share(share: &Share) -> Result<()> {
    let hidden = hidden_view(share);
    std::fs::create_dir_all(&hidden).with_context(|| format!("creating {}", hidden.display()))?;
    mount(
        Some(share.tag.as_str()),
        &hidden,
        Some("virtiofs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mounting virtio-fs tag {} on {}",
            share.tag,
            hidden.display()
        )
    })?;
    show_at(&hidden, &share.mount_point, share.writable)?;
    for alias in share.aliases() {
        show_at(&hidden, alias, share.writable)?;
    }
    Ok(())
}

/// Bind-mounts the share's view `hidden` at `target`, read-only unless
/// `writable`.
fn show_at(hidden: &Path, target: &Path, writable: bool) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    mount(
        Some(hidden),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting the share on {}", target.display()))?;
    if !writable {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("making {} read-only", target.display()))?;
    }
    Ok(())
}
