//! The VM agent: the engine plus the vsock services.
//!
//! * [`ports::DOCKER`]: every accepted stream is one Docker API connection.
//!
//! The Docker, port-forward and SSH streams carry [`berth_proto::stream`]
//! frames (the vsock transports pass no half-close); the API server and
//! the SSH server read and write them through
//! [`berth_proto::stream_io::Framed`], so a client's half-close is EOF on
//! a hijacked stream's stdin while output still flows.
//! * [`ports::CONTROL`]: the host sends `Hello { version }`, the agent answers
//!   with its own `Hello` and, if the versions match, `Ready`. Then the agent
//!   streams port events ([`super::host_link`]) and the host sends
//!   acknowledgements; `Shutdown` stops the engine and ends this process,
//!   after which PID 1 powers the VM off. `RunScript` runs a provisioning
//!   script or probe ([`super::script`]) and streams its output back.
//! * [`ports::PORT_FORWARD`]: one stream per forwarded host connection
//!   ([`super::forward`]).
//! * [`ports::SSH`]: every accepted stream is one SSH connection
//!   ([`crate::ssh`]); the host sends its keys with `SshKeys`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use berth_dockerapi::AppState;
use berth_engine::{Engine, EngineConfig};
use berth_proto::stream_io::Framed;
use berth_proto::{GuestToHost, HostToGuest, PROTOCOL_VERSION, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_vsock::{VMADDR_CID_ANY, VsockAddr, VsockListener, VsockStream};

use super::host_link::HostLink;
use super::setup::DATA_DIR;

pub(super) fn run() -> ExitCode {
    super::init_console_tracing();
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("agent failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<()> {
    let started = std::time::Instant::now();
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let root = std::path::Path::new(DATA_DIR).join("engine");
        let shares = Arc::new(super::shares::configured());
        let mut config = EngineConfig::new(root.clone());
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        config.start_gate = Some(ready.clone());
        // Each share at its mount point and its aliases (`/tmp` for a Mac's
        // `/private/tmp`).
        config.host_shares = Some(
            shares
                .iter()
                .flat_map(|s| {
                    let aliases = s.aliases().map(std::path::Path::to_path_buf);
                    std::iter::once(s.mount_point.clone())
                        .chain(aliases)
                        .map(|path| berth_engine::HostShare {
                            path,
                            writable: s.writable,
                        })
                })
                .collect(),
        );
        tracing::debug!(ms = started.elapsed().as_millis(), "runtime up");
        let engine = Arc::new(
            Engine::open(&config)
                .with_context(|| format!("opening engine state in {}", root.display()))?,
        );
        tracing::debug!(ms = started.elapsed().as_millis(), "engine open");
        let router = berth_dockerapi::router(AppState { engine: engine.clone() });
        let link = Arc::new(HostLink::default());
        engine.networks.set_port_hook(Arc::new({
            let link = link.clone();
            move |mapping| {
                let link = link.clone();
                Box::pin(async move { link.publish(mapping).await })
            }
        }));
        tokio::spawn(announce_closed_ports(engine.clone(), link.clone()));
        if !shares.is_empty() {
            tokio::spawn(track_watched_paths(engine.clone(), link.clone(), shares.clone()));
        }
        let docker = bind(ports::DOCKER)?;
        let control = bind(ports::CONTROL)?;
        let forward = bind(ports::PORT_FORWARD)?;
        let ssh = bind(ports::SSH)?;
        let ssh_keys = crate::ssh::KeySlot::new();
        tracing::info!(control = ports::CONTROL, docker = ports::DOCKER, forward = ports::PORT_FORWARD, ssh = ports::SSH, elapsed_ms = started.elapsed().as_millis(), "serving vsock ports");
        tokio::spawn(announce_ready());
        // Off the path to `ready`: what containers and VM listeners need.
        tokio::spawn({
            let link = link.clone();
            async move {
                prepare_for_containers().await;
                let _ = ready_tx.send(true);
                super::listeners::watch(move |opened, closed| {
                    tracing::info!(?opened, ?closed, "VM listeners changed");
                    link.listeners_changed(&opened, &closed);
                })
                .await;
            }
        });
        let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(1);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                accepted = docker.accept() => match accepted {
                    Ok((stream, _)) => { tokio::spawn(berth_dockerapi::serve_connection(router.clone(), Framed::new(stream))); }
                    Err(err) => tracing::warn!(%err, "accepting a docker connection"),
                },
                accepted = forward.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(async move {
                            if let Err(err) = super::forward::serve(stream).await {
                                tracing::debug!("port forward: {err:#}");
                            }
                        });
                    }
                    Err(err) => tracing::warn!(%err, "accepting a port-forward connection"),
                },
                accepted = ssh.accept() => match accepted {
                    Ok((stream, _)) => {
                        let keys = ssh_keys.clone();
                        tokio::spawn(async move {
                            if let Err(err) = crate::ssh::serve_connection(keys, Framed::new(stream)).await {
                                tracing::info!("ssh connection: {err:#}");
                            }
                        });
                    }
                    Err(err) => tracing::warn!(%err, "accepting an ssh connection"),
                },
                accepted = control.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shutdown_tx = shutdown_tx.clone();
                        let link = link.clone();
                        let shares = shares.clone();
                        let ssh_keys = ssh_keys.clone();
                        tokio::spawn(async move {
                            if let Err(err) = control_session(stream, shutdown_tx, &link, shares, ssh_keys).await {
                                tracing::warn!("control session: {err:#}");
                            }
                        });
                    }
                    Err(err) => tracing::warn!(%err, "accepting a control connection"),
                },
                _ = shutdown_rx.recv() => break,
                _ = term.recv() => break,
            }
        }
        tracing::info!("shutting down: stopping containers");
        engine.shutdown().await;
        nix::unistd::sync();
        Ok(())
    })
}

