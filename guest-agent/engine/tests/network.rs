//! Component tests of `berth_engine::network` against the real kernel.
//!
//! Each test runs on a thread that first moves into a fresh network
//! namespace of its own (`unshare(CLONE_NEWNET)` affects only the calling
//! thread), so bridges, veths and nftables rules live there and vanish with
//! it; the machine's own namespace is never touched and no packet leaves
//! 127.0.0.0/8 or the test's namespaces. Needs root: feature
//! `privileged-tests`.
#![cfg(feature = "privileged-tests")]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_engine::network::{
    AttachRequest, CreateRequest, EndpointRequest, Networks, NetworksConfig, PortBinding, PortEvent,
};

/// Runs `test` on a current-thread runtime inside a new network namespace.
fn in_private_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare net (root?)");
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(status.expect("run ip").success());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test());
    })
    .join()
    .expect("test thread");
}

fn attach_request(id: &str, name: &str, network: &str, aliases: &[&str]) -> AttachRequest {
    AttachRequest {
        id: format!("{id:0<64}"),
        name: name.into(),
        hostname: name.into(),
        endpoints: vec![EndpointRequest {
            network: network.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            ipv4_address: None,
            mac_address: None,
            links: Vec::new(),
        }],
        ..AttachRequest::default()
    }
}

/// Runs `program args` inside the namespace at `netns`; returns stdout.
/// Async, so the engine's tasks (the DNS resolver) keep running meanwhile.
async fn run_in(netns: &Path, program: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .await
        .expect("run nsenter");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts a thread in `netns` that serves one TCP connection: reads a line,
/// answers `echo:<line>`.
fn tcp_echo_once(netns: &Path, port: u16) -> std::thread::JoinHandle<()> {
    let file = std::fs::File::open(netns).expect("open netns");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind");
        ready_tx.send(()).expect("signal ready");
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("read");
        stream.write_all(b"echo:").expect("write");
        stream.write_all(&buf[..n]).expect("write");
    });
    ready_rx.recv().expect("listener ready");
    handle
}

/// Like [`tcp_echo_once`] for one UDP datagram.
fn udp_echo_once(netns: &Path, port: u16) -> std::thread::JoinHandle<()> {
    let file = std::fs::File::open(netns).expect("open netns");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind");
        ready_tx.send(()).expect("signal ready");
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).expect("recv");
        socket.send_to(&buf[..n], from).expect("send");
    });
    ready_rx.recv().expect("socket ready");
    handle
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_address_and_name() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();
        networks
            .create(CreateRequest {
                name: "appnet".into(),
                ..CreateRequest::default()
            })
            .await
            .unwrap();

        let a = networks
            .attach(attach_request("a", "client", "appnet", &[]))
            .await
            .unwrap();
        let b = networks
            .attach(attach_request("b", "server", "appnet", &["db"]))
            .await
            .unwrap();

        let gateway = &a.primary.gateway;
        assert_eq!(gateway, "172.18.0.1");
        run_in(
            &a.netns_path,
            "busybox",
            &["ping", "-c1", "-W2", &b.primary.ip_address],
        )
        .await;
        let lookup = run_in(&a.netns_path, "busybox", &["nslookup", "db", gateway]).await;
        assert!(
            lookup.contains(&b.primary.ip_address),
            "nslookup db: {lookup}"
        );
        let lookup = run_in(&a.netns_path, "busybox", &["nslookup", "server", gateway]).await;
        assert!(
            lookup.contains(&b.primary.ip_address),
            "nslookup server: {lookup}"
        );
        assert_eq!(a.resolv_conf, format!("nameserver {gateway}\n"));
        assert!(
            b.hosts
                .ends_with(&format!("{}\tserver\n", b.primary.ip_address))
        );

        networks.detach(&format!("{:0<64}", "a")).await;
        networks.detach(&format!("{:0<64}", "b")).await;
    });
}

