//! SQL over a relation of stored rows. A relation holds the canonical columns (event times as
//! UTC `TIMESTAMP`) plus [`SEQ_COLUMN`], the ingest order that breaks event-time ties, and
//! [`INGESTED_AT_COLUMN`], the server time each row was stored.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use duckdb::Connection;
use featherstore_core::{EntityKeys, EntityType, FeatureSetSpec, FeatureType};

use crate::types::{BatchSink, HistoryQuery, IngestView};
use crate::Result;

/// Ingest order of a row: increasing across a set's appends, and within a batch by row.
pub(crate) const SEQ_COLUMN: &str = "_seq";

/// Server time (UTC `TIMESTAMP`) at which a row's batch was stored: one value per batch,
/// never decreasing within a set (see `IngestClock`).
pub(crate) const INGESTED_AT_COLUMN: &str = "_ingested_at";

/// The name history gives the ingest time column (`"with_ingest_time": true`).
pub const INGESTED_AT_OUTPUT: &str = "ingested_at";

/// A double-quoted SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted SQL string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The DuckDB type of a feature's values: the one mapping of feature types to SQL types.
pub(crate) fn feature_sql_type(t: FeatureType) -> String {
    match t {
        FeatureType::Bool => "BOOLEAN".into(),
        FeatureType::Int32 => "INTEGER".into(),
        FeatureType::Int64 => "BIGINT".into(),
        FeatureType::Float32 => "FLOAT".into(),
        FeatureType::Float64 => "DOUBLE".into(),
        FeatureType::String => "VARCHAR".into(),
        FeatureType::Binary => "BLOB".into(),
        FeatureType::Date => "DATE".into(),
        FeatureType::Timestamp => "TIMESTAMP".into(),
        FeatureType::Float32Vector(n) => format!("FLOAT[{n}]"),
        FeatureType::Float64Vector(n) => format!("DOUBLE[{n}]"),
    }
}

/// The DuckDB type of an entity key.
pub(crate) fn entity_sql_type(t: EntityType) -> &'static str {
    match t {
        EntityType::String => "VARCHAR",
        EntityType::Int64 => "BIGINT",
    }
}

/// `CREATE TABLE` for a set's stored rows, columns in storage order.
pub(crate) fn create_table(spec: &FeatureSetSpec, table: &str) -> String {
    let mut sql = format!(
        "CREATE TABLE {} ({} {} NOT NULL",
        ident(table),
        ident(&spec.entity.name),
        entity_sql_type(spec.entity.entity_type)
    );
    for f in &spec.features {
        let _ = write!(
            sql,
            ", {} {}",
            ident(&f.name),
            feature_sql_type(f.feature_type)
        );
    }
    let _ = write!(
        sql,
        ", {} TIMESTAMP NOT NULL, {} TIMESTAMP NOT NULL, {} BIGINT NOT NULL)",
        ident(&spec.timestamp),
        ident(INGESTED_AT_COLUMN),
        ident(SEQ_COLUMN)
    );
    sql
}

/// `read_parquet` of data files, their columns matched by name.
pub(crate) fn read_parquet(files: &[&str]) -> String {
    let files: Vec<String> = files.iter().map(|f| literal(f)).collect();
    // Without `hive_partitioning = false` DuckDB would add columns from partition paths.
    format!(
        "read_parquet([{}], hive_partitioning = false, union_by_name = true)",
        files.join(", ")
    )
}

/// The SQL type of a storage column of `spec`.
pub(crate) fn storage_column_sql_type(spec: &FeatureSetSpec, column: &str) -> String {
    if column == spec.entity.name {
        entity_sql_type(spec.entity.entity_type).to_string()
    } else if column == spec.timestamp || column == INGESTED_AT_COLUMN {
        "TIMESTAMP".to_string()
    } else if let Some((_, feature)) = spec.feature(column) {
        feature_sql_type(feature.feature_type)
    } else {
        // `_seq` (`SEQ_COLUMN`), the one other storage column; a storage column added later
        // needs its type here.
        "BIGINT".to_string()
    }
}

