//! `/v1/feature-sets`: the registry, and ingest of rows.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{arrow_ipc, read_body, sends_arrow, stored};
use crate::auth::Access;
use crate::error::ApiResult;
use crate::service::{blocking, AppState};

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListParams {
    /// Adds each set's `stats` (rows, entities, newest event time, freshness): a count over
    /// each set's stored rows, so only on request.
    #[serde(default)]
    stats: bool,
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    if params.stats {
        Ok(Json(state.list_sets_with_stats(&access).await?))
    } else {
        Ok(Json(state.list_sets(&access)))
    }
}

/// 201 with the stored spec; 200 when the same spec already exists.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let (spec, created) = state.create_set(&access, &body).await?;
    Ok(stored(created, spec))
}

pub(super) async fn describe(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    Ok(Json(state.describe_set(name).await?))
}

/// `PUT /v1/feature-sets/{name}`: the body is the wanted spec, of that name.
pub(super) async fn update(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let body = read_body(&state, body).await?;
    let spec = featherstore_core::FeatureSetSpec::from_json(&body)?;
    if spec.name != name {
        return Err(featherstore_core::Error::invalid(format!(
            "the spec is of feature set {:?}, but the path names {name:?}",
            spec.name
        ))
        .into());
    }
    Ok(Json(state.update_set(&access, &body).await?))
}

pub(super) async fn versions(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    Ok(Json(state.list_versions(name).await?))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(name) = name?;
    state.delete_set(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Re-materialises a set's online values from this server's offline store (after Redis lost
/// its data, say): 200 `{"rows": n}`, the latest rows written.
pub(super) async fn rebuild_online(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let rows = state.rebuild_online(name).await?.finished.await?;
    Ok(Json(json!({ "rows": rows })))
}

/// JSON `{"rows": [...]}` or an Arrow IPC stream; either way one batch. 200 `{"rows": n}`.
pub(super) async fn ingest(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    state.require_set(&name)?;
    let body = read_body(&state, body).await?;
    let batch = if sends_arrow(&headers) {
        arrow_ipc::decode(body)?
    } else {
        // Straight into Arrow builders, on the blocking pool (a large body takes a while);
        // the body is freed once it is decoded, before the batch is stored.
        let set = state.store.get(&name)?;
        blocking(move || {
            Ok(featherstore_core::json::rows_body_to_batch(
                &set.spec, &body,
            )?)
        })
        .await?
    };
    let rows = state.ingest(name, batch).await?;
    Ok(Json(serde_json::json!({"rows": rows})))
}
