//! Whether an instance's host agent runs.
//!
//! The host agent holds an exclusive `flock` on `hostagent.pid` (which also
//! records its pid) for as long as it lives. The kernel drops the lock when
//! the process dies, however it dies, so a held lock means a live agent and
//! a stale pid file is recognised without trusting the pid in it.

use std::io::Write;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result, io_err};

/// What the pid file says about the host agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// An agent holds the lock; its pid.
    Running { pid: i32 },
    /// No agent runs (no pid file, or a stale one).
    Stopped,
}

/// The lock a running host agent holds; released when dropped or on exit.
#[derive(Debug)]
pub struct AgentLock {
    _lock: Flock<std::fs::File>,
}

/// Takes the agent lock and writes our pid, or returns `Ok(None)` when
/// another agent holds it.
pub fn acquire(pid_file: &Path) -> Result<Option<AgentLock>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(pid_file)
        .map_err(io_err("open", pid_file))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, errno)) => {
            return Err(Error::Io {
                op: "lock",
                path: pid_file.to_path_buf(),
                source: errno.into(),
            });
        }
    };
    lock.set_len(0).map_err(io_err("truncate", pid_file))?;
    writeln!(lock, "{}", std::process::id()).map_err(io_err("write", pid_file))?;
    Ok(Some(AgentLock { _lock: lock }))
}

/// Reads the agent state without disturbing a running agent.
pub fn agent_state(pid_file: &Path) -> Result<AgentState> {
    let file = match std::fs::File::open(pid_file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentState::Stopped),
        Err(e) => {
            return Err(Error::Io {
                op: "open",
                path: pid_file.to_path_buf(),
                source: e,
            });
        }
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => Ok(AgentState::Stopped),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = read_pid(pid_file)?.unwrap_or(0);
            Ok(AgentState::Running { pid })
        }
        Err((_, errno)) => Err(Error::Io {
            op: "lock",
            path: pid_file.to_path_buf(),
            source: errno.into(),
        }),
    }
}

/// The pid in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Result<Option<i32>> {
    match fs_err::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok().filter(|pid: &i32| *pid > 0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pid_file_means_stopped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            agent_state(&dir.path().join("hostagent.pid")).unwrap(),
            AgentState::Stopped
        );
    }

    #[test]
    fn unlocked_pid_file_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("hostagent.pid");
        std::fs::write(&pid_file, "12345\n").unwrap();

        assert_eq!(agent_state(&pid_file).unwrap(), AgentState::Stopped);
    }

    #[test]
    fn held_lock_means_running_and_blocks_a_second_agent() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("hostagent.pid");

        let lock = acquire(&pid_file).unwrap().unwrap();

        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            agent_state(&pid_file).unwrap(),
            AgentState::Running { pid: me }
        );
        assert!(acquire(&pid_file).unwrap().is_none());
        drop(lock);
        assert_eq!(agent_state(&pid_file).unwrap(), AgentState::Stopped);
    }
}
