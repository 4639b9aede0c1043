//! The point-in-time join as of event time, in memory, for requests whose stored rows fit the
//! training memory budget ([`MemoryBudget`]).
//!
//! Each set's stored rows are read once (a plain scan, no sort in DuckDB) and grouped by
//! entity key, each key's rows ordered by (event time, ingest order). Each entity row then
//! finds its value by a binary search in its key's rows: the last one at or before its time,
//! which among equal times is the later ingest. Entity rows are read back from the spool in
//! order, a slice at a time, so the output keeps input order without a sort, and the
//! connection is given back before the first row is sent.
//!
//! What a request indexed is kept for the next ones ([`IndexCache`]): a set's index is a list
//! of runs, each the rows of a range of `_seq`, and a later request reads only the rows
//! stored since (`_seq` past the last run's) into a run of its own.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    new_null_array, Array, ArrayAccessor, ArrayRef, AsArray, PrimitiveArray, RecordBatch,
    UInt32Array,
};
use arrow::compute::{concat, interleave, max, take};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType};
use duckdb::Connection;
use featherstore_core::{EntityType, FeatureSetSpec};
use hashbrown::HashMap;

use super::index_cache::IndexCache;
use super::{SpooledRows, TrainingPlan};
use crate::metrics::TRAINING_INDEX;
use crate::query::sql::{ident, stream_query, SEQ_COLUMN};
use crate::types::BatchSink;
use crate::{Error, Result};

/// A warm-up reads a set whole again, into one run, when the rows stored since its kept index
/// are at least 1/`WHOLE_AGAIN_DIVISOR` of the rows the index holds...
const WHOLE_AGAIN_DIVISOR: usize = 4;

/// ...or once the index's first run is older than this many times the read that made it took:
/// whole reads of a set then take at most about a tenth of the time.
const WHOLE_AGAIN_DUTY: u32 = 10;

/// Entity rows joined and sent at a time: bounds the output batch whatever the size of the
/// client's batches.
const OUTPUT_ROWS: usize = 65_536;

/// Bytes of stored rows that in-memory joins may hold at once, over all requests. A request
/// that would take more runs in DuckDB instead, which spills under its memory limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes not held by any request or kept index now.
    pub(super) fn available(&self) -> usize {
        self.limit.saturating_sub(self.used.load(Ordering::Acquire))
    }

    fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Part of the budget held by one request, given back when dropped.
struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `bytes` more of the budget; `false`, taking nothing, if it has not that much left.
    fn grow(&mut self, bytes: usize) -> bool {
        let budget = &self.budget;
        let taken = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= budget.limit)
            });
        if taken.is_ok() {
            self.bytes += bytes;
        }
        taken.is_ok()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The stored rows of every referenced set, indexed.
pub(crate) struct LoadedSets {
    /// By set, `None` for a set none of whose features is asked for.
    sets: Vec<Option<Runs>>,
}

/// How a set's index is had: a kept one and the rows stored since, or the set read whole.
enum Read {
    /// Kept from an earlier request or warm-up: its runs, then the rows stored since, with
    /// its features.
    Since(Runs),
    /// The set whole, with these features, into a new index.
    Whole(Vec<usize>),
}

impl Read {
    fn features(&self) -> &[usize] {
        match self {
            Read::Since(runs) => runs.features(),
            Read::Whole(features) => features,
        }
    }

    /// The last `_seq` the index covers, for the rows to read past it.
    fn covered(&self) -> Option<i64> {
        match self {
            Read::Since(runs) => Some(runs.covered()),
            Read::Whole(_) => None,
        }
    }
}

/// Reads and indexes the stored rows of every set `plan` uses, on `conn`, starting from what
/// `cache` kept; `None` (having given back what it took) once they would exceed the budget:
/// the caller joins in DuckDB.
pub(crate) fn load(
    conn: &Connection,
    relations: &[String],
    plan: &TrainingPlan,
    cache: &IndexCache,
) -> Result<Option<LoadedSets>> {
    let relation = |i: usize| {
        relations
            .get(i)
            .ok_or_else(|| Error::Corrupt("a training set has no relation".into()))
    };
    // By set, `None` for a set not asked for.
    let reads: Vec<Option<Read>> = plan
        .sets
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let used = plan.used_features(i);
            if used.is_empty() {
                return None;
            }
            Some(match cache.take(spec, &used) {
                Some(runs) => Read::Since(runs),
                None => Read::Whole(used),
            })
        })
        .collect();
    // Rows that cannot fit are found before a row is read: the rows to read (a set whole, or
    // those stored since its index was kept) are counted (from metadata; `_seq` prunes by
    // zone maps and row-group statistics) and the least each row takes is known. Found by
    // running out part way through the scan instead, the rows read so far (up to the whole
    // budget) would be wasted. Kept indexes of other sets make room first.
    let mut least = 0usize;
    // By set, the rows to read (none for a set not asked for).
    let mut to_read = vec![0usize; reads.len()];
    for (i, (spec, read)) in plan.sets.iter().zip(&reads).enumerate() {
        let Some(read) = read else {
            continue;
        };
        let rows = count_rows(conn, relation(i)?, read.covered())?;
        least =
            least.saturating_add(rows.saturating_mul(least_bytes_per_row(spec, read.features())));
        if let Some(slot) = to_read.get_mut(i) {
            *slot = rows;
        }
    }
    let budget = cache.budget();
    if least > budget.available() && !cache.make_room(least, &plan.sets) {
        return Ok(None);
    }
    let mut sets = Vec::with_capacity(plan.sets.len());
    for (i, (spec, read)) in plan.sets.iter().zip(reads).enumerate() {
        let runs = match read {
            None => {
                sets.push(None);
                continue;
            }
            // Nothing stored since the index was kept (as of the count): nothing to read.
            Some(Read::Since(runs)) if to_read.get(i) == Some(&0) => runs,
            Some(read) => match read_rows(conn, relation(i)?, spec, read, budget)? {
                Some((runs, _)) => runs,
                None => return Ok(None),
            },
        };
        cache.keep(spec, &runs);
        sets.push(Some(runs));
    }
    Ok(Some(LoadedSets { sets }))
}

