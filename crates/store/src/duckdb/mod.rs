//! The DuckDB backend: one database file; a table per feature set, a table of specs.
//!
//! ```text
//! {path}                  the database: sets' tables, specs, services, watermarks
//! {path}.wal              DuckDB's own write-ahead log
//! {path}.log/{set}/NNN….arrows   acknowledged appends not yet in the set's table
//! ```
//!
//! An append is durable once its batches are in the set's log (fsynced, see `wal`); reads see
//! them at once through the memtable, and a background thread applies them to the table in
//! large transactions (see `apply`). Appending to DuckDB on every request made ingest wait on
//! DuckDB's commit, its statistics and its page writes: about a third of the rate the log
//! takes.

mod apply;
mod pending;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use duckdb::OptionalExt;
use featherstore_core::time::now_micros;
use featherstore_core::{FeatureServiceSpec, FeatureSetSpec};
use parking_lot::RwLock;

use self::pending::{MemTables, PendingSet};
use crate::background::{Background, BackgroundThread};
use crate::durable::{create_dir_durably, list_dir};
use crate::offline::{OfflineStore, Publish, RelationWork};
use crate::query::sql::{self, ident, INGESTED_AT_COLUMN, SEQ_COLUMN};
use crate::query::{reads, ConnectionPool, EngineSettings, PooledConnection, Purpose};
use crate::types::StorageStats;
use crate::wal::log;
use crate::wal::memtable::{self, MemTable};
use crate::wal::{self, StagedSet};
use crate::{Error, Result};

const SPECS_TABLE: &str = "featherstore_specs";
/// Every version of every spec, the current one included (its copy in `SPECS_TABLE` is what
/// startup loads).
const VERSIONS_TABLE: &str = "featherstore_spec_versions";
/// Feature services: name and JSON document.
const SERVICES_TABLE: &str = "featherstore_services";
/// Per set, the greatest `_seq` in its table (see `pending`).
const APPLIED_TABLE: &str = "featherstore_applied";

/// When a set's logged rows are applied to its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuckDbOptions {
    /// Once this many wait...
    pub apply_rows: usize,
    /// ...or once the oldest has waited this long.
    pub apply_interval: Duration,
}

impl Default for DuckDbOptions {
    /// Large enough that DuckDB writes whole row groups, soon enough that reads seldom scan
    /// many rows in the memtable.
    fn default() -> Self {
        DuckDbOptions {
            apply_rows: 1 << 20,
            apply_interval: Duration::from_secs(1),
        }
    }
}

impl DuckDbOptions {
    fn validate(&self) -> Result<()> {
        let problem = if self.apply_rows == 0 {
            "apply_rows must be at least 1"
        } else if self.apply_interval.is_zero() {
            "apply_interval must be positive"
        } else {
            return Ok(());
        };
        Err(Error::Domain(featherstore_core::Error::invalid(format!(
            "duckdb options: {problem}"
        ))))
    }
}

pub struct DuckDbStore {
    inner: Arc<Inner>,
    /// The background apply thread.
    _applier: BackgroundThread<Inner>,
}

struct Inner {
    /// The database file; DuckDB keeps its write-ahead log beside it (`{path}.wal`).
    path: PathBuf,
    /// `{path}.log`: a directory per set holding its log.
    log_root: PathBuf,
    pool: ConnectionPool,
    options: DuckDbOptions,
    sets: RwLock<HashMap<String, Arc<PendingSet>>>,
    /// Woken when an append crosses `apply_rows`.
    background: Background,
}

fn table(set: &str) -> String {
    format!("fs_{set}")
}

/// The stored watermark of set `name`; `None` for a set without one (a database written
/// before logs).
fn watermark(conn: &PooledConnection<'_>, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            &format!("SELECT seq FROM {APPLIED_TABLE} WHERE name = ?"),
            [name],
            |row| row.get(0),
        )
        .optional()?)
}

