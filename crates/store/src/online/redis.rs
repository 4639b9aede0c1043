//! The Redis online backend: each set's latest values in a Redis (or Redis Cluster) that any
//! number of FeatherStore servers share (docs/deployment.md).
//!
//! Layout, under the configured key prefix `P`:
//! - `P:v:SET:{ENTITY}`: a hash per (set, entity) with `o`, the row's order (event time, then
//!   ingest stamp; see [`order`]) and `v`, its encoded values (event time, then the features
//!   in the column encoding of [`Source::encode`]). The hash tag is the entity, so every set's
//!   value of one entity lives in one cluster slot.
//! - `P:m:SET`: entity count and greatest event time of a set (metrics; approximate).
//! - `P:{registry}` and `P:{registry}:version`: the shared feature set registry (spec JSON per
//!   set) and a counter bumped at every change, which servers poll.
//!
//! The compare-and-set of a row is one Lua script on its key (atomic in Redis): the row is
//! written only if its order is not below the stored one, so writers on several servers can
//! never roll a value back. The TTL is applied at read time; Redis expiry, when the set has a
//! TTL, only reclaims keys long after they stopped being visible.
//!
//! The [`OnlineSet`] interface is synchronous; this backend runs its Redis calls on a small
//! runtime of its own and waits for each at most `timeout_ms` (plus a margin), so a caller
//! (on the server's blocking pool) is never held longer, and a slow or lost Redis fails the
//! call with [`Error::OnlineTimeout`] or [`Error::Redis`] (UNAVAILABLE).

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use featherstore_core::time::now_micros;
use featherstore_core::{EntityKeys, FeatureServiceSpec, FeatureSetSpec};
use futures::future::join_all;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, ServerErrorKind, TlsCertificates, Value};

use super::column::Gather;
use super::interface::{
    lookup_batch, AnswerSchema, BatchKeys, OnlineSet, OnlineStore, PreparedBatch, SharedRegistry,
};
use crate::metrics::REDIS;
use crate::{Error, Result};

/// Where the Redis backend connects, and how it waits (`online.redis` of the server's
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// PEM file of the CA certificates that sign Redis's TLS certificate (a `rediss://`
    /// URL); without it, the system's trusted CAs.
    pub ca_file: Option<std::path::PathBuf>,
    /// The URL is one seed node of a Redis Cluster.
    pub cluster: bool,
    /// Prefix of every key, so that several deployments can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections (each carries many requests at once).
    pub pool_size: usize,
    /// The longest a call waits for Redis before it fails as UNAVAILABLE.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            ca_file: None,
            cluster: false,
            key_prefix: "fs".into(),
            pool_size: 4,
            timeout_ms: 200,
        }
    }
}

/// The compare-and-set of one row: written unless the stored order is greater (ties go to
/// this, the later write, which only happens for a retry of the same row). ARGV: order,
/// value, expiry (Unix ms, or 0 for none). Returns 2 for a new entity, 1 for a replaced
/// value, 0 for a value kept.
const APPLY_ROW: &str = r"
local stored = redis.call('HGET', KEYS[1], 'o')
if stored and stored > ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'v', ARGV[2])
if ARGV[3] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
if stored then return 1 end
return 2
";

/// Adds new entities to a set's count and raises its greatest event time. ARGV: new
/// entities, greatest event time of the batch.
const APPLY_META: &str = r"
redis.call('HINCRBY', KEYS[1], 'entities', ARGV[1])
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest'))
if (not latest) or tonumber(ARGV[2]) > latest then
  redis.call('HSET', KEYS[1], 'latest', ARGV[2])
end
return 1
";

/// Publishes a spec (or a feature service, always as `create`) unless a different definition
/// or a newer version holds the name. KEYS: registry hash, version counter. ARGV: name, spec JSON, version, `create` or `update`.
/// Returns the stored JSON when refused, else `ok`.
const PUBLISH_SPEC: &str = r"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored and ARGV[4] == 'create' then return stored end
if stored and ARGV[4] == 'update' then
  local version = cjson.decode(stored)['version'] or 1
  if version >= tonumber(ARGV[3]) then return stored end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 'ok'
";

