//! Framing of forwarded byte streams: the Docker socket, published TCP
//! ports and SSH.
//!
//! vhost-device-vsock and Virtualization.framework carry a vsock stream's
//! bytes but not a half-close: `shutdown(SHUT_WR)` on the host end tears
//! the whole stream down (or is not passed on), so a client's "no more
//! input" (`echo hi | docker run -i`, `docker exec -i C sh < script`) could
//! never reach the guest while the answer still has to come back. Every
//! forwarded stream therefore carries its own frames, both ways:
//!
//! | byte 0 | bytes 1..5     | then            | meaning                                   |
//! |--------|----------------|-----------------|-------------------------------------------|
//! | `0`    | length (BE u32)| that many bytes | data (1..=[`MAX_PAYLOAD`] bytes)          |
//! | `1`    | `0`            |                 | half-close: the sender will send no more  |
//! | `2`    | `0`            |                 | close: the sender is gone both ways       |
//!
//! A receiver turns a half-close into `shutdown(SHUT_WR)` (or EOF) on its
//! own side and keeps writing; a close, or the transport's own end of
//! stream, ends the connection in both directions.
//!
//! This module is pure: [`Decoder`] consumes bytes in pieces of any size
//! (a frame may be split anywhere) and hands payload bytes out as ranges of
//! its input, so a payload is never buffered twice. The tokio adapters that
//! drive a stream with it are in `stream_io` (feature `tokio`).

use std::ops::Range;

/// Bytes of a frame header: the kind, then a big-endian `u32` length.
pub const HEADER_LEN: usize = 5;
/// Largest data payload of one frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const DATA: u8 = 0;
const HALF_CLOSE: u8 = 1;
const CLOSE: u8 = 2;

/// The header of a data frame of `len` payload bytes.
///
/// # Panics
/// When `len` is 0 or above [`MAX_PAYLOAD`]: an encoder splits its input
/// first, and an empty data frame would carry nothing.
pub fn data_header(len: usize) -> [u8; HEADER_LEN] {
    assert!(
        (1..=MAX_PAYLOAD).contains(&len),
        "data frame payload of {len} bytes"
    );
    let len = u32::try_from(len).expect("invariant: at most MAX_PAYLOAD");
    let mut header = [DATA, 0, 0, 0, 0];
    header[1..].copy_from_slice(&len.to_be_bytes());
    header
}

/// The half-close frame.
pub const fn half_close() -> [u8; HEADER_LEN] {
    [HALF_CLOSE, 0, 0, 0, 0]
}

/// The close frame.
pub const fn close() -> [u8; HEADER_LEN] {
    [CLOSE, 0, 0, 0, 0]
}

/// Appends `payload` to `out` as data frames of at most [`MAX_PAYLOAD`]
/// bytes each; nothing for an empty payload.
pub fn encode_data(payload: &[u8], out: &mut Vec<u8>) {
    for chunk in payload.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(&data_header(chunk.len()));
        out.extend_from_slice(chunk);
    }
}

/// What a piece of input completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Payload bytes: this range of the input given to [`Decoder::decode`].
    Data(Range<usize>),
    HalfClose,
    Close,
}

/// A frame no encoder of this protocol writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("stream frame of unknown kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("stream data frame of {len} bytes exceeds the limit of {MAX_PAYLOAD} bytes")]
    TooLarge { len: u32 },
    #[error("stream frame of kind {kind} carries a {len}-byte payload; it has none")]
    ControlPayload { kind: u8, len: u32 },
}

