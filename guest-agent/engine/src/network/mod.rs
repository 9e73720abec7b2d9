//! Container networking: bridge networks, addresses, published ports, DNS.
//!
//! ```text
//! <root>/networks/<id>.json   one record per network (the default `bridge` too)
//! <root>/netns/<container id> a container's network namespace (bind mount)
//! ```
//!
//! Every bridge network is a Linux bridge in the engine's own network
//! namespace (`berth0` for the default `bridge` network, `br-<id12>` for
//! user networks) whose address is the network's gateway. A container on
//! bridge networks gets its own persistent namespace; [`Networks::attach`]
//! creates it, adds one veth pair per network (`eth0`, `eth1`, ...), leases
//! an address from the network's pool ([`ipam`]), starts the userspace port
//! proxies ([`ports`]) and returns the `/etc/hosts` and `/etc/resolv.conf`
//! text. The runtime then joins the namespace by path
//! ([`crate::runtime::NetworkSpec::Join`]). [`Networks::detach`] undoes all of
//! it. Nothing about endpoints is persisted: the namespaces die with the
//! engine (stale bind mounts are removed by [`Networks::open`]) and
//! containers attach again when they start.
//!
//! Name resolution: every bridge runs the resolver of [`dns`] on its
//! gateway address. On user networks it answers container names, short ids
//! and aliases; on the default bridge it only forwards (Docker resolves no
//! names there). Outbound NAT is in [`nat`], and only ever matches a bridge's
//! own subnet.
//!
//! `host`, `none` and `container:<id>` are not bridge networks: the runtime
//! handles them and they never reach [`Networks::attach`].

pub mod bridge;
pub mod dns;
pub mod ipam;
pub mod nat;
pub mod ports;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use ipam::{Pool, Subnet};
pub use ports::{PortBinding, PortMapping, Protocol};

/// Name and bridge device of the default network.
pub const DEFAULT_NETWORK: &str = "bridge";
const DEFAULT_BRIDGE: &str = "berth0";
const DEFAULT_SUBNET: &str = "172.17.0.0/16";

/// Networking failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("network with name {0} already exists")]
    NameInUse(String),
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    InUse { name: String, id: String },
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("address {ip} is already in use in network {network}")]
    AddressInUse { network: String, ip: Ipv4Addr },
    #[error("no free address left in network {0}")]
    PoolExhausted(String),
    #[error("no free subnet left for a new network")]
    NoFreeSubnet,
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("container {0} has no network namespace: it is not running on a bridge network")]
    NotAttached(String),
    #[error("failed to bind host port {address} for container {container}")]
    BindPort {
        container: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot publish {protocol} port {port} on the host: {reason}")]
    HostForward {
        port: u16,
        protocol: &'static str,
        reason: String,
    },
    #[error("failed to start the dns resolver of network {network} on {address}")]
    Dns {
        network: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {op} network namespace {path}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run {command}")]
    Command {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    CommandFailed { command: String, stderr: String },
    #[error("failed to {op} network state {path}")]
    Store {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::NoSuchNetwork(_) | Error::NotConnected { .. } => {
                crate::Error::NoSuchPath(e.to_string())
            }
            Error::NameInUse(_)
            | Error::InUse { .. }
            | Error::AddressInUse { .. }
            | Error::AlreadyConnected { .. }
            | Error::HostForward { .. }
            | Error::NotAttached(_) => crate::Error::Conflict(e.to_string()),
            Error::Predefined(_) | Error::InvalidConfig(_) => {
                crate::Error::InvalidArgument(e.to_string())
            }
            Error::BindPort { ref source, .. } | Error::Dns { ref source, .. } => {
                let context = e.to_string();
                crate::Error::Runtime {
                    source: Some(std::io::Error::new(source.kind(), source.to_string())),
                    context,
                }
            }
            Error::Netns { .. }
            | Error::Command { .. }
            | Error::CommandFailed { .. }
            | Error::Store { .. }
            | Error::PoolExhausted(_)
            | Error::NoFreeSubnet => crate::Error::Runtime {
                context: chain(&e),
                source: None,
            },
        }
    }
}

/// `error: cause: cause`, for errors folded into a context string.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A network as stored on disk and shown by `docker network inspect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    pub created: String,
    /// `None` for `host` and `null`.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The Linux bridge device.
    #[serde(default)]
    pub bridge: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl NetworkRecord {
    fn is_predefined(&self) -> bool {
        matches!(self.name.as_str(), DEFAULT_NETWORK | "host" | "none")
    }

    fn is_user_bridge(&self) -> bool {
        self.driver == "bridge" && self.name != DEFAULT_NETWORK
    }
}

/// `docker network create` parameters.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    /// `bridge` or empty.
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

/// A container's endpoint on one network, in Engine API shape
/// (`NetworkSettings.Networks[name]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSettings {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Gateway")]
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    #[serde(rename = "Aliases")]
    pub aliases: Vec<String>,
    #[serde(rename = "DNSNames")]
    pub dns_names: Vec<String>,
    /// Endpoint links, `name:alias` (resolved by the network's DNS).
    #[serde(rename = "Links", default)]
    pub links: Vec<String>,
}

/// One network a container joins.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    /// Name or id; `bridge`, `default` and empty mean the default network.
    pub network: String,
    /// `--network-alias` (and compose service names).
    pub aliases: Vec<String>,
    /// `--ip`.
    pub ipv4_address: Option<Ipv4Addr>,
    /// `--mac-address` (`EndpointsConfig.*.MacAddress`), checked.
    pub mac_address: Option<String>,
    /// `EndpointsConfig.*.Links`: `name:alias` (or `name`), answered by
    /// the network's DNS for this container only.
    pub links: Vec<String>,
}

