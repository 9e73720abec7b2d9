//! berth's container engine.
//!
//! The engine owns all container state under one root directory:
//!
//! ```text
//! <root>/images/        content-addressed blobs and unpacked layers (image::ImageStore)
//! <root>/containers/<id>/  config.json, state, logs, overlay upper/work dirs
//! ```
//!
//! It runs containers itself (see [`runtime`]): Linux namespaces, an
//! overlayfs root per container, cgroups for limits. It knows nothing about
//! HTTP; `berth-dockerapi` translates the Docker Engine API into calls here.

pub mod error;
pub mod events;
pub mod image;

use std::path::{Path, PathBuf};

pub use error::{Error, ErrorKind, Result};
pub use events::EventBus;

/// Where the engine keeps its state and how it is reached.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// All state lives under this directory.
    pub root: PathBuf,
}

/// The engine: one per agent process.
pub struct Engine {
    pub root: PathBuf,
    pub images: image::ImageStore,
    pub events: EventBus,
}

impl Engine {
    /// Opens (creating if needed) the engine state under `config.root`.
    pub fn open(config: &EngineConfig) -> Result<Self> {
        let root = config.root.clone();
        fs_err::create_dir_all(&root).map_err(Error::io("create engine root", &root))?;
        let images = image::ImageStore::open(&root.join("images"))?;
        Ok(Self { root, images, events: EventBus::new() })
    }

    /// The engine's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
