//! Published ports: host listeners that forward to the guest.
//!
//! For every port the guest announces, the host listens on the same port
//! on `127.0.0.1` and sends each connection (TCP) or each peer's datagrams
//! (UDP) through its own vsock stream to [`PORT_FORWARD`], whose first frame
//! names the guest port ([`ForwardTarget`]). Then a TCP stream carries
//! [`berth_proto::stream`] frames (so half-closes cross), a UDP stream
//! [`datagram`] frames. A port announced twice (say,
//! for `0.0.0.0` and `::`) is listened on once and closed with the last
//! announcement.
//!
//! Privileged ports: where binding `127.0.0.1:<port>` below 1024 is refused
//! (macOS lets unprivileged users bind low ports only on the wildcard
//! address), the forwarder binds `0.0.0.0:<port>` instead and closes every
//! connection, or drops every datagram, that does not come from loopback,
//! as Docker Desktop and Lima do. Nothing is reachable from the network.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::control::{ForwardTarget, Proto};
use berth_proto::datagram;
use berth_proto::ports::PORT_FORWARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::rules::{Decision, PortRule, decide};
use crate::{Error, Result, VsockDialer};

/// A UDP peer's stream is closed after this long without a datagram.
const UDP_IDLE: Duration = Duration::from_secs(120);

/// The host's listeners for the guest's published ports.
pub struct PortForwarder {
    dialer: Arc<dyn VsockDialer>,
    rules: Vec<PortRule>,
    /// By protocol and guest port.
    listening: Mutex<HashMap<(Proto, u16), Listening>>,
}

struct Listening {
    refs: u32,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One forwarded port, as [`PortForwarder::list`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub proto: Proto,
    /// The guest port.
    pub port: u16,
    /// Where the host listens.
    pub addr: SocketAddr,
}

impl PortForwarder {
    /// A forwarder applying `rules` (see [`crate::rules`]).
    pub fn new(dialer: Arc<dyn VsockDialer>, rules: Vec<PortRule>) -> Self {
        Self {
            dialer,
            rules,
            listening: Mutex::new(HashMap::new()),
        }
    }

    /// Forwards guest `port`, bound in the guest at `guest_ip`, as the rules
    /// decide: returns where the host listens, or `None` when a rule
    /// ignores the port. A port already forwarded gains one more reference.
    pub async fn open(
        &self,
        proto: Proto,
        port: u16,
        guest_ip: IpAddr,
    ) -> Result<Option<SocketAddr>> {
        if let Some(existing) = self.lock().get_mut(&(proto, port)) {
            existing.refs += 1;
            return Ok(Some(existing.addr));
        }
        let Decision::Forward { host_ip, host_port } = decide(&self.rules, proto, guest_ip, port)
        else {
            tracing::info!(?proto, port, "port ignored by a portForwards rule");
            return Ok(None);
        };
        let target = ForwardTarget {
            proto,
            port,
            ip: guest_target(guest_ip),
        };
        let dialer = self.dialer.clone();
        let (addr, task) = match proto {
            Proto::Tcp => {
                let (listener, loopback_only) = bind_tcp(host_ip, host_port)?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| bind_error(proto, port, source))?;
                (
                    addr,
                    tokio::spawn(serve_tcp(listener, loopback_only, dialer, target)),
                )
            }
            Proto::Udp => {
                let (socket, loopback_only) = bind_udp(host_ip, host_port).await?;
                let addr = socket
                    .local_addr()
                    .map_err(|source| bind_error(proto, port, source))?;
                (
                    addr,
                    tokio::spawn(serve_udp(socket, loopback_only, dialer, target)),
                )
            }
        };
        let mut listening = self.lock();
        // Another open of the same port may have won while this one bound.
        if let Some(existing) = listening.get_mut(&(proto, port)) {
            existing.refs += 1;
            task.abort();
            return Ok(Some(existing.addr));
        }
        listening.insert(
            (proto, port),
            Listening {
                refs: 1,
                addr,
                task,
            },
        );
        tracing::info!(?proto, port, %addr, "forwarding port");
        Ok(Some(addr))
    }

