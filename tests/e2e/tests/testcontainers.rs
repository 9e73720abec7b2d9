//! Testcontainers for Node drives the engine through the VM, as a user's
//! test suite on a Mac would: the instance's Docker socket, ports published
//! on the host's loopback, a bind mount of a host temp directory (issue 12).
#![cfg(feature = "vm")]

use berth_e2e::{Harness, text};
use berth_test_support::{images, node};

#[test]
fn testcontainers_for_node_drives_the_engine_through_the_vm() {
    let h = Harness::new();
    h.berth_ok(&["start"]);
    let dir = tempfile::tempdir().unwrap();
    let archive = images::busybox_docker_archive(dir.path(), "busybox:latest");
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);
    let socket = h.instance_dir("default").join("docker.sock");
    let out = node::run_testcontainers(
        &format!("unix://{}", socket.display()),
        None,
        Some("127.0.0.1"),
    );
    let stdout = text(&out.stdout);
    let counts = node::counts(&stdout);
    let serial =
        std::fs::read_to_string(h.instance_dir("default").join("serial.log")).unwrap_or_default();
    let serial_tail: Vec<&str> = serial.lines().rev().take(60).collect();
    assert!(
        out.status.success() && matches!(counts, Some((pass, 0)) if pass >= 13),
        "testcontainers suite through the VM failed ({:?}, counts {counts:?}):\n{stdout}\n{}\nserial tail:\n{}",
        out.status,
        text(&out.stderr),
        serial_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    );
    h.berth_ok(&["delete", "-f"]);
}
