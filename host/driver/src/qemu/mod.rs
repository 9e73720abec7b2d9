//! The QEMU driver: `qemu-system-x86_64` plus a `vhost-device-vsock`
//! process for the guest's vsock device.
//!
//! Start order: vhost-device-vsock first (QEMU connects to its vhost-user
//! socket at start-up and fails if it is not there yet), then QEMU. Both
//! record their pids in the state dir so that, if the host agent is killed,
//! the next `berth start`/`stop` can find and kill the orphans
//! ([`kill_orphans`]).

pub mod args;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_forward::{HybridDialer, VsockDialer};
use tokio::process::{Child, Command};

use crate::{Accel, Driver, Error, Result, VmSpec};

/// File names in the state dir (see `berth_instance::paths` for the layout).
pub const VHOST_USER_SOCKET: &str = "vhu.sock";
pub const VSOCK_SOCKET: &str = "vsock.sock";
pub const QEMU_PID: &str = "qemu.pid";
pub const QEMU_LOG: &str = "qemu.log";
pub const VSOCKD_PID: &str = "vsockd.pid";
pub const VSOCKD_LOG: &str = "vsockd.log";

/// Environment overrides for the two binaries.
pub const QEMU_ENV: &str = "BERTH_QEMU";
pub const VSOCKD_ENV: &str = "BERTH_VHOST_DEVICE_VSOCK";

const QEMU_BIN: &str = "qemu-system-x86_64";
const VSOCKD_BIN: &str = "vhost-device-vsock";

/// Finds QEMU: `$BERTH_QEMU`, else `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Result<PathBuf> {
    find(
        QEMU_ENV,
        QEMU_BIN,
        &[],
        "apt-get install qemu-system-x86, or run vm-images/install-deps.sh",
    )
}

/// Finds vhost-device-vsock: `$BERTH_VHOST_DEVICE_VSOCK`, `PATH`, `~/.cargo/bin`.
pub fn find_vsockd() -> Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|dir| dir.join("bin"));
    find(
        VSOCKD_ENV,
        VSOCKD_BIN,
        cargo_bin.as_slice(),
        "cargo install --locked vhost-device-vsock",
    )
}

fn find(env: &str, binary: &str, extra_dirs: &[PathBuf], hint: &'static str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingBinary {
                binary: format!("{} (from ${env})", path.display()),
                hint,
            })
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::MissingBinary {
            binary: binary.to_owned(),
            hint,
        })
}

/// The QEMU backend.
pub struct QemuDriver {
    qemu: PathBuf,
    vsockd: PathBuf,
    accel: Accel,
    state_dir: PathBuf,
    qemu_child: Option<Child>,
    vsockd_child: Option<Child>,
    dialer: Arc<HybridDialer>,
}

impl QemuDriver {
    /// Locates the binaries and picks the accelerator; starts nothing.
    pub fn new(state_dir: &Path) -> Result<Self> {
        Ok(Self {
            qemu: find_qemu()?,
            vsockd: find_vsockd()?,
            accel: Accel::detect(),
            state_dir: state_dir.to_path_buf(),
            qemu_child: None,
            vsockd_child: None,
            dialer: Arc::new(HybridDialer::new(state_dir.join(VSOCK_SOCKET))),
        })
    }

    pub fn accel(&self) -> &Accel {
        &self.accel
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File> {
        let path = self.state_dir.join(name);
        std::fs::File::create(&path).map_err(|source| Error::Io {
            op: "create",
            path,
            source,
        })
    }

    async fn start_vsockd(&mut self) -> Result<()> {
        let vhu = self.state_dir.join(VHOST_USER_SOCKET);
        let uds = self.state_dir.join(VSOCK_SOCKET);
        for stale in [&vhu, &uds] {
            let _ = std::fs::remove_file(stale);
        }
        let log = self.log_file(VSOCKD_LOG)?;
        let mut child = Command::new(&self.vsockd)
            .args(args::vsockd_argv(&vhu, &uds))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|source| Error::Spawn {
                what: "vhost-device-vsock",
                source,
            })?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "vhost-device-vsock",
                source,
            })?;
        write_pid(&self.state_dir.join(VSOCKD_PID), child.id())?;
        // The backend creates its vhost-user socket right after start-up;
        // QEMU must not start before it exists.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vhu.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::EarlyExit {
                    what: "vhost-device-vsock",
                    status: status.to_string(),
                    log: self.state_dir.join(VSOCKD_LOG),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::SocketTimeout {
                    what: "vhost-device-vsock",
                    path: vhu,
                    secs: 10,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.vsockd_child = Some(child);
        Ok(())
    }
}

