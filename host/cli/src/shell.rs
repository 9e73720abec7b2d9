//! `berth shell`, `berth ssh-config` and the hidden `berth ssh-proxy`.
//!
//! berth runs the system's OpenSSH client (as Lima's `limactl shell` does)
//! against the guest agent's SSH server. The client reaches the guest
//! through `ProxyCommand berth ssh-proxy NAME`, which dials guest vsock port
//! `SSH` through the instance's vsock socket; there is no TCP port. The
//! generated config pins the instance's host key (`StrictHostKeyChecking
//! yes` with its own known-hosts file) and uses the instance's user key.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_forward::VsockDialer;
use berth_instance::state::{self, AgentState};
use berth_instance::{BerthHome, InstanceName, InstancePaths, SshKeys};
use berth_proto::ports;

use crate::commands;

/// The OpenSSH client `berth shell` runs.
const SSH: &str = "ssh";

/// The host name of `name` in the generated config.
pub(crate) fn ssh_host(name: &InstanceName) -> String {
    format!("berth-{name}")
}

/// What goes into one `Host` block.
struct ConfigInput<'a> {
    name: &'a InstanceName,
    berth: &'a Path,
    home: &'a Path,
    identity_file: &'a Path,
    known_hosts: &'a Path,
}

/// Renders the OpenSSH config block of one instance.
fn render_config(input: &ConfigInput<'_>) -> Result<String> {
    let host = ssh_host(input.name);
    let mut out = String::new();
    let _ = writeln!(out, "Host {host}");
    let _ = writeln!(out, "  User root");
    let _ = writeln!(out, "  IdentityFile {}", config_path(input.identity_file)?);
    let _ = writeln!(out, "  IdentitiesOnly yes");
    let _ = writeln!(out, "  PreferredAuthentications publickey");
    let _ = writeln!(out, "  HostKeyAlias {host}");
    let _ = writeln!(
        out,
        "  UserKnownHostsFile {}",
        config_path(input.known_hosts)?
    );
    let _ = writeln!(out, "  GlobalKnownHostsFile /dev/null");
    let _ = writeln!(out, "  StrictHostKeyChecking yes");
    let _ = writeln!(out, "  CheckHostIP no");
    let _ = writeln!(out, "  ForwardAgent no");
    let _ = writeln!(out, "  ForwardX11 no");
    let _ = writeln!(out, "  ControlMaster no");
    let _ = writeln!(out, "  ControlPath none");
    let _ = writeln!(out, "  LogLevel ERROR");
    let _ = writeln!(
        out,
        "  ProxyCommand {} ssh-proxy --home {} {}",
        proxy_path(input.berth)?,
        proxy_path(input.home)?,
        input.name
    );
    Ok(out)
}

/// The known-hosts line that pins the instance's host key.
fn known_hosts_line(name: &InstanceName, host_public_key: &str) -> String {
    format!("{} {}\n", ssh_host(name), host_public_key.trim())
}

/// A path as an ssh_config argument: double-quoted, `%` escaped (ssh
/// expands `%` tokens in these options).
fn config_path(path: &Path) -> Result<String> {
    let text = plain_path(path)?;
    Ok(format!("\"{}\"", text.replace('%', "%%")))
}

/// A path in `ProxyCommand`, which ssh runs with the shell:
/// single-quoted, `%` escaped.
fn proxy_path(path: &Path) -> Result<String> {
    let text = plain_path(path)?;
    if text.contains('\'') {
        bail!(
            "cannot use {} in an ssh config: the path contains a single quote",
            path.display()
        );
    }
    Ok(format!("'{}'", text.replace('%', "%%")))
}

fn plain_path(path: &Path) -> Result<&str> {
    let Some(text) = path.to_str() else {
        bail!(
            "cannot use {} in an ssh config: the path is not UTF-8",
            path.display()
        );
    };
    if text.contains(['"', '\n', '\r']) {
        bail!(
            "cannot use {} in an ssh config: the path contains a quote or a newline",
            path.display()
        );
    }
    Ok(text)
}

