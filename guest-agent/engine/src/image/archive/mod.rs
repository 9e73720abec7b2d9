//! `docker load` and `docker save`: docker-archive and OCI image layout tars.
//!
//! Loading streams the outer tar once, staging every regular file as a
//! blob (hashed on the way), then reads `manifest.json` (docker-archive) or
//! `index.json` (OCI layout) from the staged files. Every digest in those
//! documents is a [`Digest`](super::digest::Digest) (anything else fails to
//! parse, naming the field); every `blobs/sha256/<hex>` member, symlinks
//! included, must hash to its name; every descriptor is checked against
//! the member it names; every config's ID is the hash of its bytes, and
//! every layer must decompress to its `diff_id`. Only when all images are
//! verified and unpacked does [`ImageStore::commit`](super::ImageStore::commit)
//! make them visible; any failure drops the staging directory and leaves
//! the store as it was.
//!
//! Saving writes both layouts in one tar, like Docker 25+: `blobs/sha256/*`,
//! `index.json` and `oci-layout` for OCI tools, and `manifest.json` (whose
//! paths point into `blobs/`) for `docker load` of any age.
//!
//! * `members`: the archive's files and symlinks, resolved inside the archive.
//! * `oci`: index and manifest documents, platform choice.
//! * `load` / `save`: the two directions.

mod load;
mod members;
mod oci;
mod save;
#[cfg(test)]
mod tests;

pub use load::{DockerManifestEntry, Loaded, load};
pub use oci::{OciDescriptor, OciDocument, Platform, host_architecture, parse_json, pick_platform};
pub(crate) use save::generated_manifest;
pub use save::{SaveItem, resolve_for_save, save};

use super::Error;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Annotation holding the full image name (containerd, Docker 25+).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation holding the reference (often just the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
