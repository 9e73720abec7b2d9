//! The Docker API contract where real clients (docker-py, Testcontainers)
//! found the engine differing from dockerd: swarm routes, inspect fields
//! and create-time validation, `update`, legacy links, `kill`, `top` and
//! `stats`, user groups, name resolution on user networks and `logs`'
//! `tail`. Driven with the docker CLI, and with raw HTTP over the unix
//! socket (curl) where the CLI cannot express the request.

use std::path::Path;
use std::process::Command;
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

/// One HTTP exchange over the engine's socket: the status and the body.
fn api(engine: &NativeEngine, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--unix-socket")
        .arg(&engine.socket);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    cmd.arg(format!("http://localhost/v1.45{path}"));
    let out = cmd.output().expect("running curl");
    assert!(
        out.status.success(),
        "curl {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl wrote the status line");
    (
        code.trim().parse().expect("a numeric HTTP status"),
        body.to_owned(),
    )
}

/// `docker inspect -f FORMAT target`, trimmed.
fn inspect(engine: &NativeEngine, format: &str, target: &str) -> String {
    engine
        .docker_ok(&["inspect", "-f", format, target])
        .trim()
        .to_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
fn swarm_routes_answer_503_as_a_node_outside_a_swarm() {
    let engine = NativeEngine::start(agent());
    for (method, path, message) in [
        (
            "POST",
            "/swarm/leave?force=1",
            "This node is not part of a swarm",
        ),
        ("POST", "/swarm/init", "This node is not part of a swarm"),
        ("POST", "/swarm/join", "This node is not part of a swarm"),
        ("POST", "/swarm/unlock", "This node is not part of a swarm"),
        ("GET", "/swarm", "This node is not a swarm manager"),
        (
            "POST",
            "/swarm/update?version=1",
            "This node is not a swarm manager",
        ),
        (
            "GET",
            "/swarm/unlockkey",
            "This node is not a swarm manager",
        ),
        ("GET", "/nodes", "This node is not a swarm manager"),
        ("GET", "/nodes/abc", "This node is not a swarm manager"),
        ("GET", "/services", "This node is not a swarm manager"),
        (
            "POST",
            "/services/create",
            "This node is not a swarm manager",
        ),
        (
            "DELETE",
            "/services/abc",
            "This node is not a swarm manager",
        ),
        ("GET", "/tasks", "This node is not a swarm manager"),
        ("GET", "/secrets", "This node is not a swarm manager"),
        ("GET", "/configs", "This node is not a swarm manager"),
    ] {
        let (status, body) = api(&engine, method, path, None);
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert!(
            body.starts_with(&format!("{{\"message\":\"{message}")),
            "{method} {path}: {body}"
        );
    }
}

#[test]
fn logs_with_a_negative_tail_return_every_line() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two; echo three",
    ]);
    let id = id.trim();
    engine.docker_ok(&["wait", id]);
    for tail in ["-1", "-5", "all"] {
        let (status, body) = api(
            &engine,
            "GET",
            &format!("/containers/{id}/logs?stdout=1&tail={tail}"),
            None,
        );
        assert_eq!(status, 200, "tail={tail}: {body}");
        for line in ["one", "two", "three"] {
            assert!(body.contains(line), "tail={tail}: {body:?}");
        }
    }
    assert_eq!(engine.docker_ok(&["logs", "--tail", "1", id]), "three\n");
}

