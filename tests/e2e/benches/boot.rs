//! Boot benchmark: `berth start` until docker answers, against a bare QEMU
//! boot of the same kernel + initramfs until PID 1 prints its marker. Also
//! the Docker API round trip through the forwarded socket and the host
//! agent's idle RSS and CPU.
//!
//! `cargo bench -p berth-e2e --features vm --bench boot`

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_driver::qemu::args::{BASE_CMDLINE, tcg_x86_cmdline, tsc_khz_from_cpuinfo};
use berth_e2e::{Harness, image_dir};
use berth_instance::InstanceConfig;

const RUNS: usize = 3;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Bare QEMU, same machine flags and size (CPUs, memory) as the driver
/// gives the instance, minus vsock/disk/net/shares. The size matters: the
/// kernel initialises every page's metadata before PID 1 runs (4 GiB boots
/// about 0.25 s slower than 2 GiB under TCG, measured).
fn bare_boot_to_marker(config: &InstanceConfig) -> Duration {
    let image = image_dir();
    let tsc = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .as_deref()
        .and_then(tsc_khz_from_cpuinfo);
    let cmdline = format!(
        "{BASE_CMDLINE} {} BERTH_INIT_MARKER=1",
        tcg_x86_cmdline(tsc)
    );
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,memory-backend=mem",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            &config.cpus.to_string(),
            "-m",
            &format!("{}M", config.memory_mib),
        ])
        .args([
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                config.memory_mib
            ),
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(image.join("vmlinux"))
        .arg("-initrd")
        .arg(image.join("initramfs.cpio.zst"))
        .args(["-append", &cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting qemu");
    let stdout = child.stdout.take().unwrap();
    let mut elapsed = None;
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().contains("berth-init: started") {
            elapsed = Some(started.elapsed());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    elapsed.expect("the marker appeared")
}

fn start_until_docker_answers(h: &Harness) -> Duration {
    let started = Instant::now();
    h.berth_ok(&["start"]);
    h.docker_ok("default", &["version"]);
    started.elapsed()
}

fn ping_rtt(h: &Harness, n: u32) -> Duration {
    let socket = h.instance_dir("default").join("docker.sock");
    let started = Instant::now();
    for _ in 0..n {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream
            .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.contains("OK"), "{response}");
    }
    started.elapsed() / n
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; after the comm they are at 11, 12.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

fn main() {
    let h = Harness::new();
    // First boot formats the data disk; measure warm boots like a user's.
    h.berth_ok(&["start"]);
    h.berth_ok(&["stop"]);

    let config = InstanceConfig::load(&h.instance_dir("default").join("config.json"))
        .expect("the default instance's config");
    let bare = median((0..RUNS).map(|_| bare_boot_to_marker(&config)).collect());
    let berth = median(
        (0..RUNS)
            .map(|_| {
                let t = start_until_docker_answers(&h);
                h.berth_ok(&["stop"]);
                t
            })
            .collect(),
    );
    start_until_docker_answers(&h);
    let rtt = ping_rtt(&h, 50);
    let agent = h.agent_pid("default");
    let qemu: i32 = std::fs::read_to_string(h.instance_dir("default").join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (a0, q0) = (cpu_ticks(agent), cpu_ticks(qemu));
    std::thread::sleep(Duration::from_secs(5));
    let (a1, q1) = (cpu_ticks(agent), cpu_ticks(qemu));
    let (agent_rss, qemu_rss) = (rss_kib(agent), rss_kib(qemu));
    h.berth_ok(&["stop"]);

    println!(
        "boot (median of {RUNS}, QEMU TCG, {} CPUs, {} MiB):",
        config.cpus, config.memory_mib
    );
    println!(
        "  bare QEMU to PID 1 marker           {:>8.2} s",
        bare.as_secs_f64()
    );
    println!(
        "  berth start until docker answers    {:>8.2} s",
        berth.as_secs_f64()
    );
    println!(
        "  ratio berth / bare                  {:>8.2}x  (target <= 1.2x)",
        berth.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "docker API /_ping through the forwarded socket: {:.2} ms per request (new connection each)",
        rtt.as_secs_f64() * 1e3
    );
    println!(
        "idle host agent: RSS {} KiB, CPU {} ticks in 5 s",
        agent_rss,
        a1 - a0
    );
    println!(
        "idle QEMU:       RSS {} KiB, CPU {} ticks in 5 s (guest idle incl. timer emulation)",
        qemu_rss,
        q1 - q0
    );
}
