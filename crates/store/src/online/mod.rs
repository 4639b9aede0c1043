//! The online store: the latest value of every entity of every feature set, served without
//! storage I/O. One interface, [`OnlineStore`] (the backend) and [`OnlineSet`] (one set's
//! values), with the in-memory [`OnlineIndex`] as the embedded default.
//!
//! [`RedisStore`] keeps the values in a Redis or Redis Cluster shared by several servers.
//!
//! A new backend implements both traits in a module of its own and adds itself
//! to the conformance tests (`online/tests.rs`, one line in `backends()`), which check the
//! rules of [`OnlineSet`] against every backend. [`FeatureStore`](crate::FeatureStore) uses
//! the online store only through these traits.

mod column;
mod index;
mod interface;
mod redis;

pub use self::redis::{RedisConfig, RedisStore};
pub use index::{MemoryStore, OnlineIndex};
pub use interface::{OnlineSet, OnlineStore, PreparedBatch, SharedRegistry};

#[cfg(test)]
mod tests;
