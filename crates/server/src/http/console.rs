//! The web console: its assets, built from `console/` into `console-dist/` and compiled into
//! the binary (nothing is fetched at run time), served at `/ui` without a token (the console
//! asks for one and sends it with its API calls); `/` redirects there. And
//! `GET /v1/server/stats`, the JSON of its server page.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use featherstore_core::time::{format_timestamp, now_micros};
use http::{header, HeaderValue};
use serde_json::{json, Value};

use super::health;
use crate::error::{ApiError, ApiResult};
use crate::service::AppState;

/// Where the console lives.
pub(super) const UI: &str = "/ui";

/// A built asset: its path under `/ui/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console-dist/", $path)),
        }
    };
}

/// Every file of `console-dist/` (the build names them without hashes: see
/// `console/vite.config.js`); a test checks that none is left out.
const ASSETS: [Asset; 3] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("assets/console.js", "text/javascript; charset=utf-8"),
    asset!("assets/console.css", "text/css; charset=utf-8"),
];

/// Scripts and styles from the console's own origin only; API calls to the same origin.
/// (uPlot sizes its elements with inline styles.)
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /`: to the console.
pub(super) async fn root() -> Redirect {
    Redirect::temporary(UI)
}

/// `GET /ui` and `GET /ui/`: the console's page.
pub(super) async fn index() -> Response {
    serve(&ASSETS[0])
}

/// `GET /ui/{*path}`: one of its assets.
pub(super) async fn asset(path: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    let Path(path) = path?;
    ASSETS
        .iter()
        .find(|asset| asset.path == path)
        .map(serve)
        .ok_or_else(|| {
            featherstore_core::Error::not_found(format!("the console has no file {path:?}")).into()
        })
}

fn serve(asset: &Asset) -> Response {
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Names carry no content hash: a browser must ask again after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /v1/server/stats`: the server's version, its storage backend and state (the health
/// check's), sizes, and its request metrics as JSON (see `Metrics::request_summary`).
pub(super) async fn stats(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let checked = health::check(&state).await;
    let store = state.store.clone();
    let total = crate::priority::spawn_storage_work(move || store.storage_total())
        .await
        .map_err(|e| ApiError::Internal(format!("reading the storage size failed: {e}")))??;
    let storage_state = if checked
        .stalled
        .iter()
        .any(|s| s["component"] != "online_store")
    {
        "degraded"
    } else {
        "ok"
    };
    let mut answer = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "time": format_timestamp(now_micros()),
        "status": if checked.stalled.is_empty() { "ok" } else { "degraded" },
        "storage": {
            "backend": state.metrics.backend(),
            "state": storage_state,
            "bytes": total.map(|t| t.bytes),
            "files": total.map(|t| t.files),
        },
        "online": checked.online,
        "stalled": checked.stalled,
        "feature_sets": state.store.list().len(),
        "feature_services": state.store.list_services().len(),
    });
    if let (Value::Object(answer), Value::Object(requests)) =
        (&mut answer, state.metrics.request_summary())
    {
        answer.extend(requests);
    }
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the console build wrote is served: a new asset type (a font, an image) must
    /// be added to [`ASSETS`].
    #[test]
    fn every_built_file_is_served() {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console-dist");
        let mut files = Vec::new();
        let mut dirs = vec![dist.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(
                        path.strip_prefix(&dist)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        files.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(files, served);
    }
}
