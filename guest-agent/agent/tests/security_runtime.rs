//! Runtime confinement (issue 13): seccomp, the device cgroup, capabilities,
//! recursive read-only binds and helper reaping, natively as root with the
//! real docker CLI. This host has cgroup v1; the v2 BPF device program is
//! covered by `tests/e2e/tests/security.rs` in the VM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_test_support::engine::NativeEngine;
use berth_test_support::images::{self, LayerBuilder, TestImage};

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth-agent"))
}

fn engine() -> NativeEngine {
    let engine = NativeEngine::start(agent());
    let tar = images::busybox_docker_archive(engine.dir.path(), "busybox:latest");
    engine.load(&tar);
    engine
}

/// `sh -c script` in a fresh container with `flags`; (exit code, stdout+stderr).
fn run_sh(engine: &NativeEngine, flags: &[&str], script: &str) -> (Option<i32>, String) {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    let out = engine.docker(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn status_lines(engine: &NativeEngine, flags: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "busybox",
        "grep",
        "-E",
        "^(Seccomp|NoNewPrivs|CapEff):",
        "/proc/self/status",
    ]);
    engine.docker_ok(&args)
}

#[test]
fn default_status_line_matches_dockerd() {
    let engine = engine();
    let status = status_lines(&engine, &[]);
    assert!(status.contains("CapEff:\t00000000a80425fb"), "{status}");
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    let nnp = status_lines(&engine, &["--security-opt", "no-new-privileges"]);
    assert!(nnp.contains("NoNewPrivs:\t1"), "{nnp}");
    assert!(nnp.contains("Seccomp:\t2"), "{nnp}");
    // A non-root user under seccomp without no_new_privs: the filter went
    // in before the capabilities were dropped.
    let user = status_lines(&engine, &["--user", "1000"]);
    assert!(user.contains("Seccomp:\t2"), "{user}");
    assert!(user.contains("CapEff:\t0000000000000000"), "{user}");
}

#[test]
fn default_container_cannot_open_devices_outside_the_allow_list() {
    let engine = engine();
    // mknod itself is allowed (c *:* m); opening the node is not.
    let (code, out) = run_sh(
        &engine,
        &[],
        "mknod /tmp/k c 10 232 && echo made && cat /tmp/k && echo opened",
    );
    assert!(out.contains("made"), "{out}");
    assert!(!out.contains("opened"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_ne!(code, Some(0));
    // A block device (loop0) too, and the allowed ones still work.
    let (_, out) = run_sh(
        &engine,
        &[],
        "mknod /tmp/l b 7 0 && cat /tmp/l; echo x > /dev/null && head -c1 /dev/zero | wc -c",
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "1"), "{out}");
}

#[test]
fn image_device_nodes_are_not_usable() {
    let engine = engine();
    let mut layer = LayerBuilder::new();
    layer.char_device("kvmnode", 0o666, 10, 232);
    let image = TestImage::new(
        vec![images::busybox_layer(), layer.finish()],
        &["sh"],
        "busybox with a device node",
    );
    let tar = image.docker_archive(&engine.dir.path().join("devnode.tar"), &["devnode:latest"]);
    engine.load(&tar);
    // Either the node is not there, or it cannot be opened; never opened.
    let script = "if [ -c /kvmnode ]; then : < /kvmnode && echo opened; else echo absent; fi";
    for flags in [&[][..], &["--cap-drop", "ALL", "--user", "1000"][..]] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["devnode", "sh", "-c", script]);
        let out = engine.docker(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("opened"), "{flags:?}: {text}");
        assert!(
            text.contains("Operation not permitted") || text.contains("absent"),
            "{flags:?}: {text}"
        );
    }
}

#[test]
fn default_seccomp_blocks_user_namespaces_and_mounts() {
    let engine = engine();
    let (code, out) = run_sh(&engine, &[], "unshare -U -r true && echo unshared");
    assert!(!out.contains("unshared"), "{out}");
    assert_ne!(code, Some(0), "{out}");
    let (code, out) = run_sh(&engine, &[], "mount -t tmpfs x /mnt && echo mounted");
    assert!(!out.contains("mounted"), "{out}");
    assert_ne!(code, Some(0), "{out}");
    // clone3 fails with ENOSYS (libcs fall back to clone); plain fork works.
    let (code, out) = run_sh(&engine, &[], "(true) && echo forked");
    assert_eq!(code, Some(0), "{out}");
    // Unconfined, the same unshare works.
    let (code, out) = run_sh(
        &engine,
        &["--security-opt", "seccomp=unconfined"],
        "unshare -U -r true && echo unshared",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unshared"), "{out}");
    let status = status_lines(&engine, &["--security-opt", "seccomp=unconfined"]);
    assert!(status.contains("Seccomp:\t0"), "{status}");
}

#[test]
fn custom_profile_is_honoured_and_bad_ones_are_rejected_at_create() {
    let engine = engine();
    let profile = engine.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":28}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let (code, out) = run_sh(
        &engine,
        &["--security-opt", &opt],
        "mkdir /tmp/d && echo made; touch /tmp/f && echo touched",
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("made"), "{out}");
    assert!(out.contains("touched"), "{out}");
    assert_eq!(code, Some(0));

    let bad = engine.dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_SOMETIMES"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", bad.display());
    let out = engine.docker(&["create", "--security-opt", &opt, "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--security-opt seccomp"), "{err}");
    assert!(err.contains("SCMP_ACT_SOMETIMES"), "{err}");
    let out = engine.docker(&["create", "--security-opt", "bogus=1", "busybox", "true"]);
    assert!(!out.status.success());
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn privileged_gets_every_capability_and_device() {
    let engine = engine();
    // Every capability the runtime has: the kernel's full set, less what
    // this (root, same as the agent's) process's bounding set lacks.
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_owned()))
        .unwrap();
    let full = format!("CapEff:\t{bounding}");
    let status = status_lines(&engine, &["--privileged"]);
    assert!(status.contains(&full), "want {full}: {status}");
    assert!(status.contains("Seccomp:\t0"), "{status}");
    let (code, out) = run_sh(
        &engine,
        &["--privileged"],
        "test -c /dev/kvm && : < /dev/kvm && echo opened",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("opened"), "{out}");
}

