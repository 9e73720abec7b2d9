//! The per-instance host agent.
//!
//! `berth start` runs `berth hostagent <name> ...` in the background; this
//! crate is that command. It holds the instance's agent lock for its whole
//! life ([`berth_instance::state`]), and:
//!
//! 1. cleans up after a previous agent that was killed (orphaned QEMU and
//!    vhost-device-vsock, stale sockets);
//! 2. boots the VM through the driver;
//! 3. dials the guest agent's control port until it answers, completes
//!    the `Hello`/`Ready` handshake, and sends the instance's SSH keys
//!    (generated on the first start);
//! 4. runs the provisioning scripts and readiness probes of the instance's
//!    template ([`provision`]); when one fails, shuts the VM down and
//!    reports the script's output;
//! 5. serves `docker.sock`, one guest vsock stream per connection, and
//!    listens on `127.0.0.1` for every port the guest publishes
//!    ([`berth_forward::ports`]), acknowledging each so that `docker run -p`
//!    returns only once the port answers on the host;
//! 6. points the docker context `berth-<name>` at it and reports `ready`;
//! 7. on SIGTERM/SIGINT sends `Shutdown`, waits for the VM to power off
//!    (killing it after a grace period), and removes its sockets.
//!
//! Depends on the driver and forwarders; the CLI depends on it, not the
//! other way round.

pub mod control;
pub mod fsevents;
pub mod provision;
pub mod report;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_driver::{AnyDriver, Backend, Driver, Share, VmSpec};
use berth_forward::{DockerSocketForwarder, PortForwarder, VsockDialer};
use berth_instance::config::DriverKind;
use berth_instance::{BerthHome, InstanceConfig, InstanceName, InstancePaths, state};
use berth_proto::{GuestToHost, HostToGuest, ports};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub use control::ControlChannel;
pub use report::Report;

/// What the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub home: BerthHome,
    pub name: InstanceName,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Extra kernel command line (e.g. `BERTH_LOG=debug`).
    pub cmdline: String,
    /// How long the guest agent may take to answer after QEMU starts.
    pub boot_timeout: Duration,
    /// How long each readiness probe may keep failing.
    pub probe_timeout: Duration,
}

/// How long a guest gets to power off after `Shutdown` before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the agent to completion. Reports go to stdout (see [`report`]).
pub fn run(config: &Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(agent(config));
    if let Err(err) = &result {
        tracing::error!("{err:#}");
        match err.downcast_ref::<provision::Error>() {
            Some(failed @ (provision::Error::Script { .. } | provision::Error::Probe { .. })) => {
                report(&Report::ScriptFailed(failed.to_string()));
            }
            _ => report(&Report::Error(format!("{err:#}"))),
        }
    }
    result
}

fn report(report: &Report) {
    // Once `berth start` has gone the pipe is closed; that is fine.
    let _ = std::io::stdout().write_all(report.to_line().as_bytes());
    let _ = std::io::stdout().flush();
}

