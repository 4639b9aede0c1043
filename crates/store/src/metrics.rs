//! Counters and timings of storage work, kept in atomics so that recording costs a few
//! nanoseconds and needs no metrics library here; the server reads them at scrape time and
//! renders them as Prometheus families.
//!
//! - [`OperationMetrics`]: a duration histogram per [`Operation`], one per
//!   [`FeatureStore`](crate::FeatureStore) (see `FeatureStore::operations`).
//! - [`PARQUET`]: activity of the Parquet backend (log appends, flushes, compactions),
//!   process-wide; the backend records its work with the `record_*` methods of
//!   [`ParquetActivity`] where it happens.
//! - [`DUCKDB`]: activity of the DuckDB backend (log appends, applies of the log into the
//!   database), likewise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the duration buckets: from 5 µs, since an online lookup of a few
/// entities takes microseconds, to a minute for large training data joins.
pub const DURATION_BUCKETS: [f64; 22] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const BUCKET_NANOS: [u64; 22] = {
    let mut nanos = [0u64; 22];
    let mut i = 0;
    while i < 22 {
        nanos[i] = (DURATION_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// A duration histogram with the fixed [`DURATION_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound of [`DURATION_BUCKETS`] (`le` semantics).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// An empty histogram, usable in a `static`.
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self.buckets[..DURATION_BUCKETS.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            // At least the sum of the buckets, so that +Inf is never below a finite bucket.
            count: self.count.load(Ordering::Relaxed).max(running),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Storage and index work whose duration is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// An online read from the in-memory index.
    IndexLookup,
    /// Building or updating a kept training index in the background after ingest.
    TrainingIndexWarm,
    /// Publishing an ingested batch to the online index.
    IndexApply,
    /// Rebuilding a set's online index from storage at startup.
    IndexRebuild,
    /// Storing a batch durably in the offline store.
    Append,
    /// A history scan (time spent handing batches to the client excluded).
    Scan,
    /// A training data join (time spent waiting for entity rows or the client excluded).
    Training,
    /// Row, entity and freshness statistics of a set.
    Stats,
    CreateSet,
    DeleteSet,
    /// A new version of a set: its online index rebuilt, the version stored.
    UpdateSet,
}

impl Operation {
    pub const ALL: [Operation; 11] = [
        Operation::IndexLookup,
        Operation::TrainingIndexWarm,
        Operation::IndexApply,
        Operation::IndexRebuild,
        Operation::Append,
        Operation::Scan,
        Operation::Training,
        Operation::Stats,
        Operation::CreateSet,
        Operation::DeleteSet,
        Operation::UpdateSet,
    ];

    /// The `operation` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::IndexLookup => "index_lookup",
            Operation::TrainingIndexWarm => "training_index_warm",
            Operation::IndexApply => "index_apply",
            Operation::IndexRebuild => "index_rebuild",
            Operation::Append => "append",
            Operation::Scan => "scan",
            Operation::Training => "training",
            Operation::Stats => "stats",
            Operation::CreateSet => "create_set",
            Operation::DeleteSet => "delete_set",
            Operation::UpdateSet => "update_set",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One duration histogram per [`Operation`].
#[derive(Debug, Default)]
pub struct OperationMetrics {
    histograms: [Histogram; Operation::ALL.len()],
}

impl OperationMetrics {
    pub fn observe(&self, operation: Operation, elapsed: Duration) {
        self.histograms[operation.index()].observe(elapsed);
    }

    /// Measures until the returned guard is dropped (or [`OperationTimer::finish`]ed).
    pub fn start(&self, operation: Operation) -> OperationTimer<'_> {
        OperationTimer {
            metrics: self,
            operation,
            started: Instant::now(),
            excluded: Duration::ZERO,
        }
    }

    pub fn snapshot(&self, operation: Operation) -> HistogramSnapshot {
        self.histograms[operation.index()].snapshot()
    }
}

/// Records the time since it started, less any time [`exclude`](Self::exclude)d, on drop.
pub struct OperationTimer<'a> {
    metrics: &'a OperationMetrics,
    operation: Operation,
    started: Instant,
    excluded: Duration,
}

impl OperationTimer<'_> {
    /// Leaves time spent outside the operation (waiting for a client) out of its duration.
    pub fn exclude(&mut self, elapsed: Duration) {
        self.excluded += elapsed;
    }

    pub fn finish(self) {}
}

impl Drop for OperationTimer<'_> {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().saturating_sub(self.excluded);
        self.metrics.observe(self.operation, elapsed);
    }
}

