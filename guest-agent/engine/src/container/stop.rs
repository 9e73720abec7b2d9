//! Signals and their ends: kill, stop, restart, wait and remove.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::store::{Changes, Entry};
use super::{Status, WaitCondition, signal};
use crate::{Engine, Error, Result};

impl Engine {
    /// Sends `signal` (default SIGKILL) to the container's init process.
    /// A SIGKILL returns once the container has exited, as with dockerd,
    /// so that inspect right after shows it stopped.
    pub async fn kill_container(&self, key: &str, signal_name: Option<&str>) -> Result<()> {
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
        let publish = || {
            self.publish_container_with(
                "kill",
                &entry.snapshot(),
                BTreeMap::from([("signal".to_owned(), (signal as i32).to_string())]),
            );
        };
        if signal == Signal::SIGKILL {
            publish();
            self.signal_and_wait(&entry, pid, signal, None).await;
            return Ok(());
        }
        nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|e| {
            Error::runtime(format!("sending {signal} to container {}: {e}", entry.id()))
        })?;
        if entry.lock().state.status == Status::Paused
            && let Err(err) = self.unpause_container(key)
        {
            tracing::warn!(container = %entry.id(), error = %err, "thawing the container to deliver a signal failed");
        }
        publish();
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

    pub(super) async fn stop_locked(
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
        let kill_after = (timeout >= 0).then(|| Duration::from_secs(timeout.unsigned_abs()));
        self.signal_and_wait(entry, pid, signal, kill_after).await;
        self.publish_container("stop", &entry.snapshot());
        Ok(())
    }

    /// Sends `signal` to a running container's init (thawing it when it is
    /// paused, so it acts on it) and waits for the exit: when `kill_after`
    /// passes first, SIGKILL follows; `None` waits for ever.
    ///
    /// The one signal-and-wait path of stop, kill and remove.
    pub(super) async fn signal_and_wait(
        &self,
        entry: &Entry,
        pid: i32,
        signal: Signal,
        kill_after: Option<Duration>,
    ) {
        let id = entry.id();
        let mut changes = entry.changes();
        let seen = changes.borrow_and_update().exits;
        let send = |signal: Signal| match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
            // Already gone: its exit is on the way.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(container = %id, %signal, error = %err, "signalling the container failed");
            }
        };
        send(signal);
        if entry.lock().state.status == Status::Paused
            && let Err(err) = self.cgroups.freeze(&id, false)
        {
            tracing::warn!(container = %id, error = %err, "thawing the container to deliver a signal failed");
        }
        let exited = |c: &Changes| c.exits != seen;
        if let Some(grace) = kill_after {
            match tokio::time::timeout(grace, changes.wait_for(exited)).await {
                // Exited, or the entry is gone (its sender dropped).
                Ok(_) => return,
                Err(_) => send(Signal::SIGKILL),
            }
        }
        // An error means the entry was dropped: nothing left to wait for.
        if changes.wait_for(exited).await.is_err() {
            tracing::debug!(container = %id, "container entry dropped while waiting for its exit");
        }
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
        if record.state.status == Status::Restarting && !force {
            return Err(Error::Conflict(format!(
                "cannot remove container \"{}\": container is restarting: stop the container before removing or force remove",
                record.name
            )));
        }
        if let Some(pid) = entry.running_pid() {
            if !force {
                return Err(Error::Conflict(format!(
                    "cannot remove container \"{}\": container is running: stop the container before removing or force remove",
                    record.name
                )));
            }
            entry.lock().manually_stopped = true;
            self.signal_and_wait(&entry, pid, Signal::SIGKILL, None)
                .await;
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
