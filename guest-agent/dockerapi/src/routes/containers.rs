//! `/containers/...`: create, list, inspect, lifecycle, logs, attach, top.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use berth_engine::container::io::{LogEntry, Stream};
use berth_engine::container::{Container, Entry, Status, StdinMessage, WaitCondition};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::system::parse_filters;
use crate::stream::{STDERR, STDOUT, frame, hijack};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/{alias}", delete(remove_link))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/attach", post(attach))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/prune", post(prune))
        .route("/system/df", get(system_df))
}

/// Parses a JSON body with a 400 that says what is wrong.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::bad_request(format!("empty request body: {e}")));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

/// Docker's boolean query values: `1`, `true`, `True`.
pub(crate) fn truthy(value: Option<&String>) -> bool {
    value.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE" | "yes"))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateBody {
    #[serde(flatten)]
    config: berth_engine::container::Config,
    #[serde(rename = "HostConfig", default)]
    host_config: berth_engine::container::HostConfig,
    #[serde(rename = "NetworkingConfig", default)]
    networking_config: Option<Value>,
}

async fn create(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut body: CreateBody = json_body(&body)?;
    if let Some(networking) = body.networking_config.take() {
        body.host_config
            .extra
            .insert("NetworkingConfig".into(), networking);
    }
    if body.config.image.is_empty() {
        return Err(ApiError::bad_request("config is missing the image"));
    }
    let engine = state.engine.clone();
    let name = query.get("name").cloned();
    let record = tokio::task::spawn_blocking(move || {
        engine.create_container(name.as_deref(), body.config, body.host_config)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "Id": record.id, "Warnings": [] })),
    )
        .into_response())
}

fn status_text(record: &Container) -> String {
    let since = |ts: &Option<String>| {
        ts.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| human_duration(chrono::Utc::now().signed_duration_since(t)))
            .unwrap_or_default()
    };
    match record.state.status {
        Status::Running => format!("Up {}", since(&record.state.started_at)),
        Status::Paused => format!("Up {} (Paused)", since(&record.state.started_at)),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            record.state.exit_code,
            since(&record.state.finished_at)
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            record.state.exit_code,
            since(&record.state.finished_at)
        ),
        Status::Created => "Created".into(),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

fn human_duration(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 172_800 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn created_unix(record: &Container) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&record.created)
        .map(|t| t.timestamp())
        .unwrap_or_default()
}

