//! What a kernel file boots on, read from its first bytes.
//!
//! The guest architecture follows from the kernel a driver is handed, so
//! the same `VmSpec` boots an x86_64 image with `qemu-system-x86_64` and an
//! arm64 image with `qemu-system-aarch64` (or Virtualization.framework):
//!
//! * an ELF `vmlinux` (x86_64 PVH boot): `e_machine` says which;
//! * an x86 bzImage: the `HdrS` setup-header magic at 0x202;
//! * an arm64 `Image`: the magic `ARM\x64` at 0x38 (Linux
//!   `Documentation/arch/arm64/booting.rst`).
//!
//! A gzip-compressed arm64 `vmlinuz` (Debian's packaging) is recognised
//! only to be refused with a clear reason: Virtualization.framework boots
//! the uncompressed `Image` only, and the image builder unpacks it.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// A guest CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// Bytes of a kernel file [`Arch::of_kernel`] needs.
pub const HEADER_LEN: usize = 0x240;

const ELF_MAGIC: &[u8] = b"\x7fELF";
const EM_X86_64: u16 = 0x3e;
const EM_AARCH64: u16 = 0xb7;
const ARM64_MAGIC: &[u8] = b"ARM\x64";
const ARM64_MAGIC_AT: usize = 0x38;
const BZIMAGE_MAGIC: &[u8] = b"HdrS";
const BZIMAGE_MAGIC_AT: usize = 0x202;
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

impl Arch {
    /// The architecture of the kernel whose file starts with `header`, or
    /// why it cannot be booted directly.
    pub fn of_kernel(header: &[u8]) -> Result<Self, String> {
        if header.starts_with(ELF_MAGIC) {
            // e_machine at 0x12, in the file's byte order (EI_DATA at 5).
            let machine = header
                .get(0x12..0x14)
                .ok_or("truncated ELF header")?
                .try_into()
                .map_err(|_| "truncated ELF header")?;
            let machine = if header.get(5) == Some(&2) {
                u16::from_be_bytes(machine)
            } else {
                u16::from_le_bytes(machine)
            };
            return match machine {
                EM_X86_64 => Ok(Self::X86_64),
                EM_AARCH64 => Ok(Self::Aarch64),
                other => Err(format!("ELF kernel for unsupported machine {other:#x}")),
            };
        }
        if header.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4) == Some(ARM64_MAGIC) {
            return Ok(Self::Aarch64);
        }
        if header.get(BZIMAGE_MAGIC_AT..BZIMAGE_MAGIC_AT + 4) == Some(BZIMAGE_MAGIC) {
            return Ok(Self::X86_64);
        }
        if header.starts_with(GZIP_MAGIC) {
            return Err(
                "gzip-compressed kernel (a Debian arm64 vmlinuz?): decompress it to the raw Image"
                    .into(),
            );
        }
        Err("not a Linux kernel image (no ELF, arm64 Image or bzImage header)".into())
    }

    /// Reads the first bytes of `path` and classifies them.
    pub fn of_kernel_file(path: &Path) -> Result<Self> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        std::fs::File::open(path)
            .and_then(|file| file.take(HEADER_LEN as u64).read_to_end(&mut header))
            .map_err(|source| Error::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })?;
        Self::of_kernel(&header).map_err(|reason| Error::BadKernel {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The architecture this program runs on, if it can be a guest's.
    pub fn host() -> Option<Self> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Self::X86_64),
            "aarch64" => Some(Self::Aarch64),
            _ => None,
        }
    }

    /// Rust/Debian-neutral name (`x86_64`, `aarch64`).
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(ELF_MAGIC);
        header[4] = 2; // ELFCLASS64
        header[5] = 1; // little-endian
        header[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        header
    }

    #[test]
    fn elf_x86_64_vmlinux_is_x86_64() {
        assert_eq!(Arch::of_kernel(&elf(EM_X86_64)), Ok(Arch::X86_64));
    }

    #[test]
    fn elf_aarch64_vmlinux_is_aarch64() {
        assert_eq!(Arch::of_kernel(&elf(EM_AARCH64)), Ok(Arch::Aarch64));
    }

    #[test]
    fn elf_of_other_machine_is_refused_with_its_number() {
        assert_eq!(
            Arch::of_kernel(&elf(0x28)),
            Err("ELF kernel for unsupported machine 0x28".into())
        );
    }

    #[test]
    fn arm64_image_magic_is_aarch64() {
        let mut header = vec![0u8; 64];
        header[ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4].copy_from_slice(ARM64_MAGIC);

        assert_eq!(Arch::of_kernel(&header), Ok(Arch::Aarch64));
    }

    #[test]
    fn bzimage_setup_header_is_x86_64() {
        let mut header = vec![0u8; HEADER_LEN];
        header[BZIMAGE_MAGIC_AT..BZIMAGE_MAGIC_AT + 4].copy_from_slice(BZIMAGE_MAGIC);

        assert_eq!(Arch::of_kernel(&header), Ok(Arch::X86_64));
    }

    #[test]
    fn gzip_vmlinuz_is_refused_with_a_hint() {
        let err = Arch::of_kernel(b"\x1f\x8b\x08\x00rest").unwrap_err();

        assert!(err.contains("decompress it to the raw Image"), "{err}");
    }

    #[test]
    fn random_bytes_are_not_a_kernel() {
        assert!(Arch::of_kernel(&[0u8; HEADER_LEN]).is_err());
    }

    #[test]
    fn of_kernel_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, b"\x1f\x8b\x08\x00").unwrap();

        let err = Arch::of_kernel_file(&path).unwrap_err();

        assert!(
            err.to_string()
                .starts_with(&format!("cannot boot kernel {}: gzip", path.display())),
            "{err}"
        );
    }
}
