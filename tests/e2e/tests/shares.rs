//! File shares (virtio-fs) and host change events reaching inotify watchers
//! in containers (issue 4, "File shares", "Change events"), in a real VM.
//!
//! The default instance shares `$HOME` read-only; the test's project
//! directory lives under it.
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
    let archive = berth_test_support::images::busybox_docker_archive(images.path(), BUSYBOX);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);

    // A host file under the share, read through -v at the same path.
    let read = h.docker_ok(
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
    );
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

    // inotifyd in a container watching the bind-mounted directory.
    h.docker_ok(
        "default",
        &[
            "run",
            "-d",
            "--name",
            "watch",
            "-v",
            &format!("{src}:/src"),
            BUSYBOX,
            "inotifyd",
            "-",
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
            .contains("probe-")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never saw a host change"
        );
    }

    std::fs::write(dir.join("created.txt"), "new").unwrap();
    wait_logs(&h, "watch", "create", |l| l.contains("\tcreated.txt"));

    let before = h
        .docker_ok("default", &["logs", "watch"])
        .lines()
        .filter(|l| l.ends_with("\thello.txt"))
        .count();
    std::fs::write(dir.join("hello.txt"), "changed\n").unwrap();
    wait_logs(&h, "watch", "modify", |l| {
        l.lines().filter(|l| l.ends_with("\thello.txt")).count() > before
    });
    let seen = h.docker_ok(
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
    );
    assert_eq!(seen, "changed\n");

    let dir_events = |l: &str| l.lines().filter(|l| *l == "e\t/src").count();
    let before = dir_events(&h.docker_ok("default", &["logs", "watch"]));
    std::fs::remove_file(dir.join("created.txt")).unwrap();
    wait_logs(&h, "watch", "delete (on the directory)", |l| {
        dir_events(l) > before
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