/// Records `seq` as the watermark of set `name`.
fn set_watermark(conn: &PooledConnection<'_>, name: &str, seq: i64) -> Result<()> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO {APPLIED_TABLE} VALUES (?, ?)"),
        duckdb::params![name, seq],
    )?;
    Ok(())
}

/// Runs `work` in one transaction on a write connection of `pool`: committed (and so
/// durable) if it succeeds, rolled back whole otherwise.
fn transaction<T>(
    pool: &ConnectionPool,
    work: impl FnOnce(&PooledConnection<'_>) -> Result<T>,
) -> Result<T> {
    let conn = pool.get(Purpose::Write)?;
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

impl DuckDbStore {
    /// [`open_with`](Self::open_with) the default options.
    pub fn open(path: &Path, settings: &EngineSettings) -> Result<Self> {
        Self::open_with(path, DuckDbOptions::default(), settings)
    }

    /// Opens (creating it if needed) the database at `path`: upgrades tables written by
    /// earlier versions, replays every set's log and starts the background apply thread.
    pub fn open_with(
        path: &Path,
        options: DuckDbOptions,
        settings: &EngineSettings,
    ) -> Result<Self> {
        options.validate()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        let pool = ConnectionPool::open(Some(path), settings)?;
        {
            let conn = pool.get(Purpose::Write)?;
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {SPECS_TABLE} (name VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL);
                 CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (name VARCHAR NOT NULL, version BIGINT NOT NULL,
                     spec VARCHAR NOT NULL, PRIMARY KEY (name, version));
                 CREATE TABLE IF NOT EXISTS {SERVICES_TABLE} (name VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL);
                 CREATE TABLE IF NOT EXISTS {APPLIED_TABLE} (name VARCHAR PRIMARY KEY, seq BIGINT NOT NULL)"
            ))?;
            memtable::register(&conn)?;
        }
        let mut log_root = path.as_os_str().to_owned();
        log_root.push(".log");
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            log_root: PathBuf::from(log_root),
            pool,
            options,
            sets: RwLock::new(HashMap::new()),
            background: Background::default(),
        });
        inner.add_ingest_times(now_micros())?;
        inner.load_sets()?;
        let applier = BackgroundThread::spawn(
            "duckdb-apply",
            &inner,
            |inner| &inner.background,
            Inner::run_applies,
        )?;
        Ok(DuckDbStore {
            inner,
            _applier: applier,
        })
    }

    /// Applies every set's logged rows to its table now (e.g. before a backup or a planned
    /// shutdown, to make the next start-up replay nothing).
    pub fn apply(&self) -> Result<()> {
        self.inner
            .all_sets()
            .iter()
            .try_for_each(|set| apply::apply_set(&self.inner.pool, set))
    }
}

impl Inner {
    /// Opens every stored set's log, and removes the logs of sets that are gone (a delete
    /// interrupted after its commit).
    fn load_sets(&self) -> Result<()> {
        create_dir_durably(&self.log_root)?;
        let specs = self.load_specs()?;
        for entry in list_dir(&self.log_root)? {
            let name = entry.file_name();
            if !specs.iter().any(|s| name.to_str() == Some(s.name.as_str())) {
                remove_log(&entry.path());
            }
        }
        let mut sets = self.sets.write();
        for spec in specs {
            let applied = self.watermark_at_open(&spec.name)?;
            let name = spec.name.clone();
            let set = PendingSet::open(spec, self.log_root.join(&name), applied)?;
            // Recovered from the stored rows, so that ingest times never go back, even when
            // the clock has since the last run.
            let (relation, _memtables) = set.relation();
            let latest = reads::max_ingested_at(&*self.pool.get(Purpose::Read)?, &relation)?;
            set.ingest.lock().last_ingested_at = latest.unwrap_or(i64::MIN);
            sets.insert(name, Arc::new(set));
        }
        Ok(())
    }