fn command_line(record: &Container) -> String {
    std::iter::once(record.path.as_str())
        .chain(record.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn network_mode(record: &Container) -> &str {
    match record.host_config.network_mode.as_str() {
        "" | "default" => "bridge",
        other => other,
    }
}

fn summary(record: &Container) -> Value {
    json!({
        "Id": record.id,
        "Names": [record.name],
        "Image": record.config.image,
        "ImageID": record.image_id,
        "Command": command_line(record),
        "Created": created_unix(record),
        "Ports": [],
        "Labels": record.config.labels,
        "State": record.state.status.as_str(),
        "Status": status_text(record),
        "HostConfig": { "NetworkMode": network_mode(record) },
        "NetworkSettings": { "Networks": {} },
        "Mounts": record.mounts,
    })
}

fn matches_filters(record: &Container, filters: &HashMap<String, Vec<String>>) -> ApiResult<bool> {
    for (key, wanted) in filters {
        if wanted.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "status" => wanted.iter().any(|w| w == record.state.status.as_str()),
            "id" => wanted.iter().any(|w| record.id.starts_with(w.as_str())),
            "name" => wanted
                .iter()
                .any(|w| record.short_name().contains(w.trim_start_matches('/'))),
            "label" => wanted.iter().all(|w| match w.split_once('=') {
                Some((k, v)) => record.config.labels.get(k).is_some_and(|x| x == v),
                None => record.config.labels.contains_key(w),
            }),
            "ancestor" => wanted
                .iter()
                .any(|w| record.config.image == *w || record.image_id.contains(w.as_str())),
            "exited" => wanted.iter().any(|w| {
                record.state.status == Status::Exited && record.state.exit_code.to_string() == *w
            }),
            other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let all = truthy(query.get("all"));
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let mut records = state.engine.containers();
    records.sort_by(|a, b| b.created.cmp(&a.created));
    let mut out = Vec::new();
    for record in &records {
        let active = matches!(
            record.state.status,
            Status::Running | Status::Paused | Status::Restarting
        );
        if (all || active || filters.contains_key("status")) && matches_filters(record, &filters)? {
            let mut item = summary(record);
            let mut names = vec![record.name.clone()];
            names.extend(berth_engine::container::links::link_names(
                &records,
                &record.name,
            ));
            item["Names"] = json!(names);
            item["Ports"] = crate::routes::networks::container_port_summary(&state, &record.id);
            out.push(item);
        }
    }
    if let Some(limit) = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
    {
        out.truncate(limit);
    }
    Ok(axum::Json(out).into_response())
}

fn inspect_json(entry: &Entry, record: &Container) -> Value {
    let state = &record.state;
    let zero_time = "0001-01-01T00:00:00Z".to_owned();
    json!({
        "Id": record.id,
        "Created": record.created,
        "Path": record.path,
        "Args": record.args,
        "State": {
            "Status": state.status.as_str(),
            "Running": matches!(state.status, Status::Running | Status::Paused),
            "Paused": state.status == Status::Paused,
            "Restarting": state.status == Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": state.status == Status::Dead,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at.clone().unwrap_or_else(|| zero_time.clone()),
            "FinishedAt": state.finished_at.clone().unwrap_or(zero_time),
        },
        "Image": record.image_id,
        "ResolvConfPath": entry.dir().join("resolv.conf"),
        "HostnamePath": entry.dir().join("hostname"),
        "HostsPath": entry.dir().join("hosts"),
        "LogPath": entry.log.path(),
        "Name": record.name,
        "RestartCount": record.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": record.host_config,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": record.layers.iter().rev().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
                "UpperDir": entry.dir().join("upper"),
                "WorkDir": entry.dir().join("work"),
                "MergedDir": entry.dir().join("rootfs"),
            }
        },
        "Mounts": record.mounts,
        "Config": record.config,
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": "",
            "Ports": {},
            "Networks": {},
            "IPAddress": "",
            "Gateway": "",
            "MacAddress": "",
        },
    })
}

/// The endpoints a container that is not running will get: its network
/// mode's network and those of `NetworkingConfig`, without addresses.
fn planned_networks(record: &Container) -> serde_json::Map<String, Value> {
    let mut configs = record
        .host_config
        .extra
        .get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mode = network_mode(record);
    if !matches!(mode, "host" | "none") && !mode.starts_with("container:") {
        configs.entry(mode.to_owned()).or_insert_with(|| json!({}));
    }
    configs
        .into_iter()
        .map(|(name, config)| {
            let field = |key: &str| config.get(key).cloned().unwrap_or(Value::Null);
            let mac = config.get("MacAddress").cloned().unwrap_or(json!(""));
            let endpoint = json!({
                "IPAMConfig": field("IPAMConfig"),
                "Links": field("Links"),
                "Aliases": field("Aliases"),
                "MacAddress": mac,
                "NetworkID": "",
                "EndpointID": "",
                "Gateway": "",
                "IPAddress": "",
                "IPPrefixLen": 0,
            });
            (name, endpoint)
        })
        .collect()
}

/// `State.Health`: once a container with a healthcheck (not `NONE`) has
/// been started, as dockerd reports it: the live state, or (after an
/// engine restart lost it) `starting` while it runs, `unhealthy` after.
fn health_state(entry: &Entry, record: &Container) -> Option<Value> {
    if let Some(health) = entry.health() {
        return serde_json::to_value(health).ok();
    }
    record.state.started_at.as_ref()?;
    let test = record
        .config
        .healthcheck
        .as_ref()?
        .get("Test")?
        .as_array()?;
    match test.first().and_then(Value::as_str) {
        Some("CMD" | "CMD-SHELL") if test.len() > 1 => {}
        _ => return None,
    }
    let status = if record.state.status == Status::Running {
        "starting"
    } else {
        "unhealthy"
    };
    Some(json!({ "Status": status, "FailingStreak": 0, "Log": [] }))
}

