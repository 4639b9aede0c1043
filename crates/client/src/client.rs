//! [`Client`]: the FeatherStore API over Arrow Flight.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor, Ticket};
use featherstore_core::{FeatureServiceSpec, FeatureSetSpec};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::to_flight;
use crate::request::{
    names, Entities, HistoryRequest, MultiOnlineRequest, OnlineRequest, Timestamp,
};
use crate::response::{
    AckStream, BatchStream, FeatureSetInfo, FeatureSetUpdate, IngestAck, IngestSummary,
    RebuildProgress,
};
use crate::{Error, Result, TrainingDataOptions};

/// The default Flight address of a local server.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8081";

/// The bearer token of a client that is given none (docs/security.md).
pub const TOKEN_ENV: &str = "FEATHERSTORE_TOKEN";

/// A PEM file of the CA that signed the server's certificate, for a client given none.
pub const CA_FILE_ENV: &str = "FEATHERSTORE_CA_FILE";

/// Largest message accepted from the server unless configured (the server's own default limit).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows for what the server sends (training data, history, online
/// answers): hyper's 2 MiB stream window let the server send only that far ahead of what the
/// client had read, so a large answer waited on a window update every megabyte or so.
const RECEIVE_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const RECEIVE_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// A connection to a FeatherStore server's Arrow Flight API.
///
/// Cheap to clone: clones share one HTTP/2 connection, and every method takes `&self`, so one
/// client can serve many tasks at once.
///
/// ```no_run
/// use featherstore_client::Client;
///
/// # async fn run() -> featherstore_client::Result<()> {
/// let client = Client::connect("http://localhost:8081").await?;
/// let values = client.get_features("user_features", ["u1", "u2"]).await?;
/// println!("{values:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: FlightServiceClient<Channel>,
    address: String,
    /// `Bearer <token>`, sent with every call.
    authorization: Option<AsciiMetadataValue>,
}

/// Connection settings for a [`Client`]; [`Client::connect`] uses the defaults.
///
/// ```no_run
/// use std::time::Duration;
/// use featherstore_client::Client;
///
/// # async fn run() -> featherstore_client::Result<()> {
/// let client = Client::builder("grpc://localhost:8081")
///     .connect_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(30))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    address: String,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    max_message_bytes: usize,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    identity_files: Option<(PathBuf, PathBuf)>,
}

impl ClientBuilder {
    /// The bearer token sent with every call (default: `FEATHERSTORE_TOKEN`, else none).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A PEM file of the CA that signed the server's certificate, for `https://` /
    /// `grpc+tls://` addresses (default: `FEATHERSTORE_CA_FILE`, else the public web roots).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM files), for servers that require one
    /// (`server.tls.client_ca_file`).
    pub fn client_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.identity_files = Some((cert_file.into(), key_file.into()));
        self
    }

    /// Bounds the time to establish the connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Bounds each call (default: none). A call over it fails with `CANCELLED` or
    /// `DEADLINE_EXCEEDED`; for long streams (history, training data) leave it unset.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Largest message accepted from the server (default 64 MiB).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    fn endpoint(&self) -> Result<(Endpoint, String)> {
        let (uri, tls) = normalize_address(&self.address)?;
        let mut endpoint =
            Endpoint::from_shared(uri.clone()).map_err(|e| Error::InvalidAddress {
                address: self.address.clone(),
                reason: error_chain(&e),
            })?;
        endpoint = endpoint
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .initial_stream_window_size(RECEIVE_STREAM_WINDOW)
            .initial_connection_window_size(RECEIVE_CONNECTION_WINDOW);
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if tls {
            endpoint = endpoint
                .tls_config(self.tls_config()?)
                .map_err(|e| Error::Setting(format!("TLS: {}", error_chain(&e))))?;
        } else if self.ca_file.is_some() || self.identity_files.is_some() {
            return Err(Error::InvalidAddress {
                address: self.address.clone(),
                reason:
                    "a CA file or client certificate needs a TLS address (https:// or grpc+tls://)"
                        .into(),
            });
        }
        Ok((endpoint, uri))
    }

    fn tls_config(&self) -> Result<ClientTlsConfig> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| Error::Setting(format!("reading {what} {}: {e}", path.display())))
        };
        let ca_file = self
            .ca_file
            .clone()
            .or_else(|| std::env::var_os(CA_FILE_ENV).map(PathBuf::from));
        let mut config = ClientTlsConfig::new();
        config = match ca_file {
            Some(path) => config.ca_certificate(Certificate::from_pem(read("the CA file", &path)?)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity_files {
            config = config.identity(Identity::from_pem(
                read("the client certificate", cert)?,
                read("the client key", key)?,
            ));
        }
        Ok(config)
    }

    fn authorization(&self) -> Result<Option<AsciiMetadataValue>> {
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        token
            .map(|token| {
                // The token itself stays out of the message: errors get printed.
                let invalid =
                    || Error::Setting("the token must be printable ASCII without spaces".into());
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid());
                }
                format!("Bearer {token}").parse().map_err(|_| invalid())
            })
            .transpose()
    }

    fn client(&self, channel: Channel, uri: String) -> Result<Client> {
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(usize::MAX);
        Ok(Client {
            inner,
            address: uri,
            authorization: self.authorization()?,
        })
    }

    /// Connects now: fails if the server cannot be reached.
    pub async fn connect(self) -> Result<Client> {
        let (endpoint, uri) = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|e| Error::Connect {
            address: uri.clone(),
            reason: error_chain(&e),
        })?;
        self.client(channel, uri)
    }

    /// Connects on first use (and reconnects as needed); only the address is checked now.
    pub fn connect_lazy(self) -> Result<Client> {
        let (endpoint, uri) = self.endpoint()?;
        self.client(endpoint.connect_lazy(), uri)
    }
}

