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
    let wanted = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| config.level.clone());
    let filter = EnvFilter::try_new(quiet_libraries(&wanted))
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

/// The Delta kernel logs at ERROR what it also returns as an error (a table without commits
/// yet, met by every create), and the server logs each error it gets once, with context: its
/// own logs are off unless the filter names it.
const QUIET_LIBRARIES: &str = "buoyant_kernel=off";

fn quiet_libraries(directives: &str) -> String {
    if directives.contains("buoyant_kernel") {
        directives.to_string()
    } else {
        format!("{directives},{QUIET_LIBRARIES}")
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_libraries;

    #[test]
    fn the_delta_kernel_is_quiet_unless_named() {
        assert_eq!(quiet_libraries("info"), "info,buoyant_kernel=off");
        assert_eq!(
            quiet_libraries("warn,buoyant_kernel=debug"),
            "warn,buoyant_kernel=debug"
        );
    }
}
