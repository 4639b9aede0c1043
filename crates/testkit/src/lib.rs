//! The test kit of FeatherStore's suites and benchmarks (a dev-dependency only).
//!
//! - [`fixtures`]: the shared feature sets and batches, and a deterministic random source
//!   (always built: the core and store benchmarks need no more).
//! - [`process`]: a process's CPU time from `/proc` (always built: benchmarks of every
//!   crate use it).
//! - [`s3`]: a real S3-compatible server (moto) on loopback, and a relay that can cut it off
//!   (always built: the store's Delta Lake tests need it).
//! - [`redis`]: real Redis servers (a single node, a 3-node cluster) on free loopback ports
//!   for the Redis online backend (always built: the store's conformance tests use them).
//! - With the `server` feature: [`TestServer`] (a server in this process on port 0, either
//!   backend), [`child::Serve`] (`featherstore serve` as a child process on port 0), the
//!   Flight ([`flight`]) and HTTP ([`http`]) calls the suites repeat, and test certificates
//!   ([`certs`]).
//!
//! Every server starts within a timeout and has an explicit, clean stop; dropping one is the
//! safety net (in-process: its tasks are aborted; a child process: SIGKILL).
//!
//! The crate root re-exports what most suites use, so `use featherstore_testkit::*;` is the
//! usual import.

pub mod fixtures;
pub mod process;
pub mod redis;
pub mod s3;

#[cfg(feature = "server")]
pub mod certs;
#[cfg(feature = "server")]
pub mod child;
#[cfg(feature = "server")]
pub mod flight;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod server;

pub use fixtures::{column_names, user_batch, Rng, USER_SPEC};

#[cfg(feature = "server")]
pub use flight::{action, concat, exchange, get, put, put_ok, to_status};
#[cfg(feature = "server")]
pub use http::http;
#[cfg(feature = "server")]
pub use server::{TestServer, BACKENDS};

/// Polls `check` every 20 ms until it holds; panics after `limit`, naming `what`.
#[cfg(feature = "server")]
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A new temporary directory; removed when dropped.
#[cfg(feature = "server")]
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}
