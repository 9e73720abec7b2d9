//! End-to-end image tests: the real docker CLI against `berth-agent serve`
//! (root, own network namespace). Load in both formats, images, inspect,
//! tag, rmi, save -> load, whiteouts and opaque directories, crafted path
//! escapes, truncated uploads, and pull/push against Debian's
//! `docker-registry` on 127.0.0.1 inside the test's namespace.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_test_support::engine::NativeEngine;
use berth_test_support::images::{self, Escape};

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-agent"))
}

/// The engine's image store directory.
fn store(engine: &NativeEngine) -> PathBuf {
    engine.dir.path().join("root/images")
}

/// Names in `dir`, sorted (empty if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn inspect(engine: &NativeEngine, image: &str, format: &str) -> String {
    engine
        .docker_ok(&["image", "inspect", "--format", format, image])
        .trim()
        .to_owned()
}

#[test]
fn docker_archive_load_images_inspect_tag_and_rmi() {
    let engine = NativeEngine::start(agent());
    let tar = images::busybox_docker_archive(engine.dir.path(), "busybox:latest");
    let id = images::busybox().id();

    let loaded = engine.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(loaded.trim(), "Loaded image: busybox:latest");
    let listed = engine.docker_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert_eq!(listed.trim(), format!("busybox:latest {id}"));
    assert_eq!(inspect(&engine, "busybox", "{{.Id}}"), id);
    assert_eq!(
        inspect(&engine, "docker.io/library/busybox:latest", "{{.Id}}"),
        id
    );
    assert_eq!(inspect(&engine, &id[7..19], "{{.Id}}"), id);
    assert_eq!(
        inspect(
            &engine,
            "busybox",
            "{{.Os}} {{json .Config.Cmd}} {{len .RootFS.Layers}}"
        ),
        r#"linux ["sh"] 1"#
    );
    assert_eq!(
        inspect(&engine, "busybox", "{{.GraphDriver.Name}}"),
        "overlay2"
    );

    engine.docker_ok(&["tag", "busybox", "localhost:5000/tools/bb:v1"]);
    assert_eq!(
        inspect(&engine, "localhost:5000/tools/bb:v1", "{{.Id}}"),
        id
    );
    let tags = inspect(&engine, &id, "{{json .RepoTags}}");
    assert_eq!(tags, r#"["busybox:latest","localhost:5000/tools/bb:v1"]"#);

    let untagged = engine.docker_ok(&["rmi", "localhost:5000/tools/bb:v1"]);
    assert_eq!(untagged.trim(), "Untagged: localhost:5000/tools/bb:v1");
    let removed = engine.docker_ok(&["rmi", "busybox"]);
    assert_eq!(
        removed.trim(),
        format!("Untagged: busybox:latest\nDeleted: {id}")
    );
    assert_eq!(engine.docker_ok(&["images", "-q"]), "");
    assert_eq!(
        names(&store(&engine).join("blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(names(&store(&engine).join("l")), Vec::<String>::new());

    let missing = engine.docker(&["rmi", "busybox:nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such image: busybox:nope"));
}

#[test]
fn oci_layout_load_takes_the_annotated_name() {
    let engine = NativeEngine::start(agent());
    let tar = images::busybox_oci_layout(engine.dir.path(), "oci/busybox:v2");
    let loaded = engine.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(loaded.trim(), "Loaded image: oci/busybox:v2");
    assert_eq!(
        inspect(&engine, "oci/busybox:v2", "{{.Id}}"),
        images::busybox().id()
    );
}

#[test]
fn save_then_load_round_trips_the_image() {
    let engine = NativeEngine::start(agent());
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    engine.docker_ok(&["tag", "busybox", "again:v1"]);
    let saved = engine.dir.path().join("saved.tar");

    engine.docker_ok(&["save", "-o", saved.to_str().unwrap(), "busybox", "again:v1"]);
    engine.docker_ok(&["rmi", "-f", &images::busybox().id()]);
    assert_eq!(engine.docker_ok(&["images", "-q"]), "");
    let loaded = engine.docker_ok(&["load", "-i", saved.to_str().unwrap()]);

    assert_eq!(
        loaded.trim(),
        "Loaded image: busybox:latest\nLoaded image: again:v1"
    );
    assert_eq!(
        inspect(&engine, "again:v1", "{{.Id}}"),
        images::busybox().id()
    );
    let entries = Command::new("tar").arg("-tf").arg(&saved).output().unwrap();
    let entries = String::from_utf8_lossy(&entries.stdout);
    assert!(
        entries.contains("manifest.json")
            && entries.contains("index.json")
            && entries.contains("oci-layout")
    );
}

#[test]
fn layered_image_layers_hold_overlayfs_whiteouts() {
    let engine = NativeEngine::start(agent());
    engine.load(&images::layered_docker_archive(
        engine.dir.path(),
        "layered:latest",
    ));

    let lower = inspect(&engine, "layered", "{{.GraphDriver.Data.LowerDir}}");
    let dirs: Vec<&str> = lower.split(':').collect();

    assert_eq!(dirs.len(), 3, "{lower}");
    let top = Path::new(dirs[0]);
    for gone in ["data/gone", "data/gone-dir"] {
        let meta = top.join(gone).symlink_metadata().unwrap();
        assert!(
            meta.file_type().is_char_device() && meta.rdev() == 0,
            "{gone} is not a 0:0 whiteout"
        );
    }
    let mut value = [0u8; 4];
    let len = rustix::fs::getxattr(
        top.join("data/opaque"),
        "trusted.overlay.opaque",
        &mut value[..],
    )
    .unwrap();
    assert_eq!(&value[..len], b"y");
    assert!(!top.join("data/opaque/.wh..wh..opq").exists());
    assert!(lower.len() < 200, "lowerdir option stays short: {lower}");
}

#[test]
fn layered_image_oci_gzip_layers_load_to_the_same_id() {
    let engine = NativeEngine::start(agent());
    engine.load(&images::layered_oci_layout(
        engine.dir.path(),
        "layered:oci",
    ));
    assert_eq!(
        inspect(&engine, "layered:oci", "{{.Id}}"),
        images::layered().id()
    );
}

/// Needs `docker run` (the container side of the engine).
#[test]
fn layered_image_whiteouts_and_opaque_dir_are_visible_in_a_container() {
    let engine = NativeEngine::start(agent());
    engine.load(&images::layered_docker_archive(
        engine.dir.path(),
        "layered:latest",
    ));
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "layered", "ls", "/data"]),
        "keep\nopaque\n"
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "layered", "ls", "/data/opaque"]),
        "new\n"
    );
}