/// Rows per concurrent group of commands when applying to a cluster, and per pipeline on a
/// single node: bounds what one batch keeps in flight.
const ROWS_PER_ROUND_TRIP: usize = 4096;

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn query(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// The answers to `cmds`, in order: one pipeline on a single node; on a cluster, the
    /// commands at once over the multiplexed connection to each node (a pipeline would have
    /// to stay within one slot).
    async fn all(&mut self, cmds: Vec<Cmd>) -> redis::RedisResult<Vec<Value>> {
        match self {
            Connection::Single(c) => {
                let mut pipe = Pipeline::with_capacity(cmds.len());
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(c).await
            }
            Connection::Cluster(c) => join_all(cmds.iter().map(|cmd| {
                let mut c = c.clone();
                async move { cmd.query_async::<Value>(&mut c).await }
            }))
            .await
            .into_iter()
            .collect(),
        }
    }
}

/// What every set of one [`RedisStore`] shares: the connections, the runtime they run on,
/// and the scripts.
struct Shared {
    /// `None` only while dropped: see the `Drop` impl.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    connections: Vec<Connection>,
    next: AtomicUsize,
    config: RedisConfig,
    timeout: Duration,
    apply_row: redis::Script,
    apply_meta: redis::Script,
    publish_spec: redis::Script,
    /// Distinguishes this process's writes from other servers' in row orders.
    server_id: u64,
    /// The last ingest stamp given (UTC µs): stamps of this process strictly increase.
    last_stamp: AtomicI64,
}

impl Shared {
    fn connection(&self) -> Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    /// Runs `work` on this backend's runtime and waits for it at most the timeout: the caller
    /// (a blocking thread) is never held longer, whatever Redis does. Records the round trip.
    fn call<T, F>(&self, work: impl FnOnce(Connection) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        self.call_within(self.timeout, work)
    }

    fn call_within<T, F>(&self, timeout: Duration, work: impl FnOnce(Connection) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = work(self.connection());
        self.handle.spawn(async move {
            let outcome = tokio::time::timeout(timeout, future).await;
            let _ = tx.send(outcome);
        });
        // The margin lets the runtime's own timeout answer first when it can.
        let outcome = match rx.recv_timeout(timeout + Duration::from_millis(50)) {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(Error::Redis(e)),
            Ok(Err(_)) | Err(_) => Err(Error::OnlineTimeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        REDIS.record(started.elapsed(), outcome.is_err());
        outcome
    }

    /// [`call`](Self::call) for scripts: when Redis answers that it does not know a script
    /// (it restarted and lost its script cache), loads the scripts and tries once more.
    /// Every script here may run twice: a row written again wins the same ties.
    fn call_scripts<T, F>(&self, work: impl Fn(Connection) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        match self.call(&work) {
            Err(Error::Redis(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_scripts()?;
                self.call(work)
            }
            other => other,
        }
    }

    fn load_scripts(&self) -> Result<()> {
        let scripts = [APPLY_ROW, APPLY_META, PUBLISH_SPEC]
            .map(|code| redis::cmd("SCRIPT").arg("LOAD").arg(code).clone());
        self.call(move |mut c| async move {
            for cmd in &scripts {
                // On a cluster SCRIPT LOAD goes to every primary.
                c.query(cmd).await?;
            }
            Ok(())
        })
    }

    /// A stamp for a batch being applied now: this process's stamps strictly increase, so
    /// its later batches win ties even if the clock steps back.
    fn stamp(&self) -> i64 {
        let now = now_micros();
        let previous = self
            .last_stamp
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}:{kind}:{rest}", self.config.key_prefix)
    }
}

impl Drop for Shared {
    /// The store may go with the last reference on a runtime worker (a server dropped in a
    /// test, say), where a runtime cannot wait for its own threads: they are left to stop.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The Redis backend (see the module docs).
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl RedisStore {
    /// Connects (`pool_size` connections) and loads the scripts. Fails if Redis cannot be
    /// reached within the timeout.
    pub fn connect(config: RedisConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("featherstore-redis")
            .enable_all()
            .build()
            .map_err(Error::io("starting the Redis client's runtime"))?;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let connections = runtime.block_on(async {
            tokio::time::timeout(timeout * 10, connect_all(&config, timeout))
                .await
                .map_err(|_| Error::OnlineTimeout {
                    timeout_ms: config.timeout_ms * 10,
                })?
        })?;
        let shared = Shared {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            connections,
            next: AtomicUsize::new(0),
            timeout,
            apply_row: redis::Script::new(APPLY_ROW),
            apply_meta: redis::Script::new(APPLY_META),
            publish_spec: redis::Script::new(PUBLISH_SPEC),
            server_id: server_id(),
            last_stamp: AtomicI64::new(i64::MIN),
            config,
        };
        shared.load_scripts()?;
        Ok(RedisStore {
            shared: Arc::new(shared),
        })
    }

    fn registry_keys(&self) -> (String, String) {
        let prefix = &self.shared.config.key_prefix;
        (
            format!("{prefix}:{{registry}}"),
            format!("{prefix}:{{registry}}:version"),
        )
    }

    /// The hash of published feature services: in the registry's slot, so that one script
    /// or transaction can change it and bump the registry's version counter together.
    fn services_key(&self) -> String {
        format!("{}:{{registry}}:services", self.shared.config.key_prefix)
    }

    /// Publishes `json` under `name` in the registry hash `hash` (see [`PUBLISH_SPEC`]):
    /// `None` when published, the stored JSON when refused.
    fn publish_json(
        &self,
        hash: String,
        name: &str,
        json: String,
        version: u64,
        update: bool,
    ) -> Result<Option<String>> {
        let (_, counter) = self.registry_keys();
        let script = self.shared.publish_spec.clone();
        let name = name.to_string();
        let mode = if update { "update" } else { "create" };
        let answer: String = self.shared.call_scripts(move |mut c| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.get_hash())
                .arg(2)
                .arg(&hash)
                .arg(&counter)
                .arg(&name)
                .arg(&json)
                .arg(version)
                .arg(mode);
            async move { parse(c.query(&cmd).await?) }
        })?;
        Ok((answer != "ok").then_some(answer))
    }

    /// Removes `name` from the registry hash `hash` and bumps the version counter.
    fn unpublish_json(&self, hash: String, name: &str) -> Result<()> {
        let (_, counter) = self.registry_keys();
        let mut pipe = redis::pipe();
        pipe.atomic().hdel(&hash, name).incr(&counter, 1);
        self.shared.call(move |c| async move {
            match c {
                Connection::Single(mut c) => pipe.query_async(&mut c).await,
                Connection::Cluster(mut c) => pipe.query_async(&mut c).await,
            }
        })
    }

    /// Every value of the registry hash `hash`.
    fn registry_values(&self, hash: String) -> Result<Vec<Vec<u8>>> {
        let cmd = redis::cmd("HVALS").arg(hash).clone();
        self.shared
            .call(move |mut c| async move { parse(c.query(&cmd).await?) })
    }
}

/// The CA of `ca_file`, for a `rediss://` URL.
fn tls_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>> {
    let Some(path) = &config.ca_file else {
        return Ok(None);
    };
    let root_cert = std::fs::read(path).map_err(Error::io(format!(
        "reading online.redis.ca_file {}",
        path.display()
    )))?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    }))
}

