//! An async Rust client for FeatherStore, a real-time ML
//! feature store, over its Arrow Flight API.
//!
//! Feature values travel as Arrow [`RecordBatch`](arrow::array::RecordBatch)es both ways. A
//! [`Client`] creates and inspects feature sets, ingests batches (durable when acknowledged),
//! reads online values and history, and builds point-in-time correct training data.
//!
//! ```no_run
//! use featherstore_client::{Client, FeatureSetSpec, Timestamp};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("http://localhost:8081").await?;
//!
//! let spec = FeatureSetSpec::from_json(br#"{
//!     "name": "user_features",
//!     "entity": {"name": "user_id", "type": "string"},
//!     "features": [{"name": "age", "type": "int64"}]
//! }"#)?;
//! client.create_feature_set(&spec).await?;
//!
//! // Latest values, one row per entity, in request order.
//! let online = client.get_features("user_features", ["u1", "u2"]).await?;
//!
//! // Every row of u1 in January.
//! let history = client
//!     .get_feature_history(
//!         "user_features",
//!         "u1",
//!         Timestamp::parse("2026-01-01")?,
//!         Timestamp::parse("2026-02-01")?,
//!     )
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Entity keys and times
//!
//! Entity keys are strings or integers, as the set declares: `["u1", "u2"]`, `&ids` for a
//! `Vec<i64>`, or one key (see [`Entities`]). Points in time are [`Timestamp`]s, made from
//! `SystemTime`, `chrono` times, numbers or RFC 3339 text. Result batches carry times as
//! `Timestamp(Microsecond, "UTC")`; arrow's pretty printer shows a zone given by name only with
//! arrow's `chrono-tz` feature (or relabel the column `+00:00`, as `examples/quickstart.rs`
//! does).
//!
//! # Building batches
//!
//! The server takes a feature's declared Arrow type or a lossless widening of it. Data often
//! comes wider (float64 for a `float32` feature, int64 for an `int32` one): pass a batch
//! through [`conform_batch`] (or [`conform_rows`] for one batch of a longer input) with the
//! set's spec first. It makes every cast that keeps each value and names the column, row and
//! value that does not fit; the rules are on [`conform_batch`] and in `docs/api.md`.
//!
//! # Errors
//!
//! Errors the server reports keep its gRPC status and message: see [`Error`]. Runnable
//! examples live in the crate's `examples/` directory (`cargo run -p featherstore-client
//! --example quickstart` against a running server).

mod client;
mod conform;
mod error;
mod request;
mod response;

pub use client::{
    Client, ClientBuilder, CA_FILE_ENV, DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, TOKEN_ENV,
};
pub use conform::{conform_batch, conform_rows, ConformError};
pub use error::{code_name, Code, Error, ErrorCode, Result};
pub use request::{
    Entities, EntityKey, HistoryRequest, MultiOnlineRequest, OnlineRequest, Timestamp,
    TrainingDataOptions,
};
pub use response::{
    AckStream, BatchStream, FeatureSetInfo, FeatureSetStats, FeatureSetUpdate, IngestAck,
    IngestSummary, RebuildProgress,
};

pub use featherstore_core::evolution::Change;
pub use featherstore_core::{
    AsOf, EntityKeys, EntityType, FeatureServiceSpec, FeatureSetSpec, FeatureSpec, FeatureType,
};
