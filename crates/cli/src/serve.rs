//! `featherstore serve`: configuration from file, environment and flags; a ready line on
//! stdout once every port accepts connections.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use featherstore_server::config::{Backend, Config, LogFormat, Overrides};
use featherstore_server::telemetry::logging;

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Duckdb,
    Parquet,
    Delta,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// YAML configuration file.
    #[arg(long, env = "FEATHERSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Directory holding all state of either backend.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    host: Option<String>,
    /// 0 picks a free port (printed in the ready line).
    #[arg(long)]
    http_port: Option<u16>,
    #[arg(long)]
    flight_port: Option<u16>,
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Serve online values from this Redis (`redis://host:port`) instead of memory; the
    /// other `online.redis` settings come from the configuration.
    #[arg(long, value_name = "URL")]
    online: Option<String>,
}

pub(crate) fn run(args: ServeArgs) -> Result<(), String> {
    let overrides = Overrides {
        backend: args.backend.map(|b| match b {
            BackendArg::Duckdb => Backend::Duckdb,
            BackendArg::Parquet => Backend::Parquet,
            BackendArg::Delta => Backend::Delta,
        }),
        data_dir: args.data_dir,
        host: args.host,
        http_port: args.http_port,
        flight_port: args.flight_port,
        metrics_port: args.metrics_port,
        online_url: args.online,
    };
    let config = Config::load(args.config.as_deref(), &overrides).map_err(|e| e.to_string())?;
    // Logs go to stderr from here on; trace export starts inside `start`, on the runtime.
    logging::init(&config.logging);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let served = runtime.block_on(async {
        let server = match featherstore_server::start(&config).await {
            Ok(server) => server,
            // In JSON mode every line on stderr is JSON: the failure is logged, not printed.
            Err(e) if config.logging.format == LogFormat::Json => {
                tracing::error!(error = %e, "startup failed");
                std::process::exit(1);
            }
            Err(e) => return Err(e.to_string()),
        };
        // One JSON line on stdout tells scripts and tests where to connect (ports may be 0).
        let ready = serde_json::json!({
            "event": "ready",
            "http": server.http_addr.to_string(),
            "flight": server.flight_addr.to_string(),
            "metrics": server.metrics_addr.to_string(),
        });
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{ready}");
        let _ = stdout.flush();
        drop(stdout);
        server.run_until_signal().await;
        Ok(())
    });
    // Shutdown already let requests finish (or cut them) and flushed storage: what still
    // runs on the blocking pool is cancelled work winding down, which must not hold the
    // exit.
    runtime.shutdown_timeout(SHUTDOWN_LEFTOVERS);
    served
}

/// How long the runtime waits for blocking work still running after shutdown.
const SHUTDOWN_LEFTOVERS: std::time::Duration = std::time::Duration::from_secs(2);
