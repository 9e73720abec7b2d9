//! VM backends.
//!
//! A [`Driver`] boots one VM from a [`VmSpec`] and hands out a
//! [`VsockDialer`](berth_forward::VsockDialer) to reach the guest agent.
//! [`qemu`] works on every OS (TCG here, KVM or HVF where there is real
//! hardware virtualization); a Virtualization.framework backend comes later.
//! This crate must not depend on the instance store or the CLI.

pub mod accel;
pub mod qemu;

use std::path::PathBuf;
use std::sync::Arc;

use berth_forward::VsockDialer;

pub use accel::Accel;

/// Everything a driver needs to boot the VM; all paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Host directories shared with the guest over virtio-fs.
    pub shares: Vec<Share>,
}

/// A host directory exported to the guest as a virtio-fs device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The virtio-fs tag the guest mounts by.
    pub tag: String,
    pub host_path: PathBuf,
    pub read_only: bool,
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
    /// The dialer for the guest's vsock ports.
    fn dialer(&self) -> Arc<dyn VsockDialer>;
    /// One line for the user: backend and accelerator.
    fn describe(&self) -> String;
}
