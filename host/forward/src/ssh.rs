//! The SSH proxy: `berth ssh-proxy NAME` is OpenSSH's `ProxyCommand`, and
//! copies its stdin to a guest vsock stream (port `SSH`) and the stream to
//! its stdout.
//!
//! Plain blocking copies on two threads: the process does nothing else,
//! and a thread blocked reading stdin must not keep it alive once the guest
//! has closed the stream (the process just exits).
//!
//! The stream carries [`berth_proto::stream`] frames: stdin's EOF goes out
//! as a half-close frame (the transport itself passes none), and the
//! guest's half-close or close ends the copy to stdout.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use berth_proto::stream::{Decoder, Event, HEADER_LEN, MAX_PAYLOAD, data_header, half_close};

/// Copies `input` to `stream` and `stream` to `output` until the guest
/// ends the stream. Returns the bytes copied to `output`.
pub fn pipe_stdio<R, W>(stream: UnixStream, input: R, mut output: W) -> io::Result<u64>
where
    R: Read + Send + 'static,
    W: Write,
{
    let mut upstream = stream.try_clone()?;
    let mut input = input;
    std::thread::spawn(move || {
        // The guest's end of the copy decides when the process exits; a
        // failed send shows there as the guest closing.
        if let Err(err) = send(&mut input, &mut upstream) {
            tracing::debug!(%err, "ssh proxy: sending to the guest");
        }
    });
    let mut downstream = stream;
    receive(&mut downstream, &mut output)
}

/// Sends `input` as data frames, one write each, then a half-close frame.
fn send(input: &mut impl Read, stream: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; HEADER_LEN + MAX_PAYLOAD];
    loop {
        let n = match input.read(&mut buf[HEADER_LEN..]) {
            Ok(0) => return stream.write_all(&half_close()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf[..HEADER_LEN].copy_from_slice(&data_header(n));
        stream.write_all(&buf[..HEADER_LEN + n])?;
    }
}

/// Writes the guest's data frames to `output` until its half-close, close
/// or end of stream. A plain read/write loop, not `io::copy`: on Linux that
/// splices between a socket and a pipe, and a splice that waits for socket
/// data holds the pipe's lock, so ssh cannot even read what was already
/// spliced into its pipe (seen as ssh hanging right after the version
/// exchange).
fn receive(stream: &mut impl Read, output: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; HEADER_LEN + MAX_PAYLOAD];
    let mut decoder = Decoder::new();
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) if decoder.mid_frame() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the guest's SSH stream ended inside a frame",
                ));
            }
            Ok(0) => {
                output.flush()?;
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, event) = decoder
                .decode(input, usize::MAX)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match event {
                Some(Event::Data(range)) => {
                    output.write_all(&input[range.clone()])?;
                    total += range.len() as u64;
                }
                Some(Event::HalfClose | Event::Close) => {
                    output.flush()?;
                    return Ok(total);
                }
                None => {}
            }
            input = &input[used..];
        }
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_proto::stream::encode_data;

    use super::*;

    /// Reads frames from the proxy's end until its half-close; returns the
    /// data.
    fn read_until_half_close(guest: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        receive(guest, &mut out).unwrap();
        out
    }

    fn frames(data: &[u8], then: [u8; HEADER_LEN]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_data(data, &mut out);
        out.extend_from_slice(&then);
        out
    }

    #[test]
    fn stdin_eof_is_a_half_close_and_the_reply_still_arrives() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let guest_side = std::thread::spawn(move || {
            let request = read_until_half_close(&mut guest);
            let mut reply = b"reply to ".to_vec();
            reply.extend_from_slice(&request);
            guest.write_all(&frames(&reply, half_close())).unwrap();
        });
        let mut output = Vec::new();

        let copied = pipe_stdio(host, &b"hello"[..], &mut output).unwrap();

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
        std::thread::spawn(move || pipe_stdio(host, input_read, output_write));
        let mut banner_frame = Vec::new();
        encode_data(b"SSH-2.0-guest\r\n", &mut banner_frame);
        guest.write_all(&banner_frame).unwrap();
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
        let request = read_until_half_close(&mut guest);
        assert_eq!(request, b"SSH-2.0-client\r\n");
    }

    #[test]
    fn a_close_from_the_guest_ends_the_copy_while_stdin_stays_open() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let (input_read, _input_write) = io::pipe().unwrap();
        guest
            .write_all(&frames(b"bye", berth_proto::stream::close()))
            .unwrap();
        let mut output = Vec::new();

        let copied = pipe_stdio(host, input_read, &mut output).unwrap();

        assert_eq!((copied, output.as_slice()), (3, &b"bye"[..]));
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        guest.write_all(&data_header(10)).unwrap();
        guest.write_all(b"abc").unwrap();
        drop(guest);

        let err = pipe_stdio(host, io::empty(), Vec::new()).unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
