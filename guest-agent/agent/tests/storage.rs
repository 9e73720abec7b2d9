//! Volumes, bind mounts, tmpfs and read-only roots, through the real docker
//! CLI against the native engine (engine issue 3, "Storage").

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

#[test]
fn named_volume_persists_holds_ro_and_refuses_rm_in_use() {
    let engine = engine();
    engine.docker_ok(&["volume", "create", "data"]);
    engine.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        engine.docker_ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    let ro = engine.docker(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "busybox",
        "sh",
        "-c",
        "echo x > /data/g",
    ]);
    assert_ne!(ro.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ro.stderr).contains("Read-only file system"));
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    let refused = engine.docker(&["volume", "rm", "data"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("volume is in use"));
    engine.docker_ok(&["rm", "-f", "user"]);
    engine.docker_ok(&["volume", "rm", "data"]);
    assert_eq!(engine.docker_ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn empty_volume_gets_a_copy_of_image_content() {
    let engine = engine();
    engine.docker_ok(&["run", "--rm", "-v", "etc-copy:/etc", "busybox", "true"]);
    let copied = engine.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "etc-copy:/mnt",
        "busybox",
        "cat",
        "/mnt/passwd",
    ]);
    assert!(copied.starts_with("root:x:0:0"), "copied: {copied}");
}

#[test]
fn anonymous_volume_is_removed_with_rm_v() {
    let engine = engine();
    engine.docker_ok(&[
        "create", "--name", "anon", "-v", "/scratch", "busybox", "true",
    ]);
    let volumes = engine.docker_ok(&["volume", "ls", "-q"]);
    assert_eq!(volumes.lines().count(), 1, "volumes: {volumes}");
    let inspect = engine.docker_ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Type}} {{.Destination}}{{end}}",
        "anon",
    ]);
    assert_eq!(inspect.trim(), "volume /scratch");
    engine.docker_ok(&["rm", "-v", "anon"]);
    assert_eq!(engine.docker_ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn bind_mounts_read_write_read_only_and_single_file() {
    let engine = engine();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("in.txt"), "from host\n").unwrap();
    let file = host.path().join("single.conf");
    std::fs::write(&file, "one file\n").unwrap();
    let rw = format!("{}:/src", dir.display());
    engine.docker_ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        "busybox",
        "sh",
        "-c",
        "cat /src/in.txt > /src/out.txt",
    ]);
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "from host\n"
    );
    let ro = format!("{}:/src:ro", dir.display());
    let denied = engine.docker(&["run", "--rm", "-v", &ro, "busybox", "touch", "/src/nope"]);
    assert_ne!(denied.status.code(), Some(0));
    assert!(!dir.join("nope").exists());
    let single = format!("{}:/etc/app.conf:ro", file.display());
    assert_eq!(
        engine.docker_ok(&[
            "run",
            "--rm",
            "-v",
            &single,
            "busybox",
            "cat",
            "/etc/app.conf"
        ]),
        "one file\n"
    );
    // `--mount type=bind` works too; a missing source is an error there...
    let mount = format!("type=bind,source={},target=/m,readonly", dir.display());
    assert_eq!(
        engine.docker_ok(&[
            "run",
            "--rm",
            "--mount",
            &mount,
            "busybox",
            "cat",
            "/m/in.txt"
        ]),
        "from host\n"
    );
    let missing = format!(
        "type=bind,source={}/absent,target=/m",
        host.path().display()
    );
    let err = engine.docker(&["run", "--rm", "--mount", &missing, "busybox", "true"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("bind source path does not exist"));
    // ...while `-v` creates it, as Docker does.
    let created = host.path().join("created/by/v");
    let spec = format!("{}:/new", created.display());
    engine.docker_ok(&["run", "--rm", "-v", &spec, "busybox", "true"]);
    assert!(created.is_dir());
}

#[test]
fn tmpfs_works_with_a_read_only_root() {
    let engine = engine();
    let out = engine.docker_ok(&[
        "run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "sh", "-c",
        "echo ok > /scratch/f && cat /scratch/f && (touch /rootfile 2>/dev/null && echo writable || echo read-only)",
    ]);
    assert_eq!(out, "ok\nread-only\n");
}
