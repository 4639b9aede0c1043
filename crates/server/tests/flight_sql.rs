//! Flight SQL on the Flight port, end to end with arrow-flight's `FlightSqlServiceClient` (and
//! the plain Flight client where the exact status matters), on both backends: queries,
//! prepared statements, catalog requests, streaming, and every kind of hostile input.

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, CommandGetDbSchemas, CommandGetTables,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, Ticket};
use featherstore_server::config::Backend;
use featherstore_testkit::*;
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

async fn sql_client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(server.flight_addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// Every batch of every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint has a ticket");
        let stream = client.do_get(ticket).await.expect("DoGet starts");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("DoGet streams"));
    }
    batches
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch(client, info).await
}

/// A server holding `user_features` with four rows of three users.
async fn server_with_users(backend: Backend) -> TestServer {
    server_with_users_config(backend, |_| {}).await
}

async fn server_with_users_config(
    backend: Backend,
    adjust: impl FnOnce(&mut featherstore_server::config::Config),
) -> TestServer {
    let server = TestServer::start_with(backend, adjust).await;
    let mut client = server.flight().await;
    featherstore_testkit::flight::create_set(&mut client, USER_SPEC).await;
    put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[
            ("u1", Some(30), Some(0.5), 100),
            ("u2", Some(40), None, 100),
            ("u1", Some(31), Some(0.25), 200),
            ("u3", None, Some(1.0), 300),
        ])],
    )
    .await;
    server
}

/// The status of a Flight SQL statement query sent with the plain Flight client (its
/// errors keep the gRPC code).
async fn statement_status(server: &TestServer, sql: &str) -> tonic::Status {
    let mut client = server.flight().await;
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    match client.get_flight_info(descriptor).await {
        Err(e) => to_status(e),
        // Planned: running it must fail.
        Ok(info) => refusal(&mut client, info.endpoint[0].ticket.clone().unwrap(), sql).await,
    }
}

/// The status of running `sql` directly from a statement ticket (no GetFlightInfo first).
async fn ticket_status(server: &TestServer, sql: &str) -> tonic::Status {
    let mut client = server.flight().await;
    let ticket = TicketStatementQuery {
        statement_handle: sql.as_bytes().to_vec().into(),
    };
    refusal(
        &mut client,
        Ticket::new(ticket.as_any().encode_to_vec()),
        sql,
    )
    .await
}

/// The status a DoGet of `ticket` fails with, when it starts or mid-stream.
async fn refusal(
    client: &mut arrow_flight::FlightClient,
    ticket: Ticket,
    sql: &str,
) -> tonic::Status {
    match client.do_get(ticket).await {
        Err(e) => to_status(e),
        Ok(stream) => match stream.try_collect::<Vec<_>>().await {
            Err(e) => to_status(e),
            Ok(batches) => panic!("{sql} was accepted: {batches:?}"),
        },
    }
}

