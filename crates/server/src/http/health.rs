//! `GET /health`: 200 `{"status": "ok", "online": {...}}` while the server can serve; 503
//! `{"status": "degraded", "stalled": [...], "online": {...}}` when its storage layer is
//! stalled or its online store (Redis) does not answer. `online` names the online backend and
//! its state (`ok`, `unavailable`, or `unknown` when not checked).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use featherstore_core::ErrorCode;
use featherstore_store::query::Purpose;
use serde_json::{json, Value};

use crate::error::http_status;
use crate::service::AppState;

/// The longest the probe waits for a connection: a probe must answer fast.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn health(State(state): State<AppState>) -> Response {
    let Checked { stalled, online } = check(&state).await;
    if stalled.is_empty() {
        Json(json!({"status": "ok", "online": online})).into_response()
    } else {
        // Not an error body, but an unavailable server all the same: its status and its
        // `code` label come from the one mapping.
        let code = ErrorCode::Unavailable;
        let mut response = (
            http_status(code),
            Json(json!({"status": "degraded", "stalled": stalled, "online": online})),
        )
            .into_response();
        response.extensions_mut().insert(code);
        response
    }
}

/// What the health check found: the stalled components (none when the server can serve)
/// and the online store's backend and state.
pub(super) struct Checked {
    pub stalled: Vec<Value>,
    pub online: Value,
}

/// Storage is stalled when a storage call has waited for a connection longer than
/// `limits.storage_stall_seconds`, or when the probe gets no connection (for reads, or for
/// writes) within a second.
pub(super) async fn check(state: &AppState) -> Checked {
    let threshold = state.guards.storage_stall;
    let mut stalled: Vec<Value> = Vec::new();
    if let Some(waiting) = state.store.storage_waiting() {
        if waiting.waited >= threshold {
            stalled.push(json!({
                "component": "storage",
                "purpose": waiting.purpose.as_str(),
                "reason": format!(
                    "{} storage calls wait for a connection, the longest for {:.1} s",
                    waiting.waiters,
                    waiting.waited.as_secs_f64()
                ),
            }));
        }
    }
    // The online store's state, checked with the storage probe (a remote one answers within
    // its timeout).
    let mut online = json!({"backend": state.store.online_backend_name(), "state": "unknown"});
    if stalled.is_empty() {
        let probe = PROBE_TIMEOUT.min(threshold);
        let store = state.store.clone();
        let probed = crate::priority::spawn_storage_work(move || {
            let failed = [Purpose::Read, Purpose::Write]
                .into_iter()
                .filter(|&purpose| !store.probe_storage(purpose, probe))
                .collect::<Vec<_>>();
            (failed, store.check_online())
        });
        // The blocking pool itself may be saturated: that is a stall as well.
        match tokio::time::timeout(probe * 3, probed).await {
            Ok(Ok((failed, online_check))) => {
                stalled.extend(failed.into_iter().map(|purpose| {
                    json!({
                        "component": "storage",
                        "purpose": purpose.as_str(),
                        "reason": format!(
                            "no connection for {} became free within {:.1} s",
                            purpose.as_str(),
                            probe.as_secs_f64()
                        ),
                    })
                }));
                online["state"] = json!(if online_check.is_ok() {
                    "ok"
                } else {
                    "unavailable"
                });
                if let Err(e) = online_check {
                    stalled.push(json!({"component": "online_store", "reason": e.to_string()}));
                }
            }
            Ok(Err(e)) => stalled.push(json!({
                "component": "storage",
                "reason": format!("the storage probe failed: {e}"),
            })),
            Err(_elapsed) => stalled.push(json!({
                "component": "blocking_pool",
                "reason": "no thread for storage work became free",
            })),
        }
    }
    Checked { stalled, online }
}
