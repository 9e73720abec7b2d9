//! The QEMU driver: `qemu-system-x86_64` or `qemu-system-aarch64` (by the
//! kernel's architecture, see [`crate::kernel`]) plus a
//! `vhost-device-vsock` process for the guest's vsock device and one
//! `virtiofsd` per file share. A guest of another architecture than the
//! host always runs under TCG.
//!
//! Start order: the vhost-user backends first (QEMU connects to their
//! sockets at start-up and fails if they are not there yet), then QEMU. All
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

use crate::{Accel, Arch, Driver, Error, Result, VmSpec};

/// File names in the state dir (see `berth_instance::paths` for the layout).
pub const VHOST_USER_SOCKET: &str = "vhu.sock";
pub const VSOCK_SOCKET: &str = "vsock.sock";
pub const QEMU_PID: &str = "qemu.pid";
pub const QEMU_LOG: &str = "qemu.log";
pub const VSOCKD_PID: &str = "vsockd.pid";
pub const VSOCKD_LOG: &str = "vsockd.log";

/// Per share `i`: `virtiofsd-<i>.sock`, `.pid`, `.log`.
const VIRTIOFSD_PREFIX: &str = "virtiofsd-";

/// Environment overrides for the binaries.
pub const QEMU_ENV: &str = "BERTH_QEMU";
pub const QEMU_AARCH64_ENV: &str = "BERTH_QEMU_AARCH64";
pub const VSOCKD_ENV: &str = "BERTH_VHOST_DEVICE_VSOCK";
pub const VIRTIOFSD_ENV: &str = "BERTH_VIRTIOFSD";

const VSOCKD_BIN: &str = "vhost-device-vsock";
const VIRTIOFSD_BIN: &str = "virtiofsd";

/// Finds the x86_64 QEMU: `$BERTH_QEMU`, else `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Result<PathBuf> {
    find_qemu_for(Arch::X86_64)
}

/// Finds QEMU for `arch` guests: `$BERTH_QEMU` / `$BERTH_QEMU_AARCH64`, else
/// `qemu-system-<arch>` on `PATH`.
pub fn find_qemu_for(arch: Arch) -> Result<PathBuf> {
    match arch {
        Arch::X86_64 => find(
            QEMU_ENV,
            "qemu-system-x86_64",
            &[],
            "apt-get install qemu-system-x86, or run vm-images/install-deps.sh",
        ),
        Arch::Aarch64 => find(
            QEMU_AARCH64_ENV,
            "qemu-system-aarch64",
            &[],
            "apt-get install qemu-system-arm, or run vm-images/install-deps.sh",
        ),
    }
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

/// Finds virtiofsd: `$BERTH_VIRTIOFSD`, `PATH`, `~/.cargo/bin`, and where
/// Debian's package puts it.
pub fn find_virtiofsd() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|dir| dir.join("bin"))
        .into_iter()
        .collect();
    dirs.push(PathBuf::from("/usr/libexec"));
    dirs.push(PathBuf::from("/usr/lib/qemu"));
    find(
        VIRTIOFSD_ENV,
        VIRTIOFSD_BIN,
        &dirs,
        "cargo install --locked virtiofsd (needs libcap-ng-dev libseccomp-dev)",
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
    vsockd: PathBuf,
    accel: Accel,
    state_dir: PathBuf,
    qemu_child: Option<Child>,
    vsockd_child: Option<Child>,
    virtiofsd_children: Vec<Child>,
    dialer: Arc<HybridDialer>,
}

