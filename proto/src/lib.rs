//! The host<->guest wire protocol of berth.
//!
//! This is the only crate that both the host (`host/*`) and the guest agent
//! (`guest-agent/*`) link. It does no I/O: it names the vsock ports, defines
//! the control messages, and encodes/decodes their frames. Transport code on
//! each side reads bytes and hands them to [`frame::decode`]. Forwarded
//! streams (Docker socket, ports, SSH) carry [`stream`] frames; with the
//! `tokio` feature, [`stream_io`] drives a caller's stream with them.

pub mod control;
pub mod datagram;
pub mod frame;
pub mod ports;
pub mod shares;
pub mod stream;
#[cfg(feature = "tokio")]
pub mod stream_io;

pub use control::{GuestToHost, HostToGuest, OutputStream, PROTOCOL_VERSION, ScriptMode};
pub use frame::{DecodeError, MAX_FRAME, decode, encode};