#[tokio::test]
async fn queries_catalog_and_prepared_statements() {
    for backend in BACKENDS {
        let server = server_with_users(backend).await;
        let mut client = sql_client(&server).await;

        let batches = query(
            &mut client,
            "SELECT user_id, count(*) AS n, max(age) AS oldest, avg(ctr_7d) AS ctr \
             FROM user_features GROUP BY user_id ORDER BY user_id",
        )
        .await;
        let batch = concat(&batches);
        assert_eq!(batch.num_rows(), 3, "{backend:?}");
        let users: Vec<&str> = batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(users, ["u1", "u2", "u3"]);
        let counts = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(counts.values(), &[2, 1, 1]);
        let oldest = batch.column(2).as_primitive::<Int64Type>();
        assert_eq!((oldest.value(0), oldest.value(1)), (31, 40));
        assert!(oldest.is_null(2), "u3's age is null");
        let ctr = batch.column(3).as_primitive::<Float64Type>();
        assert!((ctr.value(0) - 0.375).abs() < 1e-6);

        // Every column, with the set's types; timestamps in UTC; embeddings as arrays.
        let all = concat(
            &query(
                &mut client,
                "SELECT * FROM user_features ORDER BY event_timestamp, user_id",
            )
            .await,
        );
        assert_eq!(all.num_rows(), 4);
        assert_eq!(
            column_names(&all),
            ["user_id", "age", "ctr_7d", "embedding", "event_timestamp"]
        );
        assert!(
            matches!(all.schema().field(4).data_type(), DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC"),
            "{:?}",
            all.schema()
        );
        let count = concat(&query(&mut client, "SELECT count(*) AS n FROM user_features").await);
        assert_eq!(count.column(0).as_primitive::<Int64Type>().value(0), 4);
        let filtered = concat(
            &query(
                &mut client,
                "SELECT user_id FROM user_features WHERE event_timestamp >= TIMESTAMPTZ '1970-01-01 00:03:20+00' ORDER BY user_id",
            )
            .await,
        );
        assert_eq!(filtered.num_rows(), 2, "rows at 200 s and 300 s");

        // DuckDB's other read-only forms.
        for sql in [
            "DESCRIBE user_features",
            "SUMMARIZE user_features",
            "FROM user_features SELECT user_id",
            "VALUES (1), (2)",
            "SELECT * FROM information_schema.tables",
        ] {
            assert!(concat_rows(&query(&mut client, sql).await) > 0, "{sql}");
        }
        // An empty result still has its schema.
        let info = client
            .execute("SELECT user_id FROM user_features WHERE false".into(), None)
            .await
            .unwrap();
        assert_eq!(info.clone().try_decode_schema().unwrap().fields().len(), 1);
        assert_eq!(concat_rows(&fetch(&mut client, info).await), 0);

        // Prepared statements: create, execute twice, close.
        let mut prepared = client
            .prepare(
                "SELECT user_id, age FROM user_features WHERE age > 30 ORDER BY age".into(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(prepared.dataset_schema().unwrap().fields().len(), 2);
        for _ in 0..2 {
            let info = prepared.execute().await.unwrap();
            let rows = concat(&fetch(&mut client, info).await);
            assert_eq!(
                rows.column(1).as_primitive::<Int64Type>().values(),
                &[31, 40]
            );
        }
        prepared.close().await.unwrap();

        // Catalog requests.
        let info = client.get_catalogs().await.unwrap();
        let catalogs = concat(&fetch(&mut client, info).await);
        assert_eq!(
            catalogs.column(0).as_string::<i32>().value(0),
            "featherstore"
        );
        let info = client
            .get_db_schemas(CommandGetDbSchemas {
                catalog: None,
                db_schema_filter_pattern: None,
            })
            .await
            .unwrap();
        let schemas = concat(&fetch(&mut client, info).await);
        assert_eq!(schemas.column(1).as_string::<i32>().value(0), "main");
        let info = client
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: Some("user%".into()),
                table_types: vec![],
                include_schema: true,
            })
            .await
            .unwrap();
        let tables = concat(&fetch(&mut client, info).await);
        assert_eq!(tables.num_rows(), 1);
        assert_eq!(
            tables.column(2).as_string::<i32>().value(0),
            "user_features"
        );
        assert_eq!(tables.column(3).as_string::<i32>().value(0), "TABLE");
        let schema_bytes = tables.column(4).as_binary::<i32>().value(0);
        let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes).unwrap();
        assert_eq!(schema.fields().len(), 5, "{schema:?}");
        let info = client
            .get_tables(CommandGetTables {
                table_name_filter_pattern: Some("nothing%".into()),
                ..CommandGetTables::default()
            })
            .await
            .unwrap();
        assert_eq!(concat_rows(&fetch(&mut client, info).await), 0);
        let info = client.get_table_types().await.unwrap();
        let types = concat(&fetch(&mut client, info).await);
        assert_eq!(types.column(0).as_string::<i32>().value(0), "TABLE");
        let info = client
            .get_sql_info(vec![
                SqlInfo::FlightSqlServerName,
                SqlInfo::FlightSqlServerReadOnly,
            ])
            .await
            .unwrap();
        let sql_info = concat(&fetch(&mut client, info).await);
        assert_eq!(sql_info.num_rows(), 2, "the two infos asked for");

        // The FeatherStore protocol on the same port is unchanged.
        let mut flight = server.flight().await;
        let history = get(
            &mut flight,
            serde_json::json!({"type": "history", "feature_set": "user_features"}),
        )
        .await
        .unwrap();
        assert_eq!(concat_rows(&history), 4);
        let actions: Vec<String> = flight
            .list_actions()
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.r#type)
            .collect();
        assert!(actions.contains(&"create_feature_set".to_string()));
        assert!(actions.contains(&"CreatePreparedStatement".to_string()));

        // Counted like every Flight call: the planning call, the DoGet, and the stream's end.
        let metrics = server.metrics_text().await;
        for method in [
            "sql_statement",
            "sql_do_get",
            "sql_do_get_stream",
            "sql_create_prepared_statement",
            "sql_prepared_statement",
            "sql_close_prepared_statement",
            "sql_get_tables",
            "sql_get_sql_info",
        ] {
            let line = format!(
                "featherstore_requests_total{{api=\"flight\",code=\"ok\",method=\"{method}\"}}"
            );
            assert!(metrics.contains(&line), "{backend:?}: no {line}");
        }
        server.shutdown().await;
    }
}