/// A monotonic counter.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Activity of a backend's write-ahead log (see `wal::log`), summed over every set.
#[derive(Debug, Default)]
pub struct LogActivity {
    /// Batches appended, and the bytes written (batches and segment headers).
    appends: Counter,
    bytes: Counter,
    /// fsyncs of segments: one per append, one per new segment, one per append undone.
    syncs: Counter,
}

impl LogActivity {
    pub const fn new() -> Self {
        LogActivity {
            appends: Counter::new(),
            bytes: Counter::new(),
            syncs: Counter::new(),
        }
    }

    /// A batch appended to the log as a message of `bytes`, and fsynced.
    pub fn record_append(&self, bytes: u64) {
        self.appends.add(1);
        self.bytes.add(bytes);
        self.syncs.add(1);
    }

    /// A new log segment started with a schema header of `bytes`, and fsynced.
    pub fn record_segment(&self, bytes: u64) {
        self.bytes.add(bytes);
        self.syncs.add(1);
    }

    /// A failed append cut back out of its segment, and the cut fsynced.
    pub fn record_undo(&self) {
        self.syncs.add(1);
    }

    fn counters(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            (
                "log_appends",
                "Batches appended to the write-ahead log",
                self.appends.get(),
            ),
            (
                "log_bytes",
                "Bytes written to the write-ahead log",
                self.bytes.get(),
            ),
            (
                "log_syncs",
                "fsyncs of write-ahead log segments",
                self.syncs.get(),
            ),
        ]
    }
}

/// Activity of the Parquet backend, summed over every set (and every store in the process).
/// Seconds are counted in microseconds so that rates give mean durations.
#[derive(Debug, Default)]
pub struct ParquetActivity {
    pub log: LogActivity,
    /// Flushes of the log into Parquet files that completed, and what they wrote.
    flushes: Counter,
    flushed_rows: Counter,
    flushed_files: Counter,
    flushed_bytes: Counter,
    flush_micros: Counter,
    flush_failures: Counter,
    /// Compactions that completed: small files read and merged files written.
    compactions: Counter,
    compacted_input_files: Counter,
    compacted_output_files: Counter,
    compacted_bytes: Counter,
    compaction_micros: Counter,
    compaction_failures: Counter,
}

impl ParquetActivity {
    pub const fn new() -> Self {
        ParquetActivity {
            log: LogActivity::new(),
            flushes: Counter::new(),
            flushed_rows: Counter::new(),
            flushed_files: Counter::new(),
            flushed_bytes: Counter::new(),
            flush_micros: Counter::new(),
            flush_failures: Counter::new(),
            compactions: Counter::new(),
            compacted_input_files: Counter::new(),
            compacted_output_files: Counter::new(),
            compacted_bytes: Counter::new(),
            compaction_micros: Counter::new(),
            compaction_failures: Counter::new(),
        }
    }

    /// A flush that wrote `rows` into `files` data files of `bytes` in all.
    pub fn record_flush(&self, rows: u64, files: u64, bytes: u64, elapsed: Duration) {
        self.flushes.add(1);
        self.flushed_rows.add(rows);
        self.flushed_files.add(files);
        self.flushed_bytes.add(bytes);
        self.flush_micros.add(micros(elapsed));
    }

    pub fn record_flush_failure(&self) {
        self.flush_failures.add(1);
    }