/// Reads the rows stored since a kept index into a run of their own added to it, or the set
/// whole into a new index; answers the index and the rows read, `None` once they would
/// exceed the budget.
fn read_rows(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    read: Read,
    budget: &Arc<MemoryBudget>,
) -> Result<Option<(Runs, usize)>> {
    let features = read.features().to_vec();
    let Some(loaded) = SetRows::load(conn, relation, spec, features, read.covered(), budget)?
    else {
        return Ok(None);
    };
    let rows = loaded.rows.len();
    Ok(Some(match read {
        Read::Since(mut runs) => {
            TRAINING_INDEX.record_updated_rows(rows);
            runs.push(loaded);
            (runs, rows)
        }
        Read::Whole(features) => {
            TRAINING_INDEX.record_built_rows(rows);
            (Runs::new(features, loaded), rows)
        }
    }))
}

/// Rows stored in `relation` (past `_seq` `after`, if given): from metadata, `_seq` pruning by
/// zone maps and row-group statistics.
fn count_rows(conn: &Connection, relation: &str, after: Option<i64>) -> Result<usize> {
    let rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {relation}{}", after_seq(after)),
        [],
        |row| row.get(0),
    )?;
    Ok(usize::try_from(rows).unwrap_or(usize::MAX))
}

/// What a warm-up did for a set ([`crate::FeatureStore::warm_training_indexes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmed {
    /// Its kept index already held every stored row (or it has none).
    Current,
    /// Rows read whole into a new index (of one run).
    Built(usize),
    /// Rows stored since its kept index, read into it.
    Updated(usize),
    /// Not done: the rows to read do not fit what is free of the budget, which a warm-up
    /// never takes from a kept index or a request.
    NoRoom,
}

/// Brings `spec`'s kept index up to date ahead of the next request, or builds it: the rows
/// stored since the kept index (its features), or the set whole (every feature). A request
/// that comes later finds it as if an earlier request had kept it.
pub(crate) fn warm(
    conn: &Connection,
    relation: &str,
    spec: &Arc<FeatureSetSpec>,
    cache: &IndexCache,
) -> Result<Warmed> {
    let _warming = cache.warming(&spec.name);
    let kept = cache.kept(spec);
    let features = kept.as_ref().map_or_else(
        || (0..spec.features.len()).collect::<Vec<_>>(),
        |runs| runs.features().to_vec(),
    );
    let least = least_bytes_per_row(spec, &features);
    let budget = cache.budget();
    let fits = |rows: usize| rows.saturating_mul(least) <= budget.available();
    // A request searches every run for every entity row and gathers across them
    // (`interleave`): with a second run, however small, 1M entity rows × 1M stored rows took
    // 0.63-0.82 s here against 0.46-0.56 s over one run. So a warm-up reads the set whole
    // again into one run, beside the kept index that requests read meanwhile, where that is
    // cheap against what it read before: the rows stored since are a quarter of the index or
    // more (ingest paused part way through a load; each such read follows a growth of a
    // quarter, so over a set's growth they read about five times its rows), or the index's
    // last whole read is old against the time it took (a set ingested in small pauses and
    // trained on meanwhile is read whole at most about a tenth of the time).
    let read = match kept {
        Some(runs) => {
            let since = count_rows(conn, relation, Some(runs.covered()))?;
            if since == 0 {
                return Ok(Warmed::Current);
            }
            let indexed = runs.rows();
            let whole_again = since.saturating_mul(WHOLE_AGAIN_DIVISOR) >= indexed
                || runs.whole_read_is_old(WHOLE_AGAIN_DUTY);
            if whole_again && fits(indexed.saturating_add(since)) {
                Read::Whole(features)
            } else if fits(since) {
                Read::Since(runs)
            } else {
                return Ok(Warmed::NoRoom);
            }
        }
        None => {
            let rows = count_rows(conn, relation, None)?;
            if rows == 0 {
                return Ok(Warmed::Current);
            }
            if !fits(rows) {
                return Ok(Warmed::NoRoom);
            }
            Read::Whole(features)
        }
    };
    let updating = matches!(read, Read::Since(_));
    let Some((runs, read)) = read_rows(conn, relation, spec, read, budget)? else {
        return Ok(Warmed::NoRoom);
    };
    cache.keep_warmed(spec, &runs);
    Ok(if updating {
        Warmed::Updated(read)
    } else {
        Warmed::Built(read)
    })
}

