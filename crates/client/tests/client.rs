//! The client against a real server started in-process on loopback port 0: every method, and
//! the errors users meet.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type};
use featherstore_client::{
    Client, Code, Entities, Error, ErrorCode, FeatureSetSpec, HistoryRequest, OnlineRequest,
    Timestamp, TrainingDataOptions,
};
use featherstore_server::config::Backend;
use featherstore_testkit::{column_names, user_batch, TestServer};
use futures::{StreamExt, TryStreamExt};

const USERS: &str = r#"{
  "name": "user_features",
  "entity": {"name": "user_id", "type": "string"},
  "features": [
    {"name": "age", "type": "int64"},
    {"name": "ctr_7d", "type": "float32", "description": "click-through rate, 7 days"},
    {"name": "embedding", "type": "float32[2]"}
  ],
  "description": "Profile features of a user",
  "tags": {"team": "growth"}
}"#;

const MERCHANTS: &str = r#"{
  "name": "merchant_features",
  "entity": {"name": "merchant_id", "type": "int64"},
  "features": [{"name": "risk", "type": "float32"}]
}"#;

fn spec(json: &str) -> FeatureSetSpec {
    FeatureSetSpec::from_json(json.as_bytes()).unwrap()
}

fn micros(seconds: i64) -> i64 {
    seconds * 1_000_000
}

