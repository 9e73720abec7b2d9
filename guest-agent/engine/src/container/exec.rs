//! `docker exec`: extra processes inside a running container.
//!
//! An exec joins the namespaces and cgroup of the container's init through
//! the exec helper (see `runtime`). Its output is not logged: it goes only
//! to the client that started it. The exit code is recorded before the
//! output streams are reported finished, so a client that inspects the exec
//! right after its stream ends sees the code.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::io::Stream;
use super::{DEFAULT_PATH, merge_env, open_stdio, set_window_size};
use crate::runtime::{self, ExecSpec, ProcessSpec, StartError};
use crate::{Engine, Error, Result};

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    #[serde(default)]
    pub attach_stdin: bool,
    #[serde(default)]
    pub attach_stdout: bool,
    #[serde(default)]
    pub attach_stderr: bool,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub privileged: bool,
    /// `detachKeys` as docker-py sends it (dockerd reads JSON keys
    /// case-insensitively); empty means ctrl-p,ctrl-q.
    #[serde(default, alias = "detachKeys")]
    pub detach_keys: String,
}

/// Observable state of an exec.
#[derive(Debug, Clone, Default)]
pub struct ExecState {
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i32>,
    pub pid: i32,
}

/// One exec instance.
#[derive(Debug)]
pub struct ExecEntry {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    state: watch::Sender<ExecState>,
    pty: Mutex<Option<Arc<OwnedFd>>>,
}

impl ExecEntry {
    pub fn state(&self) -> ExecState {
        self.state.borrow().clone()
    }
}

/// The engine's ends of a started exec's stdio.
pub struct ExecIo {
    pub stdin: Option<pipe::Sender>,
    pub outputs: Vec<(Stream, pipe::Receiver)>,
    /// Resolves (to the exit code) once the process has exited and its exit
    /// code is recorded.
    pub done: watch::Receiver<ExecState>,
}

/// All exec instances.
#[derive(Debug, Default)]
pub struct Execs {
    by_id: Mutex<HashMap<String, Arc<ExecEntry>>>,
}

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecEntry>>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Result<Arc<ExecEntry>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NoSuchExec(id.to_owned()))
    }
}

impl Engine {
    /// Registers an exec in a running container.
    pub fn create_exec(&self, container: &str, config: ExecConfig) -> Result<String> {
        let entry = self.container(container)?;
        if entry.running_pid().is_none() {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                entry.id()
            )));
        }
        if entry.snapshot().state.status == super::Status::Paused {
            return Err(Error::Conflict(format!(
                "container {} is paused, unpause the container before exec",
                entry.id()
            )));
        }
        if config.cmd.is_empty() {
            return Err(Error::InvalidArgument("no exec command specified".into()));
        }
        let id = super::new_id();
        let (state, _) = watch::channel(ExecState::default());
        let exec = Arc::new(ExecEntry {
            id: id.clone(),
            container_id: entry.id(),
            config,
            state,
            pty: Mutex::new(None),
        });
        self.execs.lock().insert(id.clone(), exec);
        Ok(id)
    }

    /// Looks up an exec instance.
    pub fn exec(&self, id: &str) -> Result<Arc<ExecEntry>> {
        self.execs.get(id)
    }

    /// Starts an exec. On a start failure the exec is marked exited with
    /// Docker's code (126/127) and the error is returned for the client.
    pub async fn start_exec(&self, id: &str) -> Result<std::result::Result<ExecIo, StartError>> {
        let exec = self.execs.get(id)?;
        if exec.state().started {
            return Err(Error::Conflict(format!(
                "exec {id} has already been started"
            )));
        }
        let container = self.container(&exec.container_id)?;
        let record = container.snapshot();
        let Some(target_pid) = container.running_pid() else {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                record.id
            )));
        };
        exec.state.send_modify(|s| s.started = true);
        let config = &exec.config;
        let mut env = merge_env(
            &record.config.env,
            config.env.as_deref().unwrap_or_default(),
        );
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let mut host = record.host_config.clone();
        host.privileged |= config.privileged;
        let capabilities = super::capabilities(&host)?;
        let confinement = runtime::confinement(&host, &capabilities)?;
        let spec = ExecSpec {
            target_pid,
            cgroup_procs: self.cgroups.procs_files(&record.id),
            process: ProcessSpec {
                args: config.cmd.clone(),
                env,
                cwd: [&config.working_dir, &record.config.working_dir]
                    .into_iter()
                    .find(|d| !d.is_empty())
                    .cloned()
                    .unwrap_or_else(|| "/".into()),
                user: if config.user.is_empty() {
                    record.config.user.clone()
                } else {
                    config.user.clone()
                },
                additional_groups: record.host_config.group_add.clone(),
                tty: config.tty,
                capabilities,
                no_new_privileges: confinement.no_new_privileges,
                seccomp: confinement.seccomp,
            },
        };
        let spec_path = container.dir().join(format!("exec-{id}.json"));
        super::write_atomic(&spec_path, &serde_json::to_vec(&spec).unwrap_or_default())?;
        let (stdio, io) = open_stdio(config.tty, config.attach_stdin)?;
        let started = runtime::start(&self.helper, runtime::EXEC_ARG, &spec_path, stdio).await;
        let _ = std::fs::remove_file(&spec_path);
        let mut started = match started {
            Ok(started) => started,
            Err(err) => {
                exec.state.send_modify(|s| {
                    s.exit_code = Some(err.code);
                    s.running = false;
                });
                return Ok(Err(err));
            }
        };
        *exec
            .pty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = io.pty.clone();
        exec.state.send_modify(|s| {
            s.running = true;
            s.pid = started.pid;
        });
        let done = exec.state.subscribe();
        let exec_for_wait = exec.clone();
        tokio::spawn(async move {
            let code = match started.helper.wait().await {
                Ok(status) => status.code().unwrap_or(255),
                Err(_) => 255,
            };
            *exec_for_wait
                .pty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            exec_for_wait.state.send_modify(|s| {
                s.running = false;
                s.exit_code = Some(code);
            });
        });
        Ok(Ok(ExecIo {
            stdin: io.stdin,
            outputs: io.outputs,
            done,
        }))
    }

    /// Sets the terminal size of an exec's TTY.
    pub fn resize_exec(&self, id: &str, height: u16, width: u16) -> Result<()> {
        let exec = self.execs.get(id)?;
        let pty = exec
            .pty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match pty {
            Some(pty) => set_window_size(&pty, height, width),
            None => Err(Error::Conflict(format!(
                "exec {id} has no TTY or is not running"
            ))),
        }
    }
}
