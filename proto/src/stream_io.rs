//! Tokio adapters for [`crate::stream`] framing (feature `tokio`).
//!
//! [`Framed`] makes a transport stream (the host's unix end of a vsock
//! stream, or the guest's vsock socket) look like a plain byte stream with
//! a half-close: reading yields the peer's data and then EOF at its
//! half-close; writing sends data frames; `shutdown` sends a half-close
//! frame and leaves the transport open for the peer's answer. The guest
//! serves the Docker API and SSH on it directly. [`splice`] joins a plain
//! connection (a host client, a VM TCP connection) to a framed transport.
//!
//! Nothing here opens or names a socket: the caller owns the streams.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::stream::{Decoder, Event, HEADER_LEN, MAX_PAYLOAD, close, data_header, half_close};

/// Size of the transport read buffer: a whole frame and the next header.
const READ_BUF: usize = MAX_PAYLOAD + 2 * HEADER_LEN;

/// How the peer's direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEnd {
    /// Still sending.
    Open,
    /// A half-close frame: the peer still reads.
    HalfClosed,
    /// A close frame or the transport's own end: the peer is gone.
    Closed,
}

/// The receiving half's state.
struct Reader {
    decoder: Decoder,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    peer: PeerEnd,
}

impl Reader {
    fn new(prefix: &[u8]) -> Self {
        let mut buf = vec![0u8; READ_BUF.max(prefix.len())].into_boxed_slice();
        buf[..prefix.len()].copy_from_slice(prefix);
        Self {
            decoder: Decoder::new(),
            buf,
            pos: 0,
            end: prefix.len(),
            peer: PeerEnd::Open,
        }
    }

    fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.peer != PeerEnd::Open || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            while self.pos < self.end {
                let input = &self.buf[self.pos..self.end];
                let (used, event) = self
                    .decoder
                    .decode(input, out.remaining())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let completed = event.is_some();
                let range = match event {
                    Some(Event::Data(range)) => Some(range),
                    Some(Event::HalfClose) => {
                        self.peer = PeerEnd::HalfClosed;
                        None
                    }
                    Some(Event::Close) => {
                        self.peer = PeerEnd::Closed;
                        None
                    }
                    None => None,
                };
                if let Some(range) = range {
                    out.put_slice(&input[range]);
                }
                self.pos += used;
                if completed {
                    return Poll::Ready(Ok(()));
                }
            }
            let payload = self.decoder.payload_remaining();
            if payload > 0 {
                // The rest of a payload goes straight into the caller's buffer.
                let want = payload.min(out.remaining());
                let dst = out.initialize_unfilled_to(want);
                let mut direct = ReadBuf::new(dst);
                ready!(Pin::new(&mut *inner).poll_read(cx, &mut direct))?;
                let n = direct.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(truncated()));
                }
                self.decoder
                    .decode(&dst[..n], n)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut refill = ReadBuf::new(&mut self.buf);
            ready!(Pin::new(&mut *inner).poll_read(cx, &mut refill))?;
            let n = refill.filled().len();
            self.pos = 0;
            self.end = n;
            if n == 0 {
                if self.decoder.mid_frame() {
                    return Poll::Ready(Err(truncated()));
                }
                self.peer = PeerEnd::Closed;
            }
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the forwarded stream ended inside a frame",
    )
}

/// The sending half's state: at most one encoded frame pending.
struct Writer {
    pending: Vec<u8>,
    pos: usize,
    /// A half-close or close frame was queued: nothing more may be written.
    finished: bool,
}

impl Writer {
    fn new() -> Self {
        Self {
            pending: Vec::with_capacity(HEADER_LEN + MAX_PAYLOAD),
            pos: 0,
            finished: false,
        }
    }

    /// Writes the pending frame out.
    fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pos < self.pending.len() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.pending[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.pending.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the forwarded stream was shut down",
            )));
        }
        ready!(self.poll_drain(inner, cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_PAYLOAD);
        // Header and payload in one buffer: one write per frame.
        self.pending.extend_from_slice(&data_header(n));
        self.pending.extend_from_slice(&data[..n]);
        // The bytes are accepted; a transport that is not ready takes them
        // at the next write or flush.
        if let Poll::Ready(Err(err)) = self.poll_drain(inner, cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner, cx))?;
        Pin::new(inner).poll_flush(cx)
    }

    /// Queues `frame` (half-close or close) once, then flushes.
    fn poll_finish<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        frame: [u8; HEADER_LEN],
    ) -> Poll<io::Result<()>> {
        if !self.finished {
            ready!(self.poll_drain(inner, cx))?;
            self.pending.extend_from_slice(&frame);
            self.finished = true;
        }
        self.poll_flush(inner, cx)
    }
}

/// A framed transport seen as a plain stream with half-close.
pub struct Framed<S> {
    inner: S,
    reader: Reader,
    writer: Writer,
}

impl<S> Framed<S> {
    pub fn new(inner: S) -> Self {
        Self::with_prefix(inner, &[])
    }

