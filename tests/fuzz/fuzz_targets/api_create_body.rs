//! `POST /containers/create` bodies: the route's own parsing of the
//! container config and host config; a clean 400 or a value, never a panic.
#![no_main]

use berth_dockerapi::fuzzing::parse_create_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = parse_create_body(data) {
        assert_eq!(err.status.as_u16(), 400);
    }
});