    /// A compaction that merged `inputs` files into `outputs` files of `bytes` in all.
    pub fn record_compaction(&self, inputs: u64, outputs: u64, bytes: u64, elapsed: Duration) {
        self.compactions.add(1);
        self.compacted_input_files.add(inputs);
        self.compacted_output_files.add(outputs);
        self.compacted_bytes.add(bytes);
        self.compaction_micros.add(micros(elapsed));
    }

    pub fn record_compaction_failure(&self) {
        self.compaction_failures.add(1);
    }

    /// Every counter with its metric name suffix and help text, for rendering.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut counters = self.log.counters().to_vec();
        counters.extend([
            (
                "flushes",
                "Flushes of the log into Parquet files",
                self.flushes.get(),
            ),
            (
                "flushed_rows",
                "Rows written to Parquet by flushes",
                self.flushed_rows.get(),
            ),
            (
                "flushed_files",
                "Parquet files written by flushes",
                self.flushed_files.get(),
            ),
            (
                "flushed_bytes",
                "Parquet bytes written by flushes",
                self.flushed_bytes.get(),
            ),
            (
                "flush_micros",
                "Microseconds spent flushing",
                self.flush_micros.get(),
            ),
            (
                "flush_failures",
                "Flushes that failed (and will be retried)",
                self.flush_failures.get(),
            ),
            (
                "compactions",
                "Compactions of small Parquet files",
                self.compactions.get(),
            ),
            (
                "compacted_input_files",
                "Small files merged away by compaction",
                self.compacted_input_files.get(),
            ),
            (
                "compacted_output_files",
                "Files written by compaction",
                self.compacted_output_files.get(),
            ),
            (
                "compacted_bytes",
                "Parquet bytes written by compaction",
                self.compacted_bytes.get(),
            ),
            (
                "compaction_micros",
                "Microseconds spent compacting",
                self.compaction_micros.get(),
            ),
            (
                "compaction_failures",
                "Compactions that failed (and will be retried)",
                self.compaction_failures.get(),
            ),
        ]);
        counters
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// The Parquet backend's activity counters.
pub static PARQUET: ParquetActivity = ParquetActivity::new();

/// Activity of the DuckDB backend, summed over every set (and every store in the process).
#[derive(Debug, Default)]
pub struct DuckDbActivity {
    pub log: LogActivity,
    /// Applies of logged rows into the database that committed, and the rows they moved.
    applies: Counter,
    applied_rows: Counter,
    apply_micros: Counter,
    apply_failures: Counter,
}

impl DuckDbActivity {
    pub const fn new() -> Self {
        DuckDbActivity {
            log: LogActivity::new(),
            applies: Counter::new(),
            applied_rows: Counter::new(),
            apply_micros: Counter::new(),
            apply_failures: Counter::new(),
        }
    }

    /// An apply that committed `rows` logged rows into the database.
    pub fn record_apply(&self, rows: u64, elapsed: Duration) {
        self.applies.add(1);
        self.applied_rows.add(rows);
        self.apply_micros.add(micros(elapsed));
    }

    pub fn record_apply_failure(&self) {
        self.apply_failures.add(1);
    }

    /// Every counter with its metric name suffix and help text, for rendering.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut counters = self.log.counters().to_vec();
        counters.extend([
            (
                "applies",
                "Applies of logged rows into the database",
                self.applies.get(),
            ),
            (
                "applied_rows",
                "Rows moved from the log into the database",
                self.applied_rows.get(),
            ),
            (
                "apply_micros",
                "Microseconds spent applying the log",
                self.apply_micros.get(),
            ),
            (
                "apply_failures",
                "Applies that failed (and will be retried)",
                self.apply_failures.get(),
            ),
        ]);
        counters
    }
}

/// The DuckDB backend's activity counters.
pub static DUCKDB: DuckDbActivity = DuckDbActivity::new();

/// Indexes of stored rows that in-memory training joins keep for the next request
/// (`query::training::index_cache`), process-wide.
#[derive(Debug, Default)]
pub struct TrainingIndexActivity {
    /// Sets a request found indexed by an earlier one, and sets it read whole.
    reused: Counter,
    built: Counter,
    /// Rows read whole into an index, and rows stored since an index was kept read into it.
    built_rows: Counter,
    updated_rows: Counter,
    /// Indexes dropped: idle, for another request's room, or their set changed.
    evictions: Counter,
    /// Indexes built or brought up to date in the background after ingest.
    warmed: Counter,
}