#[test]
fn inspect_shows_log_config_runtime_and_health() {
    let engine = engine();
    let plain = engine.docker_ok(&["create", "busybox", "true"]);
    let plain = plain.trim();
    assert_eq!(
        inspect(&engine, "{{json .HostConfig.LogConfig}}", plain),
        r#"{"Type":"json-file","Config":{}}"#
    );
    assert_eq!(inspect(&engine, "{{.HostConfig.Runtime}}", plain), "runc");
    let opts = engine.docker_ok(&[
        "create",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-file=3",
        "busybox",
        "true",
    ]);
    assert_eq!(
        inspect(&engine, "{{json .HostConfig.LogConfig}}", opts.trim()),
        r#"{"Type":"json-file","Config":{"max-file":"3"}}"#
    );
    let checked = engine.docker_ok(&[
        "run",
        "-d",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "busybox",
        "sleep",
        "60",
    ]);
    let checked = checked.trim();
    // Present at once after the start, before the first probe.
    let status = inspect(&engine, "{{.State.Health.Status}}", checked);
    assert!(
        status == "starting" || status == "healthy",
        "health status {status:?}"
    );
    eventually("the healthcheck to pass", || {
        inspect(&engine, "{{.State.Health.Status}}", checked) == "healthy"
    });
    // docker-py sends unset durations as null.
    let (status, body) = api(
        &engine,
        "POST",
        "/containers/create?name=nulls",
        Some(
            r#"{"Image":"busybox","Cmd":["sleep","60"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000,"Timeout":1000000000,"Retries":1,"StartPeriod":null}}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    engine.docker_ok(&["start", "nulls"]);
    eventually("the null-duration healthcheck to pass", || {
        inspect(&engine, "{{.State.Health.Status}}", "nulls") == "healthy"
    });
}

#[test]
fn create_refuses_what_dockerd_refuses_with_its_messages() {
    let engine = engine();
    for (args, message) in [
        (
            &["--log-driver", "asdf"][..],
            "logger: no log driver named 'asdf' is registered",
        ),
        (
            &["--memory", "4m"][..],
            "Minimum memory limit allowed is 6MB",
        ),
        (
            &["--cpu-period", "500"][..],
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        (
            &["--cpu-quota", "500"][..],
            "CPU cfs quota can not be less than 1ms (i.e. 1000)",
        ),
        (
            &["--memory", "64m", "--memory-swap", "32m"][..],
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
    ] {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["busybox", "true"]);
        let out = engine.docker(&full);
        assert!(!out.status.success(), "docker {full:?} succeeded");
        assert!(
            stderr_of(&out).contains(message),
            "docker {full:?}: {}",
            stderr_of(&out)
        );
    }
    // The CLI checks restart policies itself: send the request raw.
    let (status, body) = api(
        &engine,
        "POST",
        "/containers/create",
        Some(
            r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":3}}}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("maximum retry count can only be used with 'on-failure'"),
        "{body}"
    );
    let (status, body) = api(
        &engine,
        "POST",
        "/containers/create",
        Some(r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"CpuShares":-5}}"#),
    );
    assert_eq!(status, 400, "{body}");
    // Nothing was created by the refused requests.
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}

/// The container's cgroup file `file` of `controller`, natively (v1) or in
/// a v2 hierarchy.
fn cgroup_value(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let v2_path = format!("/sys/fs/cgroup/berth/{id}/{v2}");
    let path = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        v2_path
    } else {
        format!("/sys/fs/cgroup/{controller}/berth/{id}/{v1}")
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .to_owned()
}

#[test]
fn update_changes_limits_of_a_running_container_and_its_record() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "--memory",
        "64m",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "600",
    ]);
    let id = id.trim();
    engine.docker_ok(&[
        "update",
        "--memory",
        "96m",
        "--memory-swap",
        "192m",
        "--cpu-shares",
        "512",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "--pids-limit",
        "77",
        "--restart",
        "on-failure:4",
        id,
    ]);
    assert_eq!(
        cgroup_value(id, "memory", "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
    assert_eq!(cgroup_value(id, "pids", "pids.max", "pids.max"), "77");
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(cgroup_value(id, "cpu", "cpu.shares", ""), "512");
        assert_eq!(cgroup_value(id, "cpu", "cpu.cfs_quota_us", ""), "25000");
        assert_eq!(cgroup_value(id, "cpu", "cpu.cfs_period_us", ""), "50000");
    }
    assert_eq!(
        inspect(
            &engine,
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.CpuShares}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            id
        ),
        format!("{} {} 512 77 on-failure:4", 96u64 << 20, 192u64 << 20)
    );
    // dockerd's validation applies to updates too.
    let out = engine.docker(&["update", "--memory", "1m", id]);
    assert!(stderr_of(&out).contains("Minimum memory limit allowed is 6MB"));
    // A stopped container's record changes and the limit applies at start.
    engine.docker_ok(&["stop", "-t", "0", id]);
    engine.docker_ok(&["update", "--pids-limit", "55", id]);
    engine.docker_ok(&["start", id]);
    assert_eq!(cgroup_value(id, "pids", "pids.max", "pids.max"), "55");
}