    /// The greatest `_seq` in the table of set `name`: its watermark, recorded first from
    /// the table itself for a database written before logs.
    fn watermark_at_open(&self, name: &str) -> Result<i64> {
        transaction(&self.pool, |conn| {
            if let Some(seq) = watermark(conn, name)? {
                return Ok(seq);
            }
            let seq: i64 = conn.query_row(
                &format!(
                    "SELECT coalesce(max({}), -1) FROM {}",
                    ident(SEQ_COLUMN),
                    ident(&table(name))
                ),
                [],
                |row| row.get(0),
            )?;
            set_watermark(conn, name, seq)?;
            Ok(seq)
        })
    }

    fn set(&self, name: &str) -> Result<Arc<PendingSet>> {
        self.sets
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| featherstore_core::Error::no_such_set(name).into())
    }

    fn all_sets(&self) -> Vec<Arc<PendingSet>> {
        self.sets.read().values().cloned().collect()
    }

    fn run_applies(&self) {
        let interval = self.options.apply_interval;
        // Fine enough to honour `apply_interval`, coarse enough to cost nothing when idle.
        let tick = (interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.background.run(tick, || {
            for set in self.all_sets() {
                let due = wal::is_due(
                    set.unapplied_rows(),
                    set.ingest.lock().pending_since,
                    self.options.apply_rows as u64,
                    interval,
                );
                if due {
                    if let Err(e) = apply::apply_set(&self.pool, &set) {
                        tracing::error!(feature_set = %set.spec().name, error = %e, "apply failed; will retry");
                    }
                }
            }
        });
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
            transaction(&self.pool, |conn| {
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

impl Inner {
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
        let log_dir = self.log_root.join(&spec.name);
        // A log left by a set of the same name whose delete was interrupted is not this set's.
        if log_dir.exists() {
            fs::remove_dir_all(&log_dir)
                .map_err(Error::io(format!("removing {}", log_dir.display())))?;
        }
        transaction(&self.pool, |conn| {
            conn.execute_batch(&sql::create_table(spec, &table(&spec.name)))?;
            conn.execute(
                &format!("INSERT INTO {SPECS_TABLE} VALUES (?, ?)"),
                [&spec.name, &json],
            )?;
            set_watermark(conn, &spec.name, -1)?;
            insert_version(conn, spec)
        })?;
        let set = PendingSet::open(spec.clone(), log_dir, -1)?;
        self.sets.write().insert(spec.name.clone(), Arc::new(set));
        Ok(())
    }

    /// Adds the new features' columns to the table; a fresh memtable and log segment take
    /// the appends from now on in the new schema, while the older ones keep theirs (applies
    /// and reads match columns by name).
    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        let set = self.set(&new.name)?;
        // No apply runs meanwhile: it appends in the current spec's columns.
        let _apply = set.apply.lock();
        let memtable = Arc::new(MemTable::new(new));
        let mut ingest = set.ingest.lock();
        if !set.is_alive() {
            return Err(featherstore_core::Error::no_such_set(&new.name).into());
        }
        let json = serde_json::to_string(new).expect("specs serialize");
        let table = ident(&table(&new.name));
        transaction(&self.pool, |conn| {
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
        })?;
        ingest.log.reschema(sql::storage_schema(new));
        set.add_memtable(memtable.clone());
        ingest.table = memtable;
        set.replace_spec(new.clone());
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let set = self.sets.read().get(name).cloned();
        // Waits for a running apply and for an append, then shuts both out.
        let _apply = set.as_ref().map(|set| set.apply.lock());
        let ingest = set.as_ref().map(|set| set.ingest.lock());
        transaction(&self.pool, |conn| {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(&table(name))))?;
            for registry in [SPECS_TABLE, VERSIONS_TABLE, APPLIED_TABLE] {
                conn.execute(&format!("DELETE FROM {registry} WHERE name = ?"), [name])?;
            }
            Ok(())
        })?;
        if let Some(set) = &set {
            set.alive.store(false, Ordering::Release);
            self.sets.write().remove(name);
            // A failure leaves a log the next open removes: no set has it.
            remove_log(&set.log_dir);
        }
        drop(ingest);
        Ok(())
    }

    fn append(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        now: i64,
        publish: Publish<'_>,
    ) -> Result<()> {
        let set = self.set(&spec.name)?;
        set.append(spec, batches, now, publish)?;
        wal::relieve(
            set.unapplied_rows(),
            self.options.apply_rows as u64,
            &self.background,
            &spec.name,
            || apply::apply_set(&self.pool, &set),
        );
        Ok(())
    }
}

