//! I/O benchmarks through a real VM (issue 4), each against a baseline
//! measured in the same run:
//!
//! - TCP throughput host -> container through the published-port forward,
//!   against a vsock stream to the same guest port written directly (in
//!   the forward's own frames, `berth_proto::stream`, which the guest
//!   expects);
//! - virtio-fs sequential read and a small-file stat+read workload in a
//!   container, against the same on the host;
//! - latency from a host write to a guest inotify watcher's event.
//!
//! `cargo bench -p berth-e2e --features vm --bench io`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use berth_e2e::{Harness, free_port};
use berth_forward::{HybridDialer, VsockDialer};
use berth_proto::control::{ForwardTarget, Proto};
use berth_proto::stream;

const BUSYBOX: &str = "busybox:e2e";
const MIB: usize = 1 << 20;
const STREAM_MIB: usize = 128;

/// Sends `STREAM_MIB` MiB and waits for the sink's `done`.
fn push(stream: &mut (impl Read + Write)) -> Duration {
    let chunk = vec![0x5au8; MIB];
    let started = Instant::now();
    for _ in 0..STREAM_MIB {
        stream.write_all(&chunk).unwrap();
    }
    let mut done = [0u8; 4];
    stream.read_exact(&mut done).unwrap();
    assert_eq!(&done, b"done");
    started.elapsed()
}

/// [`push`] on a vsock stream to the port forward: the same bytes as data
/// frames (encoded before the clock starts), the reply decoded from frames.
fn push_framed(stream: &mut (impl Read + Write)) -> Duration {
    let mut chunk = Vec::new();
    stream::encode_data(&vec![0x5au8; MIB], &mut chunk);
    let started = Instant::now();
    for _ in 0..STREAM_MIB {
        stream.write_all(&chunk).unwrap();
    }
    let mut decoder = stream::Decoder::new();
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while reply.len() < 4 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the forward closed before the sink answered");
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, event) = decoder.decode(input, usize::MAX).unwrap();
            if let Some(stream::Event::Data(range)) = event {
                reply.extend_from_slice(&input[range]);
            }
            input = &input[used..];
        }
    }
    assert_eq!(reply, b"done");
    started.elapsed()
}

fn mib_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / MIB as f64 / t.as_secs_f64()
}