async fn inspect(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let entry = state.engine.container(&id)?;
    let record = entry.snapshot();
    let mut body = inspect_json(&entry, &record);
    body["NetworkSettings"] = crate::routes::networks::container_network_settings(
        &state,
        &record.id,
        record.config.exposed_ports.as_ref(),
    )
    .await;
    // Not running: the endpoints it will get, as dockerd shows them.
    if body["NetworkSettings"]["Networks"]
        .as_object()
        .is_some_and(serde_json::Map::is_empty)
    {
        body["NetworkSettings"]["Networks"] = Value::Object(planned_networks(&record));
    }
    // Records made before these fields existed.
    if record.host_config.log_config.kind.is_empty() {
        body["HostConfig"]["LogConfig"] = json!({ "Type": "json-file", "Config": {} });
    }
    if record.host_config.runtime.is_empty() {
        body["HostConfig"]["Runtime"] = json!("runc");
    }
    if let Some(health) = health_state(&entry, &record) {
        body["State"]["Health"] = health;
    }
    Ok(axum::Json(body).into_response())
}

async fn start(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.engine.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn timeout_param(query: &HashMap<String, String>) -> ApiResult<Option<i64>> {
    query
        .get("t")
        .or_else(|| query.get("timeout"))
        .map(|t| {
            t.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid timeout {t:?}: expected seconds"))
            })
        })
        .transpose()
}

async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let timeout = timeout_param(&query)?;
    state
        .engine
        .stop_container(&id, query.get("signal").map(String::as_str), timeout)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let timeout = timeout_param(&query)?;
    state
        .engine
        .restart_container(&id, query.get("signal").map(String::as_str), timeout)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .kill_container(&id, query.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let condition: WaitCondition = query.get("condition").map_or("", String::as_str).parse()?;
    // Fail fast (before the 200) when the container does not exist.
    state.engine.container(&id)?;
    let engine = state.engine.clone();
    // Headers go out at once; the body follows when the condition holds,
    // as with dockerd (clients send `wait` before `start`).
    let body = stream::once(async move {
        let value = match engine.wait_container(&id, condition).await {
            Ok(code) => json!({ "StatusCode": code, "Error": null }),
            Err(err) => json!({ "StatusCode": -1, "Error": { "Message": err.to_string() } }),
        };
        Ok::<_, std::io::Error>(Bytes::from(format!("{value}\n")))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    if truthy(query.get("link")) {
        state.engine.remove_link(&id)?;
        return Ok(StatusCode::NO_CONTENT);
    }
    state
        .engine
        .remove_container(&id, truthy(query.get("force")), truthy(query.get("v")))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/{parent}/{alias}?link=1`: a link's name has a slash.
async fn remove_link(
    State(state): State<AppState>,
    Path((parent, alias)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    if !truthy(query.get("link")) {
        return Err(ApiError::not_found(format!(
            "No such container: {parent}/{alias}"
        )));
    }
    state.engine.remove_link(&format!("{parent}/{alias}"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update` (`docker update`).
async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let update: berth_engine::container::HostConfig = json_body(&body)?;
    state.engine.update_container(&id, &update)?;
    Ok(axum::Json(json!({ "Warnings": [] })).into_response())
}

async fn pause(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.engine.pause_container(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpause(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.engine.unpause_container(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename needs a new name (query parameter 'name')"))?;
    state.engine.rename_container(&id, name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `h` and `w` query parameters of a resize.
pub(crate) fn size_params(query: &HashMap<String, String>) -> ApiResult<(u16, u16)> {
    let get = |key: &str| -> ApiResult<u16> {
        query
            .get(key)
            .ok_or_else(|| {
                ApiError::bad_request(format!("resize needs the '{key}' query parameter"))
            })?
            .parse()
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid '{key}': expected a number from 0 to 65535"
                ))
            })
    };
    Ok((get("h")?, get("w")?))
}

async fn resize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let (height, width) = size_params(&query)?;
    state.engine.resize_container(&id, height, width)?;
    Ok(StatusCode::OK)
}

async fn top(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (titles, processes) = state.engine.top_container(&id)?;
    Ok(axum::Json(json!({ "Titles": titles, "Processes": processes })).into_response())
}

/// Parses `since`/`until` (seconds, fractional seconds, or RFC 3339) to nanoseconds.
fn parse_log_time(value: &str) -> ApiResult<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp_nanos_opt().unwrap_or_default());
    }
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time value {value:?}")))?;
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = frac
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time value {value:?}")))?;
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// `tail`: a line count, or all lines for `all`, empty or (as dockerd
/// reads it) any negative number.
fn tail_param(value: Option<&str>) -> ApiResult<Option<usize>> {
    match value {
        None | Some("" | "all") => Ok(None),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n < 0 => Ok(None),
            Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Err(_) => Err(ApiError::bad_request(format!(
                "invalid tail {n:?}: expected a number or 'all'"
            ))),
        },
    }
}

