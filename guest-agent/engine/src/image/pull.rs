//! Pulling images from OCI registries (filled in below).
