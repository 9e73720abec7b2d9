//! One-shot machine setup PID 1 does before it starts the agent.
//!
//! Each step logs one line on the serial console. Steps the engine cannot
//! live without (mounts, the data disk) fail the boot; the rest only warn.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};

/// Where the data disk is mounted; the engine's state lives below it.
pub(super) const DATA_DIR: &str = "/var/lib/berth";
/// The data disk: the first virtio-blk device.
const DATA_DISK: &str = "/dev/vda";
/// Module lists written by the image builder, one name a line: what the
/// boot path needs (PID 1 loads it), what containers need (the agent loads
/// it in the background, [`super::agent`]).
pub(super) const BOOT_MODULES: &str = "/etc/berth/modules";
pub(super) const DEFERRED_MODULES: &str = "/etc/berth/modules-deferred";
/// Busybox, with its applets linked in /bin, /sbin, /usr/bin, /usr/sbin.
const BUSYBOX: &str = "/bin/busybox";

/// Mounts /proc, /sys, /dev, cgroup2, /tmp and /run.
pub(super) fn mount_pseudo_filesystems() -> Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nosuid, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    for dir in ["/dev/pts", "/dev/shm", "/dev/mqueue"] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    }
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_fs(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fs("mqueue", "/dev/mqueue", "mqueue", nosuid, None)?;
    mount_fs(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        nosuid,
        Some("nsdelegate"),
    )?;
    mount_fs(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    Ok(())
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    mount(Some(source), target, Some(fstype), flags, data)
        .with_context(|| format!("mounting {fstype} on {target}"))
}

/// Loads the modules of one of the image's module lists (one name a
/// line) and their dependencies, one loader thread per CPU. `virtio_pci`
/// only when there is a PCI bus: QEMU's microvm has none (its virtio
/// devices are MMIO), QEMU's `virt` and Virtualization.framework do.
pub(super) fn load_modules(list: &str) -> Result<()> {
    let text = std::fs::read_to_string(list).with_context(|| format!("reading {list}"))?;
    let pci = std::fs::read_dir("/sys/bus/pci/devices").is_ok_and(|mut d| d.next().is_some());
    let modules: Vec<&str> = text
        .split_whitespace()
        .filter(|m| pci || *m != "virtio_pci")
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    super::modules::ModuleIndex::open()?.load(&modules, threads)
}

/// Offset and value of the ext2/3/4 superblock magic on a block device.
const EXT_MAGIC_OFFSET: usize = 1080;
const EXT_MAGIC: [u8; 2] = [0x53, 0xef];

/// Whether `header` (the first 2 KiB of a device) holds an ext file system.
pub(super) fn has_ext_magic(header: &[u8]) -> bool {
    header.get(EXT_MAGIC_OFFSET..EXT_MAGIC_OFFSET + 2) == Some(&EXT_MAGIC[..])
}

/// Formats the data disk on first boot and mounts it at [`DATA_DIR`].
pub(super) fn mount_data_disk() -> Result<()> {
    wait_for(Path::new(DATA_DISK))?;
    let mut header = vec![0u8; 2048];
    std::fs::File::open(DATA_DISK)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("reading the superblock of {DATA_DISK}"))?;
    if !has_ext_magic(&header) {
        tracing::info!(disk = DATA_DISK, "first boot: formatting the data disk");
        // busybox mke2fs makes ext2, which the ext4 driver mounts. It writes
        // the inode tables in full, so their size is the first-boot cost:
        // at most 256 Ki inodes (64 MiB of tables), at least 64 KiB each.
        let bytes_per_inode = bytes_per_inode(disk_bytes()).to_string();
        let status = Command::new(BUSYBOX)
            .args([
                "mke2fs",
                "-F",
                "-i",
                &bytes_per_inode,
                "-m",
                "0",
                "-L",
                "berth-data",
                DATA_DISK,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running mke2fs")?;
        if !status.success() {
            bail!("mke2fs {DATA_DISK} failed: {status}");
        }
    }
    std::fs::create_dir_all(DATA_DIR).with_context(|| format!("creating {DATA_DIR}"))?;
    mount(
        Some(DATA_DISK),
        DATA_DIR,
        Some("ext4"),
        MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .with_context(|| format!("mounting {DATA_DISK} on {DATA_DIR}"))
}

/// The data disk's size from sysfs (512-byte sectors); 0 if unknown.
fn disk_bytes() -> u64 {
    let dev = Path::new(DATA_DISK)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::read_to_string(format!("/sys/block/{dev}/size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |sectors| sectors * 512)
}

/// One inode per this many bytes: 64 KiB, or more (a power of two) so that
/// the disk gets at most 256 Ki inodes.
pub(super) fn bytes_per_inode(disk: u64) -> u64 {
    (disk / (256 * 1024)).next_power_of_two().max(65_536)
}

fn wait_for(path: &Path) -> Result<()> {
    // virtio_blk registers the disk while its module loads; this covers a slow
    // asynchronous probe. 5 s is far beyond anything seen under TCG.
    for _ in 0..500 {
        if path.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    bail!("{} did not appear (no data disk attached?)", path.display())
}

/// Static configuration for the VM's network (QEMU user networking,
/// slirp): guest 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3. Runs in the
/// agent after the deferred modules (virtio_net among them) are in.
pub(super) async fn bring_up_network() -> Result<()> {
    use berth_engine::network::bridge::configure_link;
    configure_link("lo", None, None).await?;
    std::fs::create_dir_all("/etc").context("creating /etc")?;
    std::fs::write(
        "/etc/hosts",
        "127.0.0.1 localhost\n::1 localhost\n127.0.1.1 berth\n",
    )
    .context("writing /etc/hosts")?;
    // virtio_net registers eth0 while its module loads.
    if !Path::new("/sys/class/net/eth0").exists() {
        tracing::warn!("no eth0: the VM has no network");
        return Ok(());
    }
    let gateway = std::net::Ipv4Addr::new(10, 0, 2, 2);
    configure_link(
        "eth0",
        Some((std::net::Ipv4Addr::new(10, 0, 2, 15), 24)),
        Some(gateway),
    )
    .await?;
    std::fs::write("/etc/resolv.conf", "nameserver 10.0.2.3\n")
        .context("writing /etc/resolv.conf")?;
    Ok(())
}

/// Best effort: hostname and cgroup controllers for child cgroups.
pub(super) fn misc() {
    if let Err(err) = nix::unistd::sethostname("berth") {
        tracing::warn!(%err, "setting the hostname");
    }
    if let Ok(controllers) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let enable: Vec<String> = controllers
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        if let Err(err) = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.join(" "))
        {
            tracing::warn!(%err, "enabling cgroup controllers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_ext_magic_detects_superblock() {
        let mut header = vec![0u8; 2048];
        header[1080] = 0x53;
        header[1081] = 0xef;
        assert!(has_ext_magic(&header));
    }

    #[test]
    fn inode_tables_stay_small_on_big_disks() {
        const GIB: u64 = 1 << 30;
        assert_eq!(bytes_per_inode(0), 65_536);
        assert_eq!(bytes_per_inode(16 * GIB), 65_536);
        assert_eq!(bytes_per_inode(32 * GIB), 131_072);
        assert_eq!(bytes_per_inode(100 * GIB), 524_288);
        assert!(100 * GIB / bytes_per_inode(100 * GIB) <= 256 * 1024);
    }

    #[test]
    fn has_ext_magic_rejects_blank_disk() {
        assert!(!has_ext_magic(&[0u8; 2048]));
    }
}