impl TrainingIndexActivity {
    pub const fn new() -> Self {
        TrainingIndexActivity {
            reused: Counter::new(),
            built: Counter::new(),
            built_rows: Counter::new(),
            updated_rows: Counter::new(),
            evictions: Counter::new(),
            warmed: Counter::new(),
        }
    }

    /// A request looked for a set's kept index: `found` it, or will read the set whole.
    pub fn record_lookup(&self, found: bool) {
        if found {
            self.reused.add(1);
        } else {
            self.built.add(1);
        }
    }

    /// `rows` read whole into a new index.
    pub fn record_built_rows(&self, rows: usize) {
        self.built_rows.add(rows as u64);
    }

    /// `rows` stored since an index was kept, read into it.
    pub fn record_updated_rows(&self, rows: usize) {
        self.updated_rows.add(rows as u64);
    }

    pub fn record_evictions(&self, indexes: usize) {
        self.evictions.add(indexes as u64);
    }

    /// An index built or brought up to date after ingest, before any request asked.
    pub fn record_warmed(&self) {
        self.warmed.add(1);
    }

    /// Every counter with its metric name suffix and help text, for rendering.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        vec![
            (
                "reused",
                "Sets of training requests found indexed by an earlier request",
                self.reused.get(),
            ),
            (
                "built",
                "Sets of training requests read whole into a new index",
                self.built.get(),
            ),
            (
                "built_rows",
                "Stored rows read whole into training indexes",
                self.built_rows.get(),
            ),
            (
                "updated_rows",
                "Stored rows read into a kept training index, stored after it was kept",
                self.updated_rows.get(),
            ),
            (
                "evictions",
                "Kept training indexes dropped: idle, for another request, or their set changed",
                self.evictions.get(),
            ),
            (
                "warmed",
                "Training indexes built or brought up to date in the background after ingest",
                self.warmed.get(),
            ),
        ]
    }
}

/// The kept training indexes' counters.
pub static TRAINING_INDEX: TrainingIndexActivity = TrainingIndexActivity::new();

/// Round trips of the Redis online backend, process-wide: every request it sends to Redis
/// (a pipeline or a concurrent group of commands is one), those that failed or timed out, and
/// their latency.
#[derive(Debug)]
pub struct RedisActivity {
    round_trips: Counter,
    errors: Counter,
    latency: Histogram,
}

impl RedisActivity {
    const fn new() -> Self {
        RedisActivity {
            round_trips: Counter::new(),
            errors: Counter::new(),
            latency: Histogram::new(),
        }
    }

    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        self.round_trips.add(1);
        if failed {
            self.errors.add(1);
        }
        self.latency.observe(elapsed);
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips.get()
    }

    pub fn errors(&self) -> u64 {
        self.errors.get()
    }

    pub fn latency(&self) -> HistogramSnapshot {
        self.latency.snapshot()
    }
}

pub static REDIS: RedisActivity = RedisActivity::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_le_bounds() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(3)); // <= 5 µs
        h.observe(Duration::from_micros(5)); // <= 5 µs (bounds are inclusive)
        h.observe(Duration::from_micros(7)); // <= 10 µs
        h.observe(Duration::from_secs(100)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(*s.cumulative.last().unwrap(), 3);
        assert_eq!(s.count, 4);
        assert!(
            (s.sum_seconds - 100.000_015).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn timers_leave_out_excluded_time() {
        let metrics = OperationMetrics::default();
        let mut timer = metrics.start(Operation::Scan);
        timer.exclude(Duration::from_secs(3600));
        timer.finish();
        let s = metrics.snapshot(Operation::Scan);
        assert_eq!((s.count, s.cumulative[0]), (1, 1));
        assert_eq!(metrics.snapshot(Operation::Append).count, 0);
    }
}
