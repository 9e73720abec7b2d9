//! `docker network connect` / `disconnect` as container operations.
//!
//! Docker keeps a container's endpoints in its record, so a connect made
//! while the container is stopped (compose does this between create and
//! start) applies at the next start, and a connect made while it runs
//! survives a restart. The record's `NetworkingConfig.EndpointsConfig` is
//! that list; [`crate::network::AttachRequest::from_api`] reads it at start.

use serde_json::{Map, Value, json};

use super::{Entry, Status};
use crate::network::EndpointRequest;
use crate::{Engine, Result};

impl Engine {
    /// Connects a container to a network: recorded for later starts, and
    /// applied at once when the container runs.
    pub async fn connect_container(&self, key: &str, endpoint: EndpointRequest) -> Result<()> {
        let entry = self.container(key)?;
        let network = self.networks.lookup(&endpoint.network)?;
        let (id, hostname, live) = {
            let record = entry.lock();
            (
                record.id.clone(),
                record.config.hostname.clone(),
                is_live(record.state.status),
            )
        };
        if live {
            self.networks
                .connect(&id, &hostname, endpoint.clone())
                .await?;
        }
        let mut config = json!({});
        if !endpoint.aliases.is_empty() {
            config["Aliases"] = json!(endpoint.aliases);
        }
        if let Some(ip) = endpoint.ipv4_address {
            config["IPAMConfig"] = json!({ "IPv4Address": ip.to_string() });
        }
        if let Some(mac) = &endpoint.mac_address {
            config["MacAddress"] = json!(mac);
        }
        if !endpoint.links.is_empty() {
            config["Links"] = json!(endpoint.links);
        }
        update_endpoints(&entry, |endpoints| {
            endpoints.insert(network.name.clone(), config);
        })
    }

    /// Disconnects a container from a network, now and for later starts.
    pub async fn disconnect_container(&self, key: &str, network: &str) -> Result<()> {
        let entry = self.container(key)?;
        let record = self.networks.lookup(network)?;
        let (id, live) = {
            let r = entry.lock();
            (r.id.clone(), is_live(r.state.status))
        };
        if live {
            self.networks.disconnect(&id, &record.name).await?;
        } else if !self.recorded_on(&entry, &record.name, &record.id) {
            return Err(crate::Error::InvalidArgument(format!(
                "container {id} is not connected to network {}",
                record.name
            )));
        }
        update_endpoints(&entry, |endpoints| {
            endpoints.remove(&record.name);
            endpoints.remove(&record.id);
        })
    }

    /// Whether a stopped container would join `name` at its next start.
    fn recorded_on(&self, entry: &Entry, name: &str, id: &str) -> bool {
        let record = entry.lock();
        let mode = record.host_config.network_mode.as_str();
        let default = crate::network::DEFAULT_NETWORK;
        let mode_matches = match mode {
            "" | "default" => name == default,
            m => m == name || m == id,
        };
        mode_matches
            || record
                .host_config
                .extra
                .get("NetworkingConfig")
                .and_then(|n| n.get("EndpointsConfig"))
                .and_then(Value::as_object)
                .is_some_and(|e| e.contains_key(name) || e.contains_key(id))
    }
}

fn is_live(status: Status) -> bool {
    matches!(
        status,
        Status::Running | Status::Paused | Status::Restarting
    )
}

/// Edits the record's `NetworkingConfig.EndpointsConfig` map and persists.
fn update_endpoints(entry: &Entry, edit: impl FnOnce(&mut Map<String, Value>)) -> Result<()> {
    {
        let mut record = entry.lock();
        let networking = record
            .host_config
            .extra
            .entry("NetworkingConfig".to_owned())
            .or_insert_with(|| json!({}));
        if !networking.is_object() {
            *networking = json!({});
        }
        let endpoints = networking
            .as_object_mut()
            .expect("invariant: just made an object")
            .entry("EndpointsConfig")
            .or_insert_with(|| json!({}));
        if !endpoints.is_object() {
            *endpoints = json!({});
        }
        edit(
            endpoints
                .as_object_mut()
                .expect("invariant: just made an object"),
        );
    }
    entry.persist()
}