/// Removes a set's log directory; what fails is retried at the next open.
fn remove_log(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted feature set's log");
        }
    }
}

impl OfflineStore for DuckDbStore {
    fn load_specs(&self) -> Result<Vec<FeatureSetSpec>> {
        self.inner.load_specs()
    }

    fn create(&self, spec: &FeatureSetSpec) -> Result<()> {
        self.inner.create(spec)
    }

    fn update(&self, old: &FeatureSetSpec, new: &FeatureSetSpec) -> Result<()> {
        self.inner.update(old, new)
    }

    fn spec_versions(&self, current: &FeatureSetSpec) -> Result<Vec<FeatureSetSpec>> {
        let conn = self.inner.pool.get(Purpose::Read)?;
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
        self.inner.delete(name)
    }

    fn load_services(&self) -> Result<Vec<FeatureServiceSpec>> {
        let conn = self.inner.pool.get(Purpose::Read)?;
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
        transaction(&self.inner.pool, |conn| {
            conn.execute(
                &format!("INSERT OR REPLACE INTO {SERVICES_TABLE} VALUES (?, ?)"),
                [&service.name, &json],
            )?;
            Ok(())
        })
    }

    fn delete_service(&self, name: &str) -> Result<()> {
        transaction(&self.inner.pool, |conn| {
            conn.execute(
                &format!("DELETE FROM {SERVICES_TABLE} WHERE name = ?"),
                [name],
            )?;
            Ok(())
        })
    }

    fn append_at(&self, spec: &FeatureSetSpec, batches: &[RecordBatch], now: i64) -> Result<()> {
        self.inner.append(spec, batches, now, &mut || Ok(()))
    }

    /// Publishes after the rows are logged, before they join the memtable: see the trait.
    fn append_publishing(
        &self,
        spec: &FeatureSetSpec,
        batches: &[RecordBatch],
        now: i64,
        publish: Publish<'_>,
    ) -> Result<()> {
        self.inner.append(spec, batches, now, publish)
    }

    /// Applies the logs to the tables: after a planned shutdown the logs are empty.
    fn flush(&self) -> Result<()> {
        self.apply()
    }

    /// The database file, its write-ahead log and the sets' logs: every set lives in them
    /// together.
    fn storage_total(&self) -> Result<Option<StorageStats>> {
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push(".wal");
        let mut total = StorageStats::default();
        for file in [self.inner.path.clone(), PathBuf::from(wal)] {
            match fs::metadata(&file) {
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
        for set in self.inner.all_sets() {
            let logged = log::disk_usage(&set.log_dir)?;
            total.bytes += logged.bytes;
            total.files += logged.files;
        }
        Ok(Some(total))
    }

    fn pool(&self) -> &ConnectionPool {
        &self.inner.pool
    }

    fn query_relations(&self, specs: &[&FeatureSetSpec], work: RelationWork<'_>) -> Result<()> {
        let sets = specs
            .iter()
            .map(|spec| self.inner.set(&spec.name))
            .collect::<Result<Vec<_>>>()?;
        let conn = self.inner.pool.get(Purpose::Read)?;
        // Each statement reads a consistent snapshot of the tables (DuckDB is MVCC). The
        // memtables are held until `work` returns: its statements read them.
        let (relations, _memtables): (Vec<String>, Vec<Option<MemTables>>) =
            sets.iter().map(|set| set.relation()).unzip();
        work(&conn, &relations)
    }
}

#[cfg(test)]
mod tests;
