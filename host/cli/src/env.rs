//! Every environment variable `berth` reads, in one place.

/// Root of all instance state (default `~/.berth`).
pub const BERTH_HOME: &str = "BERTH_HOME";
/// A directory holding `vmlinux` and `initramfs.cpio.zst` to boot instead of
/// the image built from the source checkout.
pub const BERTH_IMAGE_DIR: &str = "BERTH_IMAGE_DIR";
/// Seconds the guest agent may take to answer after QEMU starts.
pub const BERTH_BOOT_TIMEOUT: &str = "BERTH_BOOT_TIMEOUT";
/// Extra kernel command line for the guest (e.g. `BERTH_LOG=debug`).
pub const BERTH_KERNEL_CMDLINE: &str = "BERTH_KERNEL_CMDLINE";
/// Log filter of the host agent (`hostagent.log`).
pub const BERTH_LOG: &str = "BERTH_LOG";
/// Seconds a readiness probe of the template may keep failing (default 600).
pub const BERTH_PROBE_TIMEOUT: &str = "BERTH_PROBE_TIMEOUT";
/// The editor `berth edit` runs (`VISUAL` first, then `EDITOR`, else `vi`).
pub const VISUAL: &str = "VISUAL";
pub const EDITOR: &str = "EDITOR";
