//! Store-level tests: resolve, tag, rmi, prune, reopen, staging.

use super::*;
use crate::image::Digest;

/// A store with one image whose config is `config` and which has no layers.
fn store_with(config: &str, tags: &[&str]) -> (tempfile::TempDir, ImageStore, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let id = add(&store, config, tags);
    (dir, store, id)
}

fn add(store: &ImageStore, config: &str, tags: &[&str]) -> String {
    let mut staging = store.stage().unwrap();
    let (id, _) = staging.write_blob(config.as_bytes(), None).unwrap();
    let image = NewImage {
        id: id.clone(),
        layers: Vec::new(),
        manifest: None,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        digests: Vec::new(),
    };
    store.commit(&staging, &[image]).unwrap();
    id.to_string()
}

const CONFIG: &str =
    r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;

#[test]
fn get_resolves_names_ids_and_prefixes() {
    let (_dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
    let hex = id.strip_prefix("sha256:").unwrap();
    for reference in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        &id,
        hex,
        &hex[..6],
    ] {
        assert_eq!(store.get(reference).unwrap().id, id, "{reference}");
    }
    let err = store.get("busybox:nope").unwrap_err();
    assert_eq!(err.to_string(), "No such image: busybox:nope");
}

#[test]
fn store_reopens_with_tags_and_records() {
    let (dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
    drop(store);
    let store = ImageStore::open(dir.path()).unwrap();
    let image = store.get("busybox").unwrap();
    assert_eq!(
        (image.id, image.repo_tags),
        (id, vec!["busybox:latest".to_owned()])
    );
}

#[test]
fn rmi_by_name_untags_until_the_last_name_then_deletes() {
    let (_dir, store, id) = store_with(CONFIG, &["busybox:latest", "busybox:other"]);
    let none = |_: &str| None;
    assert_eq!(
        store.delete("busybox:other", false, &none).unwrap(),
        vec![DeleteItem::Untagged {
            name: "busybox:other".into(),
            id: id.clone()
        }]
    );
    assert_eq!(
        store.delete("busybox", false, &none).unwrap(),
        vec![
            DeleteItem::Untagged {
                name: "busybox:latest".into(),
                id: id.clone()
            },
            DeleteItem::Deleted(id.clone())
        ]
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!store.blob_path(&Digest::parse(&id).unwrap()).exists());
}

#[test]
fn rmi_refuses_image_of_running_container_even_forced() {
    let (_dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
    let running = |_: &str| Some(("c0ffee".repeat(10), true));
    let err = store.delete(&id, true, &running).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    assert!(
        err.to_string()
            .contains("image is being used by running container c0ffeec0ffee"),
        "{err}"
    );
    let stopped = |_: &str| Some(("c0ffee".repeat(10), false));
    assert_eq!(
        store.delete(&id, false, &stopped).unwrap_err().kind(),
        crate::ErrorKind::Conflict
    );
    assert_eq!(
        store.delete("busybox", false, &stopped).unwrap_err().kind(),
        crate::ErrorKind::Conflict
    );
}

#[test]
fn rmi_by_id_with_multiple_repositories_needs_force() {
    let (_dir, store, id) = store_with(CONFIG, &["busybox:latest", "other:latest"]);
    let none = |_: &str| None;
    assert_eq!(
        store.delete(&id, false, &none).unwrap_err().kind(),
        crate::ErrorKind::Conflict
    );
    let items = store.delete(&id, true, &none).unwrap();
    assert_eq!(items.last(), Some(&DeleteItem::Deleted(id)));
}

#[test]
fn tag_moves_name_and_leaves_old_image_dangling() {
    let (_dir, store, first) = store_with(CONFIG, &["busybox:latest"]);
    let second = add(&store, &CONFIG.replace("amd64", "arm64"), &[]);
    store.tag(&second, "busybox").unwrap();
    assert_eq!(store.get("busybox").unwrap().id, second);
    assert!(store.get(&first).unwrap().repo_tags.is_empty());
    let (deleted, _) = store.prune(false, &|_: &str| None).unwrap();
    assert_eq!(deleted, vec![DeleteItem::Deleted(first)]);
}

#[test]
fn ambiguous_or_unknown_prefix_is_not_found() {
    let (_dir, store, _id) = store_with(CONFIG, &[]);
    assert_eq!(
        store.get("zz").unwrap_err().kind(),
        crate::ErrorKind::NotFound
    );
    assert_eq!(
        store.get("").unwrap_err().kind(),
        crate::ErrorKind::NotFound
    );
}

#[test]
fn write_blob_rejects_wrong_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let mut staging = store.stage().unwrap();
    let wrong = Digest::from_hex(&"0".repeat(64)).unwrap();
    let err = staging.write_blob(&b"abc"[..], Some(&wrong)).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }));
}

#[test]
fn open_removes_unreferenced_blobs_and_layers() {
    let (dir, store, id) = store_with(CONFIG, &["busybox:latest"]);
    drop(store);
    let orphan_blob = dir.path().join("blobs/sha256").join("ab".repeat(32));
    let orphan_layer = dir.path().join("l/abababababab");
    std::fs::write(&orphan_blob, b"x").unwrap();
    std::fs::create_dir_all(orphan_layer.join("bin")).unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    assert!(!orphan_blob.exists() && !orphan_layer.exists());
    assert!(store.blob_path(&Digest::parse(&id).unwrap()).is_file());
}