impl LoadedSets {
    /// Joins the spooled entity rows, in order, and hands the result batches to `sink`.
    pub(crate) fn join(
        &self,
        plan: &TrainingPlan,
        entity_rows: &SpooledRows,
        sink: BatchSink<'_>,
    ) -> Result<()> {
        let mut first_row = 0usize;
        for batch in entity_rows.reader()? {
            let batch = batch?;
            let mut offset = 0;
            while offset < batch.num_rows() {
                let rows = OUTPUT_ROWS.min(batch.num_rows() - offset);
                let slice = batch.slice(offset, rows);
                sink(self.join_slice(plan, &slice, first_row + offset)?)?;
                offset += rows;
            }
            first_row += batch.num_rows();
        }
        Ok(())
    }

    fn join_slice(
        &self,
        plan: &TrainingPlan,
        rows: &RecordBatch,
        first_row: usize,
    ) -> Result<RecordBatch> {
        let (keys, times) = plan.entity_keys(rows, first_row)?;
        let times = times
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| Error::Corrupt("entity times are not microseconds".into()))?;
        let mut positions = Vec::with_capacity(self.sets.len());
        for (i, set) in self.sets.iter().enumerate() {
            positions.push(match set {
                Some(set) => {
                    let key = plan
                        .set_key(i)
                        .and_then(|k| keys.get(k))
                        .ok_or_else(|| Error::Corrupt("a training set has no key".into()))?;
                    Some(set.locate(key, times)?)
                }
                None => None,
            });
        }
        let mut columns = rows.columns().to_vec();
        for output in &plan.outputs {
            let value = match (self.sets.get(output.set), positions.get(output.set)) {
                (Some(Some(set)), Some(Some(positions))) => {
                    set.values(output.feature, positions)?
                }
                _ => return Err(Error::Corrupt("an output's set was not loaded".into())),
            };
            columns.push(value);
        }
        Ok(RecordBatch::try_new(plan.output_schema.clone(), columns)?)
    }
}

/// A stored row as the index sorts it; `row` is its position in the scan. The stored rows
/// fit the budget, far below 2^32: `u32` halves the index.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    time: i64,
    seq: i64,
    row: u32,
}

/// A key's rows: `entries[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

enum KeyIndex {
    Int(HashMap<i64, Span>),
    String(HashMap<Box<str>, Span>),
}

/// A stored row as the join finds it: its event time and its position in the scan, side by
/// side, so that the binary search on times brings the position into the cache. Kept apart,
/// the two were a cache miss each, most of the join's time.
#[derive(Debug, Clone, Copy)]
struct Timed {
    time: i64,
    row: u32,
}

impl Timed {
    /// The (time, position) of each of the sorted `entries`, in their order.
    fn of(entries: &[Entry]) -> Vec<Timed> {
        entries
            .iter()
            .map(|e| Timed {
                time: e.time,
                row: e.row,
            })
            .collect()
    }
}

/// One run of a set's stored rows, as the join reads them.
pub(super) struct SetRows {
    /// The features asked for, each with its column of every scanned row, in scan order.
    values: Vec<(usize, ArrayRef)>,
    keys: KeyIndex,
    /// Grouped by key, each key's rows in (event time, ingest order).
    rows: Vec<Timed>,
    ttl: Option<i64>,
    /// The greatest `_seq` the run covers: every stored row up to it is in this run or an
    /// earlier one.
    covered: i64,
    /// The budget the run holds, given back when the last request or cache holding it lets
    /// go.
    reservation: Reservation,
    /// When the run's rows were read, and how long that took.
    read_at: Instant,
    read_for: Duration,
}

/// A set's index: runs of ascending `_seq`, each holding the same features.
#[derive(Clone)]
pub(super) struct Runs {
    features: Vec<usize>,
    runs: Vec<Arc<SetRows>>,
}

/// Where each entity row of a slice finds its value.
enum Located {
    /// In the only run: a position in it, null where nothing matches.
    One(UInt32Array),
    /// In one of several runs, as (1 + run, position), (0, 0) where nothing matches: the
    /// indices of an `interleave` over a null and each run's column.
    Many(Vec<(usize, usize)>),
}

impl Runs {
    pub(super) fn new(features: Vec<usize>, first: SetRows) -> Runs {
        Runs {
            features,
            runs: vec![Arc::new(first)],
        }
    }

