//! The offline store: durable, append-only history of every feature set, behind one interface
//! with a backend per storage format.
//!
//! A backend implements [`OfflineStore`]: the registry of specs, durable appends, and
//! [`query_relations`](OfflineStore::query_relations), which exposes a consistent state of
//! each set's stored rows as a relation DuckDB can read (a table, a union of Parquet files and
//! a memtable, cached copies of remote files, ...). Every read — history, latest values,
//! statistics, training data — is SQL from [`query`](crate::query) over those relations, so a
//! new backend gets all of them, identical to the other backends', without writing a query.

use arrow::array::RecordBatch;
use duckdb::Connection;
use featherstore_core::time::now_micros;
use featherstore_core::{FeatureServiceSpec, FeatureSetSpec};

use crate::query::{reads, ConnectionPool};
use crate::types::{BatchSink, HistoryQuery, IngestView, SetStats, StorageStats};
use crate::Result;

/// Rows one append should reach to be stored without a second copy: DuckDB's row group size.
/// A transaction that appends at least this many rows through the appender hands its row
/// groups to the table at commit; a smaller one is appended to the table again, with its
/// statistics. The Parquet backend writes the batches of one append to its log with one
/// fsync.
pub const BULK_APPEND_ROWS: usize = 122_880;

/// A stored feature service document, read back by a backend; unreadable is corruption.
pub(crate) fn parse_service(name: &str, json: &[u8]) -> Result<FeatureServiceSpec> {
    serde_json::from_slice(json).map_err(|e| {
        crate::Error::Corrupt(format!(
            "stored feature service {name:?} is unreadable: {e}"
        ))
    })
}

/// Work on a DuckDB connection where each of the requested sets' stored rows is readable as
/// the SQL relation at the same index (canonical columns plus `_seq`).
pub type RelationWork<'a> = &'a mut dyn FnMut(&Connection, &[String]) -> Result<()>;

/// Work run by [`OfflineStore::append_publishing`] before the batch is committed; its error
/// takes the batch back.
pub type Publish<'a> = &'a mut dyn FnMut() -> Result<()>;

