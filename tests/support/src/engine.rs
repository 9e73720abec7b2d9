//! A native engine under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `berth-agent serve` running in a fresh network namespace, with its own
/// state root and docker config. Dropping it stops the agent and deletes
/// the namespace and the state.
pub struct NativeEngine {
    agent: PathBuf,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub netns: String,
    child: Option<Child>,
}

/// Panics with a clear message unless the test runs as root: the engine
/// needs namespaces, mounts and cgroups.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "this test needs root (namespaces, overlayfs, cgroups); run it as root"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run_checked(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NativeEngine {
    /// Starts the agent binary at `agent` and waits until it answers `/_ping`.
    pub fn start(agent: &Path) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-engine-")
            .tempdir()
            .expect("creating a temp dir");
        let netns = format!(
            "berth-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_checked(Command::new("ip").args(["netns", "add", &netns]));
        run_checked(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
        let socket = dir.path().join("docker.sock");
        let child = spawn_agent(agent, &netns, dir.path(), &socket);
        let mut engine = Self {
            agent: agent.to_owned(),
            dir,
            socket,
            netns,
            child: Some(child),
        };
        engine.wait_ready();
        engine
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists()
                && self
                    .docker(&["version", "--format", "{{.Server.Version}}"])
                    .status
                    .success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "berth-agent exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "berth-agent did not answer within 20s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the agent with SIGKILL (a crash) and waits for it to be gone.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again on the same state, socket and namespace.
    pub fn restart_agent(&mut self) {
        self.kill_agent();
        self.child = Some(spawn_agent(
            &self.agent,
            &self.netns,
            self.dir.path(),
            &self.socket,
        ));
        self.wait_ready();
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// `DOCKER_HOST` value for this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command pointed at this engine (not yet run).
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", self.docker_host())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CLI_HINTS", "false");
        cmd
    }

    /// Runs `docker ARGS` and returns its output (whatever the exit code).
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the docker CLI")
    }

    /// Runs `docker ARGS`, asserts success, and returns stdout.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}\nagent log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads an image tar through `docker load -i`.
    pub fn load(&self, tar: &Path) {
        self.docker_ok(&["load", "-i", tar.to_str().expect("utf-8 temp path")]);
    }
}

/// Starts `agent serve` in network namespace `netns`, logging (appending)
/// to `<dir>/agent.log`.
fn spawn_agent(agent: &Path, netns: &str, dir: &Path, socket: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .expect("opening the agent log");
    // nsenter joins only the network namespace; `ip netns exec` would also
    // remount /sys and hide the host's cgroup hierarchies.
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{netns}"))
        .arg("--")
        .arg(agent)
        .arg("serve")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--docker-socket")
        .arg(socket)
        .env("BERTH_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the log handle"))
        .stderr(log)
        .spawn()
        .expect("spawning berth-agent")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for NativeEngine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // nsenter execs the agent, so this pid is the agent itself.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}