    pub(super) fn features(&self) -> &[usize] {
        &self.features
    }

    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The greatest `_seq` the index covers.
    pub(super) fn covered(&self) -> i64 {
        self.runs.last().map_or(-1, |run| run.covered)
    }

    /// Whether the index's whole read (its first run) is older than `times` the time it took.
    fn whole_read_is_old(&self, times: u32) -> bool {
        self.runs
            .first()
            .is_some_and(|run| run.read_at.elapsed() >= run.read_for.saturating_mul(times))
    }

    /// Stored rows the index holds (with a key).
    pub(super) fn rows(&self) -> usize {
        self.runs.iter().map(|run| run.rows.len()).sum()
    }

    /// Budget bytes the index holds.
    pub(super) fn bytes(&self) -> usize {
        self.runs.iter().map(|run| run.reservation.bytes).sum()
    }

    /// Adds the rows stored after [`covered`](Self::covered), unless there are none.
    fn push(&mut self, since: SetRows) {
        if !since.rows.is_empty() {
            self.runs.push(Arc::new(since));
        }
    }

    fn locate(
        &self,
        keys: &ArrayRef,
        times: &PrimitiveArray<TimestampMicrosecondType>,
    ) -> Result<Located> {
        if let [run] = self.runs.as_slice() {
            let mut positions = vec![None; times.len()];
            run.locate_each(keys, times, |i, matched| {
                if let Some(slot) = positions.get_mut(i) {
                    *slot = Some(matched.row);
                }
            })?;
            return Ok(Located::One(UInt32Array::from(positions)));
        }
        // The latest match over the runs; on equal times the later run's, whose rows were
        // ingested later.
        let mut best: Vec<Option<(usize, Timed)>> = vec![None; times.len()];
        for (r, run) in self.runs.iter().enumerate() {
            run.locate_each(keys, times, |i, matched| {
                if let Some(slot) = best.get_mut(i) {
                    if slot.is_none_or(|(_, b)| matched.time >= b.time) {
                        *slot = Some((r, matched));
                    }
                }
            })?;
        }
        Ok(Located::Many(
            best.iter()
                .map(|b| b.map_or((0, 0), |(r, m)| (r + 1, m.row as usize)))
                .collect(),
        ))
    }

    /// Feature `feature`'s values where `located`.
    fn values(&self, feature: usize, located: &Located) -> Result<ArrayRef> {
        let column = |run: &SetRows| {
            run.values
                .iter()
                .find(|(f, _)| *f == feature)
                .map(|(_, column)| column.clone())
                .ok_or_else(|| Error::Corrupt("an output's feature was not loaded".into()))
        };
        match located {
            Located::One(positions) => {
                let run = self
                    .runs
                    .first()
                    .ok_or_else(|| Error::Corrupt("an index has no run".into()))?;
                Ok(take(&column(run)?, positions, None)?)
            }
            Located::Many(indices) => {
                let columns = self
                    .runs
                    .iter()
                    .map(|run| column(run))
                    .collect::<Result<Vec<_>>>()?;
                let data_type = columns
                    .first()
                    .ok_or_else(|| Error::Corrupt("an index has no run".into()))?
                    .data_type();
                let null = new_null_array(data_type, 1);
                let mut arrays: Vec<&dyn Array> = vec![null.as_ref()];
                arrays.extend(columns.iter().map(|c| c.as_ref()));
                Ok(interleave(&arrays, indices)?)
            }
        }
    }
}

/// The `WHERE` clause of the rows stored after `_seq` `after`; empty for all rows.
fn after_seq(after: Option<i64>) -> String {
    after.map_or(String::new(), |after| {
        format!(" WHERE {} > {after}", ident(SEQ_COLUMN))
    })
}

/// Bytes of index per stored row: its key and entry as gathered, its entry while sorting, its
/// group while grouping, and at most one hash table slot (a key of 8 bytes or a boxed
/// string's 16, a span, a control byte) at the table's lowest load factor (7/8, rounded to
/// half). The [`Timed`] rows kept (16 bytes) are smaller than the entries they are made from.
fn index_bytes_per_row(entity_type: EntityType) -> usize {
    let key = match entity_type {
        EntityType::Int64 => std::mem::size_of::<i64>(),
        // A borrowed `&str` while gathering, a boxed one in the table: 16 bytes each.
        EntityType::String => std::mem::size_of::<Box<str>>(),
    };
    key + 2 * std::mem::size_of::<Entry>()
        + std::mem::size_of::<u32>()
        + 2 * (key + std::mem::size_of::<Span>() + 1)
}

/// The fewest bytes of the budget that one stored row of `spec` takes when `used` features are
/// read ([`SetRows::load`]): its fixed-width columns as scanned (key, time, sequence, values;
/// strings, binaries and bools count as nothing) and its index entry.
fn least_bytes_per_row(spec: &FeatureSetSpec, used: &[usize]) -> usize {
    let key = match spec.entity.entity_type {
        EntityType::Int64 => size_of::<i64>(),
        // Its offset; the bytes vary.
        EntityType::String => size_of::<i32>(),
    };
    let values: usize = used
        .iter()
        .filter_map(|&f| spec.features.get(f)?.feature_type.fixed_width())
        .sum();
    key + 2 * size_of::<i64>() + values + index_bytes_per_row(spec.entity.entity_type)
}