#[test]
fn legacy_links_set_env_and_hosts_and_rm_link_drops_one() {
    let engine = engine();
    engine.docker_ok(&[
        "run", "-d", "--name", "db", "-e", "FOO=bar", "--expose", "5432", "busybox", "sleep", "600",
    ]);
    let db_ip = inspect(&engine, "{{.NetworkSettings.IPAddress}}", "db");
    assert!(!db_ip.is_empty(), "db has no address");
    let env = engine.docker_ok(&[
        "run", "--rm", "--name", "web", "--link", "db:my-db", "busybox", "env",
    ]);
    for expected in [
        "MY_DB_NAME=/web/my-db".to_owned(),
        format!("MY_DB_PORT=tcp://{db_ip}:5432"),
        format!("MY_DB_PORT_5432_TCP=tcp://{db_ip}:5432"),
        format!("MY_DB_PORT_5432_TCP_ADDR={db_ip}"),
        "MY_DB_PORT_5432_TCP_PORT=5432".to_owned(),
        "MY_DB_PORT_5432_TCP_PROTO=tcp".to_owned(),
        "MY_DB_ENV_FOO=bar".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected} in:\n{env}");
    }
    let hosts = engine.docker_ok(&[
        "run",
        "--rm",
        "--link",
        "db:my-db",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&format!("{db_ip}\tmy-db ")) && l.ends_with(" db")),
        "{hosts}"
    );
    engine.docker_ok(&[
        "create", "--name", "app", "--link", "db:alias", "busybox", "true",
    ]);
    assert_eq!(
        inspect(&engine, "{{json .HostConfig.Links}}", "app"),
        r#"["/db:/app/alias"]"#
    );
    // The child is also listed under the link's name (the CLI shows it
    // without truncation).
    let names = engine.docker_ok(&["ps", "--no-trunc", "--format", "{{.Names}}"]);
    assert!(names.lines().any(|l| l == "db,app/alias"), "{names}");
    engine.docker_ok(&["rm", "--link", "/app/alias"]);
    assert_eq!(inspect(&engine, "{{json .HostConfig.Links}}", "app"), "[]");
    let names = engine.docker_ok(&["ps", "--no-trunc", "--format", "{{.Names}}"]);
    assert_eq!(names.trim(), "db");
    // Both containers stay.
    assert_eq!(engine.docker_ok(&["ps", "-aq"]).lines().count(), 2);
}

#[test]
fn mac_address_is_honoured_and_kill_returns_after_the_exit() {
    let engine = engine();
    let id = engine.docker_ok(&[
        "run",
        "-d",
        "--mac-address",
        "02:42:ac:11:00:0a",
        "busybox",
        "sleep",
        "600",
    ]);
    let id = id.trim();
    assert_eq!(
        inspect(&engine, "{{.NetworkSettings.MacAddress}}", id),
        "02:42:ac:11:00:0a"
    );
    let link = engine.docker_ok(&["exec", id, "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(link.trim(), "02:42:ac:11:00:0a");
    // The API before 1.44 carries it in Config.MacAddress.
    let (status, body) = api(
        &engine,
        "POST",
        "/containers/create",
        Some(r#"{"Image":"busybox","Cmd":["sleep","600"],"MacAddress":"02:42:ac:11:00:0b"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let legacy = body
        .split('"')
        .nth(3)
        .expect("an Id in the create response")
        .to_owned();
    engine.docker_ok(&["start", &legacy]);
    assert_eq!(
        inspect(&engine, "{{.NetworkSettings.MacAddress}}", &legacy),
        "02:42:ac:11:00:0b"
    );
    // Connected while created: inspect shows the endpoint it will get,
    // and the start gives the interface that address.
    engine.docker_ok(&["network", "create", "macnet"]);
    engine.docker_ok(&["create", "--name", "later", "busybox", "sleep", "600"]);
    let (status, body) = api(
        &engine,
        "POST",
        "/networks/macnet/connect",
        Some(r#"{"Container":"later","EndpointConfig":{"MacAddress":"02:42:ac:11:00:0c"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        inspect(
            &engine,
            "{{(index .NetworkSettings.Networks \"macnet\").MacAddress}}",
            "later"
        ),
        "02:42:ac:11:00:0c"
    );
    engine.docker_ok(&["start", "later"]);
    assert_eq!(
        inspect(
            &engine,
            "{{(index .NetworkSettings.Networks \"macnet\").MacAddress}}",
            "later"
        ),
        "02:42:ac:11:00:0c"
    );
    for _ in 0..5 {
        let id = engine.docker_ok(&["run", "-d", "busybox", "sleep", "600"]);
        let id = id.trim();
        engine.docker_ok(&["kill", id]);
        assert_eq!(
            inspect(&engine, "{{.State.Running}} {{.State.ExitCode}}", id),
            "false 137"
        );
    }
}

#[test]
fn top_and_stats_show_only_the_containers_own_process() {
    let engine = engine();
    let id = engine.docker_ok(&["run", "-d", "busybox", "sleep", "600"]);
    let id = id.trim();
    let top = engine.docker_ok(&["top", id]);
    let rows: Vec<&str> = top.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "docker top:\n{top}");
    assert!(rows[0].ends_with("sleep 600"), "docker top:\n{top}");
    let pids = engine.docker_ok(&["stats", "--no-stream", "--format", "{{.PIDs}}", id]);
    assert_eq!(pids.trim(), "1");
    // An exec'd process shows up while it runs, and the init is pid 1.
    let ps = engine.docker_ok(&["exec", id, "ps", "-o", "pid,args"]);
    assert!(
        ps.lines().any(|l| l.trim() == "1 sleep 600"),
        "ps in the container:\n{ps}"
    );
}

#[test]
fn user_with_numeric_group_gets_it_as_its_only_supplementary_group() {
    let engine = engine();
    assert_eq!(
        engine
            .docker_ok(&["run", "--rm", "-u", "1000:1000", "busybox", "id"])
            .trim(),
        "uid=1000(user) gid=1000(user) groups=1000(user)"
    );
    assert_eq!(
        engine
            .docker_ok(&["run", "--rm", "-u", "2000:3000", "busybox", "id", "-G"])
            .trim(),
        "3000"
    );
    assert_eq!(
        engine
            .docker_ok(&[
                "run",
                "--rm",
                "-u",
                "2000:3000",
                "--group-add",
                "4000",
                "busybox",
                "id",
                "-G"
            ])
            .trim(),
        "3000 4000"
    );
}

#[test]
fn names_resolve_on_a_user_defined_network() {
    let engine = engine();
    engine.docker_ok(&["network", "create", "appnet"]);
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        "appnet",
        "--network-alias",
        "api",
        "busybox",
        "sleep",
        "600",
    ]);
    let ip = inspect(
        &engine,
        "{{(index .NetworkSettings.Networks \"appnet\").IPAddress}}",
        "server",
    );
    for name in ["server", "server.appnet", "api", "SERVER"] {
        let out = engine.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "nslookup",
            name,
        ]);
        assert!(out.contains(&ip), "nslookup {name}:\n{out}");
    }
    engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "server",
    ]);
    // An exited container still shows the network it is on.
    engine.docker_ok(&[
        "run",
        "--name",
        "done",
        "--network",
        "appnet",
        "busybox",
        "true",
    ]);
    assert_eq!(
        inspect(
            &engine,
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            "done"
        ),
        "appnet"
    );
}

