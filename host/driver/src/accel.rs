//! Choosing the QEMU accelerator.
//!
//! `/dev/kvm` alone proves nothing: on a PVM host (a Firecracker microVM
//! with `kvm_pvm`), `/dev/kvm` exists but a stock guest kernel never boots
//! under it. Hardware KVM shows up as `kvm_intel` or `kvm_amd` under
//! `/sys/module`; anything else gets TCG.

use std::path::Path;

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation; `reason` says why KVM was not used.
    Tcg {
        reason: String,
    },
}

impl Accel {
    /// Detects from the real `/dev` and `/sys`.
    pub fn detect() -> Self {
        Self::detect_in(Path::new("/"))
    }

    /// Detects against a file system root (tests pass a fake tree).
    pub fn detect_in(root: &Path) -> Self {
        let module = |name: &str| root.join("sys/module").join(name).exists();
        if !root.join("dev/kvm").exists() {
            return Self::Tcg {
                reason: "no /dev/kvm".into(),
            };
        }
        if module("kvm_pvm") {
            return Self::Tcg {
                reason: "/dev/kvm is PVM (kvm_pvm), which cannot run a stock guest kernel".into(),
            };
        }
        if !module("kvm_intel") && !module("kvm_amd") {
            return Self::Tcg {
                reason: "no hardware KVM (neither kvm_intel nor kvm_amd is loaded)".into(),
            };
        }
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.join("dev/kvm"))
            .is_err()
        {
            return Self::Tcg {
                reason: "/dev/kvm is not accessible to this user".into(),
            };
        }
        Self::Kvm
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg { .. } => "tcg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if file.starts_with("sys/") {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::write(&path, "").unwrap();
            }
        }
        dir
    }

    #[test]
    fn pvm_host_gets_tcg() {
        let root = tree(&["dev/kvm", "sys/module/kvm", "sys/module/kvm_pvm"]);
        assert!(
            matches!(Accel::detect_in(root.path()), Accel::Tcg { reason } if reason.contains("PVM"))
        );
    }

    #[test]
    fn no_dev_kvm_gets_tcg() {
        let root = tree(&["sys/module/kvm_intel"]);
        assert_eq!(
            Accel::detect_in(root.path()),
            Accel::Tcg {
                reason: "no /dev/kvm".into()
            }
        );
    }

    #[test]
    fn kvm_module_without_vendor_module_gets_tcg() {
        let root = tree(&["dev/kvm", "sys/module/kvm"]);
        assert!(
            matches!(Accel::detect_in(root.path()), Accel::Tcg { reason } if reason.contains("kvm_intel"))
        );
    }

    #[test]
    fn intel_host_gets_kvm() {
        let root = tree(&["dev/kvm", "sys/module/kvm", "sys/module/kvm_intel"]);
        assert_eq!(Accel::detect_in(root.path()), Accel::Kvm);
    }

    #[test]
    fn amd_host_gets_kvm() {
        let root = tree(&["dev/kvm", "sys/module/kvm_amd"]);
        assert_eq!(Accel::detect_in(root.path()), Accel::Kvm);
    }
}
