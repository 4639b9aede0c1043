//! Server configuration: defaults, overridden by a YAML file, overridden by `FEATHERSTORE_…`
//! environment variables (`__` separates levels), overridden by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub storage: StorageConfig,
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub limits: LimitsConfig,
    pub logging: LoggingConfig,
    pub tracing: TracingConfig,
    pub auth: AuthConfig,
    pub online: OnlineConfig,
    pub flight_sql: FlightSqlConfig,
}

/// `flight_sql`: read-only SQL over the feature sets on the Flight port (docs/flight-sql.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightSqlConfig {
    pub enabled: bool,
    /// Wall time of one query, from its start to its last result batch.
    pub query_timeout_ms: u64,
    /// DuckDB `memory_limit` of one query, e.g. `"1GB"`.
    pub memory_limit: String,
    /// DuckDB worker threads of one query.
    pub threads: usize,
    /// Queries running at once (each with up to `memory_limit`); more are UNAVAILABLE.
    pub max_concurrent_queries: usize,
}

impl Default for FlightSqlConfig {
    fn default() -> Self {
        FlightSqlConfig {
            enabled: true,
            query_timeout_ms: 30_000,
            memory_limit: "1GB".into(),
            threads: 2,
            max_concurrent_queries: 4,
        }
    }
}

/// Where the online values live (docs/configuration.md, docs/deployment.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnlineBackend {
    /// In this process's memory, rebuilt from the offline store at start (the default).
    #[default]
    Memory,
    /// In a Redis or Redis Cluster shared by every server configured with it.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineConfig {
    pub backend: OnlineBackend,
    pub redis: RedisConfig,
}

/// `online.redis`: url, ca_file, cluster, key_prefix, pool_size, timeout_ms.
pub use featherstore_store::online::RedisConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Duckdb,
    Parquet,
    /// Delta Lake tables in an object store (`storage.delta`).
    Delta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: Backend,
    pub duckdb: DuckDbConfig,
    pub parquet: ParquetConfig,
    pub delta: DeltaConfig,
    /// DuckDB connections (concurrent storage calls).
    pub connections: usize,
    /// Of `connections`, how many reads may never take: writes (ingest, create, delete,
    /// Parquet flushes) never wait behind reads. Less than `connections`.
    pub write_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DuckDbConfig {
    pub path: PathBuf,
    /// DuckDB memory limit, e.g. "4GB"; DuckDB's default when unset.
    pub memory_limit: Option<String>,
    /// Apply a set's append log to its table once it holds this many rows...
    pub apply_rows: usize,
    /// ...or once its oldest row is this old.
    pub apply_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetConfig {
    pub directory: PathBuf,
    pub row_group_size: usize,
    /// snappy, gzip, zstd, brotli, lz4 or none.
    pub compression: String,
    /// Flush the append log into Parquet once it holds this many rows...
    pub flush_rows: usize,
    /// ...or once its oldest row is this old.
    pub flush_interval_seconds: u64,
    /// Compact a date partition once it has this many small files.
    pub compact_min_files: usize,
}

/// The Delta Lake backend (docs/configuration.md "storage.delta").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeltaConfig {
    /// Where the tables live: `s3://bucket/prefix` or `file:///dir`. When empty, `--data-dir
    /// DIR` puts them in `file://DIR/delta`.
    pub uri: String,
    /// Passed to the object store (`endpoint`, `region`, `allow_http`, ...); `AWS_*`
    /// environment variables apply too.
    #[serde(deserialize_with = "option_texts")]
    pub storage_options: BTreeMap<String, String>,
    /// Local copies of data files for queries.
    pub cache_dir: PathBuf,
    /// Bytes the cache keeps once no query reads them.
    pub cache_max_bytes: u64,
    /// Compact a date partition once it has this many small files.
    pub compact_min_files: usize,
    /// Files smaller than this are small; a compacted file is one of them merged.
    pub compact_target_bytes: u64,
    /// Checkpoint a table's log once this many commits followed the last checkpoint.
    pub checkpoint_interval: u64,
    /// How often the background thread looks for compaction and checkpoint work.
    pub maintenance_interval_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub http_port: u16,
    pub flight_port: u16,
    /// On SIGTERM/SIGINT: how long requests in progress may take to finish before they are
    /// cut; then the Parquet logs are flushed and the process exits.
    pub shutdown_grace_seconds: f64,
    /// An HTTP client must send a request's headers within this time (slow loris).
    pub header_read_timeout_seconds: f64,
    /// TLS on the Flight and HTTP ports (not on the metrics port); plaintext when unset.
    pub tls: Option<TlsConfig>,
}

