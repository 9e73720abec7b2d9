//! Testcontainers for Node, an outside client of alternative engines, drives
//! the native engine (issue 12): wait strategies, exec, copy, networks with
//! aliases, binds and tmpfs, restart/stop, build, commit, logs, parallel
//! starts. The suite is `tests/node/testcontainers.test.js`.

use std::path::Path;

use berth_test_support::engine::NativeEngine;
use berth_test_support::{images, node};

#[test]
fn testcontainers_for_node_drives_the_native_engine() {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    let out = node::run_testcontainers(&engine.docker_host(), Some(&engine.netns), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let counts = node::counts(&stdout);
    assert!(
        out.status.success() && matches!(counts, Some((pass, 0)) if pass >= 13),
        "testcontainers suite failed ({:?}, counts {counts:?}):\n{stdout}\n{stderr}\nagent log tail:\n{}",
        out.status,
        berth_test_support::engine::tail(&engine.log(), 60),
    );
}
