//! The container record: what is persisted per container and what
//! `inspect` reports.
//!
//! `Config` and `HostConfig` keep the Docker Engine API's field names, so a
//! create request deserializes straight into them and inspect serializes
//! them back. Fields the engine does not interpret are kept in `extra`, so
//! they round-trip instead of being silently dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `Config` of a create request / inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Config {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub domainname: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub attach_stdin: bool,
    #[serde(default)]
    pub attach_stdout: bool,
    #[serde(default)]
    pub attach_stderr: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// `""`/`no`, `always`, `unless-stopped`, `on-failure`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub maximum_retry_count: i64,
}

/// `HostConfig` of a create request / inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub binds: Vec<String>,
    #[serde(default)]
    pub network_mode: String,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cap_add: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cap_drop: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub group_add: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tmpfs: BTreeMap<String, String>,
    #[serde(default)]
    pub init: Option<bool>,
    #[serde(default)]
    pub memory: i64,
    #[serde(default)]
    pub memory_swap: i64,
    #[serde(default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub cpu_shares: i64,
    #[serde(default)]
    pub cpu_quota: i64,
    #[serde(default)]
    pub cpu_period: i64,
    #[serde(default)]
    pub pids_limit: Option<i64>,
    #[serde(default)]
    pub memory_reservation: i64,
    #[serde(default)]
    pub cpuset_cpus: String,
    #[serde(default)]
    pub cpuset_mems: String,
    #[serde(default)]
    pub blkio_weight: i64,
    /// Filled in at create: `json-file` when not given.
    #[serde(default)]
    pub log_config: LogConfig,
    /// Always `runc` (the engine's one runtime, as dockerd names its default).
    #[serde(default)]
    pub runtime: String,
    /// Legacy links (`--link name:alias`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub links: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub security_opt: Vec<String>,
    /// `--device` mappings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Vec<crate::runtime::DeviceMapping>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub mounts: Vec<MountRequest>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `HostConfig.LogConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "Config", default, deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
}

/// One entry of `HostConfig.Mounts` (`docker run --mount`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountRequest {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `TmpfsOptions` of a mount request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TmpfsOptions {
    #[serde(default)]
    pub size_bytes: i64,
    #[serde(default)]
    pub mode: u32,
}

/// A resolved mount of a container (inspect's `Mounts`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name (volumes only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Host path (binds, volume mount points).
    pub source: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
    /// Anonymous volume: removed with the container by `rm -v`.
    #[serde(default, skip_serializing)]
    pub anonymous: bool,
    /// tmpfs mount data (`size=...,mode=...`).
    #[serde(default, skip_serializing)]
    pub data: String,
}

/// Treats JSON `null` like a missing field (the CLI sends both).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Lifecycle states, as Docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// `State` of inspect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            status: Status::Created,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Everything persisted about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// With the leading `/`, as Docker reports it.
    pub name: String,
    pub created: String,
    /// The program and its arguments (entrypoint + cmd, resolved).
    pub path: String,
    pub args: Vec<String>,
    pub config: Config,
    pub host_config: HostConfig,
    /// `sha256:...` of the image.
    pub image_id: String,
    pub state: State,
    pub restart_count: i64,
    /// Image layer dirs (lowest first), fixed at create time.
    pub layers: Vec<PathBuf>,
    /// Binds, volumes and tmpfs mounts, resolved at create time.
    #[serde(default)]
    pub mounts: Vec<MountPoint>,
    /// Whether the last stop was asked for (`stop`, `kill`): restart
    /// policies other than `always` do not restart then.
    #[serde(default)]
    pub manually_stopped: bool,
}

impl Container {
    /// The name without the leading `/`.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches('/')
    }
}