#[test]
fn default_bridge_gives_an_address_and_reaches_the_gateway() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();

        let attached = networks
            .attach(attach_request("c", "c", "bridge", &[]))
            .await
            .unwrap();

        assert_eq!(attached.primary.ip_address, "172.17.0.2");
        assert_eq!(attached.primary.mac_address, "02:42:ac:11:00:02");
        run_in(
            &attached.netns_path,
            "busybox",
            &["ping", "-c1", "-W2", "172.17.0.1"],
        )
        .await;
        let routes = run_in(&attached.netns_path, "ip", &["route"]).await;
        assert!(
            routes.contains("default via 172.17.0.1 dev eth0"),
            "{routes}"
        );
        networks.detach(&format!("{:0<64}", "c")).await;
    });
}

#[test]
fn published_tcp_and_udp_ports_reach_the_container() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();
        let mut events = networks.subscribe_port_events();
        let mut request = attach_request("p", "p", "bridge", &[]);
        // Host port 0: the kernel picks one, as with `-p 127.0.0.1::8080`.
        request.port_bindings = BTreeMap::from([
            (
                "8080/tcp".to_owned(),
                vec![PortBinding {
                    host_ip: "127.0.0.1".into(),
                    host_port: String::new(),
                }],
            ),
            (
                "5353/udp".to_owned(),
                vec![PortBinding {
                    host_ip: "127.0.0.1".into(),
                    host_port: String::new(),
                }],
            ),
        ]);

        let attached = networks.attach(request).await.unwrap();
        let id = format!("{:0<64}", "p");
        let published = networks.published(&id);
        let tcp_port: u16 = attached.ports["8080/tcp"][0].host_port.parse().unwrap();
        let udp_port: u16 = attached.ports["5353/udp"][0].host_port.parse().unwrap();
        assert_eq!(published.len(), 2);
        assert!(matches!(events.try_recv(), Ok(PortEvent::Opened { .. })));

        let server = tcp_echo_once(&attached.netns_path, 8080);
        let reply = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, tcp_port)).unwrap();
            stream.write_all(b"hello").unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            reply
        })
        .await
        .unwrap();
        server.join().unwrap();
        assert_eq!(reply, "echo:hello");

        let server = udp_echo_once(&attached.netns_path, 5353);
        let reply = tokio::task::spawn_blocking(move || {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            socket
                .send_to(b"ping", SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port)))
                .unwrap();
            let mut buf = [0u8; 16];
            let n = socket.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .await
        .unwrap();
        server.join().unwrap();
        assert_eq!(reply, b"ping");

        networks.detach(&id).await;
        assert!(networks.published(&id).is_empty());
        assert!(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, tcp_port)).is_err());
    });
}

#[test]
fn network_rm_is_refused_while_in_use_and_cleans_up_after() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();
        let record = networks
            .create(CreateRequest {
                name: "busy".into(),
                subnet: Some("10.77.0.0/24".into()),
                ..CreateRequest::default()
            })
            .await
            .unwrap();
        let attached = networks
            .attach(attach_request("r", "r", "busy", &[]))
            .await
            .unwrap();

        let bridge_was_up = berth_engine::network::bridge::link_exists(&record.bridge).await;
        let refused = networks.remove("busy").await;
        networks.detach(&format!("{:0<64}", "r")).await;
        let removed = networks.remove("busy").await;

        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("has active endpoints")
        );
        removed.unwrap();
        assert!(bridge_was_up);
        assert!(!attached.netns_path.exists());
        assert!(!berth_engine::network::bridge::link_exists(&record.bridge).await);
    });
}

#[test]
fn predefined_networks_cannot_be_removed() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();

        let refused = networks.remove("bridge").await;

        assert!(refused.unwrap_err().to_string().contains("pre-defined"));
    });
}

