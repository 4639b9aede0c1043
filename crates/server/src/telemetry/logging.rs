//! Logs: `tracing` events to stderr (stdout carries only the ready line), human-readable by
//! default, one JSON object per line with `logging.format: json`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LoggingConfig};
use crate::telemetry::traces;

/// Installs the process's tracing subscriber: the log layer, filtered by `RUST_LOG` (which
/// wins) or the configured level, and the OpenTelemetry layer, which stays off until trace
/// export starts. A second call is a no-op.
pub fn init(config: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => Box::new(fmt.json().flatten_event(true).with_filter(filter)),
        LogFormat::Text => Box::new(
            fmt.with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(traces::layer())
        .try_init();
}
