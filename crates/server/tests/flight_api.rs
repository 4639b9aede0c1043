//! The Flight API end to end over loopback: registry actions, DoPut, DoGet, catalog, errors.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int64Type, TimestampMicrosecondType};
use arrow_flight::error::FlightError;
use arrow_flight::FlightDescriptor;
use featherstore_server::config::Backend;
use featherstore_testkit::*;
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn registry_actions() {
    for backend in BACKENDS {
        let server = TestServer::start(backend).await;
        let mut client = server.flight().await;
        let stored = action(&mut client, "create_feature_set", USER_SPEC)
            .await
            .unwrap();
        assert_eq!(stored["version"], 1);
        assert!(stored["created_at"].is_string());
        assert_eq!(stored["timestamp"], "event_timestamp");
        let again = action(&mut client, "create_feature_set", USER_SPEC)
            .await
            .unwrap();
        assert_eq!(again, stored, "the same spec again is a no-op");
        let different = USER_SPEC.replace("float32[2]", "float32[3]");
        let err = action(&mut client, "create_feature_set", &different)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{err}");

        let described = action(
            &mut client,
            "get_feature_set",
            r#"{"name": "user_features"}"#,
        )
        .await
        .unwrap();
        assert_eq!(
            described["stats"],
            json!({"rows": 0, "entities": 0, "latest_event_timestamp": null})
        );
        let listed = action(&mut client, "list_feature_sets", "{}")
            .await
            .unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1);

        for (body, code, needle) in [
            (
                r#"{"name": "bad name", "entity": {"name": "id", "type": "int64"}, "features": []}"#,
                Code::InvalidArgument,
                "invalid feature set name",
            ),
            (
                r#"{"name": "x", "entity": {"name": "id", "type": "int64"}, "features": [{"name": "f", "type": "float16"}]}"#,
                Code::InvalidArgument,
                "unknown feature type",
            ),
            (
                "not json",
                Code::InvalidArgument,
                "invalid feature set spec",
            ),
        ] {
            let err = action(&mut client, "create_feature_set", body)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(err.message().contains(needle), "{err}");
        }
        let err = action(&mut client, "get_feature_set", r#"{"name": "nope"}"#)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = action(&mut client, "drop_everything", "{}")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("create_feature_set"), "{err}");

        assert_eq!(
            action(
                &mut client,
                "delete_feature_set",
                r#"{"name": "user_features"}"#
            )
            .await
            .unwrap(),
            json!({"deleted": true})
        );
        let err = action(
            &mut client,
            "get_feature_set",
            r#"{"name": "user_features"}"#,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn put_acknowledges_each_batch_then_online_and_history_read_it() {
    for backend in BACKENDS {
        let (server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
        let (acks, error) = put(
            &mut client,
            "user_features",
            vec![
                user_batch(&[
                    ("u1", Some(30), Some(0.1), 100),
                    ("u2", Some(40), None, 100),
                ]),
                user_batch(&[("u1", Some(31), Some(0.2), 200)]),
                // An older event does not replace the online value; a tie goes to the later ingest.
                user_batch(&[("u1", Some(1), None, 150), ("u2", Some(41), Some(0.5), 100)]),
            ],
        )
        .await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            acks,
            [
                json!({"batch": 0, "rows": 2}),
                json!({"batch": 1, "rows": 1}),
                json!({"batch": 2, "rows": 2})
            ]
        );

        let online = concat(
            &get(
                &mut client,
                json!({"type": "online", "feature_set": "user_features",
                "entities": ["u2", "nobody", "u1", "u2"], "features": ["ctr_7d", "age"]}),
            )
            .await
            .unwrap(),
        );
        assert_eq!(
            column_names(&online),
            ["user_id", "ctr_7d", "age", "event_timestamp"]
        );
        assert_eq!(
            online
                .column(0)
                .as_string::<i32>()
                .iter()
                .collect::<Vec<_>>(),
            [Some("u2"), Some("nobody"), Some("u1"), Some("u2")]
        );
        assert_eq!(
            online
                .column(2)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(41), None, Some(31), Some(41)]
        );
        assert_eq!(online.column(1).as_primitive::<Float32Type>().value(2), 0.2);
        assert!(online.column(3).is_null(1));

        let history = concat(
            &get(
                &mut client,
                json!({"type": "history", "feature_set": "user_features",
                "start": "1970-01-01T00:01:40Z", "end": "1970-01-01T00:03:20Z"}),
            )
            .await
            .unwrap(),
        );
        // [100 s, 200 s): u1@100, u1@150, u2@100 (first ingest), u2@100 (second ingest).
        let users: Vec<_> = history
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(users, ["u1", "u1", "u2", "u2"]);
        let times: Vec<_> = history
            .column(4)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .iter()
            .map(|t| t / 1_000_000)
            .collect();
        assert_eq!(times, [100, 150, 100, 100]);
        let ages: Vec<_> = history
            .column(1)
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        assert_eq!(
            ages,
            [Some(30), Some(1), Some(40), Some(41)],
            "ties in ingest order"
        );
        let embedding = history.column(3).as_fixed_size_list();
        assert_eq!(
            embedding.value(0).as_primitive::<Float32Type>().values(),
            &[30.0, 30.5]
        );

        // Restart: the online index is rebuilt from storage.
        let server = server.restart().await;
        let mut client = server.flight().await;
        let online = concat(
            &get(
                &mut client,
                json!({"type": "online", "feature_set": "user_features", "entities": ["u1", "u2"]}),
            )
            .await
            .unwrap(),
        );
        assert_eq!(
            online
                .column(1)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(31), Some(41)],
            "{backend:?}: rebuilt index keeps newest event and later-ingest ties"
        );
        let empty = get(
            &mut client,
            json!({"type": "history", "feature_set": "user_features", "entities": ["zz"]}),
        )
        .await
        .unwrap();
        assert_eq!(empty.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }
}

#[tokio::test]
async fn rejected_batch_ends_the_put_and_keeps_earlier_batches() {
    for backend in BACKENDS {
        let (_server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
        let good = user_batch(&[("u1", Some(1), None, 10)]);
        // Same schema, but a null entity key: the whole batch is refused.
        let mut bad_ids = arrow::array::StringBuilder::new();
        bad_ids.append_value("u2");
        bad_ids.append_null();
        let bad = user_batch(&[("u2", Some(2), None, 10), ("x", Some(3), None, 10)]);
        let mut columns = bad.columns().to_vec();
        columns[0] = std::sync::Arc::new(bad_ids.finish());
        let bad = RecordBatch::try_new(bad.schema(), columns).unwrap();
        let (acks, error) = put(
            &mut client,
            "user_features",
            vec![good, bad, user_batch(&[("u3", Some(3), None, 10)])],
        )
        .await;
        assert_eq!(acks, [json!({"batch": 0, "rows": 1})]);
        let error = error.expect("the bad batch fails the call");
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(
            error.message().contains("user_id") && error.message().contains("null"),
            "{error}"
        );

        let history = get(
            &mut client,
            json!({"type": "history", "feature_set": "user_features"}),
        )
        .await
        .unwrap();
        let users: Vec<String> = history
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            users,
            ["u1"],
            "{backend:?}: nothing of the rejected batch or after it"
        );

        // Unknown set, undeclared column, wrong type.
        let (_, error) = put(
            &mut client,
            "nope",
            vec![user_batch(&[("u", None, None, 1)])],
        )
        .await;
        assert_eq!(error.unwrap().code(), Code::NotFound);
        let extra = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                std::sync::Arc::new(arrow::array::StringArray::from(vec!["u"])) as _,
            ),
            (
                "event_timestamp",
                std::sync::Arc::new(arrow::array::TimestampSecondArray::from(vec![1])) as _,
            ),
            (
                "age",
                std::sync::Arc::new(arrow::array::Float64Array::from(vec![1.5])) as _,
            ),
        ])
        .unwrap();
        let (_, error) = put(&mut client, "user_features", vec![extra]).await;
        let error = error.unwrap();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(
            error
                .message()
                .contains("\"age\" has type Float64; expected int64"),
            "{error}"
        );
    }
}