/// Accepts `http://host:port`, `grpc://host:port` (as pyarrow writes it), `grpc+tcp://...` and
/// a bare `host:port`; `https://` and `grpc+tls://` for TLS. The URI tonic takes, and whether
/// it is TLS.
fn normalize_address(address: &str) -> Result<(String, bool)> {
    let invalid = |reason: &str| Error::InvalidAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let address = address.trim();
    if address.is_empty() {
        return Err(invalid("it is empty"));
    }
    let (rest, tls) = match address.split_once("://") {
        None => (address, false),
        Some(("http" | "grpc" | "grpc+tcp", rest)) => (rest, false),
        Some(("https" | "grpc+tls", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "unknown scheme {scheme:?}; expected http://, grpc://, https:// or grpc+tls://"
            )))
        }
    };
    let scheme = if tls { "https" } else { "http" };
    Ok((format!("{scheme}://{}", rest.trim_end_matches('/')), tls))
}

/// An error with its causes, `outer: inner: ...` (tonic's transport errors say little alone).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = std::error::Error::source(source.expect("checked"));
    }
    text
}

impl Client {
    /// Connects to a server's Flight address, such as `http://localhost:8081`.
    pub async fn connect(address: impl Into<String>) -> Result<Client> {
        Client::builder(address).connect().await
    }

