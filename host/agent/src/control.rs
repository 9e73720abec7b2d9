//! Host side of the control channel (guest vsock port `CONTROL`).
//!
//! Protocol (see `berth_proto::control`): the host sends `Hello { version }`,
//! the guest answers with its own `Hello`; on a version match the guest then
//! sends `Ready` once its Docker API is served. `Shutdown` asks the guest to
//! stop its containers, sync and power off.

use anyhow::{Context, Result, bail};
use berth_forward::VsockStream;
use berth_proto::{GuestToHost, HostToGuest, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An established control channel.
pub struct ControlChannel {
    stream: VsockStream,
    buf: Vec<u8>,
    /// Events set aside by [`ControlChannel::defer`], returned first by
    /// [`ControlChannel::recv`].
    deferred: std::collections::VecDeque<GuestToHost>,
}

impl ControlChannel {
    /// Says hello and waits for the guest's `Hello` and `Ready`. Returns the
    /// guest agent's version.
    pub async fn handshake(stream: VsockStream) -> Result<(Self, String)> {
        let mut channel = Self {
            stream,
            buf: Vec::new(),
            deferred: std::collections::VecDeque::new(),
        };
        channel
            .send(&HostToGuest::Hello {
                version: PROTOCOL_VERSION,
            })
            .await?;
        let agent = match channel.recv().await? {
            GuestToHost::Hello { version, agent } if version == PROTOCOL_VERSION => agent,
            GuestToHost::Hello { version, agent } => bail!(
                "guest agent {agent} speaks control protocol {version}, this berth speaks {PROTOCOL_VERSION}; rebuild the guest image"
            ),
            other => bail!("guest agent sent {other:?} before Hello"),
        };
        match channel.recv().await? {
            GuestToHost::Ready => Ok((channel, agent)),
            other => bail!("guest agent sent {other:?} instead of Ready"),
        }
    }

    pub async fn send(&mut self, msg: &HostToGuest) -> Result<()> {
        self.stream
            .write_all(&berth_proto::encode(msg))
            .await
            .context("writing to the control channel")
    }

    /// The next message (deferred ones first); an error when the guest
    /// closed the channel.
    pub async fn recv(&mut self) -> Result<GuestToHost> {
        if let Some(msg) = self.deferred.pop_front() {
            return Ok(msg);
        }
        self.read_next().await
    }

    /// Sets `msg` aside for a later [`ControlChannel::recv`]: what a
    /// sub-protocol (provisioning) reads but does not handle, such as a port
    /// the guest opened meanwhile.
    pub fn defer(&mut self, msg: GuestToHost) {
        self.deferred.push_back(msg);
    }

    /// The next message from the wire, ignoring deferred ones.
    pub async fn read_next(&mut self) -> Result<GuestToHost> {
        loop {
            if let Some((msg, used)) =
                berth_proto::decode(&self.buf).context("decoding a control frame")?
            {
                self.buf.drain(..used);
                return Ok(msg);
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .context("reading the control channel")?;
            if n == 0 {
                bail!("the guest closed the control channel");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixStream;

    use super::*;

    async fn fake_guest(mut stream: UnixStream, version: u32) {
        let mut buf = vec![0u8; 256];
        let _ = stream.read(&mut buf).await.unwrap();
        let hello = GuestToHost::Hello {
            version,
            agent: "0.0.0-test".into(),
        };
        stream
            .write_all(&berth_proto::encode(&hello))
            .await
            .unwrap();
        stream
            .write_all(&berth_proto::encode(&GuestToHost::Ready))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn handshake_returns_agent_version_after_ready() {
        let (host, guest) = UnixStream::pair().unwrap();
        tokio::spawn(fake_guest(guest, PROTOCOL_VERSION));

        let (_channel, agent) = ControlChannel::handshake(host).await.unwrap();

        assert_eq!(agent, "0.0.0-test");
    }

    #[tokio::test]
    async fn handshake_names_both_versions_on_mismatch() {
        let (host, guest) = UnixStream::pair().unwrap();
        tokio::spawn(fake_guest(guest, 999));

        let err = ControlChannel::handshake(host)
            .await
            .err()
            .unwrap()
            .to_string();

        assert!(
            err.contains("protocol 999") && err.contains(&format!("speaks {PROTOCOL_VERSION}")),
            "{err}"
        );
    }
}
