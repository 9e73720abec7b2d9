//! The guest's SSH server (`russh`), on vsock port `berth_proto::ports::SSH`.
//!
//! The host owns the keys: on every boot its host agent sends
//! [`berth_proto::HostToGuest::SshKeys`] on the control channel, with the
//! instance's host private key and the one public key allowed to log in.
//! Until they arrive, a connection waits for them (up to [`KEYS_TIMEOUT`]);
//! nothing about them is stored in the VM.
//!
//! Supported: public-key authentication (that one key; any user name, and
//! every session runs as root), session channels with `pty-req`, `shell`,
//! `exec`, `env`, `window-change` and `signal`, EOF and close, and
//! `exit-status`/`exit-signal`. Not supported: port forwarding, agent and X11
//! forwarding, subsystems (so no `sftp`/`scp -s`). See [`session`].

mod process;
mod session;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use russh::keys::{PrivateKey, PublicKey};
use russh::{MethodKind, MethodSet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// How long a connection that arrives before the host sent the keys waits
/// for them.
const KEYS_TIMEOUT: Duration = Duration::from_secs(30);

/// The keys the host sent.
#[derive(Debug)]
pub(crate) struct Keys {
    host: PrivateKey,
    authorized: PublicKey,
}

impl Keys {
    /// Parses the host private key (OpenSSH PEM) and the authorized public
    /// key (an `authorized_keys` line: `ssh-ed25519 AAAA... comment`).
    pub(crate) fn parse(host_key: &str, authorized_key: &str) -> Result<Self> {
        let host = PrivateKey::from_openssh(host_key).context("parsing the SSH host key")?;
        let authorized = PublicKey::from_openssh(authorized_key.trim())
            .with_context(|| format!("parsing the authorized SSH key {authorized_key:?}"))?;
        Ok(Self { host, authorized })
    }
}

/// Where the control channel puts the keys and the server finds them.
#[derive(Clone)]
pub(crate) struct KeySlot {
    tx: watch::Sender<Option<Arc<Config>>>,
}

/// A server configuration built from one set of keys.
pub(crate) struct Config {
    server: Arc<russh::server::Config>,
    authorized: PublicKey,
}

impl KeySlot {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::Sender::new(None),
        }
    }

    /// Installs (or replaces) the keys; later connections use them.
    pub(crate) fn set(&self, keys: Keys) {
        let server = russh::server::Config {
            keys: vec![keys.host],
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(200),
            auth_rejection_time_initial: Some(Duration::ZERO),
            // An idle interactive shell is not a dead connection: the
            // transport is a local vsock stream, which does not time out.
            inactivity_timeout: None,
            ..Default::default()
        };
        self.tx.send_replace(Some(Arc::new(Config {
            server: Arc::new(server),
            authorized: keys.authorized,
        })));
    }

    async fn get(&self) -> Result<Arc<Config>> {
        let mut rx = self.tx.subscribe();
        let config = tokio::time::timeout(KEYS_TIMEOUT, rx.wait_for(Option::is_some))
            .await
            .context("the host has not sent the SSH keys")?
            .context("the SSH key slot is gone")?;
        Ok(config.clone().expect("invariant: wait_for returned a Some"))
    }
}

/// Serves one SSH connection to completion.
pub(crate) async fn serve_connection<S>(keys: KeySlot, stream: S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = keys.get().await?;
    let handler = session::Handler::new(config.authorized.clone());
    russh::server::run_stream(config.server.clone(), stream, handler)
        .await
        .context("starting the SSH session")?
        .await
        .context("SSH session")
}

#[cfg(test)]
mod tests;
