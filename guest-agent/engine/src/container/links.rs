//! Legacy links (`--link name:alias`), as dockerd keeps them: stored in
//! `HostConfig.Links` as `/child:/parent/alias`; at start the parent gets
//! the child's address in `/etc/hosts` and dockerd's `ALIAS_*` variables
//! (`daemon/links/links.go`); `rm --link /parent/alias` drops one.

use super::{Container, Status};
use crate::{Engine, Error, Result};

/// What a container's links add at start.
#[derive(Debug, Default)]
pub(super) struct LinkSettings {
    pub env: Vec<String>,
    /// `/etc/hosts` lines.
    pub hosts: String,
}

/// Splits `name:alias`, `name` (the alias is the name) or the stored
/// `/name:/parent/alias` into the child's name and the alias.
fn parse(link: &str) -> Result<(&str, &str)> {
    let (name, alias) = link.split_once(':').unwrap_or((link, link));
    let name = name.trim_start_matches('/');
    let alias = alias.rsplit('/').next().unwrap_or(alias);
    if name.is_empty() || alias.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "invalid link {link:?}: expected name:alias"
        )));
    }
    Ok((name, alias))
}

/// dockerd's `Link.ToEnv` for a child at `ip` exposing `ports` (`80/tcp`).
fn env_vars(
    alias: &str,
    name: &str,
    ip: &str,
    ports: &[String],
    child_env: &[String],
) -> Vec<String> {
    let prefix = alias.to_ascii_uppercase().replace('-', "_");
    let mut ports: Vec<(u16, String)> = ports
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            Some((port.parse().ok()?, proto.to_ascii_lowercase()))
        })
        .collect();
    // TCP first, then by number, as dockerd sorts them.
    ports.sort_by(|(a, pa), (b, pb)| (pa != "tcp", pa, a).cmp(&(pb != "tcp", pb, b)));
    let mut env = Vec::new();
    let mut start: Option<(u16, &str)> = None;
    let mut end: Option<(u16, &str)> = None;
    for (i, (port, proto)) in ports.iter().enumerate() {
        if i == 0 {
            env.push(format!("{prefix}_PORT={proto}://{ip}:{port}"));
            start = Some((*port, proto));
            end = start;
        }
        let var = format!("{prefix}_PORT_{port}_{}", proto.to_ascii_uppercase());
        env.push(format!("{var}={proto}://{ip}:{port}"));
        env.push(format!("{var}_ADDR={ip}"));
        env.push(format!("{var}_PORT={port}"));
        env.push(format!("{var}_PROTO={proto}"));
        if let Some((end_port, end_proto)) = end
            && u32::from(*port) == u32::from(end_port) + 1
            && proto == end_proto
        {
            end = Some((*port, proto));
            if i < ports.len() - 1 {
                continue;
            }
        }
        if let (Some((s, sp)), Some((e, ep))) = (start, end)
            && (s, sp) != (e, ep)
        {
            let var = format!("{prefix}_PORT_{s}_{}", sp.to_ascii_uppercase());
            env.push(format!("{var}_START={sp}://{ip}:{s}"));
            env.push(format!("{var}_PORT_START={s}"));
            env.push(format!("{var}_END={ep}://{ip}:{e}"));
            env.push(format!("{var}_PORT_END={e}"));
        }
        start = Some((*port, proto));
        end = start;
    }
    env.push(format!("{prefix}_NAME={name}"));
    for entry in child_env {
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        if key != "HOME" && key != "PATH" {
            env.push(format!("{prefix}_ENV_{key}={value}"));
        }
    }
    env
}

impl Engine {
    /// Checks `--link` values of a container named `parent` (with its `/`)
    /// and returns them in dockerd's stored form, `/child:/parent/alias`.
    pub(super) fn resolve_links(&self, parent: &str, links: &[String]) -> Result<Vec<String>> {
        links
            .iter()
            .map(|link| {
                let (child, alias) = parse(link)?;
                let entry = self.containers.find(child).map_err(|_| {
                    Error::InvalidArgument(format!("could not get container for {child}"))
                })?;
                let record = entry.snapshot();
                if record.host_config.network_mode == "host" {
                    return Err(Error::InvalidArgument(
                        "conflicting options: host type networking can't be used with links. This would result in undefined behavior".into(),
                    ));
                }
                Ok(format!("{}:{parent}/{alias}", record.name))
            })
            .collect()
    }

