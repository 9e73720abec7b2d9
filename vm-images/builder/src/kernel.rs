//! The guest kernel: a pinned Debian cloud kernel package, and the file
//! QEMU or Virtualization.framework boots out of it.
//!
//! x86_64: QEMU boots an uncompressed ELF `vmlinux` through PVH (the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note), skipping the real-mode setup and the
//! in-guest decompressor, which under TCG saves a few hundred milliseconds.
//! Debian ships only the bzImage, whose protected-mode part carries the
//! kernel as one LZ4 (legacy format) payload: the setup header says where
//! (`payload_offset`, `payload_length`), and the payload's last 4 bytes are
//! the decompressed size, which `lz4` would reject as trailing garbage.
//!
//! aarch64: Debian's cloud-arm64 `vmlinuz` is already the uncompressed
//! arm64 `Image` (magic `ARM\x64` at 0x38), which is what both
//! `qemu-system-aarch64 -kernel` and `VZLinuxBootLoader` want; it is checked
//! and copied.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result, run};

/// A Debian package pinned by version and checksum.
#[derive(Debug, Clone, Copy)]
pub struct DebPin {
    /// Package name.
    pub package: &'static str,
    /// Exact Debian version, epoch included.
    pub version: &'static str,
    /// Debian architecture (`amd64`, `arm64`).
    pub arch: &'static str,
    /// sha256 of the `.deb`.
    pub sha256: &'static str,
}

impl DebPin {
    /// File name `apt-get download` gives the package (the epoch colon is
    /// URL-escaped).
    pub fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.package,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// A kernel package pinned by version and checksum.
#[derive(Debug, Clone, Copy)]
pub struct KernelPin {
    pub deb: DebPin,
    /// The kernel release (`uname -r`, the `/lib/modules` directory name).
    pub release: &'static str,
}

/// The kernel every x86_64 guest boots.
pub const X86_64: KernelPin = KernelPin {
    deb: DebPin {
        package: "linux-image-6.1.0-57-cloud-amd64",
        version: "6.1.192-3",
        arch: "amd64",
        sha256: "4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754",
    },
    release: "6.1.0-57-cloud-amd64",
};

/// The kernel every aarch64 guest boots (same Debian kernel version).
pub const AARCH64: KernelPin = KernelPin {
    deb: DebPin {
        package: "linux-image-6.1.0-57-cloud-arm64",
        version: "6.1.192-3",
        arch: "arm64",
        sha256: "51952bf54e96b0bc6263fb51a47b79e206dca0213cd5421162bc55cddbd6e51e",
    },
    release: "6.1.0-57-cloud-arm64",
};

/// Downloads (or reuses) the pinned `.deb` in `cache` and checks its sha256.
/// Foreign-architecture packages need `dpkg --add-architecture <arch>` and
/// an `apt-get update` first (`vm-images/install-deps.sh` does both).
pub fn fetch(pin: &DebPin, cache: &Path) -> Result<PathBuf> {
    fs_err::create_dir_all(cache).map_err(Error::Io)?;
    let deb = cache.join(pin.deb_name());
    if deb.exists() && sha256_file(&deb)? == pin.sha256 {
        return Ok(deb);
    }
    let mut cmd = Command::new("apt-get");
    cmd.arg("download")
        .arg(format!("{}:{}={}", pin.package, pin.arch, pin.version))
        .current_dir(cache);
    run(
        &mut cmd,
        &format!(
            "apt-get download {}:{}={} (needs Debian bookworm sources{}; if the mirror dropped this \
             version, update the pin from `apt-cache policy {}:{}`)",
            pin.package,
            pin.arch,
            pin.version,
            if pin.arch == "amd64" {
                ""
            } else {
                " and `dpkg --add-architecture` of it"
            },
            pin.package,
            pin.arch,
        ),
    )?;
    let got = sha256_file(&deb)?;
    if got != pin.sha256 {
        let _ = fs_err::remove_file(&deb);
        return Err(Error::Checksum {
            file: deb,
            expected: pin.sha256.to_owned(),
            got,
        });
    }
    Ok(deb)
}

/// Unpacks `deb` into `dir` (fresh) with `dpkg-deb -x`.
pub fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs_err::remove_dir_all(dir).map_err(Error::Io)?;
    }
    fs_err::create_dir_all(dir).map_err(Error::Io)?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir),
        "dpkg-deb -x",
    )
}

