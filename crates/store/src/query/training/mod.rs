//! Point-in-time correct training data: entity rows joined, as of each row's time, with the
//! feature values valid then. Never a value from after the row's time; ties on event time go
//! to the later ingest; values older than a set's TTL are null.
//!
//! Entity rows stream in to an Arrow IPC spool file. As of event time, when the stored rows
//! fit the training memory budget, they are loaded while the entity rows arrive and joined in
//! memory ([`in_memory`]). Otherwise their
//! key columns go to a DuckDB temp table (which spills under the memory limit) and a DuckDB
//! `ASOF LEFT JOIN` streams out in input order, zipped with the spool. Either way passthrough
//! columns (labels) keep their exact types and memory stays bounded.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{new_empty_array, ArrayRef, Int64Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use duckdb::Connection;
use featherstore_core::coerce::{coerce_key, coerce_timestamp, coerce_timestamp_rows};
use featherstore_core::{
    AsOf, EntityType, FeatureSetSpec, FeatureType, OutputFeature, TrainingDataCommand,
};

use super::sql::{
    entity_sql_type, feature_sql_type, ident, stream_query, INGESTED_AT_COLUMN, SEQ_COLUMN,
};
use crate::durable::ShortWrites;
use crate::offline::OfflineStore;
use crate::query::cancel;
use crate::types::BatchSink;
use crate::{Error, Result};

mod in_memory;
mod index_cache;
pub(crate) use in_memory::warm;
pub use in_memory::Warmed;
pub(crate) use index_cache::IndexCache;

/// 2^64: event time and ingest sequence packed into one ASOF ordering key,
/// `time * 2^64 + seq`, so the join's single inequality also breaks ties by ingest order.
const SEQ_SPAN: &str = "18446744073709551616::HUGEINT";

/// The smallest HUGEINT but one: below `time * 2^64 + seq` for every time in the accepted
/// range (|time| < 2^59).
const NO_TIME_KEY: &str = "-170141183460469231731687303715884105727::HUGEINT";

/// The entity rows of one request, in arrival order.
pub type EntityRows<'a> = &'a mut dyn Iterator<Item = Result<RecordBatch>>;

/// A checked training data request, ready to run.
#[derive(Debug, Clone)]
pub struct TrainingPlan {
    /// The referenced sets, in first-mention order.
    pub sets: Vec<Arc<FeatureSetSpec>>,
    pub outputs: Vec<OutputFeature>,
    /// The entity rows' time column.
    pub timestamp: String,
    /// Which stored rows count at an entity row's time.
    pub as_of: AsOf,
    /// Distinct key columns of the entity rows, and for each set the index of its key.
    keys: Vec<(String, EntityType)>,
    set_keys: Vec<usize>,
    pub input_schema: SchemaRef,
    /// The input columns, then one column per output feature.
    pub output_schema: SchemaRef,
}

fn missing_column(column: &str, why: &str) -> Error {
    featherstore_core::Error::invalid(format!("entity rows lack the column {column:?} ({why})"))
        .into()
}

impl TrainingPlan {
    /// Checks `command` against the sets (in `command.set_names()` order) and the schema of
    /// the entity rows.
    pub fn new(
        command: &TrainingDataCommand,
        sets: Vec<Arc<FeatureSetSpec>>,
        input_schema: SchemaRef,
    ) -> Result<Self> {
        let field = |name: &str| input_schema.field_with_name(name).ok();
        let timestamp = field(&command.timestamp)
            .ok_or_else(|| missing_column(&command.timestamp, "the timestamp of each row"))?;
        coerce_timestamp(&command.timestamp, &new_empty_array(timestamp.data_type()))?;

        let mut keys: Vec<(String, EntityType)> = Vec::new();
        let mut set_keys = Vec::with_capacity(sets.len());
        for spec in &sets {
            let entity = &spec.entity;
            let column = field(&entity.name).ok_or_else(|| {
                missing_column(
                    &entity.name,
                    &format!("the entity key of feature set {:?}", spec.name),
                )
            })?;
            coerce_key(
                &entity.name,
                entity.entity_type,
                &new_empty_array(column.data_type()),
            )?;
            match keys.iter().position(|(name, _)| name == &entity.name) {
                Some(i) if keys[i].1 != entity.entity_type => {
                    return Err(featherstore_core::Error::invalid(format!(
                        "entity column {:?} is a {} key of one set and a {} key of feature set {:?}",
                        entity.name, keys[i].1, entity.entity_type, spec.name
                    ))
                    .into())
                }
                Some(i) => set_keys.push(i),
                None => {
                    set_keys.push(keys.len());
                    keys.push((entity.name.clone(), entity.entity_type));
                }
            }
        }

        let specs: Vec<&FeatureSetSpec> = sets.iter().map(Arc::as_ref).collect();
        let input_names: Vec<String> = input_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let outputs = command.resolve(&specs, &input_names)?;
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(outputs.iter().map(|o| {
            let feature = &sets[o.set].features[o.feature];
            Field::new(&o.name, feature.feature_type.arrow_type(), true)
        }));
        Ok(TrainingPlan {
            sets,
            outputs,
            timestamp: command.timestamp.clone(),
            as_of: command.as_of,
            keys,
            set_keys,
            output_schema: Arc::new(Schema::new(fields)),
            input_schema,
        })
    }

