//! The FeatherStore server: Arrow Flight and HTTP APIs over the feature store, with
//! configuration and telemetry. [`start`] runs it; integration tests start it on port 0.

mod auth;
pub mod config;
mod error;
mod flight;
mod http;
mod limits;
mod priority;
mod service;
pub mod telemetry;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use featherstore_store::duckdb::DuckDbStore;
use featherstore_store::online::MemoryStore;
use featherstore_store::query::adhoc::AdhocSettings;
use featherstore_store::query::EngineSettings;
use featherstore_store::{FeatureStore, Limits, OfflineStore, SnapshotOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Backend, Config};

/// The online snapshots' directory in the data directory: a name no feature set can have (the
/// Parquet backend keeps a directory per set there).
const ONLINE_SNAPSHOT_DIR: &str = ".online";
/// Rows applied to a set between two snapshots of its online values (or four times its
/// entities, if more): bounds what a start after a crash recomputes.
const ONLINE_SNAPSHOT_ROWS: u64 = 1_000_000;
/// Bytes a Flight client may send on one call ahead of what the server has read (HTTP/2
/// flow control), and on one connection (see `run`).
const FLIGHT_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const FLIGHT_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
use crate::limits::seconds;
use crate::service::{AppState, FlightSql};
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
    /// `storage.parquet.compression` names no codec.
    #[error("invalid configuration: {0}")]
    Compression(#[from] featherstore_store::parquet::UnknownCompression),
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
    store: Arc<FeatureStore>,
    /// How long requests in progress may run on once shutdown starts.
    grace: Duration,
    /// Trace export, when configured: flushed once the listeners are done.
    tracing: Option<telemetry::traces::Tracing>,
}

