//! Every file name under `BERTH_HOME`, in one place.
//!
//! ```text
//! $BERTH_HOME/<name>/config.json     resolved instance config (derived from template.yaml)
//!                    template.yaml   resolved template (`berth edit` changes it)
//!                    disk.raw        data disk (sparse raw image)
//!                    serial.log      guest serial console (kernel + guest agent logs)
//!                    hostagent.pid   host agent pid; flock-ed while it runs
//!                    hostagent.log   host agent log
//!                    qemu.pid        QEMU pid (for orphan cleanup)
//!                    qemu.log        QEMU's own stderr
//!                    vsockd.pid      vhost-device-vsock pid
//!                    vsockd.log      vhost-device-vsock log
//!                    vhu.sock        vhost-user socket (QEMU <-> vhost-device-vsock)
//!                    vsock.sock      hybrid vsock socket (`CONNECT <port>`)
//!                    docker.sock     forwarded Docker API (mode 0600)
//!                    ssh_key         SSH user key, ed25519 (mode 0600; .pub beside it)
//!                    ssh_host_key    the guest's SSH host key (mode 0600; .pub beside it)
//!                    ssh_known_hosts the host key, pinned for `berth-<name>`
//!                    ssh_config      OpenSSH config for `ssh berth-<name>` (`Include` it)
//! ```
//!
//! Socket names are short because `sun_path` holds 104 bytes on macOS.

use std::path::{Path, PathBuf};

use crate::{Error, InstanceName, Result};

/// Largest unix socket path we create, leaving room for
/// vhost-device-vsock's `<uds>_<port>` suffix within macOS's 104 bytes.
pub const MAX_SOCKET_PATH: usize = 96;

/// The `BERTH_HOME` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BerthHome {
    root: PathBuf,
}

impl BerthHome {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$BERTH_HOME`, else `$HOME/.berth`; values as read from the environment.
    pub fn resolve(berth_home: Option<PathBuf>, home: Option<PathBuf>) -> Result<Self> {
        match (berth_home, home) {
            (Some(dir), _) if !dir.as_os_str().is_empty() => Ok(Self::new(dir)),
            (_, Some(home)) if !home.as_os_str().is_empty() => Ok(Self::new(home.join(".berth"))),
            _ => Err(Error::NoHome),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn instance(&self, name: &InstanceName) -> InstancePaths {
        InstancePaths {
            dir: self.root.join(name.as_str()),
        }
    }

    /// Names of the instances that exist (have a config), sorted.
    pub fn list(&self) -> Result<Vec<InstanceName>> {
        let entries = match fs_err::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Io {
                    op: "list",
                    path: self.root.clone(),
                    source: e,
                });
            }
        };
        let mut names: Vec<InstanceName> = entries
            .filter_map(std::result::Result::ok)
            .filter(|e| e.path().join("config.json").is_file())
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The files of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePaths {
    pub dir: PathBuf,
}

impl InstancePaths {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// The resolved template (see `berth_template::instance`).
    pub fn template(&self) -> PathBuf {
        self.dir.join("template.yaml")
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn agent_pid(&self) -> PathBuf {
        self.dir.join("hostagent.pid")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("hostagent.log")
    }
    pub fn qemu_pid(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    pub fn vsockd_pid(&self) -> PathBuf {
        self.dir.join("vsockd.pid")
    }
    pub fn vsockd_log(&self) -> PathBuf {
        self.dir.join("vsockd.log")
    }
    pub fn vhost_user_socket(&self) -> PathBuf {
        self.dir.join("vhu.sock")
    }
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }
    pub fn docker_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
    pub fn ssh_user_key(&self) -> PathBuf {
        self.dir.join("ssh_key")
    }
    pub fn ssh_user_key_pub(&self) -> PathBuf {
        self.dir.join("ssh_key.pub")
    }
    pub fn ssh_host_key(&self) -> PathBuf {
        self.dir.join("ssh_host_key")
    }
    pub fn ssh_host_key_pub(&self) -> PathBuf {
        self.dir.join("ssh_host_key.pub")
    }
    pub fn ssh_known_hosts(&self) -> PathBuf {
        self.dir.join("ssh_known_hosts")
    }
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// Every socket the instance creates.
    pub fn sockets(&self) -> [PathBuf; 3] {
        [
            self.vhost_user_socket(),
            self.vsock_socket(),
            self.docker_socket(),
        ]
    }

    /// Pid files of the processes the host agent starts.
    pub fn child_pid_files(&self) -> [PathBuf; 2] {
        [self.qemu_pid(), self.vsockd_pid()]
    }

    /// Errors when a socket path would be too long for `sun_path`.
    pub fn check_socket_paths(&self) -> Result<()> {
        for path in self.sockets() {
            let len = path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(Error::SocketPathTooLong {
                    path,
                    len,
                    max: MAX_SOCKET_PATH,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_prefers_berth_home() {
        let home = BerthHome::resolve(Some("/b".into()), Some("/h".into())).unwrap();
        assert_eq!(home.root(), Path::new("/b"));
    }

    #[test]
    fn resolve_falls_back_to_dot_berth_in_home() {
        let home = BerthHome::resolve(None, Some("/h".into())).unwrap();
        assert_eq!(home.root(), Path::new("/h/.berth"));
    }

    #[test]
    fn resolve_without_any_home_fails() {
        assert!(matches!(
            BerthHome::resolve(Some("".into()), None),
            Err(Error::NoHome)
        ));
    }

    #[test]
    fn instance_files_live_in_the_instance_dir() {
        let paths = BerthHome::new("/b").instance(&"dev".parse().unwrap());
        assert_eq!(paths.docker_socket(), Path::new("/b/dev/docker.sock"));
        assert_eq!(paths.disk(), Path::new("/b/dev/disk.raw"));
    }

    #[test]
    fn check_socket_paths_rejects_long_home() {
        let paths =
            BerthHome::new("/".to_owned() + &"x".repeat(100)).instance(&"dev".parse().unwrap());
        assert!(matches!(
            paths.check_socket_paths(),
            Err(Error::SocketPathTooLong { .. })
        ));
    }

    #[test]
    fn list_returns_instances_with_config_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "a", "no-config"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("a/config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("b/config.json"), "{}").unwrap();

        let names = BerthHome::new(dir.path()).list().unwrap();

        assert_eq!(
            names.iter().map(InstanceName::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