/// Everything [`Networks::attach`] needs, as plain values.
#[derive(Debug, Clone, Default)]
pub struct AttachRequest {
    /// Full container id.
    pub id: String,
    /// Container name without the leading `/`.
    pub name: String,
    pub hostname: String,
    pub domainname: String,
    /// The first is the primary network (default route, port targets).
    pub endpoints: Vec<EndpointRequest>,
    /// `HostConfig.PortBindings`.
    pub port_bindings: BTreeMap<String, Vec<PortBinding>>,
    /// Keys of `Config.ExposedPorts` (`80/tcp`), for `-P`.
    pub exposed_ports: Vec<String>,
    /// `HostConfig.PublishAllPorts` (`-P`).
    pub publish_all: bool,
    /// `HostConfig.ExtraHosts`: `name:ip`, `ip` may be `host-gateway`.
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

/// Checks a MAC address (`02:42:ac:11:00:0a`) and returns it lowercase.
pub fn parse_mac(mac: &str) -> Result<String> {
    let octets: Vec<&str> = mac.split(':').collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid {
        return Err(Error::InvalidConfig(format!(
            "invalid MAC address {mac:?}: expected six hex octets, as 02:42:ac:11:00:02"
        )));
    }
    Ok(mac.to_ascii_lowercase())
}

/// Whether a `HostConfig.NetworkMode` needs [`Networks::attach`]: every
/// mode but `host`, `none` and `container:<id>` is a bridge network.
pub fn is_bridge_mode(network_mode: &str) -> bool {
    !matches!(network_mode, "host" | "none") && !network_mode.starts_with("container:")
}

/// The parts of a stored create request that networking reads, raw.
#[derive(Debug, Clone, Copy)]
pub struct ApiContainer<'a> {
    pub id: &'a str,
    /// With or without the leading `/`.
    pub name: &'a str,
    pub hostname: &'a str,
    pub domainname: &'a str,
    /// `HostConfig.NetworkMode`.
    pub network_mode: &'a str,
    /// `Config.ExposedPorts`.
    pub exposed_ports: Option<&'a BTreeMap<String, serde_json::Value>>,
    /// The whole `HostConfig` as JSON (`PortBindings`, `PublishAllPorts`,
    /// `ExtraHosts`, `Dns`, `DnsSearch`, `DnsOptions` are read from it).
    pub host_config: &'a serde_json::Value,
    /// `NetworkingConfig.EndpointsConfig` of the create request, if kept.
    pub endpoints_config: Option<&'a serde_json::Value>,
}

