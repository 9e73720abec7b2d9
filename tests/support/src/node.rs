//! Testcontainers for Node (`tests/node/`) as a client of an engine.
//!
//! `scripts/install-deps.sh` installs the pinned npm packages
//! (`npm ci` in `tests/node`); the suite itself is
//! `tests/node/testcontainers.test.js`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// `tests/node` in this checkout.
pub fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../node")
}

/// Runs the Testcontainers suite against `docker_host` (a `unix://` URL),
/// inside network namespace `netns` when given (a native engine publishes
/// its ports there). `host` is where published ports answer
/// (`TESTCONTAINERS_HOST_OVERRIDE`): without it, Testcontainers on a
/// machine that looks like a container (`/.dockerenv`) uses the bridge
/// gateway, which only the native engine's namespace has. Panics with what
/// to install when the packages are missing.
pub fn run_testcontainers(docker_host: &str, netns: Option<&str>, host: Option<&str>) -> Output {
    let dir = suite_dir();
    assert!(
        dir.join("node_modules/testcontainers").is_dir(),
        "{} has no node_modules: run scripts/install-deps.sh (npm ci in tests/node)",
        dir.display()
    );
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}"))
                .arg("--")
                .arg("node");
            c
        }
        None => Command::new("node"),
    };
    cmd.args([
        "--test",
        "--test-concurrency=1",
        "--test-reporter=spec",
        "--test-timeout=120000",
    ])
    .arg("testcontainers.test.js")
    .current_dir(&dir)
    .env("DOCKER_HOST", docker_host)
    .env("TESTCONTAINERS_RYUK_DISABLED", "true")
    .env_remove("DOCKER_CONTEXT")
    .env_remove("TESTCONTAINERS_HOST_OVERRIDE")
    .stdin(Stdio::null());
    if let Some(host) = host {
        cmd.env("TESTCONTAINERS_HOST_OVERRIDE", host);
    }
    cmd.output().expect("running node (Debian's nodejs)")
}

/// The closing counts of node's spec reporter, e.g. `(13, 0)`.
pub fn counts(output: &str) -> Option<(u32, u32)> {
    let find = |label: &str| {
        output.lines().find_map(|l| {
            l.trim_start_matches(['ℹ', ' '])
                .strip_prefix(label)
                .and_then(|n| n.trim().parse().ok())
        })
    };
    Some((find("pass ")?, find("fail ")?))
}
