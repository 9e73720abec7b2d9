//! The two guest architectures and everything that differs between them.
//!
//! | | x86_64 | aarch64 |
//! |---|---|---|
//! | kernel | `vmlinux` cut out of the cloud-amd64 bzImage (PVH boot) | the cloud-arm64 `Image` as shipped (uncompressed) |
//! | agent | `x86_64-unknown-linux-musl`, host toolchain | `aarch64-unknown-linux-musl`, linked (and ring's C built) with `aarch64-linux-gnu-gcc` |
//! | busybox | the host's `/bin/busybox` | the pinned `busybox-static:arm64` package |
//! | current image | `<out>/current` | `<out>/current-aarch64` |
//!
//! The aarch64 image serves both `qemu-system-aarch64 -M virt` (CI, TCG)
//! and Virtualization.framework on Apple silicon.

use std::str::FromStr;

use crate::kernel::{self, KernelPin};
use crate::modules::GUEST_MODULES;

/// A guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    X86_64,
    Aarch64,
}

/// What Virtualization.framework adds on arm64: the virtio console (the
/// `hvc0` serial port), the balloon and the entropy device. All three are
/// modules in the cloud-arm64 kernel.
const AARCH64_EXTRA_MODULES: &[&str] = &["virtio_console", "virtio_balloon", "virtio_rng"];

impl GuestArch {
    /// The architecture of the machine this runs on (aarch64 on Apple
    /// silicon, x86_64 elsewhere).
    pub fn host() -> Self {
        if std::env::consts::ARCH == "aarch64" {
            Self::Aarch64
        } else {
            Self::X86_64
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for it.
    pub fn deb_arch(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Aarch64 => "arm64",
        }
    }

    /// The pinned kernel package.
    pub fn kernel_pin(self) -> KernelPin {
        match self {
            Self::X86_64 => kernel::X86_64,
            Self::Aarch64 => kernel::AARCH64,
        }
    }

    /// The Rust target of the static guest agent.
    pub fn agent_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The kernel's file name in an image directory.
    pub fn kernel_file(self) -> &'static str {
        match self {
            Self::X86_64 => "vmlinux",
            Self::Aarch64 => "Image",
        }
    }

    /// The file in the output directory naming this architecture's newest
    /// image.
    pub fn current_file(self) -> &'static str {
        match self {
            Self::X86_64 => "current",
            Self::Aarch64 => "current-aarch64",
        }
    }

    /// `strip` for this architecture's binaries.
    pub fn strip(self) -> &'static str {
        match self {
            Self::X86_64 => "strip",
            Self::Aarch64 => "aarch64-linux-gnu-strip",
        }
    }

    /// Environment for `cargo build` of the agent when it is a cross build:
    /// the linker, and the C compiler and archiver for ring's C code. Values
    /// already in the environment win.
    pub fn cross_env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::X86_64 => &[],
            Self::Aarch64 => &[
                (
                    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
                    "aarch64-linux-gnu-gcc",
                ),
                ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
                ("AR_aarch64_unknown_linux_musl", "aarch64-linux-gnu-ar"),
            ],
        }
    }

    /// The kernel modules PID 1 loads at boot, in load order (the deferred
    /// and lazy ones in [`crate::modules`] are the same on both).
    pub fn modules(self) -> Vec<&'static str> {
        let mut modules = GUEST_MODULES.to_vec();
        if self == Self::Aarch64 {
            modules.extend_from_slice(AARCH64_EXTRA_MODULES);
        }
        modules
    }
}

impl FromStr for GuestArch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "x86_64" | "amd64" => Ok(Self::X86_64),
            "aarch64" | "arm64" => Ok(Self::Aarch64),
            other => Err(format!(
                "unknown guest architecture {other:?} (expected x86_64 or aarch64)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_and_rust_names_both_parse() {
        assert_eq!("arm64".parse(), Ok(GuestArch::Aarch64));
        assert_eq!("aarch64".parse(), Ok(GuestArch::Aarch64));
        assert_eq!("amd64".parse(), Ok(GuestArch::X86_64));
    }

    #[test]
    fn unknown_arch_is_refused_by_name() {
        assert_eq!(
            "riscv64".parse::<GuestArch>(),
            Err("unknown guest architecture \"riscv64\" (expected x86_64 or aarch64)".into())
        );
    }

    #[test]
    fn aarch64_loads_the_vz_devices_drivers_after_the_common_ones() {
        let modules = GuestArch::Aarch64.modules();

        assert_eq!(&modules[..GUEST_MODULES.len()], GUEST_MODULES);
        assert_eq!(
            &modules[GUEST_MODULES.len()..],
            ["virtio_console", "virtio_balloon", "virtio_rng"]
        );
    }

    #[test]
    fn x86_64_loads_the_common_modules_only() {
        assert_eq!(GuestArch::X86_64.modules(), GUEST_MODULES);
    }

    #[test]
    fn each_arch_has_its_own_current_image() {
        assert_ne!(
            GuestArch::X86_64.current_file(),
            GuestArch::Aarch64.current_file()
        );
    }
}
