//! VM backends.
//!
//! A [`Driver`] boots one VM from a [`VmSpec`] and hands out a
//! [`VsockDialer`](berth_forward::VsockDialer) to reach the guest agent.
//! [`qemu`] works on every OS (TCG here, KVM or HVF where there is real
//! hardware virtualization); [`vz`] is Apple's Virtualization.framework,
//! whose FFI half only exists on macOS (its pure half, the device plan, is
//! built and tested everywhere). [`AnyDriver`] is the one place that picks.
//! This crate must not depend on the instance store or the CLI.

pub mod accel;
pub mod kernel;
pub mod qemu;
pub mod vz;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_forward::VsockDialer;

pub use accel::Accel;
pub use kernel::Arch;

/// A host directory shared into the guest over virtio-fs, mounted there by
/// its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The virtio-fs tag the guest mounts (at most 36 bytes).
    pub tag: String,
    /// Absolute host directory.
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// Everything a driver needs to boot the VM; all paths absolute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Extra kernel command line, appended to the driver's own.
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Raw data disk image.
    pub disk: PathBuf,
    /// Guest serial console output.
    pub serial_log: PathBuf,
    /// Directory for the driver's sockets, pid files and logs.
    pub state_dir: PathBuf,
    /// Host directories shared into the guest (virtio-fs).
    pub shares: Vec<Share>,
}

/// Driver failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{binary} not found on PATH; install it ({hint})")]
    MissingBinary { binary: String, hint: &'static str },
    #[error("failed to start {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited before it was ready ({status}); see {}", log.display())]
    EarlyExit {
        what: &'static str,
        status: String,
        log: PathBuf,
    },
    #[error("{what} did not create {} within {secs} s", path.display())]
    SocketTimeout {
        what: &'static str,
        path: PathBuf,
        secs: u64,
    },
    #[error("failed to {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {driver} driver is not available on {os}")]
    Unsupported {
        driver: &'static str,
        os: &'static str,
    },
    #[error("cannot boot kernel {}: {reason}", path.display())]
    BadKernel { path: PathBuf, reason: String },
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// A Virtualization.framework call failed; `message` is the NSError's
    /// description (NSError itself cannot leave the VM's dispatch queue).
    #[error("Virtualization.framework failed to {op}: {message}")]
    Framework { op: &'static str, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A VM backend: boots one VM and reaches its vsock ports.
pub trait Driver: Send + Sync {
    /// Boots the VM; returns once its processes run (not once the guest is up).
    fn start(&mut self, spec: &VmSpec) -> impl Future<Output = Result<()>> + Send;
    /// Resolves when the VM has stopped, with a description of how.
    fn wait(&mut self) -> impl Future<Output = String> + Send;
    /// Stops the VM at once (the graceful path is a guest `Shutdown`).
    fn kill(&mut self) -> impl Future<Output = ()> + Send;
    /// Waits up to `grace` for the VM to power off, then kills it. Called
    /// after the guest was asked to shut down over the control channel;
    /// backends with a platform power-off request (VZ's `requestStop`)
    /// send it first, for a guest whose agent no longer answers.
    fn stop(&mut self, grace: Duration) -> impl Future<Output = ()> + Send {
        async move {
            if tokio::time::timeout(grace, self.wait()).await.is_err() {
                tracing::warn!("the guest did not power off within {grace:?}; killing it");
            }
            self.kill().await;
        }
    }
    /// The dialer for the guest's vsock ports.
    fn dialer(&self) -> Arc<dyn VsockDialer>;
    /// One line for the user: backend and accelerator.
    fn describe(&self) -> String;
}

/// Which backend to open; the host agent maps the instance config onto it
/// (this crate does not know the instance store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Qemu,
    Vz,
}

/// Every backend behind one type, so callers need no generics and no
/// `#[cfg]`: the only place where cfg'd variants appear.
#[cfg_attr(
    target_os = "macos",
    expect(
        clippy::large_enum_variant,
        reason = "one driver per host agent, made once and never moved in bulk"
    )
)]
pub enum AnyDriver {
    Qemu(qemu::QemuDriver),
    #[cfg(target_os = "macos")]
    Vz(vz::VzDriver),
}

impl AnyDriver {
    /// Opens `backend` with its state (sockets, pid files, logs) in
    /// `state_dir`; starts nothing. `vz` is refused off macOS here, not by
    /// a missing variant, so a config naming it parses everywhere.
    pub fn open(backend: Backend, state_dir: &std::path::Path) -> Result<Self> {
        match backend {
            Backend::Qemu => Ok(Self::Qemu(qemu::QemuDriver::new(state_dir)?)),
            Backend::Vz => vz::open(state_dir),
        }
    }

    /// The QEMU accelerator, when this is QEMU (for the TCG notice).
    pub fn accel(&self) -> Option<&Accel> {
        match self {
            Self::Qemu(driver) => Some(driver.accel()),
            #[cfg(target_os = "macos")]
            Self::Vz(_) => None,
        }
    }
}

impl Driver for AnyDriver {
    async fn start(&mut self, spec: &VmSpec) -> Result<()> {
        match self {
            Self::Qemu(driver) => driver.start(spec).await,
            #[cfg(target_os = "macos")]
            Self::Vz(driver) => driver.start(spec).await,
        }
    }

    async fn wait(&mut self) -> String {
        match self {
            Self::Qemu(driver) => driver.wait().await,
            #[cfg(target_os = "macos")]
            Self::Vz(driver) => driver.wait().await,
        }
    }

    async fn kill(&mut self) {
        match self {
            Self::Qemu(driver) => driver.kill().await,
            #[cfg(target_os = "macos")]
            Self::Vz(driver) => driver.kill().await,
        }
    }

    async fn stop(&mut self, grace: Duration) {
        match self {
            Self::Qemu(driver) => driver.stop(grace).await,
            #[cfg(target_os = "macos")]
            Self::Vz(driver) => driver.stop(grace).await,
        }
    }

    fn dialer(&self) -> Arc<dyn VsockDialer> {
        match self {
            Self::Qemu(driver) => driver.dialer(),
            #[cfg(target_os = "macos")]
            Self::Vz(driver) => driver.dialer(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Qemu(driver) => driver.describe(),
            #[cfg(target_os = "macos")]
            Self::Vz(driver) => driver.describe(),
        }
    }
}

#[cfg(all(test, not(target_os = "macos")))]
mod tests {
    use super::*;

    #[test]
    fn vz_is_refused_off_macos_with_the_os_named() {
        let dir = tempfile::tempdir().unwrap();

        let Err(err) = AnyDriver::open(Backend::Vz, dir.path()) else {
            panic!("vz opened off macOS");
        };

        assert_eq!(
            err.to_string(),
            format!("the vz driver is not available on {}", std::env::consts::OS)
        );
    }
}
