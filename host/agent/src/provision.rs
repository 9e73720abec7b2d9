//! Provisioning scripts and readiness probes, run over the control channel
//! once the guest is `Ready` (and on every boot: scripts must be idempotent).
//!
//! 1. Each `provision` script of the instance's template runs in order
//!    (`RunScript`); its output streams, line by line, into the start
//!    progress and the host agent log. The first script that exits non-zero
//!    stops the sequence: [`Error::Script`] carries its exit code and the
//!    tail of its output.
//! 2. Each probe then runs until it exits 0, every [`PROBE_INTERVAL`], for
//!    at most the probe timeout; [`Error::Probe`] carries the probe's hint
//!    and its last output.
//!
//! The template's `env` is the environment of both.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use berth_proto::{GuestToHost, HostToGuest, OutputStream, ScriptMode};
use berth_template::{ProvisionMode, Template};

use crate::control::ControlChannel;

/// Pause between two runs of a failing probe.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Lines of a failed script's output kept for the error.
const TAIL_LINES: usize = 40;

/// What to run after boot, taken from a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub env: BTreeMap<String, String>,
    pub provision: Vec<(ScriptMode, String)>,
    pub probes: Vec<Probe>,
}

/// A readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub script: String,
    pub hint: Option<String>,
}

impl Plan {
    pub fn from_template(template: &Template) -> Self {
        Self {
            env: template.env.clone(),
            provision: template
                .provision
                .iter()
                .map(|p| {
                    let mode = match p.mode {
                        ProvisionMode::System => ScriptMode::System,
                        ProvisionMode::User => ScriptMode::User,
                    };
                    (mode, p.script.clone())
                })
                .collect(),
            probes: template
                .probes
                .iter()
                .map(|p| Probe {
                    script: p.script.clone(),
                    hint: p.hint.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.provision.is_empty() && self.probes.is_empty()
    }
}

/// Why provisioning did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("provision script {number} ({mode}) {outcome}{}", output_section(.output))]
    Script {
        /// 1-based, in template order.
        number: usize,
        mode: &'static str,
        /// "exited with code 3" or why it could not start.
        outcome: String,
        output: Vec<String>,
    },
    #[error("probe {number} did not succeed within {} s{}\nlast output:{}", .timeout.as_secs(), hint_section(.hint.as_deref()), last_output(.output))]
    Probe {
        number: usize,
        timeout: Duration,
        hint: Option<String>,
        output: Vec<String>,
    },
    #[error("control channel failed while running scripts")]
    Channel(#[source] anyhow::Error),
}

fn output_section(output: &[String]) -> String {
    if output.is_empty() {
        " (no output)".to_owned()
    } else {
        format!(":\n{}", output.join("\n"))
    }
}

fn last_output(output: &[String]) -> String {
    if output.is_empty() {
        " (none)".to_owned()
    } else {
        format!("\n{}", output.join("\n"))
    }
}

fn hint_section(hint: Option<&str>) -> String {
    hint.map(|h| format!("\nhint: {}", h.trim_end()))
        .unwrap_or_default()
}

/// How a script ended, with the tail of its output.
#[derive(Debug)]
struct Finished {
    code: i32,
    error: Option<String>,
    tail: Vec<String>,
}

/// Runs `plan` on `control`. `progress` receives one line per event (script
/// started, each line of provisioning output, probe waiting).
pub async fn run(
    control: &mut ControlChannel,
    plan: &Plan,
    probe_timeout: Duration,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), Error> {
    let mut ids = 0u64..;
    let total = plan.provision.len();
    for (index, (mode, script)) in plan.provision.iter().enumerate() {
        let number = index + 1;
        let mode_name = mode_name(*mode);
        progress(format!(
            "provisioning: script {number} of {total} ({mode_name})"
        ));
        let id = ids.next().expect("invariant: ids are unbounded");
        let finished = run_script(control, id, *mode, script, &plan.env, &mut |line| {
            tracing::info!(script = number, "{line}");
            progress(format!("provision {number}: {line}"));
        })
        .await
        .map_err(Error::Channel)?;
        if finished.code != 0 || finished.error.is_some() {
            return Err(Error::Script {
                number,
                mode: mode_name,
                outcome: outcome(&finished),
                output: finished.tail,
            });
        }
    }
    let total = plan.probes.len();
    for (index, probe) in plan.probes.iter().enumerate() {
        let number = index + 1;
        progress(format!("waiting for probe {number} of {total}"));
        let deadline = tokio::time::Instant::now() + probe_timeout;
        loop {
            let id = ids.next().expect("invariant: ids are unbounded");
            let finished = run_script(
                control,
                id,
                ScriptMode::System,
                &probe.script,
                &plan.env,
                &mut |line| tracing::debug!(probe = number, "{line}"),
            )
            .await
            .map_err(Error::Channel)?;
            if finished.code == 0 && finished.error.is_none() {
                tracing::info!(probe = number, "probe succeeded");
                break;
            }
            tracing::info!(probe = number, "{}; retrying", outcome(&finished));
            if tokio::time::Instant::now() + PROBE_INTERVAL > deadline {
                let mut output = finished.tail;
                if let Some(error) = finished.error {
                    output.push(error);
                }
                return Err(Error::Probe {
                    number,
                    timeout: probe_timeout,
                    hint: probe.hint.clone(),
                    output,
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    Ok(())
}

fn mode_name(mode: ScriptMode) -> &'static str {
    match mode {
        ScriptMode::System => "system",
        ScriptMode::User => "user",
    }
}

fn outcome(finished: &Finished) -> String {
    match &finished.error {
        Some(error) => format!("could not run: {error}"),
        None => format!("exited with code {}", finished.code),
    }
}

/// Sends one `RunScript` and collects its output until `ScriptExited`.
/// Every complete line (stdout and stderr alike) goes to `on_line`.
async fn run_script(
    control: &mut ControlChannel,
    id: u64,
    mode: ScriptMode,
    script: &str,
    env: &BTreeMap<String, String>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Finished> {
    control
        .send(&HostToGuest::RunScript {
            id,
            mode,
            script: script.to_owned(),
            env: env.clone(),
        })
        .await?;
    let mut lines = Lines::default();
    loop {
        match control.read_next().await? {
            GuestToHost::ScriptOutput {
                id: got,
                stream,
                data,
            } if got == id => lines.push(stream, &data, on_line),
            GuestToHost::ScriptExited {
                id: got,
                code,
                error,
            } if got == id => {
                lines.flush(on_line);
                return Ok(Finished {
                    code,
                    error,
                    tail: lines.tail.into(),
                });
            }
            GuestToHost::ShuttingDown => anyhow::bail!("the guest is shutting down"),
            // Ports and watch requests are served once provisioning is done.
            other => control.defer(other),
        }
    }
}

/// Splits output chunks into lines, per stream, keeping the last
/// [`TAIL_LINES`].
#[derive(Default)]
struct Lines {
    stdout: String,
    stderr: String,
    tail: VecDeque<String>,
}

impl Lines {
    fn push(&mut self, stream: OutputStream, data: &str, on_line: &mut (dyn FnMut(&str) + Send)) {
        let buf = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        buf.push_str(data);
        let mut complete = Vec::new();
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            complete.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        for line in complete {
            self.emit(line, on_line);
        }
    }

    fn flush(&mut self, on_line: &mut (dyn FnMut(&str) + Send)) {
        for rest in [
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        ] {
            if !rest.is_empty() {
                self.emit(rest, on_line);
            }
        }
    }

    fn emit(&mut self, line: String, on_line: &mut (dyn FnMut(&str) + Send)) {
        on_line(&line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use berth_proto::PROTOCOL_VERSION;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    /// A guest that answers the handshake, then each `RunScript` with what
    /// `reply` returns for (script, env, attempt of that script).
    async fn fake_guest(
        mut stream: UnixStream,
        reply: impl Fn(&str, &BTreeMap<String, String>, usize) -> Vec<GuestToHost>,
        seen: Arc<Mutex<Vec<(ScriptMode, String)>>>,
    ) {
        let mut buf = Vec::new();
        let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
        let send = |msg: GuestToHost| berth_proto::encode(&msg);
        let mut hello_done = false;
        loop {
            let msg: HostToGuest = loop {
                if let Some((msg, used)) = berth_proto::decode(&buf).unwrap() {
                    buf.drain(..used);
                    break msg;
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            match msg {
                HostToGuest::Hello { .. } if !hello_done => {
                    hello_done = true;
                    for m in [
                        GuestToHost::Hello {
                            version: PROTOCOL_VERSION,
                            agent: "test".into(),
                        },
                        GuestToHost::Ready,
                    ] {
                        stream.write_all(&send(m)).await.unwrap();
                    }
                }
                HostToGuest::RunScript {
                    id,
                    mode,
                    script,
                    env,
                } => {
                    seen.lock().unwrap().push((mode, script.clone()));
                    let attempt = attempts.entry(script.clone()).or_default();
                    *attempt += 1;
                    for mut m in reply(&script, &env, *attempt) {
                        match &mut m {
                            GuestToHost::ScriptOutput { id: i, .. }
                            | GuestToHost::ScriptExited { id: i, .. } => *i = id,
                            _ => {}
                        }
                        stream.write_all(&send(m)).await.unwrap();
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn out(stream: OutputStream, data: &str) -> GuestToHost {
        GuestToHost::ScriptOutput {
            id: 0,
            stream,
            data: data.into(),
        }
    }

    fn exited(code: i32) -> GuestToHost {
        GuestToHost::ScriptExited {
            id: 0,
            code,
            error: None,
        }
    }

    struct Run {
        result: Result<(), Error>,
        progress: Vec<String>,
        seen: Vec<(ScriptMode, String)>,
    }

    async fn run_plan(
        plan: Plan,
        probe_timeout: Duration,
        reply: impl Fn(&str, &BTreeMap<String, String>, usize) -> Vec<GuestToHost> + Send + 'static,
    ) -> Run {
        let (host, guest) = UnixStream::pair().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fake_guest(guest, reply, seen.clone()));
        let (mut control, _) = ControlChannel::handshake(host).await.unwrap();
        let mut progress = Vec::new();
        let result = run(&mut control, &plan, probe_timeout, &mut |line| {
            progress.push(line);
        })
        .await;
        let seen = seen.lock().unwrap().clone();
        Run {
            result,
            progress,
            seen,
        }
    }

    fn plan(provision: &[(ScriptMode, &str)], probes: &[(&str, Option<&str>)]) -> Plan {
        Plan {
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            provision: provision
                .iter()
                .map(|(m, s)| (*m, (*s).to_owned()))
                .collect(),
            probes: probes
                .iter()
                .map(|(s, h)| Probe {
                    script: (*s).to_owned(),
                    hint: h.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn scripts_run_in_order_with_env_and_their_lines_reach_progress() {
        let run = run_plan(
            plan(
                &[(ScriptMode::System, "one"), (ScriptMode::User, "two")],
                &[],
            ),
            Duration::from_secs(1),
            |script, env, _| {
                vec![
                    // A line split across chunks, and one on stderr.
                    out(
                        OutputStream::Stdout,
                        &format!("{script} {}", env["GREETING"]),
                    ),
                    out(OutputStream::Stderr, "warn\n"),
                    out(OutputStream::Stdout, " done\nno newline"),
                    exited(0),
                ]
            },
        )
        .await;
        run.result.unwrap();
        assert_eq!(
            run.seen,
            vec![
                (ScriptMode::System, "one".to_owned()),
                (ScriptMode::User, "two".to_owned())
            ]
        );
        assert_eq!(
            run.progress,
            vec![
                "provisioning: script 1 of 2 (system)",
                "provision 1: warn",
                "provision 1: one hi done",
                "provision 1: no newline",
                "provisioning: script 2 of 2 (user)",
                "provision 2: warn",
                "provision 2: two hi done",
                "provision 2: no newline",
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_script_stops_the_sequence_with_its_code_and_output() {
        let run = run_plan(
            plan(
                &[(ScriptMode::System, "bad"), (ScriptMode::System, "never")],
                &[("probe", None)],
            ),
            Duration::from_secs(1),
            |_, _, _| vec![out(OutputStream::Stderr, "disk full\n"), exited(3)],
        )
        .await;
        let err = run.result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "provision script 1 (system) exited with code 3:\ndisk full"
        );
        assert_eq!(run.seen.len(), 1, "nothing runs after a failure");
    }

    #[tokio::test]
    async fn a_script_that_cannot_start_is_a_failure() {
        let run = run_plan(
            plan(&[(ScriptMode::User, "x")], &[]),
            Duration::from_secs(1),
            |_, _, _| {
                vec![GuestToHost::ScriptExited {
                    id: 0,
                    code: 127,
                    error: Some("starting /run/x: no such file".into()),
                }]
            },
        )
        .await;
        assert_eq!(
            run.result.unwrap_err().to_string(),
            "provision script 1 (user) could not run: starting /run/x: no such file (no output)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_is_retried_until_it_succeeds() {
        let run = run_plan(
            plan(&[], &[("probe", None)]),
            Duration::from_secs(60),
            |_, _, attempt| vec![exited(if attempt < 3 { 1 } else { 0 })],
        )
        .await;
        run.result.unwrap();
        assert_eq!(run.seen.len(), 3);
        assert_eq!(run.progress, vec!["waiting for probe 1 of 1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_keeps_failing_reports_its_hint_and_last_output() {
        let run = run_plan(
            plan(&[], &[("probe", Some("check the service log\n"))]),
            Duration::from_secs(5),
            |_, _, attempt| {
                vec![
                    out(OutputStream::Stdout, &format!("attempt {attempt}\n")),
                    exited(1),
                ]
            },
        )
        .await;
        assert_eq!(
            run.result.unwrap_err().to_string(),
            "probe 1 did not succeed within 5 s\nhint: check the service log\nlast output:\nattempt 3"
        );
    }

    #[test]
    fn plan_from_template_keeps_order_modes_and_env() {
        let template: Template = berth_template::load::parse(
            "t.yaml",
            "env: {A: b}\nprovision:\n  - {mode: user, script: u}\n  - {mode: system, script: s}\nprobes:\n  - {script: p, hint: h}\n",
        )
        .unwrap();
        assert_eq!(
            Plan::from_template(&template),
            Plan {
                env: BTreeMap::from([("A".into(), "b".into())]),
                provision: vec![
                    (ScriptMode::User, "u".into()),
                    (ScriptMode::System, "s".into())
                ],
                probes: vec![Probe {
                    script: "p".into(),
                    hint: Some("h".into())
                }],
            }
        );
    }
}
