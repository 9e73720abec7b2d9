//! The functions the CLI calls: discover, copy, show, schema.

use berth_template::{Error, copy, discover, schema, show};

#[test]
fn discover_finds_berth_yaml_and_names_the_instance_after_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("My App");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(discover(&dir), None);
    std::fs::write(dir.join("berth.yaml"), "cpus: 2\n").unwrap();
    let found = discover(&dir).unwrap();
    assert_eq!(found.path, dir.join("berth.yaml"));
    assert_eq!(found.instance.as_str(), "my-app");
}

#[test]
fn copy_writes_the_template_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let written = copy("k3s", dir.path()).unwrap();
    assert_eq!(written, dir.path().join("berth.yaml"));
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        show("k3s").unwrap()
    );
    assert!(matches!(copy("k3s", dir.path()), Err(Error::Exists { .. })));
}

#[test]
fn show_accepts_the_template_prefix() {
    assert_eq!(show("template:minimal").unwrap(), show("minimal").unwrap());
}

#[test]
fn schema_is_json_with_size_as_string_and_port_bounds() {
    let value: serde_json::Value = serde_json::from_str(&schema()).unwrap();
    let size = &value["$defs"]["Size"];
    assert_eq!(size["type"], "string");
    assert!(size["pattern"].as_str().unwrap().contains("GiB"), "{size}");
    let port = &value["$defs"]["Port"];
    assert_eq!(port["maximum"], 65535);
    assert_eq!(port["minimum"], 1);
}