fn bind(port: u32) -> Result<VsockListener> {
    VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
        .with_context(|| format!("listening on vsock port {port}"))
}

/// Tells the host the ports are served: one connection to its
/// [`ports::READY`] port. Retried briefly in case the host's listener is
/// late; a host that dials on its own needs none of this.
async fn announce_ready() {
    const VMADDR_CID_HOST: u32 = 2;
    for attempt in 0..50 {
        match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, ports::READY)).await {
            Ok(stream) => {
                drop(stream);
                return;
            }
            Err(err) if attempt == 49 => tracing::warn!(%err, "announcing readiness to the host"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// Loads the modules containers need (the image's deferred list: overlay,
/// veth, bridge, nftables, and virtio_net) and brings up the VM's network.
/// Runs while the API already serves; container starts wait for it
/// (`EngineConfig::start_gate`). Failures are logged: the engine reports
/// what then fails (a mount, a veth) with its own error.
async fn prepare_for_containers() {
    let started = std::time::Instant::now();
    let loaded =
        tokio::task::spawn_blocking(|| super::setup::load_modules(super::setup::DEFERRED_MODULES))
            .await;
    match loaded {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!("loading container modules: {err:#}"),
        Err(err) => tracing::error!("loading container modules: {err}"),
    }
    if let Err(err) = super::setup::bring_up_network().await {
        tracing::error!("network setup failed: {err:#}");
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis(),
        "container modules loaded, network up"
    );
}

/// Keeps the host watching the share paths running containers bind:
/// recomputed on every container start, stop and removal.
async fn track_watched_paths(
    engine: Arc<Engine>,
    link: Arc<HostLink>,
    shares: Arc<Vec<berth_proto::shares::Share>>,
) {
    let (_, mut events) = engine.events.subscribe();
    link.set_watched(super::fsevents::interest(&engine, &shares));
    loop {
        match events.recv().await {
            Ok(e)
                if e.kind == "container"
                    && matches!(
                        e.action.as_str(),
                        "start" | "die" | "destroy" | "pause" | "unpause"
                    ) =>
            {
                link.set_watched(super::fsevents::interest(&engine, &shares));
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                link.set_watched(super::fsevents::interest(&engine, &shares));
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Tells the host about every published port that goes away.
async fn announce_closed_ports(engine: Arc<Engine>, link: Arc<HostLink>) {
    let mut events = engine.networks.subscribe_port_events();
    loop {
        match events.recv().await {
            Ok(berth_engine::network::PortEvent::Closed { mapping, .. }) => link.unpublish(mapping),
            Ok(berth_engine::network::PortEvent::Opened { .. }) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "port events lagged");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One control connection: handshake, `Ready`, then events out and
/// requests in until the host leaves or asks for `Shutdown`.
async fn control_session(
    stream: VsockStream,
    shutdown: mpsc::Sender<()>,
    link: &HostLink,
    shares: Arc<Vec<berth_proto::shares::Share>>,
    ssh_keys: crate::ssh::KeySlot,
) -> Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::new();
    let HostToGuest::Hello { version } = read_frame(&mut rd, &mut buf).await? else {
        bail!("the host did not start with Hello");
    };
    let hello = GuestToHost::Hello {
        version: PROTOCOL_VERSION,
        agent: env!("CARGO_PKG_VERSION").to_owned(),
    };
    wr.write_all(&berth_proto::encode(&hello))
        .await
        .context("sending Hello")?;
    if version != PROTOCOL_VERSION {
        bail!("host speaks protocol {version}, this agent {PROTOCOL_VERSION}");
    }
    wr.write_all(&berth_proto::encode(&GuestToHost::Ready))
        .await
        .context("sending Ready")?;
    let mut outgoing = link.attach();
    // Output of this session's scripts; they are aborted (their processes
    // killed) when the session ends.
    let (script_tx, mut script_out) = mpsc::channel::<GuestToHost>(64);
    let mut scripts = tokio::task::JoinSet::new();
    let result = loop {
        tokio::select! {
            msg = outgoing.recv() => {
                let Some(msg) = msg else { break Ok(()) };
                if let Err(err) = wr.write_all(&berth_proto::encode(&msg)).await {
                    break Err(anyhow::Error::new(err).context("sending an event"));
                }
            }
            Some(msg) = script_out.recv() => {
                if let Err(err) = wr.write_all(&berth_proto::encode(&msg)).await {
                    break Err(anyhow::Error::new(err).context("sending script output"));
                }
            }
            request = read_frame(&mut rd, &mut buf) => match request {
                Err(err) => break Err(err),
                Ok(HostToGuest::Shutdown) => {
                    tracing::info!("shutdown requested by the host");
                    let _ = wr
                        .write_all(&berth_proto::encode(&GuestToHost::ShuttingDown))
                        .await;
                    let _ = shutdown.send(()).await;
                    break Ok(());
                }
                Ok(HostToGuest::PortAck { id, error }) => link.acknowledge(id, error),
                Ok(HostToGuest::FsChanged { changes }) => {
                    let shares = shares.clone();
                    // File system calls on a FUSE mount: off the async workers.
                    tokio::task::spawn_blocking(move || super::fsevents::raise(&shares, &changes));
                }
                Ok(HostToGuest::RunScript { id, mode, script, env }) => {
                    tracing::info!(id, ?mode, "running a script for the host");
                    let request = super::script::Request { id, mode, script, env };
                    scripts.spawn(super::script::run(
                        request,
                        std::path::Path::new(super::script::SCRIPT_DIR),
                        std::path::Path::new("/"),
                        script_tx.clone(),
                    ));
                }
                Ok(HostToGuest::SshKeys { host_key, authorized_key }) => {
                    match crate::ssh::Keys::parse(&host_key, &authorized_key) {
                        Ok(keys) => {
                            ssh_keys.set(keys);
                            tracing::info!("ssh keys installed");
                        }
                        Err(err) => tracing::warn!("ignoring the SSH keys the host sent: {err:#}"),
                    }
                }
                Ok(HostToGuest::Hello { .. }) => break Err(anyhow::anyhow!("unexpected second Hello")),
            },
        }
    };
    scripts.abort_all();
    result
}

/// Reads the next frame. Cancel-safe: bytes read so far stay in `buf`.
async fn read_frame(
    stream: &mut tokio_vsock::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Result<HostToGuest> {
    loop {
        if let Some((msg, used)) =
            berth_proto::decode::<HostToGuest>(buf).context("decoding a control frame")?
        {
            buf.drain(..used);
            return Ok(msg);
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .context("reading the control stream")?;
        if n == 0 {
            bail!("the host closed the control channel");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
