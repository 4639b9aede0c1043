//! The values that cross the storage interfaces: what a history scan asks for, what it and the
//! statistics calls answer, and the sink results stream into. Shared by the offline backends,
//! the query engine and [`FeatureStore`](crate::FeatureStore); depends on none of them.

use arrow::array::RecordBatch;
use featherstore_core::EntityKeys;

use crate::Result;

/// Receives result batches in order; an error (e.g. the client went away) stops the producer.
pub type BatchSink<'a> = &'a mut dyn FnMut(RecordBatch) -> Result<()>;

/// Which rows and columns a history scan returns.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only these entities; all when `None`.
    pub entities: Option<EntityKeys>,
    /// Inclusive lower bound, UTC microseconds.
    pub start: Option<i64>,
    /// Exclusive upper bound, UTC microseconds.
    pub end: Option<i64>,
    /// Indices into the spec's features, in output order.
    pub features: Vec<usize>,
}

/// What a history scan shows of ingest times (an extension of PROTOCOL.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestView {
    /// Adds the column `ingested_at` after the others.
    pub with_ingest_time: bool,
    /// Only rows ingested strictly before this instant (UTC microseconds): the history as it
    /// was known then.
    pub ingested_before: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetStats {
    pub rows: u64,
    pub entities: u64,
    /// UTC microseconds.
    pub latest_event_timestamp: Option<i64>,
}

/// Bytes and files on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub bytes: u64,
    pub files: u64,
}
