//! The rows of a Parquet set as one SQL relation: its data files and its memtable tables.

use std::sync::Arc;

use featherstore_core::{FeatureSetSpec, FeatureType};

use crate::query::sql::{self, ident};
use crate::wal::memtable::MemTable;

/// `SELECT` of the stored rows of some data files and memtable tables, in the storage column
/// order of `spec`. Files and tables written under an earlier version of the set lack the
/// features added since: columns are matched by name (`union_by_name`, `UNION ALL BY NAME`
/// after a typed empty row set holding every column), so those read as null and nothing on
/// disk is rewritten. Columns a later version added are left out.
///
/// `without_ingest_times`: files written before ingest times were stored, and the time (UTC
/// µs) their rows read as ingested at.
pub(super) fn select_rows(
    spec: &FeatureSetSpec,
    files: &[&str],
    without_ingest_times: Option<(&[&str], i64)>,
    tables: &[Arc<MemTable>],
) -> String {
    let schema = sql::storage_schema(spec);
    let typed_nulls: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "CAST(NULL AS {}) AS {}",
                sql::storage_column_sql_type(spec, f.name()),
                ident(f.name())
            )
        })
        .collect();
    let mut sources = vec![format!("SELECT {} WHERE false", typed_nulls.join(", "))];
    if !files.is_empty() {
        sources.push(format!("SELECT * FROM {}", sql::read_parquet(files)));
    }
    if let Some((files, ingested_at)) = without_ingest_times.filter(|(f, _)| !f.is_empty()) {
        sources.push(format!(
            "SELECT *, make_timestamp({ingested_at}::BIGINT) AS {} FROM {}",
            ident(sql::INGESTED_AT_COLUMN),
            sql::read_parquet(files)
        ));
    }
    sources.extend(tables.iter().filter_map(|t| t.select_now()));
    // Parquet has no fixed-size list: embeddings come back as variable lists (`FLOAT[]`) and
    // are cast back to the memtable's `FLOAT[N]`.
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let column = ident(f.name());
            match spec
                .feature(f.name())
                .map(|(_, feature)| feature.feature_type)
            {
                Some(t @ (FeatureType::Float32Vector(_) | FeatureType::Float64Vector(_))) => {
                    format!("CAST({column} AS {}) AS {column}", sql::feature_sql_type(t))
                }
                _ => column,
            }
        })
        .collect();
    format!(
        "SELECT {} FROM ({})",
        columns.join(", "),
        sources.join(" UNION ALL BY NAME ")
    )
}