async fn agent(config: &Config) -> Result<()> {
    let paths = config.home.instance(&config.name);
    paths.check_socket_paths()?;
    let Some(_lock) = state::acquire(&paths.agent_pid())? else {
        bail!("instance {} is already running", config.name);
    };
    let instance_config = InstanceConfig::load(&paths.config())?;
    let template = instance_template(&paths)?;
    let plan = template
        .as_ref()
        .map(provision::Plan::from_template)
        .unwrap_or_default();
    // Signals first: from here on a SIGTERM means "stop cleanly".
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    recover(&paths).await;
    // The docker context only names the socket path, which is known now:
    // set it up (two docker CLI runs) while the VM boots, off the critical path.
    let context = tokio::task::spawn_blocking({
        let (name, paths) = (config.name.clone(), paths.clone());
        move || docker_context(&name, &paths)
    });
    ensure_disk(&paths, &instance_config)?;
    let ssh_keys = berth_instance::SshKeys::ensure(&paths, &config.name)?;

    let backend = match instance_config.driver {
        DriverKind::Qemu => Backend::Qemu,
        DriverKind::Vz => Backend::Vz,
    };
    let mut driver = AnyDriver::open(backend, &paths.dir)?;
    if let Some(berth_driver::Accel::Tcg { reason }) = driver.accel() {
        report(&Report::Progress(format!(
            "no hardware acceleration ({reason}): using QEMU TCG"
        )));
    }
    report(&Report::Progress(format!(
        "booting the VM ({}, {} CPUs, {} MiB)",
        driver.describe(),
        instance_config.cpus,
        instance_config.memory_mib
    )));
    let (shares, cmdline) = shares(&instance_config, &config.cmdline)?;
    let spec = VmSpec {
        kernel: config.kernel.clone(),
        initramfs: config.initramfs.clone(),
        cmdline,
        cpus: instance_config.cpus,
        memory_mib: instance_config.memory_mib,
        disk: paths.disk(),
        serial_log: paths.serial_log(),
        state_dir: paths.dir.clone(),
        shares,
    };
    let started = Instant::now();
    let dialer = driver.dialer();
    // Listen for the guest's readiness call before the VM can make it.
    let ready = dialer.listen(ports::READY).ok();
    driver.start(&spec).await?;

    let connected = tokio::select! {
        result = connect_control(dialer.as_ref(), ready, config.boot_timeout) => result,
        how = driver.wait() => Err(anyhow::anyhow!("the VM stopped while booting: {how}")),
    };
    let (mut control, agent_version) = match connected {
        Ok(connected) => connected,
        Err(err) => {
            driver.kill().await;
            return Err(err.context(format!("booting instance {}", config.name)));
        }
    };
    tracing::info!(instance = %config.name, agent = agent_version, elapsed_ms = started.elapsed().as_millis(), "guest agent ready");
    if let Err(err) = send_ssh_keys(&mut control, &ssh_keys).await {
        tracing::warn!("SSH will not work: {err:#}");
    }
    let mut ready_socket = paths.vsock_socket().into_os_string();
    ready_socket.push(format!("_{}", ports::READY));
    let _ = std::fs::remove_file(ready_socket);

    if !plan.is_empty() {
        let mut progress = |line| report(&Report::Progress(line));
        let provisioned = tokio::select! {
            result = provision::run(&mut control, &plan, config.probe_timeout, &mut progress)
                => result.map_err(anyhow::Error::new),
            how = driver.wait() => Err(anyhow::anyhow!("the VM stopped while provisioning: {how}")),
            _ = term.recv() => Err(anyhow::anyhow!("stopped (SIGTERM) while provisioning")),
            _ = int.recv() => Err(anyhow::anyhow!("stopped (SIGINT) while provisioning")),
        };
        if let Err(err) = provisioned {
            // Nothing half-started stays behind: the VM goes down cleanly.
            shutdown(&mut driver, &mut control).await;
            driver.kill().await;
            return Err(err.context(format!("provisioning instance {}", config.name)));
        }
        tracing::info!(instance = %config.name, "provisioned");
    }

    let cancel = CancellationToken::new();
    let forwarder =
        DockerSocketForwarder::bind(paths.docker_socket(), ports::DOCKER, dialer.clone())?;
    let forwarding = tokio::spawn(forwarder.run(cancel.clone()));
    let ports = PortForwarder::new(dialer.clone(), port_rules(&instance_config));
    let mut fs = if instance_config.mounts.is_empty() {
        None
    } else {
        match fsevents::FsWatcher::new(&instance_config.mounts) {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::warn!("no file-change events: {err:#}");
                None
            }
        }
    };
    let _ = context.await;
    report(&Report::Ready);

    let reason = tokio::select! {
        how = driver.wait() => { tracing::warn!("{how}"); None }
        _ = term.recv() => Some("SIGTERM"),
        _ = int.recv() => Some("SIGINT"),
        msg = serve_control(&mut control, &ports, fs.as_mut()) => { tracing::info!("{msg}"); None }
        _ = hangup_forever(&mut hup) => None,
    };
    if let Some(signal) = reason {
        tracing::info!(signal, "stopping the VM");
        shutdown(&mut driver, &mut control).await;
    } else {
        // The guest went away on its own; give QEMU a moment to exit.
        let _ = tokio::time::timeout(Duration::from_secs(5), driver.wait()).await;
    }
    cancel.cancel();
    let _ = forwarding.await;
    driver.kill().await;
    let _ = std::fs::remove_file(paths.docker_socket());
    tracing::info!(instance = %config.name, "stopped");
    Ok(())
}

