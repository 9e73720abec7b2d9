//! Containers: the record store and the lifecycle state machine.
//!
//! ```text
//!  create ──> created ──start──> running ──(exit)──> exited ──rm──> (gone)
//!                 ^                 │  ^  pause/unpause            │
//!                 │                 │  └── paused                  │
//!                 └──── start ──────┼──────────────────────────────┘
//!                                   └─(exit + restart policy)─> restarting ──> running
//! ```
//!
//! Each container is an [`Entry`]: the persisted [`Container`] record, its
//! output hub and log, and a watch channel that counts exits (for `wait`).
//! Operations that change the process (start, stop, restart, remove) take
//! the entry's async operation lock, so they never interleave.

pub mod archive;
pub mod exec;
pub mod health;
pub mod io;
pub mod model;
pub mod names;
mod networking;
pub mod signal;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

pub use model::{
    Config, Container, HostConfig, MountPoint, MountRequest, RestartPolicy, State, Status,
};

use crate::cgroup::{Layout, Limits};
use crate::runtime::{
    self, ChildStdio, ContainerSpec, MountSpec, NetworkSpec, ProcessSpec, RootfsSpec,
};
use crate::{Engine, Error, Result};
use io::{Chunk, LogFile, OutputHub, Stream};

/// Default `PATH` when neither the image nor the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "not-running" => Ok(Self::NotRunning),
            "next-exit" => Ok(Self::NextExit),
            "removed" => Ok(Self::Removed),
            other => Err(Error::InvalidArgument(format!(
                "invalid condition: {other:?}"
            ))),
        }
    }
}

/// Changes `wait` watches: exits counted, and removal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Changes {
    pub exits: u64,
    pub exit_code: i32,
    pub removed: bool,
}

/// Input for a container's stdin, from attached clients.
#[derive(Debug, Clone)]
pub enum StdinMessage {
    Data(Bytes),
    /// The client closed its input and the container has `StdinOnce`:
    /// close the process's stdin.
    Close,
}

/// The live (not persisted) side of a running container.
#[derive(Debug, Default)]
struct Live {
    pty: Option<Arc<OwnedFd>>,
}

/// One container.
#[derive(Debug)]
pub struct Entry {
    record: Mutex<Container>,
    pub hub: OutputHub,
    pub log: LogFile,
    op: Arc<tokio::sync::Mutex<()>>,
    live: Mutex<Live>,
    changes: watch::Sender<Changes>,
    dir: PathBuf,
    /// Attached clients send stdin here; the running process's stdin pump
    /// owns the receiver while it runs and puts it back when it exits.
    stdin_tx: mpsc::Sender<StdinMessage>,
    stdin_rx: Mutex<Option<mpsc::Receiver<StdinMessage>>>,
    /// Healthcheck state while the container runs with a healthcheck.
    health: Mutex<Option<health::Health>>,
}

impl Entry {
    fn new(record: Container, dir: PathBuf) -> Self {
        let (changes, _) = watch::channel(Changes {
            exit_code: record.state.exit_code,
            ..Changes::default()
        });
        let (stdin_tx, stdin_rx) = mpsc::channel(64);
        Self {
            stdin_tx,
            stdin_rx: Mutex::new(Some(stdin_rx)),
            health: Mutex::new(None),
            log: LogFile::new(&dir.join("container.log")),
            record: Mutex::new(record),
            hub: OutputHub::default(),
            op: Arc::new(tokio::sync::Mutex::new(())),
            live: Mutex::new(Live::default()),
            changes,
            dir,
        }
    }

    /// A copy of the current record.
    pub fn snapshot(&self) -> Container {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Container> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    /// The container's directory (`<root>/containers/<id>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where an attached client sends the container's stdin.
    pub fn stdin_sender(&self) -> mpsc::Sender<StdinMessage> {
        self.stdin_tx.clone()
    }

    /// `State.Health` of inspect, when the container has a healthcheck.
    pub fn health(&self) -> Option<health::Health> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the container keeps stdin open (`-i`).
    pub fn open_stdin(&self) -> bool {
        self.lock().config.open_stdin
    }

    /// Subscribes to exit/removal changes.
    pub fn changes(&self) -> watch::Receiver<Changes> {
        self.changes.subscribe()
    }

    fn persist(&self) -> Result<()> {
        let record = self.snapshot();
        write_atomic(
            &self.dir.join("config.v2.json"),
            &serde_json::to_vec_pretty(&record).unwrap_or_default(),
        )
    }

    fn running_pid(&self) -> Option<i32> {
        let record = self.lock();
        matches!(record.state.status, Status::Running | Status::Paused).then_some(record.state.pid)
    }
}

/// Writes `bytes` to `path` through a temp file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("rename into place", path))
}

/// Counts for `docker info`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub total: usize,
    pub running: usize,
    pub paused: usize,
    pub stopped: usize,
}

/// All containers, by id.
#[derive(Debug, Default)]
pub struct Containers {
    by_id: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Containers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every container entry.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.lock().values().cloned().collect()
    }

    /// Finds a container by full id, name (with or without `/`) or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Arc<Entry>> {
        let map = self.lock();
        if let Some(entry) = map.get(key) {
            return Ok(entry.clone());
        }
        let name = format!("/{}", key.trim_start_matches('/'));
        if let Some(entry) = map.values().find(|e| e.lock().name == name) {
            return Ok(entry.clone());
        }
        let matches: Vec<_> = if key.is_empty() {
            Vec::new()
        } else {
            map.iter().filter(|(id, _)| id.starts_with(key)).collect()
        };
        match matches.as_slice() {
            [(_, entry)] => Ok((*entry).clone()),
            [] => Err(Error::NoSuchContainer(key.to_owned())),
            _ => Err(Error::InvalidArgument(format!(
                "multiple IDs found with provided prefix: {key}"
            ))),
        }
    }

    fn name_owner(&self, name: &str) -> Option<String> {
        self.lock()
            .values()
            .map(|e| e.lock())
            .find(|r| r.name == name)
            .map(|r| r.id.clone())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Merges `KEY=value` lists; later entries replace earlier ones with the same key.
fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let mut out: Vec<String> = base.to_vec();
    for entry in overrides {
        let k = key(entry);
        if let Some(existing) = out.iter_mut().find(|e| key(e) == k) {
            existing.clone_from(entry);
        } else {
            out.push(entry.clone());
        }
    }
    out
}

