//! End-to-end container tests: the real docker CLI against `berth-agent
//! serve`, running natively as root inside a network namespace each test
//! creates. Covers the engine issue's "done when" for containers.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_test_support::engine::NativeEngine;
use berth_test_support::images;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-agent"))
}

/// An engine with `busybox:latest` loaded.
fn engine() -> NativeEngine {
    let engine = NativeEngine::start(agent());
    let tar = images::busybox_docker_archive(engine.dir.path(), "busybox:latest");
    engine.load(&tar);
    engine
}

fn output_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it returns true or 20 s pass.
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_rm_echo_prints_and_removes() {
    let engine = engine();
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "busybox", "echo", "hi"]),
        "hi\n"
    );
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn exit_codes_match_docker() {
    let engine = engine();
    let code = |args: &[&str]| engine.docker(args).status.code();
    assert_eq!(code(&["run", "--rm", "busybox", "true"]), Some(0));
    assert_eq!(
        code(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]),
        Some(3)
    );
    // Not found in $PATH, and a path that does not exist.
    assert_eq!(
        code(&["run", "--rm", "busybox", "no-such-program"]),
        Some(127)
    );
    assert_eq!(
        code(&["run", "--rm", "busybox", "/no/such/file"]),
        Some(127)
    );
    // Exists but is not executable.
    assert_eq!(code(&["run", "--rm", "busybox", "/etc/passwd"]), Some(126));
    // The engine cannot set the container up: an unknown user.
    let out = engine.docker(&["run", "--rm", "--user", "nosuchuser", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unable to find user nosuchuser"));
}

#[test]
fn detached_logs_follow_and_stop_with_term_trap() {
    let engine = engine();
    let script = "trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.1; done";
    let id = engine.docker_ok(&[
        "run", "-d", "--name", "trapper", "busybox", "sh", "-c", script,
    ]);
    let id = id.trim();
    let mut follower = engine
        .docker_cmd(&["logs", "-f", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning docker logs -f");
    eventually("the container to log 'started'", || {
        engine.docker_ok(&["logs", id]).contains("started")
    });
    engine.docker_ok(&["stop", "trapper"]);
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", id])
            .trim(),
        "0"
    );
    // `logs -f` ends by itself once the container exits.
    let status = follower.wait().expect("waiting for docker logs -f");
    assert!(status.success());
    let mut followed = String::new();
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert_eq!(followed, "started\ngot-term\n");
}

#[test]
fn stop_timeout_kills_a_process_that_ignores_term() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    let started = Instant::now();
    engine.docker_ok(&["stop", "-t", "1", id]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "stop returned before the timeout"
    );
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", id])
            .trim(),
        "137"
    );
}

#[test]
fn run_interactive_pipes_one_mebibyte_through_md5sum() {
    let engine = engine();
    let data: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut child = engine
        .docker_cmd(&["run", "-i", "--rm", "busybox", "md5sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning docker run -i");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data).map(|()| data));
    let out = child.wait_with_output().unwrap();
    let data = writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = {
        let mut md5 = std::process::Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        md5.stdin.take().unwrap().write_all(&data).unwrap();
        output_of(&md5.wait_with_output().unwrap())
    };
    assert_eq!(
        output_of(&out).split_whitespace().next(),
        expected.split_whitespace().next()
    );
}

#[test]
fn run_with_tty_under_script_sees_a_terminal() {
    let engine = engine();
    let command = format!(
        "DOCKER_HOST={} DOCKER_CONFIG={} docker run -it --rm busybox sh -c 'test -t 0 && test -t 1 && echo is-a-tty; stty size'",
        engine.docker_host(),
        engine.dir.path().join("docker-config").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("COLUMNS", "100")
        .env("LINES", "30")
        .stdin(Stdio::null())
        .output()
        .expect("running script");
    let text = output_of(&out);
    assert!(out.status.success(), "output: {text}");
    assert!(text.contains("is-a-tty"), "output: {text}");
    // A TTY joins stdout and stderr and uses CRLF line ends.
    assert!(text.contains("is-a-tty\r\n"), "output: {text:?}");
}

#[test]
fn exec_honours_env_workdir_user_stdin_and_exit_codes() {
    let engine = engine();
    engine.docker_ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    assert_eq!(
        engine.docker_ok(&["exec", "-e", "FOO=bar", "box", "sh", "-c", "echo $FOO"]),
        "bar\n"
    );
    assert_eq!(
        engine.docker_ok(&["exec", "-w", "/tmp", "box", "pwd"]),
        "/tmp\n"
    );
    assert_eq!(
        engine.docker_ok(&["exec", "-u", "nobody", "box", "id", "-u"]),
        "65534\n"
    );
    assert_eq!(
        engine
            .docker(&["exec", "box", "sh", "-c", "exit 5"])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        engine
            .docker(&["exec", "box", "no-such-program"])
            .status
            .code(),
        Some(127)
    );
    let mut child = engine
        .docker_cmd(&["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through exec stdin\n")
        .unwrap();
    assert_eq!(
        output_of(&child.wait_with_output().unwrap()),
        "through exec stdin\n"
    );
    engine.docker_ok(&["rm", "-f", "box"]);
}

#[test]
fn config_env_workdir_user_name_rename_ps_inspect_and_rm() {
    let engine = engine();
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "-e", "A=1", "busybox", "sh", "-c", "echo $A"]),
        "1\n"
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "-w", "/made/up", "busybox", "pwd"]),
        "/made/up\n"
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "-u", "user", "busybox", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "--hostname", "h1", "busybox", "hostname"]),
        "h1\n"
    );
    engine.docker_ok(&[
        "run", "-d", "--name", "first", "--label", "k=v", "busybox", "sleep", "1000",
    ]);
    engine.docker_ok(&["rename", "first", "second"]);
    let ps = engine.docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.trim(), "second running");
    let filtered = engine.docker_ok(&["ps", "--filter", "label=k=v", "--format", "{{.Names}}"]);
    assert_eq!(filtered.trim(), "second");
    assert_eq!(
        engine.docker_ok(&["ps", "--filter", "label=k=other", "-q"]),
        ""
    );
    assert_eq!(
        engine
            .docker_ok(&[
                "inspect",
                "--format",
                "{{.Name}} {{.State.Running}}",
                "second"
            ])
            .trim(),
        "/second true"
    );
    // Removing a running container needs force.
    let refused = engine.docker(&["rm", "second"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("container is running"));
    engine.docker_ok(&["rm", "-f", "second"]);
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
    // Names are unique.
    engine.docker_ok(&["create", "--name", "dup", "busybox", "true"]);
    let clash = engine.docker(&["create", "--name", "dup", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&clash.stderr).contains("is already in use"));
}

