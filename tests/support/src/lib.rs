//! Test fixtures shared by berth's component and end-to-end tests.
//!
//! * [`engine::NativeEngine`]: runs `berth-agent serve` as root inside a
//!   network namespace the test creates, and drives it with the real
//!   `docker` CLI. Always torn down on drop.
//! * [`images`]: builds small images from Debian's `busybox-static`, as
//!   docker-archive and OCI-layout tars. There is no Docker Hub here.
//! * [`node`]: Testcontainers for Node as an outside client.

pub mod engine;
pub mod images;
pub mod node;
