//! The commands. Progress goes to stderr as `berth: ...` lines; results
//! (tables, JSON, logs, how to use docker) go to stdout.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_hostagent::Report;
use berth_instance::state::{self, AgentState};
use berth_instance::{BerthHome, InstanceConfig, InstanceName, InstancePaths};
use berth_template::Source;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::template_cmd::{self, Overrides, StartTarget};
use crate::{env, image};

/// How long `berth stop` waits for a clean shutdown before killing.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Default boot timeout (TCG boots in 2-4 s; a loaded CI machine is slower).
const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 120;
/// Default for how long a readiness probe may keep failing (Lima's).
const DEFAULT_PROBE_TIMEOUT_SECS: u64 = 600;
/// Lines of each log shown when a boot fails.
const LOG_TAIL_LINES: usize = 25;

pub(crate) fn home() -> Result<BerthHome> {
    Ok(BerthHome::resolve(
        std::env::var_os(env::BERTH_HOME).map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )?)
}

pub(crate) fn start(
    target: Option<StartTarget>,
    name: Option<InstanceName>,
    overrides: Overrides,
) -> Result<()> {
    let home = home()?;
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let plan = template_cmd::plan_start(target, name, &cwd)?;
    let name = &plan.name;
    let paths = home.instance(name);
    paths.check_socket_paths()?;
    if let AgentState::Running { pid } = state::agent_state(&paths.agent_pid())? {
        bail!(
            "instance {name} is already running (host agent pid {pid}); use `berth stop {name}` or `berth restart {name}`"
        );
    }
    // Everything that can be refused is checked before anything is written.
    let existing_instance = paths.config().is_file();
    let template = if existing_instance {
        if plan.explicit {
            bail!(
                "instance {name} already exists; it keeps the template it was created with ({}). Change it with `berth edit {name}`, or start a new instance with --name",
                paths.template().display()
            );
        }
        if !overrides.is_empty() {
            eprintln!(
                "berth: note: --cpus, --memory and --disk only apply when an instance is created; use `berth edit {name}`"
            );
        }
        if let Source::File(project) = &plan.source
            && template_cmd::is_newer(project, &paths.template())
        {
            eprintln!(
                "berth: note: {} changed after instance {name} was created; the instance keeps its own template (change it with `berth edit {name}`, or `berth delete {name}` to recreate it)",
                project.display()
            );
        }
        template_cmd::load_stored(&paths)?
    } else {
        Some(template_cmd::resolve_new(
            &plan.source,
            home.root(),
            overrides,
        )?)
    };
    // The vz driver needs no tools: Virtualization.framework is part of macOS.
    let driver = match &template {
        Some(template) => template.to_instance_config().driver,
        None => InstanceConfig::load(&paths.config())?.driver,
    };
    if driver == berth_instance::config::DriverKind::Qemu {
        berth_driver::qemu::find_qemu()?;
        berth_driver::qemu::find_vsockd()?;
    }
    match &template {
        Some(template) if !existing_instance => {
            template_cmd::create_instance(&paths, name, template, &plan.source)?;
            eprintln!(
                "berth: created instance {name} from {} in {}",
                plan.source.display_name(),
                paths.dir.display()
            );
        }
        Some(template) => template_cmd::sync_config(&paths, template)?,
        None => {
            InstanceConfig::load(&paths.config())?;
        }
    }
    let image = image::find()?;

    let agent_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.agent_log())
        .with_context(|| format!("opening {}", paths.agent_log().display()))?;
    let exe = std::env::current_exe().context("finding the berth executable")?;
    let mut child = Command::new(exe)
        .arg("hostagent")
        .arg(name.as_str())
        .arg("--kernel")
        .arg(&image.kernel)
        .arg("--initramfs")
        .arg(&image.initramfs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(agent_log)
        // Its own process group: Ctrl-C in this terminal must not stop it.
        .process_group(0)
        .spawn()
        .context("starting the host agent")?;
    let stdout = child.stdout.take().expect("invariant: stdout is piped");
    let started = Instant::now();
    let mut error = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match Report::parse(&line) {
            Report::Progress(text) => eprintln!("berth: {text}"),
            Report::Error(text) => error = Some(text),
            Report::ScriptFailed(text) => {
                let _ = child.wait();
                bail!("instance {name} failed to start: {text}");
            }
            Report::Ready => {
                eprintln!(
                    "berth: instance {name} is running ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                print_usage(name, &paths);
                if let Some(message) = template
                    .as_ref()
                    .and_then(|t| t.render_message(name.as_str()))
                {
                    println!("{}", message.trim_end());
                }
                if let Err(err) = crate::shell::write_config(&home, name, &paths) {
                    eprintln!("berth: warning: writing the ssh config: {err:#}");
                }
                return Ok(());
            }
        }
    }
    let _ = child.wait();
    let mut message = error.unwrap_or_else(|| "the host agent exited without reporting".into());
    message.push_str(&tail_section("host agent log", &paths.agent_log()));
    message.push_str(&tail_section("serial console", &paths.serial_log()));
    message.push_str(&tail_section("qemu", &paths.qemu_log()));
    bail!("instance {name} failed to start: {message}")
}

