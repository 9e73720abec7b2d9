//! Hijacked connections and Docker's stream framing.
//!
//! `attach` and `exec start` answer `101 UPGRADED` and then speak raw bytes
//! on the connection. Without a TTY, output is multiplexed in stdcopy
//! frames (`[stream, 0, 0, 0, len_be32] payload`); with a TTY it is the raw
//! terminal byte stream. Client input is read until it half-closes.

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;

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

/// An upgraded connection.
pub(crate) type Hijacked = TokioIo<hyper::upgrade::Upgraded>;

/// Answers `101` and runs `serve` on the upgraded connection.
pub(crate) fn hijack<F, Fut>(request: &mut Request, tty: bool, serve: F) -> Response
where
    F: FnOnce(Hijacked) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
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
}