/// Server certificate and key (PEM files), and optionally the CA that client certificates
/// must chain to: with it, a client without a valid certificate is refused at the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Bearer-token authentication (docs/security.md). Off when `tokens` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// Lets a server without tokens listen on a non-loopback address.
    pub allow_unauthenticated: bool,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Online, history and training data reads; describing and listing feature sets.
    Read,
    /// Ingest.
    Write,
    /// Creating, updating and deleting feature sets; `/metrics` on the HTTP port.
    Admin,
}

/// One token: exactly one of `token`, `token_file`, `token_env` gives its value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (surrounding whitespace is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    pub scopes: Vec<Scope>,
    /// Glob patterns (`*`, `?`) of the feature sets the token may touch; all when unset.
    #[serde(default)]
    pub feature_sets: Option<Vec<String>>,
}

impl TokenConfig {
    /// A token given inline, for every feature set (embedding the server, tests).
    pub fn inline(name: &str, token: &str, scopes: &[Scope]) -> Self {
        TokenConfig {
            name: name.into(),
            token: Some(token.into()),
            token_file: None,
            token_env: None,
            scopes: scopes.to_vec(),
            feature_sets: None,
        }
    }
}

/// Never prints the token itself: configurations end up in logs and error messages.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("scopes", &self.scopes)
            .field("feature_sets", &self.feature_sets)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub prometheus_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_online_entities: usize,
    /// Largest Flight message or HTTP body accepted.
    pub max_message_bytes: usize,
    /// Time a request may take until its response starts (reads and registry lookups;
    /// writes are never cut mid-way, their waits are bounded instead). DEADLINE_EXCEEDED / 504.
    pub request_timeout_seconds: f64,
    /// A stream (history, training data, DoPut, a request body) that moves no data in either
    /// direction for this long is ended: DEADLINE_EXCEEDED / 504, its storage released.
    pub stream_idle_timeout_seconds: f64,
    /// Concurrent Flight calls (streams included) before new ones get UNAVAILABLE.
    pub max_concurrent_flight_requests: usize,
    /// Concurrent HTTP requests (streamed bodies included) before new ones get 503.
    pub max_concurrent_http_requests: usize,
    /// Concurrent streams (history, training data, DoGet/DoPut/DoExchange) of one client IP
    /// before new ones get RESOURCE_EXHAUSTED / 429.
    pub max_streams_per_client: usize,
    /// Bytes of ingested batches being stored at once (backpressure)...
    pub max_ingest_bytes_in_flight: usize,
    /// ...a batch waits up to this long for room, then gets UNAVAILABLE / 503.
    pub ingest_wait_seconds: f64,
    /// A storage call waits this long for a DuckDB connection, then gets UNAVAILABLE / 503.
    pub storage_wait_seconds: f64,
    /// `/health` answers 503 "degraded" once a storage call has waited this long.
    pub storage_stall_seconds: f64,
    /// Bytes of stored rows training data requests may hold in memory at once (all requests)
    /// to join as of event time without DuckDB; beyond it they join in DuckDB. 0: never.
    pub training_memory_bytes: usize,
    /// Build each set's training index in the background once ingest into it pauses, within
    /// what is free of `training_memory_bytes`, so that the first training data request
    /// after an ingest finds it built.
    pub warm_training_indexes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set.
    pub level: String,
}

/// The OTLP transport of trace export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    /// The OpenTelemetry default.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// OpenTelemetry trace export (OTLP). The standard `OTEL_*` environment variables win over
/// these (as `RUST_LOG` wins over `logging.level`); export is off unless an endpoint is set
/// here or in `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector, e.g. `http://localhost:4317` (gRPC) or `http://localhost:4318`
    /// (HTTP; `/v1/traces` is appended as with `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: OtlpProtocol,
    /// An `OTEL_TRACES_SAMPLER` name: `parentbased_traceidratio` (default: every request of a
    /// sampled caller trace, and `sampler_arg` of the others), `parentbased_always_on`,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_off`.
    pub sampler: String,
    /// The ratio of the `*traceidratio` samplers, 0..=1 (`OTEL_TRACES_SAMPLER_ARG`); 0.1 by
    /// default, which keeps export's cost on online reads under 5% (docs/observability.md).
    pub sampler_arg: Option<f64>,
    /// `service.name` of the exported spans (`OTEL_SERVICE_NAME`).
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: Some(0.1),
            service_name: "featherstore".into(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Duckdb,
            duckdb: DuckDbConfig::default(),
            parquet: ParquetConfig::default(),
            delta: DeltaConfig::default(),
            connections: 4,
            write_connections: 1,
        }
    }
}

