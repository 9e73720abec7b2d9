//! Cgroups: one group per container, limits from HostConfig, freezing for
//! pause, and statistics.
//!
//! Inside the VM the hierarchy is pure cgroup v2 (mounted by the guest's
//! init). Natively, a host may only have v1 controllers: this machine keeps
//! memory, pids, cpu and freezer in v1 hierarchies under `/sys/fs/cgroup/<c>`
//! and a v2 mount at `/sys/fs/cgroup/unified` that holds only hugetlb. The
//! engine detects which it has once, at start-up, and [`Cgroups`] hides the
//! difference.

use std::path::{Path, PathBuf};

use crate::runtime::devices::{self, DeviceCgroup};
use crate::{Error, Result};

const ROOT: &str = "/sys/fs/cgroup";
/// The parent group of every container, like Docker's `/docker`.
const PARENT: &str = "berth";

/// Limits applied to a container's group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes; 0 means no limit.
    pub memory: i64,
    /// Bytes of memory+swap; 0 means unset, -1 unlimited swap.
    pub memory_swap: i64,
    /// Maximum number of tasks; 0 or negative means no limit.
    pub pids: i64,
    /// CPU quota in nano-CPUs (`--cpus 1.5` is 1.5e9); 0 means none.
    pub nano_cpus: i64,
    /// CFS quota and period in microseconds (`--cpu-quota/--cpu-period`).
    pub cpu_quota: i64,
    pub cpu_period: i64,
    /// Relative weight (`--cpu-shares`, 2..262144); 0 means default.
    pub cpu_shares: i64,
}

/// Which hierarchy layout this host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Unified hierarchy mounted at the root.
    V2,
    /// Per-controller v1 hierarchies.
    V1,
}

/// The cgroup manager.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
}

/// The v1 controllers berth uses.
const V1_CONTROLLERS: [&str; 6] = ["memory", "pids", "cpu", "cpuacct", "freezer", "devices"];

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(Error::io("write cgroup file", path))
}

impl Cgroups {
    /// Detects the host's layout.
    pub fn detect() -> Self {
        let v2 = Path::new(ROOT).join("cgroup.controllers").exists();
        Self {
            layout: if v2 { Layout::V2 } else { Layout::V1 },
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `1` or `2`, as `docker info` reports it.
    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V2 => "2",
            Layout::V1 => "1",
        }
    }

