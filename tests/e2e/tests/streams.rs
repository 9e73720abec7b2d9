//! Stdin, TTY and copy streams through the VM (issue 12): the docker CLI's
//! half-close must cross the host↔guest forwarder (which carries it in its
//! own frames), and a TTY session must reach the container.
#![cfg(feature = "vm")]

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_e2e::{Harness, run_with_input, text};

const BUSYBOX: &str = "busybox:e2e";
/// A stream that waits for an EOF that never comes fails after this long.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

fn started() -> Harness {
    let h = Harness::new();
    h.berth_ok(&["start"]);
    let images = tempfile::tempdir().unwrap();
    let archive = berth_test_support::images::busybox_with_tools()
        .docker_archive(&images.path().join("tools.tar"), &[BUSYBOX]);
    h.docker_ok("default", &["load", "-i", archive.to_str().unwrap()]);
    h
}

/// `docker <args>` with `input` on stdin; panics on a timeout.
fn docker_with_input(h: &Harness, args: &[&str], input: &[u8]) -> std::process::Output {
    run_with_input(h.docker_command("default", args), input, STREAM_TIMEOUT)
        .unwrap_or_else(|| panic!("docker {args:?} did not finish: stdin's EOF never arrived"))
}

#[test]
fn stdin_half_close_exec_scripts_and_cp_cross_the_vm() {
    let h = started();

    // `echo hi | docker run -i --rm busybox cat`
    let out = docker_with_input(&h, &["run", "-i", "--rm", BUSYBOX, "cat"], b"hi\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");

    // More than one frame of stdin, and output only after its EOF.
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = docker_with_input(
        &h,
        &["run", "-i", "--rm", BUSYBOX, "sh", "-c", "wc -c; md5sum"],
        &big,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().next(), Some("300000"));

    // `docker exec -i C sh < script`: the script runs, with its exit code.
    h.docker_ok(
        "default",
        &["run", "-d", "--name", "c1", BUSYBOX, "sleep", "600"],
    );
    let script = b"echo one\ncd /tmp && echo two > f && cat f\necho err >&2\nexit 3\n";
    let out = docker_with_input(&h, &["exec", "-i", "c1", "sh"], script);
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));

    // `docker cp` both ways, with a file larger than one frame.
    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("in.bin"), &payload).unwrap();
    h.docker_ok(
        "default",
        &[
            "cp",
            dir.path().join("in.bin").to_str().unwrap(),
            "c1:/tmp/in.bin",
        ],
    );
    let sum = h.docker_ok("default", &["exec", "c1", "wc", "-c", "/tmp/in.bin"]);
    assert!(sum.starts_with("200000 "), "{sum}");
    h.docker_ok(
        "default",
        &["exec", "c1", "sh", "-c", "cp /tmp/in.bin /tmp/out.bin"],
    );
    let back = dir.path().join("out.bin");
    h.docker_ok(
        "default",
        &["cp", "c1:/tmp/out.bin", back.to_str().unwrap()],
    );
    assert!(std::fs::read(&back).unwrap() == payload, "cp round trip");

    h.docker_ok("default", &["rm", "-f", "c1"]);
    h.berth_ok(&["delete", "-f"]);
}

/// `docker run -it` under a real pty (`script`): the container gets a
/// `/dev/pts/N` terminal of the pty's size.
#[test]
#[ignore = "known gap (issue 12): the engine opens the pty in the VM's /dev/pts, not in a devpts the container mounts, so `tty` says \"not a tty\" (the size and `test -t 0` are right)"]
fn run_it_under_a_pty_gets_a_tty_of_the_right_size() {
    let h = started();
    let docker = format!(
        "stty rows 33 cols 111; docker --context berth-default run -it --rm {BUSYBOX} sh -c 'tty; stty size'"
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &docker, "/dev/null"])
        .env("DOCKER_CONFIG", h.docker_config.path())
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::piped());
    // stdin stays open (empty) until the session ends: `-t` needs a live
    // terminal, and `script` forwards its stdin to it.
    let out = run_with_input(cmd, b"", STREAM_TIMEOUT).expect("docker run -it finished");
    let output = text(&out.stdout);
    assert!(out.status.success(), "{output}\n{}", text(&out.stderr));
    assert!(output.contains("/dev/pts/"), "no tty: {output:?}");
    assert!(output.contains("33 111"), "wrong size: {output:?}");
    h.berth_ok(&["delete", "-f"]);
}
