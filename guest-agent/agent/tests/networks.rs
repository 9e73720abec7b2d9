//! Networks and published ports through the real docker CLI against the
//! native engine (engine issue 3, "Networks" and "Port publishing").
//!
//! The engine runs in a network namespace the test support creates
//! (`NativeEngine::netns`), so its bridges, veths and nftables rules live
//! there and vanish with it. Host-side clients run inside that namespace too
//! (`nsenter --net=/var/run/netns/<netns>`), and every address used is
//! either loopback or a bridge inside it: no packet leaves the machine.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn engine() -> NativeEngine {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    engine
}

/// Runs `args` inside the engine's network namespace (the "host side" of
/// published ports); returns stdout.
fn in_engine_netns(engine: &NativeEngine, args: &[&str]) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", engine.netns))
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        output.status.success(),
        "{args:?} in the engine namespace failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A busybox httpd on port 80 serving `hello` at `/`.
const HTTPD: &str = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn user_network_containers_reach_each_other_by_name_and_alias() {
    let engine = engine();
    engine.docker_ok(&["network", "create", "appnet"]);
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        "appnet",
        "--network-alias",
        "db",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ]);

    let by_name = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "wget",
        "-qO-",
        "http://server/",
    ]);
    let by_alias = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "wget",
        "-qO-",
        "http://db/",
    ]);
    let ping = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "ping",
        "-c1",
        "-W2",
        "server",
    ]);

    assert_eq!(by_name, "hello\n");
    assert_eq!(by_alias, "hello\n");
    assert!(ping.contains("1 packets received"), "{ping}");
    engine.docker_ok(&["rm", "-f", "server"]);
    engine.docker_ok(&["network", "rm", "appnet"]);
}

#[test]
fn default_bridge_gives_an_address_and_reaches_the_gateway() {
    let engine = engine();

    let out = engine.docker_ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ip -4 -o addr show eth0 && ping -c1 -W2 172.17.0.1 && cat /etc/resolv.conf /etc/hosts",
    ]);

    assert!(out.contains("inet 172.17.0."), "{out}");
    assert!(out.contains("1 packets received"), "{out}");
    assert!(out.contains("nameserver 172.17.0.1"), "{out}");
    assert!(out.contains("host.docker.internal"), "{out}");
}

#[test]
fn published_port_with_host_ip_answers_from_the_engine_namespace() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:18080:80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    ]);

    // The proxy accepts at once and waits for httpd to listen.
    let body = in_engine_netns(
        &engine,
        &["busybox", "wget", "-qO-", "http://127.0.0.1:18080/"],
    );
    let port = engine.docker_ok(&["port", "web", "80/tcp"]);

    assert_eq!(body, "hello\n");
    assert_eq!(port.trim(), "127.0.0.1:18080");
    engine.docker_ok(&["rm", "-f", "web"]);
    // A bare connect (bash's /dev/tcp); busybox wget -T crashes on Debian.
    let refused = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", engine.netns))
        .args(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080"])
        .output()
        .expect("run nsenter");
    assert_eq!(refused.status.code(), Some(1), "the port is released by rm");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Connection refused"));
}

#[test]
fn publish_all_picks_a_random_host_port() {
    let engine = engine();
    engine.docker_ok(&[
        "run", "-d", "--name", "web", "--expose", "80", "-P", "busybox", "sh", "-c", HTTPD,
    ]);

    let port = engine.docker_ok(&["port", "web", "80/tcp"]);
    let host_port: u16 = port
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("docker port output: {port:?}"));
    let body = in_engine_netns(
        &engine,
        &[
            "busybox",
            "wget",
            "-qO-",
            &format!("http://127.0.0.1:{host_port}/"),
        ],
    );

    // Random ports come from the kernel's ephemeral range (32768..=60999).
    assert!(host_port >= 32768, "{host_port}");
    assert_eq!(body, "hello\n");
}

