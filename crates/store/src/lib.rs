//! FeatherStore storage: the offline store interface and its backends (DuckDB, Parquet), the
//! in-memory online index, and [`FeatureStore`], the domain service the APIs call.

pub mod duckdb;
mod error;
mod feature_store;
pub mod metrics;
pub mod offline;
pub mod online;
pub mod parquet;
pub mod query;

pub use error::{Error, Result};
pub use feature_store::{FeatureSet, FeatureStore, Limits};
pub use offline::{BatchSink, HistoryQuery, OfflineStore, SetStats, StorageStats};
