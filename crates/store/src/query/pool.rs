use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duckdb::Connection;
use parking_lot::{Condvar, Mutex};

use super::cancel::{self, Cancellation};
use crate::{Error, Result};

/// Settings of the embedded DuckDB engine.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// DuckDB `memory_limit`, e.g. `"4GB"`; DuckDB's default (80% of RAM) when `None`.
    pub memory_limit: Option<String>,
    /// Where DuckDB spills operators that exceed the memory limit.
    pub temp_directory: Option<PathBuf>,
    /// Connections in the pool: how many storage calls run at once.
    pub connections: usize,
    /// Connections reads may never take, so that writes (ingest, create, delete, flushes) never
    /// wait behind reads; at most `connections - 1`.
    pub write_connections: usize,
    /// How long a storage call waits for a connection before it is refused as unavailable;
    /// `None` waits as long as it takes.
    pub wait_timeout: Option<Duration>,
}

/// What a connection is taken for: decides which connections it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// History, training data, statistics: may not take the connections kept for writes.
    Read,
    /// Appends, registry changes and Parquet maintenance: may take any connection.
    Write,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Read => "reads",
            Purpose::Write => "writes",
        }
    }
}

/// The storage call that has waited longest for a connection, if any is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub purpose: Purpose,
    pub waited: Duration,
    /// Calls waiting for a connection, of both purposes.
    pub waiters: usize,
}

struct State {
    idle: Vec<Connection>,
    /// Connections on loan for reads.
    reads_out: usize,
    /// When each waiting call started to wait, by a ticket of its own.
    waiters: BTreeMap<u64, (Purpose, Instant)>,
    next_ticket: u64,
}

/// A fixed set of DuckDB connections to one database. DuckDB calls block, so callers take a
/// connection on a blocking thread; when none is free they wait, up to the configured timeout,
/// and give up early if their request is cancelled ([`Cancellation`]).
pub struct ConnectionPool {
    state: Mutex<State>,
    returned: Condvar,
    /// Reads may hold at most this many connections at once.
    max_reads: usize,
    wait_timeout: Option<Duration>,
}

/// How often a waiting call looks whether its request was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(50);

impl ConnectionPool {
    /// Opens the database at `path`, or an in-memory one when `None`.
    pub(crate) fn open(path: Option<&Path>, settings: &EngineSettings) -> Result<Self> {
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
        let connections = settings.connections.max(1);
        let mut idle = Vec::with_capacity(connections);
        for _ in 1..connections {
            idle.push(first.try_clone()?);
        }
        idle.push(first);
        let reserved = settings.write_connections.min(connections - 1);
        Ok(ConnectionPool {
            state: Mutex::new(State {
                idle,
                reads_out: 0,
                waiters: BTreeMap::new(),
                next_ticket: 0,
            }),
            returned: Condvar::new(),
            max_reads: connections - reserved,
            wait_timeout: settings.wait_timeout,
        })
    }

    /// Takes a connection for `purpose`, waiting while none it may have is free: up to the
    /// pool's wait timeout (then `Unavailable`), or until the calling request is cancelled.
    pub(crate) fn get(&self, purpose: Purpose) -> Result<PooledConnection<'_>> {
        self.get_within(purpose, self.wait_timeout)
    }

    /// Whether a connection for `purpose` can be had within `timeout` (it is given back at
    /// once): the health check's probe.
    pub(crate) fn probe(&self, purpose: Purpose, timeout: Duration) -> bool {
        self.get_within(purpose, Some(timeout)).is_ok()
    }

    fn get_within(
        &self,
        purpose: Purpose,
        timeout: Option<Duration>,
    ) -> Result<PooledConnection<'_>> {
        let cancellation = cancel::current();
        let started = Instant::now();
        let mut state = self.state.lock();
        let mut ticket = None;
        let outcome = loop {
            if cancellation
                .as_ref()
                .is_some_and(Cancellation::is_cancelled)
            {
                break Err(Error::Cancelled);
            }
            let allowed = purpose == Purpose::Write || state.reads_out < self.max_reads;
            if allowed {
                if let Some(conn) = state.idle.pop() {
                    if purpose == Purpose::Read {
                        state.reads_out += 1;
                    }
                    break Ok(conn);
                }
            }
            let waited = started.elapsed();
            if let Some(limit) = timeout.filter(|&limit| waited >= limit) {
                break Err(featherstore_core::Error::Unavailable(format!(
                    "storage is busy: no connection for {} became free within {:.1} s; retry later",
                    purpose.as_str(),
                    limit.as_secs_f64()
                ))
                .into());
            }
            if ticket.is_none() {
                let id = state.next_ticket;
                state.next_ticket += 1;
                state.waiters.insert(id, (purpose, started));
                ticket = Some(id);
            }
            let mut pause = CANCEL_POLL;
            if let Some(limit) = timeout {
                pause = pause.min(limit.saturating_sub(waited));
            }
            self.returned.wait_for(&mut state, pause);
        };
        if let Some(id) = ticket {
            state.waiters.remove(&id);
        }
        drop(state);
        let conn = outcome?;
        let registration = cancellation.map(|c| c.running(&conn));
        Ok(PooledConnection {
            pool: self,
            purpose,
            conn: Some(conn),
            registration,
        })
    }

    /// The call that has waited longest for a connection, if one is waiting now.
    pub(crate) fn longest_wait(&self) -> Option<Waiting> {
        let state = self.state.lock();
        let (&_, &(purpose, since)) = state.waiters.iter().min_by_key(|(_, (_, since))| *since)?;
        Some(Waiting {
            purpose,
            waited: since.elapsed(),
            waiters: state.waiters.len(),
        })
    }
}

