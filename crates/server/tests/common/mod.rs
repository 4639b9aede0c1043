//! A real server on loopback port 0 with a temporary data directory, and clients for it.
#![allow(dead_code)] // each test binary uses its own part of this

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListBuilder, Float32Array, Float32Builder, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_flight::{Action, FlightClient};
use featherstore_server::config::{Backend, Config};
use featherstore_server::RunningServer;
use futures::TryStreamExt;
use serde_json::Value;

pub const BACKENDS: [Backend; 2] = [Backend::Duckdb, Backend::Parquet];

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub http: String,
    pub flight_addr: String,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, backend, |_| {}).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::ephemeral(dir.path(), backend);
        adjust(&mut config);
        let server = featherstore_server::start(&config).await.unwrap();
        TestServer {
            http: format!("http://{}", server.http_addr),
            flight_addr: format!("http://{}", server.flight_addr),
            server: Some(server),
            dir,
            backend,
        }
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(mut self) -> Self {
        self.server.take().unwrap().shutdown().await;
        let backend = self.backend;
        Self::start_in(self.dir, backend, |_| {}).await
    }

    pub async fn flight(&self) -> FlightClient {
        let channel = tonic::transport::Channel::from_shared(self.flight_addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightClient::new(channel)
    }

    pub fn metrics_url(&self) -> String {
        format!(
            "http://{}/metrics",
            self.server.as_ref().unwrap().metrics_addr
        )
    }

    /// The Prometheus text of the metrics port.
    pub async fn metrics_text(&self) -> String {
        http()
            .get(self.metrics_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub const USER_SPEC: &str = r#"{
  "name": "user_features",
  "entity": {"name": "user_id", "type": "string"},
  "features": [
    {"name": "age", "type": "int64"},
    {"name": "ctr_7d", "type": "float32"},
    {"name": "embedding", "type": "float32[2]"}
  ],
  "tags": {"team": "growth"}
}"#;

pub async fn action(
    client: &mut FlightClient,
    name: &str,
    body: &str,
) -> Result<Value, tonic::Status> {
    let results: Vec<_> = client
        .do_action(Action::new(name, body.to_string()))
        .await
        .map_err(to_status)?
        .try_collect()
        .await
        .map_err(to_status)?;
    assert_eq!(results.len(), 1);
    Ok(serde_json::from_slice(&results[0]).unwrap())
}

/// DoPut of `batches` into feature set `name`: the acknowledgements, or the call's error.
pub async fn put(
    client: &mut FlightClient,
    name: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<arrow_flight::PutResult>, arrow_flight::error::FlightError> {
    let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_path(vec![
            name.to_string()
        ])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    client.do_put(data).await?.try_collect().await
}

pub fn to_status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// Rows of user_features: (user, age, ctr, event time in seconds).
pub fn user_batch(rows: &[(&str, Option<i64>, Option<f32>, i64)]) -> RecordBatch {
    let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    for (_, age, _, _) in rows {
        let x = age.unwrap_or(0) as f32;
        embedding.values().append_slice(&[x, x + 0.5]);
        embedding.append(true);
    }
    // Nullable fields throughout, as clients usually send them.
    RecordBatch::try_from_iter_with_nullable(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            true,
        ),
        (
            "age",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))) as ArrayRef,
            true,
        ),
        (
            "ctr_7d",
            Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.2))) as ArrayRef,
            true,
        ),
        ("embedding", Arc::new(embedding.finish()) as ArrayRef, true),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.3 * 1_000_000))
                    .with_timezone("UTC"),
            ) as ArrayRef,
            true,
        ),
    ])
    .unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}