impl Default for DuckDbConfig {
    fn default() -> Self {
        let options = featherstore_store::duckdb::DuckDbOptions::default();
        DuckDbConfig {
            path: PathBuf::from("./data/features.db"),
            memory_limit: None,
            apply_rows: options.apply_rows,
            apply_interval_ms: u64::try_from(options.apply_interval.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

impl Default for ParquetConfig {
    /// The store's defaults (`ParquetOptions::default`): they are defined there only.
    fn default() -> Self {
        let options = featherstore_store::parquet::ParquetOptions::default();
        ParquetConfig {
            directory: PathBuf::from("./data/parquet"),
            row_group_size: options.row_group_size,
            compression: options.compression.to_string(),
            flush_rows: options.flush_rows,
            flush_interval_seconds: options.flush_interval.as_secs(),
            compact_min_files: options.compact_min_files,
        }
    }
}

/// Object store options are text, but `allow_http: true` in YAML, or `true` in an environment
/// variable (which figment reads as a boolean), is a boolean by then: scalars are taken as
/// their text.
fn option_texts<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Flag(bool),
        Integer(i64),
        Float(f64),
    }
    let options = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(options
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(text) => text,
                Scalar::Flag(flag) => flag.to_string(),
                Scalar::Integer(n) => n.to_string(),
                Scalar::Float(x) => x.to_string(),
            };
            (key, text)
        })
        .collect())
}

