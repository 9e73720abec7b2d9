//! Host side of file-change events: watches the share paths the guest asks
//! for and reports each change by its guest path.
//!
//! The guest names what to watch ([`GuestToHost::WatchPaths`]: the bind
//! sources of its running containers), so the host watches project trees,
//! not whole home directories. Changes are batched for a few milliseconds
//! and deduplicated by a content signature (existence, size, mtime, mode,
//! inode): an event whose path still has the signature last sent is dropped.
//! That also suppresses the loop the guest would otherwise start, since the
//! operations it uses to raise guest events change only `ctime`.
//!
//! [`GuestToHost::WatchPaths`]: berth_proto::GuestToHost::WatchPaths

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_instance::config::MountConfig;
use berth_proto::control::FsChange;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long changes are collected before a batch is sent.
const BATCH: Duration = Duration::from_millis(5);
/// Signatures remembered before the map is reset.
const MAX_REMEMBERED: usize = 65_536;

/// What a path looked like when its change was last sent.
type Signature = Option<(u64, i64, i64, u32, u64)>;

fn signature(path: &Path) -> Signature {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.size(), m.mtime(), m.mtime_nsec(), m.mode(), m.ino()))
}

pub struct FsWatcher {
    /// (host location, guest mount point) per share.
    mounts: Vec<(PathBuf, PathBuf)>,
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    watched: BTreeSet<PathBuf>,
    last: HashMap<PathBuf, Signature>,
    /// Changed paths not yet sent, and when their batch closes.
    pending: BTreeSet<PathBuf>,
    deadline: Option<tokio::time::Instant>,
}

impl FsWatcher {
    pub fn new(mounts: &[MountConfig]) -> Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .context("starting the file watcher")?;
        Ok(Self {
            mounts: mounts
                .iter()
                .map(|m| (m.location.clone(), m.mount_point.clone()))
                .collect(),
            watcher,
            events,
            watched: BTreeSet::new(),
            last: HashMap::new(),
            pending: BTreeSet::new(),
            deadline: None,
        })
    }

    /// Watches exactly `guest_paths` (recursively), translated to host
    /// paths; paths outside every share, or inside another watched path,
    /// are skipped.
    pub fn set_watched(&mut self, guest_paths: &[String]) {
        let mut wanted: BTreeSet<PathBuf> = guest_paths
            .iter()
            .filter_map(|p| self.to_host(Path::new(p)))
            .collect();
        let nested: Vec<PathBuf> = wanted
            .iter()
            .filter(|p| wanted.iter().any(|q| q != *p && p.starts_with(q)))
            .cloned()
            .collect();
        for p in nested {
            wanted.remove(&p);
        }
        for gone in self
            .watched
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            let _ = self.watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for new in wanted.difference(&self.watched.clone()) {
            match self.watcher.watch(new, RecursiveMode::Recursive) {
                Ok(()) => {
                    tracing::info!(path = %new.display(), "watching for changes");
                    self.watched.insert(new.clone());
                }
                Err(err) => tracing::warn!(path = %new.display(), %err, "cannot watch"),
            }
        }
    }

    /// The next batch of changes (guest paths), deduplicated. Cancel-safe:
    /// changes collected so far stay for the next call.
    pub async fn next_batch(&mut self) -> Vec<FsChange> {
        loop {
            let Some(deadline) = self.deadline else {
                let Some(event) = self.events.recv().await else {
                    return std::future::pending().await;
                };
                collect(event, &mut self.pending);
                if !self.pending.is_empty() {
                    self.deadline = Some(tokio::time::Instant::now() + BATCH);
                }
                continue;
            };
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => collect(event, &mut self.pending),
                Ok(None) | Err(_) => {
                    self.deadline = None;
                    let paths = std::mem::take(&mut self.pending);
                    let changes = self.changes(paths);
                    if !changes.is_empty() {
                        return changes;
                    }
                }
            }
        }
    }

    fn changes(&mut self, paths: BTreeSet<PathBuf>) -> Vec<FsChange> {
        if self.last.len() > MAX_REMEMBERED {
            self.last.clear();
        }
        let mut out = Vec::new();
        for host in paths {
            let sig = signature(&host);
            if self.last.get(&host) == Some(&sig) {
                continue;
            }
            let Some(guest) = self.to_guest(&host) else {
                continue;
            };
            self.last.insert(host, sig);
            out.push(FsChange {
                path: guest.display().to_string(),
                exists: sig.is_some(),
            });
        }
        out
    }

    fn to_host(&self, guest: &Path) -> Option<PathBuf> {
        self.mounts
            .iter()
            .find_map(|(host, point)| guest.strip_prefix(point).ok().map(|rel| host.join(rel)))
    }

    fn to_guest(&self, host: &Path) -> Option<PathBuf> {
        self.mounts
            .iter()
            .find_map(|(loc, point)| host.strip_prefix(loc).ok().map(|rel| point.join(rel)))
    }
}

fn collect(event: notify::Result<notify::Event>, paths: &mut BTreeSet<PathBuf>) {
    match event {
        Ok(event) => {
            // Reads say nothing changed.
            if matches!(
                event.kind,
                notify::EventKind::Access(
                    notify::event::AccessKind::Open(_)
                        | notify::event::AccessKind::Read
                        | notify::event::AccessKind::Close(notify::event::AccessMode::Read)
                )
            ) {
                return;
            }
            paths.extend(event.paths);
        }
        Err(err) => tracing::warn!(%err, "file watcher"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher(dir: &Path) -> FsWatcher {
        FsWatcher::new(&[MountConfig {
            location: dir.to_path_buf(),
            mount_point: PathBuf::from("/Users/me"),
            writable: false,
        }])
        .unwrap()
    }

    async fn batch(w: &mut FsWatcher) -> Vec<FsChange> {
        tokio::time::timeout(Duration::from_secs(5), w.next_batch())
            .await
            .expect("a change within 5 s")
    }

    #[tokio::test]
    async fn changes_arrive_as_guest_paths_and_echoes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("src");
        std::fs::create_dir(&project).unwrap();
        let mut w = watcher(dir.path());
        w.set_watched(&["/Users/me/src".to_owned()]);

        std::fs::write(project.join("a.js"), "one").unwrap();
        let changes = batch(&mut w).await;
        assert!(
            changes.contains(&FsChange {
                path: "/Users/me/src/a.js".into(),
                exists: true
            }),
            "{changes:?}"
        );

        // What the guest does to raise events: same-mode chmod, empty open.
        let file = project.join("a.js");
        let mode = std::fs::metadata(&file).unwrap().mode();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        drop(std::fs::OpenOptions::new().write(true).open(&file).unwrap());
        std::fs::remove_file(&file).unwrap();
        let changes = batch(&mut w).await;
        assert_eq!(
            changes,
            vec![FsChange {
                path: "/Users/me/src/a.js".into(),
                exists: false
            }],
            "the echo is dropped, the delete is not"
        );
    }

    #[test]
    fn paths_outside_shares_and_nested_paths_are_not_watched_twice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut w = watcher(dir.path());

        w.set_watched(&[
            "/Users/me/a".to_owned(),
            "/Users/me/a/b".to_owned(),
            "/etc".to_owned(),
        ]);

        assert_eq!(w.watched, BTreeSet::from([dir.path().join("a")]));
    }
}