/// Writes the instance's `ssh_known_hosts` and `ssh_config`; returns the
/// config text.
pub(crate) fn write_config(
    home: &BerthHome,
    name: &InstanceName,
    paths: &InstancePaths,
) -> Result<String> {
    let keys = SshKeys::load(paths)?;
    let berth = std::env::current_exe().context("finding the berth executable")?;
    let known_hosts = paths.ssh_known_hosts();
    write_file(
        &known_hosts,
        &known_hosts_line(name, &keys.host_public_key()?),
    )?;
    let config = render_config(&ConfigInput {
        name,
        berth: &berth,
        home: &absolute(home.root())?,
        identity_file: &paths.ssh_user_key(),
        known_hosts: &known_hosts,
    })?;
    write_file(&paths.ssh_config(), &config)?;
    Ok(config)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Replaces `path` atomically (ssh may be reading it: `berth shell`s can
/// run in parallel), and not at all when it is unchanged.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// `berth ssh-config [NAME]`: the config of one instance, or of every
/// instance that has keys.
pub(crate) fn ssh_config(name: Option<&InstanceName>) -> Result<()> {
    let home = commands::home()?;
    let names = match name {
        Some(name) => vec![name.clone()],
        None => home
            .list()?
            .into_iter()
            .filter(|name| home.instance(name).ssh_user_key().exists())
            .collect(),
    };
    if names.is_empty() {
        bail!("no instance has SSH keys yet; start one with `berth start`");
    }
    let mut blocks = Vec::new();
    for name in &names {
        let paths = existing(&home, name)?;
        blocks.push(write_config(&home, name, &paths).with_context(|| format!("instance {name}"))?);
    }
    print!("{}", blocks.join("\n"));
    Ok(())
}

fn existing(home: &BerthHome, name: &InstanceName) -> Result<InstancePaths> {
    let paths = home.instance(name);
    if !paths.config().is_file() {
        bail!("instance {name} does not exist (create it with `berth start {name}`)");
    }
    Ok(paths)
}

fn running(home: &BerthHome, name: &InstanceName) -> Result<InstancePaths> {
    let paths = existing(home, name)?;
    if !matches!(
        state::agent_state(&paths.agent_pid())?,
        AgentState::Running { .. }
    ) {
        bail!("instance {name} is not running (start it with `berth start {name}`)");
    }
    Ok(paths)
}

/// `berth ssh-proxy NAME`: OpenSSH's proxy command.
pub(crate) fn ssh_proxy(name: &InstanceName, home: Option<PathBuf>) -> Result<()> {
    let home = match home {
        Some(root) => BerthHome::new(root),
        None => commands::home()?,
    };
    let paths = running(&home, name)?;
    let dialer = berth_forward::HybridDialer::new(paths.vsock_socket());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stream = runtime
        .block_on(dialer.dial(ports::SSH))
        .with_context(|| {
            format!(
                "connecting to the SSH server of instance {name} (guest vsock port {})",
                ports::SSH
            )
        })?
        .into_std()
        .context("converting the vsock stream")?;
    drop(runtime);
    stream
        .set_nonblocking(false)
        .context("making the vsock stream blocking")?;
    // Unbuffered stdio: SSH packets must not wait in a line buffer.
    let stdin = std::fs::File::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdin")?,
    );
    let stdout = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdout")?,
    );
    berth_forward::ssh::pipe_stdio(stream, stdin, stdout).context("copying the SSH stream")?;
    Ok(())
}

/// `berth shell [NAME] [-- CMD...]`: runs `ssh` in place of this process,
/// so its exit code (the remote command's, or 255 for ssh's own errors) is
/// berth's.
pub(crate) fn shell(name: &InstanceName, command: &[String]) -> Result<()> {
    let home = commands::home()?;
    let paths = running(&home, name)?;
    let ssh = find_in_path(SSH).with_context(|| {
        format!("`{SSH}` (the OpenSSH client) is not installed; `berth shell` runs it (Debian: apt-get install openssh-client)")
    })?;
    write_config(&home, name, &paths)?;
    let stdin_tty = std::io::stdin().is_terminal();
    let stdout_tty = std::io::stdout().is_terminal();
    let err = Command::new(&ssh)
        .args(ssh_args(
            &paths.ssh_config(),
            name,
            command,
            stdin_tty,
            stdout_tty,
        ))
        .exec();
    Err(err).with_context(|| format!("running {}", ssh.display()))
}

