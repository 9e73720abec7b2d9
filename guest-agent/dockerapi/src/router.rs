//! The router and the connection loop.
//!
//! Docker clients call both versioned (`/v1.47/containers/json`) and
//! unversioned paths. The version prefix is stripped before routing (and
//! kept in a request extension), so each route is declared once.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Uri;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;

use crate::AppState;
use crate::routes;

/// Highest API version served (what docker CLI 28.2 speaks).
pub const API_VERSION: &str = "1.50";
/// Lowest API version accepted.
pub const MIN_API_VERSION: &str = "1.24";

/// The API version a request asked for (from its path prefix), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedVersion(pub u32, pub u32);

/// Builds the full API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::system::routes())
        .merge(routes::images::routes())
        .merge(routes::build::routes())
        .merge(routes::containers::routes())
        .merge(routes::exec::routes())
        .merge(routes::volumes::routes())
        .merge(routes::networks::routes())
        .with_state(state)
}

/// Splits `/v1.47/rest` into `(Some((1, 47)), "/rest")`.
fn strip_version(path: &str) -> (Option<RequestedVersion>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (version, tail) = rest.split_at(end);
    let parsed = version.split_once('.').and_then(|(major, minor)| {
        Some(RequestedVersion(major.parse().ok()?, minor.parse().ok()?))
    });
    match parsed {
        Some(v) if !tail.is_empty() => (Some(v), tail),
        _ => (None, path),
    }
}

fn rewrite(mut request: Request) -> Request {
    let (version, path) = strip_version(request.uri().path());
    if let Some(version) = version {
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        if let Ok(uri) = Uri::builder().path_and_query(path_and_query).build() {
            *request.uri_mut() = uri;
        }
        request.extensions_mut().insert(version);
    }
    request
}

/// Serves the API on one accepted connection until the client closes it.
/// Upgrades (attach/exec hijacks) are enabled.
pub async fn serve_connection<IO>(router: Router, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let router = router.clone();
        async move {
            let request = rewrite(request.map(Body::new));
            let response: Response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "api connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_version_removes_prefix() {
        assert_eq!(
            strip_version("/v1.47/containers/json"),
            (Some(RequestedVersion(1, 47)), "/containers/json")
        );
    }

    #[test]
    fn strip_version_keeps_unversioned_and_odd_paths() {
        assert_eq!(
            strip_version("/containers/json"),
            (None, "/containers/json")
        );
        assert_eq!(strip_version("/volumes"), (None, "/volumes"));
        assert_eq!(strip_version("/v1.47"), (None, "/v1.47"));
    }
}
