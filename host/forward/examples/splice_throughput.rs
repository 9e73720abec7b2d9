//! Throughput of the forwarder's stream path without a VM: a TCP client ->
//! host splice -> a unix socketpair standing in for the vsock stream ->
//! guest splice -> a TCP sink, for the framed splice (`berth_proto::
//! stream_io::splice` on both ends, as the forwarders run it) against plain
//! byte copies (`tokio::io::copy_bidirectional`, what the forwarders did
//! before the stream framing). Both in one run, median of 5.
//!
//! `cargo run --release -p berth-forward --example splice_throughput`

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const MIB: usize = 1 << 20;
const TOTAL_MIB: usize = 512;

#[derive(Clone, Copy)]
enum Path {
    Framed,
    Plain,
}

/// Pushes `TOTAL_MIB` through the chain; returns the time until the sink
/// has counted every byte and answered.
async fn run(path: Path) -> Duration {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        while total < TOTAL_MIB * MIB {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "sink: early EOF");
            total += n;
        }
        conn.write_all(b"done").await.unwrap();
    });
    tokio::spawn(async move {
        let (client, _) = front.accept().await.unwrap();
        let (host_end, guest_end) = UnixStream::pair().unwrap();
        let guest = tokio::spawn(async move {
            let conn = TcpStream::connect(sink_addr).await.unwrap();
            match path {
                Path::Framed => berth_proto::stream_io::splice(conn, guest_end, &[])
                    .await
                    .map(|_| ()),
                Path::Plain => {
                    let (mut conn, mut guest_end) = (conn, guest_end);
                    tokio::io::copy_bidirectional(&mut conn, &mut guest_end)
                        .await
                        .map(|_| ())
                }
            }
        });
        let host = match path {
            Path::Framed => berth_proto::stream_io::splice(client, host_end, &[])
                .await
                .map(|_| ()),
            Path::Plain => {
                let (mut client, mut host_end) = (client, host_end);
                tokio::io::copy_bidirectional(&mut client, &mut host_end)
                    .await
                    .map(|_| ())
            }
        };
        host.unwrap();
        guest.await.unwrap().unwrap();
    });
    let mut client = TcpStream::connect(front_addr).await.unwrap();
    let chunk = vec![0x5au8; MIB];
    let started = Instant::now();
    for _ in 0..TOTAL_MIB {
        client.write_all(&chunk).await.unwrap();
    }
    let mut done = [0u8; 4];
    client.read_exact(&mut done).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(&done, b"done");
    client.shutdown().await.unwrap();
    elapsed
}

fn mib_per_s(t: Duration) -> f64 {
    TOTAL_MIB as f64 / t.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut framed, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        framed.push(run(Path::Framed).await);
        plain.push(run(Path::Plain).await);
    }
    framed.sort();
    plain.sort();
    let (framed, plain) = (mib_per_s(framed[2]), mib_per_s(plain[2]));
    println!(
        "TCP -> host splice -> socketpair -> guest splice -> TCP ({TOTAL_MIB} MiB, median of 5):"
    );
    println!("  framed (now)          {framed:>8.1} MiB/s");
    println!("  plain copy (before)   {plain:>8.1} MiB/s");
    println!("  ratio framed / plain  {:>8.2}", framed / plain);
}