/// The arguments of `ssh` for `berth shell`.
fn ssh_args(
    config: &Path,
    name: &InstanceName,
    command: &[String],
    stdin_tty: bool,
    stdout_tty: bool,
) -> Vec<String> {
    // A pty when the user is at a terminal: an interactive shell, or a
    // command (`top`, `vi`) whose stdin and stdout both are the terminal.
    // Otherwise plain pipes, so stdin, stdout and stderr stay apart.
    let pty = if command.is_empty() {
        stdin_tty
    } else {
        stdin_tty && stdout_tty
    };
    let mut args = vec![
        "-F".to_owned(),
        config.display().to_string(),
        if pty { "-t" } else { "-T" }.to_owned(),
        ssh_host(name),
    ];
    if !command.is_empty() {
        // ssh joins its arguments with spaces for the remote shell: quote
        // each so that the remote command gets exactly these arguments.
        args.push("--".to_owned());
        args.push(
            command
                .iter()
                .map(|arg| shell_quote(arg))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    args
}

/// Quotes `arg` for a POSIX shell (unchanged when it needs no quoting).
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> InstanceName {
        s.parse().unwrap()
    }

    #[test]
    fn config_block_pins_the_host_key_and_proxies_through_berth() {
        let config = render_config(&ConfigInput {
            name: &name("dev"),
            berth: Path::new("/opt/berth/bin/berth"),
            home: Path::new("/home/u/.berth"),
            identity_file: Path::new("/home/u/.berth/dev/ssh_key"),
            known_hosts: Path::new("/home/u/.berth/dev/ssh_known_hosts"),
        })
        .unwrap();

        assert_eq!(
            config,
            "Host berth-dev
  User root
  IdentityFile \"/home/u/.berth/dev/ssh_key\"
  IdentitiesOnly yes
  PreferredAuthentications publickey
  HostKeyAlias berth-dev
  UserKnownHostsFile \"/home/u/.berth/dev/ssh_known_hosts\"
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  ForwardAgent no
  ForwardX11 no
  ControlMaster no
  ControlPath none
  LogLevel ERROR
  ProxyCommand '/opt/berth/bin/berth' ssh-proxy --home '/home/u/.berth' dev
"
        );
    }

    #[test]
    fn config_paths_escape_percent_tokens() {
        let config = render_config(&ConfigInput {
            name: &name("dev"),
            berth: Path::new("/opt/100%/berth"),
            home: Path::new("/h"),
            identity_file: Path::new("/h/50%/ssh_key"),
            known_hosts: Path::new("/h/k"),
        })
        .unwrap();

        assert!(
            config.contains("IdentityFile \"/h/50%%/ssh_key\""),
            "{config}"
        );
        assert!(
            config.contains("ProxyCommand '/opt/100%%/berth' ssh-proxy --home '/h' dev"),
            "{config}"
        );
    }

    #[test]
    fn config_rejects_a_path_with_a_quote_naming_it() {
        let err = render_config(&ConfigInput {
            name: &name("dev"),
            berth: Path::new("/opt/it's/berth"),
            home: Path::new("/h"),
            identity_file: Path::new("/h/ssh_key"),
            known_hosts: Path::new("/h/k"),
        })
        .unwrap_err();

        assert!(err.to_string().contains("/opt/it's/berth"), "{err}");
    }

    #[test]
    fn known_hosts_line_names_the_host_alias() {
        assert_eq!(
            known_hosts_line(&name("dev"), "ssh-ed25519 AAAAC3 berth-dev\n"),
            "berth-dev ssh-ed25519 AAAAC3 berth-dev\n"
        );
    }

    #[test]
    fn write_file_replaces_changed_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_config");
        write_file(&path, "old").unwrap();

        write_file(&path, "new").unwrap();

        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn shell_without_command_at_a_terminal_gets_a_pty() {
        let args = ssh_args(Path::new("/c"), &name("default"), &[], true, true);

        assert_eq!(args, ["-F", "/c", "-t", "berth-default"]);
    }

    #[test]
    fn command_with_piped_stdin_gets_no_pty_and_keeps_its_arguments() {
        let command = ["sh", "-c", "exit 7", "it's"].map(String::from);

        let args = ssh_args(Path::new("/c"), &name("default"), &command, false, true);

        assert_eq!(
            args,
            [
                "-F",
                "/c",
                "-T",
                "berth-default",
                "--",
                r"sh -c 'exit 7' 'it'\''s'"
            ]
        );
    }

    #[test]
    fn shell_quote_quotes_empty_and_special_arguments() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("a/b=c"), "a/b=c");
    }
}
