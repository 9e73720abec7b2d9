//! Streamed request bodies (image archives, build contexts, `docker cp`
//! tars) read as a blocking [`Read`] on the blocking pool.
//!
//! A tar reader stops at the archive's end marker, and clients send the
//! rest (the second zero block, record padding) in a later chunk. If the
//! server answered and closed with that still unread, the client's last
//! write fails (`EPIPE`): Testcontainers' `copyContentToContainer` did, on
//! about a third of its copies. So the pump keeps reading after the reader
//! is done, discarding up to [`DRAIN_LIMIT`] bytes, as Go's `net/http`
//! server (dockerd) drains an unread body before it closes.

use std::io::Read;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;

/// How much of a body nobody read is still consumed (and discarded) so the
/// client's writes complete; past this, the connection is simply closed.
pub const DRAIN_LIMIT: usize = 1 << 20;

/// An async request body as a blocking `Read`.
pub(crate) struct BodyReader {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
}

impl BodyReader {
    /// Starts a task that pumps `body` into the reader (call within the
    /// runtime); see the module doc for what happens to unread data.
    pub(crate) fn spawn(body: Body) -> Self {
        let (sender, chunks) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut stream = body.into_data_stream();
            let mut drained = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(std::io::Error::other);
                let failed = chunk.is_err();
                let len = chunk.as_ref().map_or(0, Bytes::len);
                if sender.send(chunk).await.is_err() {
                    // The reader is done: consume what the client still sends.
                    drained += len;
                    if drained > DRAIN_LIMIT {
                        break;
                    }
                }
                if failed {
                    break;
                }
            }
        });
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
