//! Every vsock port berth uses, in one place.
//!
//! Host-to-guest ports are served by the guest agent (the host dials them);
//! guest-to-host ports are served by the host agent (on QEMU they arrive at
//! `<uds>_<port>` next to the vhost-device-vsock socket).

/// Guest agent control channel: hello/version handshake, ready, events, shutdown.
pub const CONTROL: u32 = 1024;
/// The Docker Engine API; each host connection is its own vsock stream.
pub const DOCKER: u32 = 1025;
/// Port forwarding: one stream per forwarded host connection, preceded by a
/// [`crate::control::ForwardTarget`] frame naming the guest target.
pub const PORT_FORWARD: u32 = 1026;
/// SSH server of the guest agent.
pub const SSH: u32 = 1027;
/// Guest to host: the guest agent connects here once it serves its ports,
/// then closes. The host waits for this instead of dialing a guest that is
/// not up yet (vhost-device-vsock can hold such early connects unanswered).
pub const READY: u32 = 1028;
