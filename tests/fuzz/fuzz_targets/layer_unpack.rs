//! Layer unpack: any tar is applied inside its directory or rejected; it
//! never writes, removes or changes anything outside it. The layer root sits
//! three directories deep, each level holding a sentinel file, so `../`
//! escapes of any depth up to the temp dir would show.
#![no_main]

use std::path::Path;

use berth_engine::image::unpack;
use libfuzzer_sys::fuzz_target;

const SENTINEL: &[u8] = b"sentinel: must not change";

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().unwrap();
    let levels = [
        outer.path().join("a"),
        outer.path().join("a/b"),
        outer.path().join("a/b/c"),
    ];
    for level in &levels {
        std::fs::create_dir(level).unwrap();
        std::fs::write(level.join("sentinel"), SENTINEL).unwrap();
    }
    let root = levels[2].join("root");
    std::fs::create_dir(&root).unwrap();
    if let Err(err) = unpack::apply_layer(&mut &data[..], &root) {
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(names(outer.path()), ["a"]);
    for (level, inner) in levels.iter().zip(["b", "c", "root"]) {
        assert_eq!(names(level), [inner, "sentinel"], "{}", level.display());
        let sentinel = level.join("sentinel");
        assert!(sentinel.symlink_metadata().unwrap().is_file());
        assert_eq!(std::fs::read(&sentinel).unwrap(), SENTINEL);
    }
});
