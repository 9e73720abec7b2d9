//! The Docker socket forwarder.
//!
//! Listens on a host unix socket (mode 0600) and, for every accepted
//! connection, dials the guest's Docker port and copies bytes both ways
//! until both directions are closed. One vsock stream per connection and a
//! byte copy with half-close (carried as a frame, see [`crate::splice`])
//! are what make HTTP upgrades (`docker attach`, `exec -it`, hijacked `run`
//! streams, `docker run -i` with stdin from a pipe) work unchanged.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, VsockDialer};

/// Forwards `socket` to guest vsock `port`.
pub struct DockerSocketForwarder {
    socket: PathBuf,
    listener: UnixListener,
    port: u32,
    dialer: Arc<dyn VsockDialer>,
}

impl DockerSocketForwarder {
    /// Binds `socket` (replacing a stale one) and restricts it to its owner.
    pub fn bind(socket: PathBuf, port: u32, dialer: Arc<dyn VsockDialer>) -> Result<Self> {
        let bind_err = |source| Error::Bind {
            path: socket.clone(),
            source,
        };
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(&socket).map_err(bind_err)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_err)?;
        Ok(Self {
            socket,
            listener,
            port,
            dialer,
        })
    }

    /// Accepts and forwards until `cancel`; removes the socket on the way out.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        let result = loop {
            tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok((client, _)) => {
                        let dialer = self.dialer.clone();
                        let port = self.port;
                        tokio::spawn(async move { forward(client, dialer, port).await });
                    }
                    Err(source) => break Err(Error::Accept { path: self.socket.clone(), source }),
                },
            }
        };
        let _ = std::fs::remove_file(&self.socket);
        result
    }
}

async fn forward(client: UnixStream, dialer: Arc<dyn VsockDialer>, port: u32) {
    let guest = match dialer.dial(port).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(%err, port, "dialing the guest for a docker connection");
            return;
        }
    };
    crate::splice::splice(client, guest).await;
}

#[cfg(test)]
mod tests {

    use berth_proto::stream_io::{Framed, PeerEnd};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::PairDialer;

    #[tokio::test]
    async fn each_connection_gets_its_own_framed_stream_with_half_close() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let (tx, mut guests) = tokio::sync::mpsc::unbounded_channel();
        let forwarder =
            DockerSocketForwarder::bind(socket.clone(), 1025, Arc::new(PairDialer { tx })).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(forwarder.run(cancel.clone()));

        let mut first = UnixStream::connect(&socket).await.unwrap();
        first.write_all(b"GET /_ping").await.unwrap();
        first.shutdown().await.unwrap();
        let (port_a, guest_a) = guests.recv().await.unwrap();
        let _second = UnixStream::connect(&socket).await.unwrap();
        let (port_b, _guest_b) = guests.recv().await.unwrap();

        assert_eq!((port_a, port_b), (1025, 1025));
        let mut guest_a = Framed::new(guest_a);
        let mut request = Vec::new();
        guest_a.read_to_end(&mut request).await.unwrap(); // the half-close frame
        assert_eq!(request, b"GET /_ping");
        assert_eq!(guest_a.peer(), PeerEnd::HalfClosed);
        // The guest answers after the client's half-close, then half-closes.
        guest_a.write_all(b"OK").await.unwrap();
        guest_a.shutdown().await.unwrap();
        let mut response = Vec::new();
        first.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"OK");
        cancel.cancel();
        task.await.unwrap().unwrap();
        assert!(!socket.exists());
    }

    #[tokio::test]
    async fn socket_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let (tx, _guests) = tokio::sync::mpsc::unbounded_channel();

        let _forwarder =
            DockerSocketForwarder::bind(socket.clone(), 1025, Arc::new(PairDialer { tx })).unwrap();

        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
