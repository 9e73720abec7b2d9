//! berth's container runtime.
//!
//! Why not youki's `libcontainer` (the suggested base): it clones the calling
//! process, so it must run in a single-threaded process anyway, and it pulls
//! in a large dependency tree (seccomp, systemd, BPF). What berth needs from
//! a runtime is one well-understood sequence of system calls, so the engine
//! re-executes its own binary as a small single-threaded *helper*
//! ([`helper`]) that performs exactly that sequence from a fully resolved
//! [`spec`]. The engine keeps all policy (defaults, images, names, state).
//!
//! This module is the engine's side: write the spec, spawn the helper with
//! the container's stdio and a sync pipe on fd 3, and read its [`Report`]s.

mod confine;
pub mod devices;
mod helper;
mod readonly;
pub mod seccomp;
mod seccomp_default;
pub mod spec;
mod syscalls;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{ExitCode, Stdio};

use tokio::io::AsyncReadExt;

pub use confine::{Confinement, DeviceSpec, confinement};
pub use devices::DeviceMapping;
pub use helper::{EXEC_ARG, SHIM_ARG};
pub use spec::{ContainerSpec, ExecSpec, MountSpec, NetworkSpec, ProcessSpec, Report, RootfsSpec};

/// Runs a runtime helper if this process was started as one. Call this
/// first thing in `main`, before any thread exists.
pub fn dispatch_helper() -> Option<ExitCode> {
    helper::dispatch()
}

/// The child's ends of its standard streams.
#[derive(Debug)]
pub struct ChildStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A started helper: its process (whose exit status is the container's or
/// the exec's) and the host pid of the process it runs.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub helper: tokio::process::Child,
}

/// Why a start failed, with the exit code Docker gives it (125/126/127).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    pub message: String,
    pub code: i32,
}

impl StartError {
    fn setup(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 125,
        }
    }
}

/// Spawns `helper_bin MODE spec_path` with `stdio` and waits until the
/// helper reports that the user's program was executed (or failed to be).
pub async fn start(
    helper_bin: &Path,
    mode: &str,
    spec_path: &Path,
    stdio: ChildStdio,
) -> Result<Started, StartError> {
    let (sync_read, sync_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StartError::setup(format!("creating the sync pipe: {e}")))?;
    let mut command = tokio::process::Command::new(helper_bin);
    command
        .arg(mode)
        .arg(spec_path)
        .stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::from(stdio.stdout))
        .stderr(Stdio::from(stdio.stderr))
        .kill_on_drop(false);
    let sync_fd = sync_write.as_raw_fd();
    pass_fd_as_3(&mut command, sync_fd);
    let helper = command.spawn().map_err(|e| {
        StartError::setup(format!(
            "starting the runtime helper {}: {e}",
            helper_bin.display()
        ))
    })?;
    drop(sync_write);
    drop(command);

    let mut helper = helper;
    match read_reports(sync_read).await {
        Ok(pid) => Ok(Started { pid, helper }),
        Err(err) => {
            // The helper exits after reporting an error (its child, if any,
            // is gone already); wait for it so that no zombie is left behind.
            // On a garbled report it may still run: kill it first.
            if !err.reported
                && let Err(e) = helper.start_kill()
            {
                tracing::warn!(error = %e, "killing a runtime helper that failed");
            }
            if let Err(e) = helper.wait().await {
                tracing::warn!(error = %e, "reaping a runtime helper that failed");
            }
            Err(err.error)
        }
    }
}

/// A failed start: the error and whether the helper reported it itself.
struct Failed {
    error: StartError,
    reported: bool,
}

impl From<StartError> for Failed {
    fn from(error: StartError) -> Self {
        Self {
            error,
            reported: false,
        }
    }
}

/// Reads the helper's reports until EOF; the container's pid on success.
async fn read_reports(sync_read: OwnedFd) -> Result<i32, Failed> {
    let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(sync_read)
        .map_err(|e| StartError::setup(format!("reading the sync pipe: {e}")))?;
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StartError::setup(format!("reading the sync pipe: {e}")))?;
    let mut pid = None;
    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Report>(line) {
            Ok(Report::Pid { pid: p }) => pid = Some(p),
            Ok(Report::Error { message, code }) => {
                return Err(Failed {
                    error: StartError { message, code },
                    reported: true,
                });
            }
            Err(e) => {
                return Err(
                    StartError::setup(format!("bad report from the runtime helper: {e}")).into(),
                );
            }
        }
    }
    Ok(pid.ok_or_else(|| {
        StartError::setup("the runtime helper exited without starting the process")
    })?)
}

/// Makes `fd` the child's fd 3 (the sync pipe).
#[expect(unsafe_code, reason = "pre_exec hook to place the sync pipe on fd 3")]
fn pass_fd_as_3(command: &mut tokio::process::Command, fd: i32) {
    // SAFETY: the hook only calls async-signal-safe functions (dup2, fcntl)
    // on fds that stay open until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