fn main() {
    let h = Harness::new();
    let project = tempfile::Builder::new()
        .prefix("berth-bench-io-")
        .tempdir_in(std::env::var_os("HOME").expect("HOME"))
        .unwrap();
    let dir = project.path();
    std::fs::write(dir.join("big"), vec![7u8; 256 * MIB]).unwrap();
    std::fs::create_dir(dir.join("small")).unwrap();
    for i in 0..2000 {
        std::fs::write(dir.join(format!("small/f{i}")), vec![1u8; 4096]).unwrap();
    }
    let src = dir.display().to_string();
    h.berth_ok(&["start"]);
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_with_tools()
        .docker_archive(&images.path().join("tools.tar"), &[BUSYBOX]);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);

    // --- TCP through the forward vs a raw vsock stream.
    let port = free_port();
    let sink = format!(
        "while true; do nc -l -p 80 -e sh -c 'head -c {} > /dev/null; printf done'; done",
        STREAM_MIB * MIB
    );
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "-p",
            &format!("{port}:80"),
            BUSYBOX,
            "sh",
            "-c",
            &sink,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut forwarded = Vec::new();
    let mut raw = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dialer = HybridDialer::new(h.instance_dir("default").join("vsock.sock"));
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        forwarded.push(push(&mut tcp));
        drop(tcp);
        std::thread::sleep(Duration::from_millis(300));
        let stream = rt.block_on(async {
            let mut s = dialer.dial(berth_proto::ports::PORT_FORWARD).await.unwrap();
            let target = ForwardTarget {
                proto: Proto::Tcp,
                port,
                ip: None,
            };
            tokio::io::AsyncWriteExt::write_all(&mut s, &berth_proto::encode(&target))
                .await
                .unwrap();
            s.into_std().unwrap()
        });
        stream.set_nonblocking(false).unwrap();
        let mut stream = stream;
        raw.push(push_framed(&mut stream));
        drop(stream);
        std::thread::sleep(Duration::from_millis(300));
    }
    forwarded.sort();
    raw.sort();
    let (fwd, raw) = (
        mib_per_s(STREAM_MIB * MIB, forwarded[1]),
        mib_per_s(STREAM_MIB * MIB, raw[1]),
    );

    // --- virtio-fs reads vs the host.
    let in_container = |script: &str| -> f64 {
        let out = h.docker_ok(
            "default",
            &[
                "run",
                "--rm",
                "-v",
                &format!("{src}:/src"),
                BUSYBOX,
                "sh",
                "-c",
                &format!(
                    "s=$(cut -d' ' -f1 /proc/uptime); {script}; e=$(cut -d' ' -f1 /proc/uptime); awk \"BEGIN {{ print $e - $s }}\""
                ),
            ],
        );
        // /proc/uptime has 10 ms resolution: fine for runs of a second.
        out.trim().lines().last().unwrap().parse::<f64>().unwrap()
    };
    // Warm the guest cache once, then take the best of three.
    in_container("cat /src/big > /dev/null");
    let guest_seq = (0..3)
        .map(|_| in_container("cat /src/big > /dev/null"))
        .fold(f64::MAX, f64::min);
    let host_seq = (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut f = std::fs::File::open(dir.join("big")).unwrap();
            let mut buf = vec![0u8; MIB];
            while f.read(&mut buf).unwrap() > 0 {}
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    in_container("cat /src/small/* > /dev/null");
    let guest_small = (0..3)
        .map(|_| in_container("ls -l /src/small > /dev/null; cat /src/small/* > /dev/null"))
        .fold(f64::MAX, f64::min);
    let host_small = (0..3)
        .map(|_| {
            let t = Instant::now();
            for i in 0..2000 {
                let p = dir.join(format!("small/f{i}"));
                let _ = std::fs::metadata(&p).unwrap();
                let _ = std::fs::read(&p).unwrap();
            }
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);

    // --- host write -> guest inotify event.
    let watch_port = free_port();
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "-v",
            &format!("{src}:/src"),
            "-p",
            &format!("{watch_port}:80"),
            BUSYBOX,
            "sh",
            "-c",
            "inotifywait -m -q -e close_write --format %f /src | nc -l -p 80",
        ],
    );
    let mut events = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(s) = TcpStream::connect(("127.0.0.1", watch_port)) {
            events = Some(s);
            break;
        }
    }
    let events = events.expect("the watcher's port answers");
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lines = BufReader::new(events);
    // Warm up until the watch is established on both sides.
    let mut n = 0;
    loop {
        n += 1;
        std::fs::write(dir.join(format!("warm{n}")), "w").unwrap();
        let mut line = String::new();
        if lines.read_line(&mut line).is_ok() && line.contains("warm") {
            break;
        }
        assert!(n < 50, "the watcher never answered");
    }
    // Drain what the warm-up left.
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = Vec::new();
    for i in 0..50 {
        let name = format!("lat{i}");
        let t = Instant::now();
        std::fs::write(dir.join(&name), "x").unwrap();
        loop {
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            if line.trim_end() == name {
                latencies.push(t.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    h.berth_ok(&["delete", "-f"]);

    println!("TCP host -> container ({STREAM_MIB} MiB, median of 3, QEMU TCG):");
    println!("  through the published-port forward   {fwd:>8.1} MiB/s");
    println!("  vsock stream, framed (baseline)      {raw:>8.1} MiB/s");
    println!("  ratio forward / raw                  {:>8.2}x", fwd / raw);
    println!("virtio-fs (best of 3, warm caches):");
    println!(
        "  sequential read 256 MiB   guest {:>8.1} MiB/s   host {:>9.1} MiB/s   ratio {:.3}",
        256.0 / guest_seq,
        256.0 / host_seq,
        host_seq / guest_seq
    );
    println!(
        "  2000 x 4 KiB stat+read    guest {:>8.0} files/s  host {:>9.0} files/s  ratio {:.3}",
        2000.0 / guest_small,
        2000.0 / host_small,
        host_small / guest_small
    );
    println!(
        "host write -> guest inotify event (50 writes): median {:.1} ms, p99 {:.1} ms (target < 200 ms)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}
