//! `/v1/feature-sets`: the registry, and ingest of rows.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{arrow_ipc, parse_json, read_body, sends_arrow};
use crate::auth::Access;
use crate::error::ApiResult;
use crate::service::AppState;

pub async fn list(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
) -> Json<Value> {
    Json(state.list_sets(&access))
}

/// 201 with the stored spec; 200 when the same spec already exists.
pub async fn create(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let (spec, created) = state.create_set(&access, &body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(spec)).into_response())
}

pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.describe_set(name).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.delete_set(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowsBody {
    rows: Vec<Map<String, Value>>,
}

/// JSON `{"rows": [...]}` or an Arrow IPC stream; either way one batch. 200 `{"rows": n}`.
pub async fn ingest(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.require_set(&name)?;
    let body = read_body(&state, body).await?;
    let batch = if sends_arrow(&headers) {
        arrow_ipc::decode(body)?
    } else {
        let rows: RowsBody = parse_json(&body, "rows body (expected {\"rows\": [{...}, ...]})")?;
        let set = state.store.get(&name)?;
        featherstore_core::json::rows_to_batch(&set.spec, &rows.rows)?
    };
    let rows = state.ingest(name, batch).await?;
    Ok(Json(serde_json::json!({"rows": rows})))
}
