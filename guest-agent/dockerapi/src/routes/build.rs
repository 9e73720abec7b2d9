//! `POST /build` (the legacy builder), `POST /commit`,
//! `GET /containers/{id}/export`, `GET /containers/{id}/changes`, and
//! `docker import` (`POST /images/create?fromSrc=-`, routed from
//! `images.rs`).
//!
//! Build output is streamed as dockerd's legacy builder writes it: one JSON
//! object per line, `{"stream": ...}` for text, `{"aux": {"ID": ...}}` for
//! the result, and `{"errorDetail": {"message": ...}, "error": ...}` as the
//! last line when the build fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_engine::build::{BuildOptions, Message};
use berth_engine::container::commit::CommitOptions;
use berth_engine::{Engine, container};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::images::BodyReader;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/build", post(build))
        .route("/commit", post(commit))
        .route("/containers/{id}/export", get(export))
        .route("/containers/{id}/changes", get(changes))
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

fn truthy(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v, "1" | "true" | "True" | "TRUE"))
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The cause chain, `: `-separated.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

async fn build(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
    body: Body,
) -> ApiResult<Response> {
    let parse_map = |key: &str| -> ApiResult<BTreeMap<String, Option<String>>> {
        match first(&query, key).filter(|v| !v.is_empty()) {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("invalid {key} JSON: {e}"))),
            None => Ok(BTreeMap::new()),
        }
    };
    let build_args = parse_map("buildargs")?;
    let labels = parse_map("labels")?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    if first(&query, "remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(
            "remote build contexts are not supported; send the context as the request body",
        ));
    }
    let options = BuildOptions {
        dockerfile: first(&query, "dockerfile").unwrap_or_default().to_owned(),
        tags: all(&query, "t"),
        build_args,
        no_cache: truthy(first(&query, "nocache")),
        labels,
    };
    for tag in &options.tags {
        berth_engine::image::reference::Reference::parse(tag).map_err(|source| {
            ApiError::from(berth_engine::image::Error::InvalidReference {
                reference: tag.clone(),
                source,
            })
        })?;
    }
    let quiet = truthy(first(&query, "q"));
    let engine = state.engine.clone();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let context = BodyReader::spawn(body);
    tokio::spawn(async move {
        let result = engine.build(context, options, sender).await;
        let _ = done_tx.send(result.map_err(|e| chain(&e)));
    });
    let lines = futures_util::stream::unfold(
        (receiver, Some(done_rx)),
        move |(mut receiver, done)| async move {
            loop {
                match receiver.recv().await {
                    Some(Message::Stream(text)) if !quiet => {
                        return Some((
                            Ok::<_, std::io::Error>(line(&json!({ "stream": text }))),
                            (receiver, done),
                        ));
                    }
                    Some(Message::Stream(_)) => {}
                    Some(Message::Aux(id)) => {
                        let value = if quiet {
                            json!({ "stream": format!("{id}\n") })
                        } else {
                            json!({ "aux": { "ID": id } })
                        };
                        return Some((Ok(line(&value)), (receiver, done)));
                    }
                    None => break,
                }
            }
            let result = done?
                .await
                .unwrap_or_else(|_| Err("build task ended unexpectedly".to_owned()));
            let Err(message) = result else { return None };
            let value = json!({ "errorDetail": { "message": message }, "error": message });
            Some((Ok(line(&value)), (receiver, None)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// `repo` + `tag` as one reference (`None` without a repo).
fn reference(repo: Option<&str>, tag: Option<&str>) -> Option<String> {
    let repo = repo.filter(|r| !r.is_empty())?;
    Some(match tag.filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_owned(),
    })
}

async fn commit(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult<Response> {
    let container = first(&query, "container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing container: pass container=<id>"))?;
    let config: Option<container::Config> =
        if body.iter().all(u8::is_ascii_whitespace) || body.as_ref() == b"null" {
            None
        } else {
            Some(super::containers::json_body(&body)?)
        };
    let options = CommitOptions {
        reference: reference(first(&query, "repo"), first(&query, "tag")),
        comment: first(&query, "comment").unwrap_or_default().to_owned(),
        author: first(&query, "author").unwrap_or_default().to_owned(),
        changes: all(&query, "changes"),
        config,
        pause: first(&query, "pause").is_none_or(|p| truthy(Some(p))),
    };
    let id = state.engine.commit_container(container, options).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "Id": id }))).into_response())
}

/// A blocking `Write` feeding an HTTP body.
struct BodyWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn export(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let engine: Arc<Engine> = state.engine.clone();
    engine.container(&id)?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
    let writer = std::io::BufWriter::with_capacity(256 * 1024, BodyWriter(sender.clone()));
    tokio::spawn(async move {
        if let Err(err) = engine.export_container(&id, writer).await {
            tracing::warn!(container = %id, error = %chain(&err), "export failed");
            let _ = sender.send(Err(std::io::Error::other(chain(&err)))).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn changes(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let engine = state.engine.clone();
    let found = tokio::task::spawn_blocking(move || engine.container_changes(&id))
        .await
        .map_err(|e| ApiError::internal(format!("changes task failed: {e}")))??;
    let out: Vec<Value> = found
        .iter()
        .map(|c| json!({ "Path": c.path, "Kind": c.kind }))
        .collect();
    Ok(axum::Json(out).into_response())
}

/// `docker import`: `POST /images/create?fromSrc=-` with the tar as body.
pub(crate) async fn import(
    state: AppState,
    query: Vec<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let source = first(&query, "fromSrc").unwrap_or_default();
    if source != "-" {
        return Err(ApiError::bad_request(format!(
            "importing from {source:?} is not supported; pipe the tar (fromSrc=-)"
        )));
    }
    let reference = reference(first(&query, "repo"), first(&query, "tag"));
    let changes = all(&query, "changes");
    let comment = first(&query, "message").unwrap_or_default().to_owned();
    let reader = BodyReader::spawn(body);
    let engine = state.engine.clone();
    let id = tokio::task::spawn_blocking(move || {
        engine.import_image(reader, reference.as_deref(), &changes, &comment)
    })
    .await
    .map_err(|e| ApiError::internal(format!("import task failed: {e}")))??;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        line(&json!({ "status": id })),
    )
        .into_response())
}
