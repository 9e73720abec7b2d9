//! `docker update`: new resource limits and restart policy for a container,
//! stored in its record and, while it runs, written to its cgroup at once
//! (dockerd's `ContainerUpdate` / `UpdateContainer`).

use super::spec::limits;
use super::{HostConfig, Status, validate};
use crate::{Engine, Error, Result};

fn cannot_update(id: &str, message: impl std::fmt::Display) -> Error {
    Error::Conflict(format!("Cannot update container {id}: {message}"))
}

/// Applies the non-zero resource fields and the restart policy (when named)
/// of `update` to `current`, as dockerd's `UpdateContainer` does.
fn merge(id: &str, current: &HostConfig, update: &HostConfig) -> Result<HostConfig> {
    let conflict =
        |message: &str| Err(cannot_update(id, format!("Conflicting options: {message}")));
    if update.nano_cpus > 0 && current.cpu_period > 0 {
        return conflict("Nano CPUs cannot be updated as CPU Period has already been set");
    }
    if update.nano_cpus > 0 && current.cpu_quota > 0 {
        return conflict("Nano CPUs cannot be updated as CPU Quota has already been set");
    }
    if update.cpu_period > 0 && current.nano_cpus > 0 {
        return conflict("CPU Period cannot be updated as NanoCPUs has already been set");
    }
    if update.cpu_quota > 0 && current.nano_cpus > 0 {
        return conflict("CPU Quota cannot be updated as NanoCPUs has already been set");
    }
    let mut next = current.clone();
    let set = |field: &mut i64, value: i64| {
        if value != 0 {
            *field = value;
        }
    };
    set(&mut next.blkio_weight, update.blkio_weight);
    set(&mut next.cpu_shares, update.cpu_shares);
    set(&mut next.nano_cpus, update.nano_cpus);
    set(&mut next.cpu_period, update.cpu_period);
    set(&mut next.cpu_quota, update.cpu_quota);
    if !update.cpuset_cpus.is_empty() {
        next.cpuset_cpus.clone_from(&update.cpuset_cpus);
    }
    if !update.cpuset_mems.is_empty() {
        next.cpuset_mems.clone_from(&update.cpuset_mems);
    }
    if update.memory != 0 {
        if current.memory_swap > 0 && update.memory > current.memory_swap && update.memory_swap == 0
        {
            return Err(cannot_update(
                id,
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
            ));
        }
        next.memory = update.memory;
    }
    set(&mut next.memory_swap, update.memory_swap);
    set(&mut next.memory_reservation, update.memory_reservation);
    if update.pids_limit.is_some() {
        next.pids_limit = update.pids_limit;
    }
    if !update.restart_policy.name.is_empty() {
        if current.auto_remove && update.restart_policy.name != "no" {
            return Err(cannot_update(
                id,
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }
        next.restart_policy = update.restart_policy.clone();
    }
    Ok(next)
}

impl Engine {
    /// `POST /containers/{id}/update`: validates like dockerd, stores the
    /// new settings and applies the limits to a running container's
    /// cgroup (restoring the record if the kernel refuses them).
    pub fn update_container(&self, key: &str, update: &HostConfig) -> Result<()> {
        validate::resources(update, true)?;
        if !update.restart_policy.name.is_empty() {
            validate::restart_policy(&update.restart_policy)?;
        }
        let entry = self.containers.find(key)?;
        let (id, previous, next, running) = {
            let mut record = entry.lock();
            let id = record.id.clone();
            if matches!(record.state.status, Status::Removing | Status::Dead) {
                return Err(cannot_update(
                    &id,
                    "container is marked for removal and cannot be \"update\"",
                ));
            }
            let next = merge(&id, &record.host_config, update)?;
            validate::resources(&next, true)?;
            let previous = std::mem::replace(&mut record.host_config, next.clone());
            let running = matches!(record.state.status, Status::Running | Status::Paused);
            (id, previous, next, running)
        };
        if running && let Err(err) = self.cgroups.apply(&id, &limits(&next)) {
            entry.lock().host_config = previous;
            return Err(cannot_update(&id, err));
        }
        entry.persist()?;
        self.publish_container("update", &entry.snapshot());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_zero_fields_and_sets_the_rest() {
        let current = HostConfig {
            memory: 400 << 20,
            memory_swap: 800 << 20,
            cpu_shares: 512,
            ..HostConfig::default()
        };
        let update = HostConfig {
            memory: 300 << 20,
            pids_limit: Some(50),
            ..HostConfig::default()
        };
        let next = merge("c", &current, &update).unwrap();
        assert_eq!(next.memory, 300 << 20);
        assert_eq!(next.memory_swap, 800 << 20);
        assert_eq!(next.cpu_shares, 512);
        assert_eq!(next.pids_limit, Some(50));
    }

    #[test]
    fn merge_refuses_what_dockerd_refuses() {
        let current = HostConfig {
            memory: 64 << 20,
            memory_swap: 128 << 20,
            nano_cpus: 1_000_000_000,
            auto_remove: true,
            ..HostConfig::default()
        };
        let raise = HostConfig {
            memory: 256 << 20,
            ..HostConfig::default()
        };
        assert!(merge("c", &current, &raise).is_err());
        let period = HostConfig {
            cpu_period: 50_000,
            ..HostConfig::default()
        };
        assert!(merge("c", &current, &period).is_err());
        let mut always = HostConfig::default();
        always.restart_policy.name = "always".into();
        assert!(merge("c", &current, &always).is_err());
    }
}
