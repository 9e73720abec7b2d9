//! Healthchecks (`HEALTHCHECK` / `--health-cmd`): a probe exec'd in the
//! container every interval; its results drive `State.Health` in inspect
//! and `health_status` events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::exec::ExecConfig;
use super::{Entry, Status};
use crate::Engine;

/// `Config.Healthcheck`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    test: Vec<String>,
    /// Nanoseconds; 0 (or null, as docker-py sends) means the default.
    #[serde(default, deserialize_with = "null_as_default")]
    interval: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    timeout: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    retries: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    start_period: u64,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One probe result (`State.Health.Log`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// `State.Health`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in `Log`.
const KEPT: usize = 5;
/// Output kept per result.
const MAX_OUTPUT: usize = 4096;

fn nanos(value: u64, default: Duration) -> Duration {
    if value == 0 {
        default
    } else {
        Duration::from_nanos(value)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Engine {
    /// Starts the healthcheck loop of a just-started container, if its
    /// config has one. The loop ends when the container exits.
    pub(super) fn start_healthcheck(self: &Arc<Self>, entry: &Arc<Entry>) {
        let record = entry.snapshot();
        let Some(raw) = record.config.healthcheck.clone() else {
            return;
        };
        let config = match serde_json::from_value::<HealthConfig>(raw) {
            Ok(config) => config,
            Err(err) => {
                tracing::warn!(container = %record.id, error = %err, "ignoring an unreadable healthcheck");
                return;
            }
        };
        let command = match config.test.first().map(String::as_str) {
            Some("CMD") => config.test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), config.test[1..].join(" ")],
            _ => return,
        };
        if command.is_empty() {
            return;
        }
        *entry
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Health {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        });
        let interval = nanos(config.interval, DEFAULT_INTERVAL);
        let timeout = nanos(config.timeout, DEFAULT_TIMEOUT);
        let retries = if config.retries == 0 {
            DEFAULT_RETRIES
        } else {
            config.retries
        };
        let start_period = Duration::from_nanos(config.start_period);
        let engine = self.clone();
        let entry = entry.clone();
        let mut changes = entry.changes();
        let seen = changes.borrow_and_update().exits;
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = async { let _ = changes.wait_for(|c| c.exits != seen || c.removed).await; } => return,
                }
                if entry.snapshot().state.status != Status::Running {
                    continue;
                }
                let result = engine.probe(&entry, &command, timeout).await;
                let in_start_period = started.elapsed() < start_period;
                let mut event = None;
                {
                    let mut guard = entry
                        .health
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let Some(health) = guard.as_mut() else { return };
                    let before = health.status.clone();
                    if result.exit_code == 0 {
                        health.failing_streak = 0;
                        health.status = "healthy".into();
                    } else if !in_start_period {
                        health.failing_streak += 1;
                        if health.failing_streak >= retries {
                            health.status = "unhealthy".into();
                        }
                    }
                    health.log.push(result);
                    if health.log.len() > KEPT {
                        health.log.remove(0);
                    }
                    if health.status != before {
                        event = Some(health.status.clone());
                    }
                }
                if let Some(status) = event {
                    let record = entry.snapshot();
                    engine.publish_container_with(
                        &format!("health_status: {status}"),
                        &record,
                        BTreeMap::new(),
                    );
                }
            }
        });
    }

    /// Runs one probe and collects its result.
    async fn probe(&self, entry: &Entry, command: &[String], timeout: Duration) -> HealthResult {
        let start = now();
        let failed = |message: String| HealthResult {
            start: start.clone(),
            end: now(),
            exit_code: -1,
            output: message,
        };
        let config = ExecConfig {
            attach_stdout: true,
            attach_stderr: true,
            cmd: command.to_vec(),
            ..ExecConfig::default()
        };
        let exec_id = match self.create_exec(&entry.id(), config) {
            Ok(id) => id,
            Err(err) => return failed(err.to_string()),
        };
        let io = match self.start_exec(&exec_id).await {
            Ok(Ok(io)) => io,
            Ok(Err(err)) => {
                return HealthResult {
                    start: start.clone(),
                    end: now(),
                    exit_code: err.code,
                    output: err.message,
                };
            }
            Err(err) => return failed(err.to_string()),
        };
        let mut done = io.done;
        let collect = async {
            let mut output = Vec::new();
            for (_, mut pipe) in io.outputs {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf).await;
                output.extend_from_slice(&buf);
            }
            let code = done
                .wait_for(|s| s.exit_code.is_some())
                .await
                .ok()
                .and_then(|s| s.exit_code)
                .unwrap_or(-1);
            (code, output)
        };
        match tokio::time::timeout(timeout, collect).await {
            Ok((exit_code, mut output)) => {
                output.truncate(MAX_OUTPUT);
                HealthResult {
                    start,
                    end: now(),
                    exit_code,
                    output: String::from_utf8_lossy(&output).into_owned(),
                }
            }
            Err(_) => failed(format!("Health check exceeded timeout ({timeout:?})")),
        }
    }
}