#[test]
fn staging_is_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let staging = store.stage().unwrap();
    let path = staging.dir().to_owned();
    assert!(path.is_dir());
    drop(staging);
    assert!(!path.exists());
}

/// Stores an image of one layer holding `hello` with `content`.
fn add_layered(store: &ImageStore, content: &[u8], tag: &str) -> Digest {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    layer.append_data(&mut header, "hello", content).unwrap();
    let layer = layer.into_inner().unwrap();
    let mut staging = store.stage().unwrap();
    let (diff_id, size) = staging.write_blob(&layer[..], None).unwrap();
    let unpacked = store.stage_layer(&mut staging, &diff_id, &diff_id).unwrap();
    let config = CONFIG.replace(r#""diff_ids":[]"#, &format!(r#""diff_ids":["{diff_id}"]"#));
    let (id, _) = staging.write_blob(config.as_bytes(), None).unwrap();
    let image = NewImage {
        id,
        layers: vec![LayerRecord {
            diff_id: diff_id.clone(),
            blob: Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar".to_owned(),
                digest: diff_id.clone(),
                size,
            },
            size: unpacked,
        }],
        manifest: None,
        tags: vec![tag.to_owned()],
        digests: Vec::new(),
    };
    store.commit(&staging, &[image]).unwrap();
    diff_id
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn layers_are_keyed_by_the_full_diff_id_behind_short_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let diff_id = add_layered(&store, b"one", "one:v1");
    let image = store.get("one:v1").unwrap();
    let link = dir.path().join("l").join(diff_id.short());
    assert_eq!(image.layer_dirs, vec![link.clone()]);
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../layers").join(diff_id.hex())
    );
    assert_eq!(std::fs::read(link.join("hello")).unwrap(), b"one");
    for sub in ["", "blobs", "blobs/sha256", "layers", "l", "imagedb", "tmp"] {
        assert_eq!(mode(&dir.path().join(sub)), 0o700, "{sub}");
    }
}

#[test]
fn a_taken_short_name_makes_the_link_longer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let first = add_layered(&store, b"first", "first:v1");
    // What a 12-hex collision leaves: the second layer's short name taken.
    let second_layer = {
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(6);
        header.set_mode(0o644);
        header.set_cksum();
        layer
            .append_data(&mut header, "hello", &b"second"[..])
            .unwrap();
        layer.into_inner().unwrap()
    };
    let second = Digest::of(&second_layer);
    std::os::unix::fs::symlink(
        format!("../layers/{}", first.hex()),
        dir.path().join("l").join(second.short()),
    )
    .unwrap();
    assert_eq!(add_layered(&store, b"second", "second:v1"), second);
    let image = store.get("second:v1").unwrap();
    let name = image.layer_dirs[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(name, &second.hex()[..13]);
    assert_eq!(
        std::fs::read(image.layer_dirs[0].join("hello")).unwrap(),
        b"second"
    );
    let first_image = store.get("first:v1").unwrap();
    assert_eq!(
        std::fs::read(first_image.layer_dirs[0].join("hello")).unwrap(),
        b"first"
    );
}

#[test]
fn open_migrates_old_twelve_hex_layer_dirs_and_tightens_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let diff_id = add_layered(&store, b"old", "old:v1");
    drop(store);
    // The layout before full-digest keying: the layer itself in l/<12 hex>.
    let old = dir.path().join("l").join(diff_id.short());
    std::fs::remove_file(&old).unwrap();
    std::fs::rename(dir.path().join("layers").join(diff_id.hex()), &old).unwrap();
    std::fs::remove_dir(dir.path().join("layers")).unwrap();
    for sub in ["", "blobs", "blobs/sha256", "l", "imagedb"] {
        let path = dir.path().join(sub);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let store = ImageStore::open(dir.path()).unwrap();

    let image = store.get("old:v1").unwrap();
    assert_eq!(
        image.layer_dirs,
        vec![old.clone()],
        "the old path still works"
    );
    assert!(old.symlink_metadata().unwrap().is_symlink());
    assert!(dir.path().join("layers").join(diff_id.hex()).is_dir());
    assert_eq!(std::fs::read(old.join("hello")).unwrap(), b"old");
    for sub in ["", "blobs", "blobs/sha256", "layers", "l", "imagedb"] {
        assert_eq!(mode(&dir.path().join(sub)), 0o700, "{sub}");
    }
    // Removing the image removes both.
    store.delete("old:v1", false, &|_: &str| None).unwrap();
    assert!(old.symlink_metadata().is_err());
    assert!(!dir.path().join("layers").join(diff_id.hex()).exists());
}

#[test]
fn resolve_parses_full_ids_and_rejects_path_like_ones() {
    let (_dir, store, id) = store_with(CONFIG, &[]);
    assert_eq!(store.get(&id).unwrap().id, id);
    for bad in [
        "sha256:/etc/passwd",
        "sha256:../../../../etc/passwd",
        "../../etc",
    ] {
        assert_eq!(
            store.get(bad).unwrap_err().kind(),
            crate::ErrorKind::NotFound,
            "{bad}"
        );
    }
}