fn print_usage(name: &InstanceName, paths: &InstancePaths) {
    let context = name.docker_context();
    let socket = paths.docker_socket();
    println!("To use docker with this instance:");
    println!("  docker --context {context} ps");
    println!("  docker context use {context}");
    println!("  export DOCKER_HOST=unix://{}", socket.display());
    println!(
        "A shell in the VM: berth shell {name} (or ssh -F {} {})",
        paths.ssh_config().display(),
        crate::shell::ssh_host(name)
    );
}

fn tail_section(title: &str, path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "\n--- {title} ({}) ---\n{}",
        path.display(),
        tail.join("\n")
    )
}

pub(crate) fn hostagent(name: InstanceName, kernel: PathBuf, initramfs: PathBuf) -> Result<()> {
    let boot_timeout = std::env::var(env::BERTH_BOOT_TIMEOUT)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_BOOT_TIMEOUT_SECS);
    berth_hostagent::run(&berth_hostagent::Config {
        home: home()?,
        name,
        kernel,
        initramfs,
        cmdline: std::env::var(env::BERTH_KERNEL_CMDLINE).unwrap_or_default(),
        boot_timeout: Duration::from_secs(boot_timeout),
        probe_timeout: Duration::from_secs(
            std::env::var(env::BERTH_PROBE_TIMEOUT)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(DEFAULT_PROBE_TIMEOUT_SECS),
        ),
    })
}

