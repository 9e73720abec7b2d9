//! Provisioning scripts and probes the host runs in the guest
//! (`HostToGuest::RunScript`).
//!
//! A script is written to [`SCRIPT_DIR`] and run with its output piped:
//! directly when it starts with `#!`, else with `/bin/sh -eu`. Each chunk of
//! stdout or stderr goes to the host as a `ScriptOutput` frame the moment it
//! is read, then one `ScriptExited` carries the exit code (128 + signal when
//! killed). A script may leave daemons behind (`nohup k3s server &`): once
//! the script itself has exited, output is drained for at most
//! [`DRAIN_AFTER_EXIT`], so a daemon holding the pipe open does not hold the
//! reply back.
//!
//! `system` scripts run as root in `/`; `user` scripts as
//! [`berth_proto::control::GUEST_USER`] in its home, which
//! [`ensure_guest_user`] creates on first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_proto::control::{GUEST_USER, MAX_SCRIPT_CHUNK};
use berth_proto::{GuestToHost, OutputStream, ScriptMode};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Where scripts are written before they run (a tmpfs in the VM).
pub(super) const SCRIPT_DIR: &str = "/run/berth/scripts";
/// How long output is still read after the script exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// `PATH` scripts get unless the template sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One `RunScript` request.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub id: u64,
    pub mode: ScriptMode,
    pub script: String,
    pub env: BTreeMap<String, String>,
}

/// Runs `request`, sending its output and exit status to `out`. `root` is
/// the file system root the user database lives under (`/` in the VM).
pub(super) async fn run(
    request: Request,
    script_dir: &Path,
    root: &Path,
    out: mpsc::Sender<GuestToHost>,
) {
    let id = request.id;
    let exited = match spawn_and_stream(&request, script_dir, root, &out).await {
        Ok(code) => GuestToHost::ScriptExited {
            id,
            code,
            error: None,
        },
        Err(err) => {
            tracing::warn!(id, "script could not run: {err:#}");
            GuestToHost::ScriptExited {
                id,
                code: 127,
                error: Some(format!("{err:#}")),
            }
        }
    };
    let _ = out.send(exited).await;
}

async fn spawn_and_stream(
    request: &Request,
    script_dir: &Path,
    root: &Path,
    out: &mpsc::Sender<GuestToHost>,
) -> Result<i32> {
    let user = match request.mode {
        ScriptMode::System => None,
        ScriptMode::User => {
            ensure_guest_user(root)?;
            Some(GUEST_USER.1)
        }
    };
    let path = write_script(script_dir, request.id, &request.script)?;
    let result = run_file(request, &path, user, root, out).await;
    let _ = std::fs::remove_file(&path);
    result
}

async fn run_file(
    request: &Request,
    path: &Path,
    user: Option<u32>,
    root: &Path,
    out: &mpsc::Sender<GuestToHost>,
) -> Result<i32> {
    let (name, _, home) = GUEST_USER;
    let mut command = if request.script.starts_with("#!") {
        tokio::process::Command::new(path)
    } else {
        let mut sh = tokio::process::Command::new("/bin/sh");
        sh.arg("-eu").arg(path);
        sh
    };
    command
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match user {
        None => {
            command
                .env("HOME", "/root")
                .env("USER", "root")
                .env("LOGNAME", "root")
                .current_dir("/");
        }
        Some(uid) => {
            let home = root.join(home.trim_start_matches('/'));
            command
                .env("HOME", &home)
                .env("USER", name)
                .env("LOGNAME", name)
                .current_dir(&home)
                .uid(uid)
                .gid(uid);
        }
    }
    command.envs(&request.env);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let stdout = child.stdout.take().expect("invariant: stdout is piped");
    let stderr = child.stderr.take().expect("invariant: stderr is piped");
    let id = request.id;
    let mut pumps = tokio::task::JoinSet::new();
    pumps.spawn(pump(id, OutputStream::Stdout, stdout, out.clone()));
    pumps.spawn(pump(id, OutputStream::Stderr, stderr, out.clone()));
    let status = child
        .wait()
        .await
        .with_context(|| format!("waiting for {}", path.display()))?;
    let drained = async { while pumps.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_AFTER_EXIT, drained)
        .await
        .is_err()
    {
        tracing::debug!(
            id,
            "a process the script left running holds its output open; not waiting for it"
        );
        pumps.abort_all();
    }
    Ok(exit_code(status))
}

/// Exit code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// Forwards one output stream in chunks of at most [`MAX_SCRIPT_CHUNK`].
async fn pump(
    id: u64,
    stream: OutputStream,
    mut reader: impl AsyncRead + Unpin,
    out: mpsc::Sender<GuestToHost>,
) {
    let mut buf = vec![0u8; MAX_SCRIPT_CHUNK];
    // Bytes of a UTF-8 sequence cut at the end of the previous read.
    let mut pending = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let cut = utf8_boundary(&pending);
        let rest = pending.split_off(cut);
        let data = String::from_utf8_lossy(&pending).into_owned();
        pending = rest;
        if !data.is_empty() && out.send(output(id, stream, data)).await.is_err() {
            return;
        }
    }
    if !pending.is_empty() {
        let data = String::from_utf8_lossy(&pending).into_owned();
        let _ = out.send(output(id, stream, data)).await;
    }
}

fn output(id: u64, stream: OutputStream, data: String) -> GuestToHost {
    GuestToHost::ScriptOutput { id, stream, data }
}

