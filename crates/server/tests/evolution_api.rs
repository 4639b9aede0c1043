//! Feature set evolution over the APIs, on both backends: the Flight action
//! `update_feature_set`, versions (`get_feature_set` with `"version"`,
//! `list_feature_set_versions`), `PUT /v1/feature-sets/{name}` and its versions route, the Rust
//! client, and the schemas the catalog shows (GetSchema, ListFlights), before and after a
//! restart.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use arrow_flight::FlightDescriptor;
use featherstore_testkit::http::{assert_error, send};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

fn with_score(spec: &str) -> String {
    spec.replace(
        r#"{"name": "embedding", "type": "float32[2]"}"#,
        r#"{"name": "embedding", "type": "float32[2]"}, {"name": "score", "type": "float64"}"#,
    )
}

fn names(schema: &arrow::datatypes::Schema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

#[tokio::test]
async fn update_over_flight_reads_old_rows_under_the_new_schema() {
    for backend in BACKENDS {
        let (server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
        flight::put_ok(
            &mut client,
            "user_features",
            vec![user_batch(&[("u1", Some(30), Some(0.5), 10)])],
        )
        .await;

        let wanted = with_score(USER_SPEC);
        assert_ne!(
            wanted, USER_SPEC,
            "the fixture changed: update `with_score`"
        );
        let answer = action(&mut client, "update_feature_set", &wanted)
            .await
            .unwrap();
        assert_eq!(answer["spec"]["version"], 2, "{backend:?}");
        assert_eq!(
            answer["changes"],
            json!([{"change": "add_feature", "name": "score", "type": "float64"}])
        );
        let again = action(&mut client, "update_feature_set", &wanted)
            .await
            .unwrap();
        assert_eq!(again["changes"], json!([]), "the same spec is a no-op");
        assert_eq!(again["spec"]["version"], 2);

        // Each refused rule, with its reason and what to do.
        for (refused, reason) in [
            (
                USER_SPEC.replace(r#"{"name": "age", "type": "int64"},"#, ""),
                "feature \"age\" would be removed or renamed",
            ),
            (
                with_score(USER_SPEC).replace("\"age\"", "\"years\""),
                "feature \"age\" would be removed or renamed",
            ),
            (
                with_score(USER_SPEC).replace("\"int64\"", "\"int32\""),
                "the type of feature \"age\" would change",
            ),
            (
                with_score(USER_SPEC).replace(r#""type": "string""#, r#""type": "int64""#),
                "the entity would change",
            ),
            (
                with_score(USER_SPEC)
                    .replace("\"features\"", "\"timestamp\": \"ts\", \"features\""),
                "the timestamp column would change",
            ),
        ] {
            let err = action(&mut client, "update_feature_set", &refused)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
            assert!(err.message().contains(reason), "{backend:?}: {err}");
            assert!(err.message().contains("create a new feature set"), "{err}");
        }

        // New rows with and without the new feature.
        let with = arrow::array::RecordBatch::try_from_iter(vec![
            (
                "user_id",
                std::sync::Arc::new(arrow::array::StringArray::from(vec!["u2"]))
                    as arrow::array::ArrayRef,
            ),
            (
                "event_timestamp",
                std::sync::Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(vec![20_000_000])
                        .with_timezone("UTC"),
                ),
            ),
            (
                "score",
                std::sync::Arc::new(arrow::array::Float64Array::from(vec![0.25])),
            ),
        ])
        .unwrap();
        // One DoPut each: a stream has one schema.
        flight::put_ok(&mut client, "user_features", vec![with]).await;
        flight::put_ok(
            &mut client,
            "user_features",
            vec![user_batch(&[("u3", Some(3), None, 30)])],
        )
        .await;

        let check = |server: &TestServer| {
            let server = server.flight_addr.clone();
            async move {
                let mut client = flight::connect(&server).await;
                let online = concat(
                    &get(
                        &mut client,
                        json!({"type": "online", "feature_set": "user_features",
                               "entities": ["u1", "u2", "u3"]}),
                    )
                    .await
                    .unwrap(),
                );
                let score = online
                    .column_by_name("score")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                assert_eq!(score.iter().collect::<Vec<_>>(), [None, Some(0.25), None]);
                let history = concat(
                    &get(
                        &mut client,
                        json!({"type": "history", "feature_set": "user_features"}),
                    )
                    .await
                    .unwrap(),
                );
                assert_eq!(history.num_rows(), 3);
                let score = history.column_by_name("score").unwrap();
                assert_eq!(score.null_count(), 2);
                let schema = client
                    .get_schema(FlightDescriptor::new_path(vec!["user_features".into()]))
                    .await
                    .unwrap();
                assert_eq!(
                    names(&schema),
                    [
                        "user_id",
                        "age",
                        "ctr_7d",
                        "embedding",
                        "score",
                        "event_timestamp"
                    ]
                );
                let listed = flight::list_flights(&mut client).await;
                let listed = listed[0].clone().try_decode_schema().unwrap();
                assert_eq!(names(&listed), names(&schema));
                let versions = action(
                    &mut client,
                    "list_feature_set_versions",
                    r#"{"name": "user_features"}"#,
                )
                .await
                .unwrap();
                let numbers: Vec<&Value> = versions
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| &v["version"])
                    .collect();
                assert_eq!(numbers, [&json!(1), &json!(2)]);
                let first = action(
                    &mut client,
                    "get_feature_set",
                    r#"{"name": "user_features", "version": 1}"#,
                )
                .await
                .unwrap();
                assert_eq!(first["features"].as_array().unwrap().len(), 3);
                assert_eq!(first["stats"]["rows"], 3);
                let missing = action(
                    &mut client,
                    "get_feature_set",
                    r#"{"name": "user_features", "version": 9}"#,
                )
                .await
                .unwrap_err();
                assert_eq!(missing.code(), Code::NotFound, "{missing}");
            }
        };
        check(&server).await;
        let server = server.restart().await;
        check(&server).await;
    }
}

#[tokio::test]
async fn update_over_http_and_the_rust_client() {
    for backend in BACKENDS {
        let (server, _) = TestServer::with_set(backend, USER_SPEC).await;
        let base = &server.http;
        let http = http();
        let url = format!("{base}/v1/feature-sets/user_features");
        let wanted = with_score(USER_SPEC);
        let (status, answer) = send(http.put(&url).body(wanted.clone())).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["spec"]["version"], 2);
        assert_eq!(answer["changes"][0]["change"], "add_feature");
        let renamed = send(
            http.put(format!("{base}/v1/feature-sets/other"))
                .body(wanted),
        )
        .await;
        assert_error(
            &renamed,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "the path names",
        );
        let refused = send(http.put(&url).body(USER_SPEC)).await;
        assert_error(
            &refused,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "feature \"score\" would be removed",
        );
        let missing = send(
            http.put(format!("{base}/v1/feature-sets/nope"))
                .body(USER_SPEC.replace("user_features", "nope")),
        )
        .await;
        assert_error(&missing, StatusCode::NOT_FOUND, "not_found", "nope");
        let (status, versions) = send(http.get(format!("{url}/versions"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
        let (status, _) = send(http.get(format!("{base}/v1/feature-sets/nope/versions"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The Rust client.
        let client = server.client().await;
        let mut spec = client.get_feature_set("user_features").await.unwrap().spec;
        spec.ttl_seconds = Some(60);
        let update = client.update_feature_set(&spec).await.unwrap();
        assert_eq!(update.spec.version, Some(3));
        assert_eq!(
            serde_json::to_value(&update.changes).unwrap(),
            json!([{"change": "ttl_seconds", "from": null, "to": 60}])
        );
        let first = client
            .get_feature_set_version("user_features", 1)
            .await
            .unwrap();
        assert_eq!(first.spec.features.len(), 3);
        let versions = client
            .list_feature_set_versions("user_features")
            .await
            .unwrap();
        let numbers: Vec<_> = versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    }
}
