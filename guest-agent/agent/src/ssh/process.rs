//! The processes SSH sessions run: `/bin/sh` (busybox) as root, on a pty or
//! on pipes.
//!
//! Each process leads its own process group (a pty session leads its own
//! session, with the pty as its controlling terminal), so a signal request
//! or a hang-up reaches its whole job, not the agent.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;

use rustix::pty::OpenptFlags;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// The shell sessions run.
const SHELL: &str = "/bin/sh";
/// `PATH` of every session (busybox links its applets in these).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Home and working directory of root, when it exists.
const ROOT_HOME: &str = "/root";

/// A pseudo-terminal requested with `pty-req`, before its process starts.
#[derive(Debug)]
pub(super) struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    term: String,
}

/// A terminal size, in characters and pixels (as SSH sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Size {
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
}

impl Pty {
    /// Opens a pty pair of `size` for terminal type `term`.
    pub(super) fn open(term: &str, size: Size) -> io::Result<Self> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let name = rustix::pty::ptsname(&master, Vec::new())?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        resize(&master, size)?;
        Ok(Self {
            master,
            slave,
            term: term.to_owned(),
        })
    }

    pub(super) fn resize(&self, size: Size) -> io::Result<()> {
        resize(&self.master, size)
    }
}

/// Sets the window size of a pty (the kernel sends `SIGWINCH` to its
/// foreground process group).
pub(super) fn resize(master: &OwnedFd, size: Size) -> io::Result<()> {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    rustix::termios::tcsetwinsize(
        master,
        rustix::termios::Winsize {
            ws_row: clamp(size.rows),
            ws_col: clamp(size.cols),
            ws_xpixel: clamp(size.pix_width),
            ws_ypixel: clamp(size.pix_height),
        },
    )?;
    Ok(())
}

/// What to run.
#[derive(Debug, Default)]
pub(super) struct Request {
    /// `exec`: the command line, run by `sh -c`; `shell`: `None`.
    pub command: Option<String>,
    /// Variables from `env` requests, in order.
    pub env: Vec<(String, String)>,
    pub pty: Option<Pty>,
}

/// A started process and its stdio, seen from the agent.
pub(super) struct Spawned {
    pub child: Child,
    /// The process group to signal (the child leads it).
    pub pgid: i32,
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// Output streams with their SSH extended-data code (`None`: stdout,
    /// `Some(1)`: stderr). A pty has just one.
    pub outputs: Vec<(Option<u32>, Box<dyn AsyncRead + Send + Unpin>)>,
    /// The pty master, for `window-change`.
    pub pty_master: Option<OwnedFd>,
}

/// Starts the process of `request`.
pub(super) fn spawn(request: Request) -> io::Result<Spawned> {
    let mut cmd = Command::new(SHELL);
    match &request.command {
        Some(command) => {
            cmd.arg("-c").arg(command);
        }
        // A login shell reads /etc/profile and ~/.profile, as sshd's does.
        None => {
            cmd.arg0("-sh");
        }
    }
    let home = if Path::new(ROOT_HOME).is_dir() {
        ROOT_HOME
    } else {
        "/"
    };
    cmd.env_clear()
        .env("PATH", PATH)
        .env("HOME", home)
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", SHELL)
        .current_dir(home)
        .kill_on_drop(false);
    if let Some(pty) = &request.pty {
        cmd.env("TERM", &pty.term);
    }
    for (name, value) in &request.env {
        cmd.env(name, value);
    }
    match request.pty {
        Some(pty) => spawn_on_pty(cmd, pty),
        None => spawn_on_pipes(cmd),
    }
}

fn spawn_on_pipes(mut cmd: Command) -> io::Result<Spawned> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = pid_of(&child)?;
    let stdin = child.stdin.take().expect("invariant: stdin is piped");
    let stdout = child.stdout.take().expect("invariant: stdout is piped");
    let stderr = child.stderr.take().expect("invariant: stderr is piped");
    Ok(Spawned {
        child,
        pgid,
        stdin: Box::new(stdin),
        outputs: vec![(None, Box::new(stdout)), (Some(1), Box::new(stderr))],
        pty_master: None,
    })
}

fn spawn_on_pty(mut cmd: Command, pty: Pty) -> io::Result<Spawned> {
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    controlling_terminal(&mut cmd);
    // The Command holds the only copies of the slave: dropping it after the
    // spawn leaves the child as the sole holder, so reading the master ends
    // (EIO) once the child and everything it started have exited.
    let child = cmd.spawn()?;
    drop(cmd);
    let pgid = pid_of(&child)?;
    let reader = pipe::Receiver::from_owned_fd_unchecked(pty.master.try_clone()?)?;
    let writer = pipe::Sender::from_owned_fd_unchecked(pty.master.try_clone()?)?;
    Ok(Spawned {
        child,
        pgid,
        stdin: Box::new(writer),
        outputs: vec![(None, Box::new(reader))],
        pty_master: Some(pty.master),
    })
}

#[expect(
    unsafe_code,
    reason = "pre_exec: the pty must become the child's controlling terminal"
)]
fn controlling_terminal(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec. It
    // allocates nothing and makes two async-signal-safe system calls:
    // setsid (a new session, so the child may take a controlling terminal)
    // and TIOCSCTTY on fd 0, which the Command has made the pty slave.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
}

fn pid_of(child: &Child) -> io::Result<i32> {
    child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("the spawned process has no pid"))
}

/// Sends `signal` to the process group `pgid`; a group that is gone is fine.
pub(super) fn signal_group(pgid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
}
