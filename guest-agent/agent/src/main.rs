//! `berth-agent`: the guest agent binary.
//!
//! * `berth-agent serve --root DIR --docker-socket PATH` runs the engine
//!   natively on a Linux host (tests, development).
//! * `berth-agent shim ...` and `berth-agent exec-shim ...` are the
//!   single-threaded runtime helpers the engine re-executes for every
//!   container and exec (see `berth_engine::runtime`). They must run before
//!   any thread is started, so they are dispatched before tokio exists.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod boot;
mod serve;
mod ssh;

#[derive(Debug, Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "berth guest agent and container engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine natively and serve the Docker API on a unix socket.
    Serve {
        /// Directory that holds all engine state.
        #[arg(long)]
        root: PathBuf,
        /// Unix socket to serve the Docker Engine API on (created with mode 0600).
        #[arg(long)]
        docker_socket: PathBuf,
        /// Log filter, e.g. `info` or `berth_engine=debug`.
        #[arg(long, env = "BERTH_LOG", default_value = "info")]
        log: String,
    },
}

fn main() -> ExitCode {
    // Runtime helpers first: they must stay single-threaded.
    if let Some(code) = berth_engine::runtime::dispatch_helper() {
        return code;
    }
    // In the VM: PID 1, or the agent process PID 1 starts (see boot/mod.rs).
    if let Some(code) = boot::dispatch() {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            root,
            docker_socket,
            log,
        } => {
            init_tracing(&log);
            match serve::run(root, docker_socket) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("berth-agent: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
