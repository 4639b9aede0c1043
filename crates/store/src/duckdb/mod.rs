//! The DuckDB backend: one database file; a table per feature set, a table of specs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use featherstore_core::time::now_micros;
use featherstore_core::{FeatureServiceSpec, FeatureSetSpec};
use parking_lot::Mutex;

use crate::offline::{OfflineStore, Publish, RelationWork};
use crate::query::sql::{self, ident, INGESTED_AT_COLUMN, SEQ_COLUMN};
use crate::query::{ConnectionPool, EngineSettings, PooledConnection, Purpose};
use crate::types::StorageStats;
use crate::{Error, Result};

const SPECS_TABLE: &str = "featherstore_specs";
/// Every version of every spec, the current one included (its copy in `SPECS_TABLE` is what
/// startup loads).
const VERSIONS_TABLE: &str = "featherstore_spec_versions";
/// Feature services: name and JSON document.
const SERVICES_TABLE: &str = "featherstore_services";

pub struct DuckDbStore {
    /// The database file; DuckDB keeps its write-ahead log beside it (`{path}.wal`).
    path: PathBuf,
    pool: ConnectionPool,
    /// Where each set's appends stand, loaded from its table on first append.
    cursors: Mutex<HashMap<String, AppendCursor>>,
}

/// The next ingest sequence of a set and its latest ingest time.
#[derive(Debug, Clone, Copy)]
struct AppendCursor {
    next_seq: i64,
    last_ingested_at: i64,
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
                 spec VARCHAR NOT NULL, PRIMARY KEY (name, version));
             CREATE TABLE IF NOT EXISTS {SERVICES_TABLE} (name VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL)"
        ))?;
        let store = DuckDbStore {
            path: path.to_path_buf(),
            pool,
            cursors: Mutex::new(HashMap::new()),
        };
        store.add_ingest_times(now_micros())?;
        Ok(store)
    }

    /// Gives the tables of a database written before ingest times their `_ingested_at`
    /// column, every existing row reading as ingested at `first_open` (now): each of them was
    /// stored by then, and no earlier time is provable, so no join or history "as known at" an
    /// earlier time can see them too early. Recorded once, durably, in the rows. A table is
    /// rebuilt (in one transaction) rather than altered: the column goes before `_seq`, where
    /// appends put it, and `ADD COLUMN` could only put it last.
    fn add_ingest_times(&self, first_open: i64) -> Result<()> {
        let legacy: Vec<String> = {
            let conn = self.pool.get(Purpose::Read)?;
            let mut statement = conn.prepare(&format!(
                "SELECT s.spec FROM {SPECS_TABLE} s WHERE NOT EXISTS (SELECT 1 FROM duckdb_columns() c \
                 WHERE c.table_name = 'fs_' || s.name AND c.column_name = ?)"
            ))?;
            let specs = statement.query_map([INGESTED_AT_COLUMN], |row| row.get::<_, String>(0))?;
            specs.collect::<std::result::Result<_, _>>()?
        };
        for json in legacy {
            let spec: FeatureSetSpec = serde_json::from_str(&json)
                .map_err(|e| Error::Corrupt(format!("a stored spec is unreadable: {e}")))?;
            let name = table(&spec.name);
            let upgraded = format!("{name}_with_ingest_times");
            let mut columns = vec![ident(&spec.entity.name)];
            columns.extend(spec.features.iter().map(|f| ident(&f.name)));
            columns.push(ident(&spec.timestamp));
            let columns = columns.join(", ");
            self.transaction(|conn| {
                conn.execute_batch(&sql::create_table(&spec, &upgraded))?;
                conn.execute_batch(&format!(
                    "INSERT INTO {new} SELECT {columns}, make_timestamp({first_open}::BIGINT), {seq} FROM {old}; \
                     DROP TABLE {old}; ALTER TABLE {new} RENAME TO {old};",
                    new = ident(&upgraded),
                    old = ident(&name),
                    seq = ident(SEQ_COLUMN),
                ))?;
                Ok(())
            })?;
            tracing::info!(feature_set = %spec.name, "rows stored without ingest times read as ingested now");
        }
        Ok(())
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

    /// The first ingest sequence and the ingest time of `rows` new rows of `set`, which
    /// would be ingested at `now`: never before the set's latest ingest time.
    fn take_cursor(
        &self,
        conn: &PooledConnection<'_>,
        set: &str,
        rows: i64,
        now: i64,
    ) -> Result<AppendCursor> {
        let mut cursors = self.cursors.lock();
        let current = match cursors.get(set) {
            Some(cursor) => *cursor,
            None => conn.query_row(
                &format!(
                    "SELECT coalesce(max({}) + 1, 0), coalesce(epoch_us(max({})), {}) FROM {}",
                    ident(SEQ_COLUMN),
                    ident(INGESTED_AT_COLUMN),
                    i64::MIN,
                    ident(&table(set))
                ),
                [],
                |row| {
                    Ok(AppendCursor {
                        next_seq: row.get(0)?,
                        last_ingested_at: row.get(1)?,
                    })
                },
            )?,
        };
        let taken = AppendCursor {
            next_seq: current.next_seq,
            last_ingested_at: now.max(current.last_ingested_at),
        };
        cursors.insert(
            set.to_string(),
            AppendCursor {
                next_seq: taken.next_seq + rows,
                ..taken
            },
        );
        Ok(taken)
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
        self.cursors.lock().remove(name);
        Ok(())
    }

    fn load_services(&self) -> Result<Vec<FeatureServiceSpec>> {
        let conn = self.pool.get(Purpose::Read)?;
        let mut statement = conn.prepare(&format!(
            "SELECT name, spec FROM {SERVICES_TABLE} ORDER BY name"
        ))?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut services = Vec::new();
        for row in rows {
            let (name, json) = row?;
            services.push(crate::offline::parse_service(&name, json.as_bytes())?);
        }
        Ok(services)
    }

    fn save_service(&self, service: &FeatureServiceSpec) -> Result<()> {
        let json = serde_json::to_string(service).expect("services serialize");
        self.transaction(|conn| {
            conn.execute(
                &format!("INSERT OR REPLACE INTO {SERVICES_TABLE} VALUES (?, ?)"),
                [&service.name, &json],
            )?;
            Ok(())
        })
    }

    fn delete_service(&self, name: &str) -> Result<()> {
        self.transaction(|conn| {
            conn.execute(
                &format!("DELETE FROM {SERVICES_TABLE} WHERE name = ?"),
                [name],
            )?;
            Ok(())
        })
    }

    fn append_at(&self, spec: &FeatureSetSpec, batches: &[RecordBatch], now: i64) -> Result<()> {
        self.append_publishing(spec, batches, now, &mut || Ok(()))
    }

    /// Publishes after the rows are written, before they are committed: see the trait.
    fn append_publishing(
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
        let result = self.transaction(|conn| {
            let cursor = self.take_cursor(conn, &spec.name, rows as i64, now)?;
            // By name: columns added by `update` come last in the table.
            let columns = sql::storage_schema(spec);
            let columns: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
            // One appender for every batch: DuckDB writes the rows of a transaction that fill
            // row groups straight into the table, whichever batch they came from.
            let mut appender = conn.appender_with_columns(&table(&spec.name), &columns)?;
            let stored =
                sql::to_storage_batches(spec, batches, cursor.next_seq, cursor.last_ingested_at)?;
            for batch in stored {
                appender.append_record_batch(batch)?;
            }
            appender.flush()?;
            // Inside the transaction: a failed publication rolls the rows back.
            publish()
        });
        if result.is_err() {
            // The sequence numbers handed out were not used; reload them on the next append.
            self.cursors.lock().remove(&spec.name);
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