async fn connect_all(config: &RedisConfig, timeout: Duration) -> Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(config.pool_size.max(1));
    let certificates = tls_certificates(config)?;
    if config.cluster {
        let mut builder = redis::cluster::ClusterClient::builder([config.url.as_str()])
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // Fail fast while a node is down: the caller's timeout bounds the wait anyway.
            .retries(1);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder.build()?;
        for _ in 0..config.pool_size.max(1) {
            connections.push(Connection::Cluster(client.get_async_connection().await?));
        }
    } else {
        let client = match certificates {
            Some(certificates) => redis::Client::build_with_tls(config.url.as_str(), certificates)?,
            None => redis::Client::open(config.url.as_str())?,
        };
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        for _ in 0..config.pool_size.max(1) {
            connections.push(Connection::Single(
                ConnectionManager::new_with_config(client.clone(), manager.clone()).await?,
            ));
        }
    }
    Ok(connections)
}

/// The longest the removal of a set's keys may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Unlinks every key matching `pattern` on every primary.
async fn unlink_matching(c: &mut Connection, pattern: &str) -> redis::RedisResult<()> {
    let nodes = match c {
        Connection::Single(_) => vec![None],
        Connection::Cluster(_) => cluster_primaries(c).await?.into_iter().map(Some).collect(),
    };
    for node in nodes {
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let reply = match (&mut *c, &node) {
                (Connection::Cluster(cluster), Some(node)) => {
                    cluster.route_command(scan, node.clone()).await?
                }
                (c, _) => c.query(&scan).await?,
            };
            let (next, keys): (u64, Vec<Vec<u8>>) = parse(reply)?;
            if !keys.is_empty() {
                c.all(
                    keys.iter()
                        .map(|k| redis::cmd("UNLINK").arg(k).clone())
                        .collect(),
                )
                .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// The primaries of a cluster, from `CLUSTER NODES` (one line per node: id, `host:port@bus`,
/// flags, ...), as routes to each.
async fn cluster_primaries(c: &mut Connection) -> redis::RedisResult<Vec<RoutingInfo>> {
    let nodes: String = parse(c.query(&redis::cmd("CLUSTER").arg("NODES").clone()).await?)?;
    Ok(nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let address = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_string(),
                port: port.parse().ok()?,
            }))
        })
        .collect())
}