fn encode_log(entry: &LogEntry, tty: bool, timestamps: bool) -> Bytes {
    let mut payload = Vec::new();
    if timestamps {
        payload.extend_from_slice(entry.time.as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(entry.log.as_bytes());
    if tty {
        Bytes::from(payload)
    } else {
        let id = if entry.stream == Stream::Stderr {
            STDERR
        } else {
            STDOUT
        };
        Bytes::from(frame(id, &payload))
    }
}

async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let entry = state.engine.container(&id)?;
    let record = entry.snapshot();
    let tty = record.config.tty;
    let follow = truthy(query.get("follow"));
    let stdout = truthy(query.get("stdout"));
    let stderr = truthy(query.get("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request("you must choose at least one stream"));
    }
    let timestamps = truthy(query.get("timestamps"));
    let since = query
        .get("since")
        .filter(|s| !s.is_empty() && *s != "0")
        .map(|s| parse_log_time(s))
        .transpose()?;
    let until = query
        .get("until")
        .filter(|s| !s.is_empty() && *s != "0")
        .map(|s| parse_log_time(s))
        .transpose()?;
    let tail = tail_param(query.get("tail").map(String::as_str))?;
    let wanted = move |e: &LogEntry| {
        (match e.stream {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
        }) && since.is_none_or(|s| e.time_nanos() >= s)
            && until.is_none_or(|u| e.time_nanos() <= u)
    };
    let running = matches!(
        record.state.status,
        Status::Running | Status::Paused | Status::Restarting
    );
    let (past, live) = entry.log.snapshot_and_follow().await?;
    let mut past: Vec<LogEntry> = past.into_iter().filter(|e| wanted(e)).collect();
    if let Some(tail) = tail {
        past.drain(..past.len().saturating_sub(tail));
    }
    let past_chunks: Vec<Result<Bytes, std::io::Error>> = past
        .iter()
        .map(|e| Ok(encode_log(e, tty, timestamps)))
        .collect();
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let body = if follow && running {
        let mut changes = entry.changes();
        let seen = changes.borrow_and_update().exits;
        let live_stream = stream::unfold(
            (live, changes, false),
            move |(mut live, mut changes, mut exited)| async move {
                loop {
                    if exited {
                        // Drain what was logged before the exit, then end.
                        match live.try_recv() {
                            Ok(e) if wanted(&e) => {
                                return Some((
                                    Ok(encode_log(&e, tty, timestamps)),
                                    (live, changes, true),
                                ));
                            }
                            Ok(_) => continue,
                            Err(_) => return None,
                        }
                    }
                    tokio::select! {
                        next = live.recv() => match next {
                            Ok(e) if wanted(&e) => return Some((Ok(encode_log(&e, tty, timestamps)), (live, changes, false))),
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        },
                        () = async { let _ = changes.wait_for(|c| c.exits != seen || c.removed).await; } => exited = true,
                    }
                }
            },
        );
        Body::from_stream(futures_util::StreamExt::chain(
            stream::iter(past_chunks),
            live_stream,
        ))
    } else {
        Body::from_stream(stream::iter(past_chunks))
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// How long an attach waits after the response head before replaying the
/// log (see `attach`).
const HEAD_SETTLE: std::time::Duration = std::time::Duration::from_millis(30);

async fn attach(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut request: Request,
) -> ApiResult<Response> {
    let entry: Arc<Entry> = state.engine.container(&id)?;
    let record = entry.snapshot();
    let tty = record.config.tty;
    let want_stdin = truthy(query.get("stdin")) && record.config.open_stdin;
    let want_stdout = truthy(query.get("stdout"));
    let want_stderr = truthy(query.get("stderr"));
    let stdin_once = record.config.stdin_once;
    let keys = query.get("detachKeys").map_or("", String::as_str);
    let detach_keys = crate::stream::parse_detach_keys(keys)
        .map_err(|_| ApiError::bad_request(format!("Invalid detach keys ({keys}) provided")))?;
    // `stream` defaults to off as in dockerd; `logs` replays the log first.
    let want_stream = truthy(query.get("stream"));
    let want_logs = truthy(query.get("logs"));
    // Subscribe now, before the client goes on to `start`, so no output is
    // missed (with `logs`, a chunk written between this and the log read
    // can show twice; dockerd's window loses it instead).
    let mut output = want_stream.then(|| entry.hub.subscribe());
    let past = if want_logs {
        entry.log.read_all().await?
    } else {
        Vec::new()
    };
    let stdin = entry.stdin_sender();
    Ok(hijack(&mut request, tty, move |io| async move {
        let crate::stream::Hijacked {
            mut reader,
            mut writer,
        } = io;
        if !past.is_empty() {
            // docker-py reads the 101 head through a buffered reader and
            // then reads the raw socket: bytes that arrive with the head are
            // lost. dockerd's log read gives the client time to take the
            // head alone; so does this pause.
            tokio::time::sleep(HEAD_SETTLE).await;
        }
        for entry in past.iter().filter(|e| match e.stream {
            Stream::Stdout => want_stdout,
            Stream::Stderr => want_stderr,
        }) {
            if writer
                .write_all(&encode_log(entry, tty, false))
                .await
                .is_err()
            {
                return;
            }
        }
        let Some(mut output) = output.take() else {
            let _ = writer.shutdown().await;
            return;
        };
        // As in dockerd, the detach sequence is watched for on a TTY only.
        let mut scanner = tty.then(|| crate::stream::DetachScanner::new(detach_keys));
        // Resolves `true` when the client typed the detach sequence.
        let input = async {
            if !want_stdin {
                return false;
            }
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (bytes, detached) = match scanner.as_mut() {
                    Some(scanner) => {
                        let scanned = scanner.feed(&buf[..n]);
                        (scanned.forward, scanned.detached)
                    }
                    None => (buf[..n].to_vec(), false),
                };
                if !bytes.is_empty()
                    && stdin
                        .send(StdinMessage::Data(Bytes::from(bytes)))
                        .await
                        .is_err()
                {
                    return false;
                }
                if detached {
                    return true;
                }
            }
            // As in dockerd, the client's EOF closes a `StdinOnce`
            // container's input only without a TTY: a TTY client that went
            // away (the CLI detaching itself) leaves the shell running.
            if stdin_once && !tty {
                let _ = stdin.send(StdinMessage::Close).await;
            }
            false
        };
        let outputs = async {
            while let Some(chunk) = output.recv().await {
                let bytes = match (tty, chunk.stream) {
                    (true, _) => chunk.data.to_vec(),
                    (false, Stream::Stdout) if want_stdout => frame(STDOUT, &chunk.data),
                    (false, Stream::Stderr) if want_stderr => frame(STDERR, &chunk.data),
                    _ => continue,
                };
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        };
        // Output decides when the attach ends; input may close earlier, and
        // a detach ends it at once (the container runs on, and the dropped
        // subscription closes the connection).
        tokio::pin!(input);
        tokio::pin!(outputs);
        tokio::select! {
            () = &mut outputs => {}
            () = async {
                if !(&mut input).await {
                    std::future::pending::<()>().await;
                }
            } => {}
        }
    }))
}

fn cpu_json(sample: &berth_engine::container::stats::Sample) -> Value {
    json!({
        "cpu_usage": {
            "total_usage": sample.cpu_total,
            "usage_in_kernelmode": sample.cpu_system,
            "usage_in_usermode": sample.cpu_user,
        },
        "system_cpu_usage": sample.system_cpu,
        "online_cpus": sample.online_cpus,
        "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
    })
}

fn stats_json(
    record: &Container,
    sample: &berth_engine::container::stats::Sample,
    previous: Option<&berth_engine::container::stats::Sample>,
) -> Value {
    let empty = berth_engine::container::stats::Sample::default();
    let previous = previous.unwrap_or(&empty);
    json!({
        "read": sample.read,
        "preread": if previous.read.is_empty() { "0001-01-01T00:00:00Z".to_owned() } else { previous.read.clone() },
        "pids_stats": { "current": sample.pids, "limit": sample.pids_limit },
        "blkio_stats": {},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(sample),
        "precpu_stats": cpu_json(previous),
        "memory_stats": { "usage": sample.memory_usage, "limit": sample.memory_limit, "stats": sample.memory_stats },
        "name": record.name,
        "id": record.id,
        "networks": {},
    })
}

async fn stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let entry = state.engine.container(&id)?;
    let record = entry.snapshot();
    let stream_mode = query.get("stream").is_none_or(|v| truthy(Some(v)));
    let one_shot = truthy(query.get("one-shot"));
    let engine = state.engine.clone();
    let first = engine.stats_sample(&id)?;
    if !stream_mode {
        // Like dockerd: without one-shot, a second sample a second later
        // gives the client a CPU delta to compute a percentage from.
        let (sample, previous) = if one_shot {
            (first, None)
        } else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            (engine.stats_sample(&id)?, Some(first))
        };
        return Ok(axum::Json(stats_json(&record, &sample, previous.as_ref())).into_response());
    }
    let body = stream::unfold(
        (
            engine,
            id,
            record,
            None::<berth_engine::container::stats::Sample>,
        ),
        |(engine, id, record, previous)| async move {
            if previous.is_some() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            let sample = engine.stats_sample(&id).ok()?;
            let line = format!("{}\n", stats_json(&record, &sample, previous.as_ref()));
            Some((
                Ok::<_, std::io::Error>(Bytes::from(line)),
                (engine, id, record, Some(sample)),
            ))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Bytes used under `path` (not following links).
fn disk_usage(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| disk_usage(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

async fn prune(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let until = filters
        .get("until")
        .and_then(|v| v.first())
        .map(|u| parse_log_time(u))
        .transpose()?;
    let label_filters: HashMap<String, Vec<String>> = filters
        .iter()
        .filter(|(k, _)| k.as_str() == "label")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for record in state.engine.containers() {
        let stopped = matches!(
            record.state.status,
            Status::Exited | Status::Created | Status::Dead
        );
        let old_enough = until.is_none_or(|u| {
            chrono::DateTime::parse_from_rfc3339(&record.created)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .is_some_and(|t| t <= u)
        });
        if !stopped || !old_enough || !matches_filters(&record, &label_filters)? {
            continue;
        }
        let size = state
            .engine
            .container(&record.id)
            .map(|e| disk_usage(&e.dir().join("upper")))
            .unwrap_or(0);
        match state
            .engine
            .remove_container(&record.id, false, false)
            .await
        {
            Ok(()) => {
                reclaimed += size;
                deleted.push(record.id);
            }
            Err(err) => tracing::debug!(container = %record.id, error = %err, "not pruned"),
        }
    }
    Ok(
        axum::Json(json!({ "ContainersDeleted": deleted, "SpaceReclaimed": reclaimed }))
            .into_response(),
    )
}

async fn system_df(State(state): State<AppState>) -> ApiResult<Response> {
    let engine = state.engine.clone();
    let body = tokio::task::spawn_blocking(move || -> ApiResult<Value> {
        let containers = engine.containers();
        let images = engine.images.list()?;
        let mut layers_size = 0u64;
        let images: Vec<Value> = images
            .iter()
            .map(|image| {
                layers_size += image.size;
                let users = containers.iter().filter(|c| c.image_id == image.id).count();
                json!({
                    "Id": image.id,
                    "ParentId": "",
                    "RepoTags": image.repo_tags,
                    "RepoDigests": image.repo_digests,
                    "Created": image.loaded_at,
                    "Size": image.size,
                    "SharedSize": -1,
                    "VirtualSize": image.size,
                    "Labels": image.config.config.labels.clone().unwrap_or_default(),
                    "Containers": users,
                })
            })
            .collect();
        let container_json: Vec<Value> = containers
            .iter()
            .map(|record| {
                let size = engine.container(&record.id).map(|e| disk_usage(&e.dir().join("upper"))).unwrap_or(0);
                let mut value = summary(record);
                value["SizeRw"] = json!(size);
                value["SizeRootFs"] = json!(size);
                value
            })
            .collect();
        let volumes: Vec<Value> = engine
            .volumes
            .list()?
            .iter()
            .map(|volume| {
                json!({
                    "Name": volume.name,
                    "Driver": volume.driver,
                    "Mountpoint": volume.mountpoint,
                    "CreatedAt": volume.created_at,
                    "Labels": volume.labels,
                    "Scope": volume.scope,
                    "Options": volume.options,
                    "UsageData": { "Size": engine.volumes.size(&volume.name), "RefCount": engine.volume_users(&volume.name).len() },
                })
            })
            .collect();
        Ok(json!({
            "LayersSize": layers_size,
            "Images": images,
            "Containers": container_json,
            "Volumes": volumes,
            "BuildCache": [],
        }))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(axum::Json(body).into_response())
}

/// The `X-Docker-Container-Path-Stat` header value.
fn stat_header(stat: &berth_engine::container::archive::PathStat) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(stat).unwrap_or_default())
}

fn path_param(query: &HashMap<String, String>) -> ApiResult<String> {
    query
        .get("path")
        .filter(|p| !p.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing the 'path' query parameter"))
}

async fn archive_head(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let path = path_param(&query)?;
    let stat = state.engine.stat_path(&id, &path).await?;
    Response::builder()
        .status(StatusCode::OK)
        .header("X-Docker-Container-Path-Stat", stat_header(&stat))
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A `Write` that hands chunks to an async body.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn archive_get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let path = path_param(&query)?;
    let access = state.engine.container_root(&id).await?;
    let stat = berth_engine::container::archive::stat_in(access.root(), &path)?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let writer = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        if let Err(err) = berth_engine::container::archive::archive_in(access.root(), &path, writer)
        {
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
        drop(access);
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header("X-Docker-Container-Path-Stat", stat_header(&stat))
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

async fn archive_put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult<StatusCode> {
    let path = path_param(&query)?;
    let keep_owner = truthy(query.get("copyUIDGID"));
    let access = state.engine.container_root(&id).await?;
    let reader = crate::body::BodyReader::spawn(body);
    tokio::task::spawn_blocking(move || {
        let result =
            berth_engine::container::archive::extract_in(access.root(), &path, reader, keep_owner);
        drop(access);
        result
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_reports_malformed_input() {
        let err = json_body::<CreateBody>(b"{\"Image\": ").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.starts_with("invalid JSON in request body"));
    }

    #[test]
    fn log_time_accepts_unix_and_rfc3339() {
        assert_eq!(parse_log_time("10.5").unwrap(), 10_500_000_000);
        assert_eq!(
            parse_log_time("1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        assert!(parse_log_time("yesterday").is_err());
        // Far-future times saturate instead of overflowing.
        assert_eq!(parse_log_time("32472144000.000000000").unwrap(), i64::MAX);
    }

    #[test]
    fn tail_reads_counts_all_and_negatives() {
        assert_eq!(tail_param(None).unwrap(), None);
        assert_eq!(tail_param(Some("all")).unwrap(), None);
        assert_eq!(tail_param(Some("-1")).unwrap(), None);
        assert_eq!(tail_param(Some("-20")).unwrap(), None);
        assert_eq!(tail_param(Some("3")).unwrap(), Some(3));
        assert!(tail_param(Some("three")).is_err());
    }
}