impl Default for DeltaConfig {
    /// The store's defaults (`DeltaOptions::new`): they are defined there only.
    fn default() -> Self {
        let cache_dir = PathBuf::from("./data/cache");
        let options = featherstore_store::delta::DeltaOptions::new("", cache_dir.clone());
        DeltaConfig {
            uri: options.uri,
            storage_options: BTreeMap::new(),
            cache_dir,
            cache_max_bytes: options.cache_max_bytes,
            compact_min_files: options.compact_min_files,
            compact_target_bytes: options.compact_target_bytes,
            checkpoint_interval: options.checkpoint_interval,
            maintenance_interval_seconds: options.maintenance_interval.as_secs_f64(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            http_port: 8080,
            flight_port: 8081,
            tls: None,
            shutdown_grace_seconds: 30.0,
            header_read_timeout_seconds: 10.0,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            prometheus_port: 9090,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            // The store's own default: one definition.
            max_online_entities: featherstore_store::Limits::default().max_online_entities,
            max_message_bytes: 64 * 1024 * 1024,
            request_timeout_seconds: 30.0,
            stream_idle_timeout_seconds: 60.0,
            max_concurrent_flight_requests: 200,
            max_concurrent_http_requests: 200,
            max_streams_per_client: 16,
            max_ingest_bytes_in_flight: 512 * 1024 * 1024,
            ingest_wait_seconds: 10.0,
            storage_wait_seconds: 30.0,
            storage_stall_seconds: 5.0,
            training_memory_bytes: featherstore_store::Limits::default().training_memory_bytes,
            warm_training_indexes: true,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Command-line overrides of `featherstore serve`; `None` leaves the configured value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backend: Option<Backend>,
    /// Holds all state of either backend: `DIR/features.db` or `DIR/parquet/`.
    pub data_dir: Option<PathBuf>,
    pub host: Option<String>,
    pub http_port: Option<u16>,
    pub flight_port: Option<u16>,
    pub metrics_port: Option<u16>,
    /// `--online redis://...`: the Redis online backend at this URL.
    pub online_url: Option<String>,
}

impl Config {
    /// Defaults < YAML file < environment < flags. Unknown keys in the file or in
    /// `FEATHERSTORE_SECTION__KEY` variables are errors; `FEATHERSTORE_` variables without a
    /// `__` are not configuration (tools use names like `FEATHERSTORE_BIN`) and are ignored.
    #[allow(clippy::result_large_err)] // figment's error, whole: it names the offending key
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, figment::Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(figment::Error::from(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Yaml::file_exact(file));
        }
        let env = Env::prefixed("FEATHERSTORE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let mut config: Config = figment.merge(env).extract()?;
        config.apply(overrides);
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(backend) = o.backend {
            self.storage.backend = backend;
        }
        if let Some(dir) = &o.data_dir {
            self.storage.duckdb.path = dir.join("features.db");
            self.storage.parquet.directory = dir.join("parquet");
            self.storage.delta.cache_dir = dir.join("cache");
            if self.storage.delta.uri.is_empty() {
                self.storage.delta.uri = format!("file://{}", dir.join("delta").display());
            }
        }
        if let Some(host) = &o.host {
            self.server.host = host.clone();
        }
        if let Some(port) = o.http_port {
            self.server.http_port = port;
        }
        if let Some(port) = o.flight_port {
            self.server.flight_port = port;
        }
        if let Some(port) = o.metrics_port {
            self.metrics.prometheus_port = port;
        }
        if let Some(url) = &o.online_url {
            self.online.backend = OnlineBackend::Redis;
            self.online.redis.url = url.clone();
        }
    }

    /// A server on loopback with every port picked free (0) and all state in `data_dir`:
    /// for embedding the server in tests, benchmarks and examples.
    pub fn ephemeral(data_dir: &Path, backend: Backend) -> Config {
        let mut config = Config::default();
        config.apply(&Overrides {
            backend: Some(backend),
            data_dir: Some(data_dir.to_path_buf()),
            http_port: Some(0),
            flight_port: Some(0),
            metrics_port: Some(0),
            ..Overrides::default()
        });
        config
    }

    /// Refuses settings that cannot work (a zero limit, a negative time).
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.storage;
        if s.connections == 0 || s.write_connections >= s.connections {
            return Err(format!(
                "storage.write_connections ({}) must be less than storage.connections ({}), which must be at least 1",
                s.write_connections, s.connections
            ));
        }
        if s.backend == Backend::Delta {
            if s.delta.uri.is_empty() {
                return Err(
                    "storage.delta.uri must name where the tables live (s3://bucket/prefix or file:///dir)"
                        .into(),
                );
            }
            let interval = s.delta.maintenance_interval_seconds;
            if !(interval > 0.0 && interval.is_finite()) {
                return Err(format!(
                    "storage.delta.maintenance_interval_seconds must be a positive number of seconds, not {interval}"
                ));
            }
        }
        let q = &self.flight_sql;
        if q.query_timeout_ms == 0
            || q.threads == 0
            || q.max_concurrent_queries == 0
            || q.memory_limit.trim().is_empty()
        {
            return Err("flight_sql.query_timeout_ms, flight_sql.threads and \
                 flight_sql.max_concurrent_queries must be at least 1, and \
                 flight_sql.memory_limit a DuckDB memory size such as \"1GB\""
                .into());
        }
        let l = &self.limits;
        for (key, value) in [
            (
                "limits.max_concurrent_flight_requests",
                l.max_concurrent_flight_requests,
            ),
            (
                "limits.max_concurrent_http_requests",
                l.max_concurrent_http_requests,
            ),
            ("limits.max_streams_per_client", l.max_streams_per_client),
            (
                "limits.max_ingest_bytes_in_flight",
                l.max_ingest_bytes_in_flight,
            ),
            ("limits.max_message_bytes", l.max_message_bytes),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        for (key, value) in [
            ("limits.request_timeout_seconds", l.request_timeout_seconds),
            (
                "limits.stream_idle_timeout_seconds",
                l.stream_idle_timeout_seconds,
            ),
            ("limits.ingest_wait_seconds", l.ingest_wait_seconds),
            ("limits.storage_wait_seconds", l.storage_wait_seconds),
            ("limits.storage_stall_seconds", l.storage_stall_seconds),
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace_seconds,
            ),
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
            ),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(format!(
                    "{key} must be a positive number of seconds, not {value}"
                ));
            }
        }
        Ok(())
    }

