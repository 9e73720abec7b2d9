//! `/containers/{id}/exec` and `/exec/{id}/...`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_engine::container::exec::{ExecConfig, ExecIo};
use berth_engine::container::io::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::containers::{json_body, size_params};
use crate::stream::{DetachScanner, Hijacked, STDERR, STDOUT, frame, hijack, parse_detach_keys};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let config: ExecConfig = json_body(&body)?;
    detach_keys_of(&config)?;
    let exec_id = state.engine.create_exec(&id, config)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "Id": exec_id }))).into_response())
}

/// The exec's detach sequence (ctrl-p ctrl-q unless `DetachKeys` is set).
fn detach_keys_of(config: &ExecConfig) -> ApiResult<Vec<u8>> {
    parse_detach_keys(&config.detach_keys).map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid escape keys ({}) provided",
            config.detach_keys
        ))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartBody {
    #[serde(default)]
    detach: bool,
    #[serde(default)]
    tty: bool,
}

async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut request: Request,
) -> ApiResult<Response> {
    let body = axum::body::to_bytes(std::mem::take(request.body_mut()), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let body: StartBody = json_body(&body)?;
    let exec = state.engine.exec(&id)?;
    // As in dockerd, the start request's `Tty` decides the framing: a TTY
    // exec started with `Tty: false` is still multiplexed (its one output
    // stream framed as stdout).
    let framed = !body.tty;
    // Detach keys apply to a TTY exec's input only, as in dockerd.
    let detach_keys = if exec.config.tty {
        Some(detach_keys_of(&exec.config)?)
    } else {
        None
    };
    if body.detach {
        return match state.engine.start_exec(&id).await? {
            Ok(exec_io) => {
                // Nobody reads a detached exec's output: drain it so the
                // process never blocks on a full pipe.
                tokio::spawn(drain(exec_io));
                Ok(StatusCode::OK.into_response())
            }
            Err(err) => Err(ApiError::bad_request(err.message)),
        };
    }
    // What would refuse the start is answered before the stream begins.
    if exec.state().started {
        return Err(
            berth_engine::Error::Conflict(format!("exec {id} has already been started")).into(),
        );
    }
    let container = state.engine.container(&exec.container_id)?;
    if container.snapshot().state.status != berth_engine::container::Status::Running {
        return Err(berth_engine::Error::Conflict(format!(
            "container {} is not running",
            exec.container_id
        ))
        .into());
    }
    let wanted = Wanted {
        stdout: exec.config.attach_stdout,
        stderr: exec.config.attach_stderr,
        tty: exec.config.tty,
    };
    let engine = state.engine.clone();
    Ok(hijack(&mut request, !framed, move |io| async move {
        // The process starts once the response head is out (as in dockerd),
        // so its first output never shares a read with the head: clients
        // (docker-py) parse the head with a buffered reader and then read
        // the raw socket, and would lose what the buffer took.
        let message = match engine.start_exec(&id).await {
            Ok(Ok(exec_io)) => return pump(io, exec_io, framed, wanted, detach_keys).await,
            // dockerd reports a failed exec on the stream; the client then
            // reads the exit code (126/127) from inspect.
            Ok(Err(err)) => format!("OCI runtime exec failed: {}\n", err.message),
            Err(err) => format!("{}\n", ApiError::from(err).message),
        };
        let mut writer = io.writer;
        let bytes = if framed {
            frame(STDERR, message.as_bytes())
        } else {
            message.into_bytes()
        };
        if let Err(err) = writer.write_all(&bytes).await {
            tracing::debug!(error = %err, "exec client went away before the error");
        }
        let _ = writer.shutdown().await;
    }))
}

/// Which of an exec's outputs the client asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdout: bool,
    stderr: bool,
    /// The exec has a TTY: its one output is the terminal.
    tty: bool,
}

impl Wanted {
    fn stream(self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout || self.tty,
            Stream::Stderr => self.stderr,
        }
    }
}

/// Reads a detached exec's outputs to the end.
async fn drain(exec_io: ExecIo) {
    let ExecIo { stdin, outputs, .. } = exec_io;
    let mut copies = Vec::new();
    for (_, mut output) in outputs {
        copies.push(tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut output, &mut sink).await;
        }));
    }
    for copy in copies {
        let _ = copy.await;
    }
    drop(stdin);
}