fn limits(host: &HostConfig) -> Limits {
    Limits {
        memory: host.memory,
        memory_swap: host.memory_swap,
        pids: host.pids_limit.unwrap_or(0),
        nano_cpus: host.nano_cpus,
        cpu_quota: host.cpu_quota,
        cpu_period: host.cpu_period,
        cpu_shares: host.cpu_shares,
    }
}

/// The capability set: Docker's defaults, plus `--cap-add`, minus `--cap-drop`.
fn capabilities(host: &HostConfig) -> Result<Vec<String>> {
    let normalize = |c: &str| {
        let upper = c.to_ascii_uppercase();
        if upper == "ALL" || upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let all: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    if host.privileged {
        return Ok(all);
    }
    let mut set: Vec<String> = runtime::spec::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    for cap in host.cap_add.iter().map(|c| normalize(c)) {
        if cap == "CAP_ALL" || cap == "ALL" {
            set.clone_from(&all);
        } else if all.contains(&cap) {
            set.push(cap);
        } else {
            return Err(Error::InvalidArgument(format!(
                "unknown capability: {cap:?}"
            )));
        }
    }
    for cap in host.cap_drop.iter().map(|c| normalize(c)) {
        if cap == "CAP_ALL" || cap == "ALL" {
            set.clear();
        } else {
            set.retain(|c| *c != cap);
        }
    }
    set.sort();
    set.dedup();
    Ok(set)
}

/// Splits `-v SRC:DST[:OPTS]` into its parts.
fn split_bind(bind: &str) -> Result<(&str, &str, &str)> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "invalid volume specification: '{bind}'"
            )));
        }
    };
    if source.is_empty() || !destination.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "invalid volume specification: '{bind}': the container path must be absolute"
        )));
    }
    Ok((source, destination, options))
}

fn mount_point(kind: &str, source: String, destination: &str, rw: bool) -> MountPoint {
    MountPoint {
        kind: kind.into(),
        name: String::new(),
        source,
        destination: match destination.trim_end_matches('/') {
            "" => "/".to_owned(),
            trimmed => trimmed.to_owned(),
        },
        driver: String::new(),
        mode: String::new(),
        rw,
        propagation: if kind == "bind" {
            "rprivate".into()
        } else {
            String::new()
        },
        anonymous: false,
        data: String::new(),
    }
}

impl Engine {
    /// Counts of containers by state.
    pub fn container_counts(&self) -> Counts {
        let mut counts = Counts::default();
        for entry in self.containers.all() {
            counts.total += 1;
            match entry.lock().state.status {
                Status::Running | Status::Restarting => counts.running += 1,
                Status::Paused => counts.paused += 1,
                _ => counts.stopped += 1,
            }
        }
        counts
    }

    /// The container using `image_id`, if any, and whether it runs.
    pub fn image_in_use(&self, image_id: &str) -> Option<(String, bool)> {
        let mut found = None;
        for entry in self.containers.all() {
            let record = entry.lock();
            if record.image_id == image_id {
                let running = matches!(
                    record.state.status,
                    Status::Running | Status::Paused | Status::Restarting
                );
                if running || found.is_none() {
                    found = Some((record.id.clone(), running));
                }
            }
        }
        found
    }

    /// Looks a container up by id, name or id prefix.
    pub fn container(&self, key: &str) -> Result<Arc<Entry>> {
        self.containers.find(key)
    }

