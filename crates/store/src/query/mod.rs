//! The query engine shared by every offline backend: DuckDB connections, and the SQL they run
//! (history scans, latest values, statistics, training data) over relations of stored rows.

pub mod adhoc;
pub mod cancel;
mod pool;
pub mod profile;
pub(crate) mod reads;
pub(crate) mod sql;
pub(crate) mod table_function;
pub use reads::history_schema;
pub use sql::INGESTED_AT_OUTPUT;
pub mod training;

pub use cancel::Cancellation;
pub(crate) use pool::PooledConnection;
pub use pool::{ConnectionPool, EngineSettings, Purpose, Waiting};