/// The instance's stored template (`template.yaml`, written by `berth
/// start` on creation, changed by `berth edit`), defaulted and validated:
/// the source of the VM's provisioning, probes and env, and of its mounts
/// and port forwards. `None` for an instance created before templates.
pub fn instance_template(paths: &InstancePaths) -> Result<Option<berth_template::Template>> {
    if !paths.template().is_file() {
        return Ok(None);
    }
    berth_template::instance::load(&paths.template(), &berth_template::Host::detect())
        .map(Some)
        .map_err(anyhow::Error::new)
        .context("loading the instance template")
}

async fn hangup_forever(hup: &mut tokio::signal::unix::Signal) {
    // Outliving the terminal that ran `berth start` is the point.
    loop {
        hup.recv().await;
    }
}

/// The virtio-fs shares of the configured mounts, and the kernel command
/// line that tells the guest where to mount them. A missing location is an
/// error that names it.
fn shares(config: &InstanceConfig, cmdline: &str) -> Result<(Vec<Share>, String)> {
    let mut shares = Vec::new();
    let mut cmdline = cmdline.to_owned();
    for (i, mount) in config.mounts.iter().enumerate() {
        if !mount.location.is_dir() {
            bail!(
                "mount location {} is not an existing directory; fix mounts in the instance's template",
                mount.location.display()
            );
        }
        let tag = format!("berth{i}");
        let param = berth_proto::shares::Share {
            tag: tag.clone(),
            mount_point: mount.mount_point.clone(),
            writable: mount.writable,
        }
        .to_param();
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&param);
        shares.push(Share {
            tag,
            host_path: mount.location.clone(),
            read_only: !mount.writable,
        });
    }
    Ok((shares, cmdline))
}