/// `SELECT count(*)` of a set, over Flight SQL.
async fn count_rows(server: &TestServer, set: &str) -> i64 {
    let mut client = sql_client(server).await;
    let count = concat(&query(&mut client, &format!("SELECT count(*) FROM {set}")).await);
    count.column(0).as_primitive::<Int64Type>().value(0)
}

fn concat_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[tokio::test]
async fn results_are_streamed_in_batches() {
    for backend in BACKENDS {
        let server = server_with_users(backend).await;
        let mut client = sql_client(&server).await;
        // Far more rows than one DuckDB vector (2048): several batches, never one whole.
        let batches = query(
            &mut client,
            "SELECT u.user_id, r.range AS i FROM user_features u, range(50000) r",
        )
        .await;
        assert_eq!(concat_rows(&batches), 200_000);
        assert!(batches.len() > 10, "{} batches", batches.len());
        server.shutdown().await;
    }
}

#[tokio::test]
async fn anything_but_a_query_is_refused() {
    for backend in BACKENDS {
        let server = server_with_users(backend).await;
        let secret = server.dir.path().join("secret.csv");
        std::fs::write(&secret, "a,b\n1,2\n").unwrap();
        let secret = secret.display().to_string();
        let hostile = [
            "INSERT INTO user_features VALUES ('x', 1, 0.5, [1, 2], now())".to_string(),
            "DELETE FROM user_features".into(),
            "UPDATE user_features SET age = 1".into(),
            "DROP VIEW user_features".into(),
            "CREATE TABLE t AS SELECT 1".into(),
            "CREATE VIEW v AS SELECT 1".into(),
            format!("COPY (SELECT 1) TO '{secret}.out'"),
            format!("COPY user_features FROM '{secret}'"),
            format!("ATTACH '{secret}.db' AS other"),
            "PRAGMA database_list".into(),
            "SET enable_external_access = true".into(),
            "SET memory_limit = '100GB'".into(),
            "RESET lock_configuration".into(),
            "INSTALL httpfs".into(),
            "LOAD httpfs".into(),
            "CALL pragma_version()".into(),
            "EXPORT DATABASE '/tmp/x'".into(),
            "CHECKPOINT".into(),
            "BEGIN TRANSACTION".into(),
            format!("SELECT * FROM read_csv('{secret}')"),
            format!("SELECT * FROM read_csv_auto('{secret}')"),
            format!("SELECT * FROM read_text('{secret}')"),
            format!("SELECT * FROM read_blob('{secret}')"),
            format!("SELECT * FROM read_parquet('{secret}')"),
            format!("SELECT * FROM glob('{}/*')", server.dir.path().display()),
            "SELECT * FROM read_csv('https://example.com/x.csv')".into(),
            "SELECT * FROM duckdb_settings()".into(),
            "SELECT * FROM query('SELECT 1')".into(),
            "SELECT * FROM featherstore_scan('user_features')".into(),
            format!("SELECT count(*) FROM user_features WHERE age IN (SELECT a FROM read_csv('{secret}'))"),
            format!("WITH x AS (SELECT * FROM read_csv('{secret}')) SELECT * FROM x"),
            "SELECT 1; SELECT 2".into(),
            "SELECT 1; DROP VIEW user_features".into(),
            "DROP VIEW user_features; SELECT 1".into(),
            "EXPLAIN ANALYZE SELECT * FROM user_features".into(),
            "not sql at all".into(),
            "".into(),
        ];
        for sql in &hostile {
            let status = statement_status(&server, sql).await;
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{backend:?} {sql}: {status}"
            );
            // The same query in a ticket of its own, skipping GetFlightInfo.
            let status = ticket_status(&server, sql).await;
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{backend:?} ticket {sql}: {status}"
            );
        }
        // The file reads did not happen behind the refusal, and writes left nothing.
        assert!(!std::path::Path::new(&format!("{secret}.out")).exists());
        assert!(!std::path::Path::new(&format!("{secret}.db")).exists());
        // A replacement scan of a file path (no function named): DuckDB's own lock refuses it.
        let status = statement_status(&server, &format!("SELECT * FROM '{secret}'")).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        let status = statement_status(&server, "SELECT getenv('HOME')").await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");

        // Updates, ingest and parameter binding over DoPut are refused too (write scope is
        // not even needed to be told so: auth is off here).
        let mut client = sql_client(&server).await;
        let update = client
            .execute_update("DELETE FROM user_features".into(), None)
            .await
            .expect_err("refused");
        assert_eq!(to_status(update).code(), Code::InvalidArgument);
        // Prepared statements go through the same checks.
        let mut flight = server.flight().await;
        let request = ActionCreatePreparedStatementRequest {
            query: "DROP VIEW user_features".into(),
            transaction_id: None,
        };
        let err = flight
            .do_action(Action::new(
                "CreatePreparedStatement",
                request.as_any().encode_to_vec(),
            ))
            .await
            .err()
            .map(to_status)
            .expect("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");

        let metrics = server.metrics_text().await;
        assert!(
            metrics.contains(
                "featherstore_requests_total{api=\"flight\",code=\"invalid_argument\",method=\"sql_statement\"}"
            ),
            "refusals are counted"
        );
        // The data is all there, and the server still answers queries.
        assert_eq!(count_rows(&server, "user_features").await, 4);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn unknown_tables_and_bad_queries_are_invalid_arguments() {
    let server = server_with_users(Backend::Duckdb).await;
    for sql in [
        "SELECT * FROM no_such_set",
        "SELECT no_such_column FROM user_features",
        "SELECT * FROM fs_user_features",
        "SELECT * FROM featherstore_specs",
        "SELECT CAST('x' AS INTEGER)",
        "SELECT * FROM user_features WHERE age = ?",
    ] {
        let status = statement_status(&server, sql).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_query_is_stopped_at_its_timeout() {
    for backend in BACKENDS {
        let server = server_with_users_config(backend, |config| {
            config.flight_sql.query_timeout_ms = 500;
        })
        .await;
        let started = Instant::now();
        // Minutes of work unless stopped.
        let status = ticket_status(
            &server,
            "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3",
        )
        .await;
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert!(status.message().contains("query_timeout_ms"), "{status}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // A query reading a set, stopped mid-scan, leaves storage usable.
        let status = ticket_status(
            &server,
            "SELECT count(*) FROM user_features u, range(10000000000) r WHERE r.range % 7 = u.age",
        )
        .await;
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert_eq!(count_rows(&server, "user_features").await, 4);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_query_over_its_memory_limit_is_resource_exhausted() {
    let server = server_with_users_config(Backend::Duckdb, |config| {
        config.flight_sql.memory_limit = "20MB".into();
    })
    .await;
    let status = ticket_status(
        &server,
        "SELECT list(range) FROM range(50000000) GROUP BY range % 3",
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("flight_sql.memory_limit"),
        "{status}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn flight_sql_can_be_disabled() {
    let server = server_with_users_config(Backend::Duckdb, |config| {
        config.flight_sql.enabled = false;
    })
    .await;
    let status = statement_status(&server, "SELECT 1").await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    server.shutdown().await;
}

#[tokio::test]
async fn with_auth_on_queries_need_read_scope_and_see_only_their_sets() {
    use featherstore_server::config::{AuthConfig, Scope, TokenConfig};
    const ADMIN: &str = "admin-0a9b8c7d6e5f4a3b2c";
    const INGESTER: &str = "ingester-71e2d3c4b5a69788";
    const USERS_ONLY: &str = "users-only-4d3c2b1a0f9e8d7c";
    let mut users_only = TokenConfig::inline("users-only", USERS_ONLY, &[Scope::Read]);
    users_only.feature_sets = Some(vec!["user_*".into()]);
    let auth = AuthConfig {
        tokens: vec![
            TokenConfig::inline("admin", ADMIN, &[Scope::Read, Scope::Write, Scope::Admin]),
            TokenConfig::inline("ingester", INGESTER, &[Scope::Write]),
            users_only,
        ],
        allow_unauthenticated: false,
    };
    let server = TestServer::start_with(Backend::Duckdb, |c| c.auth = auth).await;
    let mut admin = server.flight().await;
    admin
        .add_header("authorization", &format!("Bearer {ADMIN}"))
        .unwrap();
    featherstore_testkit::flight::create_set(&mut admin, USER_SPEC).await;
    featherstore_testkit::flight::create_set(
        &mut admin,
        r#"{"name": "item_features", "entity": {"name": "item_id", "type": "string"},
            "features": [{"name": "price", "type": "float64"}]}"#,
    )
    .await;
    put_ok(
        &mut admin,
        "user_features",
        vec![user_batch(&[("u1", Some(30), Some(0.5), 100)])],
    )
    .await;

    let as_token = |token: Option<&'static str>| {
        let server = &server;
        async move {
            let mut client = sql_client(server).await;
            if let Some(token) = token {
                client.set_header("authorization", format!("Bearer {token}"));
            }
            client
        }
    };
    let failure = |result: Result<FlightInfo, arrow_flight::error::FlightError>| {
        to_status(result.expect_err("refused")).code()
    };
    let mut anonymous = as_token(None).await;
    let refused = failure(anonymous.execute("SELECT 1".into(), None).await);
    assert_eq!(refused, Code::Unauthenticated);
    let mut ingester = as_token(Some(INGESTER)).await;
    let refused = failure(ingester.execute("SELECT 1".into(), None).await);
    assert_eq!(refused, Code::PermissionDenied);
    let refused = failure(ingester.get_catalogs().await);
    assert_eq!(refused, Code::PermissionDenied);

    let mut users = as_token(Some(USERS_ONLY)).await;
    let count = concat(&query(&mut users, "SELECT count(*) FROM user_features").await);
    assert_eq!(count.column(0).as_primitive::<Int64Type>().value(0), 1);
    let refused = failure(
        users
            .execute("SELECT * FROM item_features".into(), None)
            .await,
    );
    assert_eq!(refused, Code::InvalidArgument);
    let info = users.get_tables(CommandGetTables::default()).await.unwrap();
    let tables = concat(&fetch(&mut users, info).await);
    let names: Vec<&str> = tables
        .column(2)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(names, ["user_features"]);

    let mut admin_sql = as_token(Some(ADMIN)).await;
    let info = admin_sql
        .get_tables(CommandGetTables::default())
        .await
        .unwrap();
    assert_eq!(concat(&fetch(&mut admin_sql, info).await).num_rows(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn queries_ended_early_or_abandoned_give_their_storage_connection_back() {
    for backend in BACKENDS {
        // One read connection, and a short wait for it: a scan that kept it would make the
        // next read fail with UNAVAILABLE.
        let server = TestServer::start_with(backend, |config| {
            config.storage.connections = 2;
            config.storage.write_connections = 1;
            config.limits.storage_wait_seconds = 2.0;
        })
        .await;
        let mut flight = server.flight().await;
        featherstore_testkit::flight::fill_float_set(&mut flight, "floats", 200_000).await;
        let mut client = sql_client(&server).await;
        for _ in 0..3 {
            let first = concat(&query(&mut client, "SELECT id, f0 FROM floats LIMIT 5").await);
            assert_eq!(first.num_rows(), 5, "{backend:?}");
        }
        // A client that reads one batch of a large result and goes away.
        let info = client
            .execute("SELECT * FROM floats".into(), None)
            .await
            .unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        use futures::StreamExt;
        stream.next().await.expect("a first batch").unwrap();
        drop(stream);
        let started = Instant::now();
        let history = get(
            &mut flight,
            serde_json::json!({"type": "history", "feature_set": "floats", "entities": [7]}),
        )
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        assert_eq!(concat_rows(&history), 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(count_rows(&server, "floats").await, 200_000);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn every_feature_type_reads_back_as_stored() {
    let spec = serde_json::json!({
        "name": "all_types",
        "entity": {"name": "id", "type": "int64"},
        "features": [
            {"name": "b", "type": "bool"},
            {"name": "i32", "type": "int32"},
            {"name": "i64", "type": "int64"},
            {"name": "f32", "type": "float32"},
            {"name": "f64", "type": "float64"},
            {"name": "s", "type": "string"},
            {"name": "bin", "type": "binary"},
            {"name": "d", "type": "date"},
            {"name": "ts", "type": "timestamp"},
            {"name": "v32", "type": "float32[3]"},
            {"name": "v64", "type": "float64[2]"}
        ]
    });
    let rows = serde_json::json!({"rows": [
        {"id": 1, "event_timestamp": "2026-01-01T00:00:00Z", "b": true, "i32": -5, "i64": 1234567890123_i64,
         "f32": 0.5, "f64": 2.25, "s": "été", "bin": "AAEC", "d": "2026-02-03",
         "ts": "2026-03-04T05:06:07.123456Z", "v32": [1.0, 2.0, 3.0], "v64": [0.1, 0.2]},
        {"id": 2, "event_timestamp": "2026-01-02T00:00:00Z"}
    ]});
    for backend in BACKENDS {
        let server = TestServer::start(backend).await;
        let mut flight = server.flight().await;
        featherstore_testkit::flight::create_set(&mut flight, &spec.to_string()).await;
        let (status, body) = featherstore_testkit::http::post_json(
            &format!("{}/v1/feature-sets/all_types/rows", server.http),
            &rows,
        )
        .await;
        assert!(status.is_success(), "{body}");
        let history = concat(
            &get(
                &mut flight,
                serde_json::json!({"type": "history", "feature_set": "all_types"}),
            )
            .await
            .unwrap(),
        );
        let mut client = sql_client(&server).await;
        let sql = concat(
            &query(
                &mut client,
                "SELECT * FROM all_types ORDER BY id, event_timestamp",
            )
            .await,
        );
        assert_eq!(column_names(&sql), column_names(&history), "{backend:?}");
        for (i, field) in history.schema().fields().iter().enumerate() {
            let (want, got) = (history.column(i), sql.column(i));
            match (field.data_type(), got.data_type()) {
                // The list's item field is named by DuckDB; the values are what count.
                (DataType::FixedSizeList(_, n), DataType::FixedSizeList(_, m)) => {
                    assert_eq!(n, m, "{backend:?} {}", field.name());
                    assert_eq!(
                        want.as_fixed_size_list().values(),
                        got.as_fixed_size_list().values(),
                        "{backend:?} {}",
                        field.name()
                    );
                    assert_eq!(want.nulls(), got.nulls(), "{backend:?} {}", field.name());
                }
                (want_type, got_type) => {
                    assert_eq!(want_type, got_type, "{backend:?} {}", field.name());
                    assert_eq!(want, got, "{backend:?} {}", field.name());
                }
            }
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn queries_over_the_concurrency_limit_are_unavailable() {
    let server = server_with_users_config(Backend::Duckdb, |config| {
        config.flight_sql.max_concurrent_queries = 1;
        config.flight_sql.query_timeout_ms = 3_000;
    })
    .await;
    // One query runs: it holds the only permit while its stream is open, unread.
    let mut client = server.flight().await;
    let ticket = TicketStatementQuery {
        statement_handle: "SELECT u.user_id, r.range FROM user_features u, range(100000000000) r"
            .as_bytes()
            .to_vec()
            .into(),
    };
    let running = client
        .do_get(Ticket::new(ticket.as_any().encode_to_vec()))
        .await
        .expect("the first query starts");
    let status = statement_status(&server, "SELECT 1").await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(
        status.message().contains("max_concurrent_queries"),
        "{status}"
    );
    // Its client goes away: the query stops and queries run again.
    drop(running);
    let started = Instant::now();
    loop {
        let mut sql = sql_client(&server).await;
        match sql.execute("SELECT 1".into(), None).await {
            Ok(_) => break,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "still refused: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count_rows(&server, "user_features").await, 4);
    server.shutdown().await;
}