    /// Connection settings, for timeouts and message size limits.
    pub fn builder(address: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            address: address.into(),
            connect_timeout: None,
            timeout: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            token: None,
            ca_file: None,
            identity_files: None,
        }
    }

    /// A client on a channel made elsewhere (with TLS, interceptors, ...), without a token.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            inner: FlightServiceClient::new(channel)
                .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(usize::MAX),
            address: String::new(),
            authorization: None,
        }
    }

    /// The server address, as normalized (`http://host:port`, `https://host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A plain Arrow Flight client on the same connection, for calls this API does not wrap
    /// (`ListFlights`, `GetFlightInfo`, ...); it sends the token too.
    pub fn flight_client(&self) -> FlightClient {
        let mut client = FlightClient::new_from_inner(self.inner.clone());
        if let Some(authorization) = &self.authorization {
            client
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        client
    }

    // ---- feature sets --------------------------------------------------------------------

    /// Stores a feature set and returns the stored spec (with `version` and `created_at`).
    /// The same spec again is a no-op; a different spec under an existing name fails with
    /// `ALREADY_EXISTS` ([`Error::is_already_exists`]).
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
    /// use featherstore_client::FeatureSetSpec;
    ///
    /// let spec = FeatureSetSpec::from_json(br#"{
    ///     "name": "user_features",
    ///     "entity": {"name": "user_id", "type": "string"},
    ///     "features": [{"name": "age", "type": "int64"}, {"name": "ctr_7d", "type": "float32"}],
    ///     "ttl_seconds": 86400
    /// }"#).expect("a valid spec");
    /// let stored = client.create_feature_set(&spec).await?;
    /// assert_eq!(stored.version, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_feature_set(&self, spec: &FeatureSetSpec) -> Result<FeatureSetSpec> {
        let body = serde_json::to_vec(spec).expect("specs serialize");
        self.action("create_feature_set", body).await
    }

    /// The stored spec of a set with its statistics; `NOT_FOUND` for an unknown set.
    pub async fn get_feature_set(&self, name: &str) -> Result<FeatureSetInfo> {
        let value: Value = self
            .action("get_feature_set", json!({ "name": name }).to_string())
            .await?;
        FeatureSetInfo::from_json(value)
    }

    /// Changes a stored set in place as the evolution rules allow (added features, TTL,
    /// descriptions, tags): the stored spec and what changed. `INVALID_ARGUMENT` for a change
    /// that needs a new feature set; the same spec again changes nothing.
    pub async fn update_feature_set(&self, spec: &FeatureSetSpec) -> Result<FeatureSetUpdate> {
        let body = serde_json::to_vec(spec).expect("specs serialize");
        self.action("update_feature_set", body).await
    }

    /// One stored version of a set's spec, with the set's statistics; `NOT_FOUND` for an
    /// unknown set or version.
    pub async fn get_feature_set_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<FeatureSetInfo> {
        let body = json!({ "name": name, "version": version }).to_string();
        let value: Value = self.action("get_feature_set", body).await?;
        FeatureSetInfo::from_json(value)
    }

    /// Every stored version of a set's spec, oldest first.
    pub async fn list_feature_set_versions(&self, name: &str) -> Result<Vec<FeatureSetSpec>> {
        let body = json!({ "name": name }).to_string();
        self.action("list_feature_set_versions", body).await
    }

    /// Every stored spec.
    pub async fn list_feature_sets(&self) -> Result<Vec<FeatureSetSpec>> {
        self.action("list_feature_sets", b"{}".to_vec()).await
    }

    /// Deletes a set and all its data; `NOT_FOUND` for an unknown set.
    pub async fn delete_feature_set(&self, name: &str) -> Result<()> {
        let answer: Value = self
            .action("delete_feature_set", json!({ "name": name }).to_string())
            .await?;
        match answer.get("deleted") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(Error::protocol(format!(
                "delete_feature_set answered {answer}; expected {{\"deleted\": true}}"
            ))),
        }
    }

    /// Writes a set's latest values from the server's offline store into the online store
    /// again (after Redis lost its data, say; scope `admin`), calling `progress` as the
    /// server reports it. Returns the last report (`done`, with the rows written).
    /// `NOT_FOUND` for an unknown set; the server's error if the rebuild fails part way
    /// (values written before stay: each is the newest the offline store holds).
    pub async fn rebuild_online(
        &self,
        name: &str,
        mut progress: impl FnMut(&RebuildProgress),
    ) -> Result<RebuildProgress> {
        let body = json!({ "name": name }).to_string();
        let mut results = self
            .flight_client()
            .do_action(Action::new("rebuild_online", body))
            .await?;
        while let Some(result) = results.try_next().await? {
            let report: RebuildProgress = serde_json::from_slice(&result).map_err(|e| {
                Error::protocol(format!("rebuild_online answered invalid JSON: {e}"))
            })?;
            progress(&report);
            if report.done {
                return Ok(report);
            }
        }
        Err(Error::protocol(
            "rebuild_online ended without its final result",
        ))
    }

    // ---- feature services ----------------------------------------------------------------

    /// Stores a feature service (a named list of `set:feature` / `set:*` references) and
    /// returns it as stored (with `created_at`). Every referenced set and feature must exist
    /// (`NOT_FOUND`); the same service again is a no-op, a different one under an existing
    /// name fails with `ALREADY_EXISTS`.
    pub async fn create_feature_service(
        &self,
        service: &FeatureServiceSpec,
    ) -> Result<FeatureServiceSpec> {
        let body = serde_json::to_vec(service).expect("services serialize");
        self.action("create_feature_service", body).await
    }

    /// A stored feature service; `NOT_FOUND` for an unknown one.
    pub async fn get_feature_service(&self, name: &str) -> Result<FeatureServiceSpec> {
        let body = json!({ "name": name }).to_string();
        self.action("get_feature_service", body).await
    }

    /// Every stored feature service, by name.
    pub async fn list_feature_services(&self) -> Result<Vec<FeatureServiceSpec>> {
        self.action("list_feature_services", b"{}".to_vec()).await
    }

    /// Deletes a feature service (its sets and their data stay); `NOT_FOUND` for an unknown
    /// one.
    pub async fn delete_feature_service(&self, name: &str) -> Result<()> {
        let answer: Value = self
            .action(
                "delete_feature_service",
                json!({ "name": name }).to_string(),
            )
            .await?;
        match answer.get("deleted") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(Error::protocol(format!(
                "delete_feature_service answered {answer}; expected {{\"deleted\": true}}"
            ))),
        }
    }

    /// The Arrow schema of a set's stored rows: entity, features in spec order, timestamp.
    pub async fn get_schema(&self, name: &str) -> Result<SchemaRef> {
        let descriptor = FlightDescriptor::new_path(vec![name.to_string()]);
        let schema = self.flight_client().get_schema(descriptor).await?;
        Ok(Arc::new(schema))
    }

    async fn action<T: DeserializeOwned>(
        &self,
        name: &str,
        body: impl Into<bytes::Bytes>,
    ) -> Result<T> {
        let mut results = self
            .flight_client()
            .do_action(Action::new(name, body.into()))
            .await?;
        let first = results
            .try_next()
            .await?
            .ok_or_else(|| Error::protocol(format!("{name} answered no result")))?;
        serde_json::from_slice(&first)
            .map_err(|e| Error::protocol(format!("{name} answered invalid JSON: {e}")))
    }

    // ---- ingest ----------------------------------------------------------------------------

    /// Ingests one batch, stored whole or not at all, durably before this returns.
    ///
    /// The batch holds the entity column, the timestamp column and any subset of the declared
    /// features (PROTOCOL.md, "Ingest rules"). It travels as one Flight message, so it must fit
    /// the server's message limit (64 MiB by default; over it the call fails with
    /// `RESOURCE_EXHAUSTED`); split larger data with [`Client::ingest_batches`]. An empty batch
    /// stores nothing and is not sent.
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
    /// use std::sync::Arc;
    /// use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    ///
    /// let batch = RecordBatch::try_from_iter([
    ///     ("user_id", Arc::new(StringArray::from(vec!["u1", "u2"])) as ArrayRef),
    ///     ("age", Arc::new(Int64Array::from(vec![31, 45])) as ArrayRef),
    ///     ("event_timestamp", Arc::new(
    ///         TimestampMicrosecondArray::from(vec![1_767_225_600_000_000, 1_767_225_600_000_000])
    ///             .with_timezone("UTC")) as ArrayRef),
    /// ])?;
    /// let ack = client.ingest_features("user_features", batch).await?;
    /// assert_eq!(ack.rows, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ingest_features(
        &self,
        feature_set: &str,
        batch: RecordBatch,
    ) -> Result<IngestAck> {
        if batch.num_rows() == 0 {
            return Ok(IngestAck { batch: 0, rows: 0 });
        }
        let acks: Vec<IngestAck> = self
            .ingest_stream(feature_set, futures::stream::iter([Ok(batch)]))
            .await?
            .try_collect()
            .await?;
        match acks.as_slice() {
            [ack] => Ok(*ack),
            other => Err(Error::protocol(format!(
                "ingest of one batch answered {} acknowledgements",
                other.len()
            ))),
        }
    }

    /// Ingests batches in one call and waits for all of them; each batch is stored whole or
    /// not at all. On an error, the batches acknowledged before it stay stored (use
    /// [`Client::ingest_stream`] to see which).
    pub async fn ingest_batches<I>(&self, feature_set: &str, batches: I) -> Result<IngestSummary>
    where
        I: IntoIterator<Item = RecordBatch>,
        I::IntoIter: Send + 'static,
    {
        let batches = futures::stream::iter(batches.into_iter().map(Ok));
        let mut acks = self.ingest_stream(feature_set, batches).await?;
        let mut summary = IngestSummary::default();
        while let Some(ack) = acks.try_next().await? {
            summary.batches += 1;
            summary.rows += ack.rows;
        }
        Ok(summary)
    }

    /// Streams batches into a set over one Flight `DoPut`, answering one [`IngestAck`] per
    /// batch as it becomes durable. All batches of one call have the same columns and types.
    /// Batches are sent as the answer stream is polled, with
    /// back-pressure: a producer faster than the server waits. Empty batches are skipped (and
    /// get no acknowledgement). An error of the input stream stops the call and is returned
    /// as is, after the acknowledgements of the batches sent before it.
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client, batches: Vec<arrow::array::RecordBatch>)
    /// # -> featherstore_client::Result<()> {
    /// use futures::TryStreamExt;
    ///
    /// let input = futures::stream::iter(batches.into_iter().map(Ok));
    /// let mut acks = client.ingest_stream("user_features", input).await?;
    /// while let Some(ack) = acks.try_next().await? {
    ///     println!("batch {} stored: {} rows", ack.batch, ack.rows);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ingest_stream<S>(&self, feature_set: &str, batches: S) -> Result<AckStream>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + 'static,
    {
        let mut batches = Box::pin(batches.try_filter(|b| std::future::ready(b.num_rows() > 0)));
        // The descriptor travels on the first message, so an empty input sends nothing at all.
        let Some(first) = batches.next().await else {
            return Ok(futures::stream::empty().boxed());
        };
        // An input that fails at once sends nothing (the server would only see an empty call).
        let first = first?;
        let batches = same_schema(futures::stream::once(async { Ok(first) }).chain(batches));
        let descriptor = FlightDescriptor::new_path(vec![feature_set.to_string()]);
        // An input error ends the request cleanly and is kept aside: the server acknowledges
        // every batch sent before it, then the error ends the answer. (FlightClient would
        // report it at once, before acknowledgements already on their way.)
        let input_error: Arc<Mutex<Option<Error>>> = Arc::default();
        let slot = input_error.clone();
        let request = encode(batches, descriptor).scan((), move |_, message| {
            std::future::ready(match message {
                Ok(message) => Some(message),
                Err(e) => {
                    *slot.lock() = Some(Error::from(e));
                    None
                }
            })
        });
        let mut request = tonic::Request::new(request);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let answers = self.inner.clone().do_put(request).await?.into_inner();
        let mut expected = 0u64;
        let acks = answers.map(move |answer| {
            let answer = answer?;
            let ack: IngestAck = serde_json::from_slice(&answer.app_metadata).map_err(|e| {
                Error::protocol(format!(
                    "invalid DoPut acknowledgement {:?}: {e}",
                    String::from_utf8_lossy(&answer.app_metadata)
                ))
            })?;
            if ack.batch != expected {
                return Err(Error::protocol(format!(
                    "acknowledgement of batch {} where batch {expected} was due",
                    ack.batch
                )));
            }
            expected += 1;
            Ok(ack)
        });
        let last = futures::stream::once(async move { input_error.lock().take().map(Err) })
            .filter_map(std::future::ready);
        Ok(acks.chain(last).boxed())
    }

    // ---- online ----------------------------------------------------------------------------

    /// The online value of each entity, all features: one row per entity in request order
    /// (duplicates included; an unknown entity gets its key and nulls). Columns: entity,
    /// features in spec order, timestamp.
    ///
    /// Entity keys are strings or integers by the set's entity type:
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
    /// let users = client.get_features("user_features", ["u1", "u2"]).await?;
    /// let ids: Vec<i64> = vec![17, 42];
    /// let merchants = client.get_features("merchant_features", &ids).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_features(
        &self,
        feature_set: &str,
        entities: impl Into<Entities>,
    ) -> Result<RecordBatch> {
        self.online(OnlineRequest::new(feature_set, entities)).await
    }

    /// As [`Client::get_features`], for the named features only, in the order given.
    pub async fn get_named_features<I, S>(
        &self,
        feature_set: &str,
        entities: impl Into<Entities>,
        features: I,
    ) -> Result<RecordBatch>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.online(OnlineRequest::new(feature_set, entities).features(features))
            .await
    }

    /// An online read as one batch (see [`OnlineRequest`]).
    pub async fn online(&self, request: OnlineRequest) -> Result<RecordBatch> {
        self.do_get(&request.to_ticket()).await?.concat().await
    }

    /// An online read across feature sets (see [`MultiOnlineRequest`]) as one batch.
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
    /// use featherstore_client::MultiOnlineRequest;
    ///
    /// let rows = client
    ///     .online_multi(
    ///         MultiOnlineRequest::service("fraud_model")
    ///             .entity("user_id", ["u1"])
    ///             .entity("merchant_id", vec![7_i64]),
    ///     )
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn online_multi(&self, request: MultiOnlineRequest) -> Result<RecordBatch> {
        self.do_get(&request.to_ticket()).await?.concat().await
    }

    // ---- history ---------------------------------------------------------------------------

    /// Every row of the entities with `start <= event time < end`, all features, ordered by
    /// entity, then event time, then ingest order, as one batch.
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
    /// use featherstore_client::Timestamp;
    ///
    /// let rows = client
    ///     .get_feature_history(
    ///         "user_features",
    ///         "u1",
    ///         Timestamp::parse("2026-01-01").unwrap(),
    ///         Timestamp::now(),
    ///     )
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_feature_history(
        &self,
        feature_set: &str,
        entities: impl Into<Entities>,
        start: impl Into<Timestamp>,
        end: impl Into<Timestamp>,
    ) -> Result<RecordBatch> {
        let request = HistoryRequest::new(feature_set)
            .entities(entities)
            .start(start)
            .end(end);
        self.history(request).await?.concat().await
    }

    /// A history read streamed batch by batch (see [`HistoryRequest`] and [`BatchStream`]).
    pub async fn history(&self, request: HistoryRequest) -> Result<BatchStream> {
        self.do_get(&request.to_ticket()).await
    }

    async fn do_get(&self, ticket: &featherstore_core::Ticket) -> Result<BatchStream> {
        let ticket = serde_json::to_vec(ticket).expect("tickets serialize");
        let stream = self.flight_client().do_get(Ticket::new(ticket)).await?;
        Ok(BatchStream::new(stream))
    }

    // ---- training data ---------------------------------------------------------------------

    /// Point-in-time training data: sends the entity rows, answers the same rows in the same
    /// order with the point-in-time value of each requested feature appended (PROTOCOL.md,
    /// "Training data"). Features are `set:feature` or `set:*`.
    ///
    /// The entity rows hold each referenced set's entity column, the timestamp column (see
    /// [`TrainingDataOptions::timestamp`]) and any other columns, which pass through.
    ///
    /// ```no_run
    /// # async fn run(client: featherstore_client::Client, entity_rows: arrow::array::RecordBatch)
    /// # -> featherstore_client::Result<()> {
    /// use futures::TryStreamExt;
    /// use featherstore_client::TrainingDataOptions;
    ///
    /// let mut rows = client
    ///     .training_data(
    ///         vec![entity_rows],
    ///         ["user_features:age", "merchant_features:*"],
    ///         TrainingDataOptions::default(),
    ///     )
    ///     .await?;
    /// while let Some(batch) = rows.try_next().await? {
    ///     println!("{} training rows", batch.num_rows());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn training_data<B, F, S>(
        &self,
        entity_batches: B,
        features: F,
        options: TrainingDataOptions,
    ) -> Result<BatchStream>
    where
        B: IntoIterator<Item = RecordBatch>,
        B::IntoIter: Send + 'static,
        F: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let batches = futures::stream::iter(entity_batches.into_iter().map(Ok));
        self.training_data_stream(batches, features, options).await
    }

    /// As [`Client::training_data`], with the entity rows read from a stream as the server
    /// consumes them (for inputs larger than memory).
    pub async fn training_data_stream<B, F, S>(
        &self,
        entity_batches: B,
        features: F,
        options: TrainingDataOptions,
    ) -> Result<BatchStream>
    where
        B: Stream<Item = Result<RecordBatch>> + Send + 'static,
        F: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let features = names(features);
        if features.is_empty() {
            return Err(Error::InvalidArgument(
                "training data needs at least one feature, as \"set:feature\" or \"set:*\"".into(),
            ));
        }
        self.exchange_training(entity_batches, options.command(&features))
            .await
    }

    /// As [`Client::training_data`], reading the features of a stored feature service.
    pub async fn training_data_for_service<B>(
        &self,
        entity_batches: B,
        feature_service: &str,
        options: TrainingDataOptions,
    ) -> Result<BatchStream>
    where
        B: IntoIterator<Item = RecordBatch>,
        B::IntoIter: Send + 'static,
    {
        let batches = futures::stream::iter(entity_batches.into_iter().map(Ok));
        self.training_data_stream_for_service(batches, feature_service, options)
            .await
    }

    /// As [`Client::training_data_for_service`], with the entity rows read from a stream as
    /// the server consumes them.
    pub async fn training_data_stream_for_service<B>(
        &self,
        entity_batches: B,
        feature_service: &str,
        options: TrainingDataOptions,
    ) -> Result<BatchStream>
    where
        B: Stream<Item = Result<RecordBatch>> + Send + 'static,
    {
        let command = options.service_command(feature_service);
        self.exchange_training(entity_batches, command).await
    }

    async fn exchange_training<B>(&self, entity_batches: B, command: Value) -> Result<BatchStream>
    where
        B: Stream<Item = Result<RecordBatch>> + Send + 'static,
    {
        let mut batches = Box::pin(entity_batches);
        // The command travels on the first message, which needs a schema: at least one batch
        // (it may be empty).
        let first = batches.next().await.ok_or_else(|| {
            Error::InvalidArgument(
                "training data needs at least one entity batch (an empty one gives an empty result)"
                    .into(),
            )
        })??;
        let batches = same_schema(futures::stream::once(async { Ok(first) }).chain(batches));
        let descriptor = FlightDescriptor::new_cmd(command.to_string());
        let data = encode(batches, descriptor);
        let stream = self.flight_client().do_exchange(data).await?;
        Ok(BatchStream::new(stream))
    }
}