impl SetRows {
    /// The set's stored rows (those past `_seq` `after`, if given) with the `used` features;
    /// `None` once they would exceed the budget.
    pub(super) fn load(
        conn: &Connection,
        relation: &str,
        spec: &FeatureSetSpec,
        used: Vec<usize>,
        after: Option<i64>,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Option<SetRows>> {
        let started = Instant::now();
        let mut reservation = budget.reservation();
        let mut fields = vec![
            Field::new("_k", spec.entity.entity_type.arrow_type(), true),
            Field::new("_t", DataType::Int64, true),
            Field::new("_s", DataType::Int64, true),
        ];
        let mut columns = Vec::with_capacity(used.len());
        for &f in &used {
            let feature = spec
                .features
                .get(f)
                .ok_or_else(|| Error::Corrupt("an output names no feature of its set".into()))?;
            fields.push(Field::new(
                format!("f{f}"),
                feature.feature_type.arrow_type(),
                true,
            ));
            columns.push(ident(&feature.name));
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let sql = format!(
            "SELECT {entity} AS _k, epoch_us({ts}) AS _t, {seq} AS _s, {columns} FROM {relation}{since}",
            entity = ident(&spec.entity.name),
            ts = ident(&spec.timestamp),
            seq = ident(SEQ_COLUMN),
            columns = columns.join(", "),
            since = after_seq(after),
        );
        let mut batches = Vec::new();
        let mut over_budget = false;
        let scanned = stream_query(conn, &sql, &schema, &mut |batch| {
            if !reservation.grow(batch.get_array_memory_size()) {
                over_budget = true;
                return Err(Error::Corrupt("over the training memory budget".into()));
            }
            batches.push(batch);
            Ok(())
        });
        if over_budget {
            return Ok(None);
        }
        scanned?;
        if batches.is_empty() {
            // No rows (read since an index was kept, or of an empty set): the columns are
            // still made, empty.
            batches.push(RecordBatch::new_empty(schema));
        }

        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        // String keys are copied into the index once per key: at most their column's bytes.
        let copied_keys: usize = match spec.entity.entity_type {
            EntityType::Int64 => 0,
            EntityType::String => batches
                .iter()
                .map(|b| b.column(0).get_array_memory_size())
                .sum(),
        };
        let index_bytes = rows
            .saturating_mul(index_bytes_per_row(spec.entity.entity_type))
            .saturating_add(copied_keys);
        if u32::try_from(rows).is_err() || !reservation.grow(index_bytes) {
            return Ok(None);
        }
        // Each feature's column in one array, so that the join gathers with `take`: copied
        // on a thread of its own while this one groups the rows by their key, time and
        // sequence columns. A column's parts are dropped once copied, so this holds one
        // column twice at most.
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::with_capacity(batches.len()); used.len()];
        let mut keyed = Vec::with_capacity(batches.len());
        let mut covered = after.unwrap_or(-1);
        for batch in batches {
            if let Some(greatest) = batch
                .column(2)
                .as_primitive_opt::<Int64Type>()
                .and_then(max)
            {
                covered = covered.max(greatest);
            }
            // Past the key, time and sequence columns, in `used` order.
            for (part, column) in parts.iter_mut().zip(batch.columns().iter().skip(3)) {
                part.push(column.clone());
            }
            keyed.push(batch.project(&[0, 1, 2])?);
        }
        let (grouped, values) = std::thread::scope(|scope| {
            let concatenated = scope.spawn(|| concat_features(used, parts));
            let grouped = index(&keyed, spec.entity.entity_type);
            let values = concatenated
                .join()
                .unwrap_or_else(|_| Err(Error::Corrupt("concatenating features panicked".into())));
            (grouped, values)
        });
        drop(keyed);
        let (keys, entries) = grouped?;
        let values = values?;
        let rows = Timed::of(&entries);
        drop(entries);
        Ok(Some(SetRows {
            values,
            keys,
            rows,
            ttl: spec.ttl_micros(),
            covered,
            reservation,
            read_at: Instant::now(),
            read_for: started.elapsed(),
        }))
    }

    /// Calls `found` with each entity row that matches a row of this run, and the row.
    ///
    /// The searches run in the order of the keys' rows in [`rows`](Self::rows), not in the
    /// entity rows' order: they then walk the rows forward, where in input order each one is
    /// a cache miss (and a TLB miss) of its own, the join's largest cost.
    fn locate_each(
        &self,
        keys: &ArrayRef,
        times: &PrimitiveArray<TimestampMicrosecondType>,
        mut found: impl FnMut(usize, Timed),
    ) -> Result<()> {
        let spans: Vec<Option<Span>> = match &self.keys {
            KeyIndex::Int(index) => keys
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| Error::Corrupt("entity keys are not int64".into()))?
                .iter()
                .map(|key| key.and_then(|k| index.get(&k)).copied())
                .collect(),
            KeyIndex::String(index) => keys
                .as_string_opt::<i32>()
                .ok_or_else(|| Error::Corrupt("entity keys are not strings".into()))?
                .iter()
                .map(|key| key.and_then(|k| index.get(k)).copied())
                .collect(),
        };
        // Each matched entity row as (its key's first row, its own index), sorted.
        let mut order: Vec<u64> = spans
            .iter()
            .zip(0u64..)
            .filter_map(|(span, i)| span.map(|span| (u64::from(span.start) << 32) | i))
            .collect();
        order.sort_unstable();
        for packed in order {
            // The low half is an entity row's index (below 2^32: a slice is far smaller).
            let i = (packed & u64::from(u32::MAX)) as usize;
            let matched = spans
                .get(i)
                .copied()
                .flatten()
                .zip(times.is_valid(i).then(|| times.value(i)))
                .and_then(|(span, time)| self.find(span, time));
            if let Some(matched) = matched {
                found(i, matched);
            }
        }
        Ok(())
    }

