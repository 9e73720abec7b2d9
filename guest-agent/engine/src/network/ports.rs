//! Published ports: `PortBindings` parsing, host-port allocation, and the
//! userspace proxy that serves them (see [`super::nat`] for why a proxy).
//!
//! Every binding gets its listener bound (TCP) or socket bound (UDP) in
//! [`publish`], before the container starts, so a client that connects as
//! soon as `docker run -d -p` returns is accepted (and waits for the
//! container's server) instead of refused. A host port of `0` or empty
//! lets the kernel pick one from the ephemeral range, as `-P` does.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use super::Error;

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One entry of `HostConfig.PortBindings["80/tcp"]`, as the Engine API sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: String,
}

/// A container port: `80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPort {
    pub port: u16,
    pub protocol: Protocol,
}

impl ContainerPort {
    /// Parses `80`, `80/tcp` or `53/udp` (the keys of `PortBindings` and
    /// `ExposedPorts`).
    pub fn parse(key: &str) -> Result<Self, Error> {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unsupported protocol {other:?} in port {key:?}"
                )));
            }
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::InvalidConfig(format!("invalid container port {key:?}")))?;
        Ok(Self { port, protocol })
    }

    /// `80/tcp`.
    pub fn key(self) -> String {
        format!("{}/{}", self.port, self.protocol.as_str())
    }
}

/// What the caller asked to publish, before host ports are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub container: ContainerPort,
    pub host_ip: IpAddr,
    /// Inclusive range; `(0, 0)` asks the kernel for a free port.
    pub host_ports: (u16, u16),
}

/// A published port in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// Turns `PortBindings` plus (for `-P`) `ExposedPorts` into requests.
pub fn plan(
    bindings: &BTreeMap<String, Vec<PortBinding>>,
    exposed: &[String],
    publish_all: bool,
) -> Result<Vec<Request>, Error> {
    let mut requests = Vec::new();
    for (key, list) in bindings {
        let container = ContainerPort::parse(key)?;
        let defaults = [PortBinding::default()];
        let list = if list.is_empty() { &defaults[..] } else { list };
        for binding in list {
            requests.push(Request {
                container,
                host_ip: parse_host_ip(&binding.host_ip)?,
                host_ports: parse_host_ports(&binding.host_port)?,
            });
        }
    }
    if publish_all {
        for key in exposed {
            let container = ContainerPort::parse(key)?;
            if !requests.iter().any(|r| r.container == container) {
                requests.push(Request {
                    container,
                    host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    host_ports: (0, 0),
                });
            }
        }
    }
    Ok(requests)
}

fn parse_host_ip(s: &str) -> Result<IpAddr, Error> {
    if s.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    s.trim_matches(['[', ']'])
        .parse()
        .map_err(|_| Error::InvalidConfig(format!("invalid host ip {s:?}")))
}

fn parse_host_ports(s: &str) -> Result<(u16, u16), Error> {
    if s.is_empty() {
        return Ok((0, 0));
    }
    let invalid = || Error::InvalidConfig(format!("invalid host port {s:?}"));
    let (low, high) = s.split_once('-').unwrap_or((s, s));
    let low: u16 = low.parse().map_err(|_| invalid())?;
    let high: u16 = high.parse().map_err(|_| invalid())?;
    if low > high || (low == 0 && high != 0) {
        return Err(invalid());
    }
    Ok((low, high))
}

/// The listeners of one container; dropping it stops them.
#[derive(Debug, Default)]
pub struct Proxies {
    tasks: Vec<JoinHandle<()>>,
    pub mappings: Vec<PortMapping>,
}

