//! The VM agent: the engine plus the vsock services.
//!
//! * [`ports::DOCKER`]: every accepted stream is one Docker API connection.
//! * [`ports::CONTROL`]: the host sends `Hello { version }`, the agent answers
//!   with its own `Hello` and, if the versions match, `Ready`. A later
//!   `Shutdown` stops the engine and ends this process, after which PID 1
//!   powers the VM off.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use berth_dockerapi::AppState;
use berth_engine::{Engine, EngineConfig};
use berth_proto::{GuestToHost, HostToGuest, PROTOCOL_VERSION, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_vsock::{VMADDR_CID_ANY, VsockAddr, VsockListener, VsockStream};

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
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let root = std::path::Path::new(DATA_DIR).join("engine");
        let engine = Arc::new(
            Engine::open(&EngineConfig::new(root.clone()))
                .with_context(|| format!("opening engine state in {}", root.display()))?,
        );
        let router = berth_dockerapi::router(AppState { engine: engine.clone() });
        let docker = bind(ports::DOCKER)?;
        let control = bind(ports::CONTROL)?;
        tracing::info!(control = ports::CONTROL, docker = ports::DOCKER, "serving vsock ports");
        let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(1);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                accepted = docker.accept() => match accepted {
                    Ok((stream, _)) => { tokio::spawn(berth_dockerapi::serve_connection(router.clone(), stream)); }
                    Err(err) => tracing::warn!(%err, "accepting a docker connection"),
                },
                accepted = control.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shutdown_tx = shutdown_tx.clone();
                        tokio::spawn(async move {
                            if let Err(err) = control_session(stream, shutdown_tx).await {
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

/// One control connection: handshake, `Ready`, then requests.
async fn control_session(mut stream: VsockStream, shutdown: mpsc::Sender<()>) -> Result<()> {
    let mut buf = Vec::new();
    let HostToGuest::Hello { version } = read_frame(&mut stream, &mut buf).await? else {
        bail!("the host did not start with Hello");
    };
    let hello = GuestToHost::Hello {
        version: PROTOCOL_VERSION,
        agent: env!("CARGO_PKG_VERSION").to_owned(),
    };
    stream
        .write_all(&berth_proto::encode(&hello))
        .await
        .context("sending Hello")?;
    if version != PROTOCOL_VERSION {
        bail!("host speaks protocol {version}, this agent {PROTOCOL_VERSION}");
    }
    stream
        .write_all(&berth_proto::encode(&GuestToHost::Ready))
        .await
        .context("sending Ready")?;
    match read_frame(&mut stream, &mut buf).await? {
        HostToGuest::Shutdown => {
            tracing::info!("shutdown requested by the host");
            let _ = stream
                .write_all(&berth_proto::encode(&GuestToHost::ShuttingDown))
                .await;
            let _ = shutdown.send(()).await;
            Ok(())
        }
        HostToGuest::Hello { .. } => bail!("unexpected second Hello"),
    }
}

async fn read_frame(stream: &mut VsockStream, buf: &mut Vec<u8>) -> Result<HostToGuest> {
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