/// Serves the guest's events (published ports); returns once the guest
/// says it shuts down or drops the channel.
async fn serve_control(
    control: &mut ControlChannel,
    ports: &PortForwarder,
    mut fs: Option<&mut fsevents::FsWatcher>,
) -> String {
    loop {
        let changes = async {
            match fs.as_deref_mut() {
                Some(fs) => fs.next_batch().await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            msg = control.recv() => match msg {
                Ok(msg) => msg,
                Err(err) => return format!("control channel closed: {err:#}"),
            },
            changes = changes => {
                if let Err(err) = control.send(&HostToGuest::FsChanged { changes }).await {
                    return format!("control channel closed: {err:#}");
                }
                continue;
            }
        };
        match msg {
            GuestToHost::ShuttingDown => return "the guest is shutting down".into(),
            GuestToHost::PortOpened {
                proto,
                host_ip,
                port,
                id,
            } => {
                let guest_ip = host_ip
                    .parse()
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                let opened = ports.open(proto, port, guest_ip).await;
                let error = opened.err().map(|e| {
                    let e = anyhow::Error::from(e);
                    tracing::warn!("{e:#}");
                    format!("{e:#}")
                });
                if id != 0
                    && let Err(err) = control.send(&HostToGuest::PortAck { id, error }).await
                {
                    return format!("control channel closed: {err:#}");
                }
            }
            GuestToHost::PortClosed { proto, port, .. } => ports.close(proto, port),
            GuestToHost::WatchPaths { paths } => {
                if let Some(fs) = fs.as_deref_mut() {
                    fs.set_watched(&paths);
                }
            }
            other => tracing::debug!(?other, "control event"),
        }
    }
}

/// The instance's `portForwards` as forwarding rules.
fn port_rules(config: &InstanceConfig) -> Vec<berth_forward::PortRule> {
    config
        .port_forwards
        .iter()
        .map(|r| berth_forward::PortRule {
            guest_ports: r.guest_port_start..=r.guest_port_end,
            guest_ip: r.guest_ip,
            host_ip: r.host_ip,
            host_port_start: r.host_port_start,
            proto: match r.proto.as_str() {
                "tcp" => Some(berth_proto::control::Proto::Tcp),
                "udp" => Some(berth_proto::control::Proto::Udp),
                _ => None,
            },
            ignore: r.ignore,
        })
        .collect()
}

async fn shutdown(driver: &mut AnyDriver, control: &mut ControlChannel) {
    if let Err(err) = control.send(&HostToGuest::Shutdown).await {
        tracing::warn!("sending Shutdown: {err:#}");
    }
    driver.stop(SHUTDOWN_GRACE).await;
}

/// Hands the guest its SSH host key and the key allowed to log in.
async fn send_ssh_keys(control: &mut ControlChannel, keys: &berth_instance::SshKeys) -> Result<()> {
    let msg = HostToGuest::SshKeys {
        host_key: keys.host_private_key()?,
        authorized_key: keys.user_public_key()?,
    };
    control.send(&msg).await.context("sending the SSH keys")
}

/// Waits for the guest agent's readiness call on `ready` (when listening
/// worked), then dials the control port and handshakes. Without a call
/// within a few seconds it falls back to dialing until the agent answers.
async fn connect_control(
    dialer: &dyn VsockDialer,
    ready: Option<tokio::net::UnixListener>,
    timeout: Duration,
) -> Result<(ControlChannel, String)> {
    if let Some(ready) = ready {
        // A guest that cannot call (a broken guest-to-host path) costs at
        // most this long before the dialing fallback.
        let wait = timeout.min(Duration::from_secs(15));
        match tokio::time::timeout(wait, ready.accept()).await {
            Ok(Ok(_)) => tracing::debug!("the guest agent announced itself"),
            Ok(Err(err)) => tracing::warn!(%err, "accepting the guest's readiness call"),
            Err(_) => tracing::warn!("no readiness call from the guest; dialing"),
        }
    }
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    while Instant::now() < deadline {
        // Before the guest's vsock driver is up, the backend may hold a
        // CONNECT without answering; bound every attempt.
        match tokio::time::timeout(Duration::from_secs(2), dialer.dial(ports::CONTROL)).await {
            Ok(Ok(stream)) => {
                return tokio::time::timeout(
                    Duration::from_secs(30),
                    ControlChannel::handshake(stream),
                )
                .await
                .context("the guest agent accepted the control connection but did not answer")?;
            }
            Ok(Err(err)) => last_err = Some(err.to_string()),
            Err(_) => last_err = Some("connect timed out".into()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "the guest agent did not answer on vsock port {} within {} s (last error: {})",
        ports::CONTROL,
        timeout.as_secs(),
        last_err.unwrap_or_default()
    )
}

/// Shuts down and kills what a killed predecessor left running.
async fn recover(paths: &InstancePaths) {
    let vsock = paths.vsock_socket();
    if vsock.exists() {
        // The old VM may still run: ask it to power off cleanly first, so
        // its data disk is unmounted, then kill whatever is left.
        let dialer = berth_forward::HybridDialer::new(&vsock);
        let graceful = async {
            let stream = dialer.dial(ports::CONTROL).await?;
            let (mut control, _) = ControlChannel::handshake(stream)
                .await
                .map_err(std::io::Error::other)?;
            control
                .send(&HostToGuest::Shutdown)
                .await
                .map_err(std::io::Error::other)?;
            while !matches!(control.recv().await, Ok(GuestToHost::ShuttingDown) | Err(_)) {}
            wait_for_exit(&paths.qemu_pid(), Duration::from_secs(15)).await;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(20), graceful).await {
            Ok(Ok(())) => tracing::info!("shut down the VM a previous agent left running"),
            Ok(Err(err)) => tracing::debug!(%err, "no VM left running to shut down"),
            Err(_) => {
                tracing::warn!("the VM a previous agent left running did not shut down in time")
            }
        }
    }
    let killed = berth_driver::qemu::kill_orphans(&paths.dir);
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed processes left behind by a previous host agent"
        );
    }
    let _ = std::fs::remove_file(paths.docker_socket());
}

async fn wait_for_exit(pid_file: &std::path::Path, limit: Duration) {
    let Ok(Some(pid)) = state::read_pid(pid_file) else {
        return;
    };
    let deadline = Instant::now() + limit;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates the sparse data disk on first start.
fn ensure_disk(paths: &InstancePaths, config: &InstanceConfig) -> Result<()> {
    let disk = paths.disk();
    if disk.exists() {
        return Ok(());
    }
    let file =
        std::fs::File::create(&disk).with_context(|| format!("creating {}", disk.display()))?;
    file.set_len(u64::from(config.disk_gib) << 30)
        .with_context(|| format!("sizing {}", disk.display()))?;
    Ok(())
}

/// Creates or updates the docker context `berth-<name>`; a missing docker
/// CLI is only worth a log line.
fn docker_context(name: &InstanceName, paths: &InstancePaths) {
    let context = name.docker_context();
    let endpoint = format!("unix://{}", paths.docker_socket().display());
    let description = format!("berth instance {name}");
    // Two docker CLI runs cost ~120 ms of CPU that the booting VM competes
    // for; on every start after the first the context is already right.
    if docker_config_dir()
        .is_some_and(|dir| context_is_current(&dir, &context, &endpoint, &description))
    {
        tracing::info!(context, "docker context up to date");
        return;
    }
    let host = format!("host={endpoint}");
    let exists = std::process::Command::new("docker")
        .args(["context", "inspect", &context])
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    let verb = if exists { "update" } else { "create" };
    match std::process::Command::new("docker")
        .args([
            "context",
            verb,
            &context,
            "--description",
            &description,
            "--docker",
            &host,
        ])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => tracing::info!(context, "docker context {verb}d"),
        Ok(out) => {
            tracing::warn!(context, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "docker context {verb} failed")
        }
        Err(err) => tracing::info!(%err, "no docker CLI: not creating a docker context"),
    }
}

/// The docker CLI's configuration directory: `$DOCKER_CONFIG`, else
/// `~/.docker`.
fn docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
}

