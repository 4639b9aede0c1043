//! `/v1/feature-services`: the registry of feature services.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::response::Response;
use axum::Json;
use http::StatusCode;
use serde_json::Value;

use super::{read_body, stored};
use crate::auth::Access;
use crate::error::ApiResult;
use crate::service::AppState;

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
) -> Json<Value> {
    Json(state.list_services(&access))
}

/// 201 with the stored service; 200 when the same service already exists.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    body: Body,
) -> ApiResult<Response> {
    let body = read_body(&state, body).await?;
    let (service, created) = state.create_service(&access, &body).await?;
    Ok(stored(created, service))
}

pub(super) async fn describe(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    Ok(Json(state.describe_service(&access, &name)?))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(name) = name?;
    state.delete_service(&access, name).await?;
    Ok(StatusCode::NO_CONTENT)
}