/// The Arrow schema of stored rows: canonical columns with zone-less timestamps, then the
/// ingest time and the ingest sequence (last, where versions before ingest times had it too).
pub(crate) fn storage_schema(spec: &FeatureSetSpec) -> SchemaRef {
    let canonical = spec.arrow_schema();
    let mut fields: Vec<Field> = canonical
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(strip_zone(f.data_type())))
        .collect();
    fields.push(Field::new(
        INGESTED_AT_COLUMN,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        false,
    ));
    fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

fn strip_zone(t: &DataType) -> DataType {
    match t {
        DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, None),
        other => other.clone(),
    }
}

/// A canonical batch as stored: timestamps without zone (DuckDB `TIMESTAMP` is UTC here),
/// `_seq` numbering its rows from `first_seq`, and `ingested_at` (UTC microseconds) on every
/// row. No values are copied but the sequence and the ingest time.
pub(crate) fn to_storage_batch(
    spec: &FeatureSetSpec,
    batch: &RecordBatch,
    first_seq: i64,
    ingested_at: i64,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 2);
    for column in batch.columns() {
        columns.push(match column.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => with_zone(column, None),
            _ => column.clone(),
        });
    }
    let n = batch.num_rows() as i64;
    columns.push(ingest_time_column(ingested_at, batch.num_rows()));
    columns.push(Arc::new(Int64Array::from_iter_values(
        first_seq..first_seq + n,
    )));
    Ok(RecordBatch::try_new(storage_schema(spec), columns)?)
}

/// [`to_storage_batch`] of each non-empty batch of one append, their rows numbered on from
/// `first_seq` in order, as one batch of them all would be.
pub(crate) fn to_storage_batches(
    spec: &FeatureSetSpec,
    batches: &[RecordBatch],
    first_seq: i64,
    ingested_at: i64,
) -> Result<Vec<RecordBatch>> {
    let mut next_seq = first_seq;
    batches
        .iter()
        .filter(|batch| batch.num_rows() > 0)
        .map(|batch| {
            let stored = to_storage_batch(spec, batch, next_seq, ingested_at);
            next_seq += batch.num_rows() as i64;
            stored
        })
        .collect()
}

/// `rows` copies of one ingest time, as stored.
pub(crate) fn ingest_time_column(ingested_at: i64, rows: usize) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_value(ingested_at, rows))
}

/// The same microsecond instants under another zone label (no chrono-tz needed).
fn with_zone(column: &ArrayRef, zone: Option<Arc<str>>) -> ArrayRef {
    Arc::new(
        column
            .as_primitive::<TimestampMicrosecondType>()
            .clone()
            .with_timezone_opt(zone),
    )
}

fn select_list(spec: &FeatureSetSpec, features: &[usize]) -> String {
    let mut columns = vec![ident(&spec.entity.name)];
    columns.extend(features.iter().map(|&i| ident(&spec.features[i].name)));
    columns.push(ident(&spec.timestamp));
    columns.join(", ")
}

