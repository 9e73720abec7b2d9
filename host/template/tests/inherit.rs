//! Inheritance (`base:`), layering and cycles, pinned.

use std::path::{Path, PathBuf};

use berth_template::load::{load, load_layers};
use berth_template::{Arch, Error, Host, Layers, Size, Source, load_layered};
use serde_json::json;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

#[test]
fn child_over_base_merges_per_the_documented_rules() {
    let loaded = load(&Source::File(fixture("inherit/child.yaml")), None).unwrap();
    let merged = serde_json::to_value(&loaded.template).unwrap();
    assert_eq!(
        merged,
        json!({
            "cpus": 6,                 // child wins
            "memory": "2GiB",          // only in base
            "disk": "20GiB",
            "mounts": [                // child first; base's /shared is shadowed
                {"location": "/srv/child", "mountPoint": "/shared", "writable": true},
                {"location": "/srv/base"}
            ],
            "portForwards": [          // child first: first match wins
                {"guestPort": 443, "hostPort": 8443, "proto": "tcp"},
                {"guestPort": 80, "hostPort": 8080, "proto": "tcp"}
            ],
            "env": {"BASE_ONLY": "yes", "FROM": "child"},
            "provision": [             // base first
                {"mode": "system", "script": "echo base"},
                {"mode": "user", "script": "echo child"}
            ],
            "probes": [{"mode": "readiness", "script": "test -f /base"}],
            "docker": {
                "registryMirrors": ["https://child.mirror", "https://base.mirror"],
                "insecureRegistries": ["base.local:5000"]
            },
            "dns": ["9.9.9.9"],        // replaced, not concatenated
            "hosts": {"api.local": "10.0.0.2", "db.local": "10.0.0.1"},
            "message": "from base"
        })
    );
    assert_eq!(loaded.documents.len(), 2);
}

#[test]
fn earlier_bases_win_over_later_ones_and_shipped_bases_resolve() {
    let loaded = load(&Source::File(fixture("multi/child.yaml")), None).unwrap();
    let t = loaded.template;
    assert_eq!(t.cpus, Some(1)); // first.yaml beats second.yaml and minimal
    assert_eq!(t.message.as_deref(), Some("first"));
    assert_eq!(t.disk, Some(Size::from_bytes(50 * Size::GIB))); // second beats minimal
    assert_eq!(t.memory, Some(Size::from_bytes(Size::GIB))); // only minimal sets it
    assert!(!t.docker.unwrap().enabled.unwrap());
}

#[test]
fn base_cycle_is_an_error_naming_the_chain() {
    let err = load(&Source::File(fixture("cycle/a.yaml")), None).unwrap_err();
    let Error::Base { pos, .. } = &err else {
        panic!("expected a base error, got {err:?}");
    };
    let a = fixture("cycle/a.yaml").canonicalize().unwrap();
    let b = fixture("cycle/b.yaml").canonicalize().unwrap();
    assert_eq!(pos.file, b.display().to_string());
    assert_eq!((pos.line, pos.column), (2, 18)); // the `./a.yaml` entry
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "base cycle: {} -> {} -> {}",
            fixture("cycle/a.yaml").display(),
            b.display(),
            a.display()
        )),
        "{text}"
    );
}

#[test]
fn missing_base_points_at_the_base_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, "cpus: 2\nbase: ./gone.yaml\n").unwrap();
    let err = load(&Source::File(path), None).unwrap_err();
    let pos = err.pos().unwrap();
    assert_eq!((pos.line, pos.column), (2, 7));
    assert!(err.to_string().contains("gone.yaml"), "{err}");
}

#[test]
fn layers_stack_default_then_template_then_override() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let default = write(
        "default.yaml",
        "cpus: 1\nmemory: 1GiB\ndisk: 10GiB\nenv: {LAYER: default, D: d}\nprovision: [{mode: system, script: echo default}]\nmounts: [{location: /d}]\n",
    );
    let template = write(
        "berth.yaml",
        "cpus: 2\nmemory: 2GiB\nenv: {LAYER: template, T: t}\nprovision: [{mode: system, script: echo template}]\nmounts: [{location: /t}]\n",
    );
    let override_ = write(
        "override.yaml",
        "cpus: 3\nenv: {LAYER: override}\nprovision: [{mode: system, script: echo override}]\nmounts: [{location: /o}]\n",
    );
    let layers = Layers {
        default: Some(default),
        override_: Some(override_),
    };
    let loaded = load_layers(&Source::File(template), &layers, None).unwrap();
    let merged = serde_json::to_value(&loaded.template).unwrap();
    assert_eq!(
        merged,
        json!({
            "cpus": 3,
            "memory": "2GiB",
            "disk": "10GiB",
            "env": {"D": "d", "LAYER": "override", "T": "t"},
            "provision": [
                {"mode": "system", "script": "echo default"},
                {"mode": "system", "script": "echo template"},
                {"mode": "system", "script": "echo override"}
            ],
            "mounts": [{"location": "/o"}, {"location": "/t"}, {"location": "/d"}]
        })
    );
}

#[test]
fn layers_in_berth_home_finds_existing_files_only() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("_config")).unwrap();
    std::fs::write(home.path().join("_config/override.yaml"), "cpus: 2\n").unwrap();
    assert_eq!(
        Layers::in_berth_home(home.path()),
        Layers {
            default: None,
            override_: Some(home.path().join("_config/override.yaml")),
        }
    );
}

#[test]
fn load_layered_applies_defaults_and_validates_the_override() {
    // Not under /tmp: a home inside a default share is not shared twice.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let template = dir.path().join("berth.yaml");
    std::fs::write(&template, "base: template:default\n").unwrap();
    let override_ = dir.path().join("override.yaml");
    std::fs::write(
        &override_,
        "memory: 3GiB\nmounts: [{location: ./missing}]\n",
    )
    .unwrap();
    let host = Host {
        os: "linux".into(),
        arch: Some(Arch::Aarch64),
        cpus: 2,
        memory: Some(Size::from_bytes(64 * Size::GIB)),
        home: Some(dir.path().to_path_buf()),
    };
    let layers = Layers {
        default: None,
        override_: Some(override_.clone()),
    };
    let err = load_layered(&Source::File(template.clone()), &layers, &host).unwrap_err();
    let pos = err.pos().unwrap();
    assert_eq!(
        (pos.file.as_str(), pos.line, pos.column),
        (override_.display().to_string().as_str(), 2, 21)
    );

    std::fs::write(&override_, "memory: 3GiB\n").unwrap();
    let t = load_layered(&Source::File(template), &layers, &host).unwrap();
    assert_eq!(t.cpus, Some(2));
    assert_eq!(t.memory, Some(Size::from_bytes(3 * Size::GIB)));
    assert!(t.docker_enabled());
    let mounts = t.mounts.unwrap();
    let locations: Vec<&str> = mounts.iter().map(|m| m.location.as_str()).collect();
    assert_eq!(locations, [dir.path().to_str().unwrap(), "/tmp"]);
}
