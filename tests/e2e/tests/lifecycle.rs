//! `berth` lifecycle against a real VM (QEMU TCG here).
#![cfg(feature = "vm")]

use berth_e2e::{Harness, text};

/// Tag of the test image (there is no registry: it is `docker load`ed).
const BUSYBOX: &str = "busybox:e2e";

#[test]
fn start_serves_docker_and_images_survive_stop_start_and_delete_leaves_nothing() {
    let h = Harness::new();

    let out = h.berth_ok(&["start"]);
    assert!(
        text(&out.stdout).contains("docker --context berth-default"),
        "usage is printed"
    );
    assert!(text(&out.stderr).contains("instance default is running"));
    let version = h.docker_ok("default", &["version", "--format", "{{.Server.Version}}"]);
    assert!(!version.trim().is_empty());
    h.docker_ok("default", &["info"]);
    let mode = std::fs::metadata(h.instance_dir("default").join("docker.sock")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_docker_archive(images.path(), BUSYBOX);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);
    let hi = h.docker_ok("default", &["run", "--rm", BUSYBOX, "echo", "hi"]);
    let serial =
        std::fs::read_to_string(h.instance_dir("default").join("serial.log")).unwrap_or_default();
    assert_eq!(hi, "hi\n", "serial console:\n{serial}");

    h.berth_ok(&["stop"]);
    assert!(
        h.processes().is_empty(),
        "stop leaves no process: {:?}",
        h.processes()
    );
    assert!(!h.instance_dir("default").join("docker.sock").exists());
    h.berth_ok(&["start"]);
    let listed = h.docker_ok(
        "default",
        &["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert!(
        listed.lines().any(|l| l == BUSYBOX),
        "image kept across restart: {listed}"
    );

    h.berth_ok(&["delete", "-f"]);
    assert!(
        h.processes().is_empty(),
        "delete leaves no process: {:?}",
        h.processes()
    );
    assert!(
        std::fs::read_dir(h.home.path()).unwrap().next().is_none(),
        "delete leaves no file"
    );
    assert!(
        !h.docker("default", &["version"]).status.success(),
        "the docker context is gone"
    );
}

#[test]
fn second_start_of_running_instance_is_a_clear_error() {
    let h = Harness::new();
    h.berth_ok(&["start", "dup"]);

    let out = h.berth(&["start", "dup"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("instance dup is already running"),
        "{}",
        text(&out.stderr)
    );
    h.docker_ok("dup", &["version"]);
}

#[test]
fn start_and_stop_recover_after_kill_9_of_the_host_agent() {
    let h = Harness::new();
    h.berth_ok(&["start", "crash"]);
    let kill9 = |pid: i32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };

    kill9(h.agent_pid("crash"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let listed = text(&h.berth_ok(&["list"]).stdout);
    assert!(listed.contains("orphaned"), "{listed}");
    h.berth_ok(&["start", "crash"]);
    h.docker_ok("crash", &["version"]);

    kill9(h.agent_pid("crash"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = h.berth_ok(&["stop", "crash"]);

    assert!(
        text(&out.stderr).contains("cleaned up what its host agent left behind"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        h.processes().is_empty(),
        "no orphan survives: {:?}",
        h.processes()
    );
    let dir = h.instance_dir("crash");
    for leftover in [
        "docker.sock",
        "vsock.sock",
        "vhu.sock",
        "qemu.pid",
        "vsockd.pid",
    ] {
        assert!(!dir.join(leftover).exists(), "{leftover} removed");
    }
}

#[test]
fn boot_failure_reports_the_serial_console_tail() {
    let h = Harness::new();

    // The init-marker mode makes PID 1 power off right away: the guest agent
    // never answers, as with any guest that dies during boot.
    let out = h
        .berth_cmd(&["start", "broken"])
        .env("BERTH_KERNEL_CMDLINE", "BERTH_INIT_MARKER=1")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("instance broken failed to start"),
        "{stderr}"
    );
    assert!(stderr.contains("the VM stopped while booting"), "{stderr}");
    assert!(stderr.contains("--- serial console"), "{stderr}");
    assert!(stderr.contains("berth-init: started"), "{stderr}");
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}
