//! Crash recovery: when the engine dies, its containers die with it, and
//! an engine restarted on the same state finds them exited and usable, with
//! no process, cgroup or mount left behind.

use std::path::Path;

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn cgroup_dirs(id: &str) -> Vec<String> {
    ["", "memory/", "pids/", "cpu/", "cpuacct/", "freezer/"]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}berth/{id}"))
        .filter(|p| Path::new(p).exists())
        .collect()
}

fn mounts_mentioning(text: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

#[test]
fn killing_the_engine_kills_its_containers_and_a_restart_recovers() {
    let mut engine = NativeEngine::start(Path::new(env!("CARGO_BIN_EXE_berth-agent")));
    engine.load(&images::busybox_docker_archive(
        engine.dir.path(),
        "busybox:latest",
    ));
    let id = engine.docker_ok(&[
        "run", "-d", "--name", "victim", "-m", "32m", "busybox", "sleep", "1000",
    ]);
    let id = id.trim().to_owned();
    let pid: i32 = engine
        .docker_ok(&["inspect", "--format", "{{.State.Pid}}", &id])
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    engine.kill_agent();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "container process {pid} outlived the engine"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    engine.restart_agent();
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.Status}}", "victim"])
            .trim(),
        "exited"
    );
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&id)
    );
    // The container starts again on the recovered engine.
    engine.docker_ok(&["start", "victim"]);
    assert_eq!(
        engine.docker_ok(&["exec", "victim", "echo", "back"]),
        "back\n"
    );
    engine.docker_ok(&["rm", "-f", "victim"]);
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroups left after rm: {:?}",
        cgroup_dirs(&id)
    );
    assert!(
        mounts_mentioning(&id).is_empty(),
        "mounts left: {:?}",
        mounts_mentioning(&id)
    );
}
