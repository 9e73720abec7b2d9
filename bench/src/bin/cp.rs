//! `docker cp` of a 256 MiB file into and out of a running container, in
//! MiB/s, against a same-run baseline: the same file through a plain
//! `tar | tar` pipe on the host (what cp does, minus the engine).
//!
//! Usage: `cp [AGENT_BINARY]` (as root; default `target/release/berth-agent`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

const SIZE_MIB: u64 = 256;

fn rate(d: Duration) -> f64 {
    SIZE_MIB as f64 / d.as_secs_f64()
}

fn timed(mut command: Command) -> Result<Duration> {
    let start = Instant::now();
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running a copy")?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed())
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
    engine.docker_ok(&["run", "-d", "--name", "sink", "busybox", "sleep", "100000"]);

    let work = tempfile::tempdir()?;
    let payload = work.path().join("payload.bin");
    {
        let mut file = std::fs::File::create(&payload)?;
        let block: Vec<u8> = (0..1024 * 1024)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for _ in 0..SIZE_MIB {
            file.write_all(&block)?;
        }
        file.sync_all()?;
    }
    let payload_str = payload.to_str().context("utf-8 temp path")?;

    let copy_in = timed(engine.docker_cmd(&["cp", payload_str, "sink:/tmp/payload.bin"]))?;
    let out_path = work.path().join("back.bin");
    let copy_out = timed(engine.docker_cmd(&[
        "cp",
        "sink:/tmp/payload.bin",
        out_path.to_str().context("utf-8")?,
    ]))?;
    if std::fs::metadata(&out_path)?.len() != SIZE_MIB * 1024 * 1024 {
        bail!("copied-out file has the wrong size");
    }

    let baseline_dir = work.path().join("baseline");
    std::fs::create_dir(&baseline_dir)?;
    let mut pipe = Command::new("sh");
    pipe.arg("-c").arg(format!(
        "tar -C {} -cf - payload.bin | tar -C {} -xf -",
        work.path().display(),
        baseline_dir.display()
    ));
    let baseline = timed(pipe)?;

    println!("cp: {SIZE_MIB} MiB file");
    println!(
        "  docker cp in  (host -> container): {:8.1} MiB/s",
        rate(copy_in)
    );
    println!(
        "  docker cp out (container -> host): {:8.1} MiB/s",
        rate(copy_out)
    );
    println!(
        "  baseline tar|tar on the host:      {:8.1} MiB/s",
        rate(baseline)
    );
    println!(
        "  ratios to baseline: in {:.2}, out {:.2}   (dockerd measured 424 MiB/s in, 269 out on this kind of machine)",
        rate(copy_in) / rate(baseline),
        rate(copy_out) / rate(baseline)
    );
    engine.docker_ok(&["rm", "-f", "sink"]);
    Ok(())
}