fn merchants(rows: &[(i64, f32, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "merchant_id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "risk",
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| micros(r.2)),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_set_lifecycle() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = server.client().await;

    let stored = client.create_feature_set(&spec(USERS)).await.unwrap();
    assert_eq!(stored.version, Some(1));
    assert!(stored.created_at.is_some());
    assert!(stored.same_definition(&spec(USERS)));
    // The same spec again is a no-op.
    let again = client.create_feature_set(&spec(USERS)).await.unwrap();
    assert_eq!(again.created_at, stored.created_at);
    // A different spec under the name is ALREADY_EXISTS.
    let mut changed = spec(USERS);
    changed.ttl_seconds = Some(60);
    let err = client.create_feature_set(&changed).await.unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    // An invalid spec is INVALID_ARGUMENT, with the server's reason.
    let mut invalid = spec(USERS);
    invalid.name = "1bad".into();
    let err = client.create_feature_set(&invalid).await.unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    assert!(err.message().contains("1bad"), "{err}");

    client.create_feature_set(&spec(MERCHANTS)).await.unwrap();
    let mut names: Vec<_> = client
        .list_feature_sets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    assert_eq!(names, ["merchant_features", "user_features"]);

    let info = client.get_feature_set("user_features").await.unwrap();
    assert_eq!(info.spec.tags["team"], "growth");
    assert_eq!(info.stats.rows, 0);
    assert_eq!(info.stats.latest_event_timestamp, None);

    let schema = client.get_schema("merchant_features").await.unwrap();
    let fields: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(fields, ["merchant_id", "risk", "event_timestamp"]);

    client
        .delete_feature_set("merchant_features")
        .await
        .unwrap();
    let err = client
        .get_feature_set("merchant_features")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(client
        .delete_feature_set("merchant_features")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(client
        .get_schema("merchant_features")
        .await
        .unwrap_err()
        .is_not_found());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_read_online_values() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();
    client.create_feature_set(&spec(MERCHANTS)).await.unwrap();

    let ack = client
        .ingest_features(
            "user_features",
            user_batch(&[
                ("u1", Some(30), Some(0.5), 100),
                ("u2", Some(40), None, 100),
            ]),
        )
        .await
        .unwrap();
    assert_eq!((ack.batch, ack.rows), (0, 2));
    // A newer value of u1 wins; an empty batch stores nothing and is not sent.
    client
        .ingest_features(
            "user_features",
            user_batch(&[("u1", Some(31), Some(0.25), 200)]),
        )
        .await
        .unwrap();
    let empty = client
        .ingest_features("user_features", user_batch(&[]))
        .await
        .unwrap();
    assert_eq!(empty.rows, 0);

    let online = client
        .get_features("user_features", ["u2", "u1", "nobody", "u1"])
        .await
        .unwrap();
    assert_eq!(
        column_names(&online),
        ["user_id", "age", "ctr_7d", "embedding", "event_timestamp"]
    );
    assert_eq!(
        strings(&online, "user_id"),
        [Some("u2"), Some("u1"), Some("nobody"), Some("u1")].map(|s| s.map(String::from))
    );
    assert_eq!(ints(&online, "age"), [Some(40), Some(31), None, Some(31)]);
    let ctr = online
        .column_by_name("ctr_7d")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert!(ctr.is_null(0));
    assert_eq!(ctr.value(1), 0.25);

    // A chosen subset, in the order asked.
    let named = client
        .get_named_features("user_features", vec!["u1".to_string()], ["ctr_7d", "age"])
        .await
        .unwrap();
    assert_eq!(
        column_names(&named),
        ["user_id", "ctr_7d", "age", "event_timestamp"]
    );
    let request = OnlineRequest::new("user_features", "u2").features(["age"]);
    assert_eq!(
        ints(&client.online(request).await.unwrap(), "age"),
        [Some(40)]
    );

    // Integer entities.
    client
        .ingest_features(
            "merchant_features",
            merchants(&[(7, 0.9, 10), (8, 0.1, 10)]),
        )
        .await
        .unwrap();
    let ids: Vec<i64> = vec![8, 7, 9];
    let online = client
        .get_features("merchant_features", &ids)
        .await
        .unwrap();
    assert_eq!(ints(&online, "merchant_id"), [Some(8), Some(7), Some(9)]);
    let risk = online
        .column_by_name("risk")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert_eq!(
        (risk.value(0), risk.value(1), risk.is_null(2)),
        (0.1, 0.9, true)
    );

    // Errors: unknown set or feature, entity keys of the wrong type.
    let err = client.get_features("nope", ["u1"]).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = client
        .get_named_features("user_features", ["u1"], ["height"])
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.message().contains("height"),
        "{err:?}"
    );
    let err = client
        .get_features("merchant_features", ["seven"])
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");

    let info = client.get_feature_set("user_features").await.unwrap();
    assert_eq!((info.stats.rows, info.stats.entities), (3, 2));
    assert_eq!(
        info.stats.latest_event_timestamp,
        Some(Timestamp::from_secs(200))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_rejections_name_the_problem() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();

    let err = client
        .ingest_features("nope", user_batch(&[("u1", Some(1), None, 1)]))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    // age as a string: rejected, naming the column and both types.
    let wrong = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1"])) as ArrayRef,
        ),
        (
            "age",
            Arc::new(StringArray::from(vec!["thirty"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMillisecondArray::from(vec![1_000])) as ArrayRef,
        ),
    ])
    .unwrap();
    let err = client
        .ingest_features("user_features", wrong.clone())
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    assert!(err.message().contains("age"), "{err}");

    // In a stream, batches before the rejected one stay stored; the error ends the stream.
    let null_entity = user_batch(&[("x", Some(1), None, 1)]);
    let mut columns = null_entity.columns().to_vec();
    columns[0] = Arc::new(StringArray::from(vec![None::<&str>]));
    let null_entity = RecordBatch::try_from_iter(
        null_entity
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(columns),
    )
    .unwrap();
    let batches = vec![
        Ok(user_batch(&[
            ("a", Some(1), None, 1),
            ("b", Some(2), None, 1),
        ])),
        Ok(user_batch(&[("c", Some(3), None, 1)])),
        Ok(null_entity),
        Ok(user_batch(&[("d", Some(4), None, 1)])),
    ];
    let mut acks = client
        .ingest_stream("user_features", futures::stream::iter(batches))
        .await
        .unwrap();
    let mut stored = Vec::new();
    let err = loop {
        match acks.try_next().await {
            Ok(Some(ack)) => stored.push((ack.batch, ack.rows)),
            Ok(None) => panic!("the bad batch was accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(stored, [(0, 2), (1, 1)], "{err:?}");
    assert!(err.is_invalid_argument(), "{err:?}");
    assert!(err.message().contains("user_id"), "{err}");
    let info = client.get_feature_set("user_features").await.unwrap();
    assert_eq!(info.stats.rows, 3);

    // Batches of one call share their columns: a different one is refused before sending,
    // after the acknowledgements of the batches before it.
    let input = futures::stream::iter(vec![Ok(user_batch(&[("g", Some(1), None, 1)])), Ok(wrong)]);
    let outcome: Vec<_> = client
        .ingest_stream("user_features", input)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(outcome[0], Ok(ack) if ack.rows == 1),
        "{outcome:?}"
    );
    assert!(
        matches!(&outcome[1], Err(Error::InvalidArgument(m)) if m.contains("batch 1 has columns")),
        "{outcome:?}"
    );

    // An error of the caller's own input stream comes back as it is.
    let input = futures::stream::iter(vec![
        Ok(user_batch(&[("e", Some(5), None, 1)])),
        Err(Error::InvalidArgument("the input file is truncated".into())),
    ]);
    let mut acks = client.ingest_stream("user_features", input).await.unwrap();
    let mut outcome = Vec::new();
    while let Some(item) = acks.next().await {
        outcome.push(item.map(|a| a.rows).map_err(|e| e.to_string()));
    }
    assert_eq!(
        outcome,
        [Ok(1), Err("the input file is truncated".to_string())]
    );

    // Many batches in one call.
    let summary = client
        .ingest_batches(
            "user_features",
            (0..5).map(|i| user_batch(&[("f", Some(i), None, 10 + i)])),
        )
        .await
        .unwrap();
    assert_eq!((summary.batches, summary.rows), (5, 5));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_by_entity_and_time() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();
    client
        .ingest_batches(
            "user_features",
            [
                user_batch(&[("u2", Some(20), None, 100), ("u1", Some(10), None, 100)]),
                user_batch(&[("u1", Some(11), None, 200), ("u1", Some(12), None, 300)]),
            ],
        )
        .await
        .unwrap();

    // [start, end): 100 and 200, not 300.
    let rows = client
        .get_feature_history(
            "user_features",
            "u1",
            Timestamp::from_secs(100),
            Timestamp::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(ints(&rows, "age"), [Some(10), Some(11)]);

    // Everything, ordered by entity then time, streamed.
    let stream = client
        .history(HistoryRequest::new("user_features").features(["age"]))
        .await
        .unwrap();
    let all = stream.concat().await.unwrap();
    assert_eq!(column_names(&all), ["user_id", "age", "event_timestamp"]);
    assert_eq!(ints(&all, "age"), [Some(10), Some(11), Some(12), Some(20)]);

    // Several entities, an open end, a chrono time.
    let start = chrono::DateTime::parse_from_rfc3339("1970-01-01T00:03:20+00:00").unwrap();
    let batches = client
        .history(
            HistoryRequest::new("user_features")
                .entities(Entities::strings(["u2", "u1"]))
                .start(start),
        )
        .await
        .unwrap()
        .collect_batches()
        .await
        .unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);

    // An empty result is an empty batch with the result's schema.
    let none = client
        .get_feature_history(
            "user_features",
            "nobody",
            Timestamp::from_secs(0),
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert_eq!(none.num_rows(), 0);
    assert_eq!(none.num_columns(), 5);

    // start after end, unknown set.
    let err = client
        .get_feature_history(
            "user_features",
            "u1",
            Timestamp::from_secs(10),
            Timestamp::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    let err = client
        .history(HistoryRequest::new("nope"))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_data_point_in_time() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();
    client
        .ingest_features(
            "user_features",
            user_batch(&[("u1", Some(10), None, 100), ("u1", Some(11), None, 200)]),
        )
        .await
        .unwrap();

    // Entity rows: user, time in milliseconds (any unit), a label that passes through.
    let entity_rows = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1", "u1", "u1", "u9"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMillisecondArray::from(vec![
                150_000, 50_000, 200_000, 150_000,
            ])) as ArrayRef,
        ),
        (
            "label",
            Arc::new(Int64Array::from(vec![1, 0, 1, 0])) as ArrayRef,
        ),
    ])
    .unwrap();
    let rows = client
        .training_data(
            vec![entity_rows.clone()],
            ["user_features:age"],
            TrainingDataOptions::default(),
        )
        .await
        .unwrap()
        .concat()
        .await
        .unwrap();
    assert_eq!(
        column_names(&rows),
        ["user_id", "event_timestamp", "label", "age"]
    );
    // Same rows, same order; never a value from after the row's time.
    assert_eq!(ints(&rows, "label"), [Some(1), Some(0), Some(1), Some(0)]);
    assert_eq!(ints(&rows, "age"), [Some(10), None, Some(11), None]);

    let full = client
        .training_data(
            vec![entity_rows.clone()],
            ["user_features:*"],
            TrainingDataOptions::default().full_names(true),
        )
        .await
        .unwrap()
        .concat()
        .await
        .unwrap();
    assert!(column_names(&full).contains(&"user_features__ctr_7d".to_string()));

    // A timestamp column by another name.
    let renamed = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            entity_rows.schema().field(0).clone(),
            entity_rows
                .schema()
                .field(1)
                .clone()
                .with_name("label_time"),
            entity_rows.schema().field(2).clone(),
        ])),
        entity_rows.columns().to_vec(),
    )
    .unwrap();
    let rows = client
        .training_data(
            vec![renamed],
            ["user_features:age"],
            TrainingDataOptions::default().timestamp("label_time"),
        )
        .await
        .unwrap()
        .concat()
        .await
        .unwrap();
    assert_eq!(ints(&rows, "age"), [Some(10), None, Some(11), None]);

    // Errors: unknown set, nothing asked, no entity rows, missing timestamp column.
    let err = async {
        client
            .training_data(
                vec![entity_rows.clone()],
                ["nope:x"],
                TrainingDataOptions::default(),
            )
            .await?
            .concat()
            .await
    }
    .await
    .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = client
        .training_data(
            vec![entity_rows.clone()],
            Vec::<String>::new(),
            TrainingDataOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = client
        .training_data(
            Vec::new(),
            ["user_features:age"],
            TrainingDataOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = async {
        client
            .training_data(
                vec![entity_rows],
                ["user_features:age"],
                TrainingDataOptions::default().timestamp("missing"),
            )
            .await?
            .concat()
            .await
    }
    .await
    .unwrap_err();
    assert!(err.is_invalid_argument(), "{err:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_resource_exhausted() {
    let server = TestServer::start_with(Backend::Duckdb, |config| {
        config.limits.max_online_entities = 3;
        config.limits.max_message_bytes = 64 * 1024;
    })
    .await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();
    let err = client
        .get_features("user_features", ["a", "b", "c", "d"])
        .await
        .unwrap_err();
    assert!(err.is_resource_exhausted(), "{err:?}");
    assert_eq!(err.error_code(), Some(ErrorCode::TooLarge));
    // One batch is one message: over the limit, it is refused whole.
    let rows: Vec<(String, Option<i64>, Option<f32>, i64)> = (0..10_000)
        .map(|i| (format!("user-{i}"), Some(i), Some(0.5), 1))
        .collect();
    let rows: Vec<(&str, Option<i64>, Option<f32>, i64)> =
        rows.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
    let err = client
        .ingest_features("user_features", user_batch(&rows))
        .await
        .unwrap_err();
    assert!(err.is_resource_exhausted(), "{err:?}");
    assert_eq!(
        client
            .get_feature_set("user_features")
            .await
            .unwrap()
            .stats
            .rows,
        0
    );
    server.shutdown().await;
}

/// An ingest of one batch that then sends nothing, held open: it holds its place among the
/// server's calls (and its client's streams) until the server ends it.
async fn held_ingest(client: &Client) -> featherstore_client::AckStream {
    let first = futures::stream::once(async { Ok(user_batch(&[("held", Some(1), None, 1)])) });
    let mut acks = client
        .ingest_stream("user_features", first.chain(futures::stream::pending()))
        .await
        .unwrap();
    acks.try_next()
        .await
        .unwrap()
        .expect("the first batch is stored");
    acks
}

/// The typed code the server sends with each status comes back as [`Error::error_code`],
/// the code an HTTP error body names; RESOURCE_EXHAUSTED tells `too_large` from
/// `too_many_requests`. (UNAUTHENTICATED and PERMISSION_DENIED: tests/security.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_servers_typed_code() {
    let server = TestServer::start_with(Backend::Duckdb, |config| {
        config.limits.max_online_entities = 3;
        config.limits.max_streams_per_client = 1;
        config.limits.stream_idle_timeout_seconds = 1.0;
    })
    .await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();
    let code = |e: Error| e.error_code();
    assert_eq!(
        code(client.get_feature_set("nope").await.unwrap_err()),
        Some(ErrorCode::NotFound)
    );
    let different = USERS.replace("float32[2]", "float32[3]");
    assert_eq!(
        code(
            client
                .create_feature_set(&spec(&different))
                .await
                .unwrap_err()
        ),
        Some(ErrorCode::AlreadyExists)
    );
    let no_timestamp = user_batch(&[("u1", Some(1), None, 1)])
        .project(&[0, 1])
        .unwrap();
    assert_eq!(
        code(
            client
                .ingest_features("user_features", no_timestamp)
                .await
                .unwrap_err()
        ),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        code(
            client
                .get_features("user_features", ["a", "b", "c", "d"])
                .await
                .unwrap_err()
        ),
        Some(ErrorCode::TooLarge)
    );
    // The held ingest is this client's one stream: another is refused.
    let mut held = held_ingest(&client).await;
    let refused = client
        .history(HistoryRequest::new("user_features"))
        .await
        .unwrap_err();
    assert!(refused.is_resource_exhausted(), "{refused:?}");
    assert_eq!(refused.error_code(), Some(ErrorCode::TooManyRequests));
    // Then the server ends the held ingest, which sent nothing for the idle timeout.
    let ended = held.try_next().await.unwrap_err();
    assert_eq!(
        ended.error_code(),
        Some(ErrorCode::DeadlineExceeded),
        "{ended:?}"
    );
    server.shutdown().await;

    let server = TestServer::start_with(Backend::Duckdb, |config| {
        config.limits.max_concurrent_flight_requests = 1;
    })
    .await;
    let client = server.client().await;
    client.create_feature_set(&spec(USERS)).await.unwrap();
    let held = held_ingest(&client).await;
    let refused = client.list_feature_sets().await.unwrap_err();
    assert!(refused.is_unavailable(), "{refused:?}");
    assert_eq!(refused.error_code(), Some(ErrorCode::Unavailable));
    drop(held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(err.to_string().contains(&port.to_string()), "{err}");

    let err = Client::connect("ftp://127.0.0.1:1").await.unwrap_err();
    assert!(matches!(err, Error::InvalidAddress { .. }), "{err:?}");

    // A lazy client connects on first use; then the failure is UNAVAILABLE.
    let lazy = Client::builder(format!("127.0.0.1:{port}"))
        .connect_lazy()
        .unwrap();
    let err = lazy.list_feature_sets().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    // grpc:// addresses (as pyarrow writes them) work, and clones share the connection.
    let server = TestServer::start(Backend::Duckdb).await;
    let grpc = server.flight_addr.replace("http://", "grpc://");
    let client = Client::connect(grpc).await.unwrap();
    let clone = client.clone();
    let (a, b) = tokio::join!(client.list_feature_sets(), clone.list_feature_sets());
    assert!(a.unwrap().is_empty() && b.unwrap().is_empty());
    assert_eq!(client.address(), server.flight_addr);
    server.shutdown().await;
}