#[test]
fn crafted_layers_write_nothing_outside_the_layer() {
    let engine = NativeEngine::start(agent());
    let outside = tempfile::Builder::new()
        .prefix("berth-escape-")
        .tempdir()
        .unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    std::fs::write(outside.path().join("victim"), "victim").unwrap();

    for escape in Escape::ALL {
        let tar = images::malicious(escape, outside.path()).docker_archive(
            &engine.dir.path().join(format!("{escape:?}.tar")),
            &[&format!("evil-{escape:?}").to_lowercase()],
        );
        let out = engine.docker(&["load", "-i", tar.to_str().unwrap()]);
        assert!(
            out.status.success() || !String::from_utf8_lossy(&out.stderr).is_empty(),
            "{escape:?}: a refused load explains itself"
        );
        assert_eq!(
            names(outside.path()),
            vec!["secret", "victim"],
            "{escape:?} wrote outside"
        );
        assert_eq!(
            outside.path().join("secret").metadata().unwrap().nlink(),
            1,
            "{escape:?} linked outside"
        );
        assert_eq!(
            names(&store(&engine).join("tmp")),
            Vec::<String>::new(),
            "{escape:?} left staging behind"
        );
    }
    assert!(
        !store(&engine)
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("pwned-dotdot")
            .exists()
    );
}

#[test]
fn truncated_load_leaves_no_image_and_no_blobs() {
    let engine = NativeEngine::start(agent());
    let tar = std::fs::read(images::layered_docker_archive(
        engine.dir.path(),
        "layered:latest",
    ))
    .unwrap();
    let truncated = engine.dir.path().join("truncated.tar");
    std::fs::write(&truncated, &tar[..tar.len() * 2 / 3]).unwrap();

    let out = engine.docker(&["load", "-i", truncated.to_str().unwrap()]);

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("archive") || stderr.contains("layer"),
        "unclear error: {stderr}"
    );
    assert_eq!(engine.docker_ok(&["images", "-q"]), "");
    for sub in ["blobs/sha256", "l", "imagedb", "tmp"] {
        assert_eq!(
            names(&store(&engine).join(sub)),
            Vec::<String>::new(),
            "{sub} is not empty"
        );
    }
}

#[test]
fn corrupt_layer_is_rejected_with_a_digest_error() {
    let engine = NativeEngine::start(agent());
    let mut image = images::busybox();
    // A byte inside /bin/busybox's data: the tar still parses, the diff-id no longer matches.
    image.layers[0][100_000] ^= 0x55;
    let tar = image.docker_archive(&engine.dir.path().join("corrupt.tar"), &["corrupt:latest"]);
    let out = engine.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("digest mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        names(&store(&engine).join("blobs/sha256")),
        Vec::<String>::new()
    );
}

