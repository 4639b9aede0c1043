//! The web console over loopback, on both backends: its assets at `/ui`, and the JSON routes
//! it reads (distribution, freshness, the set list with stats, server stats) with their
//! validation and limits; with auth on, the assets open and the data behind a read token.

use featherstore_server::config::{AuthConfig, Backend, Scope, TokenConfig};
use featherstore_testkit::http::{assert_error, ipc_body, send, ARROW};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A server on `backend` holding `user_features`: ages 0 to 9 (event times one hour apart from
/// 2026-01-01T00:00:00Z, one user each), a row without an age, and click rates of which one
/// is NaN and one null.
async fn with_rows(backend: Backend) -> TestServer {
    let (server, _) = TestServer::with_set(backend, USER_SPEC).await;
    let base_seconds = 1_767_225_600;
    let names: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
    let mut rows: Vec<(&str, Option<i64>, Option<f32>, i64)> = (0..10)
        .map(|i| {
            let ctr = match i {
                0 => Some(f32::NAN),
                1 => None,
                _ => Some(i as f32 / 10.0),
            };
            (
                names[i].as_str(),
                Some(i as i64),
                ctr,
                base_seconds + 3_600 * i as i64,
            )
        })
        .collect();
    rows.push((names[10].as_str(), None, Some(0.5), base_seconds));
    let stored = send(
        http()
            .post(format!(
                "{}/v1/feature-sets/user_features/rows",
                server.http
            ))
            .header("content-type", ARROW)
            .body(ipc_body(&[user_batch(&rows)])),
    )
    .await;
    assert_eq!(stored, (StatusCode::OK, json!({"rows": 11})));
    server
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    send(http().get(format!("{}{path}", server.http))).await
}

/// `GET path`, which must answer 200: its JSON body.
async fn ok(server: &TestServer, path: &str) -> Value {
    let (status, body) = get(server, path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{:?} {path}: {body}",
        server.backend
    );
    body
}

/// Values counted in a distribution's bins.
fn binned(distribution: &Value) -> u64 {
    distribution["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum()
}

/// The server stats' row of one HTTP route.
fn requests_of<'a>(stats: &'a Value, method: &str) -> &'a Value {
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["api"] == "http" && r["method"] == method)
        .unwrap_or_else(|| panic!("no {method} in {stats}"))
}