impl QemuDriver {
    /// Locates vhost-device-vsock and picks the accelerator; starts
    /// nothing. QEMU itself is looked up by `start`, once the kernel says
    /// which architecture it needs.
    pub fn new(state_dir: &Path) -> Result<Self> {
        Ok(Self {
            vsockd: find_vsockd()?,
            accel: Accel::detect(),
            state_dir: state_dir.to_path_buf(),
            qemu_child: None,
            vsockd_child: None,
            virtiofsd_children: Vec::new(),
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

    /// Starts vhost-device-vsock and one virtiofsd per share, all at once,
    /// and waits until every vhost-user socket exists (QEMU must not start
    /// before). Returns the shares' sockets.
    async fn start_backends(&mut self, shares: &[crate::Share]) -> Result<Vec<PathBuf>> {
        let vhu = self.state_dir.join(VHOST_USER_SOCKET);
        let uds = self.state_dir.join(VSOCK_SOCKET);
        let _ = std::fs::remove_file(&uds);
        let vsockd = self.spawn_backend(
            "vhost-device-vsock",
            &self.vsockd.clone(),
            args::vsockd_argv(&vhu, &uds),
            &vhu,
            VSOCKD_LOG,
            VSOCKD_PID,
        )?;
        self.vsockd_child = Some(vsockd);
        let mut waits = vec![("vhost-device-vsock", vhu, VSOCKD_LOG.to_owned())];
        let mut sockets = Vec::new();
        if !shares.is_empty() {
            let binary = find_virtiofsd()?;
            let root = nix::unistd::geteuid().is_root();
            for (i, share) in shares.iter().enumerate() {
                if !share.host_path.is_dir() {
                    return Err(Error::Io {
                        op: "share",
                        path: share.host_path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not an existing directory",
                        ),
                    });
                }
                let socket = self.state_dir.join(format!("{VIRTIOFSD_PREFIX}{i}.sock"));
                let log = format!("{VIRTIOFSD_PREFIX}{i}.log");
                let child = self.spawn_backend(
                    "virtiofsd",
                    &binary,
                    args::virtiofsd_argv(share, &socket, root),
                    &socket,
                    &log,
                    &format!("{VIRTIOFSD_PREFIX}{i}.pid"),
                )?;
                self.virtiofsd_children.push(child);
                waits.push(("virtiofsd", socket.clone(), log));
                sockets.push(socket);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, (what, socket, log)) in waits.iter().enumerate() {
            while !socket.exists() {
                let child = if i == 0 {
                    self.vsockd_child.as_mut()
                } else {
                    self.virtiofsd_children.get_mut(i - 1)
                };
                if let Some(Ok(Some(status))) = child.map(Child::try_wait) {
                    return Err(Error::EarlyExit {
                        what,
                        status: status.to_string(),
                        log: self.state_dir.join(log),
                    });
                }
                if Instant::now() > deadline {
                    return Err(Error::SocketTimeout {
                        what,
                        path: socket.clone(),
                        secs: 10,
                    });
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(sockets)
    }

    /// Spawns a vhost-user backend logging to `log_name`, its pid in `pid_name`.
    fn spawn_backend(
        &self,
        what: &'static str,
        binary: &Path,
        argv: Vec<std::ffi::OsString>,
        socket: &Path,
        log_name: &str,
        pid_name: &str,
    ) -> Result<Child> {
        let _ = std::fs::remove_file(socket);
        let log = self.log_file(log_name)?;
        let child = Command::new(binary)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|source| Error::Spawn { what, source })?,
            )
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn { what, source })?;
        write_pid(&self.state_dir.join(pid_name), child.id())?;
        Ok(child)
    }
}

impl Driver for QemuDriver {
    async fn start(&mut self, spec: &VmSpec) -> Result<()> {
        let arch = Arch::of_kernel_file(&spec.kernel)?;
        let qemu = find_qemu_for(arch)?;
        if Arch::host() != Some(arch) {
            self.accel = Accel::Tcg {
                reason: format!(
                    "the guest is {} and this host {}",
                    arch.name(),
                    std::env::consts::ARCH
                ),
            };
        }
        let share_sockets = self.start_backends(&spec.shares).await?;
        let opts = args::QemuOptions {
            arch,
            accel: self.accel.clone(),
            tsc_khz: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .as_deref()
                .and_then(args::tsc_khz_from_cpuinfo),
            vhost_user_socket: self.state_dir.join(VHOST_USER_SOCKET),
            pid_file: self.state_dir.join(QEMU_PID),
            share_sockets,
        };
        // Truncate the serial log so that it shows this boot only.
        std::fs::File::create(&spec.serial_log).map_err(|source| Error::Io {
            op: "create",
            path: spec.serial_log.clone(),
            source,
        })?;
        let log = self.log_file(QEMU_LOG)?;
        let child = Command::new(&qemu)
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
            .chain(self.virtiofsd_children.iter_mut())
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.qemu_child = None;
        self.vsockd_child = None;
        self.virtiofsd_children.clear();
        for name in [QEMU_PID, VSOCKD_PID, VHOST_USER_SOCKET, VSOCK_SOCKET] {
            let _ = std::fs::remove_file(self.state_dir.join(name));
        }
        remove_backend_files(&self.state_dir);
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
    let mut pid_files = vec![QEMU_PID.to_owned(), VSOCKD_PID.to_owned()];
    pid_files.extend(state_files(state_dir, |n| {
        n.starts_with(VIRTIOFSD_PREFIX) && n.ends_with(".pid")
    }));
    for name in pid_files {
        let pid_file = state_dir.join(&name);
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
    remove_backend_files(state_dir);
    killed
}

/// Names of the files in the state dir that `keep` accepts (one read).
fn state_files(state_dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| keep(n))
        .collect()
}

/// Removes the virtiofsd sockets and pid files (the logs stay for `berth
/// logs`) and the guest-to-host sockets (`vsock.sock_<port>`).
fn remove_backend_files(state_dir: &Path) {
    let guest_to_host = format!("{VSOCK_SOCKET}_");
    let names = state_files(state_dir, |n| {
        (n.starts_with(VIRTIOFSD_PREFIX) && (n.ends_with(".sock") || n.ends_with(".pid")))
            || n.starts_with(&guest_to_host)
    });
    for name in names {
        let _ = std::fs::remove_file(state_dir.join(name));
    }
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