/// Incremental decoder of one direction of a framed stream.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    /// Header bytes buffered so far.
    have: usize,
    /// Payload bytes of the current data frame not yet handed out.
    remaining: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Payload bytes of the current data frame still to come; while it is
    /// not 0, the next input bytes are all payload.
    pub fn payload_remaining(&self) -> usize {
        self.remaining
    }

    /// Whether the input so far ended inside a frame (a transport that ends
    /// here lost data).
    pub fn mid_frame(&self) -> bool {
        self.have != 0 || self.remaining != 0
    }

    /// Decodes from the front of `input`, handing out at most `max_data`
    /// payload bytes. Returns the number of input bytes used and the event
    /// they completed, if any. Feed the rest of the input in further calls;
    /// a call uses at least one byte unless `input` is empty, or the
    /// decoder is inside a payload and `max_data` is 0.
    pub fn decode(
        &mut self,
        input: &[u8],
        max_data: usize,
    ) -> Result<(usize, Option<Event>), FrameError> {
        if self.remaining > 0 {
            let n = self.remaining.min(input.len()).min(max_data);
            if n == 0 {
                return Ok((0, None));
            }
            self.remaining -= n;
            return Ok((n, Some(Event::Data(0..n))));
        }
        let n = (HEADER_LEN - self.have).min(input.len());
        self.header[self.have..self.have + n].copy_from_slice(&input[..n]);
        self.have += n;
        if self.have < HEADER_LEN {
            return Ok((n, None));
        }
        self.have = 0;
        let kind = self.header[0];
        let len = u32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ]);
        match kind {
            DATA => {
                let payload = usize::try_from(len).map_err(|_| FrameError::TooLarge { len })?;
                if payload > MAX_PAYLOAD {
                    return Err(FrameError::TooLarge { len });
                }
                // An empty data frame is allowed and carries nothing.
                self.remaining = payload;
                Ok((n, None))
            }
            HALF_CLOSE | CLOSE if len != 0 => Err(FrameError::ControlPayload { kind, len }),
            HALF_CLOSE => Ok((n, Some(Event::HalfClose))),
            CLOSE => Ok((n, Some(Event::Close))),
            kind => Err(FrameError::UnknownKind { kind }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A frame as the tests think of it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Frame {
        Data(Vec<u8>),
        HalfClose,
        Close,
    }

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            match frame {
                Frame::Data(bytes) => encode_data(bytes, &mut out),
                Frame::HalfClose => out.extend_from_slice(&half_close()),
                Frame::Close => out.extend_from_slice(&close()),
            }
        }
        out
    }

    /// The frames' content as a decoder reports it: adjacent data merged,
    /// empty data dropped.
    fn normalize(frames: &[Frame]) -> Vec<Frame> {
        let mut out: Vec<Frame> = Vec::new();
        for frame in frames {
            match (frame, out.last_mut()) {
                (Frame::Data(bytes), _) if bytes.is_empty() => {}
                (Frame::Data(bytes), Some(Frame::Data(last))) => last.extend_from_slice(bytes),
                (frame, _) => out.push(frame.clone()),
            }
        }
        out
    }

    /// Feeds `bytes` in the pieces `cuts` makes, with at most `max_data`
    /// payload bytes per call; returns the normalized events.
    fn decode_in_pieces(bytes: &[u8], cuts: &[usize], max_data: usize) -> Vec<Frame> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for piece in points.windows(2).map(|w| &bytes[w[0]..w[1]]) {
            let mut at = 0;
            while at < piece.len() {
                let (used, event) = decoder.decode(&piece[at..], max_data).unwrap();
                assert!(used > 0, "no progress at {at} of {}", piece.len());
                match event {
                    Some(Event::Data(r)) => {
                        assert!(r.len() <= max_data && r.end <= used);
                        got.push(Frame::Data(piece[at..][r].to_vec()));
                    }
                    Some(Event::HalfClose) => got.push(Frame::HalfClose),
                    Some(Event::Close) => got.push(Frame::Close),
                    None => {}
                }
                at += used;
            }
        }
        assert!(!decoder.mid_frame(), "whole frames leave no state behind");
        normalize(&got)
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Frame::Data),
            1 => Just(Frame::HalfClose),
            1 => Just(Frame::Close),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_at_any_split_points(
            frames in proptest::collection::vec(frame(), 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_data in 1usize..400,
        ) {
            let bytes = encode(&frames);
            prop_assert_eq!(decode_in_pieces(&bytes, &cuts, max_data), normalize(&frames));
        }

        #[test]
        fn large_payloads_split_into_bounded_frames(
            len in 0usize..(3 * MAX_PAYLOAD),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut bytes = Vec::new();
            encode_data(&payload, &mut bytes);
            prop_assert_eq!(bytes.len(), len + len.div_ceil(MAX_PAYLOAD) * HEADER_LEN);
            let expected = if len == 0 { vec![] } else { vec![Frame::Data(payload)] };
            prop_assert_eq!(decode_in_pieces(&bytes, &cuts, usize::MAX), expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            max_data in 1usize..16,
        ) {
            let mut decoder = Decoder::new();
            let mut at = 0;
            while at < bytes.len() {
                match decoder.decode(&bytes[at..], max_data) {
                    Ok((used, _)) => { prop_assert!(used > 0); at += used; }
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn a_header_split_byte_by_byte_completes_on_its_last_byte() {
        let mut decoder = Decoder::new();
        let header = half_close();
        for byte in &header[..HEADER_LEN - 1] {
            assert_eq!(
                decoder.decode(std::slice::from_ref(byte), 1).unwrap(),
                (1, None)
            );
            assert!(decoder.mid_frame());
        }
        assert_eq!(
            decoder.decode(&header[HEADER_LEN - 1..], 1).unwrap(),
            (1, Some(Event::HalfClose))
        );
        assert!(!decoder.mid_frame());
    }

    #[test]
    fn inside_a_payload_max_data_bounds_each_piece() {
        let mut bytes = Vec::new();
        encode_data(b"abcdef", &mut bytes);
        let mut decoder = Decoder::new();
        assert_eq!(decoder.decode(&bytes, 4).unwrap(), (HEADER_LEN, None));
        assert_eq!(decoder.payload_remaining(), 6);
        let payload = &bytes[HEADER_LEN..];
        assert_eq!(decoder.decode(payload, 0).unwrap(), (0, None));
        assert_eq!(
            decoder.decode(payload, 4).unwrap(),
            (4, Some(Event::Data(0..4)))
        );
        assert_eq!(
            decoder.decode(&payload[4..], 4).unwrap(),
            (2, Some(Event::Data(0..2)))
        );
        assert!(!decoder.mid_frame());
    }

    #[test]
    fn bad_frames_are_errors_naming_what_is_wrong() {
        let too_large = u32::try_from(MAX_PAYLOAD + 1).unwrap().to_be_bytes();
        let cases: [([u8; HEADER_LEN], FrameError); 3] = [
            ([9, 0, 0, 0, 0], FrameError::UnknownKind { kind: 9 }),
            (
                [DATA, too_large[0], too_large[1], too_large[2], too_large[3]],
                FrameError::TooLarge {
                    len: u32::try_from(MAX_PAYLOAD + 1).unwrap(),
                },
            ),
            (
                [HALF_CLOSE, 0, 0, 0, 3],
                FrameError::ControlPayload {
                    kind: HALF_CLOSE,
                    len: 3,
                },
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(Decoder::new().decode(&header, 10), Err(expected));
        }
    }

    #[test]
    #[should_panic(expected = "data frame payload of 0 bytes")]
    fn an_empty_data_header_is_refused() {
        data_header(0);
    }
}