#[test]
fn kill_with_usr1_reaches_a_trap() {
    let engine = engine();
    let script = "trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done";
    let id = engine.docker_ok(&["run", "-d", "busybox", "sh", "-c", script]);
    let id = id.trim();
    eventually("the trap to be installed", || {
        engine.docker_ok(&["logs", id]).contains("ready")
    });
    engine.docker_ok(&["kill", "-s", "USR1", id]);
    assert_eq!(engine.docker_ok(&["wait", id]).trim(), "0");
    assert!(engine.docker_ok(&["logs", id]).contains("got-usr1"));
}

#[test]
fn restart_policy_on_failure_retries_twice() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    let id = id.trim();
    eventually("two restarts and a final exit", || {
        engine
            .docker_ok(&[
                "inspect",
                "--format",
                "{{.RestartCount}} {{.State.Status}}",
                id,
            ])
            .trim()
            == "2 exited"
    });
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", id])
            .trim(),
        "1"
    );
}

/// Reads a cgroup file of container `id`, trying v2 then v1 locations.
fn cgroup_file(id: &str, v1_controller: &str, v1_file: &str, v2_file: &str) -> String {
    let v2 = format!("/sys/fs/cgroup/berth/{id}/{v2_file}");
    let v1 = format!("/sys/fs/cgroup/{v1_controller}/berth/{id}/{v1_file}");
    std::fs::read_to_string(&v2)
        .or_else(|_| std::fs::read_to_string(&v1))
        .unwrap_or_else(|e| panic!("reading {v2} or {v1}: {e}"))
}

#[test]
fn memory_and_pids_limits_land_in_the_cgroup_and_oom_gives_137() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "-m",
        "64m",
        "--pids-limit",
        "50",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    assert_eq!(
        cgroup_file(id, "memory", "memory.limit_in_bytes", "memory.max").trim(),
        "67108864"
    );
    assert_eq!(cgroup_file(id, "pids", "pids.max", "pids.max").trim(), "50");
    engine.docker_ok(&["rm", "-f", id]);
    // dd allocates a 64 MiB buffer and fills it: far over a 16 MiB limit.
    let out = engine.docker(&[
        "run",
        "--name",
        "oom",
        "-m",
        "16m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.OOMKilled}}", "oom"])
            .trim(),
        "true"
    );
}

#[test]
fn pause_unpause_wait_top_and_events() {
    let engine = engine();
    let since = chrono_like_now();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "pz",
        "busybox",
        "sh",
        "-c",
        "sleep 1000",
    ]);
    let id = id.trim();
    assert!(engine.docker_ok(&["top", "pz"]).contains("sleep 1000"));
    engine.docker_ok(&["pause", "pz"]);
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.Status}}", "pz"])
            .trim(),
        "paused"
    );
    engine.docker_ok(&["unpause", "pz"]);
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.Status}}", "pz"])
            .trim(),
        "running"
    );
    engine.docker_ok(&["kill", "pz"]);
    assert_eq!(engine.docker_ok(&["wait", "pz"]).trim(), "137");
    engine.docker_ok(&["rm", "pz"]);
    let until = chrono_like_now() + 1;
    let events = engine.docker_ok(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={id}"),
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = events.lines().collect();
    assert_eq!(
        actions,
        [
            "create", "start", "pause", "unpause", "kill", "die", "destroy"
        ]
    );
}

