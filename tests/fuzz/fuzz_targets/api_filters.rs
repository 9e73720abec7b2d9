//! The Docker API `filters` query parameter: JSON in both of Docker's
//! shapes, or a clean 400; never a panic.
#![no_main]

use berth_dockerapi::fuzzing::parse_filters;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match parse_filters(Some(raw)) {
        Ok(filters) => {
            if !raw.is_empty() {
                let value: serde_json::Value = serde_json::from_str(raw).unwrap();
                assert!(value.is_object());
                assert!(filters.keys().all(|k| value.get(k).is_some()));
            }
        }
        Err(err) => assert_eq!(err.status.as_u16(), 400),
    }
});
