//! Unflushed rows live in tables of an in-memory DuckDB database (the "memtable"), so reads
//! run the same SQL over them as over the Parquet files: a relation that is the union of both.

use std::sync::Arc;

use arrow::array::RecordBatch;
use duckdb::Connection;
use featherstore_core::{FeatureSetSpec, FeatureType};
use parking_lot::Mutex;

use crate::query::sql::{self, ident};
use crate::Result;

/// Names of memtable tables that no snapshot lists any more, waiting to be dropped.
pub(super) type Graveyard = Arc<Mutex<Vec<String>>>;

/// A memtable table. It is dropped from the database only once no snapshot lists it, so a
/// reader never loses a table in the middle of its work, however long that takes.
pub(super) struct MemTable {
    pub(super) name: String,
    graveyard: Graveyard,
}

impl MemTable {
    pub(super) fn create(
        conn: &Connection,
        spec: &FeatureSetSpec,
        name: String,
        graveyard: &Graveyard,
    ) -> Result<MemTable> {
        conn.execute_batch(&sql::create_table(spec, &name))?;
        Ok(MemTable {
            name,
            graveyard: graveyard.clone(),
        })
    }
}

impl Drop for MemTable {
    fn drop(&mut self) {
        // Dropping needs a pooled connection, which the thread releasing the last snapshot
        // may itself be holding: leave it to `drop_dead_tables`.
        self.graveyard.lock().push(std::mem::take(&mut self.name));
    }
}

/// Drops the tables that no snapshot lists any more.
pub(super) fn drop_dead_tables(conn: &Connection, graveyard: &Graveyard) {
    let dead = std::mem::take(&mut *graveyard.lock());
    for table in dead {
        if let Err(e) = conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(&table))) {
            tracing::warn!(%table, error = %e, "could not drop a memtable table");
        }
    }
}

/// Appends a storage batch in one transaction: all of its rows become visible, or none.
/// `publish` runs before the commit; its error rolls the rows back.
pub(super) fn insert(
    conn: &Connection,
    table: &str,
    batch: RecordBatch,
    publish: crate::offline::Publish<'_>,
) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let appended = (|| -> Result<()> {
        let mut appender = conn.appender(table)?;
        appender.append_record_batch(batch)?;
        appender.flush()?;
        publish()
    })();
    match appended {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %rollback, "memtable rollback failed");
            }
            Err(e)
        }
    }
}

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
    sources.extend(
        tables
            .iter()
            .map(|t| format!("SELECT * FROM {}", ident(&t.name))),
    );
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
