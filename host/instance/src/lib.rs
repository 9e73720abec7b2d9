//! berth's instance store.
//!
//! `BERTH_HOME` (default `~/.berth`) holds one directory per instance, named
//! after it. This crate owns that layout ([`paths`]), the validated
//! [`InstanceName`], the resolved per-instance [`config::InstanceConfig`],
//! and whether an instance's host agent runs ([`state`]). It knows nothing
//! about VMs or sockets beyond their file names.

pub mod config;
pub mod name;
pub mod paths;
pub mod ssh;
pub mod state;

use std::path::PathBuf;

pub use config::InstanceConfig;
pub use name::InstanceName;
pub use paths::{BerthHome, InstancePaths};
pub use ssh::SshKeys;

/// Failures of the instance store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid instance name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cannot find the home directory: set BERTH_HOME or HOME")]
    NoHome,
    #[error("failed to {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {}", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid config: {0}")]
    Validate(String),
    #[error("no SSH key {} (start the instance once to generate its keys)", path.display())]
    MissingSshKey { path: PathBuf },
    #[error("invalid SSH key {}", path.display())]
    InvalidSshKey {
        path: PathBuf,
        #[source]
        source: ssh_key::Error,
    },
    #[error("failed to generate an SSH key")]
    GenerateSshKey {
        #[source]
        source: ssh_key::Error,
    },
    #[error("failed to encode an SSH key")]
    EncodeSshKey {
        #[source]
        source: ssh_key::Error,
    },
    #[error("socket path {} is {len} bytes; unix sockets allow {max} (use a shorter BERTH_HOME)", path.display())]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}