/// A reply as `T` (a reply of another shape is a Redis error too).
fn parse<T: redis::FromRedisValue>(value: Value) -> redis::RedisResult<T> {
    Ok(redis::from_redis_value(value)?)
}

/// A random id for this process, from the std hasher's per-process random keys.
fn server_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), now_micros()))
}

/// The order of a row, compared as a string in Redis: event time, ingest stamp, row within
/// the batch, server; each as fixed-width hex of a value that sorts as its bytes do.
fn order(event_time: i64, stamp: i64, row: usize, server_id: u64) -> String {
    let sortable = |v: i64| (v as u64) ^ (1 << 63);
    format!(
        "{:016x}{:016x}{:08x}{:016x}",
        sortable(event_time),
        sortable(stamp),
        row as u32,
        server_id
    )
}

/// The hash tag of an entity: strings as they are unless a brace would end the tag early
/// (then hex), int64 in decimal. Each form has its own first letter, so none collide.
fn entity_tag(keys: &BatchKeys<'_>, row: usize) -> String {
    match keys {
        BatchKeys::String(keys) => string_tag(keys.value(row)),
        BatchKeys::Int64(keys) => format!("i{}", keys[row]),
    }
}

fn string_tag(key: &str) -> String {
    if key.contains(['{', '}']) {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("h{hex}")
    } else {
        format!("s{key}")
    }
}

impl OnlineStore for RedisStore {
    fn open_set(&self, spec: Arc<FeatureSetSpec>) -> Result<Box<dyn OnlineSet>> {
        let meta_key = self.shared.key("m", &spec.name);
        let value_prefix = self.shared.key("v", &spec.name);
        let set = RedisSet {
            answer_schema: AnswerSchema::new(&spec),
            spec,
            shared: self.shared.clone(),
            meta_key,
            value_prefix,
            entities: AtomicUsize::new(0),
            latest: AtomicI64::new(i64::MIN),
        };
        set.refresh_meta();
        Ok(Box::new(set))
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> Result<()> {
        let ping = redis::cmd("PING");
        self.shared
            .call(move |mut c| async move { c.query(&ping).await.map(drop) })
    }

    fn shared_registry(&self) -> Option<&dyn SharedRegistry> {
        Some(self)
    }
}

impl SharedRegistry for RedisStore {
    fn publish(&self, spec: &FeatureSetSpec, update: bool) -> Result<Option<FeatureSetSpec>> {
        let json = serde_json::to_string(spec)
            .map_err(|e| Error::Corrupt(format!("a feature set spec does not serialise: {e}")))?;
        let (registry, _) = self.registry_keys();
        let version = spec.version.unwrap_or(1);
        match self.publish_json(registry, &spec.name, json, version, update)? {
            None => Ok(None),
            Some(stored) => Ok(Some(FeatureSetSpec::from_json(stored.as_bytes())?)),
        }
    }

    fn unpublish(&self, name: &str) -> Result<()> {
        let (registry, _) = self.registry_keys();
        self.unpublish_json(registry, name)
    }

    fn version(&self) -> Result<Option<u64>> {
        let (_, version) = self.registry_keys();
        let cmd = redis::cmd("GET").arg(version).clone();
        self.shared
            .call(move |mut c| async move { parse(c.query(&cmd).await?) })
    }

    fn specs(&self) -> Result<Vec<FeatureSetSpec>> {
        let (registry, _) = self.registry_keys();
        self.registry_values(registry)?
            .iter()
            .map(|json| Ok(FeatureSetSpec::from_json(json)?))
            .collect()
    }

    fn publish_service(&self, service: &FeatureServiceSpec) -> Result<Option<FeatureServiceSpec>> {
        let json = serde_json::to_string(service)
            .map_err(|e| Error::Corrupt(format!("a feature service does not serialise: {e}")))?;
        match self.publish_json(self.services_key(), &service.name, json, 1, false)? {
            None => Ok(None),
            Some(stored) => Ok(Some(FeatureServiceSpec::from_json(stored.as_bytes())?)),
        }
    }

