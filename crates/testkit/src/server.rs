//! A real server in this process (the server crate's [`RunningServer`]) on loopback port 0,
//! with a temporary data directory.

use std::net::SocketAddr;
use std::time::Duration;

use arrow_flight::FlightClient;
use featherstore_server::config::{Backend, Config};
use featherstore_server::RunningServer;

use crate::{flight, http};

/// Both backends, for suites that run every case on each.
pub const BACKENDS: [Backend; 2] = [Backend::Duckdb, Backend::Parquet];

/// How long a server may take to start (open storage, rebuild the online index, bind).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A server on port 0 with its own data directory.
///
/// Stop it with [`shutdown`](Self::shutdown) (or [`restart`](Self::restart)): requests finish,
/// storage is flushed, trace export is flushed. Dropping it instead aborts the server's tasks
/// (the safety net when a test panics); the data directory goes with it either way.
pub struct TestServer {
    /// `None` once shut down.
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    /// `http://host:port` of the HTTP API.
    pub http: String,
    /// `http://host:port` of the Flight API.
    pub flight_addr: String,
}

impl TestServer {
    /// A server with the default (ephemeral) configuration in a new temporary directory.
    pub async fn start(backend: Backend) -> Self {
        Self::start_in(crate::tempdir(), backend, |_| {}).await
    }

    /// A server on `dir`, its configuration changed by `adjust` first.
    pub async fn start_in(
        dir: tempfile::TempDir,
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::ephemeral(dir.path(), backend);
        adjust(&mut config);
        let server = start_config(&config).await;
        TestServer {
            http: format!("http://{}", server.http_addr),
            flight_addr: format!("http://{}", server.flight_addr),
            server: Some(server),
            dir,
            backend,
        }
    }

    /// A server with `adjust` applied to its configuration, in a new temporary directory.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(crate::tempdir(), backend, adjust).await
    }

    /// A server holding the feature set of `spec` (JSON), and a Flight client of it.
    pub async fn with_set(backend: Backend, spec: &str) -> (Self, FlightClient) {
        let server = Self::start(backend).await;
        let mut client = server.flight().await;
        flight::create_set(&mut client, spec).await;
        (server, client)
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("the server is running")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.running().http_addr
    }

    pub fn flight_socket(&self) -> SocketAddr {
        self.running().flight_addr
    }

    /// Shuts the server down cleanly (requests finish, storage and trace export flush);
    /// the data directory is returned for a restart or a look at the files.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.dir
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(self) -> Self {
        let backend = self.backend;
        let dir = self.shutdown().await;
        Self::start_in(dir, backend, |_| {}).await
    }

    /// An arrow-flight client on a connection of its own.
    pub async fn flight(&self) -> FlightClient {
        flight::connect(&self.flight_addr).await
    }

    /// The project's own client on a connection of its own.
    pub async fn client(&self) -> featherstore_client::Client {
        featherstore_client::Client::connect(self.flight_addr.as_str())
            .await
            .expect("the client connects")
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.running().metrics_addr)
    }

    /// The Prometheus text of the metrics port.
    pub async fn metrics_text(&self) -> String {
        http::text(&self.metrics_url()).await
    }
}

/// Starts a server with `config`, within [`STARTUP_TIMEOUT`]; panics with the start error.
pub async fn start_config(config: &Config) -> RunningServer {
    match tokio::time::timeout(STARTUP_TIMEOUT, featherstore_server::start(config)).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => panic!("the server did not start: {e}"),
        Err(_) => panic!("the server did not start within {STARTUP_TIMEOUT:?}"),
    }
}