#[test]
fn endpoint_and_legacy_links_resolve_on_a_user_defined_network() {
    let engine = engine();
    engine.docker_ok(&["network", "create", "linknet"]);
    // The linking container starts first: the alias resolves once its
    // target runs, for the linking container only.
    let (status, body) = api(
        &engine,
        "POST",
        "/containers/create?name=client",
        Some(
            r#"{"Image":"busybox","Cmd":["sleep","600"],"HostConfig":{"NetworkMode":"linknet"},"NetworkingConfig":{"EndpointsConfig":{"linknet":{"Links":["upstream:bar"]}}}}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    engine.docker_ok(&["start", "client"]);
    assert_eq!(
        inspect(
            &engine,
            "{{json (index .NetworkSettings.Networks \"linknet\").Links}}",
            "client"
        ),
        r#"["upstream:bar"]"#
    );
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        "upstream",
        "--network",
        "linknet",
        "busybox",
        "sleep",
        "600",
    ]);
    let ip = inspect(
        &engine,
        "{{(index .NetworkSettings.Networks \"linknet\").IPAddress}}",
        "upstream",
    );
    let out = engine.docker_ok(&["exec", "client", "nslookup", "bar"]);
    assert!(out.contains(&ip), "nslookup bar:\n{out}");
    let other = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "linknet",
        "busybox",
        "nslookup",
        "bar",
    ]);
    assert!(
        !String::from_utf8_lossy(&other.stdout).contains(&ip),
        "another container resolved the link alias"
    );
    // `--link` on a user-defined network works the same way.
    let out = engine.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "linknet",
        "--link",
        "upstream:db",
        "busybox",
        "nslookup",
        "db",
    ]);
    assert!(out.contains(&ip), "nslookup db:\n{out}");
}

#[test]
fn a_restarting_container_is_removed_only_with_force() {
    let engine = engine();
    let id = engine.docker_ok(&["run", "-d", "--restart", "always", "busybox", "true"]);
    let id = id.trim();
    eventually("a restart", || {
        inspect(&engine, "{{.RestartCount}}", id) != "0"
    });
    // Running or between two runs: either way refused, as with dockerd.
    let out = engine.docker(&["rm", id]);
    assert!(
        !out.status.success(),
        "rm of a restarting container succeeded"
    );
    assert!(
        stderr_of(&out).contains("stop the container before removing or force remove"),
        "{}",
        stderr_of(&out)
    );
    engine.docker_ok(&["rm", "-f", id]);
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}
