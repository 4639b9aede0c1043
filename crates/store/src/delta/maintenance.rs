//! Background upkeep of the tables: many small batches must not stay many small files, and
//! the log must not grow into thousands of JSON commits to list and replay.
//!
//! - **Compaction**: a partition (event date) with at least `compact_min_files` files smaller
//!   than `compact_target_bytes` is rewritten as one file, rows sorted by entity, event time
//!   and `_seq`, and committed as Delta's OPTIMIZE does: the old files removed and the new one
//!   added with `dataChange: false`, so readers of the change feed see no change. Rows keep
//!   their `_seq` and `_ingested_at`. The commit goes through Delta's conflict checker:
//!   appends meanwhile do not conflict with it.
//! - **Checkpoints**: once `checkpoint_interval` commits followed the last checkpoint, one is
//!   written (Parquet of the table state), so loading the table reads it and the commits after.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Action;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, Path};
use featherstore_core::FeatureSetSpec;

use super::{data_file_path, registry, schema, Inner, SetTable};
use crate::query::{sql, Purpose};
use crate::Result;

impl Inner {
    pub(super) fn run_maintenance(&self) {
        self.background
            .run(self.options.maintenance_interval, || {
                for (name, set) in self.all_sets() {
                    if let Err(e) = self.maintain_set(&name, &set) {
                        tracing::warn!(feature_set = %name, error = %e, "delta maintenance failed; will retry");
                    }
                }
            });
    }

    pub(super) fn maintain_set(&self, name: &str, set: &SetTable) -> Result<()> {
        let _maintenance = set.maintenance.lock();
        let current = self
            .sets
            .lock()
            .get(name)
            .is_some_and(|registered| std::ptr::eq(registered.as_ref(), set));
        if !current {
            return Ok(()); // deleted (maybe re-created) meanwhile
        }
        let table = self.refresh(set)?;
        if table.version().is_none() {
            return Ok(());
        }
        let spec = self.current_spec(name)?;
        self.compact(&spec, &table)?;
        self.checkpoint(name, set)
    }

    fn current_spec(&self, name: &str) -> Result<FeatureSetSpec> {
        let store = Arc::clone(&self.store);
        let owned = name.to_string();
        let versions = self.run(async move { registry::versions(store.as_ref(), &owned).await })?;
        versions
            .into_iter()
            .last()
            .ok_or_else(|| featherstore_core::Error::no_such_set(name).into())
    }

    /// Compacts every partition of `table` that has enough small files.
    fn compact(&self, spec: &FeatureSetSpec, table: &DeltaTable) -> Result<()> {
        let mut partitions: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for file in table.snapshot()?.log_data().iter() {
            if (file.size().max(0) as u64) < self.options.compact_target_bytes {
                let path = data_file_path(&file);
                let partition = path
                    .parts()
                    .next()
                    .map(|p| p.as_ref().to_string())
                    .unwrap_or_default();
                partitions.entry(partition).or_default().push(file);
            }
        }
        for files in partitions.into_values() {
            if files.len() < self.options.compact_min_files.max(2) {
                continue;
            }
            let paths: Vec<Path> = files.iter().map(data_file_path).collect();
            let (_pinned, local) = self.fetch_paths(&spec.name, &paths)?;
            let query = format!(
                "{} ORDER BY {}, {}, {}",
                schema::select_files(spec, &local),
                sql::ident(&spec.entity.name),
                sql::ident(&spec.timestamp),
                sql::ident(sql::SEQ_COLUMN)
            );
            let mut writer = RecordBatchWriter::for_table(table)?;
            let target = writer.arrow_schema();
            let mut batches = Vec::new();
            {
                let conn = self.pool.get(Purpose::Write)?;
                let mut statement = conn.prepare(&query)?;
                let storage = sql::storage_schema(spec);
                drop(statement.stream_arrow([])?);
                while let Some(chunk) = statement.step()? {
                    let batch = sql::conform(&RecordBatch::from(&chunk), &storage)?;
                    if batch.num_rows() > 0 {
                        batches.push(schema::to_table_batch(spec, &batch, &target)?);
                    }
                }
            }
            let mut actions: Vec<Action> = files
                .iter()
                .map(|f| Action::Remove(f.remove_action(false)))
                .collect();
            let table = table.clone();
            let committed = self.run(async move {
                for batch in batches {
                    writer.write(batch).await?;
                }
                for mut add in writer.flush().await? {
                    add.data_change = false;
                    actions.push(Action::Add(add));
                }
                let properties = CommitProperties::default()
                    .with_create_checkpoint(false)
                    .with_cleanup_expired_logs(Some(false));
                let operation = DeltaOperation::Optimize {
                    predicate: None,
                    target_size: 0,
                };
                let done = CommitBuilder::from(properties)
                    .with_actions(actions)
                    .build(Some(table.snapshot()?), table.log_store(), operation)
                    .await?;
                Ok(done.version())
            })?;
            tracing::debug!(feature_set = %spec.name, files = files.len(), version = committed, "compacted a partition");
        }
        Ok(())
    }

    /// Writes a checkpoint when `checkpoint_interval` commits followed the last one.
    fn checkpoint(&self, name: &str, set: &SetTable) -> Result<()> {
        let table = self.refresh(set)?;
        let Some(version) = table.version() else {
            return Ok(());
        };
        let store = Arc::clone(&self.store);
        let pointer = Path::from(format!("{name}/_delta_log/_last_checkpoint"));
        let last = self.run(async move {
            match store.get(&pointer).await {
                Ok(found) => {
                    let bytes = found.bytes().await?;
                    Ok(serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v.get("version").and_then(serde_json::Value::as_i64))
                        .unwrap_or(-1))
                }
                Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(-1),
                Err(e) => Err(e.into()),
            }
        })?;
        let version_number = i64::try_from(version).unwrap_or(i64::MAX);
        if version_number.saturating_sub(last) < self.options.checkpoint_interval as i64 {
            return Ok(());
        }
        self.run(async move {
            deltalake::checkpoints::create_checkpoint(&table, None).await?;
            Ok(())
        })?;
        tracing::debug!(feature_set = %name, version, "checkpointed the delta log");
        Ok(())
    }
}
