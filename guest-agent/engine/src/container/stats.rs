//! Resource usage of a running container, from its cgroup (`docker stats`).

use std::collections::BTreeMap;

use crate::cgroup::Layout;
use crate::{Engine, Result};

/// One sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub read: String,
    /// CPU time of the container, nanoseconds.
    pub cpu_total: u64,
    pub cpu_user: u64,
    pub cpu_system: u64,
    /// CPU time of the whole machine, nanoseconds.
    pub system_cpu: u64,
    pub online_cpus: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_stats: BTreeMap<String, u64>,
    pub pids: u64,
    pub pids_limit: u64,
}

/// Nanoseconds per clock tick (USER_HZ is 100 on Linux).
const TICK_NS: u64 = 10_000_000;

fn key_values(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect()
}

fn machine_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let total: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    total * TICK_NS
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Engine {
    /// Samples the container's cgroup.
    pub fn stats_sample(&self, key: &str) -> Result<Sample> {
        let entry = self.container(key)?;
        let id = entry.id();
        if entry.running_pid().is_none() {
            // Docker reports zeros for a stopped container.
            return Ok(Sample {
                read: now(),
                system_cpu: machine_cpu_ns(),
                online_cpus: online_cpus(),
                ..Sample::default()
            });
        }
        let read = |controller: &str, file: &str| self.cgroups.read(&id, controller, file);
        let num = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let mut sample = Sample {
            read: now(),
            system_cpu: machine_cpu_ns(),
            online_cpus: online_cpus(),
            ..Sample::default()
        };
        match self.cgroups.layout() {
            Layout::V2 => {
                let cpu = key_values(&read("cpu", "cpu.stat").unwrap_or_default());
                sample.cpu_total = cpu.get("usage_usec").copied().unwrap_or(0) * 1000;
                sample.cpu_user = cpu.get("user_usec").copied().unwrap_or(0) * 1000;
                sample.cpu_system = cpu.get("system_usec").copied().unwrap_or(0) * 1000;
                sample.memory_usage = num(read("memory", "memory.current")).unwrap_or(0);
                sample.memory_limit = num(read("memory", "memory.max")).unwrap_or_else(mem_total);
                sample.memory_stats =
                    key_values(&read("memory", "memory.stat").unwrap_or_default());
                sample.pids_limit = num(read("pids", "pids.max")).unwrap_or(0);
            }
            Layout::V1 => {
                sample.cpu_total = num(read("cpuacct", "cpuacct.usage")).unwrap_or(0);
                let cpu = key_values(&read("cpuacct", "cpuacct.stat").unwrap_or_default());
                sample.cpu_user = cpu.get("user").copied().unwrap_or(0) * TICK_NS;
                sample.cpu_system = cpu.get("system").copied().unwrap_or(0) * TICK_NS;
                sample.memory_usage = num(read("memory", "memory.usage_in_bytes")).unwrap_or(0);
                sample.memory_limit = num(read("memory", "memory.limit_in_bytes"))
                    .unwrap_or(0)
                    .min(mem_total());
                sample.memory_stats =
                    key_values(&read("memory", "memory.stat").unwrap_or_default());
                sample.pids_limit = num(read("pids", "pids.max")).unwrap_or(0);
            }
        }
        sample.pids = num(read("pids", "pids.current"))
            .unwrap_or_else(|| self.cgroups.pids(&id).len() as u64);
        if sample.memory_limit == 0 {
            sample.memory_limit = mem_total();
        }
        Ok(sample)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn online_cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_parses_cgroup_stat_files() {
        let kv = key_values("usage_usec 1500\nuser_usec 1000\nbad\n");
        assert_eq!(kv.get("usage_usec"), Some(&1500));
        assert_eq!(kv.len(), 2);
    }
}
