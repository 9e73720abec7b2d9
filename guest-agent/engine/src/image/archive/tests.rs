use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::super::ImageStore;
use super::super::digest::Digest;
use super::save::append_bytes;
use super::*;

/// A one-layer image (`hello` holding `hi`) as a docker-archive tar.
fn docker_archive(tag: &str, corrupt_layer: bool) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    append_bytes(&mut layer, "hello", b"hi").unwrap();
    let layer = layer.into_inner().unwrap();
    let diff_id = Digest::of(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": host_architecture(), "os": "linux",
        "config": { "Cmd": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = json!([{ "Config": config_name, "RepoTags": [tag], "Layers": ["l/layer.tar"] }]);
    let mut outer = tar::Builder::new(Vec::new());
    append_bytes(&mut outer, &config_name, &config).unwrap();
    let mut layer = layer;
    if corrupt_layer {
        layer[600] ^= 1;
    }
    append_bytes(&mut outer, "l/layer.tar", &layer).unwrap();
    append_bytes(
        &mut outer,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    outer.into_inner().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn docker_archive_loads_and_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let loaded = load(&store, &docker_archive("hello:v1", false)[..]).unwrap();
    assert_eq!(loaded[0].tags, vec!["hello:v1".to_owned()]);
    let image = store.get("hello:v1").unwrap();
    assert_eq!(
        std::fs::read(image.layer_dirs[0].join("hello")).unwrap(),
        b"hi"
    );
    assert_eq!(image.layers[0].blob.media_type, MEDIA_OCI_LAYER);
    assert!(entries(&dir.path().join("tmp")).is_empty());
}

#[test]
fn corrupt_layer_leaves_no_image_blob_or_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let err = load(&store, &docker_archive("hello:v1", true)[..]).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
    assert!(store.list().unwrap().is_empty());
    for sub in ["blobs/sha256", "l", "imagedb", "tmp"] {
        assert!(entries(&dir.path().join(sub)).is_empty(), "{sub} not empty");
    }
}

#[test]
fn truncated_archive_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let tar = docker_archive("hello:v1", false);
    let err = load(&store, &tar[..tar.len() / 2]).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
    assert!(store.list().unwrap().is_empty());
    assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
}

#[test]
fn save_then_load_round_trips_through_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("a")).unwrap();
    load(&store, &docker_archive("hello:v1", false)[..]).unwrap();
    let items = resolve_for_save(&store, &["hello:v1".to_owned()]).unwrap();
    let mut saved = Vec::new();
    save(&store, &items, &mut saved).unwrap();
    let id = store.get("hello:v1").unwrap().id;

    let other = ImageStore::open(&dir.path().join("b")).unwrap();
    let loaded = load(&other, &saved[..]).unwrap();
    assert_eq!(
        loaded,
        vec![Loaded {
            id: id.clone(),
            tags: vec!["hello:v1".to_owned()]
        }]
    );

    // Without manifest.json the OCI half alone must load too.
    let mut oci = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(&saved[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        if path != Path::new("manifest.json") {
            let mut header = entry.header().clone();
            oci.append_data(&mut header, &path, &mut entry).unwrap();
        }
    }
    let third = ImageStore::open(&dir.path().join("c")).unwrap();
    let loaded = load(&third, &oci.into_inner().unwrap()[..]).unwrap();
    assert_eq!(
        loaded,
        vec![Loaded {
            id,
            tags: vec!["hello:v1".to_owned()]
        }]
    );
}

#[test]
fn legacy_archive_with_symlinked_layer_loads() {
    // Old `docker save` output: `<id>/layer.tar`, duplicates as symlinks.
    let plain = docker_archive("hello:v1", false);
    let mut rewritten = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(&plain[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let mut header = entry.header().clone();
        if path == Path::new("l/layer.tar") {
            rewritten
                .append_data(&mut header, "real/layer.tar", &mut entry)
                .unwrap();
            let mut link = tar::Header::new_ustar();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            rewritten
                .append_link(&mut link, "l/layer.tar", "../real/layer.tar")
                .unwrap();
        } else {
            rewritten
                .append_data(&mut header, &path, &mut entry)
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let loaded = load(&store, &rewritten.into_inner().unwrap()[..]).unwrap();
    assert_eq!(loaded[0].tags, vec!["hello:v1".to_owned()]);
}

#[test]
fn gzip_compressed_archive_loads() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&docker_archive("hello:gz", false)).unwrap();
    let loaded = load(&store, &gz.finish().unwrap()[..]).unwrap();
    assert_eq!(loaded[0].tags, vec!["hello:gz".to_owned()]);
}
