//! The query engine shared by both backends: DuckDB connections and the SQL they run
//! (history scans, latest values, statistics) over a relation of stored rows.

mod pool;
pub mod sql;
pub mod training;

pub use pool::{ConnectionPool, EngineSettings, PooledConnection};
