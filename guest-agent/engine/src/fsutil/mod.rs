//! File system access that must not be redirected by what it reads.
//!
//! [`inroot`] resolves paths inside a container or image root with
//! `openat2(RESOLVE_IN_ROOT)` and hands out file descriptors; every later
//! operation is an `*at` call on those descriptors. [`tree`] walks and
//! copies directory trees through descriptors only, never re-resolving a
//! path string, so a container renaming things under the walk can only
//! affect what it already owns.

pub mod inroot;
pub mod tree;

pub use inroot::Root;