pub(crate) fn stop(name: &InstanceName) -> Result<()> {
    let paths = existing(name)?;
    match state::agent_state(&paths.agent_pid())? {
        AgentState::Running { pid } => {
            eprintln!("berth: stopping instance {name}");
            let pid = Pid::from_raw(pid);
            kill(pid, Signal::SIGTERM).with_context(|| format!("signalling host agent {pid}"))?;
            let deadline = Instant::now() + STOP_TIMEOUT;
            while state::agent_state(&paths.agent_pid())? != AgentState::Stopped {
                if Instant::now() > deadline {
                    eprintln!(
                        "berth: the host agent did not stop within {} s; killing it",
                        STOP_TIMEOUT.as_secs()
                    );
                    let _ = kill(pid, Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            berth_hostagent::recover_blocking(&paths)?;
            eprintln!("berth: instance {name} stopped");
        }
        AgentState::Stopped => {
            // The agent may have been killed: shut down and clean up what it left.
            let leftovers = paths.child_pid_files().iter().any(|p| p.exists())
                || paths.sockets().iter().any(|p| p.exists());
            berth_hostagent::recover_blocking(&paths)?;
            if leftovers {
                eprintln!(
                    "berth: instance {name} was not running cleanly; cleaned up what its host agent left behind"
                );
            } else {
                eprintln!("berth: instance {name} is not running");
            }
        }
    }
    Ok(())
}

fn existing(name: &InstanceName) -> Result<InstancePaths> {
    let paths = home()?.instance(name);
    if !paths.config().is_file() {
        bail!("instance {name} does not exist (create it with `berth start {name}`)");
    }
    Ok(paths)
}

pub(crate) fn delete(name: &InstanceName, force: bool) -> Result<()> {
    let paths = existing(name)?;
    let running = matches!(
        state::agent_state(&paths.agent_pid())?,
        AgentState::Running { .. }
    );
    if running && !force {
        bail!("instance {name} is running; stop it first or use `berth delete -f {name}`");
    }
    stop(name)?;
    berth_hostagent::remove_docker_context(name);
    std::fs::remove_dir_all(&paths.dir)
        .with_context(|| format!("removing {}", paths.dir.display()))?;
    eprintln!("berth: deleted instance {name}");
    Ok(())
}

/// One row of `berth list` and the body of `berth info`.
#[derive(Debug, Serialize)]
struct InstanceInfo {
    name: String,
    status: &'static str,
    host_agent_pid: Option<i32>,
    driver: String,
    cpus: u32,
    memory_mib: u32,
    disk_gib: u32,
    dir: PathBuf,
    docker_socket: PathBuf,
    docker_context: String,
    serial_log: PathBuf,
    host_agent_log: PathBuf,
}

fn describe(home: &BerthHome, name: &InstanceName) -> Result<InstanceInfo> {
    let paths = home.instance(name);
    let config = InstanceConfig::load(&paths.config())?;
    let (status, pid) = match state::agent_state(&paths.agent_pid())? {
        AgentState::Running { pid } => ("running", Some(pid)),
        // No agent, but its VM processes may still run (agent killed).
        AgentState::Stopped if paths.child_pid_files().iter().any(|p| p.exists()) => {
            ("orphaned", None)
        }
        AgentState::Stopped => ("stopped", None),
    };
    Ok(InstanceInfo {
        name: name.to_string(),
        status,
        host_agent_pid: pid,
        driver: format!("{:?}", config.driver).to_lowercase(),
        cpus: config.cpus,
        memory_mib: config.memory_mib,
        disk_gib: config.disk_gib,
        docker_socket: paths.docker_socket(),
        docker_context: name.docker_context(),
        serial_log: paths.serial_log(),
        host_agent_log: paths.agent_log(),
        dir: paths.dir,
    })
}

pub(crate) fn list(json: bool) -> Result<()> {
    let home = home()?;
    let infos = home
        .list()?
        .iter()
        .map(|name| describe(&home, name))
        .collect::<Result<Vec<_>>>()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&infos).expect("invariant: plain data serializes")
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:>4} {:>8} {:>6}  DOCKER SOCKET",
        "NAME", "STATUS", "CPUS", "MEMORY", "DISK"
    );
    for info in infos {
        println!(
            "{:<20} {:<8} {:>4} {:>7}M {:>5}G  {}",
            info.name,
            info.status,
            info.cpus,
            info.memory_mib,
            info.disk_gib,
            info.docker_socket.display()
        );
    }
    Ok(())
}

pub(crate) fn info(name: &InstanceName) -> Result<()> {
    let home = home()?;
    existing(name)?;
    let info = describe(&home, name)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&info).expect("invariant: plain data serializes")
    );
    Ok(())
}

pub(crate) fn edit(name: &InstanceName) -> Result<()> {
    let paths = existing(name)?;
    template_cmd::edit(&paths, name)
}

pub(crate) fn logs(name: &InstanceName) -> Result<()> {
    let paths = existing(name)?;
    for (title, path) in [
        ("serial console", paths.serial_log()),
        ("host agent", paths.agent_log()),
    ] {
        println!("==> {title} ({}) <==", path.display());
        match std::fs::read_to_string(&path) {
            Ok(text) => print!("{text}"),
            Err(_) => println!("(empty)"),
        }
    }
    Ok(())
}
