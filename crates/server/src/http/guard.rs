//! Limits of the HTTP API, as middleware: admission (concurrent requests, a client's
//! concurrent streams) held until the response body ends, and the request timeout.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;

use crate::limits::Guarded;
use crate::service::AppState;
use crate::telemetry::metrics::Api;

/// Routes whose answers are streams (counted against the client's streams).
const STREAMS: [&str; 2] = ["/v1/history", "/v1/training-data"];
/// Routes never refused for load.
const UNLIMITED: [&str; 2] = ["/health", "/metrics"];

/// Admits the request (or answers 503 / 429 at once) and holds its place until its response
/// body is done.
pub(super) async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // The probes must answer however busy the server is.
    if UNLIMITED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let stream = STREAMS.contains(&request.uri().path());
    let permit = match state.guards.admit(Api::Http, peer, stream) {
        Ok(permit) => permit,
        Err(refused) => return refused.into_response(),
    };
    let response = next.run(request).await;
    response.map(|body| {
        Body::new(Guarded {
            body,
            _guard: permit,
        })
    })
}

/// Whether a request stores something: never cut by the request timeout (a write reported as
/// failed must not be stored); its waits are bounded instead (body idle timeout, ingest and
/// storage waits).
fn is_write(method: &Method, route: &str) -> bool {
    match *method {
        Method::DELETE => true,
        Method::POST => route.starts_with("/v1/feature-sets"),
        _ => false,
    }
}

/// Ends a read that has not started its response within `request_timeout_seconds` with 504.
pub(super) async fn timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    if is_write(request.method(), route) {
        return next.run(request).await;
    }
    match tokio::time::timeout(state.guards.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => state.guards.timed_out().into_response(),
    }
}
