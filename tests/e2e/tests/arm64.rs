//! The arm64 guest (the one Virtualization.framework boots on Apple
//! silicon) under `qemu-system-aarch64` TCG, with the same vhost-device-vsock
//! and Docker socket path as the x86_64 guest.
#![cfg(feature = "vm")]

use std::time::Instant;

use berth_e2e::{Harness, aarch64_image_dir, arm64_busybox, text};

/// Tag of the arm64 test image (`docker load`ed; there is no registry).
const BUSYBOX: &str = "busybox:arm64-e2e";

#[test]
fn arm64_guest_runs_an_arm64_busybox_container() {
    let setup = Instant::now();
    let h = Harness::with_image(aarch64_image_dir);
    eprintln!("arm64 guest: image ready after {:?}", setup.elapsed());
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_arm64(&arm64_busybox())
        .docker_archive(&images.path().join("busybox-arm64.tar"), &[BUSYBOX]);

    let started = Instant::now();
    let out = h
        .berth_cmd(&["start", "--cpus", "2", "--memory", "1024"])
        // aarch64 under TCG on a shared 2-core machine: allow for slow boots.
        .env("BERTH_BOOT_TIMEOUT", "300")
        .output()
        .expect("running berth start");
    let serial = || {
        std::fs::read_to_string(h.instance_dir("default").join("serial.log")).unwrap_or_default()
    };
    assert!(
        out.status.success(),
        "berth start failed:\n{}\nserial console:\n{}",
        text(&out.stderr),
        serial()
    );
    eprintln!(
        "arm64 guest: docker answered {:?} after start",
        started.elapsed()
    );
    let arch = h.docker_ok("default", &["version", "--format", "{{.Server.Arch}}"]);
    let phase = Instant::now();
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);
    eprintln!("arm64 guest: docker load took {:?}", phase.elapsed());
    let phase = Instant::now();
    let hi = h.docker_ok("default", &["run", "--rm", BUSYBOX, "echo", "hi"]);
    eprintln!(
        "arm64 guest: docker run --rm echo hi took {:?}",
        phase.elapsed()
    );
    let uname = h.docker_ok("default", &["run", "--rm", BUSYBOX, "uname", "-m"]);

    assert_eq!(arch.trim(), "arm64", "the engine reports the guest's arch");
    assert_eq!(hi, "hi\n", "serial console:\n{}", serial());
    assert_eq!(uname, "aarch64\n");
    let phase = Instant::now();
    h.berth_ok(&["stop"]);
    eprintln!("arm64 guest: berth stop took {:?}", phase.elapsed());
    assert!(
        h.processes().is_empty(),
        "stop leaves no process: {:?}",
        h.processes()
    );
}