    fn feature_schema(&self) -> SchemaRef {
        let skip = self.input_schema.fields().len();
        Arc::new(Schema::new(self.output_schema.fields()[skip..].to_vec()))
    }

    /// The join: one row per entity row, in input order, the output features only.
    fn join_sql(&self, keys_table: &str, relations: &[String]) -> String {
        let mut joins = String::new();
        for (i, spec) in self.sets.iter().enumerate() {
            let used = self.used_features(i);
            if used.is_empty() {
                continue;
            }
            let candidates = match self.as_of {
                AsOf::EventTime => as_of_event_time(spec, &relations[i], &used),
                AsOf::IngestTime => as_of_ingest_time(spec, &relations[i], &used),
            };
            joins.push_str(&format!(
                " ASOF LEFT JOIN ({candidates}) s{i} ON e.k{key} = s{i}._k AND e._key >= s{i}._key",
                key = self.set_keys[i],
            ));
        }
        let selected: Vec<String> = self
            .outputs
            .iter()
            .map(|o| {
                let value = format!("s{}.f{}", o.set, o.feature);
                let Some(ttl) = self.sets[o.set].ttl_micros() else {
                    return value;
                };
                // A value exactly ttl old is kept. Written as a difference of two times in
                // the accepted range (never more than 2^59), which cannot overflow whatever
                // the TTL; `e._t - ttl` could.
                let kept = format!("e._t - s{}._t <= {ttl}", o.set);
                // DuckDB 1.5 cannot `CASE` a fixed-size array whose rows take different
                // branches ("Unimplemented type for case expression: FLOAT[3]"); it can a
                // list, which casts back losslessly (every row has N values).
                let feature_type = self.sets[o.set].features[o.feature].feature_type;
                let element = match feature_type {
                    FeatureType::Float32Vector(_) => FeatureType::Float32,
                    FeatureType::Float64Vector(_) => FeatureType::Float64,
                    _ => return format!("CASE WHEN {kept} THEN {value} END"),
                };
                format!(
                    "(CASE WHEN {kept} THEN {value}::{}[] END)::{}",
                    feature_sql_type(element),
                    feature_sql_type(feature_type)
                )
            })
            .collect();
        // An entity row without a time joins nothing: its key is below every stored key.
        // A null key would not do, as DuckDB 1.5's ASOF join matches a null with the latest.
        format!(
            "SELECT {} FROM (SELECT *, epoch_us(_ts) AS _t, \
             coalesce(epoch_us(_ts)::HUGEINT * {SEQ_SPAN} + ({SEQ_SPAN} - 1), {NO_TIME_KEY}) AS _key \
             FROM temp.main.{keys_table}) e{joins} ORDER BY e._row",
            selected.join(", ")
        )
    }

    /// The features of set `set` that outputs use, each once, in first-use order.
    fn used_features(&self, set: usize) -> Vec<usize> {
        let mut used: Vec<usize> = Vec::new();
        for output in self.outputs.iter().filter(|o| o.set == set) {
            if !used.contains(&output.feature) {
                used.push(output.feature);
            }
        }
        used
    }

    /// The index, in [`entity_keys`](Self::entity_keys), of set `set`'s key.
    fn set_key(&self, set: usize) -> Option<usize> {
        self.set_keys.get(set).copied()
    }