    /// The environment and `/etc/hosts` lines `record`'s links give it at
    /// start: each linked container must be running.
    pub(super) async fn link_settings(&self, record: &Container) -> Result<LinkSettings> {
        let mut settings = LinkSettings::default();
        for link in &record.host_config.links {
            let (child, alias) = parse(link)?;
            let name = format!("{}/{alias}", record.name);
            let entry = self.containers.find(child).map_err(|_| {
                Error::Conflict(format!("Cannot link to /{child}, as it does not exist"))
            })?;
            let linked = entry.snapshot();
            if !matches!(linked.state.status, Status::Running | Status::Paused) {
                return Err(Error::Conflict(format!(
                    "Cannot link to a non running container: {} AS {name}",
                    linked.name
                )));
            }
            let networks = self.networks.settings(&linked.id).await;
            let Some(endpoint) = networks
                .get("bridge")
                .or_else(|| networks.values().next())
                .filter(|e| !e.ip_address.is_empty())
            else {
                continue;
            };
            let ip = endpoint.ip_address.as_str();
            let ports: Vec<String> = linked
                .config
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            settings
                .env
                .extend(env_vars(alias, &name, ip, &ports, &linked.config.env));
            let short = linked.short_name();
            let mut names = format!("{alias} {}", linked.config.hostname);
            if alias != short {
                names.push(' ');
                names.push_str(short);
            }
            settings.hosts.push_str(&format!("{ip}\t{names}\n"));
        }
        Ok(settings)
    }

    /// `DELETE /containers/{parent}/{alias}?link=1`: drops one link.
    pub fn remove_link(&self, link_name: &str) -> Result<()> {
        let link_name = format!("/{}", link_name.trim_start_matches('/'));
        let Some((parent, alias)) = link_name.rsplit_once('/').filter(|(p, _)| !p.is_empty())
        else {
            return Err(Error::Conflict(
                "Conflict, cannot remove the default link name of the container".into(),
            ));
        };
        let entry = self.containers.find(parent).map_err(|_| {
            Error::NoSuchContainer(format!(
                "Cannot get parent {parent} for link name {link_name}"
            ))
        })?;
        let removed = {
            let mut record = entry.lock();
            let before = record.host_config.links.len();
            record
                .host_config
                .links
                .retain(|l| parse(l).map_or(true, |(_, a)| a != alias));
            before != record.host_config.links.len()
        };
        if !removed {
            return Err(Error::NoSuchContainer(link_name));
        }
        entry.persist()
    }
}

/// Link names (`/parent/alias`) under which `child` (a name with its `/`)
/// is known, for `docker ps`'s `Names`.
pub fn link_names(records: &[Container], child: &str) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| r.host_config.links.iter())
        .filter_map(|l| {
            let (child_name, parent_alias) = l.split_once(':')?;
            (child_name == child).then(|| parent_alias.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_cli_and_stored_forms() {
        assert_eq!(parse("db:alias").unwrap(), ("db", "alias"));
        assert_eq!(parse("db").unwrap(), ("db", "db"));
        assert_eq!(parse("/db:/web/alias").unwrap(), ("db", "alias"));
        assert!(parse(":x").is_err());
    }

    #[test]
    fn env_vars_match_dockerd() {
        let env = env_vars(
            "my-db",
            "/web/my-db",
            "172.17.0.2",
            &["5432/tcp".into(), "53/udp".into(), "5433/tcp".into()],
            &["PATH=/bin".into(), "FOO=bar".into()],
        );
        assert_eq!(env[0], "MY_DB_PORT=tcp://172.17.0.2:5432");
        for expected in [
            "MY_DB_PORT_5432_TCP=tcp://172.17.0.2:5432",
            "MY_DB_PORT_5432_TCP_ADDR=172.17.0.2",
            "MY_DB_PORT_5432_TCP_PORT=5432",
            "MY_DB_PORT_5432_TCP_PROTO=tcp",
            "MY_DB_PORT_5432_TCP_START=tcp://172.17.0.2:5432",
            "MY_DB_PORT_5432_TCP_PORT_END=5433",
            "MY_DB_PORT_53_UDP_PROTO=udp",
            "MY_DB_NAME=/web/my-db",
            "MY_DB_ENV_FOO=bar",
        ] {
            assert!(env.contains(&expected.to_owned()), "{expected} in {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("MY_DB_ENV_PATH")));
    }
}
