//! The kernel-module closure the guest needs, resolved with `modprobe
//! --show-depends` against the unpacked kernel package and made loadable by
//! the guest agent (which reads `modules.dep`) with a fresh `depmod -b` on
//! the staging tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, run, run_output};

/// Modules PID 1 loads at boot (see `guest-agent/agent/src/boot`): only
/// what the path to a serving agent needs (the data disk, vsock, shares).
/// Their dependencies are added automatically. aarch64 adds a few
/// ([`GuestArch::modules`](crate::GuestArch::modules)).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "vsock",
    "vmw_vsock_virtio_transport",
    "fuse",
    "virtiofs",
];

/// Modules the agent loads in the background while it already serves the
/// API, before it brings up the VM's network; container starts wait for
/// them (`EngineConfig::start_gate`). Loading them at boot cost a few
/// hundred ms of TCG time.
pub const DEFERRED_MODULES: &[&str] = &[
    "virtio_net",
    "overlay",
    "veth",
    "bridge",
    "br_netfilter",
    "nf_tables",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_chain_nat",
];

/// Modules shipped in the image but loaded later, off the boot path, by
/// the agent that needs them: `sock_diag` for TCP listeners
/// (`guest-agent/agent/src/boot/listeners.rs`).
pub const LAZY_MODULES: &[&str] = &["inet_diag", "tcp_diag"];

/// Parses `modprobe --show-depends` output into the `.ko` paths it names
/// (`insmod /path/x.ko [params]`); `builtin x` lines need no file.
pub fn parse_show_depends(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("insmod "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .collect()
}

/// Copies the closure of `modules` (the boot-time load list, see
/// [`GuestArch::modules`](crate::GuestArch::modules)), [`DEFERRED_MODULES`]
/// and [`LAZY_MODULES`] from the unpacked kernel `root` into
/// `staging/lib/modules/<release>` and runs `depmod` there. Returns the
/// staged module files, relative to `staging`.
pub fn stage(root: &Path, release: &str, staging: &Path, modules: &[&str]) -> Result<Vec<PathBuf>> {
    // The .deb ships no modules.dep (its postinst makes it).
    run(
        Command::new("depmod").arg("-b").arg(root).arg(release),
        "depmod on the unpacked kernel",
    )?;
    let mut files = BTreeSet::new();
    for module in modules.iter().chain(DEFERRED_MODULES).chain(LAZY_MODULES) {
        let out = run_output(
            Command::new("modprobe")
                .arg("-d")
                .arg(root)
                .arg("-S")
                .arg(release)
                .arg("--show-depends")
                .arg(module),
            "modprobe --show-depends",
        )?;
        for ko in parse_show_depends(&out) {
            files.insert(ko);
        }
    }
    let mut staged = Vec::new();
    for ko in files {
        let rel = ko.strip_prefix(root).map_err(|_| {
            Error::BadKernel(format!("module {} outside the kernel tree", ko.display()))
        })?;
        let dest = staging.join(rel);
        fs_err::create_dir_all(
            dest.parent()
                .expect("invariant: module paths have a parent"),
        )
        .map_err(Error::Io)?;
        fs_err::copy(&ko, &dest).map_err(Error::Io)?;
        staged.push(rel.to_path_buf());
    }
    let src_dir = root.join("lib/modules").join(release);
    let dest_dir = staging.join("lib/modules").join(release);
    for extra in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        fs_err::copy(src_dir.join(extra), dest_dir.join(extra)).map_err(Error::Io)?;
    }
    run(
        Command::new("depmod").arg("-b").arg(staging).arg(release),
        "depmod on the staged modules",
    )?;
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_show_depends_keeps_insmod_paths_in_order() {
        let out = "builtin virtio\ninsmod /k/lib/modules/6.1/kernel/net/vmw_vsock/vsock.ko \n\
                   insmod /k/lib/modules/6.1/kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko foo=1\n";

        let files = parse_show_depends(out);

        assert_eq!(
            files,
            vec![
                PathBuf::from("/k/lib/modules/6.1/kernel/net/vmw_vsock/vsock.ko"),
                PathBuf::from(
                    "/k/lib/modules/6.1/kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko"
                ),
            ]
        );
    }
}
