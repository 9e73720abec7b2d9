//! Per-project templates against a real VM: `berth.yaml` discovery,
//! provisioning scripts with the template's env, a mount, probes, `berth
//! edit`, and a failing script failing `berth start`.
#![cfg(feature = "vm")]

use std::path::{Path, PathBuf};

use berth_e2e::{Harness, text};

/// Tag of the test image (there is no registry: it is `docker load`ed).
const BUSYBOX: &str = "busybox:e2e";

/// A project directory `<tmp>/<name>` holding `berth.yaml`.
fn project(root: &Path, name: &str, yaml: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("berth.yaml"), yaml).unwrap();
    dir
}

/// Small VM (TCG on a shared machine); one writable share, `SHARED`
/// (replaced by a host directory), instead of the home directory; a port
/// rule moving guest port `GUESTPORT` (a VM listener the provision script
/// starts) to host port `HOSTPORT`.
const PROVISIONED: &str = r#"
base: template:default
cpus: 1
memory: 1GiB
disk: 2GiB
mounts:
  - location: SHARED
    writable: true
portForwards:
  - guestPort: GUESTPORT
    hostPort: HOSTPORT
env:
  GREETING: hello-from-berth-yaml
provision:
  - mode: system
    script: |
      echo "provisioning with $GREETING"
      mkdir -p /srv/e2e
      echo "$GREETING" > /srv/e2e/greeting
      echo "$GREETING" > SHARED/from-provision
      busybox httpd -p 127.0.0.1:GUESTPORT -h /srv/e2e
  - mode: user
    script: |
      id -u > "$HOME/uid"
      echo "user $USER wrote $HOME/uid"
probes:
  - script: |
      test "$(cat /srv/e2e/greeting)" = "$GREETING"
      test "$(cat /home/berth/uid)" = 1000
    hint: the provision scripts did not write their files
"#;

#[test]
fn berth_yaml_provisions_with_its_env_on_every_boot_and_edit_applies_on_restart() {
    let h = Harness::new();
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let (guest_port, host_port) = (berth_e2e::free_port(), berth_e2e::free_port());
    let yaml = PROVISIONED
        .replace("SHARED", shared.to_str().unwrap())
        .replace("GUESTPORT", &guest_port.to_string())
        .replace("HOSTPORT", &host_port.to_string());
    let dir = project(root.path(), "webapp", &yaml);

    let out = h.berth_cmd(&["start"]).current_dir(&dir).output().unwrap();

    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("created instance webapp from"),
        "named after the directory: {stderr}"
    );
    assert!(
        stderr.contains("provision 1: provisioning with hello-from-berth-yaml"),
        "output streams into the progress: {stderr}"
    );
    assert!(
        stderr.contains("provision 2: user berth wrote /home/berth/uid"),
        "{stderr}"
    );
    assert!(stderr.contains("waiting for probe 1 of 1"), "{stderr}");
    let log = std::fs::read_to_string(h.instance_dir("webapp").join("hostagent.log")).unwrap();
    assert!(
        log.contains("provisioning with hello-from-berth-yaml"),
        "output reaches the host agent log: {log}"
    );
    let stored = std::fs::read_to_string(h.instance_dir("webapp").join("template.yaml")).unwrap();
    assert!(
        stored.contains("GREETING: hello-from-berth-yaml"),
        "{stored}"
    );

    // The files the scripts wrote, seen from a container bind-mounting them.
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_docker_archive(images.path(), BUSYBOX);
    h.docker_ok("webapp", &["load", "-i", archive.to_str().unwrap()]);
    let greeting = h.docker_ok(
        "webapp",
        &[
            "run",
            "--rm",
            "-v",
            "/srv/e2e:/e2e",
            BUSYBOX,
            "cat",
            "/e2e/greeting",
        ],
    );
    assert_eq!(greeting, "hello-from-berth-yaml\n");
    let uid = h.docker_ok(
        "webapp",
        &[
            "run",
            "--rm",
            "-v",
            "/home/berth:/h",
            BUSYBOX,
            "cat",
            "/h/uid",
        ],
    );
    assert_eq!(uid, "1000\n");
    // The mount: the provision script wrote through it to the host.
    assert_eq!(
        std::fs::read_to_string(shared.join("from-provision")).unwrap(),
        "hello-from-berth-yaml\n"
    );

    // The port rule: the VM's listener answers on the host port it names.
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", host_port)) {
            use std::io::{Read, Write};
            conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            conn.write_all(b"GET /greeting HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            let _ = conn.read_to_string(&mut body);
            answer = Some(body);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = answer.expect("the portForwards rule forwards the VM listener");
    assert!(answer.contains("hello-from-berth-yaml"), "{answer}");

    // `berth edit` changes the stored template; the next boot provisions
    // with it (the guest's root is a tmpfs: the file is written afresh).
    h.berth_ok(&["stop", "webapp"]);
    let edited = h
        .berth_cmd(&["edit", "webapp"])
        .env(
            "EDITOR",
            "sed -i 's/hello-from-berth-yaml/edited-greeting/'",
        )
        .output()
        .unwrap();
    assert!(edited.status.success(), "{}", text(&edited.stderr));
    let out = h.berth_cmd(&["start"]).current_dir(&dir).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("provision 1: provisioning with edited-greeting"),
        "{stderr}"
    );
    let greeting = h.docker_ok(
        "webapp",
        &[
            "run",
            "--rm",
            "-v",
            "/srv/e2e:/e2e",
            BUSYBOX,
            "cat",
            "/e2e/greeting",
        ],
    );
    assert_eq!(greeting, "edited-greeting\n");
    assert_eq!(
        std::fs::read_to_string(shared.join("from-provision")).unwrap(),
        "edited-greeting\n"
    );
}

#[test]
fn a_failing_provision_script_fails_start_with_its_output_and_stops_the_vm() {
    let h = Harness::new();
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("broken.yaml");
    std::fs::write(
        &file,
        r#"
base: template:default
cpus: 1
memory: 1GiB
disk: 2GiB
mounts: []
env:
  WHAT: the-widget
provision:
  - mode: system
    script: |
      echo "configuring $WHAT"
      echo "fatal: $WHAT is missing" >&2
      exit 7
  - mode: system
    script: echo never-runs
"#,
    )
    .unwrap();

    let out = h.berth(&["start", file.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "berth: error: instance broken failed to start: provision script 1 (system) exited with code 7:\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("\nconfiguring the-widget"), "{stderr}");
    assert!(
        stderr.contains("\nfatal: the-widget is missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("never-runs"), "{stderr}");
    assert!(
        h.processes().is_empty(),
        "the VM is shut down: {:?}",
        h.processes()
    );
    assert!(!h.instance_dir("broken").join("docker.sock").exists());
}
