//! The guest agent inside the VM.
//!
//! The kernel starts `/init` (this binary) as PID 1. Two processes result:
//!
//! * **PID 1** ([`init`]): re-roots on a bind mount of the initramfs
//!   ([`rootfs`]), mounts the pseudo file systems, loads the boot modules
//!   ([`modules`]), formats (first boot) and mounts the data disk, mounts
//!   the shares, then spawns the agent and does nothing but reap zombies. When the agent
//!   exits, for whatever reason, PID 1 syncs, unmounts and powers the VM off.
//! * **the VM agent** ([`agent`]), this binary again with `argv[0]` =
//!   [`AGENT_ARGV0`]: runs the engine and serves the vsock ports of
//!   `berth_proto::ports` (control and Docker API). Once it serves, it
//!   loads the modules containers need and brings up the network in the
//!   background; container starts wait for that.
//!
//! The split keeps `waitpid(-1)` (which PID 1 must run for orphans) away
//! from the engine's own children: the agent is a child subreaper, so
//! container processes re-parent to it, not to PID 1.

mod agent;
mod forward;
mod fsevents;
mod host_link;
mod init;
mod listeners;
mod modules;
mod rootfs;
mod script;
mod setup;
mod shares;

use std::process::ExitCode;

/// `argv[0]` PID 1 gives the agent process it spawns.
const AGENT_ARGV0: &str = "berth-vm-agent";

/// Logs to the serial console: plain text (no ANSI colours), filter from
/// `BERTH_LOG` (settable on the kernel command line).
fn init_console_tracing() {
    let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the in-VM roles: never returns as PID 1, returns the agent's exit
/// code in the agent process, and `None` in every other process.
pub(crate) fn dispatch() -> Option<ExitCode> {
    if std::process::id() == 1 {
        init::run();
    }
    let argv0 = std::env::args_os().next()?;
    (argv0 == AGENT_ARGV0).then(agent::run)
}