    /// Like [`Framed::new`], when `prefix` (framed bytes) was already read
    /// from the transport.
    pub fn with_prefix(inner: S, prefix: &[u8]) -> Self {
        Self {
            inner,
            reader: Reader::new(prefix),
            writer: Writer::new(),
        }
    }

    /// How the peer's direction ended, as far as read.
    pub fn peer(&self) -> PeerEnd {
        self.reader.peer
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Sends a close frame: this side is gone both ways. Further writes
    /// fail; a half-close already sent is not followed by one.
    pub async fn close(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.writer.poll_finish(&mut self.inner, cx, close())).await
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reader.poll_read(&mut this.inner, cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writer.poll_write(&mut this.inner, cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.writer.poll_flush(&mut this.inner, cx)
    }

    /// Sends a half-close frame; the transport stays open for reading.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.writer.poll_finish(&mut this.inner, cx, half_close())
    }
}

/// The receiving half of a split transport.
pub struct FrameReader<R> {
    inner: R,
    state: Reader,
}

impl<R> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_prefix(inner, &[])
    }

    /// Like [`FrameReader::new`], when `prefix` (framed bytes) was already
    /// read from the transport.
    pub fn with_prefix(inner: R, prefix: &[u8]) -> Self {
        Self {
            inner,
            state: Reader::new(prefix),
        }
    }

    pub fn peer(&self) -> PeerEnd {
        self.state.peer
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.poll_read(&mut this.inner, cx, buf)
    }
}

/// The sending half of a split transport.
pub struct FrameWriter<W> {
    inner: W,
    state: Writer,
}

impl<W> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            state: Writer::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Sends a close frame (see [`Framed::close`]).
    pub async fn close(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.state.poll_finish(&mut self.inner, cx, close())).await
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for FrameWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.state.poll_write(&mut this.inner, cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.poll_finish(&mut this.inner, cx, half_close())
    }
}

/// Bytes copied each way by [`splice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spliced {
    /// Plain side to the transport.
    pub sent: u64,
    /// Transport to the plain side.
    pub received: u64,
}

/// Size of [`splice`]'s copy buffer: one full frame per read.
const COPY_BUF: usize = MAX_PAYLOAD;

/// Joins `plain` (a host client, a TCP connection in the VM) to the framed
/// `transport` until both directions are done: the plain side's EOF goes
/// out as a half-close frame, and the peer's half-close becomes
/// `shutdown` (SHUT_WR on a socket) of the plain side, while the other
/// direction keeps flowing. A close frame, or the transport's end, ends
/// both at once. When the plain side fails (reset, or gone while the peer
/// still sends), the peer gets a close frame and the error is returned.
/// `read_ahead`: framed bytes already read from the transport.
pub async fn splice<P, T>(plain: P, transport: T, read_ahead: &[u8]) -> io::Result<Spliced>
where
    P: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut plain_read, mut plain_write) = tokio::io::split(plain);
    let (transport_read, transport_write) = tokio::io::split(transport);
    let mut from_peer = FrameReader::with_prefix(transport_read, read_ahead);
    let mut to_peer = FrameWriter::new(transport_write);
    let mut done = Spliced::default();
    let result = {
        let up = async {
            let n = copy(&mut plain_read, &mut to_peer).await?;
            to_peer.shutdown().await?;
            Ok::<u64, io::Error>(n)
        };
        let down = async {
            let n = copy(&mut from_peer, &mut plain_write).await?;
            match plain_write.shutdown().await {
                // A plain side that already hung up has nothing to tell.
                Err(err) if err.kind() != io::ErrorKind::NotConnected => return Err(err),
                Ok(()) | Err(_) => {}
            }
            Ok::<(u64, PeerEnd), io::Error>((n, from_peer.peer()))
        };
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                sent = &mut up, if !up_done => {
                    match sent {
                        Ok(n) => { done.sent = n; up_done = true; }
                        Err(err) => break Err(err),
                    }
                }
                received = &mut down, if !down_done => {
                    match received {
                        Ok((n, peer)) => {
                            done.received = n;
                            down_done = true;
                            if peer == PeerEnd::Closed {
                                break Ok(done);
                            }
                        }
                        Err(err) => break Err(err),
                    }
                }
            }
            if up_done && down_done {
                break Ok(done);
            }
        }
    };
    if result.is_err() && from_peer.peer() != PeerEnd::Closed {
        // Best effort: the transport may be what failed.
        if to_peer.close().await.is_err() {
            return result;
        }
    }
    result
}