/// Large batches sent at once: DoPut stores those that have arrived together as one run
/// (`FeatureStore::ingest_run`, which falls back to one batch at a time when the run is
/// refused); whichever runs the timing makes, the client sees the same: the batches before a
/// refused one acknowledged and stored, nothing of it or after it. The batches go as one
/// message each (the encoder would split them at 2 MiB), within the call's flow-control
/// window. The runs themselves are tested without timing in `flight/put.rs` (which messages
/// join a run) and `store/tests/ingest_runs.rs` (how a run is stored).
#[tokio::test]
async fn a_refused_batch_among_large_ones_sent_at_once_keeps_those_before_it() {
    const ROWS: usize = 65_536;
    const BATCHES: usize = 6;
    const REFUSED: usize = 4;
    let ids: Vec<String> = (0..1_000).map(|i| format!("u{i}")).collect();
    let batch = |n: usize| {
        let rows: Vec<(&str, Option<i64>, Option<f32>, i64)> = (0..ROWS)
            .map(|i| (ids[i % ids.len()].as_str(), Some(n as i64), Some(0.5), 10))
            .collect();
        let batch = user_batch(&rows);
        if n != REFUSED {
            return batch;
        }
        // A null entity key in its first row.
        let keys: arrow::array::StringArray = (0..ROWS)
            .map(|i| (i != 0).then(|| ids[i % ids.len()].as_str()))
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[0] = std::sync::Arc::new(keys);
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    };
    for backend in BACKENDS {
        let (_server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
        let batches: Vec<_> = (0..BATCHES).map(|n| Ok(batch(n))).collect();
        let messages = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(16 * 1024 * 1024)
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![
                "user_features".into()
            ])))
            .build(futures::stream::iter(batches));
        let (acks, status) = flight::put_messages(&mut client, messages).await;
        let rows: Vec<serde_json::Value> = acks
            .iter()
            .map(|a| serde_json::from_slice(&a.app_metadata).unwrap())
            .collect();
        let expected: Vec<_> = (0..REFUSED)
            .map(|i| json!({"batch": i, "rows": ROWS}))
            .collect();
        assert_eq!(rows, expected, "{backend:?}");
        let error = status.expect_err("the refused batch fails the call");
        assert_eq!(error.code(), Code::InvalidArgument, "{backend:?}: {error}");
        assert!(error.message().contains("null"), "{error}");

        let history = get(
            &mut client,
            json!({"type": "history", "feature_set": "user_features", "features": ["age"]}),
        )
        .await
        .unwrap();
        let mut stored = [0usize; BATCHES];
        for batch in &history {
            let ages = batch.column_by_name("age").unwrap();
            for age in ages.as_primitive::<Int64Type>().iter() {
                stored[age.unwrap() as usize] += 1;
            }
        }
        assert_eq!(stored, [ROWS, ROWS, ROWS, ROWS, 0, 0], "{backend:?}");
        // The last stored batch holds every entity's latest value (equal event times).
        let online = get(
            &mut client,
            json!({"type": "online", "feature_set": "user_features",
                   "entities": ["u0", "u999"], "features": ["age"]}),
        )
        .await
        .unwrap();
        let ages: Vec<Option<i64>> = online[0]
            .column_by_name("age")
            .unwrap()
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        assert_eq!(ages, [Some(3), Some(3)], "{backend:?}");
    }
}

