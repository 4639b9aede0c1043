//! The Redis online backend end to end: servers sharing one real Redis (values and registry),
//! and Redis going away and coming back. Each test starts its own `redis-server` on a free
//! loopback port (scripts/setup-redis.sh installs it).

use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use featherstore_server::config::{Backend, OnlineBackend};
use featherstore_testkit::certs::TestCerts;
use featherstore_testkit::flight::get;
use featherstore_testkit::http::{assert_error, get_json, metric, post_json, send};
use featherstore_testkit::redis::Redis;
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn server_on(redis: &Redis, backend: Backend, timeout_ms: u64) -> TestServer {
    server_in(tempdir(), redis, backend, timeout_ms).await
}

/// [`server_on`] a data directory (a restart).
async fn server_in(
    dir: tempfile::TempDir,
    redis: &Redis,
    backend: Backend,
    timeout_ms: u64,
) -> TestServer {
    let url = redis.url();
    let cluster = redis.is_cluster();
    TestServer::start_in(dir, backend, move |config| {
        config.online.backend = OnlineBackend::Redis;
        config.online.redis.url = url;
        config.online.redis.cluster = cluster;
        config.online.redis.timeout_ms = timeout_ms;
    })
    .await
}

fn online_ticket(entities: &[&str]) -> Value {
    json!({"feature_set": "user_features", "entities": entities, "features": ["age"]})
}

/// The same read as a Flight DoGet ticket.
fn flight_ticket(entities: &[&str]) -> Value {
    let mut ticket = online_ticket(entities);
    ticket["type"] = json!("online");
    ticket
}