    fn column<'b>(&self, batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
        batch.column_by_name(name).ok_or_else(|| {
            missing_column(
                name,
                "every entity rows batch must have the first batch's columns",
            )
        })
    }

    /// The key columns of an entity-row batch (in `keys` order) and its times in UTC
    /// microseconds; its rows count from `first_row` as the client counts them.
    fn entity_keys(
        &self,
        batch: &RecordBatch,
        first_row: usize,
    ) -> Result<(Vec<ArrayRef>, ArrayRef)> {
        let keys = self
            .keys
            .iter()
            .map(|(name, entity_type)| {
                Ok(coerce_key(name, *entity_type, self.column(batch, name)?)?)
            })
            .collect::<Result<_>>()?;
        // A time outside the accepted range is refused (it could not be joined), naming its
        // row as the client counts rows.
        let times = coerce_timestamp_rows(
            &self.timestamp,
            self.column(batch, &self.timestamp)?,
            first_row,
        )?;
        Ok((keys, times))
    }

    /// The key columns of an entity-row batch as stored in the keys table.
    fn key_batch(
        &self,
        batch: &RecordBatch,
        first_row: i64,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let (keys, times) = self.entity_keys(batch, first_row as usize)?;
        let rows = batch.num_rows() as i64;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(keys.len() + 2);
        columns.push(Arc::new(Int64Array::from_iter_values(
            first_row..first_row + rows,
        )));
        columns.extend(keys);
        columns.push(arrow::compute::cast(
            &times,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?);
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The rows of a set an entity row at time t may join, as of event time: keyed (`_key`) by
/// event time and ingest order, so the ASOF join takes the greatest event time <= t, ties to
/// the later ingest. `_t` is the event time (for the TTL), `f{i}` the features.
fn as_of_event_time(spec: &FeatureSetSpec, relation: &str, used: &[usize]) -> String {
    let ts = ident(&spec.timestamp);
    let columns = feature_columns(spec, used);
    format!(
        "SELECT {entity} AS _k, epoch_us({ts})::HUGEINT * {SEQ_SPAN} + {seq} AS _key, \
         epoch_us({ts}) AS _t, {columns} FROM {relation}",
        entity = ident(&spec.entity.name),
        seq = ident(SEQ_COLUMN),
        columns = columns.join(", "),
    )
}

/// As [`as_of_event_time`], but a row counts at t only once it was also ingested by t: it is
/// visible from `greatest(event time, ingest time)` on. Each stored row r, keyed by that
/// instant (then ingest order), carries the answer for any t from r's key up to the next key:
/// the greatest (event time, ingest order) among the entity's rows visible by then (a running
/// maximum), whose features and event time are joined back by its `_seq`. The ASOF join then
/// picks the entry of the last row visible at t, as for event time; the default rule's query
/// is untouched.
fn as_of_ingest_time(spec: &FeatureSetSpec, relation: &str, used: &[usize]) -> String {
    let ts = ident(&spec.timestamp);
    let columns = feature_columns(spec, used);
    let entity = ident(&spec.entity.name);
    let seq = ident(SEQ_COLUMN);
    let visible = format!("epoch_us(greatest({ts}, {}))", ident(INGESTED_AT_COLUMN));
    format!(
        "SELECT v._k, v._key, b._t, {best} FROM (\
           SELECT {entity} AS _k, {visible}::HUGEINT * {SEQ_SPAN} + {seq} AS _key, \
           max(epoch_us({ts})::HUGEINT * {SEQ_SPAN} + {seq}) OVER (PARTITION BY {entity} \
             ORDER BY {visible}, {seq} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _best \
           FROM {relation}) v \
         JOIN (SELECT {seq} AS _s, epoch_us({ts}) AS _t, {columns} FROM {relation}) b \
           ON b._s = (v._best % {SEQ_SPAN})::BIGINT",
        best = used
            .iter()
            .map(|f| format!("b.f{f}"))
            .collect::<Vec<_>>()
            .join(", "),
        columns = columns.join(", "),
    )
}

/// The features a join uses, as `f{index}`.
fn feature_columns(spec: &FeatureSetSpec, used: &[usize]) -> Vec<String> {
    used.iter()
        .map(|&f| format!("{} AS f{f}", ident(&spec.features[f].name)))
        .collect()
}

static KEYS_TABLES: AtomicU64 = AtomicU64::new(0);

/// Drops the request's temp table however the request ends.
struct TempTable<'a> {
    conn: &'a Connection,
    name: String,
}

impl Drop for TempTable<'_> {
    fn drop(&mut self) {
        if let Err(e) = self
            .conn
            .execute_batch(&format!("DROP TABLE IF EXISTS temp.main.{}", self.name))
        {
            tracing::warn!(table = %self.name, error = %e, "dropping a training keys table failed");
        }
    }
}

