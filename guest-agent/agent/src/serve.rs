//! Native mode: the engine on a unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_dockerapi::AppState;
use berth_engine::{Engine, EngineConfig};
use tokio::net::UnixListener;

/// Runs the engine until SIGINT/SIGTERM, serving the Docker API on `socket`.
pub(crate) fn run(root: PathBuf, socket: PathBuf) -> Result<()> {
    // Orphaned container processes (and their shims) are re-parented to us.
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let engine = Arc::new(
            Engine::open(&EngineConfig::new(root.clone()))
                .with_context(|| format!("opening engine state in {}", root.display()))?,
        );
        let listener = bind(&socket)?;
        tracing::info!(socket = %socket.display(), root = %root.display(), "serving the Docker API");
        let router = berth_dockerapi::router(AppState { engine: engine.clone() });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted.context("accepting an API connection")?;
                    tokio::spawn(berth_dockerapi::serve_connection(router.clone(), stream));
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        tracing::info!("shutting down: stopping containers");
        engine.shutdown().await;
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
}

fn bind(socket: &PathBuf) -> Result<UnixListener> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", socket.display()));
        }
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", socket.display()))?;
    Ok(listener)
}
