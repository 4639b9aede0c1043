use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use duckdb::Connection;

use crate::Result;

/// Settings of the embedded DuckDB engine.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// DuckDB `memory_limit`, e.g. `"4GB"`; DuckDB's default (80% of RAM) when `None`.
    pub memory_limit: Option<String>,
    /// Where DuckDB spills operators that exceed the memory limit.
    pub temp_directory: Option<PathBuf>,
    /// Connections in the pool: how many storage calls run at once.
    pub connections: usize,
}

/// A fixed set of DuckDB connections to one database. DuckDB calls block, so callers take a
/// connection on a blocking thread; when all are busy they wait for one to come back.
pub struct ConnectionPool {
    idle: Mutex<Vec<Connection>>,
    returned: Condvar,
}

impl ConnectionPool {
    /// Opens the database at `path`, or an in-memory one when `None`.
    pub fn open(path: Option<&Path>, settings: &EngineSettings) -> Result<Self> {
        let first = match path {
            Some(path) => Connection::open(path)?,
            None => Connection::open_in_memory()?,
        };
        // The server runs on closed networks: never try to download an extension.
        let mut setup = String::from(
            "SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;",
        );
        if let Some(limit) = &settings.memory_limit {
            setup.push_str(&format!(
                "SET memory_limit = '{}';",
                limit.replace('\'', "''")
            ));
        }
        if let Some(dir) = &settings.temp_directory {
            let dir = dir.display().to_string();
            setup.push_str(&format!(
                "SET temp_directory = '{}';",
                dir.replace('\'', "''")
            ));
        }
        first.execute_batch(&setup)?;
        let mut idle = Vec::with_capacity(settings.connections.max(1));
        for _ in 1..settings.connections.max(1) {
            idle.push(first.try_clone()?);
        }
        idle.push(first);
        Ok(ConnectionPool {
            idle: Mutex::new(idle),
            returned: Condvar::new(),
        })
    }

    /// Takes a connection, waiting while all are in use.
    pub fn get(&self) -> PooledConnection<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(conn) = idle.pop() {
                return PooledConnection {
                    pool: self,
                    conn: Some(conn),
                };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A connection on loan from a [`ConnectionPool`]; goes back when dropped.
pub struct PooledConnection<'a> {
    pool: &'a ConnectionPool,
    conn: Option<Connection>,
}

impl Deref for PooledConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(conn);
            self.pool.returned.notify_one();
        }
    }
}