#[tokio::test]
async fn bad_tickets_and_limits() {
    let server = TestServer::start_with(Backend::Duckdb, |c| {
        c.limits.max_online_entities = 3;
        c.limits.max_message_bytes = 64 * 1024;
    })
    .await;
    let mut client = server.flight().await;
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    let cases = [
        (
            json!("not an object"),
            Code::InvalidArgument,
            "invalid ticket",
        ),
        (
            json!({"type": "sql", "query": "select 1"}),
            Code::InvalidArgument,
            "invalid ticket",
        ),
        (
            json!({"type": "online", "feature_set": "nope", "entities": ["a"]}),
            Code::NotFound,
            "nope",
        ),
        (
            json!({"type": "online", "feature_set": "user_features", "entities": [1]}),
            Code::InvalidArgument,
            "entity 0",
        ),
        (
            json!({"type": "online", "feature_set": "user_features", "entities": ["a"], "features": ["zz"]}),
            Code::NotFound,
            "zz",
        ),
        (
            json!({"type": "online", "feature_set": "user_features", "entities": ["a", "b", "c", "d"]}),
            Code::ResourceExhausted,
            "at most 3",
        ),
        (
            json!({"type": "history", "feature_set": "user_features", "start": "yesterday"}),
            Code::InvalidArgument,
            "yesterday",
        ),
    ];
    for (ticket, code, needle) in cases {
        let err = get(&mut client, ticket.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{ticket}: {err}");
        assert!(err.message().contains(needle), "{ticket}: {err}");
    }
    // A message over the size limit: RESOURCE_EXHAUSTED, and the server goes on serving.
    let rows: Vec<_> = (0..20_000)
        .map(|i| ("some-long-user-id", Some(i), Some(0.5), i))
        .collect();
    let (acks, error) = put(&mut client, "user_features", vec![user_batch(&rows)]).await;
    assert!(acks.is_empty());
    let error = error.unwrap();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error}");
    let online = get(
        &mut client,
        json!({"type": "online", "feature_set": "user_features", "entities": ["a"]}),
    )
    .await;
    assert!(online.is_ok());
}

