//! `/containers/{id}/exec` and `/exec/{id}/...`.

use std::collections::HashMap;

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::containers::{json_body, size_params};
use crate::stream::{Hijacked, STDERR, STDOUT, frame, hijack};

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
    let exec_id = state.engine.create_exec(&id, config)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "Id": exec_id }))).into_response())
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
    let tty = exec.config.tty || body.tty;
    let started = state.engine.start_exec(&id).await?;
    if body.detach {
        return match started {
            Ok(_) => Ok(StatusCode::OK.into_response()),
            Err(err) => Err(ApiError::bad_request(err.message)),
        };
    }
    let attach_stdout = exec.config.attach_stdout;
    let attach_stderr = exec.config.attach_stderr;
    Ok(hijack(&mut request, tty, move |io| async move {
        match started {
            Ok(exec_io) => pump(io, exec_io, tty, attach_stdout, attach_stderr).await,
            Err(err) => {
                // dockerd reports a failed exec on the stream; the client then
                // reads the exit code (126/127) from inspect.
                let (_, mut writer) = tokio::io::split(io);
                let message = format!("OCI runtime exec failed: {}\n", err.message);
                let bytes = if tty {
                    message.into_bytes()
                } else {
                    frame(STDERR, message.as_bytes())
                };
                let _ = writer.write_all(&bytes).await;
                let _ = writer.shutdown().await;
            }
        }
    }))
}

/// Copies the exec's output to the client (and the client's input to the
/// exec) until the process exits and its exit code is recorded.
async fn pump(io: Hijacked, exec_io: ExecIo, tty: bool, attach_stdout: bool, attach_stderr: bool) {
    let (mut reader, writer) = tokio::io::split(io);
    let writer = std::sync::Arc::new(tokio::sync::Mutex::new(writer));
    let ExecIo {
        stdin,
        outputs,
        mut done,
    } = exec_io;
    let input = tokio::spawn(async move {
        let Some(mut stdin) = stdin else { return };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping stdin closes the exec's input.
    });
    let mut copies = Vec::new();
    for (stream, mut output) in outputs {
        let writer = writer.clone();
        let wanted = match stream {
            Stream::Stdout => attach_stdout || tty,
            Stream::Stderr => attach_stderr,
        };
        copies.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match output.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if wanted => {
                        let bytes = match (tty, stream) {
                            (true, _) => buf[..n].to_vec(),
                            (false, Stream::Stdout) => frame(STDOUT, &buf[..n]),
                            (false, Stream::Stderr) => frame(STDERR, &buf[..n]),
                        };
                        if writer.lock().await.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    for copy in copies {
        let _ = copy.await;
    }
    let _ = done.wait_for(|s| s.exit_code.is_some()).await;
    input.abort();
    let _ = writer.lock().await.shutdown().await;
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
