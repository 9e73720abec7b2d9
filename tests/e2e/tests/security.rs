//! Runtime confinement in the VM (cgroup v2): the BPF device program denies
//! a node outside Docker's allow-list, and the status line of a default
//! container matches dockerd's. The native suite covers the rest on v1
//! (`guest-agent/agent/tests/security_runtime.rs`).
#![cfg(feature = "vm")]

use berth_e2e::{Harness, text};

const BUSYBOX: &str = "busybox:e2e";

#[test]
fn default_container_in_the_vm_is_confined_like_dockerd() {
    let h = Harness::new();
    h.berth_ok(&["start"]);
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_docker_archive(images.path(), BUSYBOX);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);

    let status = h.docker_ok(
        "default",
        &[
            "run",
            "--rm",
            BUSYBOX,
            "grep",
            "-E",
            "^(Seccomp|NoNewPrivs|CapEff):",
            "/proc/self/status",
        ],
    );
    assert!(status.contains("CapEff:\t00000000a80425fb"), "{status}");
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");

    // The device program refuses the open before any driver is looked up,
    // so the error is EPERM whether or not the VM has such a device.
    let sh = |flags: &[&str], script: &str| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[BUSYBOX, "sh", "-c", script]);
        let out = h.docker("default", &args);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let out = sh(
        &[],
        "mknod /tmp/k c 10 232 && echo made && : < /tmp/k && echo opened",
    );
    assert!(out.contains("made"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(!out.contains("opened"), "{out}");
    let out = sh(&[], "echo x > /dev/null && echo null-ok");
    assert!(out.contains("null-ok"), "{out}");
    // --device adds a rule to the program.
    let out = sh(
        &["--device", "/dev/null:/dev/mynull"],
        "echo x > /dev/mynull && echo mynull-ok",
    );
    assert!(out.contains("mynull-ok"), "{out}");
    let out = sh(&[], "unshare -U -r true && echo unshared");
    assert!(!out.contains("unshared"), "{out}");

    h.berth_ok(&["delete", "-f"]);
}