#[tokio::test]
async fn catalog_lists_flights_with_schema_and_counts() {
    let (_server, mut client) = TestServer::with_set(Backend::Duckdb, USER_SPEC).await;
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[("a", Some(1), None, 1), ("b", None, None, 2)])],
    )
    .await;
    let flights = flight::list_flights(&mut client).await;
    assert_eq!(flights.len(), 1);
    let info = &flights[0];
    assert_eq!(
        info.flight_descriptor.as_ref().unwrap().path,
        ["user_features"]
    );
    assert_eq!(info.total_records, 2);
    let schema = info.clone().try_decode_schema().unwrap();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["user_id", "age", "ctr_7d", "embedding", "event_timestamp"]
    );

    // The endpoint's ticket reads the whole set.
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let answer = flight::collect(client.do_get(ticket).await.unwrap()).await;
    let rows = flight::rows(&answer.unwrap());
    assert_eq!(rows, 2);

    let info = client
        .get_flight_info(FlightDescriptor::new_path(vec!["user_features".into()]))
        .await
        .unwrap();
    assert_eq!(info.total_records, 2);
    let schema = client
        .get_schema(FlightDescriptor::new_path(vec!["user_features".into()]))
        .await
        .unwrap();
    assert_eq!(schema.fields().len(), 5);
    let err = client
        .get_schema(FlightDescriptor::new_path(vec!["a".into(), "b".into()]))
        .await
        .unwrap_err();
    assert!(matches!(err, FlightError::Tonic(s) if s.code() == Code::InvalidArgument));
}

/// The files under `dir` (recursively) whose names end with `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_graceful_shutdown_leaves_the_parquet_log_empty() {
    // The defaults: nothing is flushed in the background during the test.
    let (mut server, mut client) = TestServer::with_set(Backend::Parquet, USER_SPEC).await;
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[
            ("u1", Some(31), Some(0.5), 100),
            ("u2", Some(42), None, 100),
        ])],
    )
    .await;
    let set_dir = server.dir.path().join("parquet/user_features");
    assert_eq!(files_ending(&set_dir.join("_log"), ".arrows").len(), 1);
    assert!(files_ending(&set_dir, ".parquet").is_empty());

    server.server.take().unwrap().shutdown().await;
    assert!(
        files_ending(&set_dir.join("_log"), ".arrows").is_empty(),
        "the next start has nothing to replay"
    );
    assert_eq!(files_ending(&set_dir, ".parquet").len(), 1);

    let server = TestServer::start_in(server.dir, Backend::Parquet, |_| {}).await;
    let mut client = server.flight().await;
    let history = get(
        &mut client,
        json!({"type": "history", "feature_set": "user_features"}),
    )
    .await
    .unwrap();
    assert_eq!(history.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    assert!(files_ending(&set_dir.join("_log"), ".arrows").is_empty());
}
