//! Property tests for the template parsers that take user input (issue
//! 15): sizes (`4GiB`) and instance names. Arbitrary input never panics;
//! valid sizes parse to exactly the bytes they say.

use berth_template::Size;
use proptest::prelude::*;

const UNITS: [(&str, u64); 5] = [
    ("", 1),
    ("B", 1),
    ("KiB", Size::KIB),
    ("MiB", Size::MIB),
    ("GiB", Size::GIB),
];

proptest! {
    #[test]
    fn size_parse_never_panics(text in ".{0,40}") {
        let _ = text.parse::<Size>();
    }

    #[test]
    fn whole_sizes_parse_exactly(n in 0u64..(1 << 24), unit in 0usize..UNITS.len()) {
        let (suffix, bytes) = UNITS[unit];
        let size: Size = format!("{n}{suffix}").parse().unwrap();
        prop_assert_eq!(size.bytes(), n * bytes);
    }

    #[test]
    fn fractional_gib_rounds_down_to_bytes(int in 0u64..1024, frac in 0u64..1000) {
        let size: Size = format!("{int}.{frac:03}GiB").parse().unwrap();
        prop_assert_eq!(size.bytes(), int * Size::GIB + frac * Size::GIB / 1000);
    }

    #[test]
    fn ambiguous_units_are_refused(n in 1u64..1000, unit in "(K|M|G|T|KB|MB|GB|TB)") {
        let err = format!("{n}{unit}").parse::<Size>().unwrap_err();
        prop_assert!(err.contains("ambiguous unit"), "{}", err);
    }

    #[test]
    fn instance_name_parse_never_panics(text in ".{0,80}") {
        let _ = text.parse::<berth_instance::InstanceName>();
    }
}