/// The entity rows of a request, received whole and spooled to a temporary file (Arrow IPC)
/// before the join starts: a client that sends its rows slowly, or stops, holds no
/// connection while it does.
pub(crate) struct SpooledRows {
    file: File,
}

impl SpooledRows {
    fn reader(&self) -> Result<StreamReader<BufReader<File>>> {
        let mut file = self
            .file
            .try_clone()
            .map_err(Error::io("reopening the training spool file"))?;
        file.seek(SeekFrom::Start(0))
            .map_err(Error::io("rewinding the training spool file"))?;
        Ok(StreamReader::try_new(BufReader::new(file), None)?)
    }
}

/// Receives every entity row of a request into a spool file in `spool_dir`, checking each
/// batch against the plan. Memory stays bounded by one batch.
fn spool(
    plan: &TrainingPlan,
    entity_rows: EntityRows<'_>,
    spool_dir: &Path,
) -> Result<SpooledRows> {
    std::fs::create_dir_all(spool_dir)
        .map_err(Error::io(format!("creating {}", spool_dir.display())))?;
    let spool =
        tempfile::tempfile_in(spool_dir).map_err(Error::io("creating the training spool file"))?;
    // Short writes: the spool fills on a storage thread while online reads wait for a core.
    let mut spool = StreamWriter::try_new(BufWriter::new(ShortWrites(spool)), &plan.input_schema)?;
    let mut rows = 0i64;
    for (index, batch) in entity_rows.enumerate() {
        let batch = batch?;
        if batch.schema().fields() != plan.input_schema.fields() {
            return Err(featherstore_core::Error::invalid(format!(
                "entity rows batch {index} has schema {:?}; every batch must have the first batch's schema",
                batch.schema()
            ))
            .into());
        }
        if batch.num_rows() == 0 {
            continue;
        }
        // Key conversion errors are the client's: found now, before the join starts.
        plan.entity_keys(&batch, rows as usize)?;
        spool.write(&batch)?;
        rows += batch.num_rows() as i64;
    }
    spool.finish()?;
    let file: File = spool
        .into_inner()?
        .into_inner()
        .map_err(|e| Error::io("flushing the training spool file")(e.into_error()))?
        .into_inner();
    Ok(SpooledRows { file })
}

/// Spools `entity_rows` and runs `plan` over them, handing result batches (input columns then
/// features) to `sink` in input order.
///
/// As of event time, the stored rows are loaded into memory ([`in_memory`]) on a second thread
/// while the entity rows arrive, once the first batch of them has. The load reads at its own
/// pace, never the client's: it holds its connection only while it reads, and a client that
/// sends nothing past its schema holds nothing. What it loaded (within `budget`) is joined
/// once the last entity row is spooled, with no connection. When the stored rows do not fit
/// the budget, and as of ingest time, DuckDB joins once every entity row is spooled.
pub(crate) fn spool_and_join(
    offline: &dyn OfflineStore,
    plan: &TrainingPlan,
    entity_rows: EntityRows<'_>,
    spool_dir: &Path,
    indexes: &IndexCache,
    sink: BatchSink<'_>,
) -> Result<()> {
    let specs: Vec<&FeatureSetSpec> = plan.sets.iter().map(Arc::as_ref).collect();
    let first = entity_rows.next();
    let load_beside = plan.as_of == AsOf::EventTime && matches!(first, Some(Ok(_)));
    let mut rows = first.into_iter().chain(entity_rows);
    // The request's cancellation reaches the loading thread's connection too; and a spool
    // that fails cancels the load, whose rows nothing would join, but not the request, whose
    // client is to hear why.
    let cancellation = cancel::current().map_or_else(Default::default, |request| request.child());
    let load = || -> Result<Option<in_memory::LoadedSets>> {
        indexes.wait_for_warm_ups(&plan.sets);
        let mut loaded = None;
        offline.query_relations(&specs, &mut |conn, relations| {
            loaded = in_memory::load(conn, relations, plan, indexes)?;
            Ok(())
        })?;
        Ok(loaded)
    };
    let (spooled, loaded) = std::thread::scope(|scope| {
        let loading = load_beside.then(|| scope.spawn(|| cancellation.scope(load)));
        let spooled = spool(plan, &mut rows, spool_dir);
        if spooled.is_err() {
            cancellation.cancel();
        }
        let loaded = match loading {
            Some(loading) => loading
                .join()
                .unwrap_or_else(|_| Err(Error::Corrupt("loading the stored rows panicked".into()))),
            None => Ok(None),
        };
        (spooled, loaded)
    });
    // The client's errors (a bad batch, a key that does not convert) come first.
    let spooled = spooled?;
    match loaded? {
        Some(sets) => sets.join(plan, &spooled, sink),
        None => offline.query_relations(&specs, &mut |conn, relations| {
            join_in_duckdb(conn, relations, plan, &spooled, sink)
        }),
    }
}

