//! Hostile image archives against the real docker CLI and `berth-agent
//! serve` (root, own network namespace). Each test builds its hostile input
//! itself and watches sentinel files outside the engine's state: nothing
//! there may be read into the store, written or deleted.
//!
//! * digests naming host paths (`sha256:/...`, `sha256:../...`) in
//!   `index.json` and in a manifest: rejected, naming the field; `save`,
//!   `rmi` and `inspect` by such a digest cannot reach the sentinel;
//! * a `blobs/sha256/<hex>` symlink member whose content is another blob's,
//!   or that points at a host file with exactly the right content;
//! * two layers competing for one 12-hex link name: each image sees its own
//!   files, through a directory keyed by the full diff-id;
//! * an old store (`l/<12 hex>` directories, 0755): migrated on open,
//!   containers created before keep working, directories become 0700;
//! * SIGKILL during `docker load`: no partial image after a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-agent"))
}

fn store(engine: &NativeEngine) -> PathBuf {
    engine.dir.path().join("root/images")
}

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

const SECRET: &[u8] = b"sentinel: host secret\n";

/// A directory outside the engine's state holding `secret`.
struct Sentinel {
    dir: PathBuf,
}

impl Sentinel {
    fn new(engine: &NativeEngine) -> Self {
        let dir = engine.dir.path().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), SECRET).unwrap();
        Self { dir }
    }

    fn secret(&self) -> PathBuf {
        self.dir.join("secret")
    }

    /// The secret is still there, unchanged, and nothing else appeared.
    fn assert_untouched(&self) {
        assert_eq!(
            names(&self.dir),
            ["secret"],
            "files appeared next to the sentinel"
        );
        assert_eq!(
            std::fs::read(self.secret()).unwrap(),
            SECRET,
            "sentinel changed"
        );
    }
}

/// The store holds no image, blob or layer, and no staging is left.
fn assert_store_empty(engine: &NativeEngine) {
    assert_eq!(engine.docker_ok(&["images", "-qa"]), "");
    for sub in ["blobs/sha256", "layers", "l", "imagedb", "tmp"] {
        assert_eq!(
            names(&store(engine).join(sub)),
            Vec::<String>::new(),
            "{sub}"
        );
    }
}

fn load_fails(engine: &NativeEngine, tar: &Path) -> String {
    let out = engine.docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(!out.status.success(), "hostile archive loaded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `save`, `rmi` and `inspect` of `reference` fail and leave the sentinel.
fn api_cannot_reach(engine: &NativeEngine, sentinel: &Sentinel, reference: &str) {
    let saved = engine.dir.path().join("saved.tar");
    let out = engine.docker(&["save", "-o", saved.to_str().unwrap(), reference]);
    assert!(!out.status.success(), "save {reference} succeeded");
    if let Ok(bytes) = std::fs::read(&saved) {
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET));
    }
    for args in [&["rmi", reference][..], &["image", "inspect", reference]] {
        assert!(!engine.docker(args).status.success(), "{args:?} succeeded");
    }
    // `rmi -f` of a missing image is no error (Docker's CLI), but must not
    // remove anything either.
    engine.docker(&["rmi", "-f", reference]);
    sentinel.assert_untouched();
}

#[test]
fn index_json_digests_naming_host_paths_are_rejected_naming_the_field() {
    let engine = NativeEngine::start(agent());
    let sentinel = Sentinel::new(&engine);
    let secret = sentinel.secret();
    let relative = format!("../../../../../../../../../..{}", secret.display());
    for bad in [
        format!("sha256:{}", secret.display()),
        format!("sha256:{relative}"),
    ] {
        let mut members = images::busybox().oci_members();
        members.set_index(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "digest": bad, "size": 1 }],
        }));
        let stderr = load_fails(
            &engine,
            &members.write(&engine.dir.path().join("index.tar")),
        );
        assert!(
            stderr.contains("index.json, field manifests[0].digest") && stderr.contains(&bad),
            "error does not name the field and digest {bad}: {stderr}"
        );
        assert_store_empty(&engine);
        sentinel.assert_untouched();

        // The same with a member at the path the digest spells, a symlink to
        // the real manifest: what let the old lookup find "its" blob.
        let spelled = format!("blobs/{}", bad.replacen(':', "/", 1));
        let manifest_path = format!("blobs/sha256/{}", &members.manifest_digest[7..]);
        members
            .symlinks
            .push((spelled, format!("/{manifest_path}")));
        let stderr = load_fails(
            &engine,
            &members.write(&engine.dir.path().join("index.tar")),
        );
        assert!(
            stderr.contains("escapes the archive") || stderr.contains("invalid digest"),
            "{stderr}"
        );
        assert_store_empty(&engine);
        api_cannot_reach(&engine, &sentinel, &bad);
    }
}

