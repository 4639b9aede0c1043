//! Appends acknowledged from a write-ahead log, for the backends whose final storage is too
//! slow to write on every append (Parquet files, the DuckDB database): an append is durable
//! once its batches are in the set's log (fsynced), and readable at once from the memtable,
//! the same batches kept in memory. A background thread later moves them into the final
//! storage and drops the log segments that held them; until then reads take the union of both.

pub(crate) mod log;
pub(crate) mod memtable;
#[cfg(test)]
pub(crate) mod test_rows;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use featherstore_core::FeatureSetSpec;
use parking_lot::Mutex;

use self::log::LogWriter;
use self::memtable::MemTable;
use crate::background::Background;
use crate::offline::Publish;
use crate::query::sql;
use crate::Result;

/// A set whose appends go through a log and a memtable.
pub(crate) trait StagedSet {
    /// Its append side.
    fn ingest(&self) -> &Mutex<Ingest>;
    /// False once the set is deleted.
    fn is_alive(&self) -> bool;
    /// Greatest acknowledged `_seq`; -1 when none.
    fn committed(&self) -> &AtomicI64;

    /// Stores `batches` of `spec` (see [`Ingest::append`]): durable and readable on return.
    fn append(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        now: i64,
        publish: Publish<'_>,
    ) -> Result<()> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return publish();
        }
        let mut ingest = self.ingest().lock();
        if !self.is_alive() {
            return Err(featherstore_core::Error::no_such_set(&spec.name).into());
        }
        let last = ingest.append(spec, batches, rows, now, publish)?;
        self.committed().store(last, Ordering::Release);
        Ok(())
    }
}

/// The append side of a set; its mutex serialises appends with the freezing of the memtable.
pub(crate) struct Ingest {
    pub(crate) log: LogWriter,
    /// Next `_seq` to hand out. Numbers of failed appends are not reused (see `LogWriter::undo`).
    pub(crate) next_seq: i64,
    /// The memtable table that takes appends.
    pub(crate) table: Arc<MemTable>,
    /// The latest ingest time of the set's rows (UTC µs): the next append's is never earlier.
    pub(crate) last_ingested_at: i64,
    /// When the oldest row not yet in the final storage was appended (or found in the log).
    pub(crate) pending_since: Option<Instant>,
}

impl Ingest {
    /// Numbers `batches` (`rows` rows of `spec`, ingested at `now` or later), logs them
    /// (durable when this returns), runs `publish`, and adds them to the memtable. Returns
    /// the `_seq` of the last row. A failed `publish` takes them back out of the log.
    pub(crate) fn append(
        &mut self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        rows: usize,
        now: i64,
        publish: Publish<'_>,
    ) -> Result<i64> {
        let first = self.next_seq;
        let ingested_at = now.max(self.last_ingested_at);
        let stored = sql::to_storage_batches(spec, batches, first, ingested_at)?;
        let next = first + rows as i64;
        // Consumed even if the append fails: a log record that could not be taken back
        // must not share numbers with a later batch.
        self.next_seq = next;
        // Likewise: a log record that could not be taken back may be replayed later.
        self.last_ingested_at = ingested_at;
        let mark = self.log.append(&stored)?;
        // Published before the batches join the memtable, which cannot fail: a failed
        // publication leaves them in neither the memtable nor the log.
        if let Err(e) = publish() {
            self.log.undo(mark);
            return Err(e);
        }
        for batch in stored {
            self.table.push(batch);
        }
        self.pending_since.get_or_insert_with(Instant::now);
        Ok(next - 1)
    }

    /// Points appends at `table` and a new log segment, so that the rows staged so far stop
    /// changing while they are moved. Returns the number below which log segments hold only
    /// those rows, and when the oldest of them was appended.
    pub(crate) fn freeze(&mut self, table: Arc<MemTable>) -> (u64, Option<Instant>) {
        self.table = table;
        (self.log.roll(), self.pending_since.take())
    }

    /// After a failed move: the frozen rows, appended since `frozen`, still wait.
    pub(crate) fn still_pending(&mut self, frozen: Option<Instant>) {
        self.pending_since = match (self.pending_since, frozen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Whether a set's staged rows should move to the final storage now: `rows` of them wait,
/// the oldest since `pending_since`.
pub(crate) fn is_due(
    rows: u64,
    pending_since: Option<Instant>,
    threshold: u64,
    interval: Duration,
) -> bool {
    rows >= threshold
        || (rows > 0 && pending_since.is_some_and(|since| since.elapsed() >= interval))
}

/// An append moves a set's staged rows itself once this many times the background
/// thread's threshold wait: that thread is not keeping up, and the memtable must not grow
/// without bound.
const BACKPRESSURE_FACTOR: u64 = 4;

/// After an append that left `rows` staged rows of set `set`: wakes `background` at
/// `threshold` rows, and at [`BACKPRESSURE_FACTOR`] times that runs `move_rows` itself. The
/// batch is durable and must be acknowledged: a failure of `move_rows` is only logged.
pub(crate) fn relieve(
    rows: u64,
    threshold: u64,
    background: &Background,
    set: &str,
    move_rows: impl FnOnce() -> Result<()>,
) {
    if rows >= threshold.saturating_mul(BACKPRESSURE_FACTOR) {
        if let Err(e) = move_rows() {
            tracing::error!(feature_set = %set, error = %e, "moving logged rows failed; will retry");
        }
    } else if rows >= threshold {
        background.wake();
    }
}