/// The client's side of the connection, gone once it detached or failed.
type SharedWriter = Arc<tokio::sync::Mutex<Option<Pin<Box<dyn AsyncWrite + Send>>>>>;

/// How the client's input ended.
enum InputEnd {
    /// Half-closed (or failed): the exec's stdin is closed.
    Eof,
    /// The detach sequence: the exec keeps its stdin and runs on.
    Detached(Option<pipe::Sender>),
}

/// Copies the exec's output to the client (and the client's input to the
/// exec) until the process exits and its exit code is recorded, or the
/// client detaches. After a detach the output is still read (and
/// dropped), so the process never blocks on it.
async fn pump(
    io: Hijacked,
    exec_io: ExecIo,
    framed: bool,
    wanted: Wanted,
    detach_keys: Option<Vec<u8>>,
) {
    let Hijacked { mut reader, writer } = io;
    let writer: SharedWriter = Arc::new(tokio::sync::Mutex::new(Some(writer)));
    let ExecIo {
        stdin,
        outputs,
        mut done,
    } = exec_io;
    let mut copies = Vec::new();
    for (stream, mut output) in outputs {
        let writer = writer.clone();
        let wanted = wanted.stream(stream);
        copies.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match output.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if !wanted {
                    continue;
                }
                let bytes = match (framed, stream) {
                    (false, _) => buf[..n].to_vec(),
                    (true, Stream::Stdout) => frame(STDOUT, &buf[..n]),
                    (true, Stream::Stderr) => frame(STDERR, &buf[..n]),
                };
                let mut guard = writer.lock().await;
                if let Some(client) = guard.as_mut()
                    && client.write_all(&bytes).await.is_err()
                {
                    // The client went away; keep reading so the process
                    // does not block.
                    *guard = None;
                }
            }
        }));
    }
    let input = async move {
        let Some(mut stdin) = stdin else {
            return InputEnd::Eof;
        };
        let mut scanner = detach_keys.map(DetachScanner::new);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return InputEnd::Eof,
                Ok(n) => n,
            };
            let (bytes, detached) = match scanner.as_mut() {
                Some(scanner) => {
                    let scanned = scanner.feed(&buf[..n]);
                    (scanned.forward, scanned.detached)
                }
                None => (buf[..n].to_vec(), false),
            };
            if stdin.write_all(&bytes).await.is_err() {
                return InputEnd::Eof;
            }
            if detached {
                return InputEnd::Detached(Some(stdin));
            }
        }
        // Dropping stdin closes the exec's input.
    };
    let output = async {
        for copy in copies {
            let _ = copy.await;
        }
        let _ = done.wait_for(|s| s.exit_code.is_some()).await;
    };
    tokio::pin!(input);
    tokio::pin!(output);
    let detached = tokio::select! {
        () = &mut output => None,
        end = &mut input => match end {
            InputEnd::Eof => {
                (&mut output).await;
                None
            }
            InputEnd::Detached(stdin) => Some(stdin),
        },
    };
    if let Some(client) = writer.lock().await.take() {
        let mut client = client;
        let _ = client.shutdown().await;
    }
    if let Some(stdin) = detached {
        // The client is gone; the exec runs on with its input open, and its
        // output is read to the end by the copy tasks.
        (&mut output).await;
        drop(stdin);
    }
}

async fn resize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let (height, width) = size_params(&query)?;
    state.engine.resize_exec(&id, height, width)?;
    Ok(StatusCode::OK)
}

async fn inspect(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let exec = state.engine.exec(&id)?;
    let s = exec.state();
    let config = &exec.config;
    Ok(axum::Json(json!({
        "ID": exec.id,
        "ContainerID": exec.container_id,
        "Running": s.running,
        "ExitCode": s.exit_code,
        "Pid": s.pid,
        "OpenStdin": config.attach_stdin,
        "OpenStdout": config.attach_stdout,
        "OpenStderr": config.attach_stderr,
        "CanRemove": false,
        "DetachKeys": config.detach_keys,
        "ProcessConfig": {
            "tty": config.tty,
            "entrypoint": config.cmd.first(),
            "arguments": config.cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": config.privileged,
            "user": config.user,
        },
    }))
    .into_response())
}
