//! `/_ping`, `/version`, `/info`, `/events`, and the swarm probes.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::router::{API_VERSION, MIN_API_VERSION};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/events", get(events))
        .merge(swarm_routes())
}

/// Every swarm route, answered as a dockerd that is not in a swarm does:
/// 503, with "not part of a swarm" for joining, leaving and unlocking and
/// "not a swarm manager" for reading or changing cluster state.
fn swarm_routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/swarm/init", post(no_swarm))
        .route("/swarm/join", post(no_swarm))
        .route("/swarm/leave", post(no_swarm))
        .route("/swarm/unlock", post(no_swarm))
        .route("/swarm", get(not_manager))
        .route("/swarm/update", post(not_manager))
        .route("/swarm/unlockkey", get(not_manager))
        .route("/tasks", get(not_manager))
        .route("/tasks/{id}", get(not_manager))
        .route("/tasks/{id}/logs", get(not_manager));
    for kind in ["services", "nodes", "secrets", "configs"] {
        if kind != "nodes" {
            router = router.route(&format!("/{kind}/create"), post(not_manager));
        }
        router = router
            .route(&format!("/{kind}"), get(not_manager))
            .route(
                &format!("/{kind}/{{id}}"),
                get(not_manager).delete(not_manager),
            )
            .route(&format!("/{kind}/{{id}}/update"), post(not_manager));
    }
    router.route("/services/{id}/logs", get(not_manager))
}

fn ping_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    headers.insert("Swarm", HeaderValue::from_static("inactive"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers
}

async fn ping() -> impl IntoResponse {
    (
        ping_headers(),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "OK",
    )
}

fn kernel_version() -> String {
    nix_uname().unwrap_or_default()
}

fn nix_uname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn version() -> impl IntoResponse {
    let body = json!({
        "Platform": { "Name": "berth" },
        "Components": [{
            "Name": "Engine",
            "Version": env!("CARGO_PKG_VERSION"),
            "Details": { "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": go_arch() }
        }],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "n/a (rust)",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    });
    (ping_headers(), axum::Json(body))
}

async fn info(State(state): State<AppState>) -> ApiResult<Response> {
    let engine = &state.engine;
    let counts = engine.container_counts();
    let images = engine.images.list().map_err(ApiError::from)?.len();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let body = json!({
        "ID": "berth",
        "Containers": counts.total,
        "ContainersRunning": counts.running,
        "ContainersPaused": counts.paused,
        "ContainersStopped": counts.stopped,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "native"]],
        "DockerRootDir": engine.root().display().to_string(),
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "PidsLimit": true,
        "OomKillDisable": false,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": engine.cgroup_version(),
        "KernelVersion": kernel_version(),
        "OperatingSystem": "berth",
        "OSType": "linux",
        "OSVersion": "",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "MemTotal": mem_total,
        "Name": hostname.trim(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": { "berth": { "path": "berth-agent" } },
        "DefaultRuntime": "berth",
        "Swarm": { "LocalNodeState": "inactive", "ControlAvailable": false, "NodeID": "", "NodeAddr": "" },
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "berth-agent",
        "SecurityOptions": ["name=no-new-privileges"],
        "Plugins": { "Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file"] },
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"] },
        "Warnings": [],
    });
    Ok(axum::Json(body).into_response())
}

async fn no_swarm() -> ApiError {
    ApiError::unavailable(NO_SWARM)
}

/// dockerd's `errNoSwarm`.
const NO_SWARM: &str = "This node is not part of a swarm";

async fn not_manager() -> ApiError {
    ApiError::unavailable(
        "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
    )
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// Parses a Docker timestamp (`1700000000`, `1700000000.123`) into nanoseconds.
fn parse_time_nanos(value: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid timestamp {value:?}: expected seconds since the epoch"
        ))
    };
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().map_err(|_| bad())?;
    }
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// `filters` as Docker sends it: `{"type":["container"],"event":{"start":true}}`.
pub fn parse_filters(raw: Option<&str>) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters {raw:?}: {e}")))?;
    let mut out = HashMap::new();
    let Some(map) = value.as_object() else {
        return Err(ApiError::bad_request(format!(
            "invalid filters {raw:?}: expected a JSON object"
        )));
    };
    for (key, values) in map {
        let list = match values {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            serde_json::Value::Object(items) => items
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter {key:?}: expected a list"
                )));
            }
        };
        out.insert(key.clone(), list);
    }
    Ok(out)
}

fn event_matches(
    event: &berth_engine::events::Event,
    filters: &HashMap<String, Vec<String>>,
) -> bool {
    filters.iter().all(|(key, wanted)| {
        wanted.is_empty()
            || wanted.iter().any(|w| match key.as_str() {
                "type" => event.kind == w,
                "event" | "status" => &event.action == w,
                "container" | "image" | "volume" | "network" => {
                    event.actor.id == *w
                        || event.actor.id.starts_with(w.as_str())
                        || event.actor.attributes.get("name").is_some_and(|n| n == w)
                }
                "label" => match w.split_once('=') {
                    Some((k, v)) => event.actor.attributes.get(k).is_some_and(|x| x == v),
                    None => event.actor.attributes.contains_key(w),
                },
                _ => true,
            })
    })
}

async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.filters.as_deref())?;
    let since = query.since.as_deref().map(parse_time_nanos).transpose()?;
    let until = query.until.as_deref().map(parse_time_nanos).transpose()?;
    let (history, live) = state.engine.events.subscribe();
    let past: Vec<_> = match since {
        Some(since) => history
            .into_iter()
            .filter(|e| e.time_nano >= since)
            .collect(),
        None => Vec::new(),
    };
    let encode = |event: &berth_engine::events::Event| -> Bytes {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    };
    let filters_past = filters.clone();
    let past_chunks: Vec<Result<Bytes, std::io::Error>> = past
        .iter()
        .filter(|e| event_matches(e, &filters_past) && until.is_none_or(|u| e.time_nano <= u))
        .map(|e| Ok(encode(e)))
        .collect();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let live_stream = if until.is_some_and(|u| u <= now) {
        None
    } else {
        Some(stream::unfold(
            (live, filters, until),
            move |(mut live, filters, until)| async move {
                loop {
                    let next = match until {
                        Some(u) => {
                            let wait =
                                u - chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
                            let wait =
                                std::time::Duration::from_nanos(u64::try_from(wait).unwrap_or(0));
                            match tokio::time::timeout(wait, live.recv()).await {
                                Ok(next) => next,
                                Err(_) => return None,
                            }
                        }
                        None => live.recv().await,
                    };
                    match next {
                        Ok(event) if event_matches(&event, &filters) => {
                            return Some((
                                Ok::<_, std::io::Error>(encode(&event)),
                                (live, filters, until),
                            ));
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    };
    let body = match live_stream {
        Some(live) => Body::from_stream(futures_util::StreamExt::chain(
            stream::iter(past_chunks),
            live,
        )),
        None => Body::from_stream(stream::iter(past_chunks)),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_filters_accepts_map_and_list_forms() {
        let f = parse_filters(Some(
            r#"{"type":["container"],"event":{"start":true,"die":false}}"#,
        ))
        .unwrap();
        assert_eq!(f["type"], vec!["container"]);
        assert_eq!(f["event"], vec!["start"]);
    }

    #[test]
    fn parse_filters_rejects_malformed_json() {
        let err = parse_filters(Some("{nope")).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("invalid filters"));
    }

    #[test]
    fn parse_time_handles_fractions() {
        assert_eq!(parse_time_nanos("12.5").unwrap(), 12_500_000_000);
        assert!(parse_time_nanos("soon").is_err());
    }
}
