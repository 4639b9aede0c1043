//! The FeatherStore domain model: feature set specs and their types, validation and coercion of
//! ingested batches to a set's canonical schema, retrieval tickets, time handling and the one
//! error type every layer maps to the wire. No I/O lives here.

pub mod action;
pub mod coerce;
pub mod entity;
pub mod error;
pub mod evolution;
pub mod ipc;
#[cfg(any(test, feature = "test-support"))]
pub mod ipc_testing;
pub mod json;
pub mod service;
pub mod spec;
pub mod ticket;
pub mod time;
pub mod training;
pub mod types;

pub use entity::EntityKeys;
pub use error::{Error, ErrorCode, Result, ERROR_CODE_METADATA};
pub use service::FeatureServiceSpec;
pub use spec::{EntitySpec, FeatureSetSpec, FeatureSpec};
pub use ticket::{HistoryTicket, MultiOnlineTicket, OnlineRequest, OnlineTicket, Ticket};
pub use training::{AsOf, OutputFeature, TrainingDataCommand};
pub use types::{EntityType, FeatureType};
