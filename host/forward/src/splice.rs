//! Joining one host connection to one guest vsock stream.
//!
//! The vsock stream carries [`berth_proto::stream`] frames: the transports
//! (vhost-device-vsock, Virtualization.framework) pass no half-close, so the
//! client's EOF goes out as a half-close frame, and the guest's half-close
//! frame becomes `shutdown(SHUT_WR)` on the client's socket while the client
//! can still send (`echo hi | docker run -i`, `nc -N`, HTTP/1.0).

use tokio::io::{AsyncRead, AsyncWrite};

use crate::VsockStream;

/// Copies between `client` and the framed `guest` stream until both
/// directions are done, or either side is gone.
pub async fn splice<C>(client: C, guest: VsockStream)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match berth_proto::stream_io::splice(client, guest, &[]).await {
        Ok(done) => tracing::debug!(
            sent = done.sent,
            received = done.received,
            "connection closed"
        ),
        Err(err) => tracing::debug!(%err, "connection ended with an error"),
    }
}
