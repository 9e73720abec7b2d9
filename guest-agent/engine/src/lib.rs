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

pub mod build;
pub mod cgroup;
pub mod container;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod image;
pub mod network;
pub mod runtime;
pub mod volume;

use std::path::{Path, PathBuf};

pub use error::{Error, ErrorKind, Result};
pub use events::EventBus;

/// Where the engine keeps its state and how it is reached.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// All state lives under this directory.
    pub root: PathBuf,
    /// The binary re-executed as the runtime helper (normally the agent
    /// itself, `/proc/self/exe`).
    pub helper: PathBuf,
    /// In the VM: the host directories shared with it. A missing `-v` bind
    /// source is then created only inside a share (on the host, as Docker
    /// Desktop does); anywhere else it is an error that names the shares,
    /// because the user meant a host path the VM cannot see. `None`
    /// natively, where every path is the host's.
    pub host_shares: Option<Vec<HostShare>>,
    /// Container starts wait until this reads `true`. In the VM, the kernel
    /// modules containers need (overlay, veth, bridge, nftables) load in the
    /// background while the API already serves; `None` natively.
    pub start_gate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A host directory visible in the VM at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostShare {
    pub path: PathBuf,
    pub writable: bool,
}

impl EngineConfig {
    /// State under `root`, with this process's binary as the runtime helper.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            helper: PathBuf::from("/proc/self/exe"),
            host_shares: None,
            start_gate: None,
        }
    }
}

/// The engine: one per agent process.
pub struct Engine {
    pub root: PathBuf,
    pub images: image::ImageStore,
    pub events: EventBus,
    pub cgroups: cgroup::Cgroups,
    pub volumes: volume::Volumes,
    pub networks: network::Networks,
    containers: container::Containers,
    execs: container::exec::Execs,
    helper: PathBuf,
    host_shares: Option<Vec<HostShare>>,
    start_gate: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Engine {
    /// Opens (creating if needed) the engine state under `config.root`.
    pub fn open(config: &EngineConfig) -> Result<Self> {
        let root = config.root.clone();
        fs_err::create_dir_all(&root).map_err(Error::io("create engine root", &root))?;
        // Root only (images and container upper dirs hold setuid files).
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
        fs_err::set_permissions(&root, private)
            .map_err(Error::io("restrict engine root", &root))?;
        let images = image::ImageStore::open(&root.join("images"))?;
        let volumes = volume::Volumes::open(&root.join("volumes"))?;
        let networks = network::Networks::open(&root, network::NetworksConfig::default())?;
        let engine = Self {
            root,
            images,
            events: EventBus::new(),
            cgroups: cgroup::Cgroups::detect(),
            volumes,
            networks,
            containers: container::Containers::default(),
            execs: container::exec::Execs::default(),
            helper: config.helper.clone(),
            host_shares: config.host_shares.clone(),
            start_gate: config.start_gate.clone(),
        };
        engine.load_containers()?;
        Ok(engine)
    }

    /// `"1"` or `"2"`: the cgroup version in use.
    pub fn cgroup_version(&self) -> &'static str {
        self.cgroups.version()
    }

    /// Every container record.
    pub fn containers(&self) -> Vec<container::Container> {
        self.containers.all().iter().map(|e| e.snapshot()).collect()
    }

    /// The engine's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}
