//! The record store: each container's [`Entry`], the id/name index, and
//! loading records from disk.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::health;
use super::io::{LogFile, OutputHub};
use super::{Container, Status};
use crate::{Engine, Error, Result};

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
pub(super) struct Live {
    pub(super) pty: Option<Arc<OwnedFd>>,
}

/// One container.
#[derive(Debug)]
pub struct Entry {
    pub(super) record: Mutex<Container>,
    pub hub: OutputHub,
    pub log: LogFile,
    pub(super) op: Arc<tokio::sync::Mutex<()>>,
    pub(super) live: Mutex<Live>,
    pub(super) changes: watch::Sender<Changes>,
    pub(super) dir: PathBuf,
    /// Attached clients send stdin here; the running process's stdin pump
    /// owns the receiver while it runs and puts it back when it exits.
    pub(super) stdin_tx: mpsc::Sender<StdinMessage>,
    pub(super) stdin_rx: Mutex<Option<mpsc::Receiver<StdinMessage>>>,
    /// Healthcheck state while the container runs with a healthcheck.
    pub(super) health: Mutex<Option<health::Health>>,
}

impl Entry {
    pub(super) fn new(record: Container, dir: PathBuf) -> Self {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Container> {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn live(&self) -> std::sync::MutexGuard<'_, Live> {
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

    pub(super) fn persist(&self) -> Result<()> {
        let record = self.snapshot();
        write_atomic(
            &self.dir.join("config.v2.json"),
            &serde_json::to_vec_pretty(&record).unwrap_or_default(),
        )
    }

    pub(super) fn running_pid(&self) -> Option<i32> {
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
    pub(super) by_id: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Containers {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
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

    pub(super) fn name_owner(&self, name: &str) -> Option<String> {
        self.lock()
            .values()
            .map(|e| e.lock())
            .find(|r| r.name == name)
            .map(|r| r.id.clone())
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub(super) fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
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

    pub(super) fn publish_container(&self, action: &str, record: &Container) {
        self.publish_container_with(action, record, BTreeMap::new());
    }

    pub(super) fn publish_container_with(
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
}
