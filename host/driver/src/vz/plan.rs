//! The VM a [`VmSpec`] asks Virtualization.framework for, as plain data.
//!
//! [`Plan::new`] checks everything that can be checked without the
//! framework (kernel format and architecture, CPU and memory bounds,
//! virtio-fs tags, absolute paths) and lists the devices in the order the
//! configuration gets them. The macOS half only translates a plan into
//! `VZ*Configuration` objects one device at a time, so what the driver
//! builds is decided (and unit-tested) here, on every OS.

use std::path::PathBuf;

use crate::{Arch, Error, Result, Share, VmSpec};

/// Kernel command line of every VZ boot. The serial console is the
/// virtio console (`hvc0`); the data disk is the first virtio-blk device
/// (`/dev/vda`), as under QEMU.
pub const BASE_CMDLINE: &str = "console=hvc0 quiet panic=-1";

/// Longest virtio-fs tag the Linux driver accepts (the config space field).
pub const MAX_TAG_BYTES: usize = 36;

/// Virtualization.framework wants the memory size in whole MiB.
const MIB: u64 = 1 << 20;

/// One device of the VM, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// virtio-blk over a raw disk image, host page cache on, flushed with
    /// fsync (Lima's choice: the full-sync mode is slow, and no sync at all
    /// risks the guest's file system on a host crash).
    Disk { path: PathBuf, read_only: bool },
    /// virtio-vsock; the host reaches the guest agent's ports through it.
    Socket,
    /// virtio-fs, one device per share, always exported writable: as with
    /// QEMU's virtiofsd (`qemu::args::virtiofsd_argv`), a read-only share is
    /// made read-only inside the guest, whose agent needs a writable view to
    /// raise change events.
    Share { tag: String, host_path: PathBuf },
    /// virtio-net behind the framework's NAT (vmnet shared mode).
    NatNetwork,
    /// The virtio console as the serial port, written to a file.
    SerialConsole { log: PathBuf },
    /// virtio-rng, so the guest's entropy pool fills at boot.
    Entropy,
    /// The traditional virtio balloon (the host can take memory back).
    MemoryBalloon,
}

/// The whole VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// An uncompressed arm64 `Image` (or x86_64 kernel on an Intel Mac).
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub devices: Vec<Device>,
}

impl Plan {
    /// Plans the VM for `spec`. `kernel_arch` is what
    /// [`Arch::of_kernel_file`] read from the kernel, `host` the machine
    /// this runs on: Virtualization.framework runs guests of the host's
    /// architecture only.
    pub fn new(spec: &VmSpec, kernel_arch: Arch, host: Arch) -> Result<Self> {
        if kernel_arch != host {
            return Err(Error::BadKernel {
                path: spec.kernel.clone(),
                reason: format!(
                    "it is an {} kernel and Virtualization.framework runs {} guests only on this Mac",
                    kernel_arch.name(),
                    host.name()
                ),
            });
        }
        for (what, path) in [
            ("kernel", &spec.kernel),
            ("initramfs", &spec.initramfs),
            ("disk", &spec.disk),
            ("serial log", &spec.serial_log),
        ] {
            if !path.is_absolute() {
                return Err(Error::InvalidSpec(format!(
                    "the {what} path {} is not absolute",
                    path.display()
                )));
            }
        }
        if spec.cpus == 0 {
            return Err(Error::InvalidSpec("cpus must be at least 1".into()));
        }
        if spec.memory_mib == 0 {
            return Err(Error::InvalidSpec("memory must be at least 1 MiB".into()));
        }
        let mut devices = vec![
            Device::Disk {
                path: spec.disk.clone(),
                read_only: false,
            },
            Device::Socket,
        ];
        let mut tags: Vec<&str> = Vec::new();
        for share in &spec.shares {
            check_share(share)?;
            if tags.contains(&share.tag.as_str()) {
                return Err(Error::InvalidSpec(format!(
                    "share tag {:?} is used twice",
                    share.tag
                )));
            }
            tags.push(&share.tag);
            devices.push(Device::Share {
                tag: share.tag.clone(),
                host_path: share.host_path.clone(),
            });
        }
        devices.extend([
            Device::NatNetwork,
            Device::SerialConsole {
                log: spec.serial_log.clone(),
            },
            Device::Entropy,
            Device::MemoryBalloon,
        ]);
        let mut cmdline = BASE_CMDLINE.to_owned();
        if !spec.cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&spec.cmdline);
        }
        Ok(Self {
            kernel: spec.kernel.clone(),
            initramfs: spec.initramfs.clone(),
            cmdline,
            cpus: usize::try_from(spec.cpus)
                .expect("invariant: a u32 fits usize on the 64-bit hosts berth runs on"),
            memory_bytes: u64::from(spec.memory_mib) * MIB,
            devices,
        })
    }

    /// Checks CPU count and memory against the framework's limits on this
    /// Mac (`VZVirtualMachineConfiguration.{minimum,maximum}Allowed*`).
    pub fn check_limits(&self, cpus: (usize, usize), memory_bytes: (u64, u64)) -> Result<()> {
        if !(cpus.0..=cpus.1).contains(&self.cpus) {
            return Err(Error::InvalidSpec(format!(
                "{} CPUs requested; this Mac allows {}..={}",
                self.cpus, cpus.0, cpus.1
            )));
        }
        if !(memory_bytes.0..=memory_bytes.1).contains(&self.memory_bytes) {
            return Err(Error::InvalidSpec(format!(
                "{} MiB of memory requested; this Mac allows {}..={} MiB",
                self.memory_bytes / MIB,
                memory_bytes.0.div_ceil(MIB),
                memory_bytes.1 / MIB
            )));
        }
        Ok(())
    }
}

