//! `docker run --rm busybox true` through the engine, against the bare
//! runtime floor (the same container started by the runtime helper alone).
//!
//! Usage: `engine-run [AGENT_BINARY] [RUNS]` (as root; default agent is
//! `target/release/berth-agent`, default 20 runs).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_bench::{median, ms};
use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let agent = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/release/berth-agent".into()),
    );
    let runs: usize = args
        .next()
        .map_or(Ok(20), |r| r.parse())
        .context("RUNS must be a number")?;
    let agent = agent
        .canonicalize()
        .with_context(|| format!("agent binary {}", agent.display()))?;
    let engine = NativeEngine::start(&agent);
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));

    // Warm up (page cache, first overlay mount).
    engine.docker_ok(&["run", "--rm", "busybox", "true"]);
    let mut engine_runs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        engine.docker_ok(&["run", "--rm", "busybox", "true"]);
        engine_runs.push(start.elapsed());
    }

    // The floor: a container's resolved runtime spec, started by the helper alone.
    let id = engine
        .docker_ok(&["create", "busybox", "true"])
        .trim()
        .to_owned();
    engine.docker_ok(&["start", "-a", &id]);
    let spec_path = engine
        .dir
        .path()
        .join("root/containers")
        .join(&id)
        .join("runtime.json");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&spec_path)?)?;
    let cgroups: Vec<PathBuf> = spec["cgroup_procs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str())
                .map(|p| Path::new(p).parent().unwrap_or(Path::new("/")).to_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut floor_runs = Vec::with_capacity(runs);
    for _ in 0..=runs {
        for dir in &cgroups {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let start = Instant::now();
        run_helper(&agent, &engine.netns, &spec_path)?;
        floor_runs.push(start.elapsed());
        for dir in &cgroups {
            let _ = std::fs::remove_dir(dir);
        }
    }
    floor_runs.remove(0);

    let engine_median = median(&mut engine_runs);
    let floor_median = median(&mut floor_runs);
    println!("engine-run: {runs} runs each");
    println!(
        "  docker run --rm busybox true (engine): median {}",
        ms(engine_median)
    );
    println!(
        "  runtime floor (helper alone):         median {}",
        ms(floor_median)
    );
    println!(
        "  ratio engine/floor: {:.2}x   (target: engine <= 45 ms; dockerd measured 437 ms here)",
        engine_median.as_secs_f64() / floor_median.as_secs_f64()
    );
    Ok(())
}

/// Runs the shim on `spec` inside the engine's network namespace and waits.
fn run_helper(agent: &Path, netns: &str, spec: &Path) -> Result<Duration> {
    let (read, write) = std::io::pipe().context("creating the sync pipe")?;
    let write_fd = write.as_raw_fd();
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/var/run/netns/{netns}"))
        .arg("--")
        .arg(agent)
        .arg("__berth-shim")
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dup_to_3(&mut command, write_fd);
    let start = Instant::now();
    let status = command.status().context("running the runtime helper")?;
    drop(write);
    drop(read);
    if !status.success() {
        bail!("the runtime helper failed: {status}");
    }
    Ok(start.elapsed())
}

#[expect(
    unsafe_code,
    reason = "pre_exec to hand the sync pipe to the helper on fd 3"
)]
fn dup_to_3(command: &mut Command, fd: i32) {
    // SAFETY: dup2 is async-signal-safe; `fd` stays open until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
