//! The resolved per-instance configuration (`config.json`).
//!
//! Derived from the instance's stored template (`template.yaml`) when the
//! instance is created, and again on every start (so `berth edit` reaches
//! it); the disk keeps its first size. Parse errors and
//! validation errors are distinct ([`Error::ParseConfig`], [`Error::Validate`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, io_err};

/// Which VM backend runs the instance. Every variant parses on every OS;
/// the driver crate refuses the ones the OS lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Qemu,
    Vz,
}

/// Instance configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub driver: DriverKind,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    /// Host directories shared with the guest (virtio-fs).
    #[serde(default = "default_mounts")]
    pub mounts: Vec<MountConfig>,
    /// Port-forwarding rules, first match wins (a template's `portForwards`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<PortForwardConfig>,
}

/// One port-forwarding rule (Lima's semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForwardConfig {
    pub guest_port_start: u16,
    pub guest_port_end: u16,
    /// `None`: loopback and wildcard guest bindings.
    #[serde(default)]
    pub guest_ip: Option<std::net::IpAddr>,
    pub host_ip: std::net::IpAddr,
    /// Host port of `guest_port_start`; `None`: the same number.
    #[serde(default)]
    pub host_port_start: Option<u16>,
    /// `tcp`, `udp` or `any`.
    pub proto: String,
    #[serde(default)]
    pub ignore: bool,
}

/// A host directory shared with the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Absolute host path.
    pub location: PathBuf,
    /// Absolute guest path (the same as `location` unless configured).
    pub mount_point: PathBuf,
    pub writable: bool,
}

/// The host directories shared when a template names none, each at the
/// same path in the guest and writable (as Docker Desktop and OrbStack
/// share them), for an `os` (`std::env::consts::OS`) and home directory:
///
/// - macOS: the home, `/private/tmp` (where `/tmp` leads; the guest shows
///   it at `/tmp` too), `/var/folders` (`$TMPDIR`) and `/Volumes`;
/// - elsewhere: the home and `/tmp`.
///
/// A home that is not absolute, is `/`, or lies inside another listed
/// directory (a home under `/tmp`) is left out.
pub fn default_mount_paths(os: &str, home: Option<&Path>) -> Vec<PathBuf> {
    let system: &[&str] = if os == "macos" {
        &["/private/tmp", "/var/folders", "/Volumes"]
    } else {
        &["/tmp"]
    };
    let system: Vec<PathBuf> = system.iter().map(PathBuf::from).collect();
    let home = home
        .filter(|home| home.is_absolute() && *home != Path::new("/"))
        .filter(|home| !system.iter().any(|dir| home.starts_with(dir)))
        .map(Path::to_path_buf);
    home.into_iter().chain(system).collect()
}

/// [`default_mount_paths`] for this host (`HOME`), writable.
pub fn default_mounts() -> Vec<MountConfig> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    default_mount_paths(std::env::consts::OS, home.as_deref())
        .into_iter()
        .map(|path| MountConfig {
            location: path.clone(),
            mount_point: path,
            writable: true,
        })
        .collect()
}

impl Default for InstanceConfig {
    fn default() -> Self {
        Self {
            driver: DriverKind::Qemu,
            cpus: 2,
            memory_mib: 2048,
            disk_gib: 16,
            mounts: default_mounts(),
            port_forwards: Vec::new(),
        }
    }
}

