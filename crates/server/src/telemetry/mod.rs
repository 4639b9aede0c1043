//! Metrics (Prometheus) and logs (tracing).

pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
