//! Debian's `docker-compose` (1.29, docker-py) against the native engine:
//! a two-service app where one service reaches the other by its service
//! name on the project network (issue 3, "compose").
//!
//! Like every engine test, the engine and its clients share a network
//! namespace this test creates; no packet leaves the machine.

use std::path::Path;
use std::process::{Command, Output};

use berth_test_support::engine::{NativeEngine, tail};
use berth_test_support::images;

const COMPOSE_FILE: &str = r#"version: "3.8"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www"]
  client:
    image: busybox:latest
    depends_on: [web]
    command: ["sh", "-c", "for i in $$(seq 50); do wget -qO- http://web/ && break; sleep 0.1; done; exec sleep 300"]
"#;

fn compose(engine: &NativeEngine, dir: &Path, args: &[&str]) -> Output {
    Command::new("docker-compose")
        .current_dir(dir)
        .env("DOCKER_HOST", engine.docker_host())
        .env("COMPOSE_PROJECT_NAME", "demo")
        .args(args)
        .output()
        .expect("docker-compose is installed (scripts/install-deps.sh)")
}

fn compose_ok(engine: &NativeEngine, dir: &Path, args: &[&str]) -> String {
    let out = compose(engine, dir, args);
    assert!(
        out.status.success(),
        "docker-compose {args:?} failed:\n{}{}\nengine log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&engine.log(), 40)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn compose_up_reaches_a_service_by_name_and_down_cleans_up() {
    let engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    let project = engine.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("docker-compose.yml"), COMPOSE_FILE).unwrap();

    compose_ok(&engine, &project, &["up", "-d"]);

    // The client fetched web's page by service name; its log shows it.
    let mut logs = String::new();
    for _ in 0..100 {
        logs = compose_ok(&engine, &project, &["logs", "--no-color", "client"]);
        if logs.contains("hello-from-web") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(logs.contains("hello-from-web"), "client logs: {logs}");
    let ps = compose_ok(&engine, &project, &["ps"]);
    assert!(ps.contains("demo_web_1") && ps.contains("Up"), "{ps}");

    compose_ok(&engine, &project, &["down", "-t", "1"]);

    let left = engine.docker_ok(&["ps", "-aq"]);
    assert_eq!(left.trim(), "", "down removes the containers");
    let networks = engine.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !networks.contains("demo_default"),
        "down removes the project network: {networks}"
    );
}