impl InstanceConfig {
    /// Rejects values no VM could run with.
    pub fn validate(&self) -> Result<()> {
        if !(1..=64).contains(&self.cpus) {
            return Err(Error::Validate(format!(
                "cpus must be 1..=64, got {}",
                self.cpus
            )));
        }
        if !(256..=262_144).contains(&self.memory_mib) {
            return Err(Error::Validate(format!(
                "memory must be 256..=262144 MiB, got {}",
                self.memory_mib
            )));
        }
        if !(1..=4096).contains(&self.disk_gib) {
            return Err(Error::Validate(format!(
                "disk must be 1..=4096 GiB, got {}",
                self.disk_gib
            )));
        }
        for m in &self.mounts {
            for (what, path) in [("location", &m.location), ("mountPoint", &m.mount_point)] {
                if !path.is_absolute() || path == Path::new("/") {
                    return Err(Error::Validate(format!(
                        "mount {what} must be an absolute path other than /, got {}",
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Parses and validates a config file's contents.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|source| Error::ParseConfig {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path).map_err(io_err("read", path))?;
        Self::parse(path, &text)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).expect("invariant: config always serializes") + "\n";
        let tmp = path.with_extension("json.tmp");
        fs_err::write(&tmp, text).map_err(io_err("write", &tmp))?;
        fs_err::rename(&tmp, path).map_err(io_err("write", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        InstanceConfig::default().validate().unwrap();
    }

    #[test]
    fn parse_rejects_unknown_fields() {
        let text = r#"{"driver":"qemu","cpus":2,"memory_mib":2048,"disk_gib":16,"gpus":1}"#;
        assert!(matches!(
            InstanceConfig::parse(Path::new("c.json"), text),
            Err(Error::ParseConfig { .. })
        ));
    }

    #[test]
    fn a_config_without_mounts_shares_the_defaults_writable() {
        let text = r#"{"driver":"qemu","cpus":2,"memory_mib":2048,"disk_gib":16}"#;
        let config = InstanceConfig::parse(Path::new("c.json"), text).unwrap();
        assert_eq!(config.mounts, default_mounts());
        assert!(config.mounts.iter().all(|m| m.writable));
        assert!(config.mounts.iter().all(|m| m.location == m.mount_point));
    }

    #[test]
    fn default_shares_per_platform() {
        let home = Some(Path::new("/Users/me"));
        assert_eq!(
            default_mount_paths("macos", home),
            ["/Users/me", "/private/tmp", "/var/folders", "/Volumes"].map(PathBuf::from)
        );
        assert_eq!(
            default_mount_paths("linux", Some(Path::new("/home/me"))),
            ["/home/me", "/tmp"].map(PathBuf::from)
        );
    }

    #[test]
    fn a_home_inside_a_default_share_or_unusable_is_not_shared_twice() {
        assert_eq!(
            default_mount_paths("linux", Some(Path::new("/tmp/home"))),
            [PathBuf::from("/tmp")]
        );
        assert_eq!(
            default_mount_paths("linux", Some(Path::new("/"))),
            [PathBuf::from("/tmp")]
        );
        assert_eq!(
            default_mount_paths("linux", Some(Path::new("rel"))),
            [PathBuf::from("/tmp")]
        );
        assert_eq!(default_mount_paths("linux", None), [PathBuf::from("/tmp")]);
    }

    #[test]
    fn validate_rejects_a_relative_mount_point() {
        let config = InstanceConfig {
            mounts: vec![MountConfig {
                location: "/src".into(),
                mount_point: "src".into(),
                writable: true,
            }],
            ..InstanceConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("mount mountPoint must be an absolute path")
        );
    }

    #[test]
    fn parse_accepts_vz_on_any_os() {
        let text = r#"{"driver":"vz","cpus":2,"memory_mib":2048,"disk_gib":16}"#;
        assert_eq!(
            InstanceConfig::parse(Path::new("c.json"), text)
                .unwrap()
                .driver,
            DriverKind::Vz
        );
    }

    #[test]
    fn validate_rejects_zero_cpus() {
        let config = InstanceConfig {
            cpus: 0,
            ..InstanceConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid config: cpus must be 1..=64, got 0"
        );
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let config = InstanceConfig {
            cpus: 1,
            ..InstanceConfig::default()
        };

        config.save(&path).unwrap();

        assert_eq!(InstanceConfig::load(&path).unwrap(), config);
    }
}
