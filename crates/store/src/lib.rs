//! FeatherStore storage: [`FeatureStore`], the domain service the APIs call, over two storage
//! interfaces:
//!
//! - [`OfflineStore`]: durable history, one backend per storage format ([`duckdb`],
//!   [`parquet`], [`delta`]); every read is the shared SQL of [`query`] run by DuckDB over the relations
//!   a backend exposes.
//! - [`online::OnlineStore`] / [`online::OnlineSet`]: the latest value of every entity,
//!   served without storage I/O; [`online::OnlineIndex`] in memory is the default.
//!
//! The public API is what is re-exported here plus the backend modules ([`duckdb`],
//! [`parquet`], [`online`]), the engine's settings and cancellation ([`query`]) and the
//! storage metrics ([`metrics`]).

mod background;
mod column_encoding;
pub mod delta;
pub mod duckdb;
mod durable;
mod error;
mod feature_store;
pub mod metrics;
mod multi_online;
mod offline;
pub mod online;
pub mod parquet;
pub mod query;
mod snapshot;
mod types;
mod wal;

pub use error::{Error, Result};
pub use feature_store::{Clock, FeatureSet, FeatureStore, Limits, SnapshotOptions};
pub use multi_online::{OnlinePlan, TIMESTAMP_SUFFIX};
pub use offline::{OfflineStore, Publish, RelationWork, BULK_APPEND_ROWS};
pub use types::{BatchSink, HistoryQuery, IngestView, SetStats, StorageStats};