/// A connection on loan from a [`ConnectionPool`]; goes back when dropped.
pub(crate) struct PooledConnection<'a> {
    pool: &'a ConnectionPool,
    purpose: Purpose,
    conn: Option<Connection>,
    /// Lets the request's cancellation interrupt this connection's query until it goes back;
    /// dropped (unregistered) before the connection is returned.
    registration: Option<cancel::Running>,
}

impl Deref for PooledConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        // Unregister first: an interrupt must never reach the connection's next borrower.
        drop(self.registration.take());
        if let Some(conn) = self.conn.take() {
            let mut state = self.pool.state.lock();
            state.idle.push(conn);
            if self.purpose == Purpose::Read {
                state.reads_out -= 1;
            }
            drop(state);
            // Waiters differ in what they may take: wake all, each checks for itself.
            self.pool.returned.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(connections: usize, write_connections: usize) -> ConnectionPool {
        ConnectionPool::open(
            None,
            &EngineSettings {
                connections,
                write_connections,
                wait_timeout: Some(Duration::from_millis(200)),
                ..EngineSettings::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn reads_never_take_the_connections_kept_for_writes() {
        let pool = pool(3, 1);
        let a = pool.get(Purpose::Read).unwrap();
        let b = pool.get(Purpose::Read).unwrap();
        let refused = pool.get(Purpose::Read).err().expect("a third read waits");
        assert_eq!(refused.code(), featherstore_core::ErrorCode::Unavailable);
        let write = pool.get(Purpose::Write).expect("the reserved connection");
        drop(write);
        drop(a);
        let c = pool
            .get(Purpose::Read)
            .expect("a read connection came back");
        drop((b, c));
    }

    #[test]
    fn a_waiting_call_is_visible_and_cancellation_ends_its_wait() {
        let pool = std::sync::Arc::new(pool(1, 0));
        let held = pool.get(Purpose::Read).unwrap();
        let cancellation = Cancellation::default();
        let waiter = {
            let pool = pool.clone();
            let cancellation = cancellation.clone();
            std::thread::spawn(move || {
                cancellation.scope(|| pool.get_within(Purpose::Read, None).map(|_| ()))
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let waiting = pool.longest_wait().expect("one call waits");
        assert_eq!((waiting.purpose, waiting.waiters), (Purpose::Read, 1));
        cancellation.cancel();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Cancelled)));
        assert!(pool.longest_wait().is_none());
        drop(held);
    }

    #[test]
    fn cancellation_interrupts_a_running_query_and_the_connection_stays_usable() {
        let pool = std::sync::Arc::new(pool(1, 0));
        let cancellation = Cancellation::default();
        let query = {
            let pool = pool.clone();
            let cancellation = cancellation.clone();
            std::thread::spawn(move || {
                cancellation.scope(|| {
                    let conn = pool.get(Purpose::Read)?;
                    // Minutes of work unless interrupted.
                    conn.query_row(
                        "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3",
                        [],
                        |row| row.get::<_, i64>(0),
                    )
                    .map_err(Error::from)
                })
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        cancellation.cancel();
        assert!(query.join().unwrap().is_err(), "the query was interrupted");
        assert!(started.elapsed() < Duration::from_secs(5));
        let conn = pool.get(Purpose::Read).unwrap();
        let one: i64 = conn.query_row("SELECT 1", [], |row| row.get(0)).unwrap();
        assert_eq!(one, 1, "an interrupt does not outlive its query");
    }

    #[test]
    fn an_interrupt_between_queries_does_not_reach_the_next_borrower() {
        let pool = pool(1, 0);
        let cancellation = Cancellation::default();
        cancellation.scope(|| {
            let conn = pool.get(Purpose::Read).unwrap();
            conn.execute_batch("SELECT 1").unwrap();
            // Cancelled while it holds the connection but runs nothing.
            cancellation.cancel();
        });
        let conn = pool.get(Purpose::Read).unwrap();
        let one: i64 = conn.query_row("SELECT 1", [], |row| row.get(0)).unwrap();
        assert_eq!(one, 1);
    }
}
