//! Hostile paths (issue 13, items 1 and 2): symlink chains one link longer
//! than the kernel's budget, reached through `docker cp`, the archive stat,
//! `docker run` (an image whose `/etc` is a chain), an image `VOLUME` and the
//! legacy build's `COPY`; and a container racing `docker cp` with
//! `renameat2(RENAME_EXCHANGE)`.
//!
//! Each test watches a host directory holding a sentinel file and a victim
//! directory, and proves afterwards that nothing there was read (the
//! sentinel text appears in no output and in no file of the engine's state),
//! written, chmodded or deleted.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use berth_test_support::engine::NativeEngine;
use berth_test_support::images::{self, LayerBuilder, TestImage};

/// One link more than the kernel follows. The old resolver followed 40 and
/// left the 41st as a literal component, which the kernel then resolved
/// from the host's `/`.
const CHAIN: usize = 41;

/// Requests in the race test: each of the three kinds (read a file, read a
/// directory, write a file) this many times, 3000 copies in all.
const RACE_ROUNDS: usize = 1000;

/// A host directory the container must never reach.
struct Outside {
    dir: tempfile::TempDir,
    sentinel: String,
}

impl Outside {
    fn new() -> Self {
        // Short: its path goes into tar link names (under 100 bytes).
        let dir = tempfile::Builder::new()
            .prefix("berth-out-")
            .tempdir_in("/tmp")
            .unwrap();
        let sentinel = format!(
            "berth host sentinel {} {}",
            std::process::id(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("secret"), &sentinel).unwrap();
        std::fs::set_permissions(
            dir.path().join("secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("victim")).unwrap();
        std::fs::set_permissions(
            dir.path().join("victim"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("victim/keep"), "keep\n").unwrap();
        Self { dir, sentinel }
    }

    /// The directory's absolute path.
    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// Asserts `text` does not hold the sentinel.
    #[track_caller]
    fn assert_not_in(&self, what: &str, text: &[u8]) {
        assert!(
            !contains(text, self.sentinel.as_bytes()),
            "{what} holds the host sentinel: {}",
            String::from_utf8_lossy(text)
        );
    }

    /// Asserts the directory holds exactly what `new` put there, with the
    /// same modes, and that no file of the engine's state holds the
    /// sentinel (nothing was copied in).
    #[track_caller]
    fn assert_untouched(&self, engine: &NativeEngine) {
        let root = self.dir.path();
        assert_eq!(
            names(root),
            ["secret", "victim"],
            "entries of {}",
            self.path()
        );
        assert_eq!(names(&root.join("victim")), ["keep"], "victim's entries");
        assert_eq!(
            std::fs::read_to_string(root.join("secret")).unwrap(),
            self.sentinel
        );
        assert_eq!(mode(&root.join("secret")), 0o600, "secret's mode");
        assert_eq!(mode(&root.join("victim")), 0o755, "victim's mode");
        assert_eq!(
            std::fs::read_to_string(root.join("victim/keep")).unwrap(),
            "keep\n"
        );
        let mut copies = Vec::new();
        files_containing(
            engine.dir.path(),
            dev_of(engine.dir.path()),
            self.sentinel.as_bytes(),
            &mut copies,
        );
        assert!(
            copies.is_empty(),
            "the host sentinel was copied into the engine's state: {copies:?}"
        );
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn dev_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().dev()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Regular files below `dir` (one file system) whose content holds `needle`.
fn files_containing(dir: &Path, dev: u64, needle: &[u8], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            files_containing(&path, dev, needle, out);
        } else if meta.is_file() && std::fs::read(&path).is_ok_and(|b| contains(&b, needle)) {
            out.push(path);
        }
    }
}

fn engine() -> NativeEngine {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    engine
}

/// Loads busybox plus a layer `extra` as `tag`.
fn load(engine: &NativeEngine, tag: &str, extra: &mut LayerBuilder, volumes: &[&str]) {
    let image = TestImage::new(vec![images::busybox_layer(), extra.finish()], &["sh"], tag)
        .with_volumes(volumes);
    let tar = image.docker_archive(&engine.dir.path().join("hostile.tar"), &[tag]);
    engine.load(&tar);
}

/// An image with `/chain` a 41-link chain ending at the outside directory.
fn chain_image(engine: &NativeEngine, outside: &Outside) {
    load(
        engine,
        "chain:1",
        LayerBuilder::new().symlink_chain("chain", CHAIN, outside.path()),
        &[],
    );
}

fn failed(out: &Output) -> bool {
    !out.status.success()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// A running and a stopped container of `chain:1`.
fn chain_containers(engine: &NativeEngine) -> [&'static str; 2] {
    engine.docker_ok(&["run", "-d", "--name", "live", "chain:1", "sleep", "1000"]);
    engine.docker_ok(&["create", "--name", "idle", "chain:1", "true"]);
    ["live", "idle"]
}

#[test]
fn cp_out_through_a_long_symlink_chain_never_reads_the_host() {
    let engine = engine();
    let outside = Outside::new();
    chain_image(&engine, &outside);
    for container in chain_containers(&engine) {
        for path in ["/chain/secret", "/chain/", "/chain/."] {
            let out = engine.docker(&["cp", &format!("{container}:{path}"), "-"]);
            outside.assert_not_in(&format!("docker cp {container}:{path}"), &out.stdout);
            assert!(failed(&out), "docker cp {container}:{path} succeeded");
        }
    }
    outside.assert_untouched(&engine);
}

#[test]
fn cp_in_through_a_long_symlink_chain_never_writes_or_chmods_the_host() {
    let engine = engine();
    let outside = Outside::new();
    chain_image(&engine, &outside);
    let host = tempfile::tempdir().unwrap();
    // A directory named like the victim, mode 0777: copying it over the
    // victim would chmod it.
    let victim = host.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("pwned"), "pwned\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = host.path().join("pwned-file");
    std::fs::write(&file, "pwned\n").unwrap();
    let mut tar = LayerBuilder::new();
    let tar = tar
        .dir("chain/victim/", 0o777)
        .file("chain/pwned-tar", 0o644, b"pwned\n")
        .finish();
    for container in chain_containers(&engine) {
        // The destination's parent is the chain: the stat fails, so the CLI
        // extracts into the parent, which fails with ELOOP.
        for target in ["/chain/pwned-file", "/chain/victim/"] {
            let out = engine.docker(&["cp", s(&file), &format!("{container}:{target}")]);
            assert!(failed(&out), "docker cp {container}:{target} succeeded");
        }
        let mut child = engine
            .docker_cmd(&["cp", "-", &format!("{container}:/")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        assert!(
            failed(&child.wait_with_output().unwrap()),
            "a tar through the chain extracted into {container}"
        );
        // `/chain/` does not resolve, so the CLI copies the directory as a
        // new `/chain`: the container's own link is replaced by a directory
        // inside its root (what Docker does too), the victim is not chmodded.
        engine.docker(&["cp", s(&victim), &format!("{container}:/chain/")]);
    }
    outside.assert_untouched(&engine);
}

#[test]
fn archive_stat_on_a_long_symlink_chain_reports_no_host_file() {
    let engine = engine();
    let outside = Outside::new();
    chain_image(&engine, &outside);
    for container in chain_containers(&engine) {
        let path = format!("/containers/{container}/archive?path=/chain/secret");
        let (status, response) = request(&engine, "HEAD", &path, &[]);
        assert_ne!(
            status,
            200,
            "HEAD {path}: {}",
            String::from_utf8_lossy(&response)
        );
        assert!(
            !contains(&response, b"X-Docker-Container-Path-Stat"),
            "HEAD {path} returned a stat"
        );
        let (status, response) = request(&engine, "GET", &path, &[]);
        outside.assert_not_in(&format!("GET {path}"), &response);
        assert_ne!(status, 200, "GET {path}");
    }
    outside.assert_untouched(&engine);
}

#[test]
fn run_with_etc_as_a_long_symlink_chain_writes_nothing_outside() {
    let engine = engine();
    let outside = Outside::new();
    let victim = format!("{}/victim", outside.path());
    // busybox's /etc directory is replaced by the chain in the upper layer.
    load(
        &engine,
        "chainetc:1",
        LayerBuilder::new().symlink_chain("etc", CHAIN, &victim),
        &[],
    );
    let out = engine.docker(&["run", "--rm", "--name", "etc", "chainetc:1", "true"]);
    outside.assert_untouched(&engine);
    assert!(failed(&out), "run with /etc a 41-link chain started");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("too many levels of symbolic links"),
        "the failure names the chain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_volume_on_a_long_symlink_chain_copies_no_host_content() {
    let engine = engine();
    let outside = Outside::new();
    load(
        &engine,
        "chainvol:1",
        LayerBuilder::new().symlink_chain("data", CHAIN, outside.path()),
        &["/data"],
    );
    let out = engine.docker(&["run", "--name", "vol", "chainvol:1", "cat", "/data/secret"]);
    outside.assert_untouched(&engine);
    outside.assert_not_in("docker run with a VOLUME on the chain", &out.stdout);
    assert!(failed(&out), "run with a VOLUME on a 41-link chain started");
}

#[test]
fn legacy_build_copy_through_a_long_symlink_chain_reads_nothing_outside() {
    let engine = engine();
    let outside = Outside::new();
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM busybox\nCOPY chain/secret /got\n",
    )
    .unwrap();
    for i in 0..CHAIN {
        let name = if i == 0 {
            "chain".to_owned()
        } else {
            format!("chain{i}")
        };
        let target = if i + 1 == CHAIN {
            outside.path().to_owned()
        } else {
            format!("/chain{}", i + 1)
        };
        std::os::unix::fs::symlink(target, context.path().join(name)).unwrap();
    }
    let out = engine
        .docker_cmd(&["build", "-t", "got:1", s(context.path())])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    outside.assert_untouched(&engine);
    outside.assert_not_in("docker build", &out.stdout);
    assert!(failed(&out), "COPY through a 41-link chain built");
}

#[test]
fn cp_racing_a_renaming_container_stays_inside_its_root() {
    let engine = engine();
    let outside = Outside::new();
    let work = tempfile::tempdir().unwrap();
    let swapper = work.path().join("swapper");
    let cc = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o", s(&swapper)])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/swapper.c"))
        .output()
        .expect("running gcc (apt-get install gcc libc6-dev)");
    assert!(
        cc.status.success(),
        "building the swapper: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    engine.docker_ok(&["run", "-d", "--name", "racer", "busybox", "sleep", "100000"]);
    engine.docker_ok(&["cp", s(&swapper), "racer:/swapper"]);
    // /race/d mirrors the outside directory's path and holds an inside
    // secret; /race/l is a symlink to /. The swapper exchanges them, so a
    // path through /race/d is by turns the container's and, if the kernel
    // resolved it from the host's root, the host's.
    let mirror = format!("/race/d{}", outside.path());
    engine.docker_ok(&[
        "exec",
        "racer",
        "sh",
        "-c",
        &format!("mkdir -p {mirror} && echo inside > {mirror}/secret && ln -s / /race/l"),
    ]);
    engine.docker_ok(&["exec", "-d", "racer", "/swapper", "/race/d", "/race/l"]);

    let file = format!("/containers/racer/archive?path={mirror}/secret");
    let dir = format!("/containers/racer/archive?path={mirror}");
    let tar = LayerBuilder::new()
        .file("pwned-race", 0o644, b"pwned\n")
        .dir("victim/", 0o777)
        .finish();
    let (mut inside, mut missing) = (0, 0);
    for _ in 0..RACE_ROUNDS {
        for path in [&file, &dir] {
            let (status, body) = request(&engine, "GET", path, &[]);
            outside.assert_not_in(&format!("GET {path}"), &body);
            match status {
                200 if contains(&body, b"inside\n") => inside += 1,
                404 => missing += 1,
                _ => {}
            }
        }
        let (status, body) = request(&engine, "PUT", &dir, &tar);
        assert!(
            [0, 200, 404].contains(&status),
            "PUT {dir}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Both states were seen: the race was live for the whole run.
    assert!(
        inside > 0 && missing > 0,
        "inside {inside}, missing {missing}"
    );
    engine.docker_ok(&["exec", "racer", "pidof", "swapper"]);
    outside.assert_untouched(&engine);
}

/// One HTTP/1.1 request to the engine's socket; the status and the body
/// (de-chunked), or status 0 when the engine closed without a response.
fn request(engine: &NativeEngine, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = UnixStream::connect(&engine.socket).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The engine may answer (404) and close before it reads a request body;
    // the reset that follows is a failed copy, status 0 unless a response
    // arrived.
    let mut response = Vec::new();
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let received = stream.read_to_end(&mut response);
    for result in [sent, received.map(drop)] {
        if let Err(e) = result {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{method} {path}: {e}"
            );
        }
    }
    // A copy that fails after its stat succeeded (the path changed in
    // between) aborts the body stream before any byte: status 0.
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, response);
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    let mut rest = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = dechunk(&rest);
    }
    if method == "HEAD" {
        return (status, head.into_bytes());
    }
    (status, rest)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}