/// `tokio::io::copy` with a buffer of one frame, flushing whenever the
/// source has nothing more for now (so interactive bytes are not held).
async fn copy<R, W>(reader: &mut R, writer: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            writer.flush().await?;
            return Ok(total);
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::duplex;
    use tokio::net::UnixStream;

    use super::*;
    use crate::stream::encode_data;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_half_close_is_eof_for_the_reader_while_it_still_answers() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Framed::new(a), Framed::new(b));

        a.write_all(b"hi\n").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        b.write_all(b"hi back").await.unwrap();
        b.shutdown().await.unwrap();
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();

        assert_eq!(got, b"hi\n");
        assert_eq!(back, b"hi back");
        assert_eq!(
            (a.peer(), b.peer()),
            (PeerEnd::HalfClosed, PeerEnd::HalfClosed)
        );
        let err = a.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn writes_become_bounded_frames_and_reads_take_any_size() {
        let (a, mut raw) = duplex(1 << 20);
        let mut a = Framed::new(a);
        let payload: Vec<u8> = (0..MAX_PAYLOAD * 2 + 7).map(|i| (i % 253) as u8).collect();

        a.write_all(&payload).await.unwrap();
        a.shutdown().await.unwrap();
        drop(a);
        let mut wire = Vec::new();
        raw.read_to_end(&mut wire).await.unwrap();

        let mut expected = Vec::new();
        encode_data(&payload, &mut expected);
        expected.extend_from_slice(&half_close());
        assert_eq!(wire.len(), expected.len());
        assert!(
            wire == expected,
            "frames of at most MAX_PAYLOAD bytes, then a half-close"
        );
        // Read back through a reader with a tiny buffer.
        let (mut w, r) = duplex(1 << 20);
        w.write_all(&wire).await.unwrap();
        let mut r = Framed::new(r);
        let mut got = Vec::new();
        let mut small = [0u8; 3];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert!(got == payload);
    }

    #[tokio::test]
    async fn bytes_read_before_the_adapter_are_decoded_first() {
        let mut prefix = Vec::new();
        encode_data(b"early ", &mut prefix);
        let (mut w, r) = duplex(1024);
        let mut rest = Vec::new();
        encode_data(b"late", &mut rest);
        rest.extend_from_slice(&half_close());
        w.write_all(&rest).await.unwrap();

        let mut r = Framed::with_prefix(r, &prefix);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();

        assert_eq!(got, b"early late");
    }

    #[tokio::test]
    async fn a_transport_ending_inside_a_frame_is_an_error() {
        let (mut w, r) = duplex(1024);
        w.write_all(&data_header(10)).await.unwrap();
        w.write_all(b"short").await.unwrap();
        drop(w);

        let err = Framed::new(r)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("inside a frame"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_frame_is_invalid_data_naming_it() {
        let (mut w, r) = duplex(1024);
        w.write_all(&[7, 0, 0, 0, 0]).await.unwrap();

        let err = Framed::new(r).read(&mut [0u8; 8]).await.unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("unknown kind 7"), "{err}");
    }

    /// A client, the splice, and the peer's framed end.
    fn spliced() -> (
        UnixStream,
        Framed<UnixStream>,
        tokio::task::JoinHandle<io::Result<Spliced>>,
    ) {
        let (client, plain) = UnixStream::pair().unwrap();
        let (transport, peer) = UnixStream::pair().unwrap();
        let task = tokio::spawn(async move { splice(plain, transport, &[]).await });
        (client, Framed::new(peer), task)
    }

    #[tokio::test]
    async fn splice_passes_half_closes_both_ways_and_ends_when_both_are_done() {
        let (mut client, mut peer, task) = spliced();

        client.write_all(b"stdin").await.unwrap();
        client.shutdown().await.unwrap();
        let mut input = Vec::new();
        tokio::time::timeout(WAIT, peer.read_to_end(&mut input))
            .await
            .expect("the client's half-close reached the peer")
            .unwrap();
        peer.write_all(b"output after stdin closed").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut output = Vec::new();
        tokio::time::timeout(WAIT, client.read_to_end(&mut output))
            .await
            .expect("the peer's half-close reached the client")
            .unwrap();
        let done = tokio::time::timeout(WAIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        assert_eq!(input, b"stdin");
        assert_eq!(output, b"output after stdin closed");
        assert_eq!(
            done,
            Spliced {
                sent: 5,
                received: 25
            }
        );
    }

    #[tokio::test]
    async fn a_close_from_the_peer_ends_the_splice_while_the_client_is_idle() {
        let (mut client, mut peer, task) = spliced();

        peer.write_all(b"bye").await.unwrap();
        peer.close().await.unwrap();
        let mut output = Vec::new();
        tokio::time::timeout(WAIT, client.read_to_end(&mut output))
            .await
            .expect("the client sees EOF")
            .unwrap();
        let done = tokio::time::timeout(WAIT, task)
            .await
            .expect("the splice ends without the client's EOF")
            .unwrap()
            .unwrap();

        assert_eq!(output, b"bye");
        assert_eq!(done.received, 3);
    }

    #[tokio::test]
    async fn a_client_gone_while_the_peer_sends_ends_the_peers_stream() {
        let (client, mut peer, task) = spliced();
        drop(client);

        // The client's EOF arrives first as a half-close ...
        let mut input = Vec::new();
        peer.read_to_end(&mut input).await.unwrap();
        assert_eq!(peer.peer(), PeerEnd::HalfClosed);
        // ... and once writing to the departed client fails, so do the
        // peer's writes.
        let chunk = vec![1u8; 4096];
        let err = tokio::time::timeout(WAIT, async {
            loop {
                if let Err(err) = peer.write_all(&chunk).await {
                    return err;
                }
            }
        })
        .await
        .expect("writes fail once the splice has gone");
        let result = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();

        assert!(result.is_err(), "{result:?}");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
    }
}
