//! Unflushed rows live in tables of an in-memory DuckDB database (the "memtable"), so reads
//! run the same SQL over them as over the Parquet files: a relation that is the union of both.

use std::sync::Arc;

use arrow::array::RecordBatch;
use duckdb::Connection;
use featherstore_core::{FeatureSetSpec, FeatureType};
use parking_lot::Mutex;

use crate::query::sql::{self, ident, literal};
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
pub(super) fn insert(conn: &Connection, table: &str, batch: RecordBatch) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let appended = (|| -> Result<()> {
        let mut appender = conn.appender(table)?;
        appender.append_record_batch(batch)?;
        appender.flush()?;
        Ok(())
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

/// `SELECT` of the rows of some memtable tables, in storage column order.
pub(super) fn select_tables(tables: &[Arc<MemTable>]) -> String {
    tables
        .iter()
        .map(|t| format!("SELECT * FROM {}", ident(&t.name)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// `SELECT` of the rows of some data files, typed as the memtable's columns.
pub(super) fn select_files<'a>(
    spec: &FeatureSetSpec,
    files: impl IntoIterator<Item = &'a str>,
) -> String {
    select_file_group(spec, files, None)
}

/// [`select_files`] of files written before ingest times, which lack the `_ingested_at`
/// column: their rows read as ingested at `ingested_at` (UTC µs).
pub(super) fn select_files_without_ingest_times<'a>(
    spec: &FeatureSetSpec,
    files: impl IntoIterator<Item = &'a str>,
    ingested_at: i64,
) -> String {
    // Placed before `_seq`, as stored since.
    let seq = ident(sql::SEQ_COLUMN);
    let columns = format!(
        "make_timestamp({ingested_at}::BIGINT) AS {}, {seq}",
        ident(sql::INGESTED_AT_COLUMN)
    );
    select_file_group(spec, files, Some(columns))
}

/// `last`: columns of files without ingest times that follow the others (`_seq` is left out
/// of `*` then, to come after the ingest time).
fn select_file_group<'a>(
    spec: &FeatureSetSpec,
    files: impl IntoIterator<Item = &'a str>,
    ingested_at: Option<String>,
) -> String {
    // Parquet has no fixed-size list: embeddings come back as variable lists (`FLOAT[]`) and
    // are cast back to the memtable's `FLOAT[N]` so both sides of a union agree.
    let casts: Vec<String> = spec
        .features
        .iter()
        .filter_map(|f| {
            let array = match f.feature_type {
                FeatureType::Float32Vector(_) | FeatureType::Float64Vector(_) => {
                    sql::feature_sql_type(f.feature_type)
                }
                _ => return None,
            };
            let column = ident(&f.name);
            Some(format!("CAST({column} AS {array}) AS {column}"))
        })
        .collect();
    let exclude = match ingested_at {
        Some(_) => format!(" EXCLUDE ({})", ident(sql::SEQ_COLUMN)),
        None => String::new(),
    };
    let mut columns = if casts.is_empty() {
        format!("*{exclude}")
    } else {
        format!("*{exclude} REPLACE ({})", casts.join(", "))
    };
    if let Some(last) = ingested_at {
        columns = format!("{columns}, {last}");
    }
    let files: Vec<String> = files.into_iter().map(literal).collect();
    // Without `hive_partitioning = false` DuckDB would add a `date` column from the paths.
    format!(
        "SELECT {columns} FROM read_parquet([{}], hive_partitioning = false)",
        files.join(", ")
    )
}