#[test]
fn udp_echo_through_a_published_port() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "-p",
        "127.0.0.1:15353:5353/udp",
        "busybox",
        "sleep",
        "300",
    ]);
    let pid = engine.docker_ok(&["inspect", "-f", "{{.State.Pid}}", id.trim()]);
    // busybox has no UDP server applet: the echo server is this test,
    // running in the container's namespace; the client runs in the engine's.
    let container_netns = std::fs::File::open(format!("/proc/{}/ns/net", pid.trim())).unwrap();
    let engine_netns = std::fs::File::open(format!("/var/run/netns/{}", engine.netns)).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        nix::sched::setns(&container_netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        socket.send_to(&buf[..n], from).unwrap();
    });
    ready_rx.recv().unwrap();

    let reply = std::thread::spawn(move || {
        nix::sched::setns(&engine_netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
            .send_to(b"ping", (Ipv4Addr::LOCALHOST, 15353))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    })
    .join()
    .unwrap();
    server.join().unwrap();

    assert_eq!(reply, b"ping");
}

#[test]
fn network_none_has_only_loopback() {
    let engine = engine();

    let links = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);

    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"]);
}

#[test]
fn network_host_sees_the_engine_namespace() {
    let engine = engine();
    // A link only the engine's namespace has.
    in_engine_netns(
        &engine,
        &["ip", "link", "add", "berthtest0", "type", "bridge"],
    );

    let links = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);

    assert!(links.contains("berthtest0"), "{links}");
}

#[test]
fn network_rm_of_a_network_in_use_is_refused() {
    let engine = engine();
    engine.docker_ok(&["network", "create", "busy"]);
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "--network",
        "busy",
        "busybox",
        "sleep",
        "300",
    ]);

    let refused = engine.docker(&["network", "rm", "busy"]);
    engine.docker_ok(&["rm", "-f", "user"]);
    let removed = engine.docker(&["network", "rm", "busy"]);

    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("active endpoints"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
}

#[test]
fn network_ls_inspect_and_prune() {
    let engine = engine();
    engine.docker_ok(&[
        "network",
        "create",
        "--subnet",
        "10.123.0.0/24",
        "--label",
        "t=1",
        "spare",
    ]);

    let ls = engine.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    let subnet = engine.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "spare",
    ]);
    let pruned = engine.docker_ok(&["network", "prune", "-f"]);
    let after = engine.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);

    for expected in ["bridge bridge", "host host", "none null", "spare bridge"] {
        assert!(ls.contains(expected), "{ls}");
    }
    assert_eq!(subnet.trim(), "10.123.0.0/24");
    assert!(pruned.contains("spare"), "{pruned}");
    assert!(!after.contains("spare"), "{after}");
}

#[test]
fn network_connect_and_disconnect_a_running_container() {
    let engine = engine();
    engine.docker_ok(&["network", "create", "front"]);
    engine.docker_ok(&["network", "create", "back"]);
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "front",
        "busybox",
        "sleep",
        "300",
    ]);

    engine.docker_ok(&["network", "connect", "--alias", "api", "back", "app"]);
    let connected = engine.docker_ok(&["exec", "app", "ip", "-o", "-4", "addr"]);
    let resolved = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "back",
        "busybox",
        "ping",
        "-c1",
        "-W2",
        "api",
    ]);
    engine.docker_ok(&["network", "disconnect", "back", "app"]);
    let disconnected = engine.docker_ok(&["exec", "app", "ip", "-o", "-4", "addr"]);

    assert!(connected.contains("eth1"), "{connected}");
    assert!(resolved.contains("1 packets received"), "{resolved}");
    assert!(!disconnected.contains("eth1"), "{disconnected}");
}

#[test]
fn add_host_and_dns_reach_the_container_files() {
    let engine = engine();

    let out = engine.docker_ok(&[
        "run",
        "--rm",
        "--add-host",
        "db.internal:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "--dns",
        "10.9.9.9",
        "--dns-search",
        "corp.example",
        "busybox",
        "cat",
        "/etc/hosts",
        "/etc/resolv.conf",
    ]);

    assert!(out.contains("10.1.2.3\tdb.internal\n"), "{out}");
    assert!(out.contains("172.17.0.1\tgw\n"), "{out}");
    assert!(out.contains("nameserver 10.9.9.9\n"), "{out}");
    assert!(out.contains("search corp.example\n"), "{out}");
}
