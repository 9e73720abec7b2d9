//! Test doubles shared by this crate's unit tests.

use std::io;

use tokio::net::{UnixListener, UnixStream};

use crate::{BoxFuture, VsockDialer, VsockStream};

/// Dials by handing out one end of a fresh socketpair; the other end goes
/// to the test through a channel, standing in for the guest.
pub(crate) struct PairDialer {
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<(u32, UnixStream)>,
}

impl VsockDialer for PairDialer {
    fn dial(&self, port: u32) -> BoxFuture<'_, io::Result<VsockStream>> {
        Box::pin(async move {
            let (host, guest) = UnixStream::pair()?;
            self.tx
                .send((port, guest))
                .map_err(|_| io::Error::other("test guest gone"))?;
            Ok(host)
        })
    }

    fn listen(&self, _port: u32) -> io::Result<UnixListener> {
        Err(io::Error::other("not used"))
    }
}
