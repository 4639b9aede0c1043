//! Servers on the Delta Lake backend over a real S3-compatible server (moto on loopback, from
//! the test kit): the statuses an unreachable object store gives, and two servers sharing one
//! bucket.

use featherstore_server::config::{Backend, Config};
use featherstore_testkit::http::send;
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