impl AttachRequest {
    /// Builds the request from the Engine API values of a container.
    pub fn from_api(container: &ApiContainer<'_>) -> Result<Self> {
        let host = container.host_config;
        let strings = |key: &str| -> Vec<String> {
            host.get(key)
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let port_bindings: BTreeMap<String, Vec<PortBinding>> = match host.get("PortBindings") {
            Some(v) if !v.is_null() => {
                let raw: BTreeMap<String, Option<Vec<PortBinding>>> =
                    serde_json::from_value(v.clone()).map_err(|e| {
                        Error::InvalidConfig(format!("invalid HostConfig.PortBindings: {e}"))
                    })?;
                raw.into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        let mode = match container.network_mode {
            "" | "default" => DEFAULT_NETWORK,
            mode => mode,
        };
        let endpoint_for = |network: &str, config: Option<&serde_json::Value>| {
            let aliases = config
                .and_then(|c| c.get("Aliases"))
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let ipv4_address = config
                .and_then(|c| c.get("IPAMConfig"))
                .and_then(|c| c.get("IPv4Address"))
                .and_then(serde_json::Value::as_str)
                .and_then(|ip| ip.parse().ok());
            let mac_address = config
                .and_then(|c| c.get("MacAddress"))
                .and_then(serde_json::Value::as_str)
                .filter(|m| !m.is_empty())
                .map(parse_mac)
                .transpose()?;
            let links = config
                .and_then(|c| c.get("Links"))
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, Error>(EndpointRequest {
                network: network.to_owned(),
                aliases,
                ipv4_address,
                mac_address,
                links,
            })
        };
        let configs = container
            .endpoints_config
            .and_then(serde_json::Value::as_object);
        // The NetworkMode network first (it gets the default route), then
        // any other network named in EndpointsConfig (compose does this).
        let mut endpoints = vec![endpoint_for(
            mode,
            configs.and_then(|c| c.get(mode).or_else(|| c.get(container.network_mode))),
        )?];
        // Legacy `--link`s are links of the primary endpoint (on a
        // user-defined network they resolve through its DNS, as dockerd's).
        endpoints[0].links.extend(strings("Links"));
        if let Some(configs) = configs {
            for (network, config) in configs {
                if network != mode && network != container.network_mode {
                    endpoints.push(endpoint_for(network, Some(config))?);
                }
            }
        }
        Ok(Self {
            id: container.id.to_owned(),
            name: container.name.trim_start_matches('/').to_owned(),
            hostname: container.hostname.to_owned(),
            domainname: container.domainname.to_owned(),
            endpoints,
            port_bindings,
            exposed_ports: container
                .exposed_ports
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
            publish_all: host
                .get("PublishAllPorts")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            extra_hosts: strings("ExtraHosts"),
            dns: strings("Dns"),
            dns_search: strings("DnsSearch"),
            dns_options: strings("DnsOptions"),
        })
    }
}

/// What the runtime and `inspect` need from an attached container.
#[derive(Debug, Clone)]
pub struct Attached {
    /// Join with `NetworkSpec::Join { path }`.
    pub netns_path: PathBuf,
    /// Contents for the container's `/etc/hosts`.
    pub hosts: String,
    /// Contents for the container's `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// Primary endpoint (top-level `NetworkSettings` fields).
    pub primary: EndpointSettings,
    /// By network name.
    pub networks: BTreeMap<String, EndpointSettings>,
    /// `NetworkSettings.Ports` for published ports (`80/tcp` -> bindings).
    pub ports: BTreeMap<String, Vec<PortBinding>>,
}

/// Announced when a published port opens or closes, for the host agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    Opened {
        container: String,
        mapping: PortMapping,
    },
    Closed {
        container: String,
        mapping: PortMapping,
    },
}

/// Awaited for every port a container publishes, before its start
/// returns: in the VM, the guest agent asks the host agent to listen on the
/// same port on the host and resolves once it does (or with the reason it
/// cannot). Set with [`Networks::set_port_hook`].
pub type PortHook = Arc<
    dyn Fn(PortMapping) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// Engine-wide networking settings.
#[derive(Debug, Clone, Default)]
pub struct NetworksConfig {
    /// What `host.docker.internal` resolves to: the host seen from the VM
    /// (slirp's 10.0.2.2). `None`: the container's gateway.
    pub host_address: Option<Ipv4Addr>,
    /// The default bridge's subnet (default 172.17.0.0/16).
    pub default_subnet: Option<String>,
}

/// A live network: its record plus runtime state.
struct NetworkState {
    record: NetworkRecord,
    pool: Option<Pool>,
    /// Names answered by this network's resolver.
    records: dns::Records,
    links: dns::Links,
    /// Set once the bridge, NAT and resolver are up.
    resolver: Option<JoinHandle<()>>,
}

impl Drop for NetworkState {
    fn drop(&mut self) {
        if let Some(resolver) = &self.resolver {
            resolver.abort();
        }
    }
}

struct Endpoint {
    network_id: String,
    interface: String,
    host_veth: String,
    ip: Ipv4Addr,
    /// Keys of this endpoint in the network's DNS table.
    dns_names: Vec<String>,
    settings: EndpointSettings,
}

struct ContainerNet {
    name: String,
    netns: PathBuf,
    endpoints: Vec<Endpoint>,
    proxies: ports::Proxies,
}

#[derive(Default)]
struct Inner {
    networks: BTreeMap<String, NetworkState>,
    containers: HashMap<String, ContainerNet>,
}

/// The engine's networks. One per engine.
pub struct Networks {
    dir: PathBuf,
    netns_dir: PathBuf,
    config: NetworksConfig,
    /// Kernel changes (links, namespaces) await inside, so the lock is async.
    inner: tokio::sync::Mutex<Inner>,
    /// A copy of every record, for synchronous lookups ([`Networks::lookup`]).
    records: RwLock<BTreeMap<String, NetworkRecord>>,
    /// Published ports by container, readable without awaiting.
    published: Mutex<HashMap<String, Vec<PortMapping>>>,
    events: broadcast::Sender<PortEvent>,
    port_hook: RwLock<Option<PortHook>>,
}

impl Networks {
    /// Opens the network store under `root` (`<root>/networks`,
    /// `<root>/netns`), creating the predefined `bridge`, `host` and `none`
    /// networks, and removes namespaces left by a previous engine. Bridges
    /// are created lazily, on first attach.
    pub fn open(root: &Path, config: NetworksConfig) -> Result<Self> {
        let dir = root.join("networks");
        let netns_dir = root.join("netns");
        for d in [&dir, &netns_dir] {
            std::fs::create_dir_all(d).map_err(|source| Error::Store {
                op: "create",
                path: d.clone(),
                source,
            })?;
        }
        if let Ok(entries) = std::fs::read_dir(&netns_dir) {
            for entry in entries.flatten() {
                bridge::remove_netns(&entry.path());
            }
        }
        let mut inner = Inner::default();
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Store {
            op: "read",
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record: NetworkRecord = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| Error::Store {
                    op: "parse",
                    path: path.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidData),
                })?;
            inner.networks.insert(record.id.clone(), state_for(record)?);
        }
        let networks = Self {
            dir,
            netns_dir,
            config,
            records: RwLock::new(
                inner
                    .networks
                    .iter()
                    .map(|(id, n)| (id.clone(), n.record.clone()))
                    .collect(),
            ),
            inner: tokio::sync::Mutex::new(inner),
            published: Mutex::new(HashMap::new()),
            events: broadcast::channel(256).0,
            port_hook: RwLock::new(None),
        };
        networks.ensure_predefined()?;
        Ok(networks)
    }

    fn ensure_predefined(&self) -> Result<()> {
        let mut inner = self.inner.try_lock().expect("no other user while opening");
        let default_subnet: Subnet = self
            .config
            .default_subnet
            .as_deref()
            .unwrap_or(DEFAULT_SUBNET)
            .parse()?;
        for (name, driver) in [
            (DEFAULT_NETWORK, "bridge"),
            ("host", "host"),
            ("none", "null"),
        ] {
            if inner.networks.values().any(|n| n.record.name == name) {
                continue;
            }
            let bridge = driver == "bridge";
            let mut record = new_record(name, driver);
            if bridge {
                record.subnet = Some(default_subnet.to_string());
                record.gateway = Some(default_subnet.first_host());
                record.bridge = DEFAULT_BRIDGE.to_owned();
                record.options = BTreeMap::from([
                    (
                        "com.docker.network.bridge.default_bridge".to_owned(),
                        "true".to_owned(),
                    ),
                    (
                        "com.docker.network.bridge.name".to_owned(),
                        DEFAULT_BRIDGE.to_owned(),
                    ),
                ]);
            }
            self.save(&record)?;
            self.mirror(&record);
            inner.networks.insert(record.id.clone(), state_for(record)?);
        }
        Ok(())
    }

    fn mirror(&self, record: &NetworkRecord) {
        self.records
            .write()
            .expect("records lock is never poisoned")
            .insert(record.id.clone(), record.clone());
    }

    /// One network by name, id or unique id prefix, without awaiting: for
    /// validating `HostConfig.NetworkMode` at container create.
    pub fn lookup(&self, name_or_id: &str) -> Result<NetworkRecord> {
        let records = self.records.read().expect("records lock is never poisoned");
        if let Some(r) = records.values().find(|r| r.name == name_or_id) {
            return Ok(r.clone());
        }
        let mut matches = records
            .values()
            .filter(|r| !name_or_id.is_empty() && r.id.starts_with(name_or_id));
        match (matches.next(), matches.next()) {
            (Some(r), None) => Ok(r.clone()),
            _ => Err(Error::NoSuchNetwork(name_or_id.to_owned())),
        }
    }

    fn save(&self, record: &NetworkRecord) -> Result<()> {
        let path = self.dir.join(format!("{}.json", record.id));
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(record).expect("a network record serializes");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| Error::Store {
                op: "write",
                path,
                source,
            })
    }

    /// `docker network create`.
    pub async fn create(&self, request: CreateRequest) -> Result<NetworkRecord> {
        if !matches!(request.driver.as_str(), "" | "bridge") {
            return Err(Error::InvalidConfig(format!(
                "network driver {:?} is not supported: only \"bridge\" is",
                request.driver
            )));
        }
        if request.name.is_empty()
            || !request
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(Error::InvalidConfig(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                request.name
            )));
        }
        let mut inner = self.inner.lock().await;
        if inner
            .networks
            .values()
            .any(|n| n.record.name == request.name)
        {
            return Err(Error::NameInUse(request.name));
        }
        let used: Vec<Subnet> = inner
            .networks
            .values()
            .filter_map(|n| n.pool.as_ref().map(|p| p.subnet))
            .collect();
        let subnet = match &request.subnet {
            Some(s) => {
                let subnet: Subnet = s.parse()?;
                if let Some(other) = used.iter().find(|u| u.overlaps(subnet)) {
                    return Err(Error::InvalidConfig(format!(
                        "subnet {subnet} overlaps with the subnet {other} of another network"
                    )));
                }
                subnet
            }
            None => ipam::next_free_subnet(&used).ok_or(Error::NoFreeSubnet)?,
        };
        let gateway = match &request.gateway {
            Some(g) => {
                let gateway: Ipv4Addr = g
                    .parse()
                    .map_err(|_| Error::InvalidConfig(format!("invalid gateway {g:?}")))?;
                if !subnet.contains(gateway) {
                    return Err(Error::InvalidConfig(format!(
                        "gateway {gateway} is not in subnet {subnet}"
                    )));
                }
                gateway
            }
            None => subnet.first_host(),
        };
        let mut record = new_record(&request.name, "bridge");
        record.bridge = request
            .options
            .get("com.docker.network.bridge.name")
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &record.id[..12]));
        record.subnet = Some(subnet.to_string());
        record.gateway = Some(gateway);
        record.internal = request.internal;
        record.attachable = request.attachable;
        record.labels = request.labels;
        record.options = request.options;
        self.save(&record)?;
        self.mirror(&record);
        inner
            .networks
            .insert(record.id.clone(), state_for(record.clone())?);
        tracing::info!(network = %record.name, subnet = %subnet, "network created");
        Ok(record)
    }

    /// All networks, predefined ones included.
    pub async fn list(&self) -> Vec<NetworkRecord> {
        let inner = self.inner.lock().await;
        inner.networks.values().map(|n| n.record.clone()).collect()
    }

    /// One network by exact name, full id or unique id prefix.
    pub async fn inspect(&self, name_or_id: &str) -> Result<NetworkRecord> {
        let inner = self.inner.lock().await;
        Ok(find(&inner, name_or_id)?.record.clone())
    }

    /// The containers on a network: container id -> (container name, endpoint).
    pub async fn endpoints(
        &self,
        name_or_id: &str,
    ) -> Result<BTreeMap<String, (String, EndpointSettings)>> {
        let inner = self.inner.lock().await;
        let id = find(&inner, name_or_id)?.record.id.clone();
        Ok(inner
            .containers
            .iter()
            .flat_map(|(container, net)| {
                net.endpoints
                    .iter()
                    .filter(|e| e.network_id == id)
                    .map(|e| (container.clone(), (net.name.clone(), e.settings.clone())))
            })
            .collect())
    }

    /// `docker network rm`: refused for predefined networks and networks in use.
    pub async fn remove(&self, name_or_id: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let record = find(&inner, name_or_id)?.record.clone();
        if record.is_predefined() {
            return Err(Error::Predefined(record.name));
        }
        if in_use(&inner, &record.id) {
            return Err(Error::InUse {
                name: record.name,
                id: record.id,
            });
        }
        self.delete(&mut inner, &record).await
    }

    async fn delete(&self, inner: &mut Inner, record: &NetworkRecord) -> Result<()> {
        inner.networks.remove(&record.id);
        self.records
            .write()
            .expect("records lock is never poisoned")
            .remove(&record.id);
        if !record.bridge.is_empty() {
            nat::remove(&record.bridge).await;
            bridge::delete_link(&record.bridge).await?;
        }
        let path = self.dir.join(format!("{}.json", record.id));
        std::fs::remove_file(&path).map_err(|source| Error::Store {
            op: "remove",
            path,
            source,
        })?;
        tracing::info!(network = %record.name, "network removed");
        Ok(())
    }

    /// `docker network prune`: removes unused user networks whose labels
    /// match every `label` filter (`key` or `key=value`); returns their names.
    pub async fn prune(&self, label_filters: &[String]) -> Result<Vec<String>> {
        let mut inner = self.inner.lock().await;
        let victims: Vec<NetworkRecord> = inner
            .networks
            .values()
            .map(|n| &n.record)
            .filter(|r| !r.is_predefined() && !in_use(&inner, &r.id))
            .filter(|r| {
                label_filters.iter().all(|f| match f.split_once('=') {
                    Some((k, v)) => r.labels.get(k).is_some_and(|have| have == v),
                    None => r.labels.contains_key(f),
                })
            })
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for record in victims {
            self.delete(&mut inner, &record).await?;
            removed.push(record.name);
        }
        Ok(removed)
    }

    /// Gives a starting container its network namespace and endpoints.
    /// Call before the runtime helper runs; on error nothing is left behind.
    pub async fn attach(&self, request: AttachRequest) -> Result<Attached> {
        let mut inner = self.inner.lock().await;
        if inner.containers.contains_key(&request.id) {
            // A restart without a detach (e.g. after the runtime failed).
            self.detach_locked(&mut inner, &request.id).await;
        }
        let netns = self.netns_dir.join(&request.id);
        bridge::create_netns(&netns).await?;
        inner.containers.insert(
            request.id.clone(),
            ContainerNet {
                name: request.name.clone(),
                netns: netns.clone(),
                endpoints: Vec::new(),
                proxies: ports::Proxies::default(),
            },
        );
        match self.attach_locked(&mut inner, &request).await {
            Ok(attached) => Ok(attached),
            Err(e) => {
                self.detach_locked(&mut inner, &request.id).await;
                Err(e)
            }
        }
    }

    async fn attach_locked(&self, inner: &mut Inner, request: &AttachRequest) -> Result<Attached> {
        let defaults = [EndpointRequest::default()];
        let endpoints = if request.endpoints.is_empty() {
            &defaults[..]
        } else {
            &request.endpoints
        };
        for endpoint in endpoints {
            self.connect_locked(inner, request, endpoint).await?;
        }
        let net = &inner.containers[&request.id];
        let primary = net
            .endpoints
            .first()
            .expect("at least one endpoint was added");
        let target = primary.ip;
        let plan = ports::plan(
            &request.port_bindings,
            &request.exposed_ports,
            request.publish_all,
        )?;
        let proxies = ports::publish(&request.id, &plan, target).await?;
        let mappings = proxies.mappings.clone();
        inner
            .containers
            .get_mut(&request.id)
            .expect("inserted by attach")
            .proxies = proxies;
        self.published
            .lock()
            .expect("published lock is never poisoned")
            .insert(request.id.clone(), mappings.clone());
        for mapping in &mappings {
            let _ = self.events.send(PortEvent::Opened {
                container: request.id.clone(),
                mapping: *mapping,
            });
        }
        let hook = self
            .port_hook
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            for mapping in &mappings {
                hook(*mapping).await.map_err(|reason| Error::HostForward {
                    port: mapping.host_port,
                    protocol: mapping.protocol.as_str(),
                    reason,
                })?;
            }
        }
        let net = &inner.containers[&request.id];
        let primary = &net.endpoints[0];
        let network = &inner.networks[&primary.network_id].record;
        let gateway = network.gateway.expect("bridge networks have a gateway");
        let networks = net
            .endpoints
            .iter()
            .map(|e| {
                (
                    inner.networks[&e.network_id].record.name.clone(),
                    e.settings.clone(),
                )
            })
            .collect();
        let mut port_map: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
        for m in &mappings {
            port_map
                .entry(format!("{}/{}", m.container_port, m.protocol.as_str()))
                .or_default()
                .push(PortBinding {
                    host_ip: m.host_ip.to_string(),
                    host_port: m.host_port.to_string(),
                });
        }
        let host_address = self.config.host_address.unwrap_or(gateway);
        Ok(Attached {
            netns_path: net.netns.clone(),
            hosts: hosts_file(request, primary.ip, host_address),
            resolv_conf: resolv_conf(
                request,
                gateway,
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
            primary: primary.settings.clone(),
            networks,
            ports: port_map,
        })
    }

    async fn connect_locked(
        &self,
        inner: &mut Inner,
        container: &AttachRequest,
        endpoint: &EndpointRequest,
    ) -> Result<EndpointSettings> {
        let network_id = {
            let wanted = match endpoint.network.as_str() {
                "" | "default" => DEFAULT_NETWORK,
                other => other,
            };
            let state = find(inner, wanted)?;
            if state.record.driver != "bridge" {
                return Err(Error::InvalidConfig(format!(
                    "container cannot be connected to network {}: use --network {} instead",
                    state.record.name, state.record.name
                )));
            }
            state.record.id.clone()
        };
        let net = inner
            .containers
            .get(&container.id)
            .ok_or_else(|| Error::NotAttached(container.id.clone()))?;
        if net.endpoints.iter().any(|e| e.network_id == network_id) {
            return Err(Error::AlreadyConnected {
                container: container.name.clone(),
                network: inner.networks[&network_id].record.name.clone(),
            });
        }
        // The lowest free `ethN`: after a disconnect, names can have gaps.
        let index = (0..)
            .find(|i| {
                !net.endpoints
                    .iter()
                    .any(|e| e.interface == format!("eth{i}"))
            })
            .expect("some interface index is free");
        let netns = net.netns.clone();
        self.bring_up(inner, &network_id).await?;
        let state = inner.networks.get_mut(&network_id).expect("found above");
        let record = state.record.clone();
        let pool = state.pool.as_mut().expect("bridge networks have a pool");
        let ip = pool.lease(&record.name, endpoint.ipv4_address)?;
        let (subnet, gateway) = (pool.subnet, pool.gateway);
        let mac = endpoint
            .mac_address
            .clone()
            .unwrap_or_else(|| ipam::mac_for(ip));
        let host_veth = veth_name(&container.id, index);
        let interface = format!("eth{index}");
        let added = bridge::add_veth(&bridge::VethSpec {
            host_name: &host_veth,
            bridge: &record.bridge,
            netns: &netns,
            container_name: &interface,
            ip,
            prefix: subnet.prefix,
            mac: &mac,
            default_gateway: (index == 0 && !record.internal).then_some(gateway),
        })
        .await;
        if let Err(e) = added {
            if let Some(pool) = state.pool.as_mut() {
                pool.release(ip);
            }
            return Err(e);
        }
        let short_id = container.id[..container.id.len().min(12)].to_owned();
        let mut dns_names = Vec::new();
        let mut table_keys = Vec::new();
        if record.is_user_bridge() {
            dns_names.push(container.name.clone());
            dns_names.extend(endpoint.aliases.iter().cloned());
            dns_names.push(short_id.clone());
            if !container.hostname.is_empty() && !dns_names.contains(&container.hostname) {
                dns_names.push(container.hostname.clone());
            }
            let mut table = state
                .records
                .write()
                .expect("dns records lock is never poisoned");
            // Each name also qualified by the network's (`name.network`).
            for name in &dns_names {
                for key in [name.clone(), format!("{name}.{}", record.name)] {
                    let key = key.to_ascii_lowercase();
                    let addresses = table.entry(key.clone()).or_default();
                    addresses.push(ip);
                    table_keys.push(key);
                }
            }
            let mut links = state
                .links
                .write()
                .expect("dns links lock is never poisoned");
            for link in &endpoint.links {
                // `name:alias`, or a legacy link's `/name:/parent/alias`.
                let (target, alias) = link.split_once(':').unwrap_or((link, link));
                let alias = alias.rsplit('/').next().unwrap_or(alias);
                links.insert(
                    (ip, alias.to_ascii_lowercase()),
                    target.trim_start_matches('/').to_ascii_lowercase(),
                );
            }
        }
        let mut aliases = endpoint.aliases.clone();
        if record.is_user_bridge() {
            aliases.push(short_id);
        }
        let settings = EndpointSettings {
            network_id: record.id.clone(),
            endpoint_id: hex_id(),
            gateway: gateway.to_string(),
            ip_address: ip.to_string(),
            ip_prefix_len: subnet.prefix,
            mac_address: mac,
            aliases,
            dns_names: dns_names.clone(),
            links: endpoint.links.clone(),
        };
        inner
            .containers
            .get_mut(&container.id)
            .expect("checked above")
            .endpoints
            .push(Endpoint {
                network_id,
                interface,
                host_veth,
                ip,
                dns_names: table_keys,
                settings: settings.clone(),
            });
        tracing::info!(container = %container.id, network = %record.name, %ip, "endpoint added");
        Ok(settings)
    }

    /// Creates the bridge, NAT and resolver of a network if not yet up.
    async fn bring_up(&self, inner: &mut Inner, network_id: &str) -> Result<()> {
        let state = inner.networks.get_mut(network_id).expect("caller found it");
        if state.resolver.is_some() {
            return Ok(());
        }
        let record = state.record.clone();
        let pool = state.pool.as_ref().expect("bridge networks have a pool");
        let (subnet, gateway) = (pool.subnet, pool.gateway);
        bridge::ensure_bridge(&record.bridge, gateway, subnet).await?;
        if let Err(e) = nat::install(&record.bridge, subnet, record.internal).await {
            tracing::warn!(network = %record.name, error = %chain(&e),
                "no nat or isolation rules: containers on this network reach only the engine's namespace");
        }
        let address = SocketAddr::from((gateway, 53));
        let resolver = dns::serve(address, state.records.clone(), state.links.clone())
            .await
            .map_err(|source| Error::Dns {
                network: record.name.clone(),
                address,
                source,
            })?;
        state.resolver = Some(resolver);
        Ok(())
    }

    /// Removes a container's endpoints, ports and namespace. Idempotent.
    pub async fn detach(&self, id: &str) {
        let mut inner = self.inner.lock().await;
        self.detach_locked(&mut inner, id).await;
    }

    async fn detach_locked(&self, inner: &mut Inner, id: &str) {
        let Some(net) = inner.containers.remove(id) else {
            return;
        };
        let mappings = self
            .published
            .lock()
            .expect("published lock is never poisoned")
            .remove(id)
            .unwrap_or_default();
        net.proxies.stop().await;
        for mapping in mappings {
            let _ = self.events.send(PortEvent::Closed {
                container: id.to_owned(),
                mapping,
            });
        }
        for endpoint in &net.endpoints {
            release_endpoint(inner, endpoint);
            if let Err(e) = bridge::delete_link(&endpoint.host_veth).await {
                tracing::debug!(container = %id, error = %chain(&e), "veth already gone");
            }
        }
        bridge::remove_netns(&net.netns);
        tracing::info!(container = %id, "network detached");
    }

    /// `docker network connect` for a running (attached) container.
    pub async fn connect(
        &self,
        id: &str,
        hostname: &str,
        endpoint: EndpointRequest,
    ) -> Result<(String, EndpointSettings)> {
        let mut inner = self.inner.lock().await;
        let name = inner
            .containers
            .get(id)
            .ok_or_else(|| Error::NotAttached(id.to_owned()))?
            .name
            .clone();
        let request = AttachRequest {
            id: id.to_owned(),
            name,
            hostname: hostname.to_owned(),
            ..AttachRequest::default()
        };
        let settings = self.connect_locked(&mut inner, &request, &endpoint).await?;
        let network = inner.networks[&settings.network_id].record.name.clone();
        Ok((network, settings))
    }

    /// `docker network disconnect` for a running (attached) container.
    pub async fn disconnect(&self, id: &str, network: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let network_id = find(&inner, network)?.record.id.clone();
        let network_name = inner.networks[&network_id].record.name.clone();
        let net = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotAttached(id.to_owned()))?;
        let position = net
            .endpoints
            .iter()
            .position(|e| e.network_id == network_id)
            .ok_or_else(|| Error::NotConnected {
                container: id.to_owned(),
                network: network_name,
            })?;
        let endpoint = net.endpoints.remove(position);
        release_endpoint(&mut inner, &endpoint);
        bridge::delete_link(&endpoint.host_veth).await?;
        tracing::info!(container = %id, network, interface = %endpoint.interface, "endpoint removed");
        Ok(())
    }

    /// The container's endpoints by network name (empty when not attached).
    pub async fn settings(&self, id: &str) -> BTreeMap<String, EndpointSettings> {
        let inner = self.inner.lock().await;
        inner.containers.get(id).map_or_else(BTreeMap::new, |net| {
            net.endpoints
                .iter()
                .map(|e| {
                    (
                        inner.networks[&e.network_id].record.name.clone(),
                        e.settings.clone(),
                    )
                })
                .collect()
        })
    }

    /// The container's published ports (for `docker port`, ps and inspect).
    pub fn published(&self, id: &str) -> Vec<PortMapping> {
        self.published
            .lock()
            .expect("published lock is never poisoned")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Installs the hook every published port awaits (see [`PortHook`]).
    pub fn set_port_hook(&self, hook: PortHook) {
        *self
            .port_hook
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
    }

    /// Port open/close events, for the host agent's forwarders.
    pub fn subscribe_port_events(&self) -> broadcast::Receiver<PortEvent> {
        self.events.subscribe()
    }
}

