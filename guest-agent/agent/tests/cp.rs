//! `docker cp` in and out of running and stopped containers, with
//! directories and symlinks (engine issue 3, "cp").

use std::path::Path;

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn engine() -> NativeEngine {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    engine
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn cp_files_and_directories_in_and_out_of_a_running_container() {
    let engine = engine();
    let host = tempfile::tempdir().unwrap();
    engine.docker_ok(&["run", "-d", "--name", "live", "busybox", "sleep", "1000"]);

    let file = host.path().join("note.txt");
    std::fs::write(&file, "hello cp\n").unwrap();
    engine.docker_ok(&["cp", s(&file), "live:/tmp/note.txt"]);
    assert_eq!(
        engine.docker_ok(&["exec", "live", "cat", "/tmp/note.txt"]),
        "hello cp\n"
    );

    let dir = host.path().join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/leaf"), "leaf\n").unwrap();
    engine.docker_ok(&["cp", s(&dir), "live:/srv"]);
    assert_eq!(
        engine.docker_ok(&["exec", "live", "cat", "/srv/sub/leaf"]),
        "leaf\n"
    );

    engine.docker_ok(&[
        "exec",
        "live",
        "sh",
        "-c",
        "mkdir -p /out/d && echo made > /out/d/f",
    ]);
    let back = host.path().join("back");
    engine.docker_ok(&["cp", "live:/out/d", s(&back)]);
    assert_eq!(std::fs::read_to_string(back.join("f")).unwrap(), "made\n");
    let single = host.path().join("passwd");
    engine.docker_ok(&["cp", "live:/etc/passwd", s(&single)]);
    assert!(
        std::fs::read_to_string(&single)
            .unwrap()
            .starts_with("root:x:0:0")
    );

    let missing = engine.docker(&["cp", "live:/no/such", s(host.path())]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Could not find the file /no/such"));
}

#[test]
fn cp_copies_symlinks_as_links_or_follows_them_with_l() {
    let engine = engine();
    let host = tempfile::tempdir().unwrap();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "links",
        "busybox",
        "sh",
        "-c",
        "ln -s /etc/passwd /tmp/link && sleep 1000",
    ]);
    let mut tries = 0;
    while engine
        .docker(&["exec", "links", "test", "-L", "/tmp/link"])
        .status
        .code()
        != Some(0)
        && tries < 100
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tries += 1;
    }
    let link = host.path().join("link");
    engine.docker_ok(&["cp", "links:/tmp/link", s(&link)]);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/etc/passwd"));
    let followed = host.path().join("followed");
    engine.docker_ok(&["cp", "-L", "links:/tmp/link", s(&followed)]);
    assert!(
        std::fs::read_to_string(&followed)
            .unwrap()
            .starts_with("root:x:0:0")
    );
}

#[test]
fn cp_works_on_stopped_containers() {
    let engine = engine();
    let host = tempfile::tempdir().unwrap();
    engine.docker_ok(&[
        "create",
        "--name",
        "cold",
        "busybox",
        "cat",
        "/etc/app.conf",
    ]);
    let file = host.path().join("app.conf");
    std::fs::write(&file, "set before start\n").unwrap();
    engine.docker_ok(&["cp", s(&file), "cold:/etc/"]);
    assert_eq!(
        engine.docker_ok(&["start", "-a", "cold"]),
        "set before start\n"
    );
    // After exit, files the container wrote can be copied out.
    engine.docker_ok(&[
        "run",
        "--name",
        "done",
        "busybox",
        "sh",
        "-c",
        "echo result > /result",
    ]);
    let out = host.path().join("result");
    engine.docker_ok(&["cp", "done:/result", s(&out)]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "result\n");
}
