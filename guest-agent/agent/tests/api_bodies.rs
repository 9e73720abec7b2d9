//! Streamed request bodies: a client that sends the end of its tar after
//! the engine has already answered (Testcontainers for Node does: its tar
//! stream's last zero block is a separate chunk) must be able to finish
//! writing, and its connection stays usable (dockerd drains unread bodies).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn chunk(out: &mut impl Write, data: &[u8]) {
    write!(out, "{:x}\r\n", data.len()).unwrap();
    out.write_all(data).unwrap();
    out.write_all(b"\r\n").unwrap();
}

/// Reads one HTTP/1.1 response (status line, headers, a fixed-length or
/// chunked body) and returns the status code and the body.
fn read_response(reader: &mut BufReader<UnixStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line, got {line:?}"))
        .parse()
        .unwrap();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if header == "transfer-encoding: chunked" {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut data = vec![0; n + 2];
            reader.read_exact(&mut data).unwrap();
            body.extend_from_slice(&data[..n]);
            if n == 0 {
                break;
            }
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
    }
    (status, body)
}

#[test]
fn the_rest_of_a_tar_sent_after_the_answer_is_drained_and_the_connection_stays_usable() {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    let id = engine.docker_ok(&["create", "busybox", "true"]);
    let id = id.trim();

    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "drained.txt", &b"hello\n"[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let (head, last_block) = tar.split_at(tar.len() - 512);

    let stream = UnixStream::connect(&engine.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    write!(
        writer,
        "PUT /containers/{id}/archive?path=/tmp HTTP/1.1\r\nHost: docker\r\n\
         Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    chunk(&mut writer, head);
    writer.flush().unwrap();
    // The engine has the whole archive up to its end marker: it answers now.
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The client's last block and the end of the chunked body still go through.
    chunk(&mut writer, last_block);
    writer.write_all(b"0\r\n\r\n").unwrap();
    writer
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut reader);
    assert_eq!((status, body.as_slice()), (200, &b"OK"[..]));
    let copied = engine.docker_ok(&["cp", &format!("{id}:/tmp/drained.txt"), "-"]);
    assert!(copied.contains("hello\n"), "{copied:?}");
}
