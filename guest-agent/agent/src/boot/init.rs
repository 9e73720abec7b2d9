//! PID 1: set the machine up, start the agent, reap, power off.
//!
//! PID 1 must never return or panic (the kernel would panic with it), so
//! every failure path ends in [`power_off`].

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{AGENT_ARGV0, setup};

/// Set on the kernel command line (`BERTH_INIT_MARKER=1`, which the kernel
/// hands PID 1 as an environment variable) by the boot benchmark: print
/// [`INIT_MARKER`] as soon as /init runs and power off.
const INIT_MARKER_ENV: &str = "BERTH_INIT_MARKER";
/// Printed on the console once PID 1 runs.
const INIT_MARKER: &str = "berth-init: started";

pub(super) fn run() -> ! {
    super::init_console_tracing();
    eprintln!("{INIT_MARKER}");
    if std::env::var_os(INIT_MARKER_ENV).is_some() {
        power_off();
    }
    let started = Instant::now();
    if let Err(err) = boot() {
        tracing::error!("boot failed: {err:#}");
        power_off();
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis(),
        "machine set up, starting the agent"
    );
    let agent = match Command::new("/init")
        .arg0(AGENT_ARGV0)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .spawn()
    {
        Ok(child) => Pid::from_raw(i32::try_from(child.id()).expect("invariant: pids fit in i32")),
        Err(err) => {
            tracing::error!(%err, "starting the agent");
            power_off();
        }
    };
    reap_until(agent);
    shut_down();
}

fn boot() -> anyhow::Result<()> {
    // Each step's duration goes to the console: the boot-time budget.
    let mut t = Instant::now();
    let mut lap = || {
        let ms = t.elapsed().as_millis();
        t = Instant::now();
        ms
    };
    super::rootfs::make_pivotable()?;
    let root = lap();
    setup::mount_pseudo_filesystems()?;
    let pseudo = lap();
    setup::load_modules(setup::BOOT_MODULES)?;
    let modules = lap();
    setup::misc();
    setup::mount_data_disk()?;
    let disk = lap();
    super::shares::mount_all();
    let shares = lap();
    tracing::info!(root, pseudo, modules, disk, shares, "boot steps (ms)");
    Ok(())
}

/// Reaps every child until `agent` exits.
fn reap_until(agent: Pid) {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => {
                tracing::info!(code, "agent exited");
                return;
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == agent => {
                tracing::error!(?signal, "agent was killed");
                return;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(%err, "waitpid");
                return;
            }
        }
    }
}

/// Stops what is left, flushes and unmounts the data disk, powers off.
fn shut_down() -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => {}
            Err(_) => break, // ECHILD: nothing left
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    nix::unistd::sync();
    if let Err(err) = nix::mount::umount2(setup::DATA_DIR, nix::mount::MntFlags::empty()) {
        tracing::warn!(%err, "unmounting the data disk; detaching it");
        let _ = nix::mount::umount2(setup::DATA_DIR, nix::mount::MntFlags::MNT_DETACH);
    }
    power_off();
}

fn power_off() -> ! {
    nix::unistd::sync();
    eprintln!("berth-init: powering off");
    let err =
        reboot(RebootMode::RB_POWER_OFF).expect_err("invariant: reboot returns only on failure");
    eprintln!("berth-init: power off failed: {err}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
