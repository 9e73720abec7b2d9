//! `docker cp` and the archive routes on a stopped or created container
//! reach its volumes and binds (issue 12 group 5, issue 13): they are
//! mounted for the operation in a private mount namespace, so the engine's
//! mount table never changes, and read-only ones refuse writes as dockerd
//! does.

use std::path::Path;

use berth_test_support::engine::NativeEngine;
use berth_test_support::images::{self, LayerBuilder, TestImage};

fn engine() -> NativeEngine {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    // An image whose VOLUME /data holds content (copied up into the
    // anonymous volume), and whose /link is a symlink chain leading up and
    // out, used as a mount destination.
    let mut layer = LayerBuilder::new();
    layer
        .dir("data", 0o755)
        .file("data/seed", 0o644, b"from the image\n")
        .symlink("link", "../../../../../up")
        .symlink("up", "../../../../../srv");
    let image = TestImage::new(
        vec![images::busybox_layer(), layer.finish()],
        &["sh"],
        "vols",
    )
    .with_volumes(&["/data"]);
    engine.load(&image.docker_archive(&engine.dir.path().join("vols.tar"), &["vols:1"]));
    engine
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The engine's mount table entries under its own state directory (the
/// engine shares this test's mount namespace; it only has a netns).
fn engine_mounts(engine: &NativeEngine) -> Vec<String> {
    let dir = engine.dir.path().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_owned)
        .collect()
}

/// What `cat path` prints in a fresh container that uses `mount`.
fn read_via_new_container(engine: &NativeEngine, mount: &[&str], path: &str) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(mount);
    args.extend_from_slice(&["busybox", "cat", path]);
    engine.docker_ok(&args)
}

fn cp_in_and_out(engine: &NativeEngine, container: &str, host: &Path) {
    let file = host.join("in.txt");
    std::fs::write(&file, format!("into {container}\n")).unwrap();
    for dest in ["/named", "/data", "/bound", "/link"] {
        engine.docker_ok(&["cp", s(&file), &format!("{container}:{dest}/in.txt")]);
        let back = host.join(format!("back{}", dest.replace('/', "-")));
        engine.docker_ok(&["cp", &format!("{container}:{dest}/in.txt"), s(&back)]);
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            format!("into {container}\n"),
            "{dest}"
        );
    }
    // The anonymous volume got the image's content (copy-up), readable by cp.
    let seed = host.join(format!("seed-{container}"));
    engine.docker_ok(&["cp", &format!("{container}:/data/seed"), s(&seed)]);
    assert_eq!(std::fs::read_to_string(&seed).unwrap(), "from the image\n");
}

#[test]
fn cp_reaches_volumes_and_binds_of_stopped_and_created_containers() {
    let engine = engine();
    let host = tempfile::tempdir().unwrap();
    let bound = tempfile::tempdir().unwrap();
    let before = engine_mounts(&engine);
    let bind = format!("{}:/bound", s(bound.path()));
    let common = [
        "-v",
        "named:/named",
        "-v",
        bind.as_str(),
        "-v",
        "linked:/link",
        "vols:1",
    ];
    let mut created = vec!["create", "--name", "created"];
    created.extend_from_slice(&common);
    created.push("true");
    engine.docker_ok(&created);
    let mut stopped = vec!["run", "--name", "stopped"];
    stopped.extend_from_slice(&common);
    stopped.push("true");
    engine.docker_ok(&stopped);

    for container in ["created", "stopped"] {
        cp_in_and_out(&engine, container, host.path());
        // Written into the bind on the host and into the volumes, not into
        // the overlay under the mount point.
        assert_eq!(
            std::fs::read_to_string(bound.path().join("in.txt")).unwrap(),
            format!("into {container}\n")
        );
        assert_eq!(
            read_via_new_container(&engine, &["-v", "named:/v"], "/v/in.txt"),
            format!("into {container}\n")
        );
        assert_eq!(
            read_via_new_container(&engine, &["-v", "linked:/v"], "/v/in.txt"),
            format!("into {container}\n")
        );
        let anonymous = engine.docker_ok(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Name}}{{end}}{{end}}",
            container,
        ]);
        let anonymous = format!("{}:/v", anonymous.trim());
        assert_eq!(
            read_via_new_container(&engine, &["-v", &anonymous], "/v/in.txt"),
            format!("into {container}\n")
        );
        assert_eq!(
            read_via_new_container(&engine, &["-v", &anonymous], "/v/seed"),
            "from the image\n"
        );
        // `docker diff` sees no write under the mount points.
        let diff = engine.docker_ok(&["diff", container]);
        assert!(!diff.contains("in.txt"), "{container}: {diff}");
    }
    // The chain at /link was resolved inside the root: nothing went to /srv
    // of the host.
    assert!(!Path::new("/srv/in.txt").exists());
    // Not one mount was added to (or left in) the engine's mount table.
    assert_eq!(engine_mounts(&engine), before);
}

#[test]
fn put_into_a_read_only_volume_of_a_stopped_container_is_refused() {
    let engine = engine();
    let host = tempfile::tempdir().unwrap();
    let before = engine_mounts(&engine);
    engine.docker_ok(&[
        "run",
        "--name",
        "ro",
        "-v",
        "data:/ro:ro",
        "-v",
        "rw:/rw",
        "busybox",
        "true",
    ]);
    let file = host.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let refused = engine.docker(&["cp", s(&file), "ro:/ro/f"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("mounted volume is marked read-only"),
        "{stderr}"
    );
    engine.docker_ok(&["cp", s(&file), "ro:/rw/f"]);
    assert_eq!(
        read_via_new_container(&engine, &["-v", "rw:/v"], "/v/f"),
        "x"
    );
    let ls = engine.docker_ok(&["run", "--rm", "-v", "data:/v", "busybox", "ls", "/v"]);
    assert_eq!(ls, "");
    // A read-only root file system refuses outside its volumes.
    engine.docker_ok(&[
        "create",
        "--name",
        "rootro",
        "--read-only",
        "-v",
        "rw:/rw",
        "busybox",
        "true",
    ]);
    let refused = engine.docker(&["cp", s(&file), "rootro:/tmp/f"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("container rootfs is marked read-only"),
        "{stderr}"
    );
    engine.docker_ok(&["cp", s(&file), "rootro:/rw/g"]);
    assert_eq!(engine_mounts(&engine), before);
}