#[test]
fn manifest_config_digest_naming_a_host_path_is_rejected() {
    let engine = NativeEngine::start(agent());
    let sentinel = Sentinel::new(&engine);
    let image = images::busybox();
    let mut members = image.oci_members();
    let bad = format!("sha256:{}", sentinel.secret().display());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": bad, "size": SECRET.len() },
        "layers": [],
    }))
    .unwrap();
    let manifest_digest = images::digest(&manifest);
    members.files.push((
        format!("blobs/sha256/{}", &manifest_digest[7..]),
        manifest.clone(),
    ));
    members.set_index(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "digest": manifest_digest, "size": manifest.len() }],
    }));
    let tar = members.write(&engine.dir.path().join("manifest.tar"));

    let stderr = load_fails(&engine, &tar);

    assert!(
        stderr.contains("field config.digest") && stderr.contains(&bad),
        "{stderr}"
    );
    assert_store_empty(&engine);
    api_cannot_reach(&engine, &sentinel, &bad);
}

#[test]
fn blob_symlink_members_are_resolved_in_the_archive_and_verified() {
    let engine = NativeEngine::start(agent());
    let sentinel = Sentinel::new(&engine);
    let image = images::busybox();
    let config_path = format!("blobs/sha256/{}", &image.id()[7..]);

    // The config blob is a symlink to the layer blob: wrong content.
    let mut members = image.oci_members();
    let layer_path = format!("blobs/sha256/{}", &images::digest(&image.layers[0])[7..]);
    members.replace_with_symlink(&config_path, &format!("/{layer_path}"));
    let stderr = load_fails(&engine, &members.write(&engine.dir.path().join("a.tar")));
    assert!(
        stderr.contains("digest mismatch") && stderr.contains(&config_path),
        "{stderr}"
    );
    assert_store_empty(&engine);

    // A blob named after the secret's digest, a symlink to the host file:
    // right content on disk, but the archive does not hold it.
    let mut members = image.oci_members();
    let secret_blob = format!("blobs/sha256/{}", &images::digest(SECRET)[7..]);
    members
        .symlinks
        .push((secret_blob.clone(), sentinel.secret().display().to_string()));
    let stderr = load_fails(&engine, &members.write(&engine.dir.path().join("b.tar")));
    assert!(stderr.contains("missing from the archive"), "{stderr}");
    assert_store_empty(&engine);
    sentinel.assert_untouched();

    // A symlink to the right blob inside the archive is fine.
    let mut members = image.oci_members();
    members
        .files
        .push(("real-config".to_owned(), image.config.clone()));
    members.replace_with_symlink(&config_path, "../../real-config");
    engine.load(&members.write(&engine.dir.path().join("c.tar")));
    let id = engine.docker_ok(&["images", "-qa", "--no-trunc"]);
    assert_eq!(id.trim(), image.id());
    sentinel.assert_untouched();
}

/// The top lower dir of `image`'s overlay, as the engine reports it.
fn top_layer(engine: &NativeEngine, image: &str) -> PathBuf {
    let lower = engine.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.GraphDriver.Data.LowerDir}}",
        image,
    ]);
    PathBuf::from(lower.trim().split(':').next().unwrap())
}

