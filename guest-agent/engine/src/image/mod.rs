//! Images: a content-addressed store, layer unpacking, load/save, pull.
//!
//! * [`reference`](mod@reference): Docker reference parsing and normalization.
//! * [`digest`]: the `sha256:<hex>` type every store path is built from.
//! * [`store`]: blobs by digest, unpacked layers, image records, the tag index.
//! * [`unpack`]: applies one layer tar in overlayfs format, contained in its dir.
//! * [`archive`]: `docker load` / `docker save` (docker-archive and OCI layout).
//! * [`commit`]: `docker commit` / `import` / `export` / `diff`; new images from layers.
//! * [`pull`]: pulling from (and pushing to) OCI registries.
//!
//! The container side relies on [`ImageStore::open`], [`ImageStore::get`]
//! and the public fields of [`Image`].

pub mod archive;
pub mod commit;
mod config;
pub mod digest;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

use std::path::PathBuf;

pub use config::{ContainerConfig, History, ImageConfigFile, RootFs};
pub use digest::Digest;
pub use store::{DeleteItem, Descriptor, Image, ImageStore, InUse, LayerRecord, short_id};

use crate::ErrorKind;

/// Image-store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Docker's own text: the CLI and users match on it.
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("invalid reference format: {reference}")]
    InvalidReference {
        reference: String,
        #[source]
        source: reference::ParseError,
    },
    #[error("invalid tag {reference}: a tag cannot be a digest or a 64-character hex ID")]
    InvalidTarget { reference: String },
    /// Docker's conflict texts (`docker rmi`).
    #[error("conflict: unable to delete {reference} ({}) - {detail}", if *.forcible { "must be forced" } else { "cannot be forced" })]
    InUse {
        reference: String,
        forcible: bool,
        detail: String,
    },
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("failed to read {what} from the image archive")]
    ReadArchive {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read {what}")]
    ReadBlob {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {what}")]
    InvalidJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid digest in {what}")]
    InvalidDigest {
        what: String,
        #[source]
        source: digest::ParseError,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("failed to decompress layer {layer}")]
    Decompress {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to apply layer {layer}")]
    ApplyLayer {
        layer: String,
        #[source]
        source: unpack::Error,
    },
    #[error("blob {digest} is missing from the store and the upload")]
    MissingBlob { digest: String },
    #[error("layer {diff_id} was removed while the image was being stored; retry")]
    MissingLayer { diff_id: String },
    #[error("no image in the archive or index matches platform {platform}")]
    NoMatchingPlatform { platform: String },
    #[error("corrupt image store file {path}")]
    CorruptStore {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("registry request failed: {op} {reference}")]
    Registry {
        op: &'static str,
        reference: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        not_found: bool,
    },
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// How the API should report this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Registry {
                not_found: true, ..
            } => ErrorKind::NotFound,
            Error::InUse { .. } => ErrorKind::Conflict,
            Error::InvalidReference { .. }
            | Error::InvalidTarget { .. }
            | Error::InvalidArchive(_)
            | Error::ReadArchive { .. }
            | Error::InvalidJson { .. }
            | Error::InvalidDigest { .. }
            | Error::DigestMismatch { .. }
            | Error::Decompress { .. }
            | Error::NoMatchingPlatform { .. } => ErrorKind::InvalidArgument,
            Error::ApplyLayer { source, .. } => source.kind(),
            Error::ReadBlob { .. }
            | Error::MissingBlob { .. }
            | Error::MissingLayer { .. }
            | Error::CorruptStore { .. }
            | Error::Registry { .. }
            | Error::Io { .. } => ErrorKind::Internal,
        }
    }

    /// Shorthand for an [`Error::Io`] naming the path that failed.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