    /// Drops one reference to a forwarded port; the last one closes it.
    pub fn close(&self, proto: Proto, port: u16) {
        let mut listening = self.lock();
        if let Some(existing) = listening.get_mut(&(proto, port)) {
            existing.refs -= 1;
            if existing.refs == 0 {
                listening.remove(&(proto, port));
                tracing::info!(?proto, port, "stopped forwarding port");
            }
        }
    }

    /// The forwarded ports, sorted.
    pub fn list(&self) -> Vec<Forwarded> {
        let mut out: Vec<Forwarded> = self
            .lock()
            .iter()
            .map(|(&(proto, port), l)| Forwarded {
                proto,
                port,
                addr: l.addr,
            })
            .collect();
        out.sort_by_key(|f| (f.port, f.proto == Proto::Udp));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Proto, u16), Listening>> {
        self.listening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where in the guest a port bound at `guest_ip` is reached: its loopback
/// for a wildcard (or loopback) binding, else that address.
fn guest_target(guest_ip: IpAddr) -> Option<String> {
    if guest_ip.is_unspecified() && guest_ip.is_ipv6() {
        Some("::1".into())
    } else if guest_ip.is_unspecified() || guest_ip.is_loopback() {
        None
    } else {
        Some(guest_ip.to_string())
    }
}

fn bind_error(proto: Proto, port: u16, source: io::Error) -> Error {
    Error::BindPort {
        proto: match proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        },
        port,
        source,
    }
}

/// Whether to retry a refused low port on the wildcard address.
fn privileged_fallback(port: u16, err: &io::Error) -> bool {
    port < 1024 && err.kind() == io::ErrorKind::PermissionDenied
}

fn bind_tcp(host_ip: IpAddr, port: u16) -> Result<(TcpListener, bool)> {
    let listen = |ip: IpAddr| -> io::Result<TcpListener> {
        let socket = if ip.is_ipv6() {
            TcpSocket::new_v6()?
        } else {
            TcpSocket::new_v4()?
        };
        // A port just released may still have connections in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(ip, port))?;
        socket.listen(1024)
    };
    match listen(host_ip) {
        Ok(l) => Ok((l, false)),
        Err(e) if host_ip.is_loopback() && privileged_fallback(port, &e) => {
            listen(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                .map(|l| (l, true))
                .map_err(|source| bind_error(Proto::Tcp, port, source))
        }
        Err(source) => Err(bind_error(Proto::Tcp, port, source)),
    }
}

async fn bind_udp(host_ip: IpAddr, port: u16) -> Result<(UdpSocket, bool)> {
    match UdpSocket::bind((host_ip, port)).await {
        Ok(s) => Ok((s, false)),
        Err(e) if host_ip.is_loopback() && privileged_fallback(port, &e) => {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
                .await
                .map(|s| (s, true))
                .map_err(|source| bind_error(Proto::Udp, port, source))
        }
        Err(source) => Err(bind_error(Proto::Udp, port, source)),
    }
}

async fn serve_tcp(
    listener: TcpListener,
    loopback_only: bool,
    dialer: Arc<dyn VsockDialer>,
    target: ForwardTarget,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, port = target.port, "accepting a forwarded connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if loopback_only && !peer.ip().is_loopback() {
            tracing::warn!(%peer, port = target.port, "refused a non-loopback connection");
            continue;
        }
        let _ = client.set_nodelay(true);
        let dialer = dialer.clone();
        let first = berth_proto::encode(&target);
        let port = target.port;
        tokio::spawn(async move {
            let mut guest = match dialer.dial(PORT_FORWARD).await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(%err, port, "dialing the guest for a forwarded connection");
                    return;
                }
            };
            if guest.write_all(&first).await.is_err() {
                return;
            }
            crate::splice::splice(client, guest).await;
        });
    }
}

type Peers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

