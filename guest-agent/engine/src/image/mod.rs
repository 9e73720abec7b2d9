//! Images: a content-addressed store, layer unpacking, load/save, pull.
//!
//! OWNED BY THE IMAGE WORK (placeholder interface; see the engine issue).
//! The container side relies only on [`ImageStore::open`], [`ImageStore::get`]
//! and the public fields of [`Image`].

mod config;

use std::path::{Path, PathBuf};

pub use config::{ContainerConfig, History, ImageConfigFile, RootFs};

/// Image-store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such image: {0}")]
    NotFound(String),
}

impl Error {
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::NotFound(_) => crate::ErrorKind::NotFound,
        }
    }
}

/// A resolved image.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the config bytes.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub config: ImageConfigFile,
    /// Unpacked layer directories, lowest first, ready to be overlayfs lowerdirs.
    pub layer_dirs: Vec<PathBuf>,
}

/// The image store under `<root>/images`.
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, Error> {
        Ok(Self { root: root.to_owned() })
    }

    pub fn get(&self, reference: &str) -> Result<Image, Error> {
        let _ = &self.root;
        Err(Error::NotFound(reference.to_owned()))
    }
}

impl ImageStore {
    /// Every image in the store.
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        Ok(Vec::new())
    }
}
