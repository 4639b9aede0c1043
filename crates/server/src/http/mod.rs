//! The HTTP/REST API (PROTOCOL.md, "HTTP"): JSON by default, Arrow IPC streams on request.

mod arrow_ipc;
mod console;
mod feature_services;
mod feature_sets;
mod guard;
mod health;
mod profile;
mod retrieval;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use featherstore_core::ErrorCode;
use http::{header, HeaderMap};
use tracing::Instrument;

use crate::auth::{Authenticator, HttpAuth};
use crate::error::{ApiError, ApiResult};
use crate::limits::Rejection;
use crate::service::AppState;
use crate::telemetry::metrics::Api;
use crate::telemetry::traces;

pub(crate) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The API router; with an authenticator, every route but `/health` and the console's
/// assets (`/`, `/ui`) needs a token.
pub(crate) fn router(state: AppState, authenticator: Option<Arc<Authenticator>>) -> Router {
    let auth = HttpAuth {
        authenticator,
        metrics: state.metrics.clone(),
    };
    Router::new()
        .route("/health", get(health::health))
        .route(
            "/v1/feature-sets",
            get(feature_sets::list).post(feature_sets::create),
        )
        .route(
            "/v1/feature-sets/{name}",
            get(feature_sets::describe)
                .put(feature_sets::update)
                .delete(feature_sets::delete),
        )
        .route(
            "/v1/feature-sets/{name}/versions",
            get(feature_sets::versions),
        )
        .route(
            "/v1/feature-sets/{name}/distribution",
            get(profile::distribution),
        )
        .route("/v1/feature-sets/{name}/freshness", get(profile::freshness))
        .route("/v1/feature-sets/{name}/rows", post(feature_sets::ingest))
        .route(
            "/v1/feature-sets/{name}/online/rebuild",
            post(feature_sets::rebuild_online),
        )
        .route(
            "/v1/feature-services",
            get(feature_services::list).post(feature_services::create),
        )
        .route(
            "/v1/feature-services/{name}",
            get(feature_services::describe).delete(feature_services::delete),
        )
        .route("/v1/online", post(retrieval::online))
        .route("/v1/history", post(retrieval::history))
        .route("/v1/training-data", post(retrieval::training_data))
        .route("/v1/server/stats", get(console::stats))
        .route("/metrics", get(metrics))
        .route("/", get(console::root))
        .route(console::UI, get(console::index))
        .route("/ui/", get(console::index))
        .route("/ui/{*path}", get(console::asset))
        .fallback(not_found)
        // Bodies are read with the configured limit by `read_body`, which answers 413 with
        // the JSON error body instead of axum's plain-text one.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard::admit))
        .layer(middleware::from_fn_with_state(
            auth,
            crate::auth::http_layer,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The router of the metrics port: `/metrics` only.
pub(crate) fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Reads index and file sizes: off the async workers.
    match crate::priority::spawn_storage_work(move || state.metrics.render(&state.store)).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::Internal(format!("rendering the metrics failed: {e}")).into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    featherstore_core::Error::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
    .into()
}

/// Wraps every request in a span (joined to the caller's trace by its `traceparent` header)
/// and records its count, duration and outcome.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight(Api::Http);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = format!("{} {route}", request.method());
    let span = traces::http_span(&method, request.method(), &route, request.headers());
    if route.starts_with("/v1/feature-sets/{name}") {
        if let Some(name) = request.uri().path().split('/').nth(3) {
            span.record("feature_set", name);
        }
    }
    let response = next.run(request).instrument(span.clone()).await;
    if let Some(reason) = response.extensions().get::<Rejection>() {
        state.metrics.rejected(Api::Http, *reason);
    }
    let code = code_label(&response);
    let elapsed = started.elapsed();
    state.metrics.observe("http", &method, code, elapsed);
    traces::finish(&span, code, Some(response.status()), elapsed);
    response
}

/// The `code` label of an answer: the code an error response carries (see
/// `ApiError::into_response`), `ok` for a success or a redirect (`/` to the console). Anything else is an answer of the HTTP
/// framework itself (405 for a method a route does not take): `other`.
fn code_label(response: &Response) -> &'static str {
    match response.extensions().get::<ErrorCode>() {
        Some(code) => code.as_str(),
        None if response.status().is_success() || response.status().is_redirection() => "ok",
        None => "other",
    }
}

/// Reads a whole request body, refusing more than the configured limit with 413, and a
/// client that sends nothing for the stream idle timeout with 504.
pub(crate) async fn read_body(state: &AppState, body: Body) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let limit = state.max_message_bytes;
    let mut limited = http_body_util::Limited::new(body, limit);
    let mut collected = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout(state.guards.stream_idle, limited.frame())
            .await
            .map_err(|_| state.guards.input_idle("reading the request body"))?;
        match frame {
            None => return Ok(collected.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    collected.extend_from_slice(&data);
                }
            }
            Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::too_large(format!(
                    "request body over the limit of {limit} bytes"
                )))
            }
            Some(Err(e)) => {
                return Err(ApiError::invalid(format!(
                    "reading the request body failed: {e}"
                )))
            }
        }
    }
}

/// Whether the request asks for an Arrow IPC stream answer.
pub(crate) fn wants_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM))
}

/// Whether the request body is an Arrow IPC stream.
pub(crate) fn sends_arrow(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ARROW_STREAM))
}

/// The answer of a create route: 201 with the stored document, or 200 when the same one was
/// stored already.
pub(crate) fn stored(created: bool, document: serde_json::Value) -> Response {
    let status = if created {
        http::StatusCode::CREATED
    } else {
        http::StatusCode::OK
    };
    (status, axum::Json(document)).into_response()
}

pub(crate) fn streamed(content_type: &'static str, body: Body) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
