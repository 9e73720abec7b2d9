//! `/networks/...`: create, list, inspect, remove, prune, connect, disconnect.
//!
//! Only the `bridge` driver is served; `host` and `none` are listed (as
//! Docker does) and used through `HostConfig.NetworkMode`.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_engine::network::{CreateRequest, EndpointRequest, EndpointSettings, NetworkRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::containers::json_body;
use crate::routes::system::parse_filters;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

fn engine_error(e: berth_engine::network::Error) -> ApiError {
    berth_engine::Error::from(e).into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfig {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    #[serde(default)]
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    attachable: bool,
    #[serde(default, rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The Engine API `Network` object.
fn describe(record: &NetworkRecord, containers: Value) -> Value {
    let config: Vec<Value> = record
        .subnet
        .iter()
        .map(|subnet| {
            json!({
                "Subnet": subnet,
                "Gateway": record.gateway.map(|g| g.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "Name": record.name,
        "Id": record.id,
        "Created": record.created,
        "Scope": "local",
        "Driver": record.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": {}, "Config": config },
        "Internal": record.internal,
        "Attachable": record.attachable,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": record.options,
        "Labels": record.labels,
    })
}

fn describe_endpoints(endpoints: BTreeMap<String, (String, EndpointSettings)>) -> Value {
    endpoints
        .into_iter()
        .map(|(id, (name, e))| {
            let value = json!({
                "Name": name,
                "EndpointID": e.endpoint_id,
                "MacAddress": e.mac_address,
                "IPv4Address": format!("{}/{}", e.ip_address, e.ip_prefix_len),
                "IPv6Address": "",
            });
            (id, value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body: CreateBody = json_body(&body)?;
    let ipam = body
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().next())
        .unwrap_or_default();
    let record = state
        .engine
        .networks
        .create(CreateRequest {
            name: body.name,
            driver: body.driver,
            subnet: ipam.subnet,
            gateway: ipam.gateway,
            internal: body.internal,
            attachable: body.attachable,
            labels: body.labels.unwrap_or_default(),
            options: body.options.unwrap_or_default(),
        })
        .await
        .map_err(engine_error)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "Id": record.id, "Warning": "" })),
    )
        .into_response())
}

fn matches(record: &NetworkRecord, filters: &HashMap<String, Vec<String>>) -> ApiResult<bool> {
    for (key, wanted) in filters {
        if wanted.is_empty() {
            continue;
        }
        let builtin = matches!(record.name.as_str(), "bridge" | "host" | "none");
        let ok = match key.as_str() {
            "name" => wanted.iter().any(|w| record.name.contains(w.as_str())),
            "id" => wanted.iter().any(|w| record.id.starts_with(w.as_str())),
            "driver" => wanted.contains(&record.driver),
            "scope" => wanted.iter().any(|w| w == "local"),
            "type" => wanted
                .iter()
                .any(|w| (w == "builtin") == builtin && matches!(w.as_str(), "builtin" | "custom")),
            "label" => wanted.iter().all(|w| match w.split_once('=') {
                Some((k, v)) => record.labels.get(k).is_some_and(|x| x == v),
                None => record.labels.contains_key(w),
            }),
            "dangling" => true,
            other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let mut out = Vec::new();
    for record in state.engine.networks.list().await {
        if matches(&record, &filters)? {
            out.push(describe(&record, json!({})));
        }
    }
    Ok(axum::Json(out).into_response())
}

async fn inspect(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let networks = &state.engine.networks;
    let record = networks.inspect(&id).await.map_err(engine_error)?;
    let endpoints = networks.endpoints(&record.id).await.map_err(engine_error)?;
    Ok(axum::Json(describe(&record, describe_endpoints(endpoints))).into_response())
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state
        .engine
        .networks
        .remove(&id)
        .await
        .map_err(engine_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let labels = filters.get("label").cloned().unwrap_or_default();
    let deleted = state
        .engine
        .networks
        .prune(&labels)
        .await
        .map_err(engine_error)?;
    Ok(axum::Json(json!({ "NetworksDeleted": deleted })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamEndpoint {
    #[serde(default, rename = "IPv4Address")]
    ipv4_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointConfig {
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default, rename = "IPAMConfig")]
    ipam_config: Option<IpamEndpoint>,
    #[serde(default)]
    mac_address: Option<String>,
    #[serde(default)]
    links: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectBody {
    container: String,
    #[serde(default)]
    endpoint_config: Option<EndpointConfig>,
}

async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: ConnectBody = json_body(&body)?;
    let endpoint = body.endpoint_config.unwrap_or_default();
    let ipv4_address = match endpoint.ipam_config.map(|c| c.ipv4_address) {
        Some(ip) if !ip.is_empty() => Some(
            ip.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid IPv4 address {ip:?}")))?,
        ),
        _ => None,
    };
    state
        .engine
        .connect_container(
            &body.container,
            EndpointRequest {
                network: id,
                aliases: endpoint.aliases.unwrap_or_default(),
                ipv4_address,
                mac_address: endpoint
                    .mac_address
                    .filter(|m| !m.is_empty())
                    .map(|m| berth_engine::network::parse_mac(&m))
                    .transpose()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
                links: endpoint.links.unwrap_or_default(),
            },
        )
        .await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DisconnectBody {
    container: String,
}

async fn disconnect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let body: DisconnectBody = json_body(&body)?;
    state
        .engine
        .disconnect_container(&body.container, &id)
        .await?;
    Ok(StatusCode::OK)
}

/// `NetworkSettings` of a container for `GET /containers/{id}/json`:
/// endpoints by network, published ports (exposed but unpublished ports map
/// to `null`, as in Docker) and the primary endpoint's top-level fields.
pub(crate) async fn container_network_settings(
    state: &AppState,
    id: &str,
    exposed_ports: Option<&BTreeMap<String, Value>>,
) -> Value {
    let networks = state.engine.networks.settings(id).await;
    let mut ports = serde_json::Map::new();
    for key in exposed_ports.into_iter().flat_map(BTreeMap::keys) {
        ports.insert(key.clone(), Value::Null);
    }
    for mapping in state.engine.networks.published(id) {
        let key = format!("{}/{}", mapping.container_port, mapping.protocol.as_str());
        let binding = json!({ "HostIp": mapping.host_ip.to_string(), "HostPort": mapping.host_port.to_string() });
        match ports.get_mut(&key) {
            Some(Value::Array(list)) => list.push(binding),
            _ => {
                ports.insert(key, json!([binding]));
            }
        }
    }
    let primary = networks.values().next();
    let field = |f: fn(&EndpointSettings) -> Value| primary.map_or(json!(""), f);
    json!({
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "Ports": ports,
        "Networks": networks,
        "IPAddress": field(|e| json!(e.ip_address)),
        "IPPrefixLen": primary.map_or(json!(0), |e| json!(e.ip_prefix_len)),
        "Gateway": field(|e| json!(e.gateway)),
        "MacAddress": field(|e| json!(e.mac_address)),
        "EndpointID": field(|e| json!(e.endpoint_id)),
    })
}

/// `Ports` of a container in `GET /containers/json` (`docker ps`).
pub(crate) fn container_port_summary(state: &AppState, id: &str) -> Value {
    state
        .engine
        .networks
        .published(id)
        .into_iter()
        .map(|m| {
            json!({
                "IP": m.host_ip.to_string(),
                "PrivatePort": m.container_port,
                "PublicPort": m.host_port,
                "Type": m.protocol.as_str(),
            })
        })
        .collect::<Vec<_>>()
        .into()
}
