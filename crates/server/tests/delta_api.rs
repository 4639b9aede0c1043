//! Servers on the Delta Lake backend over a real S3-compatible server (moto on loopback, from
//! the test kit): the statuses an unreachable object store gives, two servers sharing one
//! bucket, and stateless servers sharing one bucket and one Redis.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::Int64Type;
use featherstore_server::config::{Backend, Config, OnlineBackend};
use featherstore_testkit::http::send;
use featherstore_testkit::redis::Redis;
use featherstore_testkit::s3::{Proxy, S3Server};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn on_bucket(config: &mut Config, address: std::net::SocketAddr, bucket: &str) {
    config.storage.delta.uri = format!("s3://{bucket}/features");
    config.storage.delta.storage_options = S3Server::storage_options(address).into_iter().collect();
}

async fn ingest(base: &str, user: &str, age: i64, day: u32) -> (StatusCode, Value) {
    let rows = json!({"rows": [
        {"user_id": user, "event_timestamp": format!("2026-01-{day:02}T00:00:00Z"), "age": age}
    ]});
    send(
        http()
            .post(format!("{base}/v1/feature-sets/user_features/rows"))
            .json(&rows),
    )
    .await
}

async fn history(base: &str) -> (StatusCode, Value) {
    send(
        http()
            .post(format!("{base}/v1/history"))
            .json(&json!({"feature_set": "user_features", "features": ["age"]})),
    )
    .await
}

fn ages(history: &Value) -> Vec<i64> {
    history["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["age"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn an_unreachable_object_store_is_503_for_ingest_and_history_and_online_reads_go_on() {
    let s3 = S3Server::start();
    s3.create_bucket("faults");
    let proxy = Proxy::start(s3.address);
    let server =
        TestServer::start_with(Backend::Delta, |c| on_bucket(c, proxy.address, "faults")).await;
    let base = &server.http;
    let created = send(
        http()
            .post(format!("{base}/v1/feature-sets"))
            .body(USER_SPEC),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{created:?}");
    assert_eq!(ingest(base, "u1", 30, 1).await.0, StatusCode::OK);

    proxy.set_cut(true);
    let refused = ingest(base, "u1", 31, 2).await;
    assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE, "{refused:?}");
    assert_eq!(refused.1["error"]["code"], "unavailable", "{refused:?}");
    let unavailable = history(base).await;
    assert_eq!(
        unavailable.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "{unavailable:?}"
    );
    let online =
        send(http().post(format!("{base}/v1/online")).json(
            &json!({"feature_set": "user_features", "entities": ["u1"], "features": ["age"]}),
        ))
        .await;
    assert_eq!(online.0, StatusCode::OK, "{online:?}");
    assert_eq!(online.1["rows"][0]["age"], 30);

    proxy.set_cut(false);
    assert_eq!(ingest(base, "u1", 32, 3).await.0, StatusCode::OK);
    let recovered = history(base).await;
    assert_eq!(recovered.0, StatusCode::OK);
    assert_eq!(
        ages(&recovered.1),
        vec![30, 32],
        "the refused batch was not stored"
    );
    server.shutdown().await;
}

/// Two servers on one bucket: ingest through both, every acknowledged row read back through
/// either; one killed, the other still serves all of it.
#[tokio::test]
async fn two_servers_on_one_bucket_serve_the_same_history() {
    let s3 = S3Server::start();
    s3.create_bucket("shared");
    let first =
        TestServer::start_with(Backend::Delta, |c| on_bucket(c, s3.address, "shared")).await;
    let created = send(
        http()
            .post(format!("{}/v1/feature-sets", first.http))
            .body(USER_SPEC),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);
    // Started after the create: a server loads the registry at start.
    let second =
        TestServer::start_with(Backend::Delta, |c| on_bucket(c, s3.address, "shared")).await;
    for i in 0..4 {
        let via = if i % 2 == 0 {
            &first.http
        } else {
            &second.http
        };
        assert_eq!(
            ingest(via, &format!("u{i}"), i, 1 + i as u32).await.0,
            StatusCode::OK
        );
    }
    for base in [&first.http, &second.http] {
        let rows = history(base).await;
        assert_eq!(rows.0, StatusCode::OK);
        let mut found = ages(&rows.1);
        found.sort_unstable();
        assert_eq!(found, vec![0, 1, 2, 3]);
    }
    // The in-process stand-in for kill -9: the server stops without any shutdown step.
    drop(first);
    let rows = history(&second.http).await;
    assert_eq!(rows.0, StatusCode::OK);
    assert_eq!(ages(&rows.1).len(), 4);
    second.shutdown().await;
}

/// A server on the Delta backend on `bucket` and the Redis online store on `redis`: with
/// both, a server keeps no state of its own.
async fn stateless(address: std::net::SocketAddr, bucket: &str, redis: &Redis) -> TestServer {
    let url = redis.url();
    TestServer::start_with(Backend::Delta, |c| {
        on_bucket(c, address, bucket);
        c.online.backend = OnlineBackend::Redis;
        c.online.redis.url = url;
    })
    .await
}

async fn online_ages(base: &str, users: &[&str]) -> Vec<Value> {
    let answer =
        send(http().post(format!("{base}/v1/online")).json(
            &json!({"feature_set": "user_features", "entities": users, "features": ["age"]}),
        ))
        .await;
    assert_eq!(answer.0, StatusCode::OK, "{answer:?}");
    answer.1["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["age"].clone())
        .collect()
}

/// Point-in-time ages of `users` at day `day` of January, through Flight DoExchange.
async fn training_ages(server: &TestServer, users: &[&str], day: i64) -> Vec<Option<i64>> {
    let time = 1_767_225_600_000_000 + (day - 1) * 86_400_000_000;
    let rows = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(users.iter().copied())) as _,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(users.iter().map(|_| time))
                    .with_timezone("UTC"),
            ) as _,
        ),
        (
            "label",
            Arc::new(Int64Array::from_iter_values(0..users.len() as i64)) as _,
        ),
    ])
    .unwrap();
    let command = json!({"type": "training_data", "features": ["user_features:age"]});
    let batches = exchange(server, command, vec![rows]).await.unwrap();
    let batch = concat(&batches);
    let ages = batch
        .column_by_name("age")
        .unwrap()
        .as_primitive::<Int64Type>();
    ages.iter().collect()
}

