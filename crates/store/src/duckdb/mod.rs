//! The DuckDB backend: one database file; a table per feature set, a table of specs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use featherstore_core::FeatureSetSpec;
use parking_lot::Mutex;

use crate::offline::{OfflineStore, RelationWork};
use crate::query::sql::{self, ident, SEQ_COLUMN};
use crate::query::{ConnectionPool, EngineSettings, PooledConnection, Purpose};
use crate::types::StorageStats;
use crate::{Error, Result};

const SPECS_TABLE: &str = "featherstore_specs";
/// Every version of every spec, the current one included (its copy in `SPECS_TABLE` is what
/// startup loads).
const VERSIONS_TABLE: &str = "featherstore_spec_versions";

pub struct DuckDbStore {
    /// The database file; DuckDB keeps its write-ahead log beside it (`{path}.wal`).
    path: PathBuf,
    pool: ConnectionPool,
    /// Next ingest sequence per set, loaded from the table on first append.
    next_seq: Mutex<HashMap<String, i64>>,
}

fn table(set: &str) -> String {
    format!("fs_{set}")
}

impl DuckDbStore {
    pub fn open(path: &Path, settings: &EngineSettings) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        let pool = ConnectionPool::open(Some(path), settings)?;
        pool.get(Purpose::Write)?.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {SPECS_TABLE} (name VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL);
             CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (name VARCHAR NOT NULL, version BIGINT NOT NULL,
                 spec VARCHAR NOT NULL, PRIMARY KEY (name, version))"
        ))?;
        Ok(DuckDbStore {
            path: path.to_path_buf(),
            pool,
            next_seq: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `work` in one transaction: committed (and so durable) if it succeeds, rolled
    /// back whole otherwise.
    fn transaction<T>(&self, work: impl FnOnce(&PooledConnection<'_>) -> Result<T>) -> Result<T> {
        let conn = self.pool.get(Purpose::Write)?;
        conn.execute_batch("BEGIN TRANSACTION")?;
        match work(&conn) {
            Ok(value) => {
                conn.execute_batch("COMMIT")?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %rollback, "rollback failed");
                }
                Err(e)
            }
        }
    }

    fn first_seq(&self, conn: &PooledConnection<'_>, set: &str, rows: i64) -> Result<i64> {
        let mut next = self.next_seq.lock();
        let first = match next.get(set) {
            Some(seq) => *seq,
            None => conn.query_row(
                &format!(
                    "SELECT coalesce(max({}) + 1, 0) FROM {}",
                    ident(SEQ_COLUMN),
                    ident(&table(set))
                ),
                [],
                |row| row.get::<_, i64>(0),
            )?,
        };
        next.insert(set.to_string(), first + rows);
        Ok(first)
    }
}

fn parse_spec(name: &str, json: &str) -> Result<FeatureSetSpec> {
    serde_json::from_str(json).map_err(|e| {
        Error::Corrupt(format!(
            "stored spec of feature set {name:?} is unreadable: {e}"
        ))
    })
}

/// Records a version of a spec; one already recorded is left as it is.
fn insert_version(conn: &PooledConnection<'_>, spec: &FeatureSetSpec) -> Result<()> {
    let json = serde_json::to_string(spec).expect("specs serialize");
    let version = i64::try_from(spec.version.unwrap_or(1)).unwrap_or(i64::MAX);
    conn.execute(
        &format!("INSERT OR IGNORE INTO {VERSIONS_TABLE} VALUES (?, ?, ?)"),
        duckdb::params![spec.name, version, json],
    )?;
    Ok(())
}

