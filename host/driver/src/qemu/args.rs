//! QEMU and vhost-device-vsock command lines, built from plain data.
//!
//! x86_64: the machine is `microvm` booting the uncompressed kernel through
//! PVH, with virtio-mmio devices only: the measured fastest boot under TCG.
//! aarch64: the `virt` machine booting the arm64 `Image` directly (device
//! tree, no firmware), with virtio-pci devices and the PL011 UART as the
//! console; under TCG the CPU is `max` with the cheap implementation-defined
//! pointer-authentication algorithm (QEMU's documented speed-up: the
//! architected QARMA one dominates emulation time).
//!
//! Memory is a shared memfd because vhost-user backends (vhost-device-vsock)
//! map guest memory. User networking is `restrict=on`: the guest reaches
//! nothing outside, not even the host, unless a forward is added.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{Accel, Arch, VmSpec};

/// Guest CID; the only guest on its own vhost-device-vsock.
pub const GUEST_CID: u32 = 3;

/// Kernel command line every x86_64 boot gets. `quiet` and the trimmed
/// legacy devices shave 0.1-0.2 s off a TCG boot (measured).
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1 mitigations=off i8042.noaux i8042.nokbd \
     i8042.nopnp 8250.nr_uarts=1 random.trust_cpu=on no_timer_check";

/// What an x86_64 guest under TCG adds to [`BASE_CMDLINE`]:
/// * `tsc_early_khz`: microvm has no HPET or PM timer to fall back on when
///   the PIT calibration of the TSC fails under load (the boot hangs);
/// * `tsc=reliable`: TCG's TSC is one host-derived counter for every vCPU,
///   but the kernel's cross-CPU sync check fails under TCG, marks it
///   unstable and falls back to a 4 ms jiffies clock (measured), which
///   every timestamp and sleep in the guest and its containers then has.
pub fn tcg_x86_cmdline(tsc_khz: Option<u64>) -> String {
    match tsc_khz {
        Some(khz) => format!("tsc=reliable tsc_early_khz={khz}"),
        None => "tsc=reliable".to_owned(),
    }
}

/// Kernel command line every aarch64 boot gets (the `virt` board's PL011).
pub const AARCH64_CMDLINE: &str =
    "console=ttyAMA0 quiet panic=-1 mitigations=off random.trust_cpu=on";

/// Inputs for [`qemu_argv`] besides the spec.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The guest architecture (from the kernel).
    pub arch: Arch,
    pub accel: Accel,
    /// Host TSC frequency in kHz, passed as `tsc_early_khz` under TCG
    /// (microvm has no HPET/PM timer to fall back on if calibration fails).
    pub tsc_khz: Option<u64>,
    pub vhost_user_socket: PathBuf,
    pub pid_file: PathBuf,
    /// The vhost-user socket of each share's virtiofsd, in `spec.shares` order.
    pub share_sockets: Vec<PathBuf>,
}

/// The full QEMU argument list (without the binary).
pub fn qemu_argv(spec: &VmSpec, opts: &QemuOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
    let memory = format!("{}M", spec.memory_mib);
    let x86 = opts.arch == Arch::X86_64;
    push(&[
        "-M",
        if x86 {
            "microvm,memory-backend=mem"
        } else {
            "virt,memory-backend=mem"
        },
    ]);
    match (&opts.accel, opts.arch) {
        (Accel::Kvm, _) => push(&["-accel", "kvm", "-cpu", "host"]),
        (Accel::Tcg { .. }, Arch::X86_64) => push(&["-accel", "tcg", "-cpu", "max"]),
        (Accel::Tcg { .. }, Arch::Aarch64) => {
            push(&["-accel", "tcg", "-cpu", "max,pauth-impdef=on"]);
        }
    }
    push(&["-smp", &spec.cpus.to_string(), "-m", &memory]);
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={memory},share=on"),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ]);
    push(&["-serial", &format!("file:{}", spec.serial_log.display())]);
    push(&[
        "-kernel",
        &path(&spec.kernel),
        "-initrd",
        &path(&spec.initramfs),
    ]);
    let mut cmdline = if x86 { BASE_CMDLINE } else { AARCH64_CMDLINE }.to_owned();
    if let (true, Accel::Tcg { .. }) = (x86, &opts.accel) {
        cmdline.push(' ');
        cmdline.push_str(&tcg_x86_cmdline(opts.tsc_khz));
    }
    if !spec.cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&spec.cmdline);
    }
    push(&["-append", &cmdline]);
    push(&[
        "-chardev",
        &format!("socket,id=vsock,path={}", opts.vhost_user_socket.display()),
    ]);
    // microvm has virtio-mmio transports only; virt gets PCI devices.
    let bus = if x86 { "device" } else { "pci" };
    push(&["-device", &format!("vhost-user-vsock-{bus},chardev=vsock")]);
    for (i, (share, socket)) in spec.shares.iter().zip(&opts.share_sockets).enumerate() {
        push(&[
            "-chardev",
            &format!("socket,id=fs{i},path={}", socket.display()),
        ]);
        push(&[
            "-device",
            &format!("vhost-user-fs-{bus},chardev=fs{i},tag={}", share.tag),
        ]);
    }
    push(&[
        "-drive",
        &format!(
            "file={},format=raw,if=none,id=data,discard=unmap",
            spec.disk.display()
        ),
    ]);
    push(&["-device", &format!("virtio-blk-{bus},drive=data")]);
    push(&["-netdev", "user,id=net0,restrict=on"]);
    push(&["-device", &format!("virtio-net-{bus},netdev=net0")]);
    push(&["-pidfile", &path(&opts.pid_file)]);
    args
}

