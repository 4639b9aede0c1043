//! What the store's integration tests share: each offline backend, opened on a directory.

use std::path::Path;

use featherstore_store::delta::{DeltaOptions, DeltaStore};
use featherstore_store::duckdb::DuckDbStore;
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

pub(crate) fn open_duckdb(dir: &Path) -> Box<dyn OfflineStore> {
    Box::new(DuckDbStore::open(&dir.join("features.db"), &engine()).unwrap())
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
