//! What the engine tells a runtime helper to do.
//!
//! The engine writes a [`ContainerSpec`] (or an [`ExecSpec`]) as JSON into
//! the container's directory and re-executes the agent binary as a helper
//! that reads it. The specs are fully resolved: no image lookups, no
//! defaults left to apply, so the helper only performs system calls.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The process to execute inside the container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in `PATH` from `env` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory inside the container; created if missing.
    pub cwd: String,
    /// `user`, `uid`, `user:group`, `uid:gid`; resolved inside the container
    /// against its `/etc/passwd` and `/etc/group`. Empty means root.
    pub user: String,
    /// Extra groups (`--group-add`), names or numbers.
    #[serde(default)]
    pub additional_groups: Vec<String>,
    /// Whether fds 0-2 are a terminal (the helper makes it the controlling tty).
    pub tty: bool,
    /// Capabilities kept, as `CAP_*` names.
    pub capabilities: Vec<String>,
    /// Sets `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privileges: bool,
    /// Seccomp filters to install last before `execve`; `None` is unconfined.
    #[serde(default)]
    pub seccomp: Option<super::seccomp::Program>,
}

/// How the container's network namespace is obtained.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NetworkSpec {
    /// A new namespace with only `lo` (up).
    #[default]
    None,
    /// The engine's own namespace.
    Host,
    /// Join an existing namespace (bind-mounted at this path by the engine).
    Join { path: PathBuf },
}

/// One mount to set up inside the container, applied in order after the
/// root file system, `/proc`, `/dev` and `/sys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub destination: String,
    /// `bind`, `tmpfs`, ...
    pub kind: String,
    /// Host path for binds; the fs source otherwise.
    pub source: String,
    /// Extra mount data (e.g. `size=64m,mode=1777` for tmpfs).
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub readonly: bool,
    /// For volumes: when the source is empty and the image has content at
    /// the destination, copy that content into the source first.
    #[serde(default)]
    pub copy_up: bool,
}

/// The overlay root of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// Image layer directories, lowest first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Mount point (inside the container's directory).
    pub target: PathBuf,
    pub readonly: bool,
}

/// Everything a container start needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: String,
    pub hostname: String,
    pub rootfs: RootfsSpec,
    pub network: NetworkSpec,
    /// `cgroup.procs` files to join before creating namespaces.
    pub cgroup_procs: Vec<PathBuf>,
    /// Mount a cgroup2 file system at `/sys/fs/cgroup` (cgroup v2 hosts).
    pub cgroup2: bool,
    pub mounts: Vec<MountSpec>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub privileged: bool,
    /// Device nodes to create and the device cgroup (applied by the engine).
    #[serde(default)]
    pub devices: super::confine::DeviceSpec,
    /// Run a minimal init (signal forwarding, zombie reaping) as PID 1.
    pub init: bool,
    pub process: ProcessSpec,
}

/// Everything an exec needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Host pid of the container's init: its namespaces are joined.
    pub target_pid: i32,
    pub cgroup_procs: Vec<PathBuf>,
    pub process: ProcessSpec,
}

/// What a helper reports on its sync pipe (fd 3), one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Report {
    /// The container (or exec) process exists with this host pid.
    Pid { pid: i32 },
    /// Setting up or executing the process failed; `code` is the exit code
    /// Docker gives this failure (125 setup, 126 not executable, 127 not found).
    Error { message: String, code: i32 },
}

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