    fn unpublish_service(&self, name: &str) -> Result<()> {
        self.unpublish_json(self.services_key(), name)
    }

    fn services(&self) -> Result<Vec<FeatureServiceSpec>> {
        self.registry_values(self.services_key())?
            .iter()
            .map(|json| Ok(FeatureServiceSpec::from_json(json)?))
            .collect()
    }
}

/// One set's values in Redis.
struct RedisSet {
    spec: Arc<FeatureSetSpec>,
    answer_schema: AnswerSchema,
    shared: Arc<Shared>,
    meta_key: String,
    value_prefix: String,
    /// The last known count and greatest event time (read from Redis; kept for when it is
    /// unreachable during a metrics scrape).
    entities: AtomicUsize,
    latest: AtomicI64,
}

impl RedisSet {
    fn value_key(&self, tag: &str) -> String {
        format!("{}:{{{tag}}}", self.value_prefix)
    }

    fn keys_of(&self, keys: &EntityKeys) -> Vec<String> {
        match keys {
            EntityKeys::String(keys) => keys
                .iter()
                .map(|k| self.value_key(&string_tag(k)))
                .collect(),
            EntityKeys::Int64(keys) => keys
                .iter()
                .map(|k| self.value_key(&format!("i{k}")))
                .collect(),
        }
    }

    /// Reads the set's count and greatest event time from Redis into the local copies.
    fn refresh_meta(&self) {
        let cmd = redis::cmd("HMGET")
            .arg(&self.meta_key)
            .arg("entities")
            .arg("latest")
            .clone();
        let read: Result<(Option<i64>, Option<i64>)> = self
            .shared
            .call(move |mut c| async move { parse(c.query(&cmd).await?) });
        if let Ok((entities, latest)) = read {
            self.entities.store(
                usize::try_from(entities.unwrap_or(0)).unwrap_or(0),
                Ordering::Relaxed,
            );
            self.latest
                .store(latest.unwrap_or(i64::MIN), Ordering::Relaxed);
        }
    }

    /// Decodes one stored value into the gathers; `false` (and nothing pushed) when it is
    /// older than `cutoff`.
    fn decode(
        &self,
        value: &[u8],
        cutoff: Option<i64>,
        features: &[usize],
        gathers: &mut [Gather],
        timestamps: &mut Vec<Option<i64>>,
    ) -> Result<()> {
        let corrupt = || {
            Error::Corrupt(format!(
                "a stored online value of feature set {:?} does not decode",
                self.spec.name
            ))
        };
        let (time, mut rest) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let event_time = i64::from_le_bytes(*time);
        if cutoff.is_some_and(|c| event_time < c) {
            timestamps.push(None);
            gathers.iter_mut().for_each(|g| g.push_null());
            return Ok(());
        }
        // Where each stored feature starts; features added after the row was written (by a
        // newer version of the spec) are absent and read as null.
        let mut starts = Vec::with_capacity(self.spec.features.len());
        for feature in &self.spec.features {
            if rest.is_empty() {
                break;
            }
            starts.push(rest);
            Gather::skip_encoded(feature.feature_type, &mut rest).ok_or_else(corrupt)?;
        }
        for (gather, &f) in gathers.iter_mut().zip(features) {
            match starts.get(f) {
                Some(start) => gather
                    .push_encoded(self.spec.features[f].feature_type, &mut &start[..])
                    .ok_or_else(corrupt)?,
                None => gather.push_null(),
            }
        }
        timestamps.push(Some(event_time));
        Ok(())
    }
}

impl OnlineSet for RedisSet {
    fn spec(&self) -> &Arc<FeatureSetSpec> {
        &self.spec
    }

