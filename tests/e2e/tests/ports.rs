//! Published container ports reach the host's loopback through the host
//! agent's forwarders and vsock (issue 4, "Ports"), against a real VM.
#![cfg(feature = "vm")]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use berth_e2e::{Harness, free_port, text};

const BUSYBOX: &str = "busybox:e2e";

fn http_get(port: u16) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn published_ports_answer_on_host_loopback_as_soon_as_run_returns() {
    let h = Harness::new();
    h.berth_ok(&["start"]);
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_with_tools()
        .docker_archive(&images.path().join("tools.tar"), &[BUSYBOX]);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);

    // TCP: the very first connect after `run -d` returns must succeed.
    let port = free_port();
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &format!("{port}:80"),
            BUSYBOX,
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-the-vm > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let response = http_get(port).expect("connect right after docker run -d returned");
    assert!(response.contains("hello-from-the-vm"), "{response}");

    // UDP: an echo server (socat) through a published port.
    let udp = free_port();
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "--name",
            "echo",
            "-p",
            &format!("127.0.0.1:{udp}:7/udp"),
            BUSYBOX,
            "socat",
            "UDP4-RECVFROM:7,fork",
            "PIPE",
        ],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let mut echoed = None;
    // UDP gives no connect: retry until the echo server is reading.
    for _ in 0..40 {
        client.send_to(b"ping\n", ("127.0.0.1", udp)).unwrap();
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            echoed = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(echoed.as_deref(), Some(&b"ping\n"[..]), "udp echo");

    // A port in use on the host fails the run with a clear error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let out = h.docker(
        "default",
        &[
            "run",
            "-d",
            "-p",
            &format!("{taken_port}:80"),
            BUSYBOX,
            "sleep",
            "60",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("host tcp port {taken_port}")),
        "{}",
        text(&out.stderr)
    );

    // A listener of a plain VM process (here a host-network container,
    // which is one as far as the VM's network is concerned) is forwarded.
    let vm_port = free_port();
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "--network",
            "host",
            BUSYBOX,
            "sh",
            "-c",
            &format!("mkdir -p /w && echo vm-listener > /w/index.html && exec httpd -f -p {vm_port} -h /w"),
        ],
    );
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = http_get(vm_port) {
            answered = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answered = answered.expect("the VM listener is forwarded to the host");
    assert!(answered.contains("vm-listener"), "{answered}");

    // Removing the container releases the host port.
    h.docker_ok("default", &["rm", "-f", "web"]);
    let mut released = false;
    for _ in 0..50 {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            released = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(released, "host port {port} is released after rm");
    h.berth_ok(&["delete", "-f"]);
}