/// Creates `user_features` through the server at `base`.
async fn create_user_set(base: &str) {
    let created = send(
        http()
            .post(format!("{base}/v1/feature-sets"))
            .body(USER_SPEC),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
}

async fn ingest(base: &str, rows: Value) -> (StatusCode, Value) {
    post_json(&format!("{base}/v1/feature-sets/user_features/rows"), &rows).await
}

#[tokio::test]
async fn two_servers_share_the_registry_and_the_values() {
    for redis in [Redis::single(), Redis::cluster()] {
        let a = server_on(&redis, Backend::Duckdb, 1000).await;
        let b = server_on(&redis, Backend::Parquet, 1000).await;
        let created = send(
            http()
                .post(format!("{}/v1/feature-sets", a.http))
                .body(USER_SPEC),
        )
        .await;
        assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);

        // Created through A: usable through B within a second, without a restart.
        eventually(Duration::from_secs(1), "the set on B", || async {
            get_json(&format!("{}/v1/feature-sets/user_features", b.http))
                .await
                .0
                == StatusCode::OK
        })
        .await;

        let rows = json!({"rows": [
            {"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 30},
            {"user_id": "u2", "event_timestamp": "2026-01-01T00:00:00Z", "age": 40}
        ]});
        assert_eq!(
            ingest(&a.http, rows).await,
            (StatusCode::OK, json!({"rows": 2}))
        );
        // Acknowledged by A: visible through B, over HTTP and Flight.
        let read = post_json(
            &format!("{}/v1/online", b.http),
            &online_ticket(&["u2", "zz", "u1"]),
        )
        .await;
        assert_eq!(read.0, StatusCode::OK, "{}", read.1);
        let ages: Vec<Value> = read.1["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["age"].clone())
            .collect();
        assert_eq!(ages, [json!(40), Value::Null, json!(30)]);
        let mut flight = b.flight().await;
        let batches = get(&mut flight, flight_ticket(&["u1", "u2"]))
            .await
            .unwrap();
        let batch = concat(&batches);
        let ages: Vec<_> = batch.column(1).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(ages, [Some(30), Some(40)]);

        // An older event through B never rolls back A's newer value.
        let older = json!({"rows": [{"user_id": "u1", "event_timestamp": "2025-01-01T00:00:00Z", "age": 1}]});
        assert_eq!(ingest(&b.http, older).await.0, StatusCode::OK);
        let read = post_json(&format!("{}/v1/online", a.http), &online_ticket(&["u1"])).await;
        assert_eq!(read.1["rows"][0]["age"], 30);

        // A gone at once (its tasks aborted, no shutdown): B keeps serving.
        drop(a);
        let read = post_json(&format!("{}/v1/online", b.http), &online_ticket(&["u1"])).await;
        assert_eq!(read.1["rows"][0]["age"], 30);

        // Deleted through B: gone from a new server on the same Redis too.
        let deleted =
            send(http().delete(format!("{}/v1/feature-sets/user_features", b.http))).await;
        assert_eq!(deleted.0, StatusCode::NO_CONTENT, "{}", deleted.1);
        let c = server_on(&redis, Backend::Duckdb, 1000).await;
        assert_eq!(
            get_json(&format!("{}/v1/feature-sets/user_features", c.http))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn feature_services_are_shared_through_the_registry() {
    let redis = Redis::single();
    let a = server_on(&redis, Backend::Duckdb, 1000).await;
    let b = server_on(&redis, Backend::Parquet, 1000).await;
    create_user_set(&a.http).await;
    let service = json!({"name": "scoring", "features": ["user_features:age"]});
    let created = post_json(&format!("{}/v1/feature-services", a.http), &service).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let on_b = format!("{}/v1/feature-services/scoring", b.http);
    eventually(Duration::from_secs(1), "the service on B", || async {
        get_json(&on_b).await.0 == StatusCode::OK
    })
    .await;

    let rows =
        json!({"rows": [{"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 30}]});
    assert_eq!(ingest(&a.http, rows).await.0, StatusCode::OK);
    let read = post_json(
        &format!("{}/v1/online", b.http),
        &json!({"type": "online", "feature_service": "scoring", "entities": {"user_id": ["u1", "u9"]}}),
    )
    .await;
    assert_eq!(read.0, StatusCode::OK, "{}", read.1);
    assert_eq!(read.1["rows"][0]["age"], 30);
    assert_eq!(read.1["rows"][1]["age"], Value::Null);

    // B knows the service: it refuses to delete the set it reads, and another definition
    // under its name.
    let refused = send(http().delete(format!("{}/v1/feature-sets/user_features", b.http))).await;
    assert_error(
        &refused,
        StatusCode::CONFLICT,
        "failed_precondition",
        "scoring",
    );
    let other = json!({"name": "scoring", "features": ["user_features:*"]});
    let clash = send(
        http()
            .post(format!("{}/v1/feature-services", b.http))
            .json(&other),
    )
    .await;
    assert_error(&clash, StatusCode::CONFLICT, "already_exists", "scoring");
    // The same definition again through B is that service.
    let again = post_json(&format!("{}/v1/feature-services", b.http), &service).await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);

    // Deleted through B: gone from A within a second, and from a new server.
    let deleted = send(http().delete(&on_b)).await;
    assert_eq!(deleted.0, StatusCode::NO_CONTENT, "{}", deleted.1);
    let on_a = format!("{}/v1/feature-services/scoring", a.http);
    eventually(Duration::from_secs(1), "the deletion on A", || async {
        get_json(&on_a).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    let c = server_on(&redis, Backend::Duckdb, 1000).await;
    let listed = get_json(&format!("{}/v1/feature-services", c.http)).await;
    assert_eq!(listed, (StatusCode::OK, json!([])));
}

/// A server starting on a Redis that already holds values serves them at once.
#[tokio::test]
async fn a_new_server_serves_the_values_already_in_redis() {
    let redis = Redis::single();
    let a = server_on(&redis, Backend::Duckdb, 1000).await;
    send(
        http()
            .post(format!("{}/v1/feature-sets", a.http))
            .body(USER_SPEC),
    )
    .await;
    let rows =
        json!({"rows": [{"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7}]});
    assert_eq!(ingest(&a.http, rows).await.0, StatusCode::OK);
    // An empty offline store: nothing to rebuild from, the values come from Redis.
    let b = server_on(&redis, Backend::Parquet, 1000).await;
    let read = post_json(&format!("{}/v1/online", b.http), &online_ticket(&["u1"])).await;
    assert_eq!(read.1["rows"][0]["age"], 7, "{}", read.1);
}

#[tokio::test]
async fn redis_down_fails_reads_fast_and_ingest_unacknowledged_then_recovers() {
    let mut redis = Redis::single();
    let server = server_on(&redis, Backend::Duckdb, 200).await;
    let base = server.http.clone();
    send(
        http()
            .post(format!("{base}/v1/feature-sets"))
            .body(USER_SPEC),
    )
    .await;
    let rows =
        json!({"rows": [{"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7}]});
    assert_eq!(ingest(&base, rows.clone()).await.0, StatusCode::OK);
    let before = server.metrics_text().await;
    assert!(
        metric(&before, "featherstore_redis_round_trips_total") > 0.0,
        "{before}"
    );

    redis.stop_node(0);
    // Reads fail fast as UNAVAILABLE, over HTTP and Flight, many at once, and the server's
    // other routes stay responsive meanwhile.
    let started = Instant::now();
    let (url, ticket) = (format!("{base}/v1/online"), online_ticket(&["u1"]));
    let reads = (0..16).map(|_| post_json(&url, &ticket));
    for read in futures::future::join_all(reads).await {
        assert_error(
            &read,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Redis",
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "16 reads took {:?}",
        started.elapsed()
    );
    let mut flight = server.flight().await;
    let status = get(&mut flight, flight_ticket(&["u1"])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    let listed = get_json(&format!("{base}/v1/feature-sets")).await;
    assert_eq!(listed.0, StatusCode::OK);
    let health = get_json(&format!("{base}/health")).await;
    assert_eq!(health.0, StatusCode::SERVICE_UNAVAILABLE, "{}", health.1);
    assert_eq!(
        health.1["online"],
        json!({"backend": "redis", "state": "unavailable"})
    );
    // Ingest is not acknowledged while the values cannot reach Redis.
    let refused = ingest(&base, rows.clone()).await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Redis",
    );
    let after = server.metrics_text().await;
    assert!(
        metric(&after, "featherstore_redis_errors_total") > 0.0,
        "{after}"
    );

    // Back (empty: no persistence): the server recovers by itself, without a restart.
    redis.start_node(0);
    eventually(Duration::from_secs(10), "reads answering again", || async {
        post_json(&format!("{base}/v1/online"), &online_ticket(&["u1"]))
            .await
            .0
            == StatusCode::OK
    })
    .await;
    assert_eq!(get_json(&format!("{base}/health")).await.0, StatusCode::OK);
    // The registry is published again by the server; ingest works again.
    eventually(Duration::from_secs(5), "ingest accepted again", || async {
        ingest(&base, rows.clone()).await.0 == StatusCode::OK
    })
    .await;
    let read = post_json(&format!("{base}/v1/online"), &online_ticket(&["u1"])).await;
    assert_eq!(read.1["rows"][0]["age"], 7);

    // A value only in the offline store (Redis lost it) comes back with a rebuild.
    let lost =
        json!({"rows": [{"user_id": "u2", "event_timestamp": "2026-01-01T00:00:00Z", "age": 9}]});
    assert_eq!(ingest(&base, lost).await.0, StatusCode::OK);
    redis.stop_node(0);
    redis.start_node(0);
    eventually(
        Duration::from_secs(10),
        "u2 gone with Redis's data",
        || async {
            let read = post_json(&format!("{base}/v1/online"), &online_ticket(&["u2"])).await;
            read.0 == StatusCode::OK && read.1["rows"][0]["age"].is_null()
        },
    )
    .await;
    let rebuilt = post_json(
        &format!("{base}/v1/feature-sets/user_features/online/rebuild"),
        &json!({}),
    )
    .await;
    assert_eq!(rebuilt, (StatusCode::OK, json!({"rows": 2})));
    let read = post_json(&format!("{base}/v1/online"), &online_ticket(&["u1", "u2"])).await;
    assert_eq!(read.1["rows"][1]["age"], 9, "{}", read.1);
}

/// The ages of every stored row of the set (history, the offline store), by entity.
async fn stored_ages(base: &str) -> Vec<(String, Value)> {
    let history = post_json(
        &format!("{base}/v1/history"),
        &json!({"feature_set": "user_features", "features": ["age"]}),
    )
    .await;
    assert_eq!(history.0, StatusCode::OK, "{}", history.1);
    history.1["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_string(), r["age"].clone()))
        .collect()
}

/// A batch whose values cannot reach Redis is reported as failed and is not stored offline
/// either: history never shows it, not even after a restart (the Parquet log replayed).
#[tokio::test]
async fn a_batch_redis_refused_is_not_stored_offline() {
    for backend in BACKENDS {
        let mut redis = Redis::single();
        let server = server_on(&redis, backend, 200).await;
        let base = server.http.clone();
        create_user_set(&base).await;
        let stored = json!({"rows": [{"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7}]});
        assert_eq!(ingest(&base, stored).await.0, StatusCode::OK);

        redis.stop_node(0);
        let refused = json!({"rows": [
            {"user_id": "u1", "event_timestamp": "2026-01-02T00:00:00Z", "age": 8},
            {"user_id": "u9", "event_timestamp": "2026-01-02T00:00:00Z", "age": 9}
        ]});
        assert_error(
            &ingest(&base, refused).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Redis",
        );
        let only_the_first = vec![("u1".to_string(), json!(7))];
        assert_eq!(stored_ages(&base).await, only_the_first, "{backend:?}");

        redis.start_node(0);
        let dir = server.shutdown().await;
        let server = server_in(dir, &redis, backend, 200).await;
        assert_eq!(
            stored_ages(&server.http).await,
            only_the_first,
            "{backend:?} after a restart"
        );
        // The set takes batches again, numbered after the one acknowledged.
        let next = json!({"rows": [{"user_id": "u2", "event_timestamp": "2026-01-03T00:00:00Z", "age": 2}]});
        assert_eq!(ingest(&server.http, next).await.0, StatusCode::OK);
        assert_eq!(stored_ages(&server.http).await.len(), 2, "{backend:?}");
    }
}

/// `rediss://`: a server reaches a Redis speaking TLS whose certificate a CA of its
/// `ca_file` signs, and serves as over plain TCP; without that CA (the system's CAs do not
/// know the test CA) it does not start, and says why.
#[tokio::test]
async fn rediss_verifies_redis_with_the_ca_file() {
    let certs = TestCerts::generate();
    let redis = Redis::single_tls(&certs.server_cert, &certs.server_key);
    let tls_url = redis.tls_url();
    let with_ca = |ca_file: Option<std::path::PathBuf>| {
        let url = tls_url.clone();
        move |config: &mut featherstore_server::config::Config| {
            config.online.backend = OnlineBackend::Redis;
            config.online.redis.url = url;
            config.online.redis.ca_file = ca_file;
            config.online.redis.timeout_ms = 1000;
        }
    };
    let server = TestServer::start_with(Backend::Parquet, with_ca(Some(certs.ca.clone()))).await;
    let base = server.http.clone();
    create_user_set(&base).await;
    let rows =
        json!({"rows": [{"user_id": "u1", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7}]});
    assert_eq!(ingest(&base, rows).await.0, StatusCode::OK);
    let read = post_json(&format!("{base}/v1/online"), &online_ticket(&["u1"])).await;
    assert_eq!(read.1["rows"][0]["age"], 7, "{}", read.1);
    // The values went through TLS into the one Redis: its plain port sees them too.
    let plain = server_on(&redis, Backend::Duckdb, 1000).await;
    let read = post_json(
        &format!("{}/v1/online", plain.http),
        &online_ticket(&["u1"]),
    )
    .await;
    assert_eq!(read.1["rows"][0]["age"], 7, "{}", read.1);

    let dir = tempdir();
    let mut config = featherstore_server::config::Config::ephemeral(dir.path(), Backend::Duckdb);
    with_ca(None)(&mut config);
    let refused = featherstore_server::start(&config)
        .await
        .err()
        .expect("no server without a CA that signs Redis's certificate")
        .to_string();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}
