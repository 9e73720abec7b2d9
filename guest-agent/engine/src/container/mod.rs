//! Containers: the record store and the lifecycle state machine.
//!
//! ```text
//!  create ──> created ──start──> running ──(exit)──> exited ──rm──> (gone)
//!                 ^                 │  ^  pause/unpause            │
//!                 │                 │  └── paused                  │
//!                 └──── start ──────┼──────────────────────────────┘
//!                                   └─(exit + restart policy)─> restarting ──> running
//! ```
//!
//! Each container is an [`Entry`]: the persisted [`Container`] record, its
//! output hub and log, and a watch channel that counts exits (for `wait`).
//! Operations that change the process (start, stop, restart, remove) take
//! the entry's async operation lock, so they never interleave.

pub mod archive;
pub mod commit;
mod control;
mod create;
pub mod exec;
pub mod health;
pub mod io;
mod lifecycle;
pub mod links;
pub mod model;
mod mounts;
pub mod names;
mod networking;
mod offline_root;
pub mod signal;
mod spec;
pub mod stats;
mod stdio;
mod stop;
mod store;
mod update;
mod validate;

pub use model::{
    Config, Container, HostConfig, LogConfig, MountPoint, MountRequest, RestartPolicy, State,
    Status,
};
pub(crate) use stdio::{open_stdio, set_window_size};
pub(crate) use store::write_atomic;
pub use store::{Changes, Containers, Counts, Entry, StdinMessage};

use create::merge_env;
use spec::capabilities;
use store::new_id;

use crate::{Error, Result};

/// Default `PATH` when neither the image nor the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "not-running" => Ok(Self::NotRunning),
            "next-exit" => Ok(Self::NextExit),
            "removed" => Ok(Self::Removed),
            other => Err(Error::InvalidArgument(format!(
                "invalid condition: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_condition_parses_docker_values() {
        assert_eq!(
            "next-exit".parse::<WaitCondition>().unwrap(),
            WaitCondition::NextExit
        );
        assert!("later".parse::<WaitCondition>().is_err());
    }
}