/// vhost-device-vsock's arguments: the vhost-user socket QEMU connects to
/// and the hybrid socket the host dials.
pub fn vsockd_argv(vhost_user_socket: &Path, uds: &Path) -> Vec<OsString> {
    vec![
        "--guest-cid".into(),
        GUEST_CID.to_string().into(),
        "--socket".into(),
        vhost_user_socket.into(),
        "--uds-path".into(),
        uds.into(),
    ]
}

/// virtiofsd's arguments for one share. `cache=auto` (1 s metadata
/// timeouts) is the measured best for source trees. The sandbox is a mount
/// namespace when root, else none (an unprivileged virtiofsd cannot make
/// one without user namespaces).
///
/// Read-only shares are exported writable and made read-only in the guest
/// (a read-only bind mount over the share): the guest agent needs a
/// writable view to raise change events (a same-mode `chmod`, an
/// open-for-write without writing), which change no content or mtime.
pub fn virtiofsd_argv(share: &crate::Share, socket: &Path, root: bool) -> Vec<OsString> {
    vec![
        "--socket-path".into(),
        socket.into(),
        "--shared-dir".into(),
        share.host_path.clone().into(),
        "--cache".into(),
        "auto".into(),
        "--sandbox".into(),
        if root { "namespace" } else { "none" }.into(),
    ]
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The host TSC frequency from `/proc/cpuinfo`'s first `cpu MHz` line.
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a CPU frequency in kHz fits u64"
    )]
    Some((mhz * 1000.0).round() as u64).filter(|khz| *khz > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            kernel: "/img/vmlinux".into(),
            initramfs: "/img/initramfs.cpio.zst".into(),
            cmdline: String::new(),
            cpus: 2,
            memory_mib: 1024,
            disk: "/i/disk.raw".into(),
            serial_log: "/i/serial.log".into(),
            state_dir: "/i".into(),
            shares: Vec::new(),
        }
    }

    fn opts(accel: Accel) -> QemuOptions {
        QemuOptions {
            arch: Arch::X86_64,
            accel,
            tsc_khz: Some(2_596_146),
            vhost_user_socket: "/i/vhu.sock".into(),
            pid_file: "/i/qemu.pid".into(),
            share_sockets: Vec::new(),
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn tcg_uses_cpu_max_and_tsc_early_khz() {
        let argv = joined(&qemu_argv(
            &spec(),
            &opts(Accel::Tcg {
                reason: String::new(),
            }),
        ));
        assert!(argv.contains("-accel tcg -cpu max"));
        assert!(argv.contains("tsc=reliable tsc_early_khz=2596146"));
    }

    #[test]
    fn kvm_uses_cpu_host_without_tsc_hint() {
        let argv = joined(&qemu_argv(&spec(), &opts(Accel::Kvm)));
        assert!(argv.contains("-accel kvm -cpu host"));
        assert!(!argv.contains("tsc_early_khz"));
        assert!(!argv.contains("tsc=reliable"));
    }

    #[test]
    fn memory_is_shared_memfd_backing_microvm() {
        let argv = joined(&qemu_argv(&spec(), &opts(Accel::Kvm)));
        assert!(argv.contains("-M microvm,memory-backend=mem"));
        assert!(argv.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(argv.contains("-m 1024M"));
    }

    #[test]
    fn devices_are_vsock_disk_and_restricted_net() {
        let argv = joined(&qemu_argv(&spec(), &opts(Accel::Kvm)));
        assert!(argv.contains("-chardev socket,id=vsock,path=/i/vhu.sock -device vhost-user-vsock-device,chardev=vsock"));
        assert!(argv.contains("file=/i/disk.raw,format=raw"));
        assert!(argv.contains("-netdev user,id=net0,restrict=on"));
        assert!(argv.contains("-serial file:/i/serial.log"));
    }

    fn tcg() -> Accel {
        Accel::Tcg {
            reason: String::new(),
        }
    }

    fn aarch64_opts() -> QemuOptions {
        QemuOptions {
            arch: Arch::Aarch64,
            ..opts(tcg())
        }
    }

    #[test]
    fn aarch64_uses_virt_with_shared_memory_and_fast_pauth() {
        let argv = joined(&qemu_argv(&spec(), &aarch64_opts()));

        assert!(argv.starts_with("-M virt,memory-backend=mem -accel tcg -cpu max,pauth-impdef=on"));
        assert!(argv.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
    }

    #[test]
    fn aarch64_devices_are_pci() {
        let argv = joined(&qemu_argv(&spec(), &aarch64_opts()));

        assert!(argv.contains("-device vhost-user-vsock-pci,chardev=vsock"));
        assert!(argv.contains("-device virtio-blk-pci,drive=data"));
        assert!(argv.contains("-device virtio-net-pci,netdev=net0"));
        assert!(!argv.contains("-device virtio-blk-device"));
    }

    #[test]
    fn aarch64_console_is_the_pl011_without_x86_hints() {
        let argv = qemu_argv(&spec(), &aarch64_opts());
        let append = argv.iter().position(|a| a == "-append").unwrap();
        let cmdline = argv[append + 1].to_string_lossy();

        assert!(cmdline.starts_with("console=ttyAMA0 "), "{cmdline}");
        assert!(!cmdline.contains("tsc_early_khz"), "{cmdline}");
        assert!(!cmdline.contains("i8042"), "{cmdline}");
    }

    #[test]
    fn extra_cmdline_is_appended() {
        let spec = VmSpec {
            cmdline: "BERTH_LOG=debug".into(),
            ..spec()
        };
        let argv = qemu_argv(&spec, &opts(Accel::Kvm));
        let append = argv.iter().position(|a| a == "-append").unwrap();
        assert!(
            argv[append + 1]
                .to_string_lossy()
                .ends_with("no_timer_check BERTH_LOG=debug")
        );
    }

    #[test]
    fn each_share_is_a_vhost_user_fs_device_with_its_tag() {
        let spec = VmSpec {
            shares: vec![crate::Share {
                tag: "berth0".into(),
                host_path: "/home/me".into(),
                read_only: true,
            }],
            ..spec()
        };
        let mut o = opts(Accel::Kvm);
        o.share_sockets = vec!["/i/fs0.sock".into()];

        let argv = qemu_argv(&spec, &o);
        let joined = argv
            .join(std::ffi::OsStr::new(" "))
            .to_string_lossy()
            .into_owned();

        assert!(
            joined.contains("-chardev socket,id=fs0,path=/i/fs0.sock"),
            "{joined}"
        );
        assert!(
            joined.contains("-device vhost-user-fs-device,chardev=fs0,tag=berth0"),
            "{joined}"
        );
        let fsd = virtiofsd_argv(&spec.shares[0], Path::new("/i/fs0.sock"), true);
        assert_eq!(
            fsd.join(std::ffi::OsStr::new(" ")).to_string_lossy(),
            "--socket-path /i/fs0.sock --shared-dir /home/me --cache auto --sandbox namespace"
        );
    }

    #[test]
    fn vsockd_gets_cid_and_both_sockets() {
        let argv = joined(&vsockd_argv(
            Path::new("/i/vhu.sock"),
            Path::new("/i/vsock.sock"),
        ));
        assert_eq!(
            argv,
            "--guest-cid 3 --socket /i/vhu.sock --uds-path /i/vsock.sock"
        );
    }

    #[test]
    fn tsc_khz_reads_first_cpu_mhz() {
        let cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2596.146\ncpu MHz\t\t: 1.0\n";
        assert_eq!(tsc_khz_from_cpuinfo(cpuinfo), Some(2_596_146));
    }

    #[test]
    fn tsc_khz_is_none_without_cpu_mhz() {
        assert_eq!(tsc_khz_from_cpuinfo("processor : 0\n"), None);
    }
}
