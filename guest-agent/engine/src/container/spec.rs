//! The runtime spec of a container: its mounts, network, process and limits,
//! and the `/etc` files it gets.

use std::path::PathBuf;

use super::store::Entry;
use super::{Container, DEFAULT_PATH, HostConfig};
use crate::cgroup::{Layout, Limits};
use crate::runtime::{self, ContainerSpec, MountSpec, NetworkSpec, ProcessSpec, RootfsSpec};
use crate::{Engine, Error, Result};

pub(super) fn limits(host: &HostConfig) -> Limits {
    Limits {
        memory: host.memory,
        memory_swap: host.memory_swap,
        pids: host.pids_limit.unwrap_or(0),
        nano_cpus: host.nano_cpus,
        cpu_quota: host.cpu_quota,
        cpu_period: host.cpu_period,
        cpu_shares: host.cpu_shares,
    }
}

/// The capability set: Docker's defaults, plus `--cap-add`, minus `--cap-drop`.
pub(super) fn capabilities(host: &HostConfig) -> Result<Vec<String>> {
    let normalize = |c: &str| {
        let upper = c.to_ascii_uppercase();
        if upper == "ALL" || upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let all: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    if host.privileged {
        return Ok(all);
    }
    let mut set: Vec<String> = runtime::spec::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    for cap in host.cap_add.iter().map(|c| normalize(c)) {
        if cap == "CAP_ALL" || cap == "ALL" {
            set.clone_from(&all);
        } else if all.contains(&cap) {
            set.push(cap);
        } else {
            return Err(Error::InvalidArgument(format!(
                "unknown capability: {cap:?}"
            )));
        }
    }
    for cap in host.cap_drop.iter().map(|c| normalize(c)) {
        if cap == "CAP_ALL" || cap == "ALL" {
            set.clear();
        } else {
            set.retain(|c| *c != cap);
        }
    }
    set.sort();
    set.dedup();
    Ok(set)
}

impl Engine {
    /// Writes `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for the
    /// container into its directory and returns the bind mounts for them.
    pub(super) fn etc_files(
        &self,
        entry: &Entry,
        record: &Container,
        attached: Option<&crate::network::Attached>,
    ) -> Result<Vec<MountSpec>> {
        let hostname = &record.config.hostname;
        let host_network = record.host_config.network_mode == "host";
        let hosts = if let Some(a) = attached {
            a.hosts.clone()
        } else if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
            )
        };
        let resolv = attached.map_or_else(
            || std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            |a| a.resolv_conf.clone(),
        );
        let hostname_file = if host_network {
            std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| format!("{hostname}\n"))
        } else {
            format!("{hostname}\n")
        };
        let mut mounts = Vec::new();
        for (name, content) in [
            ("hostname", hostname_file),
            ("hosts", hosts),
            ("resolv.conf", resolv),
        ] {
            let path = entry.dir.join(name);
            std::fs::write(&path, content).map_err(Error::io("write", &path))?;
            mounts.push(MountSpec {
                destination: format!("/etc/{name}"),
                kind: "bind".into(),
                source: path.display().to_string(),
                data: String::new(),
                readonly: false,
                copy_up: false,
            });
        }
        Ok(mounts)
    }

    pub(super) fn container_spec(
        &self,
        entry: &Entry,
        record: &Container,
        attached: Option<&crate::network::Attached>,
    ) -> Result<ContainerSpec> {
        let host = &record.host_config;
        let config = &record.config;
        let mut mounts = self.etc_files(entry, record, attached)?;
        for m in &record.mounts {
            mounts.push(match m.kind.as_str() {
                "tmpfs" => MountSpec {
                    destination: m.destination.clone(),
                    kind: "tmpfs".into(),
                    source: "tmpfs".into(),
                    data: m.data.clone(),
                    readonly: !m.rw,
                    copy_up: false,
                },
                kind => MountSpec {
                    destination: m.destination.clone(),
                    kind: "bind".into(),
                    source: m.source.clone(),
                    data: String::new(),
                    readonly: !m.rw,
                    copy_up: kind == "volume" && !m.mode.split(',').any(|o| o == "nocopy"),
                },
            });
        }
        let network = match host.network_mode.as_str() {
            "host" => NetworkSpec::Host,
            mode if mode.starts_with("container:") => {
                let other = self.containers.find(&mode["container:".len()..])?;
                let pid = other.running_pid().ok_or_else(|| {
                    Error::Conflict(format!(
                        "cannot join network of a non running container: {}",
                        other.id()
                    ))
                })?;
                NetworkSpec::Join {
                    path: PathBuf::from(format!("/proc/{pid}/ns/net")),
                }
            }
            _ => match attached {
                Some(a) => NetworkSpec::Join {
                    path: a.netns_path.clone(),
                },
                None => NetworkSpec::None,
            },
        };
        let mut env = config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        env.insert(0, format!("HOSTNAME={}", config.hostname));
        if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let lower = if record.layers.is_empty() {
            vec![entry.dir.join("empty")]
        } else {
            record.layers.clone()
        };
        let capabilities = capabilities(host)?;
        let confinement = runtime::confinement(host, &capabilities)?;
        Ok(ContainerSpec {
            id: record.id.clone(),
            hostname: config.hostname.clone(),
            rootfs: RootfsSpec {
                lower,
                upper: entry.dir.join("upper"),
                work: entry.dir.join("work"),
                target: entry.dir.join("rootfs"),
                readonly: host.readonly_rootfs,
            },
            network,
            cgroup_procs: self.cgroups.procs_files(&record.id),
            cgroup2: *self.cgroups.layout() == Layout::V2,
            mounts,
            masked_paths: runtime::spec::DEFAULT_MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            readonly_paths: runtime::spec::DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            privileged: host.privileged,
            devices: confinement.devices,
            init: host.init == Some(true),
            process: ProcessSpec {
                args: std::iter::once(record.path.clone())
                    .chain(record.args.iter().cloned())
                    .collect(),
                env,
                cwd: if config.working_dir.is_empty() {
                    "/".into()
                } else {
                    config.working_dir.clone()
                },
                user: config.user.clone(),
                additional_groups: host.group_add.clone(),
                tty: config.tty,
                capabilities,
                no_new_privileges: confinement.no_new_privileges,
                seccomp: confinement.seccomp,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_apply_add_and_drop() {
        let host = HostConfig {
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["CAP_CHOWN".into()],
            ..HostConfig::default()
        };
        let caps = capabilities(&host).unwrap();
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(caps.contains(&"CAP_KILL".to_owned()));
    }

    #[test]
    fn capabilities_reject_unknown_names() {
        let host = HostConfig {
            cap_add: vec!["CAP_FLY".into()],
            ..HostConfig::default()
        };
        assert!(matches!(
            capabilities(&host),
            Err(Error::InvalidArgument(_))
        ));
    }
}