/// Debian's `docker-registry` serving on 127.0.0.1:5000 inside `netns`.
struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(netns: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:5000\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "/usr/bin/docker-registry", "serve"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        let registry = Self { child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    netns,
                    images::BUSYBOX,
                    "wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    "http://127.0.0.1:5000/v2/",
                ])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if probe.success() {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer within 20s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_then_pull_through_a_local_registry() {
    let engine = NativeEngine::start(agent());
    let _registry = Registry::start(&engine.netns);
    engine.load(&images::layered_docker_archive(
        engine.dir.path(),
        "layered:latest",
    ));
    engine.docker_ok(&["tag", "layered", "127.0.0.1:5000/test/layered:v1"]);

    let pushed = engine.docker_ok(&["push", "127.0.0.1:5000/test/layered:v1"]);
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    engine.docker_ok(&["rmi", "-f", &images::layered().id()]);
    assert_eq!(engine.docker_ok(&["images", "-q"]), "");
    let pulled = engine.docker_ok(&["pull", "127.0.0.1:5000/test/layered:v1"]);

    assert!(
        pulled.contains("Status: Downloaded newer image for 127.0.0.1:5000/test/layered:v1"),
        "{pulled}"
    );
    assert_eq!(
        inspect(&engine, "127.0.0.1:5000/test/layered:v1", "{{.Id}}"),
        images::layered().id()
    );
    let digests = inspect(
        &engine,
        "127.0.0.1:5000/test/layered:v1",
        "{{json .RepoDigests}}",
    );
    assert!(
        digests.starts_with(r#"["127.0.0.1:5000/test/layered@sha256:"#),
        "{digests}"
    );
    let again = engine.docker_ok(&["pull", "127.0.0.1:5000/test/layered:v1"]);
    assert!(again.contains("Image is up to date"), "{again}");
    let missing = engine.docker(&["pull", "127.0.0.1:5000/test/nothing:v1"]);
    assert!(!missing.status.success());
}

#[test]
fn rmi_refuses_images_of_containers_unless_forced_and_never_while_running() {
    let engine = NativeEngine::start(agent());
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    let id = images::busybox().id();
    let container = engine
        .docker_ok(&["run", "-d", "busybox", "sleep", "60"])
        .trim()
        .to_owned();

    let running = engine.docker(&["rmi", "-f", &id]);
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(!running.status.success());
    assert!(
        stderr.contains("image is being used by running container"),
        "{stderr}"
    );
    engine.docker_ok(&["rm", "-f", &container]);
    engine.docker_ok(&["create", "busybox", "true"]);

    let stopped = engine.docker(&["rmi", &id]);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        stderr.contains("(must be forced) - image is being used by stopped container"),
        "{stderr}"
    );
    let forced = engine.docker_ok(&["rmi", "-f", &id]);
    assert_eq!(
        forced.trim(),
        "Untagged: busybox:latest",
        "the stopped container keeps the image"
    );
    assert_eq!(inspect(&engine, &id, "{{json .RepoTags}}"), "[]");
}

#[test]
fn concurrent_loads_share_the_common_layer() {
    let engine = NativeEngine::start(agent());
    let busybox = images::busybox_docker_archive(engine.dir.path(), "busybox:latest");
    let layered = images::layered_oci_layout(engine.dir.path(), "layered:latest");

    let loads: Vec<_> = [&busybox, &layered]
        .into_iter()
        .map(|tar| {
            engine
                .docker_cmd(&["load", "-q", "-i", tar.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for load in loads {
        let out = load.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    assert_eq!(
        names(&store(&engine).join("l")).len(),
        3,
        "busybox's layer is unpacked once"
    );
    engine.docker_ok(&["rmi", "layered"]);
    assert_eq!(
        names(&store(&engine).join("l")).len(),
        1,
        "busybox keeps its layer"
    );
    assert_eq!(
        inspect(&engine, "busybox", "{{.Id}}"),
        images::busybox().id()
    );
}

#[test]
fn image_events_and_prune() {
    let engine = NativeEngine::start(agent());
    let now = || {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since_epoch.unwrap().as_secs()
    };
    let start = now();
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    engine.docker_ok(&["tag", "busybox", "other:v1"]);
    engine.docker_ok(&["rmi", "other:v1"]);
    engine.load(&images::layered_docker_archive(
        engine.dir.path(),
        "layered:latest",
    ));
    engine.docker_ok(&["tag", "busybox", "layered:latest"]); // layered's image is now dangling

    let pruned = engine.docker_ok(&["image", "prune", "-f"]);
    assert!(
        pruned.contains(&format!("deleted: {}", images::layered().id())),
        "{pruned}"
    );
    let events = engine.docker_ok(&[
        "events",
        "--since",
        &start.to_string(),
        "--until",
        &(now() + 1).to_string(),
        "--filter",
        "type=image",
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = events.lines().collect();
    assert_eq!(
        actions,
        ["load", "tag", "untag", "load", "tag", "delete"],
        "{events}"
    );
}
