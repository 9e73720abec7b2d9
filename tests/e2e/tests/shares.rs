//! File shares (virtio-fs) and host change events reaching inotify watchers
//! in containers (issue 4, "File shares", "Change events"), in a real VM.
//!
//! The default instance shares `$HOME` and `/tmp` writable (issue 12); the
//! test's project directory lives under the home.
#![cfg(feature = "vm")]

use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::{Harness, text};

const BUSYBOX: &str = "busybox:e2e";

fn home() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
}

/// Waits until `docker logs <name>` satisfies `done`; returns the logs.
fn wait_logs(h: &Harness, name: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = h.docker_ok("default", &["logs", name]);
        if done(&logs) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} event; watcher saw:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn containers_read_shared_files_and_watchers_see_host_changes() {
    let h = Harness::new();
    let project = tempfile::Builder::new()
        .prefix("berth-e2e-share-")
        .tempdir_in(home())
        .unwrap();
    let dir = project.path();
    let src = dir.display().to_string();
    std::fs::write(dir.join("hello.txt"), "from-the-host\n").unwrap();

    h.berth_ok(&["start"]);
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_with_tools()
        .docker_archive(&images.path().join("watch.tar"), &[BUSYBOX]);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);

    // A host file under the share, read through -v at the same path.
    let read_hello = || {
        h.docker_ok(
            "default",
            &[
                "run",
                "--rm",
                "-v",
                &format!("{src}:/src"),
                BUSYBOX,
                "cat",
                "/src/hello.txt",
            ],
        )
    };
    let read = read_hello();
    assert_eq!(read, "from-the-host\n");

    // A bind source outside every share is refused, naming the shares.
    let out = h.docker(
        "default",
        &[
            "run",
            "--rm",
            "-v",
            "/berth-e2e-not-shared:/x",
            BUSYBOX,
            "true",
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not under a directory shared with it")
            && err.contains(&home().display().to_string()),
        "{err}"
    );

    // inotifywait (inotify-tools) in a container watching the bind mount;
    // a TTY keeps its output line-buffered.
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "-t",
            "--name",
            "watch",
            "-v",
            &format!("{src}:/src"),
            BUSYBOX,
            "inotifywait",
            "-m",
            "-q",
            "--format",
            "%e %w%f",
            "/src",
        ],
    );
    // The watch starts asynchronously on both sides: probe until it works.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        std::fs::write(dir.join(format!("probe-{n}")), "p").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        if h.docker_ok("default", &["logs", "watch"])
            .contains("/src/probe-")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never saw a host change"
        );
    }
    let count = |logs: &str, needle: &str| {
        logs.lines()
            .filter(|l| l.trim_end().ends_with(needle))
            .count()
    };

    // Create: events naming the new file.
    std::fs::write(dir.join("created.txt"), "new").unwrap();
    let logs = wait_logs(&h, "watch", "create", |l| l.contains("/src/created.txt"));
    assert!(
        logs.lines()
            .any(|l| l.starts_with("ATTRIB /src/created.txt")),
        "{logs}"
    );

    // Modify: a CLOSE_WRITE naming the file, and the new content is read.
    let before = count(
        &h.docker_ok("default", &["logs", "watch"]),
        "/src/hello.txt",
    );
    std::fs::write(dir.join("hello.txt"), "changed\n").unwrap();
    let logs = wait_logs(&h, "watch", "modify", |l| {
        count(l, "/src/hello.txt") > before
    });
    assert!(
        logs.lines()
            .any(|l| l.starts_with("CLOSE_WRITE") && l.trim_end().ends_with("/src/hello.txt")),
        "{logs}"
    );
    let seen = read_hello();
    assert_eq!(seen, "changed\n");

    // Delete: ATTRIB on the watched directory itself.
    let before = count(
        &h.docker_ok("default", &["logs", "watch"]),
        "ATTRIB,ISDIR /src/",
    );
    std::fs::remove_file(dir.join("created.txt")).unwrap();
    wait_logs(&h, "watch", "delete (on the directory)", |l| {
        count(l, "ATTRIB,ISDIR /src/") > before
    });

    // No echo loop: with no host changes, the watcher goes quiet.
    std::thread::sleep(Duration::from_millis(1500));
    let settled = h.docker_ok("default", &["logs", "watch"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        h.docker_ok("default", &["logs", "watch"]),
        settled,
        "events keep coming without host changes"
    );

    assert!(Path::new(dir).exists());
    h.berth_ok(&["delete", "-f"]);
}

/// Containers write into the default shares: a bind under `/tmp` whose
/// source does not exist yet (created on the host, through the share), and
/// a project directory under the home (`-v $PWD:/app`, then build outputs).
#[test]
fn containers_write_into_tmp_and_home_shares() {
    let h = Harness::new();
    h.berth_ok(&["start"]);
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_with_tools()
        .docker_archive(&images.path().join("tools.tar"), &[BUSYBOX]);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);

    // `docker run -v /tmp/d:/d busybox touch /d/x`, /tmp/d new.
    let tmp = tempfile::Builder::new()
        .prefix("berth-e2e-tmp-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = tmp.path().join("d");
    h.docker_ok(
        "default",
        &[
            "run",
            "--rm",
            "-v",
            &format!("{}:/d", d.display()),
            BUSYBOX,
            "touch",
            "/d/x",
        ],
    );
    assert!(
        d.join("x").is_file(),
        "{} was not created",
        d.join("x").display()
    );

    // `-v $PWD:/app`: the container's output appears in the project.
    let project = tempfile::Builder::new()
        .prefix("berth-e2e-write-")
        .tempdir_in(home())
        .unwrap();
    let src = project.path().display().to_string();
    h.docker_ok(
        "default",
        &[
            "run",
            "--rm",
            "-v",
            &format!("{src}:/app"),
            "-w",
            "/app",
            BUSYBOX,
            "sh",
            "-c",
            "mkdir -p dist && echo built > dist/out.txt",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("dist/out.txt")).unwrap(),
        "built\n"
    );
    h.berth_ok(&["delete", "-f"]);
}
