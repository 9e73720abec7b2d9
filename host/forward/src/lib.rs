//! Host-side forwarders over vsock.
//!
//! Everything here is generic over a [`VsockDialer`], which opens a byte
//! stream to a guest vsock port. The QEMU backend is [`HybridDialer`]
//! (vhost-device-vsock's unix socket); Virtualization.framework will bring
//! its own. Never an `AF_VSOCK` socket on the host: there, `/dev/vsock` may
//! lead to the host's own hypervisor rather than to our guest.
//!
//! Depends on nothing berth-specific but the wire protocol (`berth-proto`).

pub mod dialer;
pub mod docker_socket;
pub mod ports;
pub mod rules;
pub mod splice;
pub mod ssh;
#[cfg(test)]
mod testing;

pub use dialer::{BoxFuture, HybridDialer, VsockDialer, VsockStream};
pub use docker_socket::DockerSocketForwarder;
pub use ports::PortForwarder;
pub use rules::PortRule;

/// Forwarder failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind {}", path.display())]
    Bind {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on host {proto} port {port}")]
    BindPort {
        proto: &'static str,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to accept on {}", path.display())]
    Accept {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
