//! The FeatherStore server: Arrow Flight and HTTP APIs over the feature store, with
//! configuration and telemetry. [`start`] runs it; integration tests start it on port 0.

mod auth;
pub mod config;
mod error;
mod flight;
mod http;
mod service;
pub mod telemetry;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use featherstore_store::duckdb::DuckDbStore;
use featherstore_store::query::EngineSettings;
use featherstore_store::{FeatureStore, Limits, OfflineStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Backend, Config};
use crate::service::AppState;
use crate::telemetry::Metrics;

pub use error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening storage: {0}")]
    Storage(#[from] featherstore_store::Error),
    #[error("binding {what} on {address}: {source}")]
    Bind {
        what: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "refusing to serve {address} without authentication: anyone who can reach it could \
         read, write and delete every feature set. Configure tokens under `auth.tokens` \
         (docs/security.md), listen on 127.0.0.1, or set `auth.allow_unauthenticated: true` \
         (FEATHERSTORE_AUTH__ALLOW_UNAUTHENTICATED=true) to allow it"
    )]
    UnauthenticatedPublic { address: SocketAddr },
}

/// A started server; dropping it does not stop it, [`RunningServer::shutdown`] does.
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub flight_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Trace export, when configured: flushed once the listeners are done.
    tracing: Option<telemetry::traces::Tracing>,
}

impl RunningServer {
    /// Stops accepting, lets requests in progress finish, and waits for the listeners.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some(tracing) = self.tracing.take() {
            tracing.shutdown().await;
        }
    }

    /// Waits until the server stops (it does not on its own; this is for `serve`).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        if let Some(tracing) = self.tracing.take() {
            tracing.shutdown().await;
        }
    }

    /// A future that resolves on Ctrl-C or SIGTERM, then shuts the server down.
    pub async fn run_until_signal(self) {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

fn open_offline(config: &Config) -> Result<Box<dyn OfflineStore>, StartError> {
    let engine = EngineSettings {
        memory_limit: config.storage.duckdb.memory_limit.clone(),
        temp_directory: Some(config.data_dir().join("tmp")),
        connections: config.storage.connections,
    };
    Ok(match config.storage.backend {
        Backend::Duckdb => Box::new(DuckDbStore::open(&config.storage.duckdb.path, &engine)?),
        Backend::Parquet => {
            let p = &config.storage.parquet;
            let options = featherstore_store::parquet::ParquetOptions {
                row_group_size: p.row_group_size,
                compression: p.compression.parse().map_err(
                    |e: featherstore_store::parquet::UnknownCompression| {
                        StartError::Config(e.to_string())
                    },
                )?,
                flush_rows: p.flush_rows,
                flush_interval: std::time::Duration::from_secs(p.flush_interval_seconds),
                compact_min_files: p.compact_min_files,
            };
            Box::new(featherstore_store::parquet::ParquetStore::open(
                &p.directory,
                options,
                &engine,
            )?)
        }
    })
}

async fn bind(what: &'static str, host: &str, port: u16) -> Result<TcpListener, StartError> {
    let address = format!("{host}:{port}");
    TcpListener::bind(&address)
        .await
        .map_err(|source| StartError::Bind {
            what,
            address,
            source,
        })
}

fn serve_http(
    tasks: &mut JoinSet<()>,
    what: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use axum::serve::ListenerExt;
    if let Some(tls) = tls {
        let address = listener
            .local_addr()
            .expect("bound listener has an address");
        let listener = tls::TlsListener::new(listener, address, tls);
        return spawn_server(tasks, what, listener, router, stopped);
    }
    // Small JSON answers must not wait for the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an HTTP connection");
        }
    });
    spawn_server(tasks, what, listener, router, stopped);
}

fn spawn_server<L>(
    tasks: &mut JoinSet<()>,
    what: &'static str,
    listener: L,
    router: axum::Router,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, server = what, "server failed");
        }
    });
}

/// Starts trace export if configured, opens storage (rebuilding the online index), binds the
/// three ports and starts serving.
pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
    let tracing = telemetry::traces::start(&config.tracing).map_err(StartError::Config)?;
    match start_serving(config).await {
        Ok(server) => Ok(RunningServer { tracing, ..server }),
        Err(e) => {
            if let Some(tracing) = tracing {
                tracing.shutdown().await;
            }
            Err(e)
        }
    }
}

async fn start_serving(config: &Config) -> Result<RunningServer, StartError> {
    let authenticator =
        auth::Authenticator::from_config(&config.auth).map_err(StartError::Config)?;
    let (http_tls, flight_tls) = match &config.server.tls {
        Some(tls) => (
            Some(tls::http_config(tls).map_err(StartError::Config)?),
            Some(tls::flight_config(tls).map_err(StartError::Config)?),
        ),
        None => (None, None),
    };
    let host = config.server.host.clone();
    let http = bind("HTTP", &host, config.server.http_port).await?;
    let flight = bind("Flight", &host, config.server.flight_port).await?;
    let metrics = bind("metrics", &host, config.metrics.prometheus_port).await?;
    // Checked on the bound addresses: a host name may resolve to anything.
    if authenticator.is_none() && !config.auth.allow_unauthenticated {
        for listener in [&http, &flight] {
            let address = listener.local_addr().map_err(|source| StartError::Bind {
                what: "API",
                address: host.clone(),
                source,
            })?;
            if !address.ip().is_loopback() {
                return Err(StartError::UnauthenticatedPublic { address });
            }
        }
    }

    let limits = Limits {
        max_online_entities: config.limits.max_online_entities,
    };
    let open_config = config.clone();
    let store = tokio::task::spawn_blocking(move || {
        let offline = open_offline(&open_config)?;
        let spool_dir = open_config.data_dir().join("tmp");
        Ok::<_, StartError>(FeatureStore::open(offline, limits, spool_dir)?)
    })
    .await
    .map_err(|e| StartError::Config(format!("storage startup task failed: {e}")))??;

    let state = AppState {
        store: Arc::new(store),
        metrics: Arc::new(Metrics::for_backend(match config.storage.backend {
            Backend::Duckdb => "duckdb",
            Backend::Parquet => "parquet",
        })),
        max_message_bytes: config.limits.max_message_bytes,
    };
    let addr = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
    let (http_addr, flight_addr, metrics_addr) = (addr(&http), addr(&flight), addr(&metrics));

    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut tasks = JoinSet::new();
    serve_http(
        &mut tasks,
        "HTTP",
        http,
        http_tls,
        http::router(state.clone(), authenticator.clone()),
        until_stopped(),
    );
    serve_http(
        &mut tasks,
        "metrics",
        metrics,
        None,
        http::metrics_router(state.clone()),
        until_stopped(),
    );
    let flight_service = flight::service(state, authenticator);
    let mut flight_server = tonic::transport::Server::builder();
    if let Some(tls) = flight_tls {
        flight_server = flight_server
            .tls_config(tls)
            .map_err(|e| StartError::Config(format!("server.tls (Flight): {e}")))?;
    }
    let stop_flight = until_stopped();
    tasks.spawn(async move {
        let result = flight_server
            .add_service(flight_service)
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a response's trailers, written after its data, wait for
                // the client's delayed ACK (~40 ms per call).
                tonic::transport::server::TcpIncoming::from(flight).with_nodelay(Some(true)),
                stop_flight,
            )
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "Flight server failed");
        }
    });
    tracing::info!(%http_addr, %flight_addr, %metrics_addr, backend = ?config.storage.backend, "serving");
    Ok(RunningServer {
        http_addr,
        flight_addr,
        metrics_addr,
        stop,
        tasks,
        tracing: None,
    })
}
