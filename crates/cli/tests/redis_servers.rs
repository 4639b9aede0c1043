//! `featherstore serve` processes sharing one real Redis (`serve --online redis://...`): one
//! killed with SIGKILL while the other serves, a restart that serves at once, Redis itself
//! restarted with and without its data, and `featherstore online rebuild`.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use featherstore_testkit::child::{ChildServer, Run, Serve};
use featherstore_testkit::flight::get;
use featherstore_testkit::http::post_json;
use featherstore_testkit::redis::Redis;
use featherstore_testkit::{eventually, USER_SPEC};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_featherstore");

fn serve_on(redis: &Redis, backend: &str) -> Serve {
    Serve::new(BIN)
        .backend(backend)
        .args(["--online", &redis.url()])
        // Fail fast while Redis is down; loopback answers well within this.
        .env("FEATHERSTORE_ONLINE__REDIS__TIMEOUT_MS", "300")
}

fn run(server: &ChildServer, args: &[&str]) -> Run {
    server.cli(BIN, args)
}

/// Ingests one CSV row `user,age,time` through `server` (the CLI, over Flight).
fn ingest(server: &ChildServer, user: &str, age: i64, time: &str) {
    let file = server.file(
        &format!("{user}-{age}.csv"),
        &format!("user_id,age,event_timestamp\n{user},{age},{time}\n"),
    );
    run(server, &["ingest", "user_features", &file]).ok();
}

/// The ages of `users` online through `server` over HTTP: `Err(status)` when refused.
async fn http_ages(server: &ChildServer, users: &[&str]) -> Result<Vec<Option<i64>>, u16> {
    let (status, body) = post_json(
        &format!("{}/v1/online", server.http),
        &json!({"feature_set": "user_features", "entities": users, "features": ["age"]}),
    )
    .await;
    if !status.is_success() {
        return Err(status.as_u16());
    }
    Ok(body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|row| row["age"].as_i64())
        .collect())
}

/// The same read over Flight: `Err(code)` when refused.
async fn flight_ages(
    server: &ChildServer,
    users: &[&str],
) -> Result<Vec<Option<i64>>, tonic::Code> {
    let mut client = server.flight().await;
    let ticket = json!({"type": "online", "feature_set": "user_features", "entities": users, "features": ["age"]});
    let batches = get(&mut client, ticket).await.map_err(|s| s.code())?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Both APIs of `server` answer `expected`.
async fn assert_serves(server: &ChildServer, users: &[&str], expected: &[Option<i64>], what: &str) {
    assert_eq!(
        http_ages(server, users).await.as_deref(),
        Ok(expected),
        "HTTP: {what}"
    );
    assert_eq!(
        flight_ages(server, users).await.as_deref(),
        Ok(expected),
        "Flight: {what}"
    );
}

/// Two servers on one Redis: what one acknowledged, the other serves, also after the first
/// was killed with SIGKILL; the first, restarted, serves at once (nothing rebuilt, even the
/// values ingested through the other while it was down).
#[tokio::test]
async fn a_server_killed_with_sigkill_loses_nothing_acknowledged() {
    let redis = Redis::single();
    let mut a = serve_on(&redis, "duckdb").start();
    let b = serve_on(&redis, "parquet").start();
    let spec = a.file("user.json", USER_SPEC);
    run(&a, &["apply", &spec]).ok();
    eventually(Duration::from_secs(2), "the set on B", || async {
        http_ages(&b, &["u1"]).await.is_ok()
    })
    .await;
    for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
        ingest(&a, user, 30 + i as i64, "2026-01-01T00:00:00Z");
    }
    let users = ["u1", "u2", "u3", "nobody"];
    let acknowledged = [Some(30), Some(31), Some(32), None];
    assert_serves(&b, &users, &acknowledged, "B serves what A acknowledged").await;

    a.kill();
    assert_serves(&b, &users, &acknowledged, "B after A was killed").await;
    ingest(&b, "u2", 41, "2026-01-02T00:00:00Z");

    // A on its data directory again: the values come from Redis, at once.
    let a = serve_on(&redis, "duckdb")
        .data_dir(&a.data_dir.clone())
        .start();
    let now = [Some(30), Some(41), Some(32), None];
    assert_serves(&a, &users, &now, "A restarted").await;
    assert_serves(&b, &users, &now, "B").await;
}

/// Redis killed and started again: reads fail with 503 / UNAVAILABLE while it is down and
/// answer again by themselves once it is back. With its data persisted, every value is
/// there; without, `featherstore online rebuild` writes them back from the offline store.
#[tokio::test]
async fn a_redis_restart_fails_reads_then_they_recover_by_themselves() {
    for persistent in [true, false] {
        let mut redis = if persistent {
            Redis::single_persistent()
        } else {
            Redis::single()
        };
        let server = serve_on(&redis, "parquet").start();
        let spec = server.file("user.json", USER_SPEC);
        run(&server, &["apply", &spec]).ok();
        ingest(&server, "u1", 7, "2026-01-01T00:00:00Z");
        ingest(&server, "u2", 8, "2026-01-01T00:00:00Z");
        let users = ["u1", "u2"];
        assert_serves(&server, &users, &[Some(7), Some(8)], "before").await;

        redis.stop_node(0);
        assert_eq!(
            http_ages(&server, &users).await,
            Err(503),
            "HTTP while down"
        );
        assert_eq!(
            flight_ages(&server, &users).await,
            Err(tonic::Code::Unavailable),
            "Flight while down"
        );
        let refused = run(&server, &["online", "rebuild", "user_features"]).fails();
        assert!(refused.contains("navailable"), "{refused}");

        redis.start_node(0);
        eventually(Duration::from_secs(10), "reads answering again", || async {
            http_ages(&server, &users).await.is_ok()
        })
        .await;
        if persistent {
            assert_serves(&server, &users, &[Some(7), Some(8)], "Redis kept its data").await;
            continue;
        }
        assert_serves(&server, &users, &[None, None], "Redis lost its data").await;
        let rebuilt = run(&server, &["online", "rebuild", "user_features"]).ok();
        assert!(rebuilt.contains("2 rows written"), "{rebuilt}");
        assert_serves(&server, &users, &[Some(7), Some(8)], "rebuilt").await;
    }
}

/// `online rebuild` of an unknown set fails with NOT_FOUND; with the memory backend (rebuilt
/// at every start anyway) it works and changes nothing.
#[tokio::test]
async fn online_rebuild_names_a_stored_set() {
    let server = Serve::new(BIN).start();
    let missing = run(&server, &["online", "rebuild", "ghosts"]).fails();
    assert!(missing.contains("ghosts"), "{missing}");
    let spec = server.file("user.json", USER_SPEC);
    run(&server, &["apply", &spec]).ok();
    ingest(&server, "u1", 7, "2026-01-01T00:00:00Z");
    let rebuilt = run(&server, &["online", "rebuild", "user_features"]).ok();
    assert!(rebuilt.contains("1 row written"), "{rebuilt}");
    assert_serves(&server, &["u1"], &[Some(7)], "after the rebuild").await;
}
