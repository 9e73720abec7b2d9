//! A container process's stdio: pipes or a pty, and the pumps that feed
//! stdin and copy output to the hub and the log.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::io::{Chunk, Stream};
use super::store::{Entry, StdinMessage};
use crate::runtime::ChildStdio;
use crate::{Error, Result};

/// The engine's ends of a process's stdio.
pub(crate) struct EngineIo {
    pub stdin: Option<pipe::Sender>,
    pub outputs: Vec<(Stream, pipe::Receiver)>,
    pub pty: Option<Arc<OwnedFd>>,
}

pub(super) fn sys_err(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Runtime {
        context: what.into(),
        source: Some(std::io::Error::from(e)),
    }
}

pub(super) fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("creating a pipe"))
}

/// Creates the process's stdio: a pty (tty) or pipes.
pub(crate) fn open_stdio(tty: bool, stdin: bool) -> Result<(ChildStdio, EngineIo)> {
    if tty {
        let pty = nix::pty::openpty(None, None).map_err(sys_err("opening a pty"))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone().map_err(|e| Error::Runtime {
                context: "duplicating a pty fd".into(),
                source: Some(e),
            })
        };
        let master_read = dup(&pty.master)?;
        let master_write = dup(&pty.master)?;
        let child = ChildStdio {
            stdin: Some(dup(&pty.slave)?),
            stdout: dup(&pty.slave)?,
            stderr: pty.slave,
        };
        let reader =
            pipe::Receiver::from_owned_fd_unchecked(master_read).map_err(|e| Error::Runtime {
                context: "watching the pty".into(),
                source: Some(e),
            })?;
        let writer =
            pipe::Sender::from_owned_fd_unchecked(master_write).map_err(|e| Error::Runtime {
                context: "watching the pty".into(),
                source: Some(e),
            })?;
        let io = EngineIo {
            stdin: Some(writer),
            outputs: vec![(Stream::Stdout, reader)],
            pty: Some(Arc::new(pty.master)),
        };
        return Ok((child, io));
    }
    let (out_read, out_write) = pipe_pair()?;
    let (err_read, err_write) = pipe_pair()?;
    let wrap_rx = |fd| {
        pipe::Receiver::from_owned_fd(fd).map_err(|e| Error::Runtime {
            context: "watching a pipe".into(),
            source: Some(e),
        })
    };
    let (child_stdin, engine_stdin) = if stdin {
        let (read, write) = pipe_pair()?;
        let sender = pipe::Sender::from_owned_fd(write).map_err(|e| Error::Runtime {
            context: "watching a pipe".into(),
            source: Some(e),
        })?;
        (Some(read), Some(sender))
    } else {
        (None, None)
    };
    let child = ChildStdio {
        stdin: child_stdin,
        stdout: out_write,
        stderr: err_write,
    };
    let io = EngineIo {
        stdin: engine_stdin,
        outputs: vec![
            (Stream::Stdout, wrap_rx(out_read)?),
            (Stream::Stderr, wrap_rx(err_read)?),
        ],
        pty: None,
    };
    Ok((child, io))
}

/// Feeds attached clients' input to the process's stdin until it exits.
pub(super) fn spawn_stdin_pump(entry: &Arc<Entry>, stdin: pipe::Sender) {
    let Some(mut rx) = entry
        .stdin_rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    // Input sent before the start (clients attach, stream stdin, then
    // start) is delivered: the channel holds it until now.
    let entry = entry.clone();
    let mut changes = entry.changes();
    let seen = changes.borrow_and_update().exits;
    tokio::spawn(async move {
        // Dropping the sender delivers EOF to the process.
        let mut stdin = Some(stdin);
        loop {
            tokio::select! {
                message = rx.recv(), if stdin.is_some() => match message {
                    Some(StdinMessage::Data(data)) => {
                        if let Some(writer) = stdin.as_mut()
                            && writer.write_all(&data).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Some(StdinMessage::Close) | None => stdin = None,
                },
                () = async { let _ = changes.wait_for(|c| c.exits != seen).await; } => break,
            }
        }
        *entry
            .stdin_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
    });
}

/// Copies each output to the container's hub and log until EOF.
pub(super) fn spawn_pumps(
    entry: &Arc<Entry>,
    outputs: Vec<(Stream, pipe::Receiver)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    outputs
        .into_iter()
        .map(|(stream, mut reader)| {
            let entry = entry.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let chunk = Chunk {
                                stream,
                                data: Bytes::copy_from_slice(&buf[..n]),
                            };
                            if let Err(err) = entry.log.write(&chunk).await {
                                tracing::warn!(error = %err, "writing the container log failed");
                            }
                            entry.hub.send(chunk).await;
                        }
                    }
                }
            })
        })
        .collect()
}

#[expect(unsafe_code, reason = "TIOCSWINSZ ioctl on the pty master")]
pub(crate) fn set_window_size(pty: &OwnedFd, height: u16, width: u16) -> Result<()> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own from a valid pty fd.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(Error::Runtime {
            context: "resizing the tty".into(),
            source: Some(std::io::Error::last_os_error()),
        });
    }
    Ok(())
}