/// Where the compressed kernel sits inside a bzImage: `(offset, length)` of
/// the payload without its trailing 4-byte size.
pub fn bzimage_payload(image: &[u8]) -> Result<(usize, usize)> {
    let bad = |why: &str| Error::BadKernel(why.to_owned());
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad("no `HdrS` setup header magic"));
    }
    let setup_sects = usize::from(*image.get(0x1f1).ok_or_else(|| bad("truncated"))?);
    let setup_sects = if setup_sects == 0 { 4 } else { setup_sects };
    let word = |at: usize| -> Result<usize> {
        let b = image
            .get(at..at + 4)
            .ok_or_else(|| bad("truncated setup header"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let offset = (setup_sects + 1) * 512 + word(0x248)?;
    let length = word(0x24c)?;
    if length < 4 || offset + length > image.len() {
        return Err(bad("payload outside the image"));
    }
    Ok((offset, length - 4))
}

/// Magic of an LZ4 legacy-format stream, the only compression handled.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// Writes the uncompressed PVH `vmlinux` of `bzimage` to `out`.
pub fn extract_vmlinux(bzimage: &Path, work: &Path, out: &Path) -> Result<()> {
    let image = fs_err::read(bzimage).map_err(Error::Io)?;
    let (offset, length) = bzimage_payload(&image)?;
    let payload = &image[offset..offset + length];
    if payload.get(..4) != Some(&LZ4_LEGACY_MAGIC[..]) {
        return Err(Error::BadKernel(
            "payload is not LZ4 (expected a Debian cloud kernel)".into(),
        ));
    }
    let lz = work.join("vmlinux.lz4");
    fs_err::write(&lz, payload).map_err(Error::Io)?;
    run(
        Command::new("lz4")
            .args(["-d", "-f", "-q"])
            .arg(&lz)
            .arg(out),
        "lz4 -d",
    )?;
    fs_err::remove_file(&lz).map_err(Error::Io)?;
    let head = fs_err::read(out).map_err(Error::Io)?;
    if head.get(..4) != Some(b"\x7fELF") {
        return Err(Error::BadKernel("decompressed kernel is not an ELF".into()));
    }
    Ok(())
}

/// Offset and value of the arm64 `Image` header magic
/// (`Documentation/arch/arm64/booting.rst`).
const ARM64_MAGIC_AT: usize = 0x38;
const ARM64_MAGIC: &[u8] = b"ARM\x64";

/// Copies the arm64 `Image` at `vmlinuz` to `out` after checking its header.
pub fn copy_arm64_image(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs_err::read(vmlinuz).map_err(Error::Io)?;
    check_arm64_image(&image)?;
    fs_err::write(out, &image).map_err(Error::Io)
}

/// Whether `image` starts with an arm64 `Image` header.
pub fn check_arm64_image(image: &[u8]) -> Result<()> {
    if image.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4) == Some(ARM64_MAGIC) {
        Ok(())
    } else {
        Err(Error::BadKernel(
            "not an uncompressed arm64 Image (no `ARM\\x64` magic at 0x38)".into(),
        ))
    }
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let data = fs_err::read(path).map_err(Error::Io)?;
    Ok(hex::encode(Sha256::digest(&data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(setup_sects: u8, payload_offset: u32, payload: &[u8]) -> Vec<u8> {
        let start = (usize::from(setup_sects) + 1) * 512 + payload_offset as usize;
        let mut image = vec![0u8; start];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        image.extend_from_slice(payload);
        image
    }

    #[test]
    fn bzimage_payload_excludes_trailing_size() {
        let image = fake_bzimage(3, 0x10, b"\x02\x21\x4c\x18DATA\x99\x00\x00\x00");

        let (offset, length) = bzimage_payload(&image).unwrap();

        assert_eq!(offset, 4 * 512 + 0x10);
        assert_eq!(&image[offset..offset + length], b"\x02\x21\x4c\x18DATA");
    }

    #[test]
    fn bzimage_payload_rejects_missing_magic() {
        let mut image = fake_bzimage(3, 0, b"xxxxyyyy");
        image[0x202] = b'X';

        assert!(matches!(bzimage_payload(&image), Err(Error::BadKernel(_))));
    }

    #[test]
    fn arm64_image_with_magic_passes_the_check() {
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");

        check_arm64_image(&image).unwrap();
    }

    #[test]
    fn gzip_vmlinuz_fails_the_arm64_image_check() {
        assert!(matches!(
            check_arm64_image(b"\x1f\x8b\x08\x00"),
            Err(Error::BadKernel(_))
        ));
    }

    #[test]
    fn deb_name_escapes_the_epoch_colon() {
        let pin = DebPin {
            package: "busybox-static",
            version: "1:1.35.0-4+deb12u1+b1",
            arch: "arm64",
            sha256: "",
        };

        assert_eq!(
            pin.deb_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"
        );
    }

    #[test]
    fn bzimage_payload_rejects_length_past_end() {
        let mut image = fake_bzimage(3, 0, b"xxxxyyyy");
        image[0x24c..0x250].copy_from_slice(&1000u32.to_le_bytes());

        assert!(matches!(bzimage_payload(&image), Err(Error::BadKernel(_))));
    }
}
