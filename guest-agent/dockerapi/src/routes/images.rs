//! `/images/...`: load, save, list, inspect, history, tag, remove, prune,
//! pull (`/images/create`) and push.
//!
//! Image names in paths may contain slashes (`localhost:5000/a/b:v1`), so
//! everything below `/images/` that is not a fixed endpoint goes to one
//! wildcard route that splits the action suffix (`/json`, `/history`,
//! `/tag`, `/get`, `/push`) off itself. Filesystem work runs on the
//! blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use berth_engine::Engine;
use berth_engine::image::pull::{Credentials, Progress};
use berth_engine::image::reference::Reference;
use berth_engine::image::{self, DeleteItem, Image, ImageStore, archive};
use serde_json::{Value, json};

use crate::AppState;
use crate::body::BodyReader;
use crate::error::{ApiError, ApiResult};
use crate::routes::system::parse_filters;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/load", post(load))
        .route("/images/get", get(save_many))
        .route("/images/create", post(create))
        .route("/images/prune", post(prune))
        .route(
            "/images/{*rest}",
            get(get_named).post(post_named).delete(remove),
        )
}

fn store_of(engine: &Engine) -> &ImageStore {
    &engine.images
}

/// Runs image-store work on the blocking pool.
async fn blocking<T, F>(engine: &Arc<Engine>, work: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> Result<T, image::Error> + Send + 'static,
{
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || work(&engine))
        .await
        .map_err(|e| ApiError::internal(format!("image task failed: {e}")))?
        .map_err(ApiError::from)
}

fn truthy(value: Option<&String>) -> bool {
    value.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

fn publish(engine: &Engine, action: &str, id: &str, name: Option<&str>) {
    let mut attributes = BTreeMap::new();
    if let Some(name) = name {
        attributes.insert("name".to_owned(), name.to_owned());
    }
    engine.events.publish("image", action, id, attributes);
}

/// `POST /images/load`: the progress is a chunked stream of JSON messages,
/// one `Loaded image: NAME` (or `Loaded image ID: ID` for an untagged
/// image) per image, as dockerd writes it; a failure is the stream's last
/// message (`{"errorDetail": ..., "error": ...}`), after a `200`.
async fn load(State(state): State<AppState>, body: Body) -> ApiResult<Response> {
    let reader = BodyReader::spawn(body);
    let engine = state.engine.clone();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Value>(16);
    tokio::spawn(async move {
        let loaded = blocking(&engine, move |engine| archive::load(&engine.images, reader)).await;
        let lines = match loaded {
            Ok(loaded) => {
                let mut lines = Vec::new();
                for image in &loaded {
                    if image.tags.is_empty() {
                        lines.push(json!({ "stream": format!("Loaded image ID: {}\n", image.id) }));
                        publish(&engine, "load", &image.id, None);
                    }
                    for tag in &image.tags {
                        lines.push(json!({ "stream": format!("Loaded image: {tag}\n") }));
                        publish(&engine, "load", &image.id, Some(tag));
                    }
                }
                lines
            }
            Err(err) => {
                let message = err.message;
                vec![json!({ "errorDetail": { "message": message }, "error": message })]
            }
        };
        for line in lines {
            if sender.send(line).await.is_err() {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let value = receiver.recv().await?;
        let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), receiver))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn save_many(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let names: Vec<String> = query
        .into_iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v)
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "no images to save: pass names=<image>",
        ));
    }
    save(&state.engine, names).await
}