/// Whether the docker CLI's stored context `context` already points at
/// `endpoint` with `description`. The CLI keeps each context in
/// `contexts/meta/<sha256 of the name>/meta.json`; anything unexpected
/// there reads as "not current", and the CLI then rewrites it.
fn context_is_current(
    config_dir: &std::path::Path,
    context: &str,
    endpoint: &str,
    description: &str,
) -> bool {
    use sha2::Digest;
    let meta = config_dir
        .join("contexts/meta")
        .join(hex::encode(sha2::Sha256::digest(context.as_bytes())))
        .join("meta.json");
    let Ok(text) = std::fs::read_to_string(meta) else {
        return false;
    };
    let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    meta["Name"] == context
        && meta["Metadata"]["Description"] == description
        && meta["Endpoints"]["docker"]["Host"] == endpoint
}

/// Removes the docker context of `name` (on `berth delete`).
pub fn remove_docker_context(name: &InstanceName) {
    let _ = std::process::Command::new("docker")
        .args(["context", "rm", "-f", &name.docker_context()])
        .stdin(std::process::Stdio::null())
        .output();
}

/// Runs [`recover`] from outside the agent (`berth stop` of an instance
/// whose agent is dead).
pub fn recover_blocking(paths: &InstancePaths) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(recover(paths));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the real docker CLI's store: a context it created reads as
    /// current; another endpoint, description or name does not.
    #[test]
    fn context_written_by_the_docker_cli_reads_as_current() {
        let dir = tempfile::tempdir().unwrap();
        let created = std::process::Command::new("docker")
            .env("DOCKER_CONFIG", dir.path())
            .args([
                "context",
                "create",
                "berth-x",
                "--description",
                "berth instance x",
                "--docker",
                "host=unix:///run/x/docker.sock",
            ])
            .output()
            .expect("the docker CLI is installed (scripts/install-deps.sh)");
        assert!(created.status.success(), "{created:?}");
        let current = |context, endpoint, description| {
            context_is_current(dir.path(), context, endpoint, description)
        };
        assert!(current(
            "berth-x",
            "unix:///run/x/docker.sock",
            "berth instance x"
        ));
        assert!(!current(
            "berth-x",
            "unix:///run/y/docker.sock",
            "berth instance x"
        ));
        assert!(!current("berth-x", "unix:///run/x/docker.sock", "other"));
        assert!(!current(
            "berth-y",
            "unix:///run/x/docker.sock",
            "berth instance x"
        ));
    }
}
