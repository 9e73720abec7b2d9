//! Control-channel messages.
//!
//! The host dials [`crate::ports::CONTROL`]; both sides send a `Hello` first
//! and refuse to go on when the protocol versions differ. After that the
//! guest streams [`GuestToHost`] events and the host sends [`HostToGuest`]
//! requests. New fields must be `#[serde(default)]` so that an older peer of
//! the same protocol version still parses them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Transport protocol of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// Messages the host sends to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum HostToGuest {
    /// First frame on the control channel.
    Hello { version: u32 },
    /// Sync file systems and power the VM off.
    Shutdown,
    /// Answers a [`GuestToHost::PortOpened`] with a non-zero `id`: the host
    /// listens on the port (`error` is `None`), or cannot (`error` says why).
    PortAck {
        id: u64,
        #[serde(default)]
        error: Option<String>,
    },
    /// Files changed on the host under watched share paths (guest paths).
    FsChanged { changes: Vec<FsChange> },
    /// Run a provisioning script or probe with `/bin/sh`. The guest answers
    /// with [`GuestToHost::ScriptOutput`] frames as output arrives, then one
    /// [`GuestToHost::ScriptExited`], all carrying `id`.
    RunScript {
        /// Chosen by the host; unique per control channel.
        id: u64,
        mode: ScriptMode,
        /// Script text: run directly when it starts with `#!`, else with
        /// `/bin/sh -eu`.
        script: String,
        /// Extra environment, over the guest's defaults (`PATH`, `HOME`, `USER`).
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// The instance's SSH keys, sent after the handshake on every boot
    /// (nothing about them is stored in the VM). The guest's SSH server
    /// (on [`crate::ports::SSH`]) waits for them.
    SshKeys {
        /// The guest's host private key, OpenSSH PEM
        /// (`-----BEGIN OPENSSH PRIVATE KEY-----`).
        #[serde(default)]
        host_key: String,
        /// The one public key allowed to log in, as an `authorized_keys`
        /// line (`ssh-ed25519 AAAA... comment`).
        #[serde(default)]
        authorized_key: String,
    },
}

/// One host-side change, named by its guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsChange {
    pub path: String,
    /// Whether the path exists on the host after the change.
    pub exists: bool,
}

/// Who runs a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptMode {
    /// Root.
    System,
    /// The unprivileged guest user ([`GUEST_USER`]).
    User,
}

/// The unprivileged guest user that `ScriptMode::User` scripts run as:
/// (name, uid = gid, home).
pub const GUEST_USER: (&str, u32, &str) = ("berth", 1000, "/home/berth");

/// Which output stream a [`GuestToHost::ScriptOutput`] chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Largest [`GuestToHost::ScriptOutput`] chunk, in bytes of text, far
/// below [`crate::MAX_FRAME`].
pub const MAX_SCRIPT_CHUNK: usize = 16 * 1024;

/// Messages the guest sends to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum GuestToHost {
    /// First frame on the control channel.
    Hello {
        version: u32,
        /// The guest agent's own version (`CARGO_PKG_VERSION`).
        agent: String,
    },
    /// The engine serves the Docker API.
    Ready,
    /// A port was published in the guest; the host should listen on it.
    /// With a non-zero `id` the guest waits for a [`HostToGuest::PortAck`]
    /// (a container's `start` returns only once the host listens).
    PortOpened {
        proto: Proto,
        host_ip: String,
        port: u16,
        #[serde(default)]
        id: u64,
    },
    /// A previously announced port is gone.
    PortClosed {
        proto: Proto,
        host_ip: String,
        port: u16,
    },
    /// The share paths (guest paths) whose host-side changes the guest
    /// wants as [`HostToGuest::FsChanged`]: the bind sources of running
    /// containers. Replaces the previous set.
    WatchPaths { paths: Vec<String> },
    /// The guest is about to power off.
    ShuttingDown,
    /// Output of the script [`HostToGuest::RunScript`] `id` (UTF-8, lossy;
    /// at most [`MAX_SCRIPT_CHUNK`] bytes; not split at line ends).
    ScriptOutput {
        id: u64,
        stream: OutputStream,
        data: String,
    },
    /// The script `id` finished: its exit code (128 + signal when killed),
    /// or `error` when it could not be started (then `code` is 127).
    ScriptExited {
        id: u64,
        code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// First frame on a [`crate::ports::PORT_FORWARD`] stream: where the guest
/// agent should connect this stream to. After it, a TCP stream carries raw
/// bytes; a UDP stream carries [`crate::datagram`] frames both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardTarget {
    pub proto: Proto,
    pub port: u16,
    /// The guest address to connect to; `None` means loopback.
    #[serde(default)]
    pub ip: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_opened_without_id_parses_as_unacknowledged() {
        let json = r#"{"type":"PortOpened","proto":"tcp","host_ip":"0.0.0.0","port":80}"#;
        let msg: GuestToHost = serde_json::from_str(json).unwrap();
        assert!(matches!(msg, GuestToHost::PortOpened { id: 0, .. }));
    }

    #[test]
    fn guest_messages_are_tagged_by_type() {
        let json = serde_json::to_string(&GuestToHost::Ready).unwrap();
        assert_eq!(json, r#"{"type":"Ready"}"#);
    }

    #[test]
    fn ssh_keys_round_trip_tagged_by_type() {
        let msg = HostToGuest::SshKeys {
            host_key: "-----BEGIN OPENSSH PRIVATE KEY-----\n...".into(),
            authorized_key: "ssh-ed25519 AAAA berth".into(),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.starts_with(r#"{"type":"SshKeys","#), "{json}");
        assert_eq!(serde_json::from_str::<HostToGuest>(&json).unwrap(), msg);
    }

    #[test]
    fn port_opened_round_trips() {
        let msg = GuestToHost::PortOpened {
            proto: Proto::Udp,
            host_ip: "127.0.0.1".into(),
            port: 53,
            id: 7,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<GuestToHost>(&json).unwrap(), msg);
    }

    #[test]
    fn run_script_wire_format_is_pinned() {
        let msg = HostToGuest::RunScript {
            id: 7,
            mode: ScriptMode::User,
            script: "echo hi".into(),
            env: BTreeMap::from([("A".into(), "b".into())]),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"type":"RunScript","id":7,"mode":"user","script":"echo hi","env":{"A":"b"}}"#
        );
        assert_eq!(serde_json::from_str::<HostToGuest>(&json).unwrap(), msg);
    }

    #[test]
    fn run_script_env_defaults_to_empty() {
        let msg: HostToGuest =
            serde_json::from_str(r#"{"type":"RunScript","id":1,"mode":"system","script":"true"}"#)
                .unwrap();
        assert!(matches!(msg, HostToGuest::RunScript { env, .. } if env.is_empty()));
    }

    #[test]
    fn script_exited_omits_a_missing_error() {
        let msg = GuestToHost::ScriptExited {
            id: 3,
            code: 0,
            error: None,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(json, r#"{"type":"ScriptExited","id":3,"code":0}"#);
        assert_eq!(serde_json::from_str::<GuestToHost>(&json).unwrap(), msg);
    }
}
