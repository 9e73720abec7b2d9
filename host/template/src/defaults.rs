//! Step 2: fill what no layer set, from the host.

use std::path::PathBuf;

use crate::schema::{Arch, Docker, Mount, Size, Template, VmType};

/// Facts about the host that defaults and validation depend on. Tests
/// build one by hand; the CLI calls [`Host::detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `std::env::consts::OS`.
    pub os: String,
    pub arch: Option<Arch>,
    pub cpus: u32,
    /// Physical memory, if known.
    pub memory: Option<Size>,
    /// The user's home (expands `~`, default mount).
    pub home: Option<PathBuf>,
}

impl Host {
    /// The machine this runs on; `home` from `$HOME`.
    pub fn detect() -> Self {
        Self {
            os: std::env::consts::OS.to_owned(),
            arch: Arch::host(),
            cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            memory: host_memory(),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }

    pub fn is_macos(&self) -> bool {
        self.os == "macos"
    }
}

/// `MemTotal` from /proc/meminfo; `None` where that file does not exist.
fn host_memory() -> Option<Size> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Size::from_bytes(kib * Size::KIB))
}

pub const DEFAULT_CPUS: u32 = 4;
pub const DEFAULT_MEMORY: Size = Size::from_bytes(4 * Size::GIB);
pub const DEFAULT_DISK: Size = Size::from_bytes(32 * Size::GIB);

/// Fills unset fields:
/// - `vmType`: vz on macOS, qemu elsewhere; `arch`: the host's;
/// - `cpus`: min(4, host CPUs); `memory`: min(4GiB, half of host memory);
///   `disk`: 32GiB;
/// - `mounts` (only when no layer mentions `mounts`): the platform's
///   default shares (`berth_instance::config::default_mount_paths`: the
///   home and `/tmp`; on macOS the home, `/private/tmp`, `/var/folders`
///   and `/Volumes`); every mount's `mountPoint` defaults to its location
///   and `writable` to true;
/// - `docker.enabled`: true.
pub fn apply(mut t: Template, host: &Host) -> Template {
    t.vm_type.get_or_insert(if host.is_macos() {
        VmType::Vz
    } else {
        VmType::Qemu
    });
    if t.arch.is_none() {
        t.arch = host.arch;
    }
    t.cpus.get_or_insert(DEFAULT_CPUS.min(host.cpus.max(1)));
    t.memory.get_or_insert(match host.memory {
        Some(total) => DEFAULT_MEMORY.min(Size::from_bytes(total.bytes() / 2)),
        None => DEFAULT_MEMORY,
    });
    t.disk.get_or_insert(DEFAULT_DISK);
    if t.mounts.is_none() {
        t.mounts = Some(
            berth_instance::config::default_mount_paths(&host.os, host.home.as_deref())
                .into_iter()
                .map(|path| Mount {
                    location: path.display().to_string(),
                    mount_point: None,
                    writable: None,
                })
                .collect(),
        );
    }
    for mount in t.mounts.iter_mut().flatten() {
        mount
            .mount_point
            .get_or_insert_with(|| mount.location.clone());
        mount.writable.get_or_insert(true);
    }
    t.docker
        .get_or_insert_with(Docker::default)
        .enabled
        .get_or_insert(true);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            os: "linux".into(),
            arch: Some(Arch::Aarch64),
            cpus: 2,
            memory: Some(Size::from_bytes(6 * Size::GIB)),
            home: Some(PathBuf::from("/home/u")),
        }
    }

    #[test]
    fn apply_fills_host_derived_defaults() {
        let t = apply(Template::default(), &host());
        assert_eq!(t.vm_type, Some(VmType::Qemu));
        assert_eq!(t.arch, Some(Arch::Aarch64));
        assert_eq!(t.cpus, Some(2));
        assert_eq!(t.memory, Some(Size::from_bytes(3 * Size::GIB)));
        assert_eq!(t.disk, Some(DEFAULT_DISK));
        let shared = |path: &str| Mount {
            location: path.into(),
            mount_point: Some(path.into()),
            writable: Some(true),
        };
        assert_eq!(t.mounts, Some(vec![shared("/home/u"), shared("/tmp")]));
        assert_eq!(t.docker.unwrap().enabled, Some(true));
    }

    #[test]
    fn apply_keeps_an_explicit_empty_mount_list() {
        let t = Template {
            mounts: Some(Vec::new()),
            ..Template::default()
        };
        assert_eq!(apply(t, &host()).mounts, Some(Vec::new()));
    }

    #[test]
    fn apply_shares_the_macos_defaults_on_macos() {
        let mac = Host {
            os: "macos".into(),
            home: Some(PathBuf::from("/Users/u")),
            ..host()
        };
        let mounts = apply(Template::default(), &mac).mounts.unwrap();
        let locations: Vec<&str> = mounts.iter().map(|m| m.location.as_str()).collect();
        assert_eq!(
            locations,
            ["/Users/u", "/private/tmp", "/var/folders", "/Volumes"]
        );
        assert!(mounts.iter().all(|m| m.writable == Some(true)));
    }

    #[test]
    fn a_template_mount_is_writable_unless_it_says_otherwise() {
        let mount = |writable| Mount {
            location: "/srv".into(),
            mount_point: None,
            writable,
        };
        let t = Template {
            mounts: Some(vec![mount(None), mount(Some(false))]),
            ..Template::default()
        };
        let mounts = apply(t, &host()).mounts.unwrap();
        assert_eq!(mounts[0].writable, Some(true));
        assert_eq!(mounts[1].writable, Some(false));
    }

    #[test]
    fn apply_picks_vz_on_macos() {
        let mac = Host {
            os: "macos".into(),
            ..host()
        };
        assert_eq!(apply(Template::default(), &mac).vm_type, Some(VmType::Vz));
    }
}