    /// The directory that holds the configured backend's state.
    pub fn data_dir(&self) -> PathBuf {
        match self.storage.backend {
            Backend::Duckdb => self
                .storage
                .duckdb
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Backend::Parquet => self.storage.parquet.directory.clone(),
            Backend::Delta => self
                .storage
                .delta
                .cache_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn object_store_options_are_text_whatever_their_yaml_or_env_type() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.yaml",
                "storage:\n  delta:\n    storage_options:\n      allow_http: true\n      max_retries: 2\n",
            )?;
            jail.set_env(
                "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__VIRTUAL_HOSTED_STYLE_REQUEST",
                "false",
            );
            jail.set_env(
                "FEATHERSTORE_STORAGE__DELTA__STORAGE_OPTIONS__ENDPOINT",
                "http://127.0.0.1:9000",
            );
            let config = Config::load(Some(Path::new("c.yaml")), &Overrides::default())?;
            let options = &config.storage.delta.storage_options;
            assert_eq!(options["allow_http"], "true");
            assert_eq!(options["max_retries"], "2");
            assert_eq!(options["virtual_hosted_style_request"], "false");
            assert_eq!(options["endpoint"], "http://127.0.0.1:9000");
            Ok(())
        });
    }

    #[test]
    fn layers_file_env_and_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.yaml",
                "storage:\n  backend: parquet\n  parquet:\n    compression: zstd\nserver:\n  http_port: 1000\n",
            )?;
            jail.set_env("FEATHERSTORE_SERVER__HTTP_PORT", "2000");
            jail.set_env("FEATHERSTORE_BIN", "/ignored");
            let flags = Overrides {
                flight_port: Some(3000),
                data_dir: Some("/d".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("c.yaml")), &flags)?;
            assert_eq!(config.storage.backend, Backend::Parquet);
            assert_eq!(config.storage.parquet.compression, "zstd");
            assert_eq!(config.server.http_port, 2000);
            assert_eq!(config.server.flight_port, 3000);
            assert_eq!(
                config.storage.parquet.directory,
                PathBuf::from("/d/parquet")
            );
            assert_eq!(config.metrics.prometheus_port, 9090);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "storage:\n  backnd: parquet\n")?;
            let err = Config::load(Some(Path::new("c.yaml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("backnd"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("FEATHERSTORE_SERVER__HTTP_PROT", "1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("http_prot"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn tracing_section_from_file_and_env() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.yaml",
                "tracing:\n  endpoint: http://collector:4317\n  protocol: grpc\n  sampler: traceidratio\n  sampler_arg: 0.25\n",
            )?;
            jail.set_env("FEATHERSTORE_TRACING__SERVICE_NAME", "features-eu");
            let config = Config::load(Some(Path::new("c.yaml")), &Overrides::default())?;
            assert_eq!(
                config.tracing.endpoint.as_deref(),
                Some("http://collector:4317")
            );
            assert_eq!(config.tracing.protocol, OtlpProtocol::Grpc);
            assert_eq!(config.tracing.sampler, "traceidratio");
            assert_eq!(config.tracing.sampler_arg, Some(0.25));
            assert_eq!(config.tracing.service_name, "features-eu");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("FEATHERSTORE_TRACING__PROTOCOL", "http/protobuf");
            let config = Config::load(None, &Overrides::default())?;
            assert_eq!(config.tracing.protocol, OtlpProtocol::HttpProtobuf);
            assert_eq!(config.tracing.endpoint, None);
            jail.set_env("FEATHERSTORE_TRACING__ENDPOINTT", "x");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("endpointt"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::default();
        assert_eq!(
            config.storage.duckdb.path,
            PathBuf::from("./data/features.db")
        );
        assert_eq!(
            (
                config.server.http_port,
                config.server.flight_port,
                config.metrics.prometheus_port
            ),
            (8080, 8081, 9090)
        );
    }

    #[test]
    fn the_documented_parquet_settings_are_the_stores_defaults() {
        let doc = include_str!("../../../docs/configuration.md");
        let yaml = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|block| block.split("```").next())
            .expect("docs/configuration.md starts with the YAML of every setting");
        let documented: Config = Figment::from(Yaml::string(yaml)).extract().unwrap();
        assert_eq!(documented.storage.parquet, ParquetConfig::default());
        assert_eq!(documented.storage.delta, DeltaConfig::default());
        assert_eq!(documented.online, OnlineConfig::default());
    }

    #[test]
    fn online_section_from_file_env_and_flag() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.yaml",
                "online:\n  redis:\n    cluster: true\n    key_prefix: team\n",
            )?;
            jail.set_env("FEATHERSTORE_ONLINE__REDIS__TIMEOUT_MS", "50");
            let flags = Overrides {
                online_url: Some("redis://10.0.0.1:7000".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("c.yaml")), &flags)?;
            assert_eq!(config.online.backend, OnlineBackend::Redis);
            assert_eq!(
                config.online.redis,
                RedisConfig {
                    url: "redis://10.0.0.1:7000".into(),
                    ca_file: None,
                    cluster: true,
                    key_prefix: "team".into(),
                    pool_size: 4,
                    timeout_ms: 50,
                }
            );
            let memory = Config::load(None, &Overrides::default())?;
            assert_eq!(memory.online.backend, OnlineBackend::Memory);
            Ok(())
        });
    }
}