fn release_endpoint(inner: &mut Inner, endpoint: &Endpoint) {
    if let Some(state) = inner.networks.get_mut(&endpoint.network_id) {
        if let Some(pool) = state.pool.as_mut() {
            pool.release(endpoint.ip);
        }
        let mut table = state
            .records
            .write()
            .expect("dns records lock is never poisoned");
        for name in &endpoint.dns_names {
            let key = name.to_ascii_lowercase();
            if let Some(addresses) = table.get_mut(&key) {
                addresses.retain(|a| *a != endpoint.ip);
                if addresses.is_empty() {
                    table.remove(&key);
                }
            }
        }
        state
            .links
            .write()
            .expect("dns links lock is never poisoned")
            .retain(|(ip, _), _| *ip != endpoint.ip);
    }
}

fn state_for(record: NetworkRecord) -> Result<NetworkState> {
    let pool = match (&record.subnet, record.gateway) {
        (Some(subnet), Some(gateway)) => Some(Pool::new(subnet.parse()?, gateway)),
        _ => None,
    };
    Ok(NetworkState {
        record,
        pool,
        records: Arc::new(RwLock::new(HashMap::new())),
        links: Arc::new(RwLock::new(HashMap::new())),
        resolver: None,
    })
}

fn new_record(name: &str, driver: &str) -> NetworkRecord {
    NetworkRecord {
        id: hex_id(),
        name: name.to_owned(),
        driver: driver.to_owned(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        subnet: None,
        gateway: None,
        bridge: String::new(),
        internal: false,
        attachable: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
    }
}

fn hex_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Host-side veth name: at most 15 bytes, unique per container and index.
fn veth_name(container_id: &str, index: usize) -> String {
    format!("vb{}{index}", &container_id[..container_id.len().min(10)])
}

fn find<'a>(inner: &'a Inner, name_or_id: &str) -> Result<&'a NetworkState> {
    if let Some(state) = inner
        .networks
        .values()
        .find(|n| n.record.name == name_or_id)
    {
        return Ok(state);
    }
    if let Some(state) = inner.networks.get(name_or_id) {
        return Ok(state);
    }
    let mut matches = inner
        .networks
        .values()
        .filter(|n| !name_or_id.is_empty() && n.record.id.starts_with(name_or_id));
    match (matches.next(), matches.next()) {
        (Some(state), None) => Ok(state),
        _ => Err(Error::NoSuchNetwork(name_or_id.to_owned())),
    }
}

