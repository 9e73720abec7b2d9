//! The busybox the guest (and the arm64 test image) gets.
//!
//! x86_64 guests take the host's `/bin/busybox` (`busybox-static`). For an
//! aarch64 guest the pinned `busybox-static:arm64` package is fetched and
//! unpacked. Its applet list cannot come from running it on an x86 host,
//! so it comes from the host's busybox, after checking that both are the
//! same Debian build: the arm64 binary must contain the host binary's
//! version banner (`BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)`).
//! Debian builds busybox-static with one configuration on every
//! architecture, so the same build has the same applets.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kernel::{self, DebPin};
use crate::{Error, Result, run_output};

/// busybox-static for arm64, the same version as bookworm's amd64 one.
pub const AARCH64: DebPin = DebPin {
    package: "busybox-static",
    version: "1:1.35.0-4+deb12u1+b1",
    arch: "arm64",
    sha256: "732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5",
};

/// Fetches and unpacks the pinned package; returns its `bin/busybox`.
pub fn fetch(pin: &DebPin, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("busybox-{}-{}", pin.arch, &pin.sha256[..16]));
    let binary = dir.join("bin/busybox");
    if binary.is_file() {
        return Ok(binary);
    }
    let deb = kernel::fetch(pin, cache)?;
    kernel::unpack(&deb, &dir)?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(Error::NoBusybox(binary))
    }
}

/// The first line of `busybox --help` up to the closing parenthesis of the
/// build: `BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)`.
pub fn banner(help: &str) -> Option<&str> {
    let line = help.lines().next()?;
    let end = line.find(')')?;
    line.starts_with("BusyBox v").then(|| &line[..=end])
}

/// Checks that `foreign` (a busybox for another architecture) is the same
/// build as the runnable `host` busybox, so that `host`'s applet list holds
/// for it.
pub fn check_same_build(host: &Path, foreign: &Path) -> Result<()> {
    let help = run_output(Command::new(host).arg("--help"), "busybox --help")?;
    let banner = banner(&help).ok_or_else(|| Error::Command {
        what: format!("{} --help", host.display()),
        status: std::process::ExitStatus::default(),
        stderr: "no `BusyBox v… (…)` banner on its first line".into(),
    })?;
    let binary = fs_err::read(foreign).map_err(Error::Io)?;
    if contains(&binary, banner.as_bytes()) {
        Ok(())
    } else {
        Err(Error::BusyboxMismatch {
            host: host.to_path_buf(),
            foreign: foreign.to_path_buf(),
            banner: banner.to_owned(),
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_keeps_version_and_debian_build() {
        let help = "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.\nUsage: ...";

        assert_eq!(
            banner(help),
            Some("BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)")
        );
    }

    #[test]
    fn banner_of_other_text_is_none() {
        assert_eq!(banner("Usage: busybox"), None);
    }

    #[test]
    fn contains_finds_the_banner_inside_a_binary() {
        let binary = b"\x7fELF\0\0BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)\0more";

        assert!(contains(
            binary,
            b"BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)"
        ));
        assert!(!contains(binary, b"BusyBox v1.36.1 (Debian 1:1.36.1-9)"));
    }
}
