//! The engine's error type and its classification.
//!
//! Every failure the engine reports carries an [`ErrorKind`]; the Docker API
//! layer maps kinds to HTTP status codes in exactly one place
//! (`berth-dockerapi/src/error.rs`). Messages are lowercase, name the object
//! (container, image, path) and never repeat their `#[source]`.

use std::path::PathBuf;

/// How the API layer should report an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: no such container, image, exec, ...
    NotFound,
    /// 409: name in use, container running, image in use, ...
    Conflict,
    /// 400: a request the engine cannot act on as given.
    InvalidArgument,
    /// 304: the container was already started/stopped.
    NotModified,
    /// 503: a feature this engine does not serve (e.g. swarm).
    Unavailable,
    /// 500: everything else.
    Internal,
}

/// Engine errors. Variants name what failed; fields carry the context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("{0}")]
    NoSuchPath(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("container {0} is already {1}")]
    NotModified(String, &'static str),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}")]
    Runtime {
        context: String,
        #[source]
        source: Option<std::io::Error>,
    },
}

impl Error {
    /// How the API should report this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoSuchContainer(_)
            | Error::NoSuchExec(_)
            | Error::NoSuchVolume(_)
            | Error::NoSuchPath(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotModified(..) => ErrorKind::NotModified,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Image(e) => e.kind(),
            Error::Io { .. } | Error::Runtime { .. } => ErrorKind::Internal,
        }
    }

    /// Shorthand for an [`Error::Io`] with the path that failed.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// A runtime failure without an underlying I/O error.
    pub fn runtime(context: impl Into<String>) -> Self {
        Error::Runtime {
            context: context.into(),
            source: None,
        }
    }
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