fn in_use(inner: &Inner, network_id: &str) -> bool {
    inner
        .containers
        .values()
        .any(|c| c.endpoints.iter().any(|e| e.network_id == network_id))
}

/// Docker's `/etc/hosts` for a bridge container.
fn hosts_file(request: &AttachRequest, ip: Ipv4Addr, host_address: Ipv4Addr) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    out.push_str(&format!("{host_address}\thost.docker.internal\n"));
    for entry in &request.extra_hosts {
        // `name:ip`; Docker also accepts `name=ip`. The ip may be IPv6 (colons).
        let Some((name, address)) = entry.split_once([':', '=']) else {
            continue;
        };
        let address = if address == "host-gateway" {
            host_address.to_string()
        } else {
            address.trim_matches(['[', ']']).to_owned()
        };
        if address.parse::<IpAddr>().is_ok() {
            out.push_str(&format!("{address}\t{name}\n"));
        }
    }
    let mut names = request.hostname.clone();
    if !request.domainname.is_empty() {
        names = format!(
            "{}.{} {}",
            request.hostname, request.domainname, request.hostname
        );
    }
    if !names.is_empty() {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    out
}

/// Docker's `/etc/resolv.conf` for a bridge container: the network's
/// resolver (the gateway) first, then `--dns` servers; search and options
/// from the engine's file unless given.
fn resolv_conf(request: &AttachRequest, gateway: Ipv4Addr, engine_resolv: &str) -> String {
    let mut out = String::new();
    let search: Vec<String> = if request.dns_search.is_empty() {
        engine_resolv
            .lines()
            .filter_map(|l| l.strip_prefix("search "))
            .flat_map(|l| l.split_whitespace().map(str::to_owned))
            .collect()
    } else {
        request.dns_search.clone()
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if request.dns.is_empty() {
        out.push_str(&format!("nameserver {gateway}\n"));
    } else {
        for server in &request.dns {
            out.push_str(&format!("nameserver {server}\n"));
        }
    }
    let options: Vec<String> = if request.dns_options.is_empty() {
        engine_resolv
            .lines()
            .filter_map(|l| l.strip_prefix("options "))
            .flat_map(|l| l.split_whitespace().map(str::to_owned))
            .collect()
    } else {
        request.dns_options.clone()
    };
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AttachRequest {
        AttachRequest {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            hostname: "0123456789ab".into(),
            ..AttachRequest::default()
        }
    }

    #[test]
    fn hosts_file_names_the_container_and_the_host() {
        let mut request = request();
        request.extra_hosts = vec!["db:10.9.9.9".into(), "gw:host-gateway".into()];
        let hosts = hosts_file(
            &request,
            Ipv4Addr::new(172, 18, 0, 2),
            Ipv4Addr::new(10, 0, 2, 2),
        );
        assert!(hosts.contains("10.0.2.2\thost.docker.internal\n"));
        assert!(hosts.contains("10.9.9.9\tdb\n"));
        assert!(hosts.contains("10.0.2.2\tgw\n"));
        assert!(hosts.ends_with("172.18.0.2\t0123456789ab\n"));
    }

    #[test]
    fn resolv_conf_uses_the_gateway_and_keeps_search() {
        let conf = resolv_conf(
            &request(),
            Ipv4Addr::new(172, 18, 0, 1),
            "search corp.example\nnameserver 127.0.0.53\noptions edns0\n",
        );
        assert_eq!(
            conf,
            "search corp.example\nnameserver 172.18.0.1\noptions edns0\n"
        );
    }

    #[test]
    fn resolv_conf_dns_flag_replaces_the_nameserver() {
        let mut request = request();
        request.dns = vec!["9.9.9.9".into()];
        let conf = resolv_conf(&request, Ipv4Addr::new(172, 18, 0, 1), "");
        assert_eq!(conf, "nameserver 9.9.9.9\n");
    }

    #[test]
    fn from_api_reads_ports_and_aliases() {
        let host_config = serde_json::json!({
            "NetworkMode": "appnet",
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}], "53/udp": null},
            "PublishAllPorts": true,
            "ExtraHosts": ["db:10.0.0.9"],
            "Dns": null,
        });
        let endpoints = serde_json::json!({"appnet": {"Aliases": ["web"]}, "other": {}});
        let request = AttachRequest::from_api(&ApiContainer {
            id: "abc",
            name: "/web-1",
            hostname: "abc",
            domainname: "",
            network_mode: "appnet",
            exposed_ports: None,
            host_config: &host_config,
            endpoints_config: Some(&endpoints),
        })
        .unwrap();
        assert_eq!(request.name, "web-1");
        assert_eq!(request.port_bindings["80/tcp"][0].host_port, "18080");
        assert!(request.port_bindings["53/udp"].is_empty());
        assert!(request.publish_all);
        assert_eq!(request.endpoints[0].aliases, ["web"]);
        assert_eq!(request.endpoints[1].network, "other");
        assert_eq!(request.extra_hosts, ["db:10.0.0.9"]);
    }

    #[test]
    fn bridge_mode_excludes_host_none_and_container() {
        assert!(is_bridge_mode("default"));
        assert!(is_bridge_mode("appnet"));
        assert!(!is_bridge_mode("host"));
        assert!(!is_bridge_mode("container:abc"));
    }

    #[test]
    fn veth_name_fits_ifnamsiz() {
        assert!(veth_name("0123456789abcdef0123", 3).len() <= 15);
    }

    #[test]
    fn open_creates_the_predefined_networks() {
        let dir = tempfile::tempdir().unwrap();
        let networks = Networks::open(dir.path(), NetworksConfig::default()).unwrap();
        let names: Vec<String> = networks
            .inner
            .try_lock()
            .unwrap()
            .networks
            .values()
            .map(|n| n.record.name.clone())
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&"bridge".to_owned()));
    }
}
