//! A real server on loopback port 0 with a temporary data directory, and clients for it.
#![allow(dead_code)] // each test binary uses its own part of this

pub mod certs;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListBuilder, Float32Array, Float32Builder, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use featherstore_server::config::{Backend, Config};
use featherstore_server::RunningServer;
use futures::{StreamExt, TryStreamExt};
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

/// DoPut of `batches` into `set`: the acknowledgements, and the error that ended the call.
pub async fn put(
    client: &mut FlightClient,
    set: &str,
    batches: Vec<RecordBatch>,
) -> (Vec<Value>, Option<tonic::Status>) {
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![set.to_string()])))
        .build(input);
    let mut acks = Vec::new();
    let mut responses = match client.do_put(data).await {
        Ok(responses) => responses,
        Err(e) => return (acks, Some(to_status(e))),
    };
    while let Some(next) = responses.next().await {
        match next {
            Ok(result) => acks.push(serde_json::from_slice(&result.app_metadata).unwrap()),
            Err(e) => return (acks, Some(to_status(e))),
        }
    }
    (acks, None)
}

pub async fn get(
    client: &mut FlightClient,
    ticket: Value,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .map_err(to_status)?;
    stream.try_collect().await.map_err(to_status)
}

pub fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

/// DoExchange of a training data `command` with `batches` of entity rows.
pub async fn exchange(
    server: &TestServer,
    command: Value,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut client = server.flight().await;
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let stream = client.do_exchange(data).await.map_err(to_status)?;
    stream.try_collect().await.map_err(to_status)
}
