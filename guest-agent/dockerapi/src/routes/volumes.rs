//! `/volumes/...`: create, list, inspect, remove, prune.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_engine::volume::Volume;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::routes::containers::{json_body, truthy};
use crate::routes::system::parse_filters;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

fn describe(volume: &Volume) -> Value {
    json!({
        "Name": volume.name,
        "Driver": volume.driver,
        "Mountpoint": volume.mountpoint,
        "CreatedAt": volume.created_at,
        "Labels": volume.labels,
        "Options": volume.options,
        "Scope": volume.scope,
    })
}

async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body: CreateBody = json_body(&body)?;
    if !matches!(body.driver.as_str(), "" | "local") {
        return Err(ApiError::bad_request(format!(
            "volume driver {:?} is not available: only \"local\" is",
            body.driver
        )));
    }
    let name = (!body.name.is_empty()).then_some(body.name.as_str());
    let volume = state
        .engine
        .volumes
        .create(name, body.labels.unwrap_or_default())?;
    Ok((StatusCode::CREATED, axum::Json(describe(&volume))).into_response())
}

fn matches(
    volume: &Volume,
    in_use: bool,
    filters: &HashMap<String, Vec<String>>,
) -> ApiResult<bool> {
    for (key, wanted) in filters {
        if wanted.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "name" => wanted.iter().any(|w| volume.name.contains(w.as_str())),
            "dangling" => wanted.iter().any(|w| (w == "true" || w == "1") != in_use),
            "driver" => wanted.contains(&volume.driver),
            "label" => wanted.iter().all(|w| match w.split_once('=') {
                Some((k, v)) => volume.labels.get(k).is_some_and(|x| x == v),
                None => volume.labels.contains_key(w),
            }),
            "all" => true,
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
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let mut out = Vec::new();
    for volume in state.engine.volumes.list()? {
        let in_use = !state.engine.volume_users(&volume.name).is_empty();
        if matches(&volume, in_use, &filters)? {
            out.push(describe(&volume));
        }
    }
    Ok(axum::Json(json!({ "Volumes": out, "Warnings": [] })).into_response())
}

async fn inspect(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let volume = state.engine.volumes.get(&name)?;
    Ok(axum::Json(describe(&volume)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let users = state.engine.volume_users(&name);
    state
        .engine
        .volumes
        .remove(&name, &users, truthy(query.get("force")))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    // Docker 23+: prune removes anonymous volumes unless `all=true`.
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for volume in state.engine.volumes.list()? {
        let users = state.engine.volume_users(&volume.name);
        if !users.is_empty() || !(all || volume.anonymous) || !matches(&volume, false, &filters)? {
            continue;
        }
        let size = state.engine.volumes.size(&volume.name);
        state.engine.volumes.remove(&volume.name, &users, false)?;
        reclaimed += size;
        deleted.push(volume.name);
    }
    Ok(
        axum::Json(json!({ "VolumesDeleted": deleted, "SpaceReclaimed": reclaimed }))
            .into_response(),
    )
}
