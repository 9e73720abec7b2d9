//! The Docker Engine API, served over berth's engine.
#![recursion_limit = "256"]
//!
//! [`router`] builds the axum router; [`serve`] runs it on any listener of
//! byte streams (a unix socket natively, a vsock listener in the guest).
//! Routes live in `routes/`, one file per API area; `error.rs` is the only
//! file that maps engine errors to HTTP status codes.

mod body;
pub mod error;
mod router;
mod routes;
mod stream;

use std::sync::Arc;

use berth_engine::Engine;

pub use error::ApiError;

/// Entry points for the fuzz targets in `tests/fuzz`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::routes::system::parse_filters;

    /// Parses a `POST /containers/create` body as the route does.
    pub fn parse_create_body(bytes: &[u8]) -> Result<(), crate::ApiError> {
        crate::routes::containers::json_body::<crate::routes::containers::CreateBody>(bytes)
            .map(drop)
    }
}
pub use router::{API_VERSION, MIN_API_VERSION, RequestedVersion, router, serve_connection};

/// Shared state of every route.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}
