//! Port-publish race: 100 × (`docker run -d -p 127.0.0.1:P:80 busybox
//! httpd`, then connect to P at once), counting refused connects (target
//! 0) and requests that were answered. The baseline is the same connect to a
//! port nobody listens on, which must be refused every time: it shows that
//! the probe detects a missing listener.
//!
//! The client runs in the engine's network namespace (where published ports
//! live) through `nsenter`, which adds a few milliseconds of process start
//! between `run` returning and the connect; the engine binds the host port
//! before `start` returns, so the result does not depend on that delay.
//!
//! Usage: `port-race [AGENT_BINARY]` (as root; default
//! `target/release/berth-agent`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

const ROUNDS: u16 = 100;
/// First host port used; round `i` publishes on `BASE_PORT + i`.
const BASE_PORT: u16 = 19000;
const HTTPD: &str = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 80 -h /www";

/// Runs `args` in the engine's network namespace; true when it exits 0.
fn in_engine_netns(engine: &NativeEngine, args: &[&str]) -> Result<bool> {
    let status = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", engine.netns))
        .args(args)
        .output()
        .context("running nsenter")?
        .status;
    Ok(status.success())
}

fn main() -> Result<()> {
    let agent = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/release/berth-agent".into()),
    );
    let agent = agent
        .canonicalize()
        .with_context(|| format!("agent binary {}", agent.display()))?;
    let engine = NativeEngine::start(&agent);
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));

    let mut refused = 0;
    let mut answered = 0;
    let mut baseline_refused = 0;
    let start = Instant::now();
    for round in 0..ROUNDS {
        let port = (BASE_PORT + round).to_string();
        let publish = format!("127.0.0.1:{port}:80");
        let name = format!("race{round}");
        // A bare TCP connect: bash opens /dev/tcp/HOST/PORT with connect(2).
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        engine.docker_ok(&[
            "run", "-d", "--name", &name, "-p", &publish, "busybox", "sh", "-c", HTTPD,
        ]);
        if !in_engine_netns(&engine, &["bash", "-c", &probe])? {
            refused += 1;
        }
        let url = format!("http://127.0.0.1:{port}/");
        if in_engine_netns(&engine, &["busybox", "wget", "-qO-", &url])? {
            answered += 1;
        }
        engine.docker_ok(&["rm", "-f", &name]);
        if !in_engine_netns(&engine, &["bash", "-c", &probe])? {
            baseline_refused += 1;
        }
    }
    let elapsed = start.elapsed();

    println!(
        "port-publish race, {ROUNDS} rounds ({:.1} s):",
        elapsed.as_secs_f64()
    );
    println!("  refused connects right after run -d -p: {refused} (target 0)");
    println!("  requests answered:                      {answered}/{ROUNDS}");
    println!(
        "  baseline, connects after rm refused:    {baseline_refused}/{ROUNDS} (expected {ROUNDS})"
    );
    Ok(())
}
