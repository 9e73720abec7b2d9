//! Framing: a big-endian `u32` length, then that many bytes of JSON.
//!
//! [`decode`] is pure so that transports on both sides (and fuzzers) share
//! it: feed it the bytes buffered so far and it says whether a whole frame
//! is there.

use serde::{Serialize, de::DeserializeOwned};

/// Largest frame body accepted, in bytes. Control messages are tiny; this
/// bounds what a confused or hostile peer can make us buffer.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    #[error("frame body is not a valid message")]
    Body(#[source] serde_json::Error),
}

/// Encodes `msg` as one frame.
///
/// # Panics
/// Never for the message types of this crate: they always serialize, and
/// their encodings are far below [`MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("invariant: protocol messages always serialize");
    let len = u32::try_from(body.len()).expect("invariant: protocol messages are small");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame, or the
/// message and the number of bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, DecodeError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge { len });
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let msg = serde_json::from_slice(body).map_err(DecodeError::Body)?;
    Ok(Some((msg, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{GuestToHost, HostToGuest};

    #[test]
    fn decode_returns_none_until_frame_is_complete() {
        let bytes = encode(&HostToGuest::Hello { version: 1 });
        for cut in 0..bytes.len() {
            assert!(
                decode::<HostToGuest>(&bytes[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let (msg, used) = decode::<HostToGuest>(&bytes).unwrap().unwrap();
        assert_eq!(msg, HostToGuest::Hello { version: 1 });
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn decode_rejects_oversized_length_before_buffering() {
        let mut bytes = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes().to_vec();
        bytes.push(b'{');
        assert!(matches!(
            decode::<GuestToHost>(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn decode_reports_bad_body() {
        let mut bytes = 2u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{]");
        assert!(matches!(
            decode::<GuestToHost>(&bytes),
            Err(DecodeError::Body(_))
        ));
    }
}