async fn serve_udp(
    socket: UdpSocket,
    loopback_only: bool,
    dialer: Arc<dyn VsockDialer>,
    target: ForwardTarget,
) {
    let socket = Arc::new(socket);
    let peers: Peers = Arc::default();
    let mut buf = vec![0u8; datagram::MAX_DATAGRAM];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(%err, port = target.port, "udp receive");
                continue;
            }
        };
        if loopback_only && !peer.ip().is_loopback() {
            continue;
        }
        let sender = peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer)
            .cloned();
        let sender = match sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => {
                let (tx, rx) = mpsc::channel(256);
                peers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(peer, tx.clone());
                tokio::spawn(udp_peer(
                    socket.clone(),
                    peer,
                    rx,
                    dialer.clone(),
                    target.clone(),
                    peers.clone(),
                ));
                tx
            }
        };
        // A full queue drops the datagram, as a congested network would.
        let _ = sender.try_send(buf[..n].to_vec());
    }
}

/// One host UDP peer: its datagrams go through one vsock stream, and the
/// guest's replies come back to it.
async fn udp_peer(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
    dialer: Arc<dyn VsockDialer>,
    target: ForwardTarget,
    peers: Peers,
) {
    let result = async {
        let guest = dialer.dial(PORT_FORWARD).await?;
        let (mut rd, mut wr) = guest.into_split();
        wr.write_all(&berth_proto::encode(&target)).await?;
        let mut inbound = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut frame = Vec::new();
        loop {
            tokio::select! {
                got = datagrams.recv() => {
                    let Some(payload) = got else { return Ok(()) };
                    frame.clear();
                    datagram::encode_into(&payload, &mut frame);
                    wr.write_all(&frame).await?;
                }
                n = rd.read(&mut chunk) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    inbound.extend_from_slice(&chunk[..n]);
                    while let Some((range, used)) = datagram::decode(&inbound) {
                        let _ = socket.send_to(&inbound[range], peer).await;
                        inbound.drain(..used);
                    }
                }
                () = tokio::time::sleep(UDP_IDLE) => return Ok::<(), io::Error>(()),
            }
        }
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(%err, %peer, port = target.port, "udp forward ended");
    }
    peers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&peer);
}

#[cfg(test)]
mod tests {
    use berth_proto::stream_io::Framed;
    use tokio::net::{TcpStream, UnixStream};

    use super::*;
    use crate::testing::PairDialer;

    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn forwarder() -> (PortForwarder, mpsc::UnboundedReceiver<(u32, UnixStream)>) {
        let (tx, guests) = mpsc::unbounded_channel();
        (
            PortForwarder::new(Arc::new(PairDialer { tx }), Vec::new()),
            guests,
        )
    }

    async fn read_target(guest: &mut UnixStream) -> ForwardTarget {
        let mut buf = Vec::new();
        loop {
            if let Some((t, used)) = berth_proto::decode::<ForwardTarget>(&buf).unwrap() {
                assert_eq!(used, buf.len(), "nothing after the target yet");
                return t;
            }
            let mut byte = [0u8; 1];
            guest.read_exact(&mut byte).await.unwrap();
            buf.push(byte[0]);
        }
    }

    /// A free port on 127.0.0.1 (bound and released).
    fn free_port(proto: Proto) -> u16 {
        match proto {
            Proto::Tcp => std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            Proto::Udp => std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        }
    }

