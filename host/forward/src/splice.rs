//! Copying one host connection to one guest vsock stream, both ways.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::VsockStream;

/// Copies bytes between `client` and `guest` until the connection ends.
///
/// With `half_close`, one side's EOF is passed on as `shutdown(SHUT_WR)`
/// and the copy lasts until both directions are done (HTTP upgrades, `nc
/// -N`). Without it (vhost-device-vsock tears the whole stream down on a
/// half-close), the client's EOF is not forwarded and the guest decides when
/// the stream ends; the client's side is shut down when it does.
pub async fn splice<C>(client: C, mut guest: VsockStream, half_close: bool)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if half_close {
        let mut client = client;
        match tokio::io::copy_bidirectional(&mut client, &mut guest).await {
            Ok((up, down)) => tracing::debug!(up, down, "connection closed"),
            Err(err) => tracing::debug!(%err, "connection ended with an error"),
        }
        return;
    }
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut guest_read, mut guest_write) = guest.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut guest_write).await;
        // Keep the guest's write side open until the downstream copy ends.
        std::future::pending::<()>().await;
        drop(guest_write);
    });
    let down = tokio::io::copy(&mut guest_read, &mut client_write).await;
    let _ = client_write.shutdown().await;
    upstream.abort();
    tracing::debug!(?down, "connection closed");
}