    /// The last of a key's rows at or before `time` (so, among equal times, the later
    /// ingest), unless older than the TTL (a value exactly ttl old is kept).
    fn find(&self, span: Span, time: i64) -> Option<Timed> {
        let rows = self.rows.get(span.start as usize..span.end as usize)?;
        let last = rows.partition_point(|r| r.time <= time).checked_sub(1)?;
        let matched = rows.get(last)?;
        // Both times are in the accepted range (|t| < 2^58): the difference cannot overflow.
        if self.ttl.is_some_and(|ttl| time - matched.time > ttl) {
            return None;
        }
        Some(*matched)
    }
}

/// Each `used` feature with its `parts` (in scan order) in one array, the parts dropped as
/// each is copied.
fn concat_features(used: Vec<usize>, parts: Vec<Vec<ArrayRef>>) -> Result<Vec<(usize, ArrayRef)>> {
    used.into_iter()
        .zip(parts)
        .map(|(feature, part)| {
            let arrays: Vec<&dyn Array> = part.iter().map(|c| c.as_ref()).collect();
            Ok((feature, concat(&arrays)?))
        })
        .collect()
}

/// Groups the scanned rows by key, each key's rows in (event time, ingest order). Rows
/// without a key or a time match nothing, as in SQL.
fn index(batches: &[RecordBatch], entity_type: EntityType) -> Result<(KeyIndex, Vec<Entry>)> {
    fn int64(batch: &RecordBatch, i: usize) -> Result<&PrimitiveArray<Int64Type>> {
        batch
            .column(i)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::Corrupt("scanned times are not int64".into()))
    }
    let mut columns = Vec::with_capacity(batches.len());
    for batch in batches {
        columns.push((int64(batch, 1)?, int64(batch, 2)?));
    }
    Ok(match entity_type {
        EntityType::Int64 => {
            let keys = key_columns(batches, "int64", |c| c.as_primitive_opt::<Int64Type>())?;
            let rows = keyed_rows(&keys, &columns, present);
            let (index, entries) = group(&rows);
            (KeyIndex::Int(index), entries)
        }
        EntityType::String => {
            let keys = key_columns(batches, "strings", |c| c.as_string_opt::<i32>())?;
            let rows = keyed_rows(&keys, &columns, present);
            let (index, entries) = group(&rows);
            let index = index
                .into_iter()
                .map(|(k, span)| (Box::from(k), span))
                .collect();
            (KeyIndex::String(index), entries)
        }
    })
}

/// Each scanned batch's key column (the first) as `A`; `what` names the type in the error.
fn key_columns<'a, A>(
    batches: &'a [RecordBatch],
    what: &str,
    downcast: impl Fn(&'a ArrayRef) -> Option<&'a A>,
) -> Result<Vec<&'a A>> {
    batches
        .iter()
        .map(|batch| {
            downcast(batch.column(0))
                .ok_or_else(|| Error::Corrupt(format!("scanned keys are not {what}")))
        })
        .collect()
}

/// The key at `row`, unless it is null (a null key matches nothing).
fn present<A: ArrayAccessor>(keys: A, row: usize) -> Option<A::Item> {
    keys.is_valid(row).then(|| keys.value(row))
}

type TimeColumns<'a> = (&'a PrimitiveArray<Int64Type>, &'a PrimitiveArray<Int64Type>);

/// Every scanned row with a key and a time, as (key, entry), in scan order: gathered once in
/// a tight loop per batch, as the grouping reads them twice.
fn keyed_rows<'a, A, K: 'a>(
    keys: &'a [&'a A],
    times: &'a [TimeColumns<'a>],
    key: impl Fn(&'a A, usize) -> Option<K>,
) -> Vec<(K, Entry)> {
    let mut rows = Vec::with_capacity(times.iter().map(|(t, _)| t.len()).sum());
    let mut first = 0u32;
    for (keys, (times, seqs)) in keys.iter().zip(times) {
        let all_timed = times.null_count() == 0;
        let stamped = times.values().iter().zip(seqs.values().iter());
        for (row, (&time, &seq)) in stamped.enumerate() {
            if !(all_timed || times.is_valid(row)) {
                continue;
            }
            if let Some(key) = key(keys, row) {
                rows.push((
                    key,
                    Entry {
                        time,
                        seq,
                        // Fits: the rows were checked against u32 before indexing.
                        row: first + row as u32,
                    },
                ));
            }
        }
        first += times.len() as u32;
    }
    rows
}

