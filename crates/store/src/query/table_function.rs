//! What the store's DuckDB table functions (`featherstore_scan` of ad-hoc queries, the Parquet
//! backend's `featherstore_memtable`) share.

use duckdb::core::DataChunkHandle;

/// The result of a table function's callback: DuckDB reports the error as the query's.
pub(crate) type CallbackResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Rows `output` takes in one call (DuckDB's vector size); none without columns.
pub(crate) fn vector_capacity(output: &DataChunkHandle) -> usize {
    if output.num_columns() == 0 {
        0
    } else {
        output.flat_vector(0).capacity()
    }
}
