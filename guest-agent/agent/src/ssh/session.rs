//! One SSH connection: authentication and its session channels.
//!
//! A channel collects `env` and `pty-req` requests, then `shell` or `exec`
//! starts its process ([`process::spawn`]); one of them per channel, as in
//! OpenSSH. From then on:
//!
//! * client data is queued to the process's stdin by a writer task (the
//!   queue never blocks the connection's event loop, which also carries the
//!   process's output; a blocked loop could deadlock a process that writes
//!   before it reads);
//! * client EOF closes stdin (on a pty it is ignored, as by sshd);
//! * output is copied to the channel (stderr as extended data 1) by one task
//!   per stream;
//! * a supervisor task owns the child: it delivers `signal` requests to the
//!   process group, sends `SIGHUP` when the channel or connection goes away
//!   first, and once the process has exited and its output is drained,
//!   sends `exit-status` (or `exit-signal`), EOF and close.
//!
//! A pty's output can stay open after the shell exits (a background job
//! holds the terminal); it is drained for at most [`PTY_DRAIN`] after that.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Pty as PtyMode, Sig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::process::{self, Pty, Request, Size};

/// How long a pty's output is read after its process has exited.
const PTY_DRAIN: Duration = Duration::from_millis(300);
/// Read size of the output copies.
const CHUNK: usize = 32 * 1024;

/// The russh handler of one connection.
pub(super) struct Handler {
    authorized: PublicKey,
    channels: HashMap<ChannelId, ChannelState>,
}

#[derive(Default)]
struct ChannelState {
    env: Vec<(String, String)>,
    pty: Option<Pty>,
    running: Option<Running>,
}

/// The process of a channel, seen from the event loop.
struct Running {
    /// Client data for stdin; dropped on EOF.
    stdin: Option<mpsc::UnboundedSender<Bytes>>,
    /// Signals for the supervisor; dropping it hangs the process up.
    signals: mpsc::UnboundedSender<Signal>,
    pty_master: Option<OwnedFd>,
}

impl Handler {
    pub(super) fn new(authorized: PublicKey) -> Self {
        Self {
            authorized,
            channels: HashMap::new(),
        }
    }