/// Runs `plan` over the spooled entity rows on `conn`, where set `i` is readable as
/// `relations[i]`, handing result batches (input columns then features) to `sink` in input
/// order.
fn join_in_duckdb(
    conn: &Connection,
    relations: &[String],
    plan: &TrainingPlan,
    entity_rows: &SpooledRows,
    sink: BatchSink<'_>,
) -> Result<()> {
    let table = TempTable {
        conn,
        name: format!(
            "training_keys_{}",
            KEYS_TABLES.fetch_add(1, Ordering::Relaxed)
        ),
    };
    let mut key_fields = vec![Field::new("_row", DataType::Int64, false)];
    let mut ddl = vec!["_row BIGINT".to_string()];
    for (i, (_, entity_type)) in plan.keys.iter().enumerate() {
        key_fields.push(Field::new(format!("k{i}"), entity_type.arrow_type(), true));
        ddl.push(format!("k{i} {}", entity_sql_type(*entity_type)));
    }
    key_fields.push(Field::new(
        "_ts",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        true,
    ));
    ddl.push("_ts TIMESTAMP".into());
    let key_schema = Arc::new(Schema::new(key_fields));
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE {} ({})",
        table.name,
        ddl.join(", ")
    ))?;
    {
        let mut appender = conn.appender_to_catalog_and_db(&table.name, "temp", "main")?;
        let mut rows = 0i64;
        for batch in entity_rows.reader()? {
            let batch = batch?;
            appender.append_record_batch(plan.key_batch(&batch, rows, &key_schema)?)?;
            rows += batch.num_rows() as i64;
        }
        appender.flush()?;
    }
    let mut passthrough = Passthrough {
        reader: entity_rows.reader()?,
        current: None,
        offset: 0,
        schema: plan.input_schema.clone(),
    };

    let sql = plan.join_sql(&table.name, relations);
    stream_query(conn, &sql, &plan.feature_schema(), &mut |features| {
        let input = passthrough.take(features.num_rows())?;
        let mut columns = input.columns().to_vec();
        columns.extend(features.columns().iter().cloned());
        sink(RecordBatch::try_new(plan.output_schema.clone(), columns)?)
    })
}

/// Reads the spooled entity rows back in step with the join's output.
struct Passthrough {
    reader: StreamReader<BufReader<File>>,
    current: Option<RecordBatch>,
    offset: usize,
    schema: SchemaRef,
}

impl Passthrough {
    fn take(&mut self, mut rows: usize) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        while rows > 0 {
            let current = match &self.current {
                Some(batch) if self.offset < batch.num_rows() => batch,
                _ => {
                    let next = self.reader.next().ok_or_else(|| {
                        Error::Corrupt(
                            "the training join returned more rows than it was given".into(),
                        )
                    })??;
                    self.current = Some(next);
                    self.offset = 0;
                    continue;
                }
            };
            let take = rows.min(current.num_rows() - self.offset);
            parts.push(current.slice(self.offset, take));
            self.offset += take;
            rows -= take;
        }
        Ok(match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => concat_batches(&self.schema, &parts)?,
        })
    }
}
