//! `berth`: start, stop and inspect berth instances.
//!
//! Thin: parses arguments, sets up logging, runs one command from
//! [`commands`], prints `{err:#}` once and maps it to an exit code.

mod commands;
mod env;
mod image;
mod shell;
mod template_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use berth_instance::InstanceName;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Run containers in a lightweight Linux VM, with the plain docker CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an instance, creating it on first use from a template.
    ///
    /// With no TARGET: `./berth.yaml` if there is one (the instance is named
    /// after the directory), else the `default` instance.
    Start {
        /// An instance name, a template file (`./web.yaml`) or a shipped
        /// template (`template:k3s`).
        #[arg(value_parser = template_cmd::parse_start_target)]
        target: Option<template_cmd::StartTarget>,
        /// Instance name, when TARGET is a template or ./berth.yaml is used.
        #[arg(long)]
        name: Option<InstanceName>,
        /// CPUs (only when creating the instance).
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory in MiB (only when creating the instance).
        #[arg(long)]
        memory: Option<u32>,
        /// Data disk size in GiB (only when creating the instance).
        #[arg(long)]
        disk: Option<u32>,
    },
    /// Stop an instance (its containers and images are kept).
    Stop {
        #[arg(default_value = "default")]
        name: InstanceName,
    },
    /// Stop, then start an instance.
    Restart {
        #[arg(default_value = "default")]
        name: InstanceName,
    },
    /// List instances.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an instance and all its data.
    Delete {
        #[arg(default_value = "default")]
        name: InstanceName,
        /// Stop the instance first if it runs.
        #[arg(short, long)]
        force: bool,
    },
    /// Show an instance's configuration, state and paths.
    Info {
        #[arg(default_value = "default")]
        name: InstanceName,
    },
    /// Print the serial console (kernel and guest agent) and host agent logs.
    Logs {
        #[arg(default_value = "default")]
        name: InstanceName,
    },
    /// Shipped templates: list, show, validate, copy, schema.
    Template {
        #[command(subcommand)]
        command: template_cmd::TemplateCommand,
    },
    /// Check a template file (with its bases) against this host.
    Validate { file: PathBuf },
    /// Edit an instance's template in $EDITOR; applied on the next start.
    Edit {
        #[arg(default_value = "default")]
        name: InstanceName,
    },
    /// Open a shell in the instance, or run a command there (over SSH).
    ///
    /// Without a command: an interactive login shell (a pty when stdin is a
    /// terminal). With one (after `--`): runs it with this stdin, and exits
    /// with its exit code.
    Shell {
        #[arg(default_value = "default")]
        name: InstanceName,
        /// The command and its arguments.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print an OpenSSH config for `ssh berth-NAME` (all instances when no
    /// name is given); also written to the instance's `ssh_config`.
    SshConfig { name: Option<InstanceName> },
    /// OpenSSH's ProxyCommand: connects stdin/stdout to the guest's SSH server.
    #[command(hide = true)]
    SshProxy {
        name: InstanceName,
        /// BERTH_HOME of the instance (the generated config passes it, so
        /// that ssh works whatever the caller's environment).
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// Build the guest image from this source checkout (development).
    #[command(hide = true)]
    BuildImage {
        /// Use this static berth-agent instead of building one.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Guest architecture: x86_64 or aarch64 (default: this host's).
        #[arg(long)]
        arch: Option<berth_vm_images::GuestArch>,
    },
    /// The per-instance host agent (started by `berth start`).
    #[command(hide = true)]
    Hostagent {
        name: InstanceName,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var(env::BERTH_LOG).unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Start {
            target,
            name,
            cpus,
            memory,
            disk,
        } => commands::start(target, name, template_cmd::Overrides { cpus, memory, disk }),
        Command::Stop { name } => commands::stop(&name),
        Command::Restart { name } => commands::stop(&name).and_then(|()| {
            commands::start(
                Some(template_cmd::StartTarget::Name(name)),
                None,
                template_cmd::Overrides::default(),
            )
        }),
        Command::List { json } => commands::list(json),
        Command::Delete { name, force } => commands::delete(&name, force),
        Command::Info { name } => commands::info(&name),
        Command::Logs { name } => commands::logs(&name),
        Command::Template { command } => template_cmd::run(command),
        Command::Validate { file } => template_cmd::validate(&file),
        Command::Edit { name } => commands::edit(&name),
        Command::Shell { name, command } => shell::shell(&name, &command),
        Command::SshConfig { name } => shell::ssh_config(name.as_ref()),
        Command::SshProxy { name, home } => shell::ssh_proxy(&name, home),
        Command::BuildImage { agent, arch } => {
            image::build_from_checkout(agent, arch.unwrap_or_else(berth_vm_images::GuestArch::host))
                .map(drop)
        }
        Command::Hostagent {
            name,
            kernel,
            initramfs,
        } => commands::hostagent(name, kernel, initramfs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