async fn save(engine: &Arc<Engine>, names: Vec<String>) -> ApiResult<Response> {
    let file = blocking(engine, move |engine| {
        let items = archive::resolve_for_save(&engine.images, &names)?;
        let path = engine
            .images
            .root()
            .join("tmp")
            .join(format!("save-{}.tar", image::store::random_name()));
        let result = (|| {
            let mut file =
                std::fs::File::create(&path).map_err(image::Error::io("create", &path))?;
            archive::save(&engine.images, &items, std::io::BufWriter::new(&mut file))?;
            std::fs::File::open(&path).map_err(image::Error::io("open", &path))
        })();
        // The open handle keeps the data; the name is not needed any more.
        let _ = std::fs::remove_file(&path);
        result
    })
    .await?;
    let file = tokio::fs::File::from_std(file);
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Docker's `ImageSummary` for `GET /images/json`.
fn summary(image: &Image) -> Value {
    json!({
        "Id": image.id,
        "ParentId": image.parent.clone().unwrap_or_default(),
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Created": created_unix(image),
        "Size": image.size,
        "SharedSize": -1,
        "Labels": image.config.config.labels.clone().unwrap_or_default(),
        "Containers": -1,
    })
}

fn created_unix(image: &Image) -> i64 {
    image
        .config
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(image.loaded_at, |t| t.timestamp())
}

/// A tiny glob (`*`, `?`) for the `reference` filter.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

fn reference_matches(image: &Image, pattern: &str) -> bool {
    image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .any(|name| {
            let repo = name.split_once('@').map_or_else(
                || {
                    Reference::parse(name)
                        .map(|r| r.familiar_name())
                        .unwrap_or_default()
                },
                |(repo, _)| repo.to_owned(),
            );
            glob(pattern, name) || glob(pattern, &repo)
        })
}

fn label_matches(image: &Image, wanted: &str) -> bool {
    let labels = image.config.config.labels.clone().unwrap_or_default();
    match wanted.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(wanted),
    }
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let images = blocking(&state.engine, |engine| engine.images.list()).await?;
    let created_of = |reference: &str| -> ApiResult<i64> {
        let image = images
            .iter()
            .find(|i| {
                i.id == reference
                    || i.repo_tags.iter().any(|t| t == reference)
                    || i.id.contains(reference)
            })
            .ok_or_else(|| ApiError::from(image::Error::NotFound(reference.to_owned())))?;
        Ok(created_unix(image))
    };
    let mut before = None;
    let mut since = None;
    for value in filters.get("before").into_iter().flatten() {
        before = Some(created_of(value)?);
    }
    for value in filters.get("since").into_iter().flatten() {
        since = Some(created_of(value)?);
    }
    for key in filters.keys() {
        if !matches!(
            key.as_str(),
            "reference" | "dangling" | "label" | "before" | "since"
        ) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
    }
    let dangling = filters
        .get("dangling")
        .and_then(|v| v.first())
        .map(|v| matches!(v.as_str(), "true" | "1"));
    // Untagged images with children are build intermediates: listed with
    // `all` only, and never dangling (as in Docker).
    let parents: std::collections::BTreeSet<&str> =
        images.iter().filter_map(|i| i.parent.as_deref()).collect();
    let show_all = truthy(query.get("all"));
    let out: Vec<Value> = images
        .iter()
        .filter(|image| {
            let intermediate = image.repo_tags.is_empty()
                && image.repo_digests.is_empty()
                && parents.contains(image.id.as_str());
            if intermediate && !show_all {
                return false;
            }
            let is_dangling = image.repo_tags.is_empty() && !intermediate;
            dangling.is_none_or(|d| d == is_dangling)
                && filters
                    .get("reference")
                    .is_none_or(|p| p.iter().any(|p| reference_matches(image, p)))
                && filters
                    .get("label")
                    .is_none_or(|l| l.iter().all(|l| label_matches(image, l)))
                && before.is_none_or(|b| created_unix(image) < b)
                && since.is_none_or(|s| created_unix(image) > s)
        })
        .map(summary)
        .collect();
    Ok(axum::Json(out).into_response())
}

/// Docker's full container-config shape, filled from the image config.
fn docker_config(image: &Image) -> Value {
    let mut config = json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
        "AttachStderr": false, "Tty": false, "OpenStdin": false, "StdinOnce": false, "Env": null,
        "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "", "Entrypoint": null,
        "OnBuild": null, "Labels": null,
    });
    if let (Some(base), Ok(Value::Object(own))) = (
        config.as_object_mut(),
        serde_json::to_value(&image.config.config),
    ) {
        base.extend(own);
    }
    config
}

fn inspect_json(image: &Image) -> Value {
    let lower: Vec<String> = image
        .layer_dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect();
    let created = image.config.created.clone().unwrap_or_else(|| {
        chrono::DateTime::from_timestamp(image.loaded_at, 0)
            .unwrap_or_default()
            .to_rfc3339()
    });
    let variant = image.config.extra.get("variant").cloned();
    let mut out = json!({
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": image.parent.clone().unwrap_or_default(),
        "Comment": image.config.extra.get("comment").cloned().unwrap_or(json!("")),
        "Created": created,
        "DockerVersion": image.config.extra.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": image.config.author.clone().unwrap_or_default(),
        "Config": docker_config(image),
        "Architecture": image.config.architecture,
        "Os": image.config.os,
        "Size": image.size,
        "GraphDriver": { "Name": "overlay2", "Data": { "LowerDir": lower.join(":") } },
        "RootFS": { "Type": "layers", "Layers": image.config.rootfs.diff_ids },
        "Metadata": { "LastTagTime": chrono::DateTime::from_timestamp(image.loaded_at, 0).unwrap_or_default().to_rfc3339() },
    });
    if let Some(variant) = variant {
        out["Variant"] = variant;
    }
    if let Some(m) = &image.manifest {
        out["Descriptor"] =
            json!({ "mediaType": m.media_type, "digest": m.digest, "size": m.size });
    }
    out
}