#[tokio::test]
async fn distribution_bins_a_sample_of_the_stored_rows() {
    for backend in BACKENDS {
        let server = with_rows(backend).await;
        let ages = ok(
            &server,
            "/v1/feature-sets/user_features/distribution?feature=age&bins=5",
        )
        .await;
        assert_eq!(ages["type"], "int64");
        assert_eq!(
            ages["sampled"], 11,
            "{backend:?}: every row when the set holds fewer"
        );
        assert_eq!(
            (ages["nulls"].as_u64(), ages["non_finite"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(
            (ages["min"].as_f64(), ages["max"].as_f64()),
            (Some(0.0), Some(9.0))
        );
        assert_eq!(ages["mean"].as_f64(), Some(4.5));
        let bins = ages["bins"].as_array().unwrap();
        let counts: Vec<u64> = bins.iter().map(|b| b["count"].as_u64().unwrap()).collect();
        // [0, 1.8), [1.8, 3.6), [3.6, 5.4), [5.4, 7.2), [7.2, 9]: the last bin holds 9.
        assert_eq!(counts, [2, 2, 2, 2, 2], "{backend:?}: {bins:?}");
        assert_eq!(
            (bins[0]["lower"].as_f64(), bins[4]["upper"].as_f64()),
            (Some(0.0), Some(9.0))
        );

        let ctr = ok(
            &server,
            "/v1/feature-sets/user_features/distribution?feature=ctr_7d&bins=3",
        )
        .await;
        assert_eq!(
            (ctr["nulls"].as_u64(), ctr["non_finite"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(binned(&ctr), 9, "NaN and null are in no bin: {ctr}");

        // A sample smaller than the set: exactly that many rows, each counted once.
        let sampled = ok(
            &server,
            "/v1/feature-sets/user_features/distribution?feature=age&sample=4&bins=200",
        )
        .await;
        assert_eq!(sampled["sampled"], 4);
        let nulls = sampled["nulls"].as_u64().unwrap();
        assert_eq!(binned(&sampled) + nulls, 4, "{sampled}");
    }
}

#[tokio::test]
async fn distribution_of_a_constant_or_empty_feature() {
    for backend in BACKENDS {
        let (server, _) = TestServer::with_set(backend, USER_SPEC).await;
        let empty = ok(
            &server,
            "/v1/feature-sets/user_features/distribution?feature=age",
        )
        .await;
        assert_eq!(empty["sampled"], 0);
        assert_eq!(empty["bins"], json!([]));
        assert_eq!(empty["min"], Value::Null);

        let rows = json!({"rows": [
            {"user_id": "a", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7},
            {"user_id": "b", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7}
        ]});
        let stored = send(
            http()
                .post(format!(
                    "{}/v1/feature-sets/user_features/rows",
                    server.http
                ))
                .json(&rows),
        )
        .await;
        assert_eq!(stored.0, StatusCode::OK);
        let (_, constant) = get(
            &server,
            "/v1/feature-sets/user_features/distribution?feature=age&bins=10",
        )
        .await;
        assert_eq!(
            constant["bins"],
            json!([{"lower": 7.0, "upper": 7.0, "count": 2}]),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn distribution_refuses_bad_requests() {
    let server = with_rows(Backend::Duckdb).await;
    let path = "/v1/feature-sets/user_features/distribution";
    for (query, needle) in [
        ("", "feature"),
        ("?feature=nope", "no feature \"nope\""),
        ("?feature=embedding", "numeric features"),
        ("?feature=age&sample=0", "between 1 and 100000"),
        ("?feature=age&sample=100001", "between 1 and 100000"),
        ("?feature=age&sample=-1", "sample"),
        ("?feature=age&sample=1e3", "sample"),
        ("?feature=age&sample=99999999999999999999999", "sample"),
        ("?feature=age&bins=0", "between 1 and 200"),
        ("?feature=age&bins=201", "between 1 and 200"),
        ("?feature=age&bins=x", "bins"),
        ("?feature=age&feature=ctr_7d", "feature"),
        ("?feature=age&limit=5", "limit"),
        ("?feature=age&%ff=1", ""),
    ] {
        let answer = get(&server, &format!("{path}{query}")).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", needle);
    }
    let missing = get(&server, "/v1/feature-sets/nope/distribution?feature=age").await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", "nope");
    // Nothing refused was counted as a server fault.
    let stats = ok(&server, "/v1/server/stats").await;
    let route = requests_of(&stats, "GET /v1/feature-sets/{name}/distribution");
    assert_eq!(route["count"], 15);
    assert_eq!(route["errors"], 15);
}

#[tokio::test]
async fn freshness_follows_ingest_over_time() {
    for backend in BACKENDS {
        let server = with_rows(backend).await;
        let series = ok(
            &server,
            "/v1/feature-sets/user_features/freshness?bucket=1h",
        )
        .await;
        assert_eq!(series["bucket_seconds"], 3_600);
        let buckets = series["buckets"].as_array().unwrap();
        // One ingest, now: the bucket holding it is the last one.
        let last = buckets.last().unwrap();
        let rows: u64 = buckets.iter().map(|b| b["rows"].as_u64().unwrap()).sum();
        assert_eq!(rows, 11, "{series}");
        assert_eq!(last["latest_event_timestamp"], "2026-01-01T09:00:00Z");
        // Rows were stored now (December 2026 or later), the newest event is of January.
        let freshness = last["freshness_seconds"].as_f64().unwrap();
        assert!(freshness > 300.0 * 86_400.0, "{freshness}");
        assert!(last["max_lag_seconds"].as_f64().unwrap() >= freshness);
        let start = last["start"].as_str().unwrap();
        assert!(
            start.ends_with(":00:00Z"),
            "buckets are aligned on the hour: {start}"
        );

        // Earlier than the first ingest: buckets with nothing in them yet.
        let before = ok(
            &server,
            "/v1/feature-sets/user_features/freshness?bucket=1d&start=2026-01-01&end=2026-01-03",
        )
        .await;
        assert_eq!(
            before["buckets"],
            json!([
                {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "rows": 0,
                 "latest_event_timestamp": null, "freshness_seconds": null, "max_lag_seconds": null},
                {"start": "2026-01-02T00:00:00Z", "end": "2026-01-03T00:00:00Z", "rows": 0,
                 "latest_event_timestamp": null, "freshness_seconds": null, "max_lag_seconds": null}
            ]),
            "{backend:?}"
        );

        // The server picks a width when none is given; a set without rows has no buckets.
        let (_, auto) = get(&server, "/v1/feature-sets/user_features/freshness").await;
        assert_eq!(auto["bucket_seconds"], 60);
        let empty_spec = USER_SPEC.replace("user_features", "empty_features");
        let created = send(
            http()
                .post(format!("{}/v1/feature-sets", server.http))
                .body(empty_spec),
        )
        .await;
        assert_eq!(created.0, StatusCode::CREATED);
        let (_, empty) = get(&server, "/v1/feature-sets/empty_features/freshness").await;
        assert_eq!(empty["buckets"], json!([]), "{backend:?}");
    }
}

#[tokio::test]
async fn freshness_refuses_bad_requests() {
    let server = with_rows(Backend::Parquet).await;
    let path = "/v1/feature-sets/user_features/freshness";
    for (query, needle) in [
        ("?bucket=0", "invalid bucket"),
        ("?bucket=1.5h", "invalid bucket"),
        ("?bucket=1w", "invalid bucket"),
        ("?bucket=-60", "invalid bucket"),
        ("?bucket=367d", "invalid bucket"),
        ("?bucket=99999999999999999999999999", "invalid bucket"),
        ("?bucket=1s&start=2000-01-01", "at most 1000"),
        ("?start=2026-01-02&end=2026-01-01", "before end"),
        ("?start=yesterday", "invalid timestamp"),
        ("?end=99999-01-01", "invalid timestamp"),
        ("?buckets=5", "buckets"),
    ] {
        let answer = get(&server, &format!("{path}{query}")).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", needle);
    }
    let missing = get(&server, "/v1/feature-sets/nope/freshness").await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", "nope");
}

#[tokio::test]
async fn the_set_list_can_carry_stats() {
    for backend in BACKENDS {
        let server = with_rows(backend).await;
        let plain = ok(&server, "/v1/feature-sets").await;
        assert!(plain[0].get("stats").is_none(), "{plain}");
        let listed = ok(&server, "/v1/feature-sets?stats=true").await;
        let stats = &listed[0]["stats"];
        assert_eq!(
            (stats["rows"].as_u64(), stats["entities"].as_u64()),
            (Some(11), Some(11))
        );
        assert_eq!(stats["latest_event_timestamp"], "2026-01-01T09:00:00Z");
        assert!(
            stats["freshness_seconds"].as_f64().unwrap() > 0.0,
            "{backend:?}"
        );
        let bad = get(&server, "/v1/feature-sets?stats=maybe").await;
        assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_argument", "stats");
    }
}

#[tokio::test]
async fn server_stats_report_backend_state_and_requests() {
    for backend in BACKENDS {
        let server = with_rows(backend).await;
        for _ in 0..3 {
            assert_eq!(get(&server, "/v1/feature-sets").await.0, StatusCode::OK);
        }
        let stats = ok(&server, "/v1/server/stats").await;
        let name = match backend {
            Backend::Duckdb => "duckdb",
            Backend::Parquet => "parquet",
            Backend::Delta => "delta",
        };
        assert_eq!(stats["storage"]["backend"], name);
        assert_eq!(stats["storage"]["state"], "ok");
        assert_eq!(stats["status"], "ok");
        assert_eq!(stats["online"], json!({"backend": "memory", "state": "ok"}));
        assert_eq!(stats["feature_sets"], 1);
        assert!(stats["storage"]["bytes"].as_u64().unwrap() > 0, "{stats}");
        let list = requests_of(&stats, "GET /v1/feature-sets");
        assert_eq!(
            (list["count"].as_u64(), list["errors"].as_u64()),
            (Some(3), Some(0))
        );
        let (p50, p99) = (
            list["p50_ms"].as_f64().unwrap(),
            list["p99_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{list}");
        let http_latency = &stats["latency"]["http"];
        let cumulative = http_latency["cumulative"].as_array().unwrap();
        assert_eq!(
            cumulative.len(),
            http_latency["bounds_ms"].as_array().unwrap().len() + 1
        );
        assert_eq!(cumulative.last(), Some(&http_latency["count"]));
        // Every earlier HTTP request was counted (the ingest, the three lists).
        assert_eq!(http_latency["count"], 4, "{stats}");
        assert_eq!(
            stats["latency"]["flight"]["count"], 1,
            "the create: {stats}"
        );
    }
}

#[tokio::test]
async fn the_console_is_served_from_the_binary() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client
        .get(format!("{}/", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(root.headers()["location"], "/ui");
    for (path, content_type, needle) in [
        ("/ui", "text/html", "<title>FeatherStore console</title>"),
        ("/ui/", "text/html", "/ui/assets/console.js"),
        (
            "/ui/assets/console.js",
            "text/javascript",
            "/v1/feature-sets",
        ),
        ("/ui/assets/console.css", "text/css", ".uplot"),
    ] {
        let response = client
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert!(headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle:?}");
    }
    for path in [
        "/ui/nope.js",
        "/ui/../Cargo.toml",
        "/ui/assets/../index.html/x",
        "/ui/%2e%2e/x",
    ] {
        let answer = send(client.get(format!("{}{path}", server.http))).await;
        assert_eq!(answer.0, StatusCode::NOT_FOUND, "{path}: {}", answer.1);
    }
    let posted = client
        .post(format!("{}/ui", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
}

const READER: &str = "reader-token-0123456789";
const INGESTER: &str = "ingester-token-0123456789";

#[tokio::test]
async fn with_auth_on_the_assets_are_open_and_the_data_needs_a_read_token() {
    let server = TestServer::start_with(Backend::Parquet, |config| {
        config.auth = AuthConfig {
            tokens: vec![
                TokenConfig::inline("reader", READER, &[Scope::Read]),
                TokenConfig::inline("ingester", INGESTER, &[Scope::Write]),
            ],
            allow_unauthenticated: false,
        };
    })
    .await;
    for path in ["/ui", "/ui/assets/console.js"] {
        let response = http()
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    for path in [
        "/v1/server/stats",
        "/v1/feature-sets?stats=true",
        "/v1/feature-sets/user_features/freshness",
        "/v1/feature-sets/user_features/distribution?feature=age",
    ] {
        let url = format!("{}{path}", server.http);
        let anonymous = send(http().get(&url)).await;
        assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthenticated", "");
        let writer = send(http().get(&url).bearer_auth(INGESTER)).await;
        assert_error(&writer, StatusCode::FORBIDDEN, "forbidden", "read");
        let reader = send(http().get(&url).bearer_auth(READER)).await;
        // The set does not exist: past auth, the route answers.
        assert!(
            reader.0 == StatusCode::OK || reader.0 == StatusCode::NOT_FOUND,
            "{path}: {reader:?}"
        );
    }
}
