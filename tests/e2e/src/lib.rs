//! Harness for berth's end-to-end tests: a fresh `BERTH_HOME` and docker
//! config per test, the `berth` binary and guest image of this checkout,
//! and teardown that leaves no VM running.
//!
//! VM tests take a machine-wide lock ([`Harness::new`]) so that only one VM
//! boots at a time: under TCG two concurrent VMs on a 2-core machine would
//! just slow each other down past the boot timeouts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("invariant: the workspace exists")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// The `berth` binary, built on first use.
pub fn berth_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "-p", "berth-cli", "--bin", "berth"])
            .current_dir(workspace())
            .status()
            .expect("running cargo build -p berth-cli");
        assert!(status.success(), "cargo build -p berth-cli failed");
        target_dir().join("debug/berth")
    })
    .clone()
}

/// The guest image: `$BERTH_IMAGE_DIR` when set, else this checkout's,
/// built (or found up to date) once.
pub fn image_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BERTH_IMAGE_DIR") {
            return PathBuf::from(dir);
        }
        let out = Command::new(berth_bin())
            .arg("build-image")
            .output()
            .expect("running berth build-image");
        assert!(
            out.status.success(),
            "berth build-image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        berth_vm_images::current(&berth_vm_images::default_out_dir(&workspace()))
            .expect("the image was just built")
            .dir
    })
    .clone()
}

/// The aarch64 guest image: `$BERTH_AARCH64_IMAGE_DIR` when set, else this
/// checkout's (`berth build-image --arch aarch64`: cross-built agent,
/// Debian's cloud-arm64 kernel), built (or found up to date) once.
pub fn aarch64_image_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BERTH_AARCH64_IMAGE_DIR") {
            return PathBuf::from(dir);
        }
        let out = Command::new(berth_bin())
            .args(["build-image", "--arch", "aarch64"])
            .output()
            .expect("running berth build-image --arch aarch64");
        assert!(
            out.status.success(),
            "berth build-image --arch aarch64 failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        berth_vm_images::current_for(
            &berth_vm_images::default_out_dir(&workspace()),
            berth_vm_images::GuestArch::Aarch64,
        )
        .expect("the aarch64 image was just built")
        .dir
    })
    .clone()
}

/// Debian's arm64 busybox (pinned), from the image build's cache; fetched
/// there if the image came from elsewhere.
pub fn arm64_busybox() -> PathBuf {
    berth_vm_images::busybox::fetch(
        &berth_vm_images::busybox::AARCH64,
        &berth_vm_images::default_out_dir(&workspace()).join("cache"),
    )
    .expect("fetching the pinned arm64 busybox-static")
}

/// A port free on the host's 127.0.0.1 right now, for TCP and UDP alike.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One test's berth world.
pub struct Harness {
    pub home: tempfile::TempDir,
    pub docker_config: tempfile::TempDir,
    /// The guest image `berth` boots (`BERTH_IMAGE_DIR`).
    image: PathBuf,
    _vm_lock: Flock<std::fs::File>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Waits for the VM lock, then prepares a fresh home booting this
    /// checkout's x86_64 image.
    pub fn new() -> Self {
        Self::with_image(image_dir)
    }

    /// Like [`Harness::new`], booting the image `image` returns (called
    /// once the lock is held, so image builds do not overlap VM runs).
    pub fn with_image(image: fn() -> PathBuf) -> Self {
        let lock_path = target_dir().join("berth-e2e-vm.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap();
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("locking the e2e VM lock");
        let image = image();
        // Short paths: sockets live under the home (104-byte limit on macOS).
        Self {
            home: tempfile::Builder::new()
                .prefix("bh")
                .tempdir_in("/tmp")
                .unwrap(),
            docker_config: tempfile::tempdir().unwrap(),
            image,
            _vm_lock: lock,
        }
    }

    /// `berth` with this harness's environment.
    pub fn berth_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.args(args)
            .env("BERTH_HOME", self.home.path())
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env("BERTH_IMAGE_DIR", &self.image)
            .stdin(Stdio::null());
        cmd
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_cmd(args).output().expect("running berth")
    }

    /// Runs berth and panics with its output unless it succeeds.
    pub fn berth_ok(&self, args: &[&str]) -> Output {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// The docker CLI, through the instance's docker context, not yet run
    /// (stdin is inherited unless the caller sets it).
    pub fn docker_command(&self, instance: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("--context")
            .arg(format!("berth-{instance}"))
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env_remove("DOCKER_HOST");
        cmd
    }

    /// The docker CLI, through the instance's docker context.
    pub fn docker(&self, instance: &str, args: &[&str]) -> Output {
        self.docker_command(instance, args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker (is the docker CLI installed?)")
    }

    pub fn docker_ok(&self, instance: &str, args: &[&str]) -> String {
        let out = self.docker(instance, args);
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.home.path().join(instance)
    }

    /// Pid of the host agent of `instance`.
    pub fn agent_pid(&self, instance: &str) -> i32 {
        let text =
            std::fs::read_to_string(self.instance_dir(instance).join("hostagent.pid")).unwrap();
        text.trim().parse().unwrap()
    }

    /// Pids of live processes whose command line mentions this home.
    pub fn processes(&self) -> Vec<i32> {
        processes_mentioning(self.home.path())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.home.path()) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str() {
                    let _ = self.berth(&["delete", "-f", name]);
                }
            }
        }
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Live (non-zombie) processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.windows(needle.len()).any(|w| w == needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Runs `cmd` with `input` on its stdin (then closed), killing it after
/// `timeout`: a stream that never sees EOF fails the test instead of
/// hanging it. Returns the output, or `None` on a timeout.
pub fn run_with_input(
    mut cmd: Command,
    input: &[u8],
    timeout: std::time::Duration,
) -> Option<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let mut stdin = child.stdin.take().expect("invariant: stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let result = match rx.recv_timeout(timeout) {
        Ok(output) => Some(output.expect("waiting for the command")),
        Err(_) => {
            // The command is ours; its pid is live until waited for.
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                .expect("killing the timed-out command");
            None
        }
    };
    // A command that exits without reading all its input breaks the pipe.
    if let Ok(Err(err)) = writer.join()
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("writing the command's input: {err}");
    }
    result
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
