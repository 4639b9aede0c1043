//! The offline store: durable, append-only history of every feature set, behind one interface
//! with a backend per storage format.

use arrow::array::RecordBatch;
use duckdb::Connection;
use featherstore_core::{EntityKeys, FeatureSetSpec};

use crate::query::{sql, ConnectionPool};
use crate::Result;

/// Receives result batches in order; an error (e.g. the client went away) stops the producer.
pub type BatchSink<'a> = &'a mut dyn FnMut(RecordBatch) -> Result<()>;

/// Work on a DuckDB connection where each of the requested sets' stored rows is readable as
/// the SQL relation at the same index (canonical columns plus `_seq`).
pub type RelationWork<'a> = &'a mut dyn FnMut(&Connection, &[String]) -> Result<()>;

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

/// A storage backend. Calls block (disk, DuckDB): async callers run them off the runtime.
///
/// Batches handed to [`append`](OfflineStore::append) are canonical
/// ([`FeatureSetSpec::arrow_schema`]); results are in the canonical column order of
/// [`FeatureSetSpec::projected_schema`]. Appends to one set are serialised by the caller, and
/// rows of later appends count as ingested later (ties on event time go to them).
pub trait OfflineStore: Send + Sync {
    /// Specs of every stored feature set, as persisted by [`create`](OfflineStore::create).
    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>>;

    /// Creates the storage of a new set and persists its spec, durably.
    fn create(&self, spec: &FeatureSetSpec) -> Result<()>;

    /// Removes a set's spec and all its data, durably.
    fn delete(&self, name: &str) -> Result<()>;

    /// Stores a canonical batch whole or not at all; durable when it returns.
    fn append(&self, spec: &FeatureSetSpec, batch: &RecordBatch) -> Result<()>;

    /// Runs `work` with every set of `specs` readable as a relation. The relations show one
    /// consistent state and stay valid until `work` returns. All reads go through here: DuckDB
    /// is the query engine of every backend.
    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork) -> Result<()>;

    /// The connections every storage call takes one of: the health check watches them.
    fn pool(&self) -> &ConnectionPool;

    /// Makes everything acknowledged durable in its final form, so that the next start
    /// replays nothing (a planned shutdown). Appends are durable without it.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// History rows ordered by entity, event time, then ingest order.
    fn scan(&self, spec: &FeatureSetSpec, query: &HistoryQuery, sink: BatchSink) -> Result<()> {
        let schema = spec.projected_schema(&query.features, false);
        self.query_relations(&[spec], &mut |conn, relations| {
            sql::stream_query(
                conn,
                &sql::history(spec, &relations[0], query),
                &schema,
                sink,
            )
        })
    }

    /// Exactly one row per entity, all features: its online value ignoring TTL (greatest event
    /// time, ties to the later ingest). Used to rebuild the online index at startup.
    fn latest(&self, spec: &FeatureSetSpec, sink: BatchSink) -> Result<()> {
        let schema = spec.arrow_schema();
        self.query_relations(&[spec], &mut |conn, relations| {
            sql::stream_query(conn, &sql::latest(spec, &relations[0]), &schema, sink)
        })
    }

    /// What one set's data takes on disk (data files and logs), for the metrics; `None` when
    /// the backend keeps sets together (DuckDB: one database file, see
    /// [`storage_total`](OfflineStore::storage_total)). Called at every metrics scrape: cheap.
    fn storage_stats(&self, _spec: &FeatureSetSpec) -> Result<Option<StorageStats>> {
        Ok(None)
    }

    /// What the whole backend takes on disk, for the metrics; `None` when unknown. Cheap.
    fn storage_total(&self) -> Result<Option<StorageStats>> {
        Ok(None)
    }

    fn stats(&self, spec: &FeatureSetSpec) -> Result<SetStats> {
        let mut stats = SetStats::default();
        self.query_relations(&[spec], &mut |conn, relations| {
            stats = sql::read_stats(conn, &sql::stats(spec, &relations[0]))?;
            Ok(())
        })?;
        Ok(stats)
    }
}