/// Length of the longest prefix of `bytes` that does not end inside a
/// UTF-8 sequence (invalid bytes count as complete: they become U+FFFD).
fn utf8_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0xC0 != 0x80 {
            // A lead byte: is its sequence complete?
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if need > back { len - back } else { len };
        }
    }
    len
}

fn write_script(dir: &Path, id: u64, script: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("script-{id}.sh"));
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    // Readable and runnable by the guest user; it carries no secrets (the
    // environment is passed to the process, not written here).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))?;
    Ok(path)
}

/// Adds [`GUEST_USER`] to `<root>/etc/passwd` and `<root>/etc/group` when
/// missing and creates its home (owned by it). Idempotent.
pub(super) fn ensure_guest_user(root: &Path) -> Result<()> {
    let (name, id, home) = GUEST_USER;
    let etc = root.join("etc");
    let passwd = etc.join("passwd");
    let group = etc.join("group");
    append_entry(
        &passwd,
        name,
        &format!("{name}:x:{id}:{id}:berth:{home}:/bin/sh\n"),
    )?;
    append_entry(&group, name, &format!("{name}:x:{id}:\n"))?;
    let home = root.join(home.trim_start_matches('/'));
    if !home.is_dir() {
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        std::os::unix::fs::chown(&home, Some(id), Some(id))
            .with_context(|| format!("giving {} to {name}", home.display()))?;
    }
    Ok(())
}

/// Appends `entry` to the colon-separated database `path` unless a line for
/// `name` is already there.
fn append_entry(path: &Path, name: &str, entry: &str) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    if text.lines().any(|l| l.split(':').next() == Some(name)) {
        return Ok(());
    }
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(entry);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(script: &str, env: &[(&str, &str)]) -> Request {
        Request {
            id: 9,
            mode: ScriptMode::System,
            script: script.into(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Runs `request` and returns (stdout, stderr, the final message).
    async fn collect(request: Request) -> (String, String, GuestToHost) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        run(request, dir.path(), Path::new("/"), tx).await;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut last = None;
        while let Some(msg) = rx.recv().await {
            match msg {
                GuestToHost::ScriptOutput {
                    id: 9,
                    stream: OutputStream::Stdout,
                    data,
                } => stdout.push_str(&data),
                GuestToHost::ScriptOutput {
                    id: 9,
                    stream: OutputStream::Stderr,
                    data,
                } => stderr.push_str(&data),
                other => last = Some(other),
            }
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the script file is removed"
        );
        (stdout, stderr, last.expect("a ScriptExited"))
    }

    #[tokio::test]
    async fn script_output_env_and_exit_code_reach_the_host() {
        let (stdout, stderr, exited) = collect(request(
            "echo \"out $GREETING\"\necho err >&2\nexit 3\n",
            &[("GREETING", "hi")],
        ))
        .await;
        assert_eq!(stdout, "out hi\n");
        assert_eq!(stderr, "err\n");
        assert_eq!(
            exited,
            GuestToHost::ScriptExited {
                id: 9,
                code: 3,
                error: None
            }
        );
    }

    #[tokio::test]
    async fn scripts_without_a_shebang_run_with_errexit_and_nounset() {
        let (_, stderr, exited) = collect(request("false\necho not reached\n", &[])).await;
        assert!(matches!(exited, GuestToHost::ScriptExited { code: 1, .. }));
        assert_eq!(stderr, "");
        let (_, stderr, exited) = collect(request("echo \"$UNSET_VAR\"\n", &[])).await;
        assert!(matches!(exited, GuestToHost::ScriptExited { code: 2, .. }));
        assert!(stderr.contains("UNSET_VAR"), "{stderr}");
    }

    #[tokio::test]
    async fn a_shebang_script_runs_its_interpreter() {
        let (stdout, _, exited) =
            collect(request("#!/bin/sh\necho \"$0\" | grep -c script-9\n", &[])).await;
        assert_eq!(stdout, "1\n");
        assert!(matches!(exited, GuestToHost::ScriptExited { code: 0, .. }));
    }

    #[tokio::test]
    async fn a_missing_interpreter_is_reported_with_code_127() {
        let (_, _, exited) = collect(request("#!/nonexistent/interp\n", &[])).await;
        let GuestToHost::ScriptExited { code, error, .. } = exited else {
            panic!("{exited:?}");
        };
        assert_eq!(code, 127);
        assert!(error.unwrap().contains("starting"));
    }

    #[tokio::test]
    async fn a_background_process_holding_the_pipe_does_not_block_the_reply() {
        let started = std::time::Instant::now();
        let (stdout, _, exited) = collect(request("echo up\nsleep 5 &\n", &[])).await;
        assert_eq!(stdout, "up\n");
        assert!(matches!(exited, GuestToHost::ScriptExited { code: 0, .. }));
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn utf8_boundary_keeps_cut_sequences_for_the_next_read() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(utf8_boundary(b"ab"), 2);
        assert_eq!(utf8_boundary(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(utf8_boundary(&[b'a', euro[0], euro[1], euro[2]]), 4);
        assert_eq!(utf8_boundary(&[0xff]), 1);
    }

    #[test]
    fn ensure_guest_user_adds_entries_once() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh",
        )
        .unwrap();
        // chown needs root; pre-create the home so only the databases change.
        std::fs::create_dir_all(root.path().join("home/berth")).unwrap();
        ensure_guest_user(root.path()).unwrap();
        ensure_guest_user(root.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/passwd")).unwrap(),
            "root:x:0:0:root:/root:/bin/sh\nberth:x:1000:1000:berth:/home/berth:/bin/sh\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/group")).unwrap(),
            "berth:x:1000:\n"
        );
    }
}