/// A storage backend. Calls block (disk, DuckDB, network): async callers run them off the
/// runtime.
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

    /// Stores `new`, the next version of `old` (same entity, timestamp and stored features,
    /// maybe more features: `featherstore_core::evolution`), durably and keeping every earlier
    /// version. From its return, appends may carry the added features and reads under `new`
    /// see them, null for rows stored before; reads under `old` still work. The caller
    /// serialises it with appends to the set.
    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()>;

    /// Every stored version of a set's spec, oldest first, the current one last. A set
    /// stored before versions were kept lists the versions it has kept since.
    fn spec_versions(&self, current: &FeatureSetSpec) -> Result<Vec<FeatureSetSpec>>;

    /// Removes a set's spec and all its data, durably.
    fn delete(&self, name: &str) -> Result<()>;

    /// Every stored feature service, as persisted by
    /// [`save_service`](OfflineStore::save_service), ordered by name.
    fn load_services(&self) -> Result<Vec<FeatureServiceSpec>>;

    /// Stores a feature service durably, replacing one of the same name whole or not at all.
    fn save_service(&self, service: &FeatureServiceSpec) -> Result<()>;

    /// Removes a stored feature service durably; one that is not stored is no error.
    fn delete_service(&self, name: &str) -> Result<()>;

    /// Stores canonical batches, all of them or none; durable when it returns. Their rows are
    /// stored in order, as one batch of them all would be (consecutive sequence numbers, one
    /// ingest time): `ingested_at` (UTC microseconds), or the set's latest ingest time if
    /// that is later: ingest times never decrease within a set, whatever the clock does, also
    /// across restarts (the backend recovers the latest from its stored rows).
    fn append_at(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        ingested_at: i64,
    ) -> Result<()>;

    /// [`append_at`](OfflineStore::append_at), running `publish` once, before the batches
    /// are committed: if it fails, they are not stored and its error is returned. It is how
    /// a remote online store gets them (see `FeatureStore::ingest`). A backend runs it
    /// after every step of the append that can fail but its commit (the rows written,
    /// durably where the backend writes ahead, not yet visible to reads), so that the commit
    /// after a successful `publish` fails only on a fault of the machine itself. The
    /// default runs it before the whole append: a backend without such a point still never
    /// stores rows whose publication failed, but an append that fails after `publish`
    /// leaves them published only.
    fn append_publishing(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        ingested_at: i64,
        publish: Publish<'_>,
    ) -> Result<()> {
        publish()?;
        self.append_at(spec, batches, ingested_at)
    }

    /// [`append_at`](OfflineStore::append_at) the current time.
    fn append(&self, spec: &FeatureSetSpec, batch: &RecordBatch) -> Result<()> {
        self.append_at(spec, std::slice::from_ref(batch), now_micros())
    }

    /// Runs `work` with every set of `specs` readable as a relation (one per spec, in the same
    /// order) holding the canonical columns, event times as UTC `TIMESTAMP`, plus
    /// `_seq`, the ingest order (`query::sql::SEQ_COLUMN`), and `_ingested_at`, the ingest
    /// time (`query::sql::INGESTED_AT_COLUMN`, never NULL). The relations show one
    /// consistent state and stay valid until `work` returns. All reads go through here: DuckDB
    /// is the query engine of every backend.
    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork<'_>) -> Result<()>;

    /// The connections every storage call takes one of: the health check watches them.
    fn pool(&self) -> &ConnectionPool;

    /// Makes everything acknowledged durable in its final form, so that the next start
    /// replays nothing (a planned shutdown). Appends are durable without it.
    fn flush(&self) -> Result<()> {
        Ok(())
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

    // The reads below are the shared SQL of `query::reads` over `query_relations`: a backend
    // does not override them, so that every backend gives the same answers.

    /// History rows ordered by entity, event time, then ingest order.
    fn scan(&self, spec: &FeatureSetSpec, query: &HistoryQuery, sink: BatchSink<'_>) -> Result<()> {
        self.scan_with(spec, query, &IngestView::default(), sink)
    }

    /// [`scan`](OfflineStore::scan), showing or filtering on ingest times as `view` says.
    fn scan_with(
        &self,
        spec: &FeatureSetSpec,
        query: &HistoryQuery,
        view: &IngestView,
        sink: BatchSink<'_>,
    ) -> Result<()> {
        self.query_relations(&[spec], &mut |conn, relations| {
            reads::history(conn, &relations[0], spec, query, view, sink)
        })
    }

    /// Exactly one row per entity, all features: its online value ignoring TTL (greatest event
    /// time, ties to the later ingest). Used to rebuild the online index at startup.
    fn latest(&self, spec: &FeatureSetSpec, sink: BatchSink<'_>) -> Result<()> {
        self.latest_after(spec, None, sink)
    }

    /// [`latest`](OfflineStore::latest) among the rows ingested after ingest sequence `after`
    /// (all rows when `None`): tops up an online snapshot that covers the rows up to `after`.
    fn latest_after(
        &self,
        spec: &FeatureSetSpec,
        after: Option<i64>,
        sink: BatchSink<'_>,
    ) -> Result<()> {
        self.query_relations(&[spec], &mut |conn, relations| {
            reads::latest(conn, &relations[0], spec, after, sink)
        })
    }

    /// The greatest ingest sequence of a set's stored rows (`None` when it has none): every
    /// row ingested later gets a greater one. The caller serialises it with appends to the set
    /// when it needs the rows applied so far.
    fn max_seq(&self, spec: &FeatureSetSpec) -> Result<Option<i64>> {
        let mut seq = None;
        self.query_relations(&[spec], &mut |conn, relations| {
            seq = reads::max_seq(conn, &relations[0])?;
            Ok(())
        })?;
        Ok(seq)
    }

    /// Rows, distinct entities and the greatest event time of a set.
    fn stats(&self, spec: &FeatureSetSpec) -> Result<SetStats> {
        let mut stats = SetStats::default();
        self.query_relations(&[spec], &mut |conn, relations| {
            stats = reads::stats(conn, &relations[0], spec)?;
            Ok(())
        })?;
        Ok(stats)
    }
}
