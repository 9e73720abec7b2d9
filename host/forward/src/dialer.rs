//! Dialing guest vsock ports.
//!
//! vhost-device-vsock's "hybrid" socket (the Firecracker convention): the
//! host connects to the unix socket given as `--uds-path`, writes
//! `CONNECT <port>\n`, and reads `OK <host-port>\n` once the guest accepted;
//! from then on the unix stream is the vsock stream. If the guest has no
//! listener on that port, the backend closes the connection instead.
//! Guest-to-host connections arrive on unix sockets named `<uds>_<port>`,
//! which [`VsockDialer::listen`] binds.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// A boxed, sendable future (object-safe async trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connected vsock stream. Both backends hand us a stream socket fd
/// (a unix socket for vhost-device-vsock; the fd of a
/// `VZVirtioSocketConnection` on macOS), so a `UnixStream` carries either.
/// Neither passes `shutdown(SHUT_WR)` on as a vsock half-close
/// (vhost-device-vsock tears the whole stream down), so forwarded streams
/// carry half-closes in [`berth_proto::stream`] frames and never shut a
/// dialed stream down.
pub type VsockStream = UnixStream;

/// Opens streams to guest vsock ports, and accepts streams the guest opens.
pub trait VsockDialer: Send + Sync + 'static {
    /// Connects to guest `port`.
    fn dial(&self, port: u32) -> BoxFuture<'_, io::Result<VsockStream>>;

    /// Listens for guest connections to host `port`.
    fn listen(&self, port: u32) -> io::Result<UnixListener>;
}

/// Dialer for vhost-device-vsock's hybrid unix socket.
#[derive(Debug, Clone)]
pub struct HybridDialer {
    uds: PathBuf,
}

/// Longest handshake reply accepted (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY: usize = 32;

impl HybridDialer {
    pub fn new(uds: impl Into<PathBuf>) -> Self {
        Self { uds: uds.into() }
    }

    pub fn uds(&self) -> &Path {
        &self.uds
    }

    async fn connect(&self, port: u32) -> io::Result<VsockStream> {
        let mut stream = UnixStream::connect(&self.uds).await?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await?;
        // Read byte by byte: whatever follows the newline is guest data.
        let mut reply = Vec::with_capacity(16);
        loop {
            let byte = match stream.read_u8().await {
                Ok(byte) => byte,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("guest vsock port {port} refused the connection"),
                    ));
                }
                Err(e) => return Err(e),
            };
            if byte == b'\n' {
                break;
            }
            reply.push(byte);
            if reply.len() > MAX_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "overlong vsock handshake reply",
                ));
            }
        }
        parse_reply(&reply).map(|_host_port| stream).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "bad vsock handshake reply {:?}",
                    String::from_utf8_lossy(&reply)
                ),
            )
        })
    }
}

/// Parses `OK <port>` (without the newline) into the host-side port.
pub fn parse_reply(reply: &[u8]) -> Option<u32> {
    std::str::from_utf8(reply)
        .ok()?
        .strip_prefix("OK ")?
        .trim()
        .parse()
        .ok()
}

impl VsockDialer for HybridDialer {
    fn dial(&self, port: u32) -> BoxFuture<'_, io::Result<VsockStream>> {
        Box::pin(self.connect(port))
    }

    fn listen(&self, port: u32) -> io::Result<UnixListener> {
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{port}"));
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reply_accepts_ok_with_port() {
        assert_eq!(parse_reply(b"OK 1073741824"), Some(1_073_741_824));
    }

    #[test]
    fn parse_reply_rejects_other_text() {
        assert_eq!(parse_reply(b"ERR"), None);
        assert_eq!(parse_reply(b"OK"), None);
    }

    /// A fake vhost-device-vsock: answers `CONNECT 1025` with `OK 99` and then
    /// echoes, and closes on any other port.
    async fn fake_backend(listener: UnixListener) {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut line = Vec::new();
                while let Ok(b) = stream.read_u8().await {
                    if b == b'\n' {
                        break;
                    }
                    line.push(b);
                }
                if line != b"CONNECT 1025" {
                    return;
                }
                stream.write_all(b"OK 99\nhello").await.unwrap();
                let mut buf = [0u8; 64];
                let n = stream.read(&mut buf).await.unwrap();
                stream.write_all(&buf[..n]).await.unwrap();
            });
        }
    }

    #[tokio::test]
    async fn dial_completes_handshake_and_keeps_early_guest_data() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        tokio::spawn(fake_backend(UnixListener::bind(&uds).unwrap()));
        let dialer = HybridDialer::new(&uds);

        let mut stream = dialer.dial(1025).await.unwrap();

        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        stream.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        stream.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
    }

    #[tokio::test]
    async fn dial_to_closed_port_is_connection_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        tokio::spawn(fake_backend(UnixListener::bind(&uds).unwrap()));
        let dialer = HybridDialer::new(&uds);

        let err = dialer.dial(7).await.unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn listen_binds_port_suffixed_socket() {
        let dir = tempfile::tempdir().unwrap();
        let dialer = HybridDialer::new(dir.path().join("vsock.sock"));

        let _listener = dialer.listen(2000).unwrap();

        assert!(dir.path().join("vsock.sock_2000").exists());
    }
}