#[test]
fn device_flag_creates_and_allows_the_node() {
    let engine = engine();
    let (code, out) = run_sh(
        &engine,
        &["--device", "/dev/null:/dev/mynull"],
        "test -c /dev/mynull && echo hi > /dev/mynull && echo wrote",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("wrote"), "{out}");
    let (code, out) = run_sh(
        &engine,
        &["--device", "/dev/kvm"],
        ": < /dev/kvm && echo opened",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("opened"), "{out}");
    // Read-only permission: writing is refused by the cgroup.
    let (_, out) = run_sh(
        &engine,
        &["--device", "/dev/kvm:/dev/kvm:r"],
        "cat /dev/kvm; echo read=$?; echo x > /dev/kvm && echo written",
    );
    // kvm refuses read(2) itself (EINVAL): the open succeeded, unlike the write.
    assert!(!out.contains("can't open '/dev/kvm'"), "{out}");
    assert!(out.contains("read="), "{out}");
    assert!(!out.contains("written"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let out = engine.docker(&["create", "--device", "/etc/hostname", "busybox", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a device node"), "{err}");
}

/// A tmpfs mounted on the host for the duration of a test.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(path: &Path) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "berth-test", path.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", path.display());
        Self(path.to_owned())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn readonly_binds_are_readonly_all_the_way_down() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let sub = TmpfsMount::new(&dir.path().join("sub"));
    std::fs::write(sub.0.join("sentinel"), "before").unwrap();
    let volume = format!("{}:/host:ro", dir.path().display());
    let (_, out) = run_sh(
        &engine,
        &["-v", &volume],
        "echo x > /host/top; echo x > /host/sub/sentinel; cat /host/sub/sentinel",
    );
    assert_eq!(
        out.matches("Read-only file system").count(),
        2,
        "both writes must fail with EROFS: {out}"
    );
    assert!(out.contains("before"), "{out}");
    assert_eq!(
        std::fs::read_to_string(sub.0.join("sentinel")).unwrap(),
        "before"
    );
    assert!(!dir.path().join("top").exists());
    // The host's own mount stays writable.
    std::fs::write(sub.0.join("sentinel"), "after").unwrap();
}

/// The pid of the agent serving `engine`.
fn agent_pid(engine: &NativeEngine) -> i32 {
    let needle = format!(
        "serve\0--root\0{}",
        engine.dir.path().join("root").display()
    );
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .expect("the agent's process")
}

/// Zombie children of `pid`.
fn zombies_of(pid: i32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("PPid:") == pid.to_string() && field("State:").starts_with('Z'))
                .then(|| format!("{} {}", e.file_name().to_string_lossy(), field("Name:")))
        })
        .collect()
}

#[test]
fn failed_starts_leave_no_zombie_helpers() {
    let engine = engine();
    let pid = agent_pid(&engine);
    for args in [
        &["run", "--rm", "busybox", "no-such-program"][..],
        &["run", "--rm", "--user", "nosuchuser", "busybox", "true"][..],
        &["run", "--rm", "-w", "/etc/passwd/x", "busybox", "true"][..],
    ] {
        let out = engine.docker(args);
        assert!(!out.status.success(), "{args:?} should fail");
    }
    // Reaping happens before the API answers; allow a moment for the kernel.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let zombies = zombies_of(pid);
        if zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombie children of the agent: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cgroup v2 device program, natively: this host's hybrid layout has a
/// cgroup2 mount at `/sys/fs/cgroup/unified`, and the kernel runs device
/// programs attached there for the processes in the group. The VM test
/// (`tests/e2e/tests/security.rs`) covers it through the engine.
#[test]
fn bpf_device_program_denies_outside_the_allow_list() {
    use berth_engine::runtime::devices;
    let unified = Path::new("/sys/fs/cgroup/unified");
    assert!(
        unified.join("cgroup.procs").exists(),
        "this test needs the hybrid cgroup2 mount at {}",
        unified.display()
    );
    let group = unified.join(format!("berth-devtest-{}", std::process::id()));
    std::fs::create_dir(&group).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = Cleanup(group.clone());
    devices::attach_v2(&group, &devices::default_rules()).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && mknod /tmp/berth-devtest-$$ c 10 232 && echo made; \
         rm -f /tmp/berth-devtest-$$; cat /dev/kvm; echo x > /dev/null && echo null-ok; \
         cat /dev/loop0 > /dev/null",
        group.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("made"), "mknod is allowed: {text}");
    assert!(text.contains("null-ok"), "/dev/null is allowed: {text}");
    assert_eq!(
        text.matches("Operation not permitted").count(),
        2,
        "kvm and loop0 are refused: {text}"
    );
}
