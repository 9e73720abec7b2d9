//! The digest parser: anything it accepts is `sha256:` + 64 lowercase hex,
//! joins as exactly one path component, and round-trips through serde.
#![no_main]

use std::path::Path;

use berth_engine::image::digest::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let as_json = serde_json::Value::String(text.to_owned());
    match Digest::parse(text) {
        Ok(digest) => {
            assert_eq!(digest.as_str(), text);
            let hex = digest.hex();
            assert_eq!(hex.len(), 64);
            assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            let blobs = Path::new("/store/blobs/sha256");
            assert_eq!(blobs.join(hex).parent(), Some(blobs));
            assert_eq!(Digest::from_hex(hex).as_ref(), Ok(&digest));
            let back: Digest =
                serde_json::from_value(as_json).expect("serde accepts what parse does");
            assert_eq!(back, digest);
        }
        Err(err) => {
            assert!(err.to_string().starts_with("invalid digest"));
            assert!(serde_json::from_value::<Digest>(as_json).is_err());
        }
    }
    if let Ok(digest) = Digest::from_hex(text) {
        assert_eq!(digest.hex(), text);
    }
});