    /// Directories of the container's group, one per hierarchy.
    pub fn dirs(&self, id: &str) -> Vec<PathBuf> {
        match self.layout {
            Layout::V2 => vec![Path::new(ROOT).join(PARENT).join(id)],
            Layout::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c))
                .filter(|p| p.is_dir())
                .map(|p| p.join(PARENT).join(id))
                .collect(),
        }
    }

    /// Creates the container's group(s) and applies `limits` and the
    /// device rules `devices`. On failure nothing is left behind.
    pub fn create(&self, id: &str, limits: &Limits, devices: &DeviceCgroup) -> Result<()> {
        let result = self.create_inner(id, limits, devices);
        if result.is_err() {
            self.remove(id);
        }
        result
    }

    fn create_inner(&self, id: &str, limits: &Limits, devices: &DeviceCgroup) -> Result<()> {
        if self.layout == Layout::V2 {
            let parent = Path::new(ROOT).join(PARENT);
            std::fs::create_dir_all(&parent).map_err(Error::io("create cgroup", &parent))?;
            // Delegate the controllers we use to the parent's children.
            for root in [Path::new(ROOT), parent.as_path()] {
                let control = root.join("cgroup.subtree_control");
                for controller in ["+memory", "+pids", "+cpu"] {
                    // A controller the kernel lacks is not fatal; its limit is.
                    let _ = std::fs::write(&control, controller);
                }
            }
        }
        for dir in self.dirs(id) {
            std::fs::create_dir_all(&dir).map_err(Error::io("create cgroup", &dir))?;
        }
        self.apply(id, limits)?;
        self.set_devices(id, devices)
    }

    /// Restricts the devices the container's tasks may open or create.
    fn set_devices(&self, id: &str, devices: &DeviceCgroup) -> Result<()> {
        let failed = |e: std::io::Error| Error::Runtime {
            context: format!("setting up the device cgroup of {id}: {e}"),
            source: None,
        };
        match self.layout {
            Layout::V2 => {
                if devices.allow_all {
                    return Ok(());
                }
                let dir = Path::new(ROOT).join(PARENT).join(id);
                devices::attach_v2(&dir, &devices.allow).map_err(failed)
            }
            Layout::V1 => {
                let dir = Path::new(ROOT).join("devices").join(PARENT).join(id);
                if !dir.is_dir() {
                    return Err(Error::Runtime {
                        context: format!(
                            "the host has no cgroup v1 devices controller ({} is missing)",
                            dir.display()
                        ),
                        source: None,
                    });
                }
                devices::apply_v1(&dir, devices).map_err(failed)
            }
        }
    }

    /// Writes `limits` into the container's group(s).
    pub fn apply(&self, id: &str, limits: &Limits) -> Result<()> {
        match self.layout {
            Layout::V2 => {
                let dir = Path::new(ROOT).join(PARENT).join(id);
                if limits.memory > 0 {
                    write(&dir.join("memory.max"), &limits.memory.to_string())?;
                    // Docker: --memory without --memory-swap allows as much swap again.
                    let swap = match limits.memory_swap {
                        0 => limits.memory,
                        -1 => -1,
                        total => (total - limits.memory).max(0),
                    };
                    let swap = if swap < 0 {
                        "max".to_owned()
                    } else {
                        swap.to_string()
                    };
                    let _ = std::fs::write(dir.join("memory.swap.max"), swap);
                }
                if limits.pids > 0 {
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                }
                if let Some((quota, period)) = cpu_quota(limits) {
                    write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                }
                if limits.cpu_shares > 0 {
                    // The same conversion runc uses from shares to weight.
                    let weight = 1 + ((limits.cpu_shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                    write(&dir.join("cpu.weight"), &weight.to_string())?;
                }
            }
            Layout::V1 => {
                let dir = |c: &str| Path::new(ROOT).join(c).join(PARENT).join(id);
                if limits.memory > 0 {
                    write(
                        &dir("memory").join("memory.limit_in_bytes"),
                        &limits.memory.to_string(),
                    )?;
                }
                if limits.pids > 0 {
                    write(&dir("pids").join("pids.max"), &limits.pids.to_string())?;
                }
                if let Some((quota, period)) = cpu_quota(limits) {
                    write(&dir("cpu").join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir("cpu").join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                if limits.cpu_shares > 0 {
                    write(
                        &dir("cpu").join("cpu.shares"),
                        &limits.cpu_shares.to_string(),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process must be written to, to join the
    /// container's group(s).
    pub fn procs_files(&self, id: &str) -> Vec<PathBuf> {
        self.dirs(id)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Freezes (pause) or thaws (unpause) every task of the container.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        match self.layout {
            Layout::V2 => {
                let file = Path::new(ROOT).join(PARENT).join(id).join("cgroup.freeze");
                write(&file, if frozen { "1" } else { "0" })
            }
            Layout::V1 => {
                let file = Path::new(ROOT)
                    .join("freezer")
                    .join(PARENT)
                    .join(id)
                    .join("freezer.state");
                write(&file, if frozen { "FROZEN" } else { "THAWED" })
            }
        }
    }

    /// Pids of every task in the container's group.
    pub fn pids(&self, id: &str) -> Vec<i32> {
        let Some(dir) = self.dirs(id).into_iter().next() else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Reads one file of the container's group in the named controller
    /// (`memory`, `pids`, `cpu`); `None` if it does not exist.
    pub fn read(&self, id: &str, controller: &str, file: &str) -> Option<String> {
        let path = match self.layout {
            Layout::V2 => Path::new(ROOT).join(PARENT).join(id).join(file),
            Layout::V1 => Path::new(ROOT)
                .join(controller)
                .join(PARENT)
                .join(id)
                .join(file),
        };
        std::fs::read_to_string(path).ok()
    }

    /// Removes the container's group(s). Kills leftover tasks first, so that
    /// nothing (and no cgroup) leaks.
    pub fn remove(&self, id: &str) {
        for pid in self.pids(id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for dir in self.dirs(id) {
            for _ in 0..50 {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        }
    }
}

/// CFS quota and period in microseconds, if any CPU limit is set.
fn cpu_quota(limits: &Limits) -> Option<(i64, i64)> {
    if limits.nano_cpus > 0 {
        let period = 100_000;
        return Some((limits.nano_cpus * period / 1_000_000_000, period));
    }
    if limits.cpu_quota > 0 {
        let period = if limits.cpu_period > 0 {
            limits.cpu_period
        } else {
            100_000
        };
        return Some((limits.cpu_quota, period));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cpus_become_cfs_quota() {
        let limits = Limits {
            nano_cpus: 1_500_000_000,
            ..Limits::default()
        };
        assert_eq!(cpu_quota(&limits), Some((150_000, 100_000)));
    }

    #[test]
    fn no_cpu_limit_means_no_quota() {
        assert_eq!(cpu_quota(&Limits::default()), None);
    }
}