#[test]
fn connect_adds_and_disconnect_removes_an_interface() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();
        networks
            .create(CreateRequest {
                name: "extra".into(),
                ..CreateRequest::default()
            })
            .await
            .unwrap();
        let id = format!("{:0<64}", "x");
        let attached = networks
            .attach(attach_request("x", "x", "bridge", &[]))
            .await
            .unwrap();

        let (network, settings) = networks
            .connect(
                &id,
                "x",
                EndpointRequest {
                    network: "extra".into(),
                    aliases: vec!["api".into()],
                    ipv4_address: None,
                    mac_address: None,
                    links: Vec::new(),
                },
            )
            .await
            .unwrap();
        let connected = run_in(&attached.netns_path, "ip", &["-o", "-4", "addr"]).await;
        networks.disconnect(&id, "extra").await.unwrap();
        let disconnected = run_in(&attached.netns_path, "ip", &["-o", "-4", "addr"]).await;

        // Connecting again takes the lowest free name, eth1, again.
        networks
            .connect(
                &id,
                "x",
                EndpointRequest {
                    network: "extra".into(),
                    ..EndpointRequest::default()
                },
            )
            .await
            .unwrap();
        let reconnected = run_in(&attached.netns_path, "ip", &["-o", "-4", "addr"]).await;

        assert_eq!(network, "extra");
        assert!(reconnected.contains("eth1"), "{reconnected}");
        assert!(
            connected.contains(&format!("eth1    inet {}/", settings.ip_address)),
            "{connected}"
        );
        assert!(!disconnected.contains("eth1"), "{disconnected}");
        networks.detach(&id).await;
    });
}

#[test]
fn user_networks_are_isolated_from_each_other() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();
        for name in ["left", "right"] {
            networks
                .create(CreateRequest {
                    name: name.into(),
                    ..CreateRequest::default()
                })
                .await
                .unwrap();
        }
        let left = networks
            .attach(attach_request("l", "l", "left", &[]))
            .await
            .unwrap();
        let right = networks
            .attach(attach_request("r", "r", "right", &[]))
            .await
            .unwrap();

        let cross = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", left.netns_path.display()))
            .args(["busybox", "ping", "-c1", "-W1", &right.primary.ip_address])
            .output()
            .await
            .unwrap();
        let own_gateway = run_in(
            &left.netns_path,
            "busybox",
            &["ping", "-c1", "-W1", &left.primary.gateway],
        )
        .await;

        // Forwarding is on, so only the isolation rule stops the ping.
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        let table = tokio::process::Command::new("nft")
            .args(["list", "table", "ip", "berth"])
            .output()
            .await
            .unwrap();
        assert_eq!(forwarding.trim(), "1");
        assert!(String::from_utf8_lossy(&table.stdout).contains("oifname @bridges drop"));
        assert!(!cross.status.success(), "left reached right across bridges");
        assert!(own_gateway.contains("1 packets received"));
        networks.detach(&format!("{:0<64}", "l")).await;
        networks.detach(&format!("{:0<64}", "r")).await;
    });
}

/// `A server` as a stub resolver sends it over TCP: length prefix, id 7.
const TCP_QUERY_SERVER_A: &[u8] = &[
    0, 24, 0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 6, b's', b'e', b'r', b'v', b'e', b'r', 0, 0, 1, 0, 1,
];

#[test]
fn the_resolver_answers_over_tcp() {
    in_private_netns(|| async {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path(), NetworksConfig::default()).unwrap();
        networks
            .create(CreateRequest {
                name: "tcpdns".into(),
                ..CreateRequest::default()
            })
            .await
            .unwrap();
        let client = networks
            .attach(attach_request("c", "client", "tcpdns", &[]))
            .await
            .unwrap();
        let server = networks
            .attach(attach_request("s", "server", "tcpdns", &[]))
            .await
            .unwrap();

        let netns = std::fs::File::open(&client.netns_path).unwrap();
        let gateway: Ipv4Addr = client.primary.gateway.parse().unwrap();
        // A plain thread: it moves into the client's namespace for good.
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut stream = std::net::TcpStream::connect((gateway, 53)).unwrap();
            stream.write_all(TCP_QUERY_SERVER_A).unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).unwrap();
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply).unwrap();
            reply_tx.send(reply).unwrap();
        });
        let reply = reply_rx.await.unwrap();

        let server_ip: Ipv4Addr = server.primary.ip_address.parse().unwrap();
        assert_eq!(&reply[..2], &[0, 7], "same id");
        assert_eq!(&reply[reply.len() - 4..], &server_ip.octets());
        networks.detach(&format!("{:0<64}", "c")).await;
        networks.detach(&format!("{:0<64}", "s")).await;
    });
}
