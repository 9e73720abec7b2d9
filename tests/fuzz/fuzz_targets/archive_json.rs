//! The JSON documents of an image archive or registry: docker-archive
//! `manifest.json`, OCI index/manifest, image config. Every digest that
//! parses is a valid one; nothing panics.
#![no_main]

use berth_engine::image::ImageConfigFile;
use berth_engine::image::archive::{self, DockerManifestEntry, OciDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = archive::parse_json::<Vec<DockerManifestEntry>>(data, "manifest.json") {
        // Each path costs at least its quotes and a separator.
        let paths: usize = entries.iter().map(|e| e.layers.len() + 1).sum();
        assert!(paths * 3 <= data.len());
    }
    if let Ok(document) = archive::parse_json::<OciDocument>(data, "index.json") {
        let descriptors = document
            .manifests
            .iter()
            .flatten()
            .chain(&document.config)
            .chain(&document.layers);
        for descriptor in descriptors {
            assert_eq!(descriptor.digest.hex().len(), 64);
        }
        if let Some(manifests) = &document.manifests
            && let Some(chosen) = archive::pick_platform(manifests)
        {
            assert!(manifests.iter().any(|m| m.digest == chosen.digest));
        }
    }
    if let Ok(config) = archive::parse_json::<ImageConfigFile>(data, "config") {
        for diff_id in &config.rootfs.diff_ids {
            assert_eq!(diff_id.hex().len(), 64);
        }
        serde_json::to_vec(&config).expect("a parsed config serializes");
    }
});
