//! Creating and renaming containers: the record built from the request
//! and the image's config.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::mounts::split_bind;
use super::spec::capabilities;
use super::store::{Entry, new_id, now};
use super::{Config, Container, HostConfig, State, names, signal, validate};
use crate::{Engine, Error, Result};

/// Merges `KEY=value` lists; later entries replace earlier ones with the same key.
pub(super) fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let mut out: Vec<String> = base.to_vec();
    for entry in overrides {
        let k = key(entry);
        if let Some(existing) = out.iter_mut().find(|e| key(e) == k) {
            existing.clone_from(entry);
        } else {
            out.push(entry.clone());
        }
    }
    out
}

/// `Config.MacAddress` (before API 1.44) becomes the primary endpoint's
/// `MacAddress`, as dockerd migrates it, unless that endpoint names one.
fn legacy_mac_address(config: &Config, host: &mut HostConfig) {
    let Some(mac) = config
        .extra
        .get("MacAddress")
        .and_then(serde_json::Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return;
    };
    let network = match host.network_mode.as_str() {
        "" | "default" => "bridge".to_owned(),
        other => other.to_owned(),
    };
    let networking = host
        .extra
        .entry("NetworkingConfig")
        .or_insert_with(|| serde_json::json!({}));
    if !networking.is_object() {
        *networking = serde_json::json!({});
    }
    let endpoints = networking
        .as_object_mut()
        .expect("made an object above")
        .entry("EndpointsConfig")
        .or_insert_with(|| serde_json::json!({}));
    if !endpoints.is_object() {
        *endpoints = serde_json::json!({});
    }
    let endpoint = endpoints
        .as_object_mut()
        .expect("made an object above")
        .entry(network)
        .or_insert_with(|| serde_json::json!({}));
    if let Some(endpoint) = endpoint.as_object_mut()
        && endpoint
            .get("MacAddress")
            .and_then(serde_json::Value::as_str)
            .is_none_or(str::is_empty)
    {
        endpoint.insert("MacAddress".into(), mac.into());
    }
}

impl Engine {
    /// Creates a container from a Docker create request.
    pub fn create_container(
        &self,
        name: Option<&str>,
        mut config: Config,
        mut host: HostConfig,
    ) -> Result<Container> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => {
                names::validate(name).map_err(Error::InvalidArgument)?;
                format!("/{}", name.trim_start_matches('/'))
            }
            None => loop {
                let candidate = format!("/{}", names::random());
                if self.containers.name_owner(&candidate).is_none() {
                    break candidate;
                }
            },
        };
        if let Some(owner) = self.containers.name_owner(&name) {
            return Err(Error::Conflict(format!(
                "Conflict. The container name \"{name}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        let image = self.images.get(&config.image)?;
        let image_config = &image.config.config;
        config.env = merge_env(image_config.env.as_deref().unwrap_or_default(), &config.env);
        if config.working_dir.is_empty() {
            config.working_dir.clone_from(&image_config.working_dir);
        }
        if config.user.is_empty() {
            config.user.clone_from(&image_config.user);
        }
        let mut labels = image_config.labels.clone().unwrap_or_default();
        labels.extend(std::mem::take(&mut config.labels));
        config.labels = labels;
        if config.stop_signal.is_none() {
            config.stop_signal.clone_from(&image_config.stop_signal);
        }
        if config.healthcheck.is_none() {
            config.healthcheck.clone_from(&image_config.healthcheck);
        }
        if let Some(stop_signal) = &config.stop_signal {
            signal::parse(stop_signal).map_err(Error::InvalidArgument)?;
        }
        // Docker: an explicit entrypoint discards the image's CMD.
        let entrypoint_given = config.entrypoint.is_some();
        let entrypoint = config
            .entrypoint
            .clone()
            .unwrap_or_else(|| image_config.entrypoint.clone().unwrap_or_default());
        let cmd = match &config.cmd {
            Some(cmd) if !cmd.is_empty() => cmd.clone(),
            _ if entrypoint_given => Vec::new(),
            _ => image_config.cmd.clone().unwrap_or_default(),
        };
        if config.cmd.as_ref().is_none_or(Vec::is_empty) && !entrypoint_given {
            config.cmd = image_config.cmd.clone();
        }
        if config.entrypoint.is_none() {
            config.entrypoint = image_config.entrypoint.clone();
        }
        let mut argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if argv.is_empty() {
            return Err(Error::InvalidArgument("no command specified".into()));
        }
        for bind in &host.binds {
            split_bind(bind)?;
        }
        crate::runtime::confinement(&host, &capabilities(&host)?)?;
        match host.network_mode.as_str() {
            "" | "default" | "bridge" | "none" | "host" => {}
            mode if mode.starts_with("container:") => {}
            other => {
                self.networks.lookup(other)?;
            }
        }
        validate::restart_policy(&host.restart_policy)?;
        validate::log_config(&mut host)?;
        validate::resources(&host, false)?;
        match host.runtime.as_str() {
            "" | "runc" => host.runtime = "runc".into(),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "Unknown runtime specified {other}"
                )));
            }
        }
        host.links = self.resolve_links(&name, &host.links)?;
        // dockerd's default: as much swap again as memory.
        if host.memory > 0 && host.memory_swap == 0 {
            host.memory_swap = host.memory * 2;
        }
        legacy_mac_address(&config, &mut host);
        if host.auto_remove && !matches!(host.restart_policy.name.as_str(), "" | "no") {
            return Err(Error::InvalidArgument(
                "can't create 'AutoRemove' container with restart policy".into(),
            ));
        }
        let image_volumes: Vec<String> = image_config
            .volumes
            .iter()
            .flat_map(|v| v.keys().cloned())
            .collect();
        // Last fallible step before the record exists: it creates volumes.
        let mounts = self.resolve_mounts(&config, &host, &image_volumes)?;
        let id = new_id();
        if config.hostname.is_empty() {
            config.hostname = id[..12].to_owned();
        }
        let path = argv.remove(0);
        let record = Container {
            id: id.clone(),
            name,
            created: now(),
            path,
            args: argv,
            config,
            host_config: host,
            image_id: image.id.clone(),
            state: State::default(),
            restart_count: 0,
            layers: image.layer_dirs.clone(),
            mounts,
            manually_stopped: false,
        };
        let dir = self.root.join("containers").join(&id);
        for sub in ["", "upper", "work", "rootfs", "empty"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(Error::io("create", &path))?;
        }
        let entry = Arc::new(Entry::new(record.clone(), dir));
        entry.persist()?;
        self.containers.lock().insert(id.clone(), entry);
        self.publish_container("create", &record);
        Ok(record)
    }

    /// Renames a container.
    pub fn rename_container(&self, key: &str, new_name: &str) -> Result<()> {
        names::validate(new_name).map_err(Error::InvalidArgument)?;
        let entry = self.containers.find(key)?;
        let name = format!("/{}", new_name.trim_start_matches('/'));
        if let Some(owner) = self.containers.name_owner(&name) {
            return Err(Error::Conflict(format!(
                "Conflict. The container name \"{name}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        let old = std::mem::replace(&mut entry.lock().name, name);
        entry.persist()?;
        self.publish_container_with(
            "rename",
            &entry.snapshot(),
            BTreeMap::from([("oldName".to_owned(), old)]),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_env_overrides_by_key() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
    }
}