/// A counting sort of `rows` by key (so they are read twice), then each key's rows sorted
/// by (event time, ingest order).
fn group<K: Hash + Eq + Copy>(rows: &[(K, Entry)]) -> (HashMap<K, Span>, Vec<Entry>) {
    let mut groups: HashMap<K, u32> = HashMap::new();
    let mut sizes: Vec<u32> = Vec::new();
    let mut group_of: Vec<u32> = Vec::new();
    for &(key, _) in rows {
        let next = sizes.len() as u32;
        let group = *groups.entry(key).or_insert(next);
        if group == next {
            sizes.push(0);
        }
        if let Some(size) = sizes.get_mut(group as usize) {
            *size += 1;
        }
        group_of.push(group);
    }
    // `ends[g]` starts at group g's first slot and is moved past each row placed.
    let mut ends = Vec::with_capacity(sizes.len());
    let mut total = 0u32;
    for size in &sizes {
        ends.push(total);
        total += size;
    }
    let mut entries = vec![Entry::default(); total as usize];
    for ((_, entry), group) in rows.iter().zip(&group_of) {
        if let Some(end) = ends.get_mut(*group as usize) {
            if let Some(slot) = entries.get_mut(*end as usize) {
                *slot = *entry;
            }
            *end += 1;
        }
    }
    let span = |group: u32| {
        let end = ends.get(group as usize).copied().unwrap_or(0);
        let size = sizes.get(group as usize).copied().unwrap_or(0);
        Span {
            start: end - size,
            end,
        }
    };
    for group in 0..sizes.len() as u32 {
        let Span { start, end } = span(group);
        if let Some(rows) = entries.get_mut(start as usize..end as usize) {
            rows.sort_unstable_by_key(|entry| (entry.time, entry.seq));
        }
    }
    let index = groups
        .into_iter()
        .map(|(key, group)| (key, span(group)))
        .collect();
    (index, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let mut first = budget.reservation();
        assert!(first.grow(60));
        let mut second = budget.reservation();
        assert!(!second.grow(41), "over the budget: nothing taken");
        assert_eq!(budget.used.load(Ordering::Acquire), 60);
        assert!(second.grow(40));
        assert!(!first.grow(1));
        drop(first);
        assert_eq!(budget.used.load(Ordering::Acquire), 40);
        drop(second);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    /// The up-front check must never refuse rows that fit: per row, it counts no more than
    /// the scan and the index then reserve.
    #[test]
    fn the_least_bytes_of_a_row_are_no_more_than_loading_takes() {
        let spec = FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "k", "type": "string"},
                 "features": [{"name": "f", "type": "float32"}, {"name": "l", "type": "int64"},
                              {"name": "s", "type": "string"}, {"name": "b", "type": "bool"},
                              {"name": "v", "type": "float64[3]"}]}"#,
        )
        .unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t AS SELECT 'k' || (i % 7) AS k, make_timestamp(i) AS event_timestamp, \
             i AS {SEQ_COLUMN}, i::FLOAT AS f, i AS l, '' AS s, i % 2 = 0 AS b, \
             [i, i, i]::DOUBLE[3] AS v FROM range(5000) r(i)"
        ))
        .unwrap();
        let used = vec![0, 1, 2, 3, 4];
        let least = least_bytes_per_row(&spec, &used) * 5000;
        let budget = MemoryBudget::new(usize::MAX);
        let loaded = SetRows::load(&conn, "t", &spec, used, None, &budget)
            .unwrap()
            .unwrap();
        let reserved = loaded.reservation.bytes;
        assert!(least <= reserved, "least {least}, reserved {reserved}");
        assert!(least * 2 > reserved, "a useful bound");
        assert_eq!(loaded.covered, 4999, "the greatest _seq read");
        drop(loaded);
        assert_eq!(budget.used.load(Ordering::Acquire), 0, "given back");

        // A budget that passes the check but not the load: it runs out part way through,
        // and gives back what it took.
        let short = MemoryBudget::new(least);
        let used = vec![0, 1, 2, 3, 4];
        assert!(SetRows::load(&conn, "t", &spec, used, None, &short)
            .unwrap()
            .is_none());
        assert_eq!(short.used.load(Ordering::Acquire), 0);
    }

    fn entry(time: i64, seq: i64, row: u32) -> Entry {
        Entry { time, seq, row }
    }

    #[test]
    fn groups_each_keys_rows_by_time_then_ingest_order() {
        let rows = [
            ("b", entry(5, 1, 0)),
            ("a", entry(9, 2, 1)),
            ("b", entry(5, 0, 2)),
            ("a", entry(3, 3, 3)),
            ("b", entry(1, 4, 4)),
        ];
        let (index, entries) = group(&rows);
        let rows_of = |key: &str| {
            let span = index[key];
            entries[span.start as usize..span.end as usize]
                .iter()
                .map(|e| e.row)
                .collect::<Vec<_>>()
        };
        assert_eq!(rows_of("a"), [3, 1]);
        assert_eq!(rows_of("b"), [4, 2, 0]);
        assert_eq!(entries.len(), rows.len());
    }

    #[test]
    fn finds_the_last_row_at_or_before_the_time_within_the_ttl() {
        let (index, entries) = group(&[
            (7i64, entry(10, 0, 0)),
            (7, entry(20, 1, 1)),
            (7, entry(20, 2, 2)),
        ]);
        let span = index[&7];
        let set = SetRows {
            values: Vec::new(),
            keys: KeyIndex::Int(index),
            rows: Timed::of(&entries),
            ttl: Some(5),
            covered: 2,
            reservation: MemoryBudget::new(0).reservation(),
            read_at: Instant::now(),
            read_for: Duration::ZERO,
        };
        let find = |time| set.find(span, time).map(|matched| matched.row);
        assert_eq!(find(9), None, "nothing yet");
        assert_eq!(find(10), Some(0), "an equal time is visible");
        assert_eq!(find(15), Some(0), "exactly ttl old is kept");
        assert_eq!(find(16), None, "older than the ttl");
        assert_eq!(find(20), Some(2), "a tie goes to the later ingest");
    }

    /// A set read in runs (the rows since an index was kept read into runs of their own)
    /// joins as the same set read whole: each entity row gets the same value, ties on event
    /// time going to the later ingest whichever runs hold the rows.
    #[test]
    fn runs_join_as_the_set_read_whole() {
        let spec = FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "k", "type": "int64"}, "ttl_seconds": 1,
                 "features": [{"name": "f", "type": "int64"}, {"name": "s", "type": "string"}]}"#,
        )
        .unwrap();
        let conn = Connection::open_in_memory().unwrap();
        // Keys 0..7, event times in 0..20 ms so that many rows tie, in the order ingested;
        // a feature naming the row it came from, so that any wrong pick shows.
        conn.execute_batch(&format!(
            "CREATE TABLE t AS SELECT (i * 7919) % 7 AS k,              make_timestamp(((i * 104729) % 20) * 1000) AS event_timestamp,              i AS {SEQ_COLUMN}, i AS f, 'row ' || i AS s FROM range(3000) r(i)"
        ))
        .unwrap();
        let budget = MemoryBudget::new(usize::MAX);
        let load = |after: Option<i64>, upto: i64| {
            let relation = format!("(SELECT * FROM t WHERE {SEQ_COLUMN} <= {upto})");
            SetRows::load(&conn, &relation, &spec, vec![0, 1], after, &budget)
                .unwrap()
                .unwrap()
        };
        let whole = Runs::new(vec![0, 1], load(None, 2999));
        let mut runs = Runs::new(vec![0, 1], load(None, 999));
        for upto in [1000, 1999, 2999, 2999] {
            let since = load(Some(runs.covered()), upto);
            runs.push(since);
        }
        assert_eq!(
            runs.runs(),
            4,
            "the first, then one per read that found rows"
        );
        assert_eq!(runs.covered(), 2999);

        // Entity rows at every time around the stored ones, a key that matches nothing, a
        // null key and a null time.
        let mut keys: Vec<Option<i64>> = Vec::new();
        let mut times: Vec<Option<i64>> = Vec::new();
        for key in 0..8 {
            for ms in 0..1500 {
                keys.push(Some(key));
                times.push(Some(ms * 100));
            }
        }
        keys.extend([None, Some(1)]);
        times.extend([Some(5000), None]);
        let keys: ArrayRef = Arc::new(arrow::array::Int64Array::from(keys));
        let times = PrimitiveArray::<TimestampMicrosecondType>::from(times);
        let join = |runs: &Runs| {
            let located = runs.locate(&keys, &times).unwrap();
            [0, 1].map(|f| runs.values(f, &located).unwrap())
        };
        let [whole_f, whole_s] = join(&whole);
        let [runs_f, runs_s] = join(&runs);
        assert_eq!(&runs_f, &whole_f);
        assert_eq!(&runs_s, &whole_s);
        assert!(whole_f.null_count() > 0 && whole_f.null_count() < whole_f.len());
        // The last row of a tie: at 19 ms key 0 has many rows; the latest ingested wins.
        let last_at_19ms = (0..3000i64)
            .filter(|i| (i * 7919) % 7 == 0 && (i * 104729) % 20 == 19)
            .max()
            .unwrap();
        assert_eq!(
            whole_f.as_primitive::<Int64Type>().value(190),
            last_at_19ms,
            "key 0 at 19 ms"
        );
    }
}