    #[tokio::test]
    async fn tcp_connection_gets_a_stream_that_names_the_guest_port() {
        let (ports, mut guests) = forwarder();
        let port = free_port(Proto::Tcp);
        let addr = ports.open(Proto::Tcp, port, ANY).await.unwrap().unwrap();
        assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));

        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"hi").await.unwrap();
        let (vsock_port, mut guest) = guests.recv().await.unwrap();
        let target = read_target(&mut guest).await;
        let mut guest = Framed::new(guest);
        let mut got = [0u8; 2];
        guest.read_exact(&mut got).await.unwrap();
        guest.write_all(b"yo").await.unwrap();
        guest.flush().await.unwrap();
        let mut back = [0u8; 2];
        client.read_exact(&mut back).await.unwrap();

        assert_eq!(vsock_port, PORT_FORWARD);
        assert_eq!(
            (target.proto, target.port, target.ip),
            (Proto::Tcp, port, None)
        );
        assert_eq!((&got, &back), (b"hi", b"yo"));
    }

    /// `nc -N`, HTTP/1.0 clients: the client's half-close reaches the guest
    /// as a frame, and the guest's answer still comes back.
    #[tokio::test]
    async fn a_tcp_half_close_crosses_both_ways() {
        let (ports, mut guests) = forwarder();
        let port = free_port(Proto::Tcp);
        let addr = ports.open(Proto::Tcp, port, ANY).await.unwrap().unwrap();

        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let (_, mut guest) = guests.recv().await.unwrap();
        read_target(&mut guest).await;
        let mut guest = Framed::new(guest);
        let mut request = Vec::new();
        guest.read_to_end(&mut request).await.unwrap();
        guest.write_all(b"response").await.unwrap();
        guest.shutdown().await.unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();

        assert_eq!(request, b"request");
        assert_eq!(response, b"response");
    }

    #[tokio::test]
    async fn a_rule_moves_a_guest_port_to_another_host_port_or_ignores_it() {
        let (tx, mut guests) = mpsc::unbounded_channel();
        let host_port = free_port(Proto::Tcp);
        let rules = vec![
            PortRule {
                guest_ports: 9000..=9000,
                guest_ip: None,
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port_start: Some(host_port),
                proto: None,
                ignore: false,
            },
            PortRule {
                guest_ports: 22..=22,
                guest_ip: None,
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port_start: None,
                proto: None,
                ignore: true,
            },
        ];
        let ports = PortForwarder::new(Arc::new(PairDialer { tx }), rules);

        assert_eq!(ports.open(Proto::Tcp, 22, ANY).await.unwrap(), None);
        let addr = ports.open(Proto::Tcp, 9000, ANY).await.unwrap().unwrap();
        assert_eq!(addr.port(), host_port);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (_, mut guest) = guests.recv().await.unwrap();
        assert_eq!(
            read_target(&mut guest).await.port,
            9000,
            "the guest port is kept"
        );
    }

    #[tokio::test]
    async fn a_port_closes_with_its_last_reference() {
        let (ports, _guests) = forwarder();
        let port = free_port(Proto::Tcp);
        ports.open(Proto::Tcp, port, ANY).await.unwrap().unwrap();
        ports.open(Proto::Tcp, port, ANY).await.unwrap().unwrap();

        ports.close(Proto::Tcp, port);
        assert_eq!(ports.list().len(), 1);
        ports.close(Proto::Tcp, port);
        assert!(ports.list().is_empty());
        tokio::task::yield_now().await;

        // Released: the port binds again.
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn a_port_in_use_on_the_host_is_an_error_naming_it() {
        let (ports, _guests) = forwarder();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();

        let err = ports.open(Proto::Tcp, port, ANY).await.unwrap_err();

        assert!(
            err.to_string().contains(&format!("tcp port {port}")),
            "{err}"
        );
        assert!(ports.list().is_empty());
    }

    #[tokio::test]
    async fn udp_peers_each_get_a_stream_and_replies_come_back() {
        let (ports, mut guests) = forwarder();
        let port = free_port(Proto::Udp);
        let addr = ports.open(Proto::Udp, port, ANY).await.unwrap().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        client.send_to(b"ping", addr).await.unwrap();
        let (_, mut guest) = guests.recv().await.unwrap();
        let target = read_target(&mut guest).await;
        let mut frame = [0u8; 6];
        guest.read_exact(&mut frame).await.unwrap();
        let mut reply = Vec::new();
        datagram::encode_into(b"pong", &mut reply);
        guest.write_all(&reply).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();

        assert_eq!(target.proto, Proto::Udp);
        assert_eq!(&frame, b"\x00\x04ping");
        assert_eq!((&buf[..n], from), (&b"pong"[..], addr));
    }
}
