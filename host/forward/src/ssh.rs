//! The SSH proxy: `berth ssh-proxy NAME` is OpenSSH's `ProxyCommand`, and
//! copies its stdin to a guest vsock stream (port `SSH`) and the stream to
//! its stdout.
//!
//! Plain blocking copies on two threads: the process does nothing else,
//! and a thread blocked reading stdin must not keep it alive once the guest
//! has closed the stream (the process just exits).
//!
//! Half-close: when the dialer cannot pass one on (vhost-device-vsock turns
//! it into a full shutdown, see [`crate::VsockDialer::half_close`]), stdin's
//! EOF is not forwarded and the guest ends the stream; SSH has said
//! everything by then (the client sends its disconnect first), and OpenSSH
//! hangs up its proxy command when it exits anyway.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

/// Copies `input` to `stream` and `stream` to `output` until the guest
/// closes the stream. Returns the bytes copied to `output`.
pub fn pipe_stdio<R, W>(
    stream: UnixStream,
    half_close: bool,
    input: R,
    mut output: W,
) -> io::Result<u64>
where
    R: Read + Send + 'static,
    W: Write,
{
    let mut upstream = stream.try_clone()?;
    let mut input = input;
    std::thread::spawn(move || {
        let _ = copy(&mut input, &mut upstream);
        if half_close {
            let _ = upstream.shutdown(Shutdown::Write);
        }
        // Without half-close the write side stays open until the process
        // exits.
    });
    let mut downstream = stream;
    let copied = copy(&mut downstream, &mut output)?;
    output.flush()?;
    Ok(copied)
}

/// Size of the copy buffer.
const CHUNK: usize = 64 * 1024;

/// A plain read/write copy. Not `io::copy`: on Linux it splices between a
/// socket and a pipe, and a splice that waits for socket data holds the
/// pipe's lock, so ssh cannot even read what was already spliced into its
/// pipe (seen as ssh hanging right after the version exchange).
fn copy(input: &mut impl Read, output: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
        output.flush()?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn copies_both_ways_and_forwards_eof_with_half_close() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let guest_side = std::thread::spawn(move || {
            let mut request = Vec::new();
            guest.read_to_end(&mut request).unwrap(); // ends: EOF forwarded
            guest.write_all(b"reply to ").unwrap();
            guest.write_all(&request).unwrap();
        });
        let mut output = Vec::new();

        let copied = pipe_stdio(host, true, &b"hello"[..], &mut output).unwrap();

        guest_side.join().unwrap();
        assert_eq!(output, b"reply to hello");
        assert_eq!(copied, 14);
    }

    /// ssh reads the proxy's output from a pipe, and answers only after the
    /// guest's version line has reached it.
    #[test]
    fn output_reaches_a_pipe_reader_while_the_guest_waits_for_input() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let (mut output_read, output_write) = io::pipe().unwrap();
        let (input_read, mut input_write) = io::pipe().unwrap();
        std::thread::spawn(move || pipe_stdio(host, true, input_read, output_write));
        guest.write_all(b"SSH-2.0-guest\r\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = [0u8; 15];
            output_read.read_exact(&mut banner).unwrap();
            tx.send(banner).unwrap();
        });

        let banner = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the guest's first line reached the pipe reader");

        assert_eq!(&banner, b"SSH-2.0-guest\r\n");
        input_write.write_all(b"SSH-2.0-client\r\n").unwrap();
        drop(input_write);
        let mut request = Vec::new();
        guest.read_to_end(&mut request).unwrap();
        assert_eq!(request, b"SSH-2.0-client\r\n");
    }

    #[test]
    fn without_half_close_the_stream_stays_open_after_input_eof() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let guest_side = std::thread::spawn(move || {
            let mut request = [0u8; 5];
            guest.read_exact(&mut request).unwrap();
            // The proxy must not shut down its write side: no EOF arrives.
            guest
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut more = [0u8; 1];
            let err = guest.read(&mut more).unwrap_err();
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{err}"
            );
            guest.write_all(b"late reply").unwrap();
        });
        let mut output = Vec::new();

        pipe_stdio(host, false, &b"hello"[..], &mut output).unwrap();

        guest_side.join().unwrap();
        assert_eq!(output, b"late reply");
    }
}