#[test]
fn layers_sharing_a_twelve_hex_link_name_each_keep_their_own_files() {
    let mut engine = NativeEngine::start(agent());
    let (a, b) = (
        images::busybox_with_file("A"),
        images::busybox_with_file("B"),
    );
    let diff_a = images::digest(&a.layers[1]);
    let diff_b = images::digest(&b.layers[1]);
    engine.load(&a.docker_archive(&engine.dir.path().join("a.tar"), &["who:a"]));
    // Another layer already holds B's 12-hex link name (what a real 12-hex
    // collision leaves): a link to A's directory. B must get its own.
    let taken = store(&engine).join("l").join(&diff_b[7..19]);
    let a_dir = format!("../layers/{}", &diff_a[7..]);
    std::os::unix::fs::symlink(&a_dir, &taken).unwrap();
    engine.load(&b.docker_archive(&engine.dir.path().join("b.tar"), &["who:b"]));

    for _ in 0..2 {
        for (image, diff, who) in [("who:a", &diff_a, "A"), ("who:b", &diff_b, "B")] {
            let top = top_layer(&engine, image);
            assert_eq!(
                std::fs::canonicalize(&top).unwrap(),
                store(&engine).join("layers").join(&diff[7..]),
                "{image}'s layer directory is keyed by its full diff-id"
            );
            let name = top.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(diff[7..].starts_with(&name), "{name} is a prefix of {diff}");
            assert_eq!(engine.docker_ok(&["run", "--rm", image]), who, "{image}");
        }
        assert_ne!(top_layer(&engine, "who:b"), taken);
        // The same after a restart (links are re-read from disk).
        engine.restart_agent();
    }
}

#[test]
fn old_store_layout_is_migrated_and_its_containers_keep_working() {
    let mut engine = NativeEngine::start(agent());
    let image = images::busybox_with_file("old");
    engine.load(&image.docker_archive(&engine.dir.path().join("old.tar"), &["old:v1"]));
    let created = engine.docker_ok(&["create", "old:v1"]);
    let container = created.trim();
    engine.kill_agent();

    // Rewrite the store as the engine before full-digest keying left it:
    // `l/<12 hex>` is the layer directory itself, directories 0755.
    let root = store(&engine);
    for layer in &image.layers {
        let hex = &images::digest(layer)[7..];
        let link = root.join("l").join(&hex[..12]);
        assert!(link.symlink_metadata().unwrap().is_symlink());
        std::fs::remove_file(&link).unwrap();
        std::fs::rename(root.join("layers").join(hex), &link).unwrap();
    }
    std::fs::remove_dir(root.join("layers")).unwrap();
    for dir in [
        root.clone(),
        root.join("l"),
        root.join("blobs"),
        root.join("imagedb"),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    engine.restart_agent();

    for layer in &image.layers {
        let hex = &images::digest(layer)[7..];
        assert!(
            root.join("layers").join(hex).is_dir(),
            "{hex} moved to layers/"
        );
        let link = root.join("l").join(&hex[..12]);
        assert!(
            link.symlink_metadata().unwrap().is_symlink(),
            "{hex}: old name kept as a link"
        );
    }
    for dir in [
        root.clone(),
        root.join("l"),
        root.join("layers"),
        root.join("blobs"),
        root.join("blobs/sha256"),
        root.join("imagedb"),
        root.join("tmp"),
        engine.dir.path().join("root"),
    ] {
        let mode = dir.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    assert_eq!(engine.docker_ok(&["start", "-a", container]), "old");
    assert_eq!(engine.docker_ok(&["run", "--rm", "old:v1"]), "old");
}

#[test]
fn sigkill_during_docker_load_leaves_no_partial_image() {
    let mut engine = NativeEngine::start(agent());
    let tar = images::busybox_with_big_file(96 << 20)
        .docker_archive(&engine.dir.path().join("big.tar"), &["big:v1"]);
    let staging = store(&engine).join("tmp");
    let load = engine
        .docker_cmd(&["load", "-i", tar.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the load has staged something.
    let deadline = Instant::now() + Duration::from_secs(30);
    while names(&staging)
        .iter()
        .all(|s| names(&staging.join(s).join("blobs")).is_empty())
    {
        assert!(Instant::now() < deadline, "the load never started staging");
        std::thread::sleep(Duration::from_millis(1));
    }
    engine.kill_agent();
    let out = load.wait_with_output().unwrap();
    assert!(!out.status.success(), "the load finished before the kill");

    engine.restart_agent();

    assert_store_empty(&engine);
}