    /// Loads persisted containers. Any that were running when the engine
    /// went away are marked exited: their processes died with it.
    pub(crate) fn load_containers(&self) -> Result<()> {
        let dir = self.root.join("containers");
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let entries = std::fs::read_dir(&dir).map_err(Error::io("list", &dir))?;
        for item in entries.flatten() {
            let path = item.path().join("config.v2.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mut record: Container = match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable container record");
                    continue;
                }
            };
            if matches!(
                record.state.status,
                Status::Running | Status::Paused | Status::Restarting | Status::Removing
            ) {
                record.state.status = Status::Exited;
                record.state.pid = 0;
                record.state.exit_code = 255;
                record.state.finished_at = Some(now());
                self.cgroups.remove(&record.id);
            }
            let entry = Arc::new(Entry::new(record, item.path()));
            entry.persist()?;
            self.containers.lock().insert(entry.id(), entry);
        }
        Ok(())
    }

    /// In the VM, a missing bind source may only be created inside a host
    /// share (see [`crate::EngineConfig::host_shares`]).
    fn check_shared(&self, source: &Path) -> Result<()> {
        let Some(shares) = &self.host_shares else {
            return Ok(());
        };
        if shares.iter().any(|s| source.starts_with(&s.path)) {
            return Ok(());
        }
        let listed = if shares.is_empty() {
            "none".to_owned()
        } else {
            shares
                .iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        s.path.display(),
                        if s.writable { "writable" } else { "read-only" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::InvalidArgument(format!(
            "bind source path {} does not exist in the VM and is not under a directory shared with it (shared: {listed}); add it to mounts: in the instance's template",
            source.display()
        )))
    }

    /// Resolves binds, `--mount`s, tmpfs and volumes (named, `-v /path`,
    /// and the image's `VOLUME`s) into mounts, creating volumes and missing
    /// `-v` bind sources as Docker does.
    fn resolve_mounts(
        &self,
        config: &Config,
        host: &HostConfig,
        image_volumes: &[String],
    ) -> Result<Vec<MountPoint>> {
        let mut mounts: Vec<MountPoint> = Vec::new();
        let mut created: Vec<String> = Vec::new();
        let result = (|| -> Result<()> {
            for bind in &host.binds {
                let (source, destination, options) = split_bind(bind)?;
                let rw = !options.split(',').any(|o| o == "ro");
                let mode = options.to_owned();
                if source.starts_with('/') {
                    // `-v` creates a missing host directory; `--mount` does not.
                    if std::fs::symlink_metadata(source).is_err() {
                        self.check_shared(Path::new(source))?;
                        std::fs::create_dir_all(source)
                            .map_err(Error::io("create bind source", source))?;
                    }
                    mounts.push(MountPoint {
                        mode,
                        ..mount_point("bind", source.to_owned(), destination, rw)
                    });
                } else {
                    let existed = self.volumes.get(source).is_ok();
                    let volume = self.volumes.create(Some(source), BTreeMap::new())?;
                    if !existed {
                        created.push(volume.name.clone());
                    }
                    mounts.push(MountPoint {
                        name: volume.name,
                        driver: "local".into(),
                        mode,
                        ..mount_point(
                            "volume",
                            volume.mountpoint.display().to_string(),
                            destination,
                            rw,
                        )
                    });
                }
            }
            for request in &host.mounts {
                if !request.target.starts_with('/') {
                    return Err(Error::InvalidArgument(format!(
                        "invalid mount config: mount target {:?} must be an absolute path",
                        request.target
                    )));
                }
                let rw = !request.read_only;
                match request.kind.as_str() {
                    "bind" => {
                        if std::fs::symlink_metadata(&request.source).is_err() {
                            return Err(Error::InvalidArgument(format!(
                                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                                request.source
                            )));
                        }
                        mounts.push(mount_point(
                            "bind",
                            request.source.clone(),
                            &request.target,
                            rw,
                        ));
                    }
                    "volume" => {
                        let name = (!request.source.is_empty()).then_some(request.source.as_str());
                        let existed = name.is_some_and(|n| self.volumes.get(n).is_ok());
                        let volume = self.volumes.create(name, BTreeMap::new())?;
                        if !existed {
                            created.push(volume.name.clone());
                        }
                        mounts.push(MountPoint {
                            name: volume.name,
                            driver: "local".into(),
                            anonymous: name.is_none(),
                            ..mount_point(
                                "volume",
                                volume.mountpoint.display().to_string(),
                                &request.target,
                                rw,
                            )
                        });
                    }
                    "tmpfs" => {
                        let mut data = Vec::new();
                        if let Some(options) = &request.tmpfs_options {
                            if options.size_bytes > 0 {
                                data.push(format!("size={}", options.size_bytes));
                            }
                            if options.mode > 0 {
                                data.push(format!("mode={:o}", options.mode));
                            }
                        }
                        mounts.push(MountPoint {
                            data: data.join(","),
                            ..mount_point("tmpfs", String::new(), &request.target, rw)
                        });
                    }
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "invalid mount config: mount type {other:?} is not supported"
                        )));
                    }
                }
            }
            for (destination, options) in &host.tmpfs {
                let options: Vec<&str> = options.split(',').filter(|o| !o.is_empty()).collect();
                let rw = !options.contains(&"ro");
                let data: Vec<&str> = options
                    .into_iter()
                    .filter(|o| *o != "ro" && *o != "rw")
                    .collect();
                mounts.push(MountPoint {
                    data: data.join(","),
                    ..mount_point("tmpfs", String::new(), destination, rw)
                });
            }
            let anonymous = config
                .volumes
                .iter()
                .flat_map(|v| v.keys().cloned())
                .chain(image_volumes.iter().cloned());
            for destination in anonymous {
                let destination = destination.trim_end_matches('/').to_owned();
                if mounts.iter().any(|m| m.destination == destination) {
                    continue;
                }
                let volume = self.volumes.create(None, BTreeMap::new())?;
                created.push(volume.name.clone());
                mounts.push(MountPoint {
                    name: volume.name,
                    driver: "local".into(),
                    anonymous: true,
                    ..mount_point(
                        "volume",
                        volume.mountpoint.display().to_string(),
                        &destination,
                        true,
                    )
                });
            }
            let mut seen = std::collections::HashSet::new();
            for m in &mounts {
                if !seen.insert(m.destination.clone()) {
                    return Err(Error::InvalidArgument(format!(
                        "Duplicate mount point: {}",
                        m.destination
                    )));
                }
            }
            Ok(())
        })();
        if let Err(err) = result {
            // Nothing half-made stays behind.
            for name in created {
                let _ = self.volumes.remove(&name, &[], true);
            }
            return Err(err);
        }
        Ok(mounts)
    }

    /// Containers that mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.containers
            .all()
            .iter()
            .map(|e| e.snapshot())
            .filter(|r| {
                r.mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|r| r.id)
            .collect()
    }

    /// Creates a container from a Docker create request.
    pub fn create_container(
        &self,
        name: Option<&str>,
        mut config: Config,
        host: HostConfig,
    ) -> Result<Container> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => {
                names::validate(name).map_err(Error::InvalidArgument)?;
                format!("/{}", name.trim_start_matches('/'))
            }
            None => loop {
                let candidate = format!("/{}", names::random());
                if self.containers.name_owner(&candidate).is_none() {
                    break candidate;
                }
            },
        };
        if let Some(owner) = self.containers.name_owner(&name) {
            return Err(Error::Conflict(format!(
                "Conflict. The container name \"{name}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        let image = self.images.get(&config.image)?;
        let image_config = &image.config.config;
        config.env = merge_env(image_config.env.as_deref().unwrap_or_default(), &config.env);
        if config.working_dir.is_empty() {
            config.working_dir.clone_from(&image_config.working_dir);
        }
        if config.user.is_empty() {
            config.user.clone_from(&image_config.user);
        }
        let mut labels = image_config.labels.clone().unwrap_or_default();
        labels.extend(std::mem::take(&mut config.labels));
        config.labels = labels;
        if config.stop_signal.is_none() {
            config.stop_signal.clone_from(&image_config.stop_signal);
        }
        if config.healthcheck.is_none() {
            config.healthcheck.clone_from(&image_config.healthcheck);
        }
        if let Some(stop_signal) = &config.stop_signal {
            signal::parse(stop_signal).map_err(Error::InvalidArgument)?;
        }
        // Docker: an explicit entrypoint discards the image's CMD.
        let entrypoint_given = config.entrypoint.is_some();
        let entrypoint = config
            .entrypoint
            .clone()
            .unwrap_or_else(|| image_config.entrypoint.clone().unwrap_or_default());
        let cmd = match &config.cmd {
            Some(cmd) if !cmd.is_empty() => cmd.clone(),
            _ if entrypoint_given => Vec::new(),
            _ => image_config.cmd.clone().unwrap_or_default(),
        };
        if config.cmd.as_ref().is_none_or(Vec::is_empty) && !entrypoint_given {
            config.cmd = image_config.cmd.clone();
        }
        if config.entrypoint.is_none() {
            config.entrypoint = image_config.entrypoint.clone();
        }
        let mut argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if argv.is_empty() {
            return Err(Error::InvalidArgument("no command specified".into()));
        }
        for bind in &host.binds {
            split_bind(bind)?;
        }
        runtime::confinement(&host, &capabilities(&host)?)?;
        match host.network_mode.as_str() {
            "" | "default" | "bridge" | "none" | "host" => {}
            mode if mode.starts_with("container:") => {}
            other => {
                self.networks.lookup(other)?;
            }
        }
        match host.restart_policy.name.as_str() {
            "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
            other => {
                return Err(Error::InvalidArgument(format!(
                    "invalid restart policy: {other:?}"
                )));
            }
        }
        if host.auto_remove && !matches!(host.restart_policy.name.as_str(), "" | "no") {
            return Err(Error::InvalidArgument(
                "can't create 'AutoRemove' container with restart policy".into(),
            ));
        }
        let image_volumes: Vec<String> = image_config
            .volumes
            .iter()
            .flat_map(|v| v.keys().cloned())
            .collect();
        // Last fallible step before the record exists: it creates volumes.
        let mounts = self.resolve_mounts(&config, &host, &image_volumes)?;
        let id = new_id();
        if config.hostname.is_empty() {
            config.hostname = id[..12].to_owned();
        }
        let path = argv.remove(0);
        let record = Container {
            id: id.clone(),
            name,
            created: now(),
            path,
            args: argv,
            config,
            host_config: host,
            image_id: image.id.clone(),
            state: State::default(),
            restart_count: 0,
            layers: image.layer_dirs.clone(),
            mounts,
            manually_stopped: false,
        };
        let dir = self.root.join("containers").join(&id);
        for sub in ["", "upper", "work", "rootfs", "empty"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(Error::io("create", &path))?;
        }
        let entry = Arc::new(Entry::new(record.clone(), dir));
        entry.persist()?;
        self.containers.lock().insert(id.clone(), entry);
        self.publish_container("create", &record);
        Ok(record)
    }

    fn publish_container(&self, action: &str, record: &Container) {
        self.publish_container_with(action, record, BTreeMap::new());
    }

    fn publish_container_with(
        &self,
        action: &str,
        record: &Container,
        extra: BTreeMap<String, String>,
    ) {
        let mut attributes: BTreeMap<String, String> = record.config.labels.clone();
        attributes.insert("image".into(), record.config.image.clone());
        attributes.insert("name".into(), record.short_name().to_owned());
        attributes.extend(extra);
        self.events
            .publish("container", action, &record.id, attributes);
    }

    /// Writes `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for the
    /// container into its directory and returns the bind mounts for them.
    fn etc_files(
        &self,
        entry: &Entry,
        record: &Container,
        attached: Option<&crate::network::Attached>,
    ) -> Result<Vec<MountSpec>> {
        let hostname = &record.config.hostname;
        let host_network = record.host_config.network_mode == "host";
        let hosts = if let Some(a) = attached {
            a.hosts.clone()
        } else if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
            )
        };
        let resolv = attached.map_or_else(
            || std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            |a| a.resolv_conf.clone(),
        );
        let hostname_file = if host_network {
            std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| format!("{hostname}\n"))
        } else {
            format!("{hostname}\n")
        };
        let mut mounts = Vec::new();
        for (name, content) in [
            ("hostname", hostname_file),
            ("hosts", hosts),
            ("resolv.conf", resolv),
        ] {
            let path = entry.dir.join(name);
            std::fs::write(&path, content).map_err(Error::io("write", &path))?;
            mounts.push(MountSpec {
                destination: format!("/etc/{name}"),
                kind: "bind".into(),
                source: path.display().to_string(),
                data: String::new(),
                readonly: false,
                copy_up: false,
            });
        }
        Ok(mounts)
    }

    fn container_spec(
        &self,
        entry: &Entry,
        record: &Container,
        attached: Option<&crate::network::Attached>,
    ) -> Result<ContainerSpec> {
        let host = &record.host_config;
        let config = &record.config;
        let mut mounts = self.etc_files(entry, record, attached)?;
        for m in &record.mounts {
            mounts.push(match m.kind.as_str() {
                "tmpfs" => MountSpec {
                    destination: m.destination.clone(),
                    kind: "tmpfs".into(),
                    source: "tmpfs".into(),
                    data: m.data.clone(),
                    readonly: !m.rw,
                    copy_up: false,
                },
                kind => MountSpec {
                    destination: m.destination.clone(),
                    kind: "bind".into(),
                    source: m.source.clone(),
                    data: String::new(),
                    readonly: !m.rw,
                    copy_up: kind == "volume" && !m.mode.split(',').any(|o| o == "nocopy"),
                },
            });
        }
        let network = match host.network_mode.as_str() {
            "host" => NetworkSpec::Host,
            mode if mode.starts_with("container:") => {
                let other = self.containers.find(&mode["container:".len()..])?;
                let pid = other.running_pid().ok_or_else(|| {
                    Error::Conflict(format!(
                        "cannot join network of a non running container: {}",
                        other.id()
                    ))
                })?;
                NetworkSpec::Join {
                    path: PathBuf::from(format!("/proc/{pid}/ns/net")),
                }
            }
            _ => match attached {
                Some(a) => NetworkSpec::Join {
                    path: a.netns_path.clone(),
                },
                None => NetworkSpec::None,
            },
        };
        let mut env = config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        env.insert(0, format!("HOSTNAME={}", config.hostname));
        if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let lower = if record.layers.is_empty() {
            vec![entry.dir.join("empty")]
        } else {
            record.layers.clone()
        };
        let capabilities = capabilities(host)?;
        let confinement = runtime::confinement(host, &capabilities)?;
        Ok(ContainerSpec {
            id: record.id.clone(),
            hostname: config.hostname.clone(),
            rootfs: RootfsSpec {
                lower,
                upper: entry.dir.join("upper"),
                work: entry.dir.join("work"),
                target: entry.dir.join("rootfs"),
                readonly: host.readonly_rootfs,
            },
            network,
            cgroup_procs: self.cgroups.procs_files(&record.id),
            cgroup2: *self.cgroups.layout() == Layout::V2,
            mounts,
            masked_paths: runtime::spec::DEFAULT_MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            readonly_paths: runtime::spec::DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            privileged: host.privileged,
            devices: confinement.devices,
            init: host.init == Some(true),
            process: ProcessSpec {
                args: std::iter::once(record.path.clone())
                    .chain(record.args.iter().cloned())
                    .collect(),
                env,
                cwd: if config.working_dir.is_empty() {
                    "/".into()
                } else {
                    config.working_dir.clone()
                },
                user: config.user.clone(),
                additional_groups: host.group_add.clone(),
                tty: config.tty,
                capabilities,
                no_new_privileges: confinement.no_new_privileges,
                seccomp: confinement.seccomp,
            },
        })
    }

    /// Starts a created or exited container.
    pub async fn start_container(self: &Arc<Self>, key: &str) -> Result<()> {
        let entry = self.containers.find(key)?;
        let op = entry.op.lock().await;
        let result = self.start_locked(&entry).await;
        drop(op);
        // Like dockerd: a container that was to be removed on exit is
        // removed when it cannot start (`docker run --rm` waits for that).
        if result.is_err() && entry.lock().host_config.auto_remove && entry.running_pid().is_none()
        {
            let id = entry.id();
            if let Err(err) = self.remove_container(&id, true, true).await {
                tracing::warn!(container = %id, error = %err, "auto-remove after a failed start failed");
            }
        }
        result
    }

    /// Boxed: restart policies make starting and exit handling recursive.
    fn start_locked<'a>(
        self: &'a Arc<Self>,
        entry: &'a Arc<Entry>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.start_locked_inner(entry))
    }

    async fn start_locked_inner(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<()> {
        if let Some(gate) = &self.start_gate {
            // Resolves at once after boot; an error means the sender is
            // gone, which only happens once the gate is open.
            let _ = gate.clone().wait_for(|open| *open).await;
        }
        let record = entry.snapshot();
        match record.state.status {
            Status::Running | Status::Paused => {
                return Err(Error::NotModified(record.id, "started"));
            }
            Status::Removing | Status::Dead => {
                return Err(Error::Conflict(format!(
                    "container {} is marked for removal and cannot be started",
                    record.id
                )));
            }
            _ => {}
        }
        // A fresh overlay work dir each start; upper keeps the container's changes.
        let work = entry.dir.join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(Error::io("create", &work))?;
        let attached = if crate::network::is_bridge_mode(&record.host_config.network_mode) {
            let host_config = serde_json::to_value(&record.host_config).unwrap_or_default();
            let request = crate::network::AttachRequest::from_api(&crate::network::ApiContainer {
                id: &record.id,
                name: &record.name,
                hostname: &record.config.hostname,
                domainname: &record.config.domainname,
                network_mode: &record.host_config.network_mode,
                exposed_ports: record.config.exposed_ports.as_ref(),
                host_config: &host_config,
                endpoints_config: record
                    .host_config
                    .extra
                    .get("NetworkingConfig")
                    .and_then(|n| n.get("EndpointsConfig")),
            })?;
            Some(self.networks.attach(request).await?)
        } else {
            None
        };
        let spec = match self.container_spec(entry, &record, attached.as_ref()) {
            Ok(spec) => spec,
            Err(e) => {
                self.networks.detach(&record.id).await;
                return Err(e);
            }
        };
        let spec_path = entry.dir.join("runtime.json");
        write_atomic(&spec_path, &serde_json::to_vec(&spec).unwrap_or_default())?;
        self.cgroups.create(
            &record.id,
            &limits(&record.host_config),
            &spec.devices.cgroup,
        )?;

        let (stdio, io) = open_stdio(record.config.tty, record.config.open_stdin)?;
        let started = match runtime::start(&self.helper, runtime::SHIM_ARG, &spec_path, stdio).await
        {
            Ok(started) => started,
            Err(err) => {
                self.cgroups.remove(&record.id);
                self.networks.detach(&record.id).await;
                {
                    let mut r = entry.lock();
                    r.state.status = if r.state.started_at.is_some() {
                        Status::Exited
                    } else {
                        Status::Created
                    };
                    r.state.exit_code = err.code;
                    r.state.error.clone_from(&err.message);
                }
                entry.persist()?;
                return Err(if err.code == 125 {
                    Error::Runtime {
                        context: format!(
                            "failed to start container {}: {}",
                            record.id, err.message
                        ),
                        source: None,
                    }
                } else {
                    Error::InvalidArgument(format!(
                        "failed to start container {}: {}",
                        record.id, err.message
                    ))
                });
            }
        };
        {
            let mut r = entry.lock();
            r.state.status = Status::Running;
            r.state.pid = started.pid;
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.oom_killed = false;
            r.state.started_at = Some(now());
            r.state.finished_at = None;
            r.manually_stopped = false;
        }
        entry.persist()?;
        self.publish_container("start", &record);
        entry.live().pty.clone_from(&io.pty);
        let pumps = spawn_pumps(entry, io.outputs);
        if let Some(stdin) = io.stdin {
            spawn_stdin_pump(entry, stdin);
        }
        self.start_healthcheck(entry);
        let engine = self.clone();
        let entry = entry.clone();
        let mut helper = started.helper;
        tokio::spawn(async move {
            let code = match helper.wait().await {
                Ok(status) => status.code().unwrap_or(255),
                Err(_) => 255,
            };
            for pump in pumps {
                let _ = pump.await;
            }
            engine.on_exit(&entry, code).await;
        });
        Ok(())
    }

    async fn on_exit(self: &Arc<Self>, entry: &Arc<Entry>, code: i32) {
        let id = entry.id();
        let oom = self.oom_killed(&id);
        self.cgroups.remove(&id);
        self.networks.detach(&id).await;
        let _ = entry.log.flush().await;
        entry.hub.close();
        *entry.live() = Live::default();
        let record = {
            let mut r = entry.lock();
            r.state.status = Status::Exited;
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.oom_killed = oom;
            r.state.finished_at = Some(now());
            r.clone()
        };
        let _ = entry.persist();
        if oom {
            self.publish_container("oom", &record);
        }
        self.publish_container_with(
            "die",
            &record,
            BTreeMap::from([("exitCode".to_owned(), code.to_string())]),
        );
        entry.changes.send_modify(|c| {
            c.exits += 1;
            c.exit_code = code;
        });
        tracing::info!(container = %id, code, "container exited");

        let policy = &record.host_config.restart_policy;
        let restart = !record.manually_stopped
            && match policy.name.as_str() {
                "always" | "unless-stopped" => true,
                "on-failure" => {
                    code != 0
                        && (policy.maximum_retry_count == 0
                            || record.restart_count < policy.maximum_retry_count)
                }
                _ => false,
            };
        if restart {
            let engine = self.clone();
            let entry = entry.clone();
            tokio::spawn(async move { engine.restart_after_exit(&entry).await });
        } else if record.host_config.auto_remove
            && let Err(err) = self.remove_container(&id, true, true).await
        {
            tracing::warn!(container = %id, error = %err, "auto-remove failed");
        }
    }

    async fn restart_after_exit(self: &Arc<Self>, entry: &Arc<Entry>) {
        let count = {
            let mut r = entry.lock();
            r.state.status = Status::Restarting;
            r.restart_count += 1;
            r.restart_count
        };
        let _ = entry.persist();
        // Docker's back-off: 100 ms doubling, capped at a minute.
        let delay =
            Duration::from_millis(100u64.saturating_mul(1 << (count - 1).clamp(0, 10) as u64))
                .min(Duration::from_secs(60));
        tokio::time::sleep(delay).await;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        if record.state.status != Status::Restarting || record.manually_stopped {
            return;
        }
        if let Err(err) = self.start_locked(entry).await {
            tracing::warn!(container = %record.id, error = %err, "restart failed");
            let mut r = entry.lock();
            r.state.status = Status::Exited;
        }
        let _ = entry.persist();
    }

    fn oom_killed(&self, id: &str) -> bool {
        let count = |text: Option<String>| {
            text.unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        match self.cgroups.layout() {
            Layout::V2 => count(self.cgroups.read(id, "memory", "memory.events")) > 0,
            Layout::V1 => count(self.cgroups.read(id, "memory", "memory.oom_control")) > 0,
        }
    }

    /// Sends `signal` to the container's init process.
    pub fn kill_container(&self, key: &str, signal_name: Option<&str>) -> Result<()> {
        let entry = self.containers.find(key)?;
        let signal = match signal_name.filter(|s| !s.is_empty()) {
            Some(name) => signal::parse(name).map_err(Error::InvalidArgument)?,
            None => Signal::SIGKILL,
        };
        let Some(pid) = entry.running_pid() else {
            return Err(Error::Conflict(format!(
                "Cannot kill container: {key}: container {} is not running",
                entry.id()
            )));
        };
        if matches!(signal, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT) {
            entry.lock().manually_stopped = true;
        }
        nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|e| {
            Error::runtime(format!("sending {signal} to container {}: {e}", entry.id()))
        })?;
        if entry.lock().state.status == Status::Paused {
            let _ = self.unpause_container(key);
        }
        self.publish_container_with(
            "kill",
            &entry.snapshot(),
            BTreeMap::from([("signal".to_owned(), (signal as i32).to_string())]),
        );
        Ok(())
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` seconds
    /// (negative: wait forever).
    pub async fn stop_container(
        self: &Arc<Self>,
        key: &str,
        signal_name: Option<&str>,
        timeout: Option<i64>,
    ) -> Result<()> {
        let entry = self.containers.find(key)?;
        let _op = entry.op.lock().await;
        self.stop_locked(&entry, signal_name, timeout).await
    }

    async fn stop_locked(
        &self,
        entry: &Arc<Entry>,
        signal_name: Option<&str>,
        timeout: Option<i64>,
    ) -> Result<()> {
        let record = entry.snapshot();
        if record.state.status == Status::Restarting {
            entry.lock().manually_stopped = true;
            entry.lock().state.status = Status::Exited;
            entry.persist()?;
            return Ok(());
        }
        let Some(pid) = entry.running_pid() else {
            return Err(Error::NotModified(record.id, "stopped"));
        };
        let signal_name = signal_name
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| record.config.stop_signal.clone());
        let signal = match signal_name {
            Some(name) => signal::parse(&name).map_err(Error::InvalidArgument)?,
            None => Signal::SIGTERM,
        };
        let timeout = timeout.or(record.config.stop_timeout).unwrap_or(10);
        entry.lock().manually_stopped = true;
        let mut changes = entry.changes();
        let seen = changes.borrow_and_update().exits;
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        if record.state.status == Status::Paused {
            let _ = self.cgroups.freeze(&record.id, false);
        }
        let exited = |c: &Changes| c.exits != seen;
        let graceful = if timeout < 0 {
            changes.wait_for(exited).await.is_ok()
        } else {
            tokio::time::timeout(
                Duration::from_secs(timeout.unsigned_abs()),
                changes.wait_for(exited),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        };
        if !graceful {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = changes.wait_for(exited).await;
        }
        self.publish_container("stop", &entry.snapshot());
        Ok(())
    }

    /// Stops (if running) and starts a container.
    pub async fn restart_container(
        self: &Arc<Self>,
        key: &str,
        signal_name: Option<&str>,
        timeout: Option<i64>,
    ) -> Result<()> {
        let entry = self.containers.find(key)?;
        let _op = entry.op.lock().await;
        match self.stop_locked(&entry, signal_name, timeout).await {
            Ok(()) | Err(Error::NotModified(..)) => {}
            Err(err) => return Err(err),
        }
        self.start_locked(&entry).await?;
        self.publish_container("restart", &entry.snapshot());
        Ok(())
    }

    /// Waits until `condition` holds and returns the exit code.
    pub async fn wait_container(&self, key: &str, condition: WaitCondition) -> Result<i32> {
        let entry = self.containers.find(key)?;
        let mut changes = entry.changes();
        let start = *changes.borrow_and_update();
        // The record is set before the change counter moves (`on_exit`), so
        // a container seen exited here takes its code from the record: the
        // counter's copy may still be the previous run's.
        let (status, exit_code) = {
            let r = entry.lock();
            (r.state.status, r.state.exit_code)
        };
        let active = matches!(
            status,
            Status::Running | Status::Paused | Status::Restarting
        );
        match condition {
            WaitCondition::NotRunning if !active => return Ok(exit_code),
            WaitCondition::Removed if start.removed => return Ok(start.exit_code),
            _ => {}
        }
        let result = changes
            .wait_for(|c| match condition {
                WaitCondition::Removed => c.removed,
                WaitCondition::NextExit | WaitCondition::NotRunning => {
                    c.exits != start.exits || c.removed
                }
            })
            .await
            .map(|c| c.exit_code);
        result.map_err(|_| Error::NoSuchContainer(key.to_owned()))
    }

    /// Removes a container (killing it first when `force`).
    pub async fn remove_container(
        &self,
        key: &str,
        force: bool,
        remove_volumes: bool,
    ) -> Result<()> {
        let entry = self.containers.find(key)?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        if let Some(pid) = entry.running_pid() {
            if !force {
                return Err(Error::Conflict(format!(
                    "cannot remove container \"{}\": container is running: stop the container before removing or force remove",
                    record.name
                )));
            }
            entry.lock().manually_stopped = true;
            let mut changes = entry.changes();
            let seen = changes.borrow_and_update().exits;
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = self.cgroups.freeze(&record.id, false);
            let _ = changes.wait_for(|c| c.exits != seen).await;
        }
        {
            let mut r = entry.lock();
            if r.state.status == Status::Removing {
                return Err(Error::Conflict(format!(
                    "removal of container {} is already in progress",
                    r.id
                )));
            }
            r.manually_stopped = true;
            r.state.status = Status::Removing;
        }
        self.cgroups.remove(&record.id);
        self.networks.detach(&record.id).await;
        let dir = entry.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(|e| Error::runtime(format!("removing container files: {e}")))?
            .map_err(Error::io("remove", entry.dir.clone()))?;
        self.containers.lock().remove(&record.id);
        if remove_volumes {
            for m in record.mounts.iter().filter(|m| m.anonymous) {
                if let Err(err) = self
                    .volumes
                    .remove(&m.name, &self.volume_users(&m.name), true)
                {
                    tracing::warn!(volume = %m.name, error = %err, "keeping an anonymous volume still in use");
                }
            }
        }
        self.publish_container("destroy", &record);
        entry.changes.send_modify(|c| c.removed = true);
        Ok(())
    }

    /// Renames a container.
    pub fn rename_container(&self, key: &str, new_name: &str) -> Result<()> {
        names::validate(new_name).map_err(Error::InvalidArgument)?;
        let entry = self.containers.find(key)?;
        let name = format!("/{}", new_name.trim_start_matches('/'));
        if let Some(owner) = self.containers.name_owner(&name) {
            return Err(Error::Conflict(format!(
                "Conflict. The container name \"{name}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        let old = std::mem::replace(&mut entry.lock().name, name);
        entry.persist()?;
        self.publish_container_with(
            "rename",
            &entry.snapshot(),
            BTreeMap::from([("oldName".to_owned(), old)]),
        );
        Ok(())
    }

    /// Freezes every process of a running container.
    pub fn pause_container(&self, key: &str) -> Result<()> {
        let entry = self.containers.find(key)?;
        let status = entry.lock().state.status;
        match status {
            Status::Running => {}
            Status::Paused => {
                return Err(Error::Conflict(format!(
                    "container {} is already paused",
                    entry.id()
                )));
            }
            _ => {
                return Err(Error::Conflict(format!(
                    "container {} is not running",
                    entry.id()
                )));
            }
        }
        self.cgroups.freeze(&entry.id(), true)?;
        entry.lock().state.status = Status::Paused;
        entry.persist()?;
        self.publish_container("pause", &entry.snapshot());
        Ok(())
    }

    /// Thaws a paused container.
    pub fn unpause_container(&self, key: &str) -> Result<()> {
        let entry = self.containers.find(key)?;
        if entry.lock().state.status != Status::Paused {
            return Err(Error::Conflict(format!(
                "container {} is not paused",
                entry.id()
            )));
        }
        self.cgroups.freeze(&entry.id(), false)?;
        entry.lock().state.status = Status::Running;
        entry.persist()?;
        self.publish_container("unpause", &entry.snapshot());
        Ok(())
    }

    /// Processes of a running container: titles and rows, like `ps -ef`.
    pub fn top_container(&self, key: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let entry = self.containers.find(key)?;
        if entry.running_pid().is_none() {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                entry.id()
            )));
        }
        let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .map(str::to_owned)
            .to_vec();
        let mut pids = self.cgroups.pids(&entry.id());
        pids.sort_unstable();
        let rows = pids.into_iter().filter_map(process_row).collect();
        Ok((titles, rows))
    }

    /// Sets the terminal size of a container's TTY.
    pub fn resize_container(&self, key: &str, height: u16, width: u16) -> Result<()> {
        let entry = self.containers.find(key)?;
        let pty = entry.live().pty.clone();
        match pty {
            Some(pty) => set_window_size(&pty, height, width),
            None => Err(Error::Conflict(format!(
                "container {} has no TTY or is not running",
                entry.id()
            ))),
        }
    }

    /// Stops every running container (agent shutdown).
    pub async fn shutdown(self: &Arc<Self>) {
        let entries = self.containers.all();
        let mut tasks = Vec::new();
        for entry in entries {
            if entry.running_pid().is_some() {
                let engine = self.clone();
                let id = entry.id();
                tasks.push(tokio::spawn(async move {
                    engine.stop_container(&id, None, Some(5)).await
                }));
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// One `ps`-style row for `pid`.
fn process_row(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ppid = fields.get(1)?.to_string();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let secs = ticks / 100;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("0");
    let uid = if uid == "0" {
        "root".to_owned()
    } else {
        uid.to_owned()
    };
    Some(vec![
        uid,
        pid.to_string(),
        ppid,
        "0".into(),
        "-".into(),
        "?".into(),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        cmd,
    ])
}

/// The engine's ends of a process's stdio.
pub(crate) struct EngineIo {
    pub stdin: Option<pipe::Sender>,
    pub outputs: Vec<(Stream, pipe::Receiver)>,
    pub pty: Option<Arc<OwnedFd>>,
}

fn sys_err(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Runtime {
        context: what.into(),
        source: Some(std::io::Error::from(e)),
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("creating a pipe"))
}

/// Creates the process's stdio: a pty (tty) or pipes.
pub(crate) fn open_stdio(tty: bool, stdin: bool) -> Result<(ChildStdio, EngineIo)> {
    if tty {
        let pty = nix::pty::openpty(None, None).map_err(sys_err("opening a pty"))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone().map_err(|e| Error::Runtime {
                context: "duplicating a pty fd".into(),
                source: Some(e),
            })
        };
        let master_read = dup(&pty.master)?;
        let master_write = dup(&pty.master)?;
        let child = ChildStdio {
            stdin: Some(dup(&pty.slave)?),
            stdout: dup(&pty.slave)?,
            stderr: pty.slave,
        };
        let reader =
            pipe::Receiver::from_owned_fd_unchecked(master_read).map_err(|e| Error::Runtime {
                context: "watching the pty".into(),
                source: Some(e),
            })?;
        let writer =
            pipe::Sender::from_owned_fd_unchecked(master_write).map_err(|e| Error::Runtime {
                context: "watching the pty".into(),
                source: Some(e),
            })?;
        let io = EngineIo {
            stdin: Some(writer),
            outputs: vec![(Stream::Stdout, reader)],
            pty: Some(Arc::new(pty.master)),
        };
        return Ok((child, io));
    }
    let (out_read, out_write) = pipe_pair()?;
    let (err_read, err_write) = pipe_pair()?;
    let wrap_rx = |fd| {
        pipe::Receiver::from_owned_fd(fd).map_err(|e| Error::Runtime {
            context: "watching a pipe".into(),
            source: Some(e),
        })
    };
    let (child_stdin, engine_stdin) = if stdin {
        let (read, write) = pipe_pair()?;
        let sender = pipe::Sender::from_owned_fd(write).map_err(|e| Error::Runtime {
            context: "watching a pipe".into(),
            source: Some(e),
        })?;
        (Some(read), Some(sender))
    } else {
        (None, None)
    };
    let child = ChildStdio {
        stdin: child_stdin,
        stdout: out_write,
        stderr: err_write,
    };
    let io = EngineIo {
        stdin: engine_stdin,
        outputs: vec![
            (Stream::Stdout, wrap_rx(out_read)?),
            (Stream::Stderr, wrap_rx(err_read)?),
        ],
        pty: None,
    };
    Ok((child, io))
}

/// Feeds attached clients' input to the process's stdin until it exits.
fn spawn_stdin_pump(entry: &Arc<Entry>, stdin: pipe::Sender) {
    let Some(mut rx) = entry
        .stdin_rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    // Input sent before the start (clients attach, stream stdin, then
    // start) is delivered: the channel holds it until now.
    let entry = entry.clone();
    let mut changes = entry.changes();
    let seen = changes.borrow_and_update().exits;
    tokio::spawn(async move {
        // Dropping the sender delivers EOF to the process.
        let mut stdin = Some(stdin);
        loop {
            tokio::select! {
                message = rx.recv(), if stdin.is_some() => match message {
                    Some(StdinMessage::Data(data)) => {
                        if let Some(writer) = stdin.as_mut()
                            && writer.write_all(&data).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Some(StdinMessage::Close) | None => stdin = None,
                },
                () = async { let _ = changes.wait_for(|c| c.exits != seen).await; } => break,
            }
        }
        *entry
            .stdin_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
    });
}

/// Copies each output to the container's hub and log until EOF.
fn spawn_pumps(
    entry: &Arc<Entry>,
    outputs: Vec<(Stream, pipe::Receiver)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    outputs
        .into_iter()
        .map(|(stream, mut reader)| {
            let entry = entry.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let chunk = Chunk {
                                stream,
                                data: Bytes::copy_from_slice(&buf[..n]),
                            };
                            if let Err(err) = entry.log.write(&chunk).await {
                                tracing::warn!(error = %err, "writing the container log failed");
                            }
                            entry.hub.send(chunk).await;
                        }
                    }
                }
            })
        })
        .collect()
}

#[expect(unsafe_code, reason = "TIOCSWINSZ ioctl on the pty master")]
pub(crate) fn set_window_size(pty: &OwnedFd, height: u16, width: u16) -> Result<()> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own from a valid pty fd.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(Error::Runtime {
            context: "resizing the tty".into(),
            source: Some(std::io::Error::last_os_error()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_env_overrides_by_key() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn capabilities_apply_add_and_drop() {
        let host = HostConfig {
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into()],
            ..HostConfig::default()
        };
        let caps = capabilities(&host).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(caps.contains(&"CAP_KILL".to_owned()));
    }

    #[test]
    fn capabilities_reject_unknown_names() {
        let host = HostConfig {
            cap_add: vec!["CAP_FLY".into()],
            ..HostConfig::default()
        };
        assert!(matches!(
            capabilities(&host),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn split_bind_reads_mode_and_rejects_relative_targets() {
        assert_eq!(split_bind("/src:/dst:ro").unwrap(), ("/src", "/dst", "ro"));
        assert_eq!(split_bind("vol:/dst").unwrap(), ("vol", "/dst", ""));
        assert!(split_bind("/src:dst").is_err());
        assert!(split_bind("a:b:c:d").is_err());
    }

    #[test]
    fn wait_condition_parses_docker_values() {
        assert_eq!(
            "next-exit".parse::<WaitCondition>().unwrap(),
            WaitCondition::NextExit
        );
        assert!("later".parse::<WaitCondition>().is_err());
    }
}
