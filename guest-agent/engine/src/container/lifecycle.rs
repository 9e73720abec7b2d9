//! Starting containers and handling their exit (restart policies, auto-remove).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::spec::limits;
use super::stdio::{open_stdio, spawn_pumps, spawn_stdin_pump};
use super::store::{Entry, Live, now, write_atomic};
use super::{Status, merge_env};
use crate::cgroup::Layout;
use crate::runtime;
use crate::{Engine, Error, Result};

impl Engine {
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
    pub(super) fn start_locked<'a>(
        self: &'a Arc<Self>,
        entry: &'a Arc<Entry>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.start_locked_inner(entry))
    }

    pub(super) async fn start_locked_inner(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<()> {
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
        let spec = match self.link_settings(&record).await.and_then(|links| {
            let attached = attached.map(|mut a| {
                a.hosts.push_str(&links.hosts);
                a
            });
            let mut spec = self.container_spec(entry, &record, attached.as_ref())?;
            // Link variables first: the container's own environment wins.
            spec.process.env = merge_env(&links.env, &spec.process.env);
            Ok(spec)
        }) {
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

    pub(super) async fn on_exit(self: &Arc<Self>, entry: &Arc<Entry>, code: i32) {
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

    pub(super) async fn restart_after_exit(self: &Arc<Self>, entry: &Arc<Entry>) {
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

    pub(super) fn oom_killed(&self, id: &str) -> bool {
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
}
