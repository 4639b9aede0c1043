//! The client's feature service calls against a real server in this process: the registry,
//! reads across sets and training data by service.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type};
use featherstore_client::{
    Code, ErrorCode, FeatureServiceSpec, FeatureSetSpec, MultiOnlineRequest, TrainingDataOptions,
};
use featherstore_server::config::Backend;
use featherstore_testkit::{column_names, user_batch, TestServer, USER_SPEC};
use futures::TryStreamExt;

const MERCHANTS: &str = r#"{
  "name": "merchant_features",
  "entity": {"name": "merchant_id", "type": "int64"},
  "features": [{"name": "risk", "type": "float32"}]
}"#;

const T0: i64 = 1_767_225_600_000_000;

#[tokio::test]
async fn services_registry_reads_across_sets_and_training_by_service() {
    let server = TestServer::start(Backend::Duckdb).await;
    let client = server.client().await;
    for spec in [USER_SPEC, MERCHANTS] {
        client
            .create_feature_set(&FeatureSetSpec::from_json(spec.as_bytes()).unwrap())
            .await
            .unwrap();
    }
    client
        .ingest_features(
            "user_features",
            user_batch(&[("u1", Some(31), Some(0.5), 1_767_225_600)]),
        )
        .await
        .unwrap();
    let merchants = RecordBatch::try_from_iter(vec![
        (
            "merchant_id",
            Arc::new(Int64Array::from(vec![7])) as ArrayRef,
        ),
        ("risk", Arc::new(Float32Array::from(vec![0.25]))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![T0])),
        ),
    ])
    .unwrap();
    client
        .ingest_features("merchant_features", merchants)
        .await
        .unwrap();

    let service = FeatureServiceSpec::from_json(
        br#"{"name": "fraud_model", "features": ["user_features:age", "merchant_features:*"], "description": "fraud"}"#,
    )
    .unwrap();
    let stored = client.create_feature_service(&service).await.unwrap();
    assert!(stored.same_definition(&service) && stored.created_at.is_some());
    assert_eq!(
        client.get_feature_service("fraud_model").await.unwrap(),
        stored
    );
    assert_eq!(client.list_feature_services().await.unwrap(), [stored]);
    let unknown = FeatureServiceSpec::from_json(br#"{"name": "s", "features": ["x:y"]}"#).unwrap();
    let error = client.create_feature_service(&unknown).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound));
    let refused = client
        .delete_feature_set("merchant_features")
        .await
        .unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::FailedPrecondition));

    let rows = client
        .online_multi(
            MultiOnlineRequest::service("fraud_model")
                .entity("user_id", ["u1", "nobody"])
                .entity("merchant_id", vec![7_i64, 8]),
        )
        .await
        .unwrap();
    assert_eq!(
        column_names(&rows),
        ["user_id", "merchant_id", "age", "risk"]
    );
    let ages = rows.column(2).as_primitive::<Int64Type>();
    assert_eq!((ages.value(0), ages.is_null(1)), (31, true));
    let risk = rows.column(3).as_primitive::<Float32Type>();
    assert_eq!((risk.value(0), risk.is_null(1)), (0.25, true));

    let referenced = client
        .online_multi(
            MultiOnlineRequest::features(["merchant_features:risk"])
                .entity("merchant_id", vec![7_i64])
                .full_names(true)
                .with_timestamps(true),
        )
        .await
        .unwrap();
    assert_eq!(
        column_names(&referenced),
        [
            "merchant_id",
            "merchant_features__risk",
            "merchant_features__event_timestamp"
        ]
    );
    let missing = client
        .online_multi(MultiOnlineRequest::service("fraud_model").entity("user_id", ["u1"]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(Code::InvalidArgument));
    assert!(missing.message().contains("merchant_id"), "{missing}");

    let entity_rows = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u1"])) as ArrayRef,
        ),
        ("merchant_id", Arc::new(Int64Array::from(vec![7]))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![T0 + 1])),
        ),
    ])
    .unwrap();
    let joined: Vec<RecordBatch> = client
        .training_data_for_service(
            vec![entity_rows],
            "fraud_model",
            TrainingDataOptions::default(),
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        column_names(&joined[0]),
        ["user_id", "merchant_id", "event_timestamp", "age", "risk"]
    );
    assert_eq!(joined[0].column(3).as_primitive::<Int64Type>().value(0), 31);

    client.delete_feature_service("fraud_model").await.unwrap();
    let gone = client.get_feature_service("fraud_model").await.unwrap_err();
    assert_eq!(gone.code(), Some(Code::NotFound));
    client
        .delete_feature_set("merchant_features")
        .await
        .unwrap();
}