impl Proxies {
    /// Stops every listener and waits until their sockets are closed, so a
    /// released host port can be bound again as soon as this returns.
    pub async fn stop(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds every request and starts proxying to `target`. All or nothing:
/// when one port cannot be bound the others are released.
pub async fn publish(
    container_id: &str,
    requests: &[Request],
    target: Ipv4Addr,
) -> Result<Proxies, Error> {
    let mut proxies = Proxies::default();
    for request in requests {
        let (low, high) = request.host_ports;
        let mut last_error = None;
        let mut bound = None;
        for port in low..=high {
            let address = SocketAddr::new(request.host_ip, port);
            let result = match request.container.protocol {
                Protocol::Tcp => TcpListener::bind(address).await.map(Socket::Tcp),
                Protocol::Udp => UdpSocket::bind(address).await.map(Socket::Udp),
            };
            match result {
                Ok(socket) => {
                    bound = Some(socket);
                    break;
                }
                Err(e) => last_error = Some((address, e)),
            }
        }
        let Some(socket) = bound else {
            let (address, source) = last_error.expect("a port range has at least one port");
            return Err(Error::BindPort {
                container: container_id.to_owned(),
                address,
                source,
            });
        };
        let upstream = SocketAddr::new(IpAddr::V4(target), request.container.port);
        let local = socket.local_addr().map_err(|source| Error::BindPort {
            container: container_id.to_owned(),
            address: SocketAddr::new(request.host_ip, low),
            source,
        })?;
        proxies.mappings.push(PortMapping {
            host_ip: request.host_ip,
            host_port: local.port(),
            container_port: request.container.port,
            protocol: request.container.protocol,
        });
        proxies.tasks.push(match socket {
            Socket::Tcp(listener) => tokio::spawn(proxy_tcp(listener, upstream)),
            Socket::Udp(socket) => tokio::spawn(proxy_udp(Arc::new(socket), upstream)),
        });
    }
    Ok(proxies)
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Socket::Tcp(l) => l.local_addr(),
            Socket::Udp(s) => s.local_addr(),
        }
    }
}

/// How long a connect to the container is retried: a client that connects
/// right after `docker run -d` returns waits for the server to listen.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

async fn proxy_tcp(listener: TcpListener, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        connections.spawn(async move {
            let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
            let mut server = loop {
                match TcpStream::connect(upstream).await {
                    Ok(server) => break server,
                    Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        tracing::debug!(%upstream, error = %e, "port proxy: connect failed");
                        return;
                    }
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// A UDP flow with no traffic for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(60);

async fn proxy_udp(socket: Arc<UdpSocket>, upstream: SocketAddr) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            Some(Ok(client)) = replies.join_next(), if !replies.is_empty() => {
                flows.remove(&client);
                continue;
            }
        };
        let Ok((len, client)) = received else {
            continue;
        };
        let flow = if let Some(flow) = flows.get(&client) {
            flow.clone()
        } else {
            let Ok(flow) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
                continue;
            };
            if flow.connect(upstream).await.is_err() {
                continue;
            }
            let flow = Arc::new(flow);
            flows.insert(client, flow.clone());
            let (flow_reader, socket) = (flow.clone(), socket.clone());
            replies.spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(Ok(len)) =
                    tokio::time::timeout(UDP_IDLE, flow_reader.recv(&mut buf)).await
                {
                    let _ = socket.send_to(&buf[..len], client).await;
                }
                client
            });
            flow
        };
        let _ = flow.send(&buf[..len]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_port_defaults_to_tcp() {
        let port = ContainerPort::parse("80").unwrap();
        assert_eq!(port.key(), "80/tcp");
    }

    #[test]
    fn container_port_rejects_sctp() {
        assert!(ContainerPort::parse("80/sctp").is_err());
    }

    #[test]
    fn plan_reads_host_ip_and_port() {
        let bindings = BTreeMap::from([(
            "80/tcp".to_owned(),
            vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "18080".into(),
            }],
        )]);
        let plan = plan(&bindings, &[], false).unwrap();
        assert_eq!(plan[0].host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(plan[0].host_ports, (18080, 18080));
    }

    #[test]
    fn plan_publish_all_adds_random_ports_for_unbound_exposed_ports() {
        let bindings = BTreeMap::from([("80/tcp".to_owned(), vec![PortBinding::default()])]);
        let exposed = ["80/tcp".to_owned(), "53/udp".to_owned()];
        let plan = plan(&bindings, &exposed, true).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[1].container.key(), "53/udp");
        assert_eq!(plan[1].host_ports, (0, 0));
    }

    #[test]
    fn plan_parses_host_port_ranges() {
        let bindings = BTreeMap::from([(
            "80/tcp".to_owned(),
            vec![PortBinding {
                host_ip: String::new(),
                host_port: "8000-8010".into(),
            }],
        )]);
        assert_eq!(
            plan(&bindings, &[], false).unwrap()[0].host_ports,
            (8000, 8010)
        );
    }

    #[test]
    fn plan_rejects_a_reversed_range() {
        let bindings = BTreeMap::from([(
            "80/tcp".to_owned(),
            vec![PortBinding {
                host_ip: String::new(),
                host_port: "9-8".into(),
            }],
        )]);
        assert!(plan(&bindings, &[], false).is_err());
    }
}