fn entity_list(keys: &EntityKeys) -> String {
    match keys {
        EntityKeys::String(keys) => keys
            .iter()
            .map(|k| literal(k))
            .collect::<Vec<_>>()
            .join(", "),
        EntityKeys::Int64(keys) => keys
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// History rows of `source`, ordered by entity, event time, ingest order.
pub(crate) fn history(
    spec: &FeatureSetSpec,
    source: &str,
    query: &HistoryQuery,
    view: &IngestView,
) -> String {
    let ts = ident(&spec.timestamp);
    let entity = ident(&spec.entity.name);
    let mut conditions = Vec::new();
    if let Some(keys) = &query.entities {
        conditions.push(if keys.is_empty() {
            "false".to_string()
        } else {
            format!("{entity} IN ({})", entity_list(keys))
        });
    }
    if let Some(start) = query.start {
        conditions.push(format!("{ts} >= make_timestamp({start}::BIGINT)"));
    }
    if let Some(end) = query.end {
        conditions.push(format!("{ts} < make_timestamp({end}::BIGINT)"));
    }
    if let Some(before) = view.ingested_before {
        conditions.push(format!(
            "{} < make_timestamp({before}::BIGINT)",
            ident(INGESTED_AT_COLUMN)
        ));
    }
    let mut select = select_list(spec, &query.features);
    if view.with_ingest_time {
        let _ = write!(
            select,
            ", {} AS {}",
            ident(INGESTED_AT_COLUMN),
            ident(INGESTED_AT_OUTPUT)
        );
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT {select} FROM {source}{filter} ORDER BY {entity}, {ts}, {}",
        ident(SEQ_COLUMN)
    )
}

/// One row per entity: the greatest event time, ties to the greatest ingest sequence; only
/// among rows ingested after sequence `after` when given.
pub(crate) fn latest(spec: &FeatureSetSpec, source: &str, after: Option<i64>) -> String {
    let all: Vec<usize> = (0..spec.features.len()).collect();
    let filter = after
        .map(|seq| format!(" WHERE {} > {seq}", ident(SEQ_COLUMN)))
        .unwrap_or_default();
    format!(
        "SELECT {} FROM {source}{filter} QUALIFY row_number() OVER (PARTITION BY {} ORDER BY {} DESC, {} DESC) = 1",
        select_list(spec, &all),
        ident(&spec.entity.name),
        ident(&spec.timestamp),
        ident(SEQ_COLUMN)
    )
}

/// The greatest ingest sequence of a set's rows (NULL when it has none).
pub(crate) fn max_seq(source: &str) -> String {
    format!("SELECT max({}) FROM {source}", ident(SEQ_COLUMN))
}

/// The greatest ingest time of a set's rows (UTC microseconds; NULL when it has none).
pub(crate) fn max_ingested_at(source: &str) -> String {
    format!(
        "SELECT epoch_us(max({})) FROM {source}",
        ident(INGESTED_AT_COLUMN)
    )
}

pub(crate) fn stats(spec: &FeatureSetSpec, source: &str) -> String {
    format!(
        "SELECT count(*)::BIGINT, count(DISTINCT {})::BIGINT, epoch_us(max({})) FROM {source}",
        ident(&spec.entity.name),
        ident(&spec.timestamp)
    )
}

/// Runs `sql` and hands each result batch, conformed to `schema`, to `sink` as DuckDB
/// produces it: the result is never collected whole.
pub(crate) fn stream_query(
    conn: &Connection,
    sql: &str,
    schema: &SchemaRef,
    sink: BatchSink<'_>,
) -> Result<()> {
    let mut statement = conn.prepare(sql)?;
    // The iterator `stream_arrow` returns panics on fetch errors; `step` reports them instead.
    drop(statement.stream_arrow([])?);
    while let Some(chunk) = statement.step()? {
        let batch = RecordBatch::from(&chunk);
        if batch.num_rows() > 0 {
            sink(conform(&batch, schema)?)?;
        }
    }
    Ok(())
}

/// Casts a DuckDB result batch to the expected schema (time zones, list field names).
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            match (column.data_type(), field.data_type()) {
                (from, to) if from == to => Ok(column.clone()),
                // Same instants, only the zone label differs: relabel, never shift.
                (
                    DataType::Timestamp(TimeUnit::Microsecond, _),
                    DataType::Timestamp(TimeUnit::Microsecond, zone),
                ) => Ok(with_zone(column, zone.clone())),
                (_, to) => cast(column, to),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn history_filters() {
        let spec = FeatureSetSpec::from_json(
            br#"{"name": "s", "entity": {"name": "id", "type": "string"}, "features": [{"name": "a", "type": "int64"}]}"#,
        )
        .unwrap();
        let query = HistoryQuery {
            entities: Some(EntityKeys::String(vec!["x'y".into()])),
            start: Some(5),
            end: None,
            features: vec![0],
        };
        let sql = history(&spec, "t", &query, &IngestView::default());
        assert!(sql.contains("\"id\" IN ('x''y')"), "{sql}");
        assert!(sql.contains(">= make_timestamp(5::BIGINT)"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY \"id\", \"event_timestamp\", \"_seq\""),
            "{sql}"
        );
    }
}
