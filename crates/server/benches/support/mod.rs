//! Shared by the benchmarks: a server on loopback and a 16 × float32 feature set.
#![allow(dead_code)] // each benchmark binary uses its own part of this

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor};
use featherstore_server::config::{Backend, Config};
use featherstore_server::RunningServer;
use futures::TryStreamExt;

pub const FEATURES: usize = 16;

pub async fn start(dir: &std::path::Path, backend: Backend) -> RunningServer {
    featherstore_server::start(&Config::ephemeral(dir, backend))
        .await
        .expect("server starts")
}

pub async fn client(server: &RunningServer) -> FlightClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

pub async fn create_set(client: &mut FlightClient, name: &str) {
    let features: Vec<_> = (0..FEATURES)
        .map(|i| serde_json::json!({"name": format!("f{i}"), "type": "float32"}))
        .collect();
    let spec = serde_json::json!({"name": name, "entity": {"name": "id", "type": "int64"}, "features": features});
    client
        .do_action(Action::new("create_feature_set", spec.to_string()))
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

/// `rows` rows for entities `first..first + rows`, every feature a float32.
pub fn batch(first: i64, rows: usize) -> RecordBatch {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        first..first + rows as i64,
    ))];
    for f in 0..FEATURES {
        fields.push(Field::new(format!("f{f}"), DataType::Float32, true));
        columns.push(Arc::new(Float32Array::from_iter_values(
            (0..rows).map(|r| (r * FEATURES + f) as f32),
        )));
    }
    fields.push(Field::new(
        "event_timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (0..rows as i64).map(|r| 1_767_225_600_000_000 + r),
        )
        .with_timezone("UTC"),
    ));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// DoPut of `batches`, waiting for every acknowledgement.
pub async fn put(client: &mut FlightClient, set: &str, batches: Vec<RecordBatch>) {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![set.into()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    client
        .do_put(data)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