/// Both servers on one bucket and one Redis are interchangeable: a set created through one is
/// usable through the other within a second; rows ingested through either are read online,
/// as history and as training data through both; with one gone at once (no shutdown step,
/// as with kill -9), the other still serves every acknowledged row.
#[tokio::test]
async fn stateless_servers_on_one_bucket_and_one_redis_are_interchangeable() {
    let s3 = S3Server::start();
    s3.create_bucket("stateless");
    let redis = Redis::single();
    let a = stateless(s3.address, "stateless", &redis).await;
    let b = stateless(s3.address, "stateless", &redis).await;
    let created = send(
        http()
            .post(format!("{}/v1/feature-sets", a.http))
            .body(USER_SPEC),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{created:?}");
    let on_b = format!("{}/v1/feature-sets/user_features", b.http);
    eventually(Duration::from_secs(1), "the set on B", || async {
        send(http().get(&on_b)).await.0 == StatusCode::OK
    })
    .await;

    // u1 aged 30 on day 1 (through A), 31 on day 5 (through B); u2 40 on day 3 (through B).
    assert_eq!(ingest(&a.http, "u1", 30, 1).await.0, StatusCode::OK);
    assert_eq!(ingest(&b.http, "u1", 31, 5).await.0, StatusCode::OK);
    assert_eq!(ingest(&b.http, "u2", 40, 3).await.0, StatusCode::OK);
    for server in [&a, &b] {
        assert_eq!(
            online_ages(&server.http, &["u1", "u2", "u3"]).await,
            [json!(31), json!(40), Value::Null]
        );
        let rows = history(&server.http).await;
        assert_eq!(rows.0, StatusCode::OK, "{rows:?}");
        let mut found = ages(&rows.1);
        found.sort_unstable();
        assert_eq!(found, vec![30, 31, 40]);
        // Day 4: u1's day-5 row is from after the row's time and must not leak.
        assert_eq!(
            training_ages(server, &["u1", "u2"], 4).await,
            [Some(30), Some(40)]
        );
    }

    drop(a);
    assert_eq!(
        online_ages(&b.http, &["u1", "u2"]).await,
        [json!(31), json!(40)]
    );
    assert_eq!(ages(&history(&b.http).await.1).len(), 3);
    // A new server on the same bucket and Redis serves at once, with nothing of its own.
    let c = stateless(s3.address, "stateless", &redis).await;
    assert_eq!(
        online_ages(&c.http, &["u1", "u2"]).await,
        [json!(31), json!(40)]
    );
    assert_eq!(training_ages(&c, &["u1"], 6).await, [Some(31)]);
    b.shutdown().await;
    c.shutdown().await;
}
