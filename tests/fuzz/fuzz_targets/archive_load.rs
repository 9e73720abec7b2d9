//! `docker load` of arbitrary bytes into a fresh store, then `docker save`
//! and `rmi` of whatever loaded: errors are fine, but nothing outside the
//! store is read into it, written or removed (a sentinel sits next to it).
#![no_main]

use std::path::Path;

use berth_engine::image::{ImageStore, archive};
use libfuzzer_sys::fuzz_target;

const SENTINEL: &[u8] = b"sentinel: must not change";

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().unwrap();
    let sentinel = outer.path().join("sentinel");
    std::fs::write(&sentinel, SENTINEL).unwrap();
    let root = outer.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    if let Ok(loaded) = archive::load(&store, data) {
        let ids: Vec<String> = loaded.iter().map(|l| l.id.clone()).collect();
        let items = archive::resolve_for_save(&store, &ids).unwrap();
        let mut saved = Vec::new();
        archive::save(&store, &items, &mut saved).unwrap();
        assert!(!saved.windows(SENTINEL.len()).any(|w| w == SENTINEL));
        for id in &ids {
            store.delete(id, true, &|_: &str| None).unwrap();
        }
        assert!(store.list().unwrap().is_empty());
    }
    drop(store);
    let mut names: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["sentinel", "store"]);
    assert!(Path::new(&sentinel).symlink_metadata().unwrap().is_file());
    assert_eq!(std::fs::read(&sentinel).unwrap(), SENTINEL);
});