fn check_share(share: &Share) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidSpec(format!("share {:?}: {why}", share.tag)));
    if share.tag.is_empty() {
        return bad("the tag is empty".into());
    }
    if share.tag.len() > MAX_TAG_BYTES {
        return bad(format!(
            "the tag is {} bytes long; virtio-fs allows {MAX_TAG_BYTES}",
            share.tag.len()
        ));
    }
    if !share.host_path.is_absolute() {
        return bad(format!(
            "the host path {} is not absolute",
            share.host_path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            kernel: "/img/Image".into(),
            initramfs: "/img/initramfs.cpio.zst".into(),
            cmdline: String::new(),
            cpus: 2,
            memory_mib: 2048,
            disk: "/i/disk.raw".into(),
            serial_log: "/i/serial.log".into(),
            state_dir: "/i".into(),
            shares: Vec::new(),
        }
    }

    fn share(tag: &str, host_path: &str) -> Share {
        Share {
            tag: tag.into(),
            host_path: host_path.into(),
            read_only: true,
        }
    }

    #[test]
    fn devices_are_disk_socket_shares_net_console_entropy_balloon_in_order() {
        let spec = VmSpec {
            shares: vec![share("home", "/Users/me"), share("src", "/src")],
            ..spec()
        };

        let plan = Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).unwrap();

        assert_eq!(
            plan.devices,
            vec![
                Device::Disk {
                    path: "/i/disk.raw".into(),
                    read_only: false
                },
                Device::Socket,
                Device::Share {
                    tag: "home".into(),
                    host_path: "/Users/me".into()
                },
                Device::Share {
                    tag: "src".into(),
                    host_path: "/src".into()
                },
                Device::NatNetwork,
                Device::SerialConsole {
                    log: "/i/serial.log".into()
                },
                Device::Entropy,
                Device::MemoryBalloon,
            ]
        );
    }

    #[test]
    fn memory_is_converted_to_bytes_and_cpus_kept() {
        let plan = Plan::new(&spec(), Arch::Aarch64, Arch::Aarch64).unwrap();

        assert_eq!(plan.memory_bytes, 2048 * 1024 * 1024);
        assert_eq!(plan.cpus, 2);
    }

    #[test]
    fn cmdline_uses_the_virtio_console_and_appends_the_spec_cmdline() {
        let spec = VmSpec {
            cmdline: "BERTH_LOG=debug".into(),
            ..spec()
        };

        let plan = Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).unwrap();

        assert_eq!(plan.cmdline, "console=hvc0 quiet panic=-1 BERTH_LOG=debug");
    }

    #[test]
    fn kernel_of_another_architecture_is_refused() {
        let err = Plan::new(&spec(), Arch::X86_64, Arch::Aarch64).unwrap_err();

        assert_eq!(
            err.to_string(),
            "cannot boot kernel /img/Image: it is an x86_64 kernel and Virtualization.framework \
             runs aarch64 guests only on this Mac"
        );
    }

    #[test]
    fn relative_disk_path_is_refused_by_name() {
        let spec = VmSpec {
            disk: "disk.raw".into(),
            ..spec()
        };

        let err = Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid VM spec: the disk path disk.raw is not absolute"
        );
    }

    #[test]
    fn zero_cpus_are_refused() {
        let spec = VmSpec { cpus: 0, ..spec() };

        assert!(Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).is_err());
    }

    #[test]
    fn overlong_share_tag_is_refused_with_its_length() {
        let spec = VmSpec {
            shares: vec![share(&"t".repeat(37), "/src")],
            ..spec()
        };

        let err = Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).unwrap_err();

        assert!(
            err.to_string()
                .ends_with("the tag is 37 bytes long; virtio-fs allows 36"),
            "{err}"
        );
    }

    #[test]
    fn empty_share_tag_is_refused() {
        let spec = VmSpec {
            shares: vec![share("", "/src")],
            ..spec()
        };

        assert!(Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).is_err());
    }

    #[test]
    fn relative_share_path_is_refused() {
        let spec = VmSpec {
            shares: vec![share("src", "src")],
            ..spec()
        };

        let err = Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid VM spec: share \"src\": the host path src is not absolute"
        );
    }

    #[test]
    fn duplicate_share_tags_are_refused() {
        let spec = VmSpec {
            shares: vec![share("src", "/a"), share("src", "/b")],
            ..spec()
        };

        let err = Plan::new(&spec, Arch::Aarch64, Arch::Aarch64).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid VM spec: share tag \"src\" is used twice"
        );
    }

    #[test]
    fn limits_refuse_too_many_cpus_and_name_the_range() {
        let plan = Plan::new(&spec(), Arch::Aarch64, Arch::Aarch64).unwrap();

        let err = plan.check_limits((1, 1), (MIB, 64 << 30)).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid VM spec: 2 CPUs requested; this Mac allows 1..=1"
        );
    }

    #[test]
    fn limits_refuse_too_much_memory_in_mib() {
        let plan = Plan::new(&spec(), Arch::Aarch64, Arch::Aarch64).unwrap();

        let err = plan
            .check_limits((1, 8), (128 * MIB, 1024 * MIB))
            .unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid VM spec: 2048 MiB of memory requested; this Mac allows 128..=1024 MiB"
        );
    }

    #[test]
    fn limits_accept_a_plan_inside_them() {
        let plan = Plan::new(&spec(), Arch::Aarch64, Arch::Aarch64).unwrap();

        plan.check_limits((1, 8), (128 * MIB, 8192 * MIB)).unwrap();
    }
}