    fn apply(&self, batch: &PreparedBatch<'_>) -> Result<()> {
        if batch.rows == 0 {
            return Ok(());
        }
        let stamp = self.shared.stamp();
        // Redis expiry only reclaims memory: a key goes a day after it stopped being visible
        // to a reader at the current time, and never before it was written plus the TTL (a
        // reader's `now` is the wall clock; this keeps backfilled rows for a reader at any
        // `now` up to then).
        let expiry_ms = self.spec.ttl_micros().map(|ttl| ttl / 1000 + 86_400_000);
        let written_ms = now_micros() / 1000;
        let mut created = 0i64;
        let mut value = Vec::new();
        for start in (0..batch.rows).step_by(ROWS_PER_ROUND_TRIP) {
            let rows = start..(start + ROWS_PER_ROUND_TRIP).min(batch.rows);
            let cmds: Vec<Cmd> = rows
                .map(|row| {
                    let event_time = batch.timestamps[row];
                    value.clear();
                    value.extend_from_slice(&event_time.to_le_bytes());
                    for (source, feature) in batch.sources.iter().zip(&self.spec.features) {
                        source.encode(feature.feature_type, row, &mut value);
                    }
                    let expire_at = expiry_ms.map_or(0, |e| {
                        (event_time / 1000).max(written_ms).saturating_add(e).max(1)
                    });
                    let mut cmd = redis::cmd("EVALSHA");
                    cmd.arg(self.shared.apply_row.get_hash())
                        .arg(1)
                        .arg(self.value_key(&entity_tag(&batch.keys, row)))
                        .arg(order(event_time, stamp, row, self.shared.server_id))
                        .arg(&value[..])
                        .arg(expire_at);
                    cmd
                })
                .collect();
            let answers: Vec<i64> = self.shared.call_scripts(|mut c| {
                let cmds = cmds.clone();
                async move { c.all(cmds).await?.into_iter().map(parse).collect() }
            })?;
            created += answers.iter().filter(|&&a| a == 2).count() as i64;
        }
        let latest = batch.timestamps.iter().max().copied().unwrap_or(i64::MIN);
        let mut meta = redis::cmd("EVALSHA");
        meta.arg(self.shared.apply_meta.get_hash())
            .arg(1)
            .arg(&self.meta_key)
            .arg(created)
            .arg(latest);
        self.shared.call_scripts(|mut c| {
            let meta = meta.clone();
            async move { c.query(&meta).await.map(drop) }
        })?;
        self.entities
            .fetch_add(usize::try_from(created).unwrap_or(0), Ordering::Relaxed);
        self.latest.fetch_max(latest, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, keys: &EntityKeys, features: &[usize], now: i64) -> Result<RecordBatch> {
        let cmds: Vec<Cmd> = self
            .keys_of(keys)
            .into_iter()
            .map(|key| redis::cmd("HGET").arg(key).arg("v").clone())
            .collect();
        let values: Vec<Option<Vec<u8>>> = if cmds.is_empty() {
            Vec::new()
        } else {
            self.shared.call(move |mut c| async move {
                c.all(cmds).await?.into_iter().map(parse).collect()
            })?
        };
        let cutoff = self.spec.ttl_micros().map(|ttl| now.saturating_sub(ttl));
        let mut gathers: Vec<Gather> = features
            .iter()
            .map(|&f| Gather::new(self.spec.features[f].feature_type, keys.len()))
            .collect();
        let mut timestamps = Vec::with_capacity(keys.len());
        for value in &values {
            match value {
                Some(value) => {
                    self.decode(value, cutoff, features, &mut gathers, &mut timestamps)?
                }
                None => {
                    timestamps.push(None);
                    gathers.iter_mut().for_each(|g| g.push_null());
                }
            }
        }
        let schema = self.answer_schema.of(&self.spec, features);
        lookup_batch(&self.spec, schema, keys, features, gathers, timestamps)
    }

    /// Deletes every key of the set, node by node (SCAN, then UNLINK of what it found),
    /// then its metadata. Takes as long as the set is large: bounded by [`REMOVE_TIMEOUT`].
    fn remove(&self) -> Result<()> {
        let pattern = format!("{}:*", self.value_prefix);
        let meta = redis::cmd("UNLINK").arg(&self.meta_key).clone();
        self.shared
            .call_within(REMOVE_TIMEOUT, move |mut c| async move {
                unlink_matching(&mut c, &pattern).await?;
                c.query(&meta).await.map(drop)
            })?;
        self.entities.store(0, Ordering::Relaxed);
        self.latest.store(i64::MIN, Ordering::Relaxed);
        Ok(())
    }

    /// The entity count kept in Redis (read at each call, within the timeout; the last
    /// known count when Redis does not answer). Approximate: values reclaimed by Redis
    /// expiry stay counted.
    fn entities(&self) -> usize {
        self.refresh_meta();
        self.entities.load(Ordering::Relaxed)
    }

    fn latest_event_timestamp(&self) -> Option<i64> {
        self.refresh_meta();
        Some(self.latest.load(Ordering::Relaxed)).filter(|&t| t != i64::MIN)
    }

    /// Nothing is held in this process.
    fn memory_bytes(&self) -> usize {
        0
    }
}