impl OfflineStore for DuckDbStore {
    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>> {
        let conn = self.pool.get(Purpose::Read)?;
        let mut statement = conn.prepare(&format!(
            "SELECT name, spec FROM {SPECS_TABLE} ORDER BY name"
        ))?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut specs = Vec::new();
        for row in rows {
            let (name, json) = row?;
            specs.push(parse_spec(&name, &json)?);
        }
        Ok(specs)
    }

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        let json = serde_json::to_string(spec).expect("specs serialize");
        self.transaction(|conn| {
            conn.execute_batch(&sql::create_table(spec, &table(&spec.name)))?;
            conn.execute(
                &format!("INSERT INTO {SPECS_TABLE} VALUES (?, ?)"),
                [&spec.name, &json],
            )?;
            insert_version(conn, spec)
        })
    }

    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        let json = serde_json::to_string(new).expect("specs serialize");
        let table = ident(&table(&new.name));
        self.transaction(|conn| {
            for feature in &new.features {
                if old.feature(&feature.name).is_none() {
                    conn.execute_batch(&format!(
                        "ALTER TABLE {table} ADD COLUMN {} {}",
                        ident(&feature.name),
                        sql::feature_sql_type(feature.feature_type)
                    ))?;
                }
            }
            conn.execute(
                &format!("UPDATE {SPECS_TABLE} SET spec = ? WHERE name = ?"),
                [&json, &new.name],
            )?;
            // A set created before versions were kept gets its previous version recorded now.
            insert_version(conn, old)?;
            insert_version(conn, new)
        })
    }

    fn spec_versions(&self, current: &FeatureSetSpec) -> Result<Vec<FeatureSetSpec>> {
        let conn = self.pool.get(Purpose::Read)?;
        let mut statement = conn.prepare(&format!(
            "SELECT spec FROM {VERSIONS_TABLE} WHERE name = ? ORDER BY version"
        ))?;
        let rows = statement.query_map([&current.name], |row| row.get::<_, String>(0))?;
        let mut versions = Vec::new();
        for json in rows {
            versions.push(parse_spec(&current.name, &json?)?);
        }
        if versions.last().map(|v| v.version) != Some(current.version) {
            versions.push(current.clone());
        }
        Ok(versions)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.transaction(|conn| {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(&table(name))))?;
            conn.execute(&format!("DELETE FROM {SPECS_TABLE} WHERE name = ?"), [name])?;
            conn.execute(
                &format!("DELETE FROM {VERSIONS_TABLE} WHERE name = ?"),
                [name],
            )?;
            Ok(())
        })?;
        self.next_seq.lock().remove(name);
        Ok(())
    }

    fn append(&self, spec: &FeatureSetSpec, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let rows = batch.num_rows() as i64;
        let result = self.transaction(|conn| {
            let first = self.first_seq(conn, &spec.name, rows)?;
            let stored = sql::to_storage_batch(spec, batch, first)?;
            // By name: columns added by `update` come last in the table.
            let columns: Vec<&str> = stored
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            let mut appender = conn.appender_with_columns(&table(&spec.name), &columns)?;
            appender.append_record_batch(stored)?;
            appender.flush()?;
            Ok(())
        });
        if result.is_err() {
            // The sequence numbers handed out were not used; reload them on the next append.
            self.next_seq.lock().remove(&spec.name);
        }
        result
    }

    /// The database file and its write-ahead log: every set lives in them together.
    fn storage_total(&self) -> Result<Option<StorageStats>> {
        let mut wal = self.path.clone().into_os_string();
        wal.push(".wal");
        let mut total = StorageStats::default();
        for file in [self.path.clone(), PathBuf::from(wal)] {
            match std::fs::metadata(&file) {
                Ok(meta) => {
                    total.bytes += meta.len();
                    total.files += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(format!("reading the size of {}", file.display()))(e))
                }
            }
        }
        Ok(Some(total))
    }

    fn pool(&self) -> &ConnectionPool {
        &self.pool
    }

    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork<'_>) -> Result<()> {
        // Each statement reads a consistent snapshot (DuckDB is MVCC); sets are tables.
        let relations: Vec<String> = specs.iter().map(|s| ident(&table(&s.name))).collect();
        let conn = self.pool.get(Purpose::Read)?;
        work(&conn, &relations)
    }
}
