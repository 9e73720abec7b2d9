//! Datagram framing for UDP over a vsock stream: a big-endian `u16`
//! length, then the datagram. A stream keeps message boundaries this way,
//! and one stream carries one host peer's datagrams both ways.

/// Largest UDP payload (IPv4, without IP and UDP headers).
pub const MAX_DATAGRAM: usize = 65_507;

/// Appends one framed datagram to `out`.
///
/// # Panics
/// When `payload` is longer than [`MAX_DATAGRAM`]; a UDP socket never
/// returns more.
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_DATAGRAM, "datagram too long");
    let len = u16::try_from(payload.len()).expect("invariant: checked above");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Splits one datagram off the front of `buf`: its byte range in `buf` and
/// the bytes used, or `None` until the whole frame is buffered.
pub fn decode(buf: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    let header = buf.get(..2)?;
    let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    (buf.len() >= 2 + len).then_some((2..2 + len, 2 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_keep_boundaries() {
        let mut buf = Vec::new();
        encode_into(b"ping", &mut buf);
        encode_into(b"", &mut buf);
        encode_into(b"pong!", &mut buf);

        let (first, used) = decode(&buf).unwrap();
        assert_eq!(&buf[first], b"ping");
        let rest = &buf[used..];
        let (empty, used2) = decode(rest).unwrap();
        assert!(empty.is_empty());
        let (third, _) = decode(&rest[used2..]).unwrap();
        assert_eq!(&rest[used2..][third], b"pong!");
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let mut buf = Vec::new();
        encode_into(b"hello", &mut buf);
        assert_eq!(decode(&buf[..1]), None);
        assert_eq!(decode(&buf[..6]), None);
        assert!(decode(&buf).is_some());
    }
}
