//! The Delta table's columns for a feature set, and the SQL that reads its data files back as
//! stored rows.
//!
//! A table holds the storage columns (`sql::storage_schema`) as any Delta reader expects them:
//! instants as Delta `timestamp` (UTC), embeddings as `array<float>` (Delta has no fixed-size
//! list), plus [`DATE_COLUMN`], the event date the table is partitioned by. Partition values
//! live in the file paths, not in the data files, so DuckDB reads the files without it.

use std::sync::Arc;

use arrow::array::{make_array, new_null_array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use featherstore_core::{FeatureSetSpec, FeatureType};

use crate::query::sql::{self, ident};
use crate::Result;

/// The partition column: the UTC date of a row's event time.
pub(super) const DATE_COLUMN: &str = "_event_date";

/// The Arrow schema FeatherStore writes to a set's Delta table.
pub(super) fn table_schema(spec: &FeatureSetSpec) -> SchemaRef {
    let mut fields: Vec<Field> = sql::storage_schema(spec)
        .fields()
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Timestamp(unit, _) => DataType::Timestamp(*unit, Some("UTC".into())),
                DataType::FixedSizeList(item, _) => DataType::List(Arc::new(Field::new(
                    "element",
                    item.data_type().clone(),
                    true,
                ))),
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(data_type)
        })
        .collect();
    fields.push(Field::new(DATE_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// A storage batch (`sql::to_storage_batch`) in the table's schema `target`, columns matched
/// by name: a column the table has and the batch lacks (added by a later version of the set
/// on another server) is null, and the event date is derived from the event time.
pub(super) fn to_table_batch(
    spec: &FeatureSetSpec,
    stored: &RecordBatch,
    target: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = target
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef> {
            let source = if field.name() == DATE_COLUMN {
                stored.column_by_name(&spec.timestamp)
            } else {
                stored.column_by_name(field.name())
            };
            Ok(match source {
                Some(column) => with_type(cast(column, field.data_type())?, field.data_type())?,
                None => new_null_array(field.data_type(), stored.num_rows()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// `array` with the data type `target` where the two differ only in the names of nested
/// fields: a cast to a list keeps the source's item name (`item`), and the table's lists name
/// theirs `element`; a batch must match its schema exactly.
fn with_type(array: ArrayRef, target: &DataType) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array);
    }
    let data = array
        .to_data()
        .into_builder()
        .data_type(target.clone())
        .build()?;
    Ok(make_array(data))
}

/// `SELECT` of the stored rows in some of a set's data files (local copies), in the storage
/// column order of `spec`. Files written under an earlier version lack the features added
/// since: after a typed empty row set, columns are matched by name, so those read as null.
/// Instants come back as UTC `TIMESTAMP` and embeddings as `FLOAT[N]`, as from the other
/// backends.
pub(super) fn select_files(spec: &FeatureSetSpec, files: &[String]) -> String {
    let schema = sql::storage_schema(spec);
    let is_instant = |name: &str| {
        name == spec.timestamp
            || name == sql::INGESTED_AT_COLUMN
            || spec
                .feature(name)
                .is_some_and(|(_, f)| f.feature_type == FeatureType::Timestamp)
    };
    let typed_nulls: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let sql_type = if is_instant(f.name()) {
                "TIMESTAMPTZ".to_string()
            } else {
                sql::storage_column_sql_type(spec, f.name())
            };
            format!("CAST(NULL AS {sql_type}) AS {}", ident(f.name()))
        })
        .collect();
    let mut sources = vec![format!("SELECT {} WHERE false", typed_nulls.join(", "))];
    if !files.is_empty() {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        sources.push(format!("SELECT * FROM {}", sql::read_parquet(&files)));
    }
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let column = ident(f.name());
            if is_instant(f.name()) {
                // The absolute instant, whatever DuckDB's session time zone.
                format!("make_timestamp(epoch_us({column})) AS {column}")
            } else if let Some((_, feature)) = spec.feature(f.name()) {
                match feature.feature_type {
                    t @ (FeatureType::Float32Vector(_) | FeatureType::Float64Vector(_)) => {
                        format!("CAST({column} AS {}) AS {column}", sql::feature_sql_type(t))
                    }
                    _ => column,
                }
            } else {
                column
            }
        })
        .collect();
    format!(
        "SELECT {} FROM ({})",
        columns.join(", "),
        sources.join(" UNION ALL BY NAME ")
    )
}