fn history_json(image: &Image) -> Value {
    let mut sizes = image.layers.iter().map(|l| l.size);
    let mut entries: Vec<Value> = Vec::new();
    let history = &image.config.history;
    if history.is_empty() {
        for layer in &image.layers {
            entries.push(json!({ "Id": "<missing>", "Created": created_unix(image), "CreatedBy": "", "Tags": null, "Size": layer.size, "Comment": "" }));
        }
    } else {
        for item in history {
            let size = if item.empty_layer {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            let created = item
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp());
            entries.push(json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": item.created_by.clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": item.comment.clone().unwrap_or_default(),
            }));
        }
    }
    entries.reverse();
    if let Some(top) = entries.first_mut() {
        top["Id"] = json!(image.id);
        top["Tags"] = json!(image.repo_tags);
    }
    Value::Array(entries)
}

/// Splits `name/suffix` on the last known action suffix.
fn split_action<'a>(rest: &'a str, actions: &[&'static str]) -> Option<(&'a str, &'static str)> {
    actions.iter().find_map(|action| {
        rest.strip_suffix(action)
            .and_then(|name| name.strip_suffix('/'))
            .filter(|n| !n.is_empty())
            .map(|n| (n, *action))
    })
}

async fn get_named(State(state): State<AppState>, Path(rest): Path<String>) -> ApiResult<Response> {
    let Some((name, action)) = split_action(&rest, &["json", "history", "get"]) else {
        return Err(ApiError::not_found(format!(
            "page not found: /images/{rest}"
        )));
    };
    let name = name.to_owned();
    if action == "get" {
        return save(&state.engine, vec![name]).await;
    }
    let lookup = name.clone();
    let image = blocking(&state.engine, move |engine| engine.images.get(&lookup)).await?;
    Ok(match action {
        "json" => axum::Json(inspect_json(&image)).into_response(),
        _ => axum::Json(history_json(&image)).into_response(),
    })
}

async fn post_named(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some((name, action)) = split_action(&rest, &["tag", "push"]) else {
        return Err(ApiError::not_found(format!(
            "page not found: /images/{rest}"
        )));
    };
    let name = name.to_owned();
    if action == "push" {
        return push(state, name, query, &headers).await;
    }
    let repo = query.get("repo").cloned().unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad_request(
            "repository name must have at least one component",
        ));
    }
    let target = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo,
    };
    let (id, tag) = blocking(&state.engine, move |engine| {
        engine.images.tag(&name, &target)
    })
    .await?;
    publish(&state.engine, "tag", &id, Some(&tag));
    Ok(StatusCode::CREATED.into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let force = truthy(query.get("force"));
    let items = blocking(&state.engine, move |engine| {
        engine
            .images
            .delete(&name, force, &|id: &str| engine.image_in_use(id))
    })
    .await?;
    Ok(axum::Json(delete_items(&state.engine, &items)).into_response())
}

fn delete_items(engine: &Engine, items: &[DeleteItem]) -> Vec<Value> {
    items
        .iter()
        .map(|item| match item {
            DeleteItem::Untagged { name, id } => {
                publish(engine, "untag", id, Some(name));
                json!({ "Untagged": name })
            }
            DeleteItem::Deleted(id) => {
                publish(engine, "delete", id, None);
                json!({ "Deleted": id })
            }
        })
        .collect()
}

async fn prune(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let filters = parse_filters(query.get("filters").map(String::as_str))?;
    let all = filters
        .get("dangling")
        .and_then(|v| v.first())
        .is_some_and(|v| matches!(v.as_str(), "false" | "0"));
    let (items, reclaimed) = blocking(&state.engine, move |engine| {
        engine
            .images
            .prune(all, &|id: &str| engine.image_in_use(id))
    })
    .await?;
    let deleted = delete_items(&state.engine, &items);
    Ok(
        axum::Json(json!({ "ImagesDeleted": deleted, "SpaceReclaimed": reclaimed }))
            .into_response(),
    )
}

/// Credentials from `X-Registry-Auth` (base64url JSON, padded or not).
fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    let raw = headers.get("X-Registry-Auth")?.to_str().ok()?.trim();
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim_end_matches('='))
        })
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(Credentials {
        username: field("username"),
        password: field("password"),
    })
}