/// Checks that every batch has the columns (names and types) of the first: one Flight stream
/// carries one schema, and a later batch would otherwise be sent under the first one's names.
fn same_schema<S>(batches: S) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static
where
    S: Stream<Item = Result<RecordBatch>> + Send + 'static,
{
    let mut first: Option<SchemaRef> = None;
    let mut index = 0usize;
    let mut relaxed: Option<(SchemaRef, SchemaRef)> = None;
    batches.map(move |batch| {
        let batch = batch?;
        // Every column is sent as nullable: the encoder holds later batches to the first
        // batch's schema, where a non-nullable field would refuse a later batch's nulls.
        let schema = match &relaxed {
            Some((from, to)) if from == batch.schema_ref() => to.clone(),
            _ => {
                let from = batch.schema();
                let fields: Vec<_> = from
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect();
                let to = Arc::new(arrow::datatypes::Schema::new_with_metadata(
                    fields,
                    from.metadata().clone(),
                ));
                relaxed = Some((from, to.clone()));
                to
            }
        };
        let batch = batch.with_schema(schema.clone())?;
        match &first {
            None => first = Some(schema),
            Some(expected) => {
                let columns = |s: &SchemaRef| {
                    s.fields()
                        .iter()
                        .map(|f| format!("{}: {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                };
                let (want, got) = (columns(expected), columns(&schema));
                if want != got {
                    return Err(Error::InvalidArgument(format!(
                        "batch {index} has columns [{}] but the first batch of this call has \
                         [{}]; the batches of one call share their columns and types",
                        got.join(", "),
                        want.join(", ")
                    )));
                }
            }
        }
        index += 1;
        Ok(batch)
    })
}

/// Flight messages for `batches`, the descriptor on the first. One batch is one message (never
/// split: a batch is the unit of atomic ingest).
fn encode<S>(
    batches: S,
    descriptor: FlightDescriptor,
) -> impl Stream<Item = Result<FlightData, FlightError>>
where
    S: Stream<Item = Result<RecordBatch>> + Send + 'static,
{
    FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(usize::MAX)
        .with_flight_descriptor(Some(descriptor))
        .build(batches.map_err(to_flight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalize() {
        let plain = |uri: &str| (uri.to_string(), false);
        assert_eq!(
            normalize_address("grpc://localhost:8081").unwrap(),
            plain("http://localhost:8081")
        );
        assert_eq!(
            normalize_address("127.0.0.1:8081").unwrap(),
            plain("http://127.0.0.1:8081")
        );
        assert_eq!(
            normalize_address("http://h:1/").unwrap(),
            plain("http://h:1")
        );
        assert_eq!(
            normalize_address("grpc+tls://h:1").unwrap(),
            ("https://h:1".to_string(), true)
        );
        assert_eq!(
            normalize_address("https://h:1").unwrap(),
            ("https://h:1".to_string(), true)
        );
        assert!(normalize_address("ftp://h:1").is_err());
        assert!(normalize_address(" ").is_err());
    }
}