impl RunningServer {
    /// Stops accepting, lets requests in progress finish within the grace period (then cuts
    /// them), refuses further writes, and flushes the store (Parquet: the logs are written
    /// into Parquet files, so the next start replays nothing).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_seconds = self.grace.as_secs_f64(),
                "requests still running after the grace period are cut"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        let store = self.store.clone();
        match crate::priority::spawn_storage_work(move || store.close()).await {
            Ok(Ok(())) => tracing::info!("storage flushed"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "flushing storage at shutdown failed; the next start replays the log")
            }
            Err(e) => tracing::error!(error = %e, "flushing storage at shutdown failed"),
        }
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
        write_connections: config.storage.write_connections,
        wait_timeout: Some(seconds(config.limits.storage_wait_seconds)),
    };
    Ok(match config.storage.backend {
        Backend::Duckdb => {
            let d = &config.storage.duckdb;
            let options = featherstore_store::duckdb::DuckDbOptions {
                apply_rows: d.apply_rows,
                apply_interval: std::time::Duration::from_millis(d.apply_interval_ms),
            };
            Box::new(DuckDbStore::open_with(&d.path, options, &engine)?)
        }
        Backend::Parquet => {
            let p = &config.storage.parquet;
            let options = featherstore_store::parquet::ParquetOptions {
                row_group_size: p.row_group_size,
                compression: p.compression.parse()?,
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
        Backend::Delta => {
            let d = &config.storage.delta;
            let mut options =
                featherstore_store::delta::DeltaOptions::new(d.uri.clone(), d.cache_dir.clone());
            options.storage_options = d.storage_options.clone().into_iter().collect();
            options.cache_max_bytes = d.cache_max_bytes;
            options.compact_min_files = d.compact_min_files;
            options.compact_target_bytes = d.compact_target_bytes;
            options.checkpoint_interval = d.checkpoint_interval;
            options.maintenance_interval =
                std::time::Duration::from_secs_f64(d.maintenance_interval_seconds);
            Box::new(featherstore_store::delta::DeltaStore::open(
                options, &engine,
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

/// Serves `router` on `listener` (HTTP/1.1, over TLS when `tls` is set): each connection on
/// its own task, with the client's address in the request extensions (`ConnectInfo`), a
/// deadline for the TLS handshake and for request headers (slow loris), and graceful shutdown:
/// once `stopped` resolves no connection is accepted, requests in progress finish, idle
/// connections close.
fn serve_http(
    tasks: &mut JoinSet<()>,
    what: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
    header_timeout: Duration,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|s| *s) => break,
                // Reap finished connections as they end, so the set stays small.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: pause rather than spin, and keep
                    // serving the connections already open.
                    tracing::warn!(error = %e, server = what, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small JSON answers must not wait for the client's delayed ACK (Nagle).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on an HTTP connection");
            }
            let (router, stopped, acceptor) = (router.clone(), stopped.clone(), acceptor.clone());
            connections.spawn(async move {
                match acceptor {
                    None => serve_connection(tcp, peer, router, stopped, header_timeout).await,
                    // The handshake runs on the connection's own task: a slow or silent client
                    // delays no one else, and a plaintext one meets a failed handshake.
                    Some(acceptor) => {
                        match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(tls)) => {
                                serve_connection(tls, peer, router, stopped, header_timeout).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    });
}

/// Serves one HTTP/1.1 connection until it ends, or until `stopped` (then gracefully: the
/// request in progress finishes).
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    mut stopped: watch::Receiver<bool>,
    header_timeout: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let service = router.map_request(move |request: ::http::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
            return;
        }
        _ = stopped.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
    }
}

/// How often a server with a shared online backend takes in the registry's changes: a set
/// created through another server is usable here within this (plus one storage call).
const REGISTRY_SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// Runs `work` at storage priority every `interval` (after the previous run ended) until the
/// server stops; `work` logs its own failures.
async fn every(
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
    task: &'static str,
    work: impl Fn() + Clone + Send + 'static,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if let Err(e) = crate::priority::spawn_storage_work(work.clone()).await {
            tracing::error!(error = %e, task, "a periodic storage task failed");
        }
    }
}

/// Takes the shared registry's changes into this server; a failure (Redis unreachable) is
/// logged and tried again at the next tick.
fn sync_registry(store: &FeatureStore) {
    if let Err(e) = store.sync_registry() {
        tracing::warn!(error = %e, "the shared registry could not be read");
    }
}

/// How often the server looks for sets whose ingest paused, to warm their training index.
const TRAINING_WARM_INTERVAL: Duration = Duration::from_millis(250);

/// How long ingest into a set must have paused before its training index is warmed: a run of
/// batches is read once, after it, not batch by batch.
const TRAINING_WARM_QUIET: Duration = Duration::from_millis(500);

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
    config.validate().map_err(StartError::Config)?;
    tls::install_crypto_provider();
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
        training_memory_bytes: config.limits.training_memory_bytes,
    };
    let open_config = config.clone();
    let store = crate::priority::spawn_storage_work(move || {
        let offline = open_offline(&open_config)?;
        let spool_dir = open_config.data_dir().join("tmp");
        // Snapshots of the online values are this process's own: a shared backend (Redis)
        // holds every server's values already and needs none.
        let (online, snapshots): (Box<dyn featherstore_store::online::OnlineStore>, _) =
            match open_config.online.backend {
                config::OnlineBackend::Memory => (
                    Box::new(MemoryStore),
                    Some(SnapshotOptions {
                        dir: open_config.data_dir().join(ONLINE_SNAPSHOT_DIR),
                        rows: ONLINE_SNAPSHOT_ROWS,
                    }),
                ),
                config::OnlineBackend::Redis => (
                    Box::new(featherstore_store::online::RedisStore::connect(
                        open_config.online.redis.clone(),
                    )?),
                    None,
                ),
            };
        Ok::<_, StartError>(FeatureStore::open_snapshotted(
            offline, online, limits, spool_dir, snapshots,
        )?)
    })
    .await
    .map_err(|e| StartError::Config(format!("storage startup task failed: {e}")))??;

    let store = Arc::new(store);
    let flight_sql = config.flight_sql.enabled.then(|| {
        Arc::new(FlightSql {
            settings: AdhocSettings {
                timeout: Duration::from_millis(config.flight_sql.query_timeout_ms),
                memory_limit: config.flight_sql.memory_limit.clone(),
                threads: config.flight_sql.threads,
            },
            running: Arc::new(tokio::sync::Semaphore::new(
                config.flight_sql.max_concurrent_queries,
            )),
        })
    });
    if let Some(sql) = &flight_sql {
        featherstore_store::query::adhoc::check_settings(&sql.settings)
            .map_err(|e| StartError::Config(format!("flight_sql: {e}")))?;
    }
    let guards = Arc::new(limits::Guards::new(&config.limits));
    let state = AppState::new(service::Shared {
        store: store.clone(),
        metrics: Arc::new(Metrics::for_backend(match config.storage.backend {
            Backend::Duckdb => "duckdb",
            Backend::Parquet => "parquet",
            Backend::Delta => "delta",
        })),
        max_message_bytes: config.limits.max_message_bytes,
        guards: guards.clone(),
        flight_sql,
        schema_messages: Arc::default(),
    });
    let addr = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
    let (http_addr, flight_addr, metrics_addr) = (addr(&http), addr(&flight), addr(&metrics));

    let (stop, stopped) = watch::channel(false);
    let header_timeout = seconds(config.server.header_read_timeout_seconds);
    let mut tasks = JoinSet::new();
    if store.online_is_remote() {
        let syncing = store.clone();
        tasks.spawn(every(
            REGISTRY_SYNC_INTERVAL,
            stopped.clone(),
            "registry sync",
            move || sync_registry(&syncing),
        ));
    }
    if config.limits.warm_training_indexes && config.limits.training_memory_bytes > 0 {
        // Sets whose ingest paused get their training index built before a request asks
        // (`FeatureStore::warm_training_indexes`).
        let warming = store.clone();
        tasks.spawn(every(
            TRAINING_WARM_INTERVAL,
            stopped.clone(),
            "training index warm-up",
            move || {
                warming.warm_training_indexes(TRAINING_WARM_QUIET);
            },
        ));
    }
    serve_http(
        &mut tasks,
        "HTTP",
        http,
        http_tls,
        http::router(state.clone(), authenticator.clone()),
        stopped.clone(),
        header_timeout,
    );
    serve_http(
        &mut tasks,
        "metrics",
        metrics,
        None,
        http::metrics_router(state.clone()),
        stopped.clone(),
        header_timeout,
    );
    let admission = flight::AdmissionLayer {
        guards,
        metrics: state.metrics.clone(),
    };
    let flight_service = flight::service(state, authenticator);
    // HTTP/2 flow control lets a client send only a window ahead of what the server has
    // read. hyper's 1 MiB would hold a DoPut client to a quarter of a 64k-row batch while the
    // one before it is stored; these let it send the next batches meanwhile, which DoPut
    // then stores together (flight/put.rs). A stream's window is below the message limit,
    // which a message may fill anyway.
    let mut flight_server = tonic::transport::Server::builder()
        .initial_stream_window_size(FLIGHT_STREAM_WINDOW)
        .initial_connection_window_size(FLIGHT_CONNECTION_WINDOW);
    if let Some(tls) = flight_tls {
        flight_server = flight_server
            .tls_config(tls)
            .map_err(|e| StartError::Config(format!("server.tls (Flight): {e}")))?;
    }
    let mut stop_flight = stopped.clone();
    let stop_flight = async move {
        let _ = stop_flight.wait_for(|s| *s).await;
    };
    tasks.spawn(async move {
        let result = flight_server
            .layer(admission)
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
        store,
        grace: seconds(config.server.shutdown_grace_seconds),
        tracing: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_parquet_compression_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::ephemeral(dir.path(), Backend::Parquet);
        config.storage.parquet.compression = "zip".into();
        let Err(error) = start(&config).await else {
            panic!("a server started with compression \"zip\"");
        };
        assert!(matches!(error, StartError::Compression(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("invalid configuration: unknown parquet compression \"zip\""),
            "{error}"
        );
    }
}