    fn reply(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// `shell` (no command) or `exec`.
    fn start(
        &mut self,
        channel: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(state) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        if state.running.is_some() {
            tracing::debug!(?channel, "a second shell/exec on one channel");
            return session.channel_failure(channel);
        }
        let request = Request {
            command,
            env: std::mem::take(&mut state.env),
            pty: state.pty.take(),
        };
        let what = request
            .command
            .clone()
            .unwrap_or_else(|| "a login shell".into());
        let spawned = match process::spawn(request) {
            Ok(spawned) => spawned,
            Err(err) => {
                tracing::warn!(%err, command = what, "ssh: starting the process");
                return session.channel_failure(channel);
            }
        };
        tracing::debug!(?channel, pid = spawned.pgid, command = what, "ssh: started");
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        state.running = Some(Running {
            stdin: Some(stdin_tx),
            signals: signal_tx,
            pty_master: spawned.pty_master.as_ref().and_then(|m| m.try_clone().ok()),
        });
        let handle = session.handle();
        let is_pty = spawned.pty_master.is_some();
        tokio::spawn(write_stdin(spawned.stdin, stdin_rx));
        let outputs = spawned
            .outputs
            .into_iter()
            .map(|(ext, reader)| tokio::spawn(copy_output(reader, handle.clone(), channel, ext)))
            .collect();
        tokio::spawn(supervise(Supervised {
            child: spawned.child,
            pgid: spawned.pgid,
            signals: signal_rx,
            outputs,
            is_pty,
            handle,
            channel,
            _pty_master: spawned.pty_master,
        }));
        session.channel_success(channel)
    }
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if key.public_key.key_data() == self.authorized.key_data() {
            tracing::info!(user, "ssh: login");
            Ok(Auth::Accept)
        } else {
            tracing::info!(user, "ssh: rejected a key that is not the instance's");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Requests and data arrive through this handler's callbacks; the
        // Channel object itself is not needed.
        self.channels.insert(channel.id(), ChannelState::default());
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let valid = !name.is_empty() && !name.contains(['=', '\0']) && !value.contains('\0');
        let state = self.channels.get_mut(&channel);
        let ok = match state {
            Some(state) if valid && state.running.is_none() => {
                state.env.push((name.to_owned(), value.to_owned()));
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        _modes: &[(PtyMode, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(state) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        if state.running.is_some() || state.pty.is_some() {
            return session.channel_failure(channel);
        }
        let size = Size {
            cols,
            rows,
            pix_width,
            pix_height,
        };
        match Pty::open(term, size) {
            Ok(pty) => {
                state.pty = Some(pty);
                session.channel_success(channel)
            }
            Err(err) => {
                tracing::warn!(%err, "ssh: opening a pty");
                session.channel_failure(channel)
            }
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = Size {
            cols,
            rows,
            pix_width,
            pix_height,
        };
        let result = match self.channels.get(&channel) {
            Some(ChannelState {
                running:
                    Some(Running {
                        pty_master: Some(master),
                        ..
                    }),
                ..
            }) => process::resize(master, size),
            Some(ChannelState {
                pty: Some(pty),
                running: None,
                ..
            }) => pty.resize(size),
            _ => return session.channel_failure(channel),
        };
        if let Err(err) = &result {
            tracing::debug!(%err, "ssh: resizing the pty");
        }
        Self::reply(session, channel, result.is_ok())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, None, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match std::str::from_utf8(data) {
            Ok(command) => self.start(channel, Some(command.to_owned()), session),
            Err(_) => {
                tracing::debug!("ssh: exec command is not UTF-8");
                session.channel_failure(channel)
            }
        }
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let running = self
            .channels
            .get(&channel)
            .and_then(|state| state.running.as_ref());
        match (running, to_signal(&signal)) {
            (Some(running), Some(signal)) => {
                let _ = running.signals.send(signal);
            }
            (_, None) => tracing::debug!(?signal, "ssh: unknown signal"),
            (None, _) => tracing::debug!(?signal, "ssh: signal before shell/exec"),
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(stdin) = self
            .channels
            .get(&channel)
            .and_then(|state| state.running.as_ref())
            .and_then(|running| running.stdin.as_ref())
        {
            // A send error means the process closed its stdin: drop the data,
            // as a write to a closed pipe would.
            let _ = stdin.send(Bytes::copy_from_slice(data));
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(running) = self
            .channels
            .get_mut(&channel)
            .and_then(|state| state.running.as_mut())
            && running.pty_master.is_none()
        {
            running.stdin = None;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Dropping the state hangs up a process that still runs.
        self.channels.remove(&channel);
        Ok(())
    }
}

/// Maps an SSH signal name to a Linux signal.
fn to_signal(signal: &Sig) -> Option<Signal> {
    Some(match signal {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => format!("SIG{name}").parse().ok()?,
    })
}

/// Maps a Linux signal to its SSH name (RFC 4254 §6.10: without `SIG`).
fn to_sig(signal: i32) -> Sig {
    let Ok(signal) = Signal::try_from(signal) else {
        return Sig::Custom(signal.to_string());
    };
    match signal {
        Signal::SIGABRT => Sig::ABRT,
        Signal::SIGALRM => Sig::ALRM,
        Signal::SIGFPE => Sig::FPE,
        Signal::SIGHUP => Sig::HUP,
        Signal::SIGILL => Sig::ILL,
        Signal::SIGINT => Sig::INT,
        Signal::SIGKILL => Sig::KILL,
        Signal::SIGPIPE => Sig::PIPE,
        Signal::SIGQUIT => Sig::QUIT,
        Signal::SIGSEGV => Sig::SEGV,
        Signal::SIGTERM => Sig::TERM,
        Signal::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(other.as_str().trim_start_matches("SIG").to_owned()),
    }
}

async fn write_stdin(
    mut stdin: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(chunk) = rx.recv().await {
        if stdin.write_all(&chunk).await.is_err() {
            return;
        }
    }
    // EOF (or channel gone): closing our end is the process's EOF.
    let _ = stdin.shutdown().await;
}

async fn copy_output(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    handle: Handle,
    channel: ChannelId,
    ext: Option<u32>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // A pty master reads EIO once no process holds the terminal: EOF.
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        let sent = match ext {
            None => handle.data(channel, chunk).await,
            Some(code) => handle.extended_data(channel, code, chunk).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

struct Supervised {
    child: tokio::process::Child,
    pgid: i32,
    signals: mpsc::UnboundedReceiver<Signal>,
    outputs: Vec<tokio::task::JoinHandle<()>>,
    is_pty: bool,
    handle: Handle,
    channel: ChannelId,
    /// Kept open until the output is drained.
    _pty_master: Option<OwnedFd>,
}

async fn supervise(mut s: Supervised) {
    let mut connected = true;
    let status = loop {
        tokio::select! {
            status = s.child.wait() => break status,
            signal = s.signals.recv(), if connected => match signal {
                Some(signal) => process::signal_group(s.pgid, signal),
                None => {
                    // The channel or the connection is gone: hang up, as
                    // sshd does when a session's connection drops.
                    connected = false;
                    process::signal_group(s.pgid, Signal::SIGHUP);
                }
            },
        }
    };
    for output in s.outputs {
        if s.is_pty {
            let abort = output.abort_handle();
            if tokio::time::timeout(PTY_DRAIN, output).await.is_err() {
                abort.abort();
            }
        } else {
            let _ = output.await;
        }
    }
    let (handle, channel) = (s.handle, s.channel);
    match status {
        Ok(status) => {
            if let Some(code) = status.code() {
                tracing::debug!(?channel, code, "ssh: process exited");
                let _ = handle
                    .exit_status_request(channel, u32::try_from(code).unwrap_or(255))
                    .await;
            } else if let Some(signal) = status.signal() {
                tracing::debug!(?channel, signal, "ssh: process killed");
                let _ = handle
                    .exit_signal_request(
                        channel,
                        to_sig(signal),
                        status.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
        }
        Err(err) => tracing::warn!(%err, "ssh: waiting for the process"),
    }
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_signal_names_map_to_linux_signals() {
        assert_eq!(
            to_signal(&Sig::Custom("WINCH".into())),
            Some(Signal::SIGWINCH)
        );
        assert_eq!(to_signal(&Sig::Custom("NOPE".into())), None);
    }

    #[test]
    fn exit_signals_use_ssh_names_without_sig_prefix() {
        assert!(matches!(to_sig(Signal::SIGTERM as i32), Sig::TERM));
        assert!(matches!(to_sig(Signal::SIGUSR2 as i32), Sig::Custom(name) if name == "USR2"));
    }
}