impl Driver for QemuDriver {
    async fn start(&mut self, spec: &VmSpec) -> Result<()> {
        self.start_vsockd().await?;
        let opts = args::QemuOptions {
            accel: self.accel.clone(),
            tsc_khz: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .as_deref()
                .and_then(args::tsc_khz_from_cpuinfo),
            vhost_user_socket: self.state_dir.join(VHOST_USER_SOCKET),
            pid_file: self.state_dir.join(QEMU_PID),
        };
        // Truncate the serial log so that it shows this boot only.
        std::fs::File::create(&spec.serial_log).map_err(|source| Error::Io {
            op: "create",
            path: spec.serial_log.clone(),
            source,
        })?;
        let log = self.log_file(QEMU_LOG)?;
        let child = Command::new(&self.qemu)
            .args(args::qemu_argv(spec, &opts))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|source| Error::Spawn {
                what: "qemu",
                source,
            })?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: "qemu",
                source,
            })?;
        write_pid(&self.state_dir.join(QEMU_PID), child.id())?;
        self.qemu_child = Some(child);
        Ok(())
    }

    async fn wait(&mut self) -> String {
        match self.qemu_child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(status) => format!("qemu exited ({status})"),
                Err(err) => format!("waiting for qemu failed: {err}"),
            },
            None => std::future::pending().await,
        }
    }

    async fn kill(&mut self) {
        for child in [self.qemu_child.as_mut(), self.vsockd_child.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.qemu_child = None;
        self.vsockd_child = None;
        for name in [QEMU_PID, VSOCKD_PID, VHOST_USER_SOCKET, VSOCK_SOCKET] {
            let _ = std::fs::remove_file(self.state_dir.join(name));
        }
    }

    fn dialer(&self) -> Arc<dyn VsockDialer> {
        self.dialer.clone()
    }

    fn describe(&self) -> String {
        format!("qemu ({})", self.accel.name())
    }
}

fn write_pid(path: &Path, pid: Option<u32>) -> Result<()> {
    let pid = pid.map(|p| p.to_string()).unwrap_or_default();
    std::fs::write(path, pid + "\n").map_err(|source| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Kills processes a dead host agent left behind: each pid in the state
/// dir's pid files whose command line still mentions the state dir (so a
/// recycled pid is never hit). Returns how many were killed.
pub fn kill_orphans(state_dir: &Path) -> usize {
    let mut killed = 0;
    for name in [QEMU_PID, VSOCKD_PID] {
        let pid_file = state_dir.join(name);
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            let _ = std::fs::remove_file(&pid_file);
            continue;
        };
        if process_mentions(pid, state_dir) {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed += 1;
                // Not our child: wait for /proc to drop it (bounded).
                let deadline = Instant::now() + Duration::from_secs(5);
                while Path::new(&format!("/proc/{pid}")).exists()
                    && !is_zombie(pid)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_file(&pid_file);
    }
    for name in [VHOST_USER_SOCKET, VSOCK_SOCKET] {
        let _ = std::fs::remove_file(state_dir.join(name));
    }
    killed
}

fn process_mentions(pid: i32, needle: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = needle.as_os_str().as_encoded_bytes();
    !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle)
}

fn is_zombie(pid: nix::unistd::Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_reports_missing_binary_with_hint() {
        let err = find(
            "BERTH_TEST_UNSET_VAR_XYZ",
            "no-such-binary-berth",
            &[],
            "apt-get install it",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no-such-binary-berth not found on PATH; install it (apt-get install it)"
        );
    }

    #[test]
    fn kill_orphans_ignores_pids_of_unrelated_processes() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid: alive, but its command line does not mention the dir.
        std::fs::write(dir.path().join(QEMU_PID), std::process::id().to_string()).unwrap();

        assert_eq!(kill_orphans(dir.path()), 0);
        assert!(!dir.path().join(QEMU_PID).exists());
    }
}