fn progress_json(item: &Progress) -> Value {
    match item {
        Progress::Status {
            id: Some(id),
            status,
        } => json!({ "status": status, "progressDetail": {}, "id": id }),
        Progress::Status { id: None, status } => json!({ "status": status }),
        Progress::Bytes {
            id,
            action,
            current,
            total,
        } => json!({
            "status": action,
            "progressDetail": { "current": current, "total": total },
            "id": id,
        }),
    }
}

/// Streams `Progress` as JSON lines while `work` runs; its error (if any)
/// becomes Docker's in-stream `errorDetail` line.
fn progress_stream<F>(
    work: impl FnOnce(tokio::sync::mpsc::UnboundedSender<Progress>) -> F + Send + 'static,
) -> Response
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = work(sender).await;
        let _ = done_tx.send(result);
    });
    let lines = futures_util::stream::unfold(
        (receiver, Some(done_rx)),
        |(mut receiver, done)| async move {
            if let Some(item) = receiver.recv().await {
                let mut line = serde_json::to_vec(&progress_json(&item)).unwrap_or_default();
                line.push(b'\n');
                return Some((Ok::<_, std::io::Error>(Bytes::from(line)), (receiver, done)));
            }
            let result = done?
                .await
                .unwrap_or_else(|_| Err("pull task ended unexpectedly".to_owned()));
            let Err(message) = result else { return None };
            let mut line = serde_json::to_vec(
                &json!({ "errorDetail": { "message": message }, "error": message }),
            )
            .unwrap_or_default();
            line.push(b'\n');
            Some((Ok(Bytes::from(line)), (receiver, None)))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

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

async fn create(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if query.contains_key("fromSrc") {
        return crate::routes::build::import(state, pairs, body).await;
    }
    let Some(from) = query.get("fromImage").filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request(
            "missing fromImage (or fromSrc for an import)",
        ));
    };
    let name = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) if tag.starts_with("sha256:") => format!("{from}@{tag}"),
        Some(tag) => format!("{from}:{tag}"),
        None => from.clone(),
    };
    let reference = Reference::parse(&name).map_err(|source| image::Error::InvalidReference {
        reference: name.clone(),
        source,
    })?;
    let credentials = credentials(&headers);
    let engine = state.engine.clone();
    Ok(progress_stream(move |sender| async move {
        let pulled = image::pull::pull(
            engine.clone(),
            store_of,
            &reference,
            credentials.as_ref(),
            &sender,
        )
        .await;
        match pulled {
            Ok(pulled) => {
                publish(&engine, "pull", &pulled.id, Some(&pulled.name));
                Ok(())
            }
            Err(err) => Err(chain(&err)),
        }
    }))
}

async fn push(
    state: AppState,
    name: String,
    query: HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let target = match query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{name}:{tag}"),
        None => name,
    };
    let reference = Reference::parse(&target).map_err(|source| image::Error::InvalidReference {
        reference: target.clone(),
        source,
    })?;
    // Fail fast (a plain 404) when the image does not exist.
    let local = reference.clone().with_default_tag().familiar_tagged();
    let lookup = local.clone();
    blocking(&state.engine, move |engine| engine.images.get(&lookup)).await?;
    let credentials = credentials(&headers.clone());
    let engine = state.engine.clone();
    Ok(progress_stream(move |sender| async move {
        match image::pull::push(
            &engine.images,
            &local,
            &reference,
            credentials.as_ref(),
            &sender,
        )
        .await
        {
            Ok(digest) => {
                publish(&engine, "push", &digest, Some(&local));
                Ok(())
            }
            Err(err) => Err(chain(&err)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_action_keeps_slashes_in_names() {
        assert_eq!(
            split_action("localhost:5000/a/b:v1/json", &["json"]),
            Some(("localhost:5000/a/b:v1", "json"))
        );
        assert_eq!(
            split_action("busybox/history", &["json", "history"]),
            Some(("busybox", "history"))
        );
        assert_eq!(split_action("json", &["json"]), None);
    }

    #[test]
    fn glob_matches_docker_reference_patterns() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(!glob("busybox", "busybox:latest"));
        assert!(glob("b?sybox", "busybox"));
    }

    #[test]
    fn registry_auth_header_decodes_url_safe_base64() {
        let mut headers = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::URL_SAFE.encode(br#"{"username":"u","password":"p"}"#);
        headers.insert("X-Registry-Auth", encoded.parse().unwrap());
        let credentials = credentials(&headers).unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("u", "p")
        );
    }
}
