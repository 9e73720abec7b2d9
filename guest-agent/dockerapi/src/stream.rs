//! Hijacked connections, Docker's stream framing and detach keys.
//!
//! `attach` and `exec start` speak raw bytes on the connection after the
//! response head. As dockerd does, a request carrying `Connection: Upgrade`
//! and `Upgrade: tcp` is answered `101 UPGRADED`; any other request gets
//! `200 OK` with the stream content type, and the stream is the response
//! body (the client's request body, if any, is the input). Without a TTY,
//! output is multiplexed in stdcopy frames (`[stream, 0, 0, 0, len_be32]
//! payload`); with a TTY it is the raw terminal byte stream. Client input is
//! read until it half-closes or types the detach sequence.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::TryStreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// stdcopy stream ids.
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;

/// Frames `payload` for stream `id` (1 stdout, 2 stderr).
pub(crate) fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[id, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The content type of a hijacked stream.
pub(crate) fn content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// The client's half of a hijacked stream: what it sends, and where its
/// output goes. Dropping both ends closes the connection.
pub(crate) struct Hijacked {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Whether the request asks to switch protocols (`Connection: Upgrade`
/// and `Upgrade: tcp`), as docker-py and the docker CLI do.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade_tcp = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("tcp"));
    connection_upgrade && upgrade_tcp
}

/// Bytes buffered between the stream task and a non-upgraded response body.
const PLAIN_BUFFER: usize = 64 * 1024;

/// Answers the request with the stream and runs `serve` on it: `101` on an
/// upgrade request, otherwise `200` with the stream as the body.
pub(crate) fn hijack<F, Fut>(request: &mut Request, tty: bool, serve: F) -> Response
where
    F: FnOnce(Hijacked) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !wants_upgrade(request.headers()) {
        let input = std::mem::take(request.body_mut())
            .into_data_stream()
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(input);
        let (writer, body) = tokio::io::duplex(PLAIN_BUFFER);
        tokio::spawn(serve(Hijacked {
            reader: Box::pin(reader),
            writer: Box::pin(writer),
        }));
        // The connection ends with the stream, as a hijacked one does.
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type(tty))
            .header(header::CONNECTION, "close")
            .body(Body::from_stream(tokio_util::io::ReaderStream::new(body)))
            .unwrap_or_default();
    }
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let (reader, writer) = tokio::io::split(TokioIo::new(upgraded));
                serve(Hijacked {
                    reader: Box::pin(reader),
                    writer: Box::pin(writer),
                })
                .await;
            }
            Err(err) => tracing::debug!(error = %err, "client did not complete the upgrade"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, content_type(tty))
        .body(Body::empty())
        .unwrap_or_default()
}

/// Docker's default detach sequence, ctrl-p ctrl-q.
pub(crate) const DEFAULT_DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Parses a detach-key spec (`ctrl-p,ctrl-q`, `a,ctrl-@`) into bytes, as
/// the docker CLI and dockerd do. An empty spec is the default sequence.
pub(crate) fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    if spec.is_empty() {
        return Ok(DEFAULT_DETACH_KEYS.to_vec());
    }
    spec.split(',')
        .map(|key| {
            let bytes = key.as_bytes();
            if bytes.len() == 1 {
                return Ok(bytes[0]);
            }
            let lower = key.to_ascii_lowercase();
            let code = lower
                .strip_prefix("ctrl-")
                .filter(|rest| rest.len() == 1)
                .and_then(|rest| match rest.as_bytes()[0] {
                    c @ b'a'..=b'z' => Some(c - b'a' + 1),
                    b'@' => Some(0),
                    b'[' => Some(27),
                    b'\\' => Some(28),
                    b']' => Some(29),
                    b'^' => Some(30),
                    b'_' => Some(31),
                    _ => None,
                });
            code.ok_or_else(|| format!("Unknown character: '{key}'"))
        })
        .collect()
}

/// Watches client input for the detach sequence.
#[derive(Debug)]
pub(crate) struct DetachScanner {
    keys: Vec<u8>,
    /// How many bytes of `keys` the input ended with (held back).
    matched: usize,
}

/// What one chunk of input yields.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Bytes to pass on to the process.
    pub forward: Vec<u8>,
    /// The sequence was typed: the client detaches.
    pub detached: bool,
}

impl DetachScanner {
    pub(crate) fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// Scans `input`. Bytes that may start the sequence are held back until
    /// the next byte shows whether they do; when they do not they are
    /// passed on, in order.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Scanned {
        let mut forward = Vec::with_capacity(input.len());
        for &byte in input {
            if self.keys.get(self.matched) == Some(&byte) {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return Scanned {
                        forward,
                        detached: true,
                    };
                }
                continue;
            }
            forward.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if self.keys.first() == Some(&byte) {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return Scanned {
                        forward,
                        detached: true,
                    };
                }
            } else {
                forward.push(byte);
            }
        }
        Scanned {
            forward,
            detached: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_has_docker_header() {
        assert_eq!(
            frame(STDERR, b"hi"),
            vec![2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut headers = HeaderMap::new();
        assert!(!wants_upgrade(&headers));
        headers.insert(header::UPGRADE, "tcp".parse().unwrap());
        assert!(!wants_upgrade(&headers));
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(wants_upgrade(&headers));
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(!wants_upgrade(&headers));
    }

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("a,CTRL-@,ctrl-_").unwrap(),
            vec![b'a', 0, 31]
        );
        assert_eq!(
            parse_detach_keys("ctrl-1").unwrap_err(),
            "Unknown character: 'ctrl-1'"
        );
        assert_eq!(
            parse_detach_keys("ab").unwrap_err(),
            "Unknown character: 'ab'"
        );
    }

    #[test]
    fn scanner_detaches_across_chunks_and_passes_false_starts() {
        let mut scanner = DetachScanner::new(vec![16, 17]);
        assert_eq!(
            scanner.feed(b"ab\x10"),
            Scanned {
                forward: b"ab".to_vec(),
                detached: false
            }
        );
        assert_eq!(
            scanner.feed(b"c"),
            Scanned {
                forward: b"\x10c".to_vec(),
                detached: false
            }
        );
        assert_eq!(
            scanner.feed(b"\x10\x10"),
            Scanned {
                forward: b"\x10".to_vec(),
                detached: false
            }
        );
        assert_eq!(
            scanner.feed(b"\x11rest"),
            Scanned {
                forward: Vec::new(),
                detached: true
            }
        );
    }

    #[test]
    fn single_key_sequence_detaches_at_once() {
        let mut scanner = DetachScanner::new(vec![16]);
        assert_eq!(
            scanner.feed(b"x\x10y"),
            Scanned {
                forward: b"x".to_vec(),
                detached: true
            }
        );
    }
}
