//! The query engine shared by both backends: DuckDB connections and the SQL they run
//! (history scans, latest values, statistics) over a relation of stored rows.

pub mod cancel;
mod pool;
pub mod sql;
pub mod training;

pub use cancel::Cancellation;
pub use pool::{ConnectionPool, EngineSettings, PooledConnection, Purpose, Waiting};