fn chrono_like_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sends a raw HTTP request to the engine's socket and returns the status
/// line and body.
fn raw_request(engine: &NativeEngine, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(&engine.socket).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[test]
fn malformed_json_gets_400_with_a_message() {
    let engine = NativeEngine::start(agent());
    let (status, body) = raw_request(&engine, "POST", "/v1.45/containers/create", "{\"Image\": ");
    assert!(status.contains(" 400 "), "status: {status}");
    assert!(
        body.contains("\"message\":\"invalid JSON in request body"),
        "body: {body}"
    );
    let (status, body) = raw_request(&engine, "GET", "/containers/nope/json", "");
    assert!(status.contains(" 404 "), "status: {status}");
    assert!(body.contains("No such container: nope"), "body: {body}");
}

#[test]
fn stats_no_stream_reports_memory_and_pids() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        // sh and two sleeps: the count must not include the runtime helper.
        "sleep 1000 & sleep 1000 & wait",
    ]);
    let out = engine.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.PIDs}}",
        "busy",
    ]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"busy"), "stats: {out}");
    // "<usage> / 64MiB <pids>": the limit comes from the cgroup.
    assert_eq!(fields.get(3), Some(&"64MiB"), "stats: {out}");
    assert_eq!(fields.get(4), Some(&"3"), "stats: {out}");
    engine.docker_ok(&["rm", "-f", "busy"]);
}

#[test]
fn init_runs_a_reaper_as_pid_one() {
    let engine = engine();
    // With --init the user's program is not PID 1: the reaper is.
    let pid = engine.docker_ok(&["run", "--rm", "--init", "busybox", "sh", "-c", "echo $$"]);
    assert_ne!(pid.trim(), "1");
    assert_eq!(
        engine
            .docker_ok(&["run", "--rm", "busybox", "sh", "-c", "echo $$"])
            .trim(),
        "1"
    );
    // Signals reach the program through the reaper, and its code comes back.
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "--init",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 9' TERM; while true; do sleep 0.1; done",
    ]);
    engine.docker_ok(&["stop", id.trim()]);
    assert_eq!(
        engine
            .docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", id.trim()])
            .trim(),
        "9"
    );
}

#[test]
fn healthcheck_reports_healthy_then_unhealthy() {
    let engine = engine();
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "probe",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ok; sleep 1000",
    ]);
    let status = || {
        engine
            .docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", "probe"])
            .trim()
            .to_owned()
    };
    eventually("healthy", || status() == "healthy");
    engine.docker_ok(&["exec", "probe", "rm", "/tmp/ok"]);
    eventually("unhealthy", || status() == "unhealthy");
    assert!(
        engine
            .docker_ok(&["ps", "--format", "{{.Status}}"])
            .contains("Up")
    );
    engine.docker_ok(&["rm", "-f", "probe"]);
}

#[test]
fn container_prune_removes_only_stopped_containers_and_df_counts() {
    let engine = engine();
    engine.docker_ok(&["run", "--name", "gone", "busybox", "true"]);
    engine.docker_ok(&["run", "-d", "--name", "stays", "busybox", "sleep", "1000"]);
    let pruned = engine.docker_ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Deleted Containers"), "prune: {pruned}");
    assert_eq!(
        engine
            .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
            .trim(),
        "stays"
    );
    let df = engine.docker_ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Images 1"), "df: {df}");
    assert!(df.contains("Containers 1"), "df: {df}");
    engine.docker_ok(&["rm", "-f", "stays"]);
}

#[test]
fn logs_separate_streams_and_honour_tail_timestamps_and_since() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "echo oops >&2; sleep 0.2; echo one; echo two; echo three",
    ]);
    let id = id.trim();
    engine.docker_ok(&["wait", id]);
    let out = engine.docker(&["logs", id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(engine.docker_ok(&["logs", "--tail", "1", id]), "three\n");
    let stamped = engine.docker_ok(&["logs", "-t", "--tail", "1", id]);
    let (stamp, text) = stamped.split_once(' ').unwrap();
    assert!(
        stamp.starts_with("20") && stamp.ends_with('Z'),
        "timestamp: {stamp}"
    );
    assert_eq!(text, "three\n");
    // Nothing was logged after a future time.
    assert_eq!(
        engine.docker_ok(&["logs", "--since", "2999-01-01T00:00:00Z", id]),
        ""
    );
}

#[test]
fn restart_gives_a_new_process_and_cpus_set_the_cfs_quota() {
    let engine = engine();
    let id = engine.docker_ok(&["run", "-d", "--cpus", "0.5", "busybox", "sleep", "1000"]);
    let id = id.trim();
    let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/berth/{id}/cpu.max"))
        .or_else(|_| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/berth/{id}/cpu.cfs_quota_us"))
        })
        .unwrap();
    assert!(quota.starts_with("50000"), "quota: {quota}");
    let before = engine.docker_ok(&["inspect", "--format", "{{.State.Pid}}", id]);
    engine.docker_ok(&["restart", "-t", "0", id]);
    let after = engine.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Pid}} {{.State.Running}}",
        id,
    ]);
    assert_ne!(before.trim(), after.split_whitespace().next().unwrap());
    assert!(after.trim().ends_with("true"), "after restart: {after}");
    engine.docker_ok(&["rm", "-f", id]);
}
