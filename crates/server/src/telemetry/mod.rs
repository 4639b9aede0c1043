//! Metrics (Prometheus), logs (`tracing`, text or JSON lines) and traces (OpenTelemetry OTLP).
//! docs/observability.md describes what each signal means.

pub mod logging;
pub mod metrics;
pub mod traces;

pub use metrics::Metrics;
