//! What the store's integration tests share: each offline backend, opened on a directory.

use std::path::Path;

use featherstore_store::delta::{DeltaOptions, DeltaStore};
use featherstore_store::duckdb::{DuckDbOptions, DuckDbStore};
use featherstore_store::parquet::{ParquetOptions, ParquetStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::OfflineStore;

/// Opens one backend's store in a directory (a test runs each of its backends in turn).
pub(crate) type Open = fn(&Path) -> Box<dyn OfflineStore>;

pub(crate) fn engine() -> EngineSettings {
    EngineSettings {
        connections: 4,
        ..EngineSettings::default()
    }
}

#[allow(dead_code)] // Each test binary compiles this module; not all use every helper.
pub(crate) fn open_duckdb(dir: &Path) -> Box<dyn OfflineStore> {
    open_duckdb_with(dir, DuckDbOptions::default())
}

/// DuckDB with the test's options (small `apply_rows`, so that its rows are both in the
/// tables and in the log).
#[allow(dead_code)] // Each test binary compiles this module; not all use every helper.
pub(crate) fn open_duckdb_with(dir: &Path, options: DuckDbOptions) -> Box<dyn OfflineStore> {
    Box::new(DuckDbStore::open_with(&dir.join("features.db"), options, &engine()).unwrap())
}

/// Parquet with the test's options (small `flush_rows`, so that its rows are both in files
/// and in the log).
pub(crate) fn open_parquet_with(dir: &Path, options: ParquetOptions) -> Box<dyn OfflineStore> {
    Box::new(ParquetStore::open(&dir.join("parquet"), options, &engine()).unwrap())
}

/// Delta Lake on `file://` (the S3 cases are in delta_backend.rs, against moto).
pub(crate) fn open_delta(dir: &Path) -> Box<dyn OfflineStore> {
    let uri = format!("file://{}", dir.join("delta").display());
    Box::new(DeltaStore::open(DeltaOptions::new(uri, dir.join("cache")), &engine()).unwrap())
}
