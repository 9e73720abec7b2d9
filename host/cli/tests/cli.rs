//! The `berth` binary's input handling, without booting a VM.

use std::process::{Command, Output};

fn berth(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_HOME", home)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn start_with_bad_instance_name_names_it() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["start", "Bad_Name"]);

    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(
        stderr(&out).contains(
            "invalid instance name \"Bad_Name\": only lowercase letters, digits and '-' are allowed"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn start_without_qemu_says_what_to_install() {
    let home = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("start")
        .env("BERTH_HOME", home.path())
        .env("PATH", empty_path.path())
        .env_remove("BERTH_QEMU")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "qemu-system-x86_64 not found on PATH; install it (apt-get install qemu-system-x86"
        ),
        "{}",
        stderr(&out)
    );
    assert!(
        !home.path().join("default").exists(),
        "nothing is created before the check"
    );
}

#[test]
fn list_of_empty_home_prints_only_the_header() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["list"]);

    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "NAME                 STATUS   CPUS   MEMORY   DISK  DOCKER SOCKET\n"
    );
}

#[test]
fn list_json_of_empty_home_is_an_empty_array() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["list", "--json"]);

    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn stop_of_unknown_instance_says_how_to_create_it() {
    let home = tempfile::tempdir().unwrap();

    let out = berth(home.path(), &["stop", "dev"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("instance dev does not exist (create it with `berth start dev`)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn start_with_long_berth_home_explains_socket_limit() {
    let home = tempfile::tempdir().unwrap();
    let long = home.path().join("x".repeat(90));

    let out = berth(&long, &["start"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unix sockets allow 96 (use a shorter BERTH_HOME)"),
        "{}",
        stderr(&out)
    );
}
