//! Each error class reports the exact file, line and column.

use std::path::{Path, PathBuf};

use berth_template::{Arch, Error, Host, Size, Source, load_template};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/errors")
        .join(name)
}

fn host() -> Host {
    Host {
        os: "linux".into(),
        arch: Some(Arch::X86_64),
        cpus: 8,
        memory: Some(Size::from_bytes(16 * Size::GIB)),
        home: Some(std::env::temp_dir()),
    }
}

fn load(name: &str) -> Result<berth_template::Template, Error> {
    load_template(&Source::File(fixture(name)), &host())
}

/// (line, column, message) of a parse error.
fn parse_error(name: &str) -> (usize, usize, String) {
    match load(name) {
        Err(Error::Parse(e)) => {
            assert_eq!(e.pos.file, fixture(name).display().to_string());
            (e.pos.line, e.pos.column, e.message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// (line, column, message) of the first validation error.
fn validation_error(name: &str) -> (usize, usize, String) {
    match load(name) {
        Err(Error::Invalid(errs)) => {
            let e = errs.first();
            assert_eq!(e.pos.file, fixture(name).display().to_string());
            (e.pos.line, e.pos.column, e.message.clone())
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn unknown_field_points_at_the_key() {
    let (line, column, message) = parse_error("unknown_field.yaml");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("unknown field `memroy`"), "{message}");
}

#[test]
fn wrong_type_points_at_the_value() {
    let (line, column, message) = parse_error("wrong_type.yaml");
    assert_eq!((line, column), (2, 7));
    assert_eq!(message, "cpus: invalid u32");
}

#[test]
fn duplicate_key_is_an_error_at_the_second_key() {
    let (line, column, message) = parse_error("duplicate_key.yaml");
    assert_eq!((line, column), (3, 1));
    assert!(message.contains("duplicate mapping key: cpus"), "{message}");
}

#[test]
fn decimal_size_unit_is_rejected_with_a_binary_unit_hint() {
    let (line, column, message) = parse_error("decimal_size.yaml");
    assert_eq!((line, column), (3, 9));
    assert!(message.contains("\"4GB\""), "{message}");
    assert!(
        message.contains("GiB") && message.contains("MiB"),
        "{message}"
    );
}

#[test]
fn binary_size_unit_is_accepted() {
    let t = load("binary_size.yaml").unwrap();
    assert_eq!(t.memory, Some(Size::from_bytes(4 * Size::GIB)));
}

#[test]
fn port_out_of_range_points_at_the_port() {
    let (line, column, message) = parse_error("port_out_of_range.yaml");
    assert_eq!((line, column), (3, 16));
    assert!(
        message.contains("70000") && message.contains("1-65535"),
        "{message}"
    );
}

#[test]
fn missing_mount_location_is_a_validation_error_at_the_value() {
    let (line, column, message) = validation_error("missing_mount.yaml");
    assert_eq!((line, column), (3, 15));
    assert!(
        message.contains("does-not-exist") && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn validation_reports_every_error_in_order() {
    let Err(Error::Invalid(errs)) = load("several.yaml") else {
        panic!("expected validation errors");
    };
    let at: Vec<(usize, usize)> = errs.0.iter().map(|e| (e.pos.line, e.pos.column)).collect();
    assert_eq!(at, vec![(4, 15), (6, 21)]);
}

#[test]
fn display_renders_location_message_and_caret() {
    let err = load("decimal_size.yaml").unwrap_err();
    let file = fixture("decimal_size.yaml").display().to_string();
    let expected = format!(
        "{file}:3:9: error: memory: size \"4GB\" has an ambiguous unit \"GB\": use a binary unit (KiB, MiB, GiB, TiB), e.g. \"4GiB\" or \"512MiB\"\n  |\n3 | memory: 4GB\n  |         ^"
    );
    assert_eq!(err.to_string(), expected);
}

#[test]
fn vz_is_parsed_everywhere_but_rejected_off_macos() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, "mounts: []\nvmType: vz\n").unwrap();
    let Err(Error::Invalid(errs)) = load_template(&Source::File(path), &host()) else {
        panic!("expected a validation error");
    };
    let e = errs.first();
    assert_eq!((e.pos.line, e.pos.column), (2, 9));
    assert!(e.message.contains("macOS"), "{}", e.message);
}

#[test]
fn duplicate_key_in_a_nested_map_is_an_error() {
    let (line, column, message) = parse_error("duplicate_env_key.yaml");
    assert_eq!((line, column), (4, 3));
    assert!(message.contains("duplicate mapping key: A"), "{message}");
}
