//! The operations both APIs offer, as domain calls: storage work runs on the blocking pool,
//! results come back as the JSON documents of PROTOCOL.md.

use std::sync::Arc;

use arrow::array::RecordBatch;
use featherstore_core::service::reference_sets;
use featherstore_core::time::format_timestamp;
use featherstore_core::{
    Error as DomainError, FeatureServiceSpec, FeatureSetSpec, HistoryTicket, MultiOnlineTicket,
    OnlineTicket, TrainingDataCommand,
};
use featherstore_store::query::training::TrainingPlan;
use featherstore_store::{BatchSink, Error as StoreError, FeatureStore};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use featherstore_store::query::adhoc::AdhocSettings;
use featherstore_store::query::Cancellation;
use futures::Stream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use crate::auth::Access;
use crate::error::{ApiError, ApiResult};
use crate::flight::SchemaMessages;
use crate::limits::{Guards, Rejection};
use crate::telemetry::metrics::Api;
use crate::telemetry::Metrics;

/// What every request handler shares. One `Arc`: the state is cloned and dropped several
/// times per request (each middleware layer takes a copy), and on a read of one entity the
/// reference counts of a state of many `Arc`s were a few percent of the server's CPU.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state itself ([`AppState`]).
pub(crate) struct Shared {
    pub store: Arc<FeatureStore>,
    pub metrics: Arc<Metrics>,
    pub max_message_bytes: usize,
    pub guards: Arc<Guards>,
    /// Flight SQL's limits; `None`: Flight SQL is disabled.
    pub flight_sql: Option<Arc<FlightSql>>,
    /// The encoded schema messages of Flight online answers.
    pub schema_messages: Arc<SchemaMessages>,
}

/// The limits of Flight SQL queries.
#[derive(Clone)]
pub(crate) struct FlightSql {
    pub settings: AdhocSettings,
    /// One permit per query allowed to run at once (`flight_sql.max_concurrent_queries`).
    pub running: Arc<tokio::sync::Semaphore>,
}

impl FlightSql {
    /// A permit to run one query, held until the query ends; none free is UNAVAILABLE.
    pub(crate) fn permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        self.running.clone().try_acquire_owned().map_err(|_| {
            featherstore_core::Error::Unavailable(
                "too many Flight SQL queries are running (flight_sql.max_concurrent_queries); \
                 retry later"
                    .into(),
            )
            .into()
        })
    }
}

/// Result batches buffered between a storage thread and the client: bounds memory.
const STREAM_BUFFER: usize = 4;

/// Result batches of storage work running on the blocking pool, as it produces them; ends
/// with the work's error, if any, as its last item. Dropping it cancels the work: a query
/// still running is interrupted, and a wait for a connection ends, so the connection is free
/// at once (see [`Cancellation`]).
pub(crate) struct BlockingStream {
    batches: mpsc::Receiver<RecordBatch>,
    /// The work's outcome once it is over: `None` when it succeeded (or its client went away).
    outcome: Option<oneshot::Receiver<Option<ApiError>>>,
    cancellation: Cancellation,
    /// Counts the stream's end in the request metrics.
    count: StreamCount,
}

/// A streamed answer is counted twice in `featherstore_requests_total`: as its request once
/// the stream starts, and as `method` (`do_get_stream`, `POST /v1/history (stream)`) with the
/// code it ends with, once its last batch or its error is out. A fault after the start (a
/// damaged file met mid-scan) is counted there.
struct StreamCount {
    metrics: Arc<Metrics>,
    api: Api,
    method: &'static str,
    started: Instant,
}

impl StreamCount {
    fn ended(&self, failure: Option<&ApiError>) {
        let code = failure.map_or("ok", |e| e.code().as_str());
        self.metrics
            .observe(self.api.as_str(), self.method, code, self.started.elapsed());
    }
}

impl Stream for BlockingStream {
    type Item = ApiResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(batch) = ready!(self.batches.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(batch)));
        }
        // The work is over (its sender is gone): its error, if it failed, comes last.
        let Some(outcome) = self.outcome.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(outcome).poll(cx));
        self.outcome = None;
        let failure = match outcome {
            Ok(failure) => failure,
            // Dropped without a word: the task panicked. Ending the stream as if complete
            // would pass a truncated answer off as a whole one.
            Err(_) => Some(ApiError::Internal(
                "the storage task answering the call failed".into(),
            )),
        };
        self.count.ended(failure.as_ref());
        Poll::Ready(failure.map(Err))
    }
}

impl Drop for BlockingStream {
    fn drop(&mut self) {
        self.cancellation.cancel();
    }
}

/// Watches a task that streams its answers into the channel of `tx`: should it panic,
/// `failure` is sent as the stream's last item. Without it the task's sender would just be
/// dropped and the stream end as if complete: a client would take a truncated answer (or
/// a DoPut that stored nothing) for a successful one.
pub(crate) fn report_failure<T: Send + 'static>(
    task: tokio::task::JoinHandle<()>,
    tx: mpsc::Sender<T>,
    failure: impl FnOnce(String) -> T + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let _ = tx
                .send(failure(format!("the task answering the call failed: {e}")))
                .await;
        }
    });
}

/// Runs blocking storage work off the async runtime. The work is skipped if the caller gave
/// up before it started (it was queued behind others and its client went away).
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    struct Abandoned(Arc<AtomicBool>);
    impl Drop for Abandoned {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let abandoned = Abandoned(Arc::default());
    let skipped = abandoned.0.clone();
    let span = tracing::Span::current();
    let outcome = crate::priority::spawn_storage_work(move || {
        if skipped.load(Ordering::Acquire) {
            return Err(ApiError::from(StoreError::Cancelled));
        }
        span.in_scope(work)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("storage task failed: {e}")))?;
    drop(abandoned);
    outcome
}

/// [`blocking`] storage work whose query is interrupted when the request is dropped (its
/// client went away, or the request timeout answered 504), so it holds no connection after.
pub(crate) async fn interruptible<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    struct CancelOnDrop(Cancellation);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    let cancellation = Cancellation::default();
    let _cancel = CancelOnDrop(cancellation.clone());
    blocking(move || cancellation.scope(work)).await
}

/// Parses `{"name": ...}`, the body of the get and delete actions.
pub(crate) fn parse_name(body: &[u8]) -> ApiResult<String> {
    Ok(featherstore_core::action::parse_name(body)?)
}

/// Progress updates of a rebuild held for its reader; more are dropped until it reads.
const REBUILD_PROGRESS_QUEUE: usize = 4;

/// A rebuild of a set's online values under way ([`AppState::rebuild_online`]).
pub(crate) struct Rebuild {
    /// The set's entities: the rows the rebuild writes (one each).
    pub(crate) entities: u64,
    /// Rows written so far; closed when the rebuild ends.
    pub(crate) progress: mpsc::Receiver<u64>,
    /// The rows written, once the rebuild is over.
    pub(crate) finished: futures::future::BoxFuture<'static, ApiResult<u64>>,
}

fn spec_json(spec: &FeatureSetSpec) -> Value {
    serde_json::to_value(spec).expect("specs serialize")
}

fn service_json(service: &FeatureServiceSpec) -> Value {
    serde_json::to_value(service).expect("services serialize")
}

/// Runs `work` on the blocking pool and streams the batches it produces, as it produces them.
/// A client that takes no batch for `idle` has its stream ended with DEADLINE_EXCEEDED and the
/// work stopped, so that it cannot hold a storage connection forever. Dropping the stream
/// cancels the work.
fn stream_blocking<F>(
    idle: Duration,
    metrics: Arc<Metrics>,
    (api, method): (Api, &'static str),
    work: F,
) -> BlockingStream
where
    F: FnOnce(BatchSink<'_>) -> featherstore_store::Result<()> + Send + 'static,
{
    let count = StreamCount {
        metrics: metrics.clone(),
        api,
        method,
        started: Instant::now(),
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let (outcome_tx, outcome_rx) = oneshot::channel();
    let cancellation = Cancellation::default();
    let scope = cancellation.clone();
    let runtime = tokio::runtime::Handle::current();
    // The storage work runs in the request's span: its spans are children of it.
    let span = tracing::Span::current();
    crate::priority::spawn_storage_work(move || {
        let _entered = span.enter();
        // Queued behind other work while its client went away: nothing to do.
        if tx.is_closed() {
            let _ = outcome_tx.send(None);
            return;
        }
        let mut stalled = false;
        let result = scope.scope(|| {
            work(&mut |batch| match tx.try_send(batch) {
                Ok(()) => Ok(()),
                Err(TrySendError::Closed(_)) => Err(StoreError::Cancelled),
                Err(TrySendError::Full(batch)) => {
                    match runtime.block_on(tokio::time::timeout(idle, tx.send(batch))) {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_closed)) => Err(StoreError::Cancelled),
                        Err(_elapsed) => {
                            stalled = true;
                            Err(StoreError::Cancelled)
                        }
                    }
                }
            })
        });
        let failure = if stalled {
            Some(ApiError::rejected(
                Rejection::StreamIdle,
                format!(
                    "the client took no results for {:.1} s; the stream was ended",
                    idle.as_secs_f64()
                ),
            ))
        } else {
            match result {
                Ok(()) | Err(StoreError::Cancelled) => None,
                // Interrupted because the client went away: nobody to tell.
                Err(_) if scope.is_cancelled() => None,
                Err(e) => Some(e.into()),
            }
        };
        if let Some(reason) = failure.as_ref().and_then(ApiError::rejection) {
            metrics.rejected(api, reason);
        }
        let _ = outcome_tx.send(failure);
    });
    BlockingStream {
        batches: rx,
        outcome: Some(outcome_rx),
        cancellation,
        count,
    }
}

/// The request span's fields (`feature_set`, `entities`, `rows`; declared in
/// `telemetry::traces`) are recorded here, by the layer that owns the span, as the request's
/// work learns them; counts as i64, which OpenTelemetry exports as integers.
fn record_count(span: &Span, field: &str, n: usize) {
    span.record(field, i64::try_from(n).unwrap_or(i64::MAX));
}

impl AppState {
    /// Online values for an online ticket: from memory on the request's task, or from a
    /// remote online store (Redis) on the blocking pool, so that a slow Redis holds no
    /// runtime worker (the store bounds each wait by its timeout).
    pub(crate) async fn online(&self, ticket: &OnlineTicket) -> ApiResult<RecordBatch> {
        let span = Span::current();
        span.record("feature_set", ticket.feature_set.as_str());
        record_count(&span, "entities", ticket.entities.len());
        let batch = if self.store.online_is_remote() {
            let (store, ticket) = (self.store.clone(), ticket.clone());
            blocking(move || Ok(store.online(&ticket)?)).await?
        } else {
            self.store.online(ticket)?
        };
        record_count(&span, "rows", batch.num_rows());
        Ok(batch)
    }

    /// Online values across feature sets (a feature service, or references). The caller must
    /// be allowed every set read.
    pub(crate) async fn online_multi(
        &self,
        access: &Access,
        ticket: &MultiOnlineTicket,
    ) -> ApiResult<RecordBatch> {
        if let Some(references) = &ticket.features {
            // Before resolving, so that a NOT_FOUND says nothing of sets the caller may not see.
            for set in reference_sets(references)? {
                access.require_set(&set)?;
            }
        }
        let plan = self.store.online_plan(ticket)?;
        for set in plan.set_names() {
            access.require_set(set)?;
        }
        let span = Span::current();
        span.record(
            "feature_set",
            plan.set_names().collect::<Vec<_>>().join(",").as_str(),
        );
        let batch = if self.store.online_is_remote() {
            let (store, ticket) = (self.store.clone(), ticket.clone());
            blocking(move || Ok(store.online_multi(&plan, &ticket)?)).await?
        } else {
            self.store.online_multi(&plan, ticket)?
        };
        record_count(&span, "entities", batch.num_rows());
        record_count(&span, "rows", batch.num_rows());
        Ok(batch)
    }

    /// A training data command as the store runs it: a `feature_service` replaced by its
    /// references, every set of which the caller must be allowed.
    pub(crate) fn training_command(
        &self,
        access: &Access,
        command: TrainingDataCommand,
    ) -> ApiResult<TrainingDataCommand> {
        let command = self.store.expand_training(command)?;
        for set in command.set_names()? {
            access.require_set(&set)?;
        }
        Ok(command)
    }

    /// Creates a feature service; returns the stored service and whether it is new.
    pub(crate) async fn create_service(
        &self,
        access: &Access,
        body: &[u8],
    ) -> ApiResult<(Value, bool)> {
        let service = FeatureServiceSpec::from_json(body)?;
        let sets = service.set_names()?;
        for set in &sets {
            access.require_set(set)?;
        }
        Span::current().record("feature_set", sets.join(",").as_str());
        let store = self.store.clone();
        let (stored, created) = blocking(move || Ok(store.create_service(service)?)).await?;
        Ok((service_json(&stored), created))
    }

    /// A stored feature service; the caller must be allowed every set it reads.
    pub(crate) fn describe_service(&self, access: &Access, name: &str) -> ApiResult<Value> {
        let service = self.store.get_service(name)?;
        for set in service.set_names()? {
            access.require_set(&set)?;
        }
        Ok(service_json(&service))
    }

    /// The feature services the caller may see: those whose every set it may see.
    pub(crate) fn list_services(&self, access: &Access) -> Value {
        Value::Array(
            self.store
                .list_services()
                .iter()
                .filter(|service| {
                    service
                        .set_names()
                        .is_ok_and(|sets| sets.iter().all(|set| access.sees(set)))
                })
                .map(|service| service_json(service))
                .collect(),
        )
    }

    pub(crate) async fn delete_service(&self, access: &Access, name: String) -> ApiResult<()> {
        self.describe_service(access, &name)?;
        let store = self.store.clone();
        blocking(move || Ok(store.delete_service(&name)?)).await
    }

    /// Plans a history ticket, then streams its rows as storage reads them; returns their
    /// schema and the stream. A bad ticket fails here, before a stream starts.
    pub(crate) fn history(
        &self,
        counted_as: (Api, &'static str),
        ticket: &HistoryTicket,
    ) -> ApiResult<(SchemaRef, BlockingStream)> {
        let span = Span::current();
        span.record("feature_set", ticket.feature_set.as_str());
        if let Some(entities) = &ticket.entities {
            record_count(&span, "entities", entities.len());
        }
        let (set, query, view) = self.store.plan_history(ticket)?;
        let schema = featherstore_store::query::history_schema(&set.spec, &query.features, &view);
        let store = self.store.clone();
        let batches = self.stream_blocking(counted_as, move |sink| {
            // Runs in the request's span (see `stream_blocking`).
            let mut rows = 0;
            let result = store.scan_history(&set, &query, &view, &mut |batch| {
                rows += batch.num_rows();
                sink(batch)
            });
            record_count(&Span::current(), "rows", rows);
            result
        });
        Ok((schema, batches))
    }

    /// Streams the point-in-time join of a planned training data command over `entity_rows`.
    pub(crate) fn training_data<I>(
        &self,
        counted_as: (Api, &'static str),
        plan: TrainingPlan,
        entity_rows: I,
    ) -> BlockingStream
    where
        I: Iterator<Item = featherstore_store::Result<RecordBatch>> + Send + 'static,
    {
        let names: Vec<&str> = plan.sets.iter().map(|s| s.name.as_str()).collect();
        Span::current().record("feature_set", names.join(",").as_str());
        let store = self.store.clone();
        self.stream_blocking(counted_as, move |sink| {
            let (mut entities, mut rows) = (0, 0);
            let mut entity_rows = entity_rows.inspect(|batch| {
                if let Ok(batch) = batch {
                    entities += batch.num_rows();
                }
            });
            let result = store.training_data(&plan, &mut entity_rows, &mut |batch| {
                rows += batch.num_rows();
                sink(batch)
            });
            drop(entity_rows);
            let span = Span::current();
            record_count(&span, "entities", entities);
            record_count(&span, "rows", rows);
            result
        })
    }

    /// [`stream_blocking`] with the configured idle timeout (`stream_idle_timeout_seconds`);
    /// its end is counted as `method` of `api` (see [`StreamCount`]).
    pub(crate) fn stream_blocking<F>(
        &self,
        counted_as: (Api, &'static str),
        work: F,
    ) -> BlockingStream
    where
        F: FnOnce(BatchSink<'_>) -> featherstore_store::Result<()> + Send + 'static,
    {
        stream_blocking(
            self.guards.stream_idle,
            self.metrics.clone(),
            counted_as,
            work,
        )
    }

    /// Creates a set; returns the stored spec and whether it is new.
    pub(crate) async fn create_set(
        &self,
        access: &Access,
        body: &[u8],
    ) -> ApiResult<(Value, bool)> {
        let spec = FeatureSetSpec::from_json(body)?;
        access.require_set(&spec.name)?;
        Span::current().record("feature_set", spec.name.as_str());
        let store = self.store.clone();
        let (stored, created) = blocking(move || Ok(store.create(spec)?)).await?;
        Ok((spec_json(&stored), created))
    }

    /// Changes a stored set in place (PUT or `update_feature_set`):
    /// `{"spec": stored, "changes": [...]}`, no changes when the spec is the stored one.
    pub(crate) async fn update_set(&self, access: &Access, body: &[u8]) -> ApiResult<Value> {
        let spec = FeatureSetSpec::from_json(body)?;
        access.require_set(&spec.name)?;
        Span::current().record("feature_set", spec.name.as_str());
        let store = self.store.clone();
        let (stored, changes) = blocking(move || Ok(store.update(spec)?)).await?;
        Ok(json!({"spec": spec_json(&stored), "changes": changes}))
    }

    /// Every stored version of a set's spec, oldest first.
    pub(crate) async fn list_versions(&self, name: String) -> ApiResult<Value> {
        let store = self.store.clone();
        let versions = blocking(move || Ok(store.versions(&name)?)).await?;
        Ok(Value::Array(versions.iter().map(spec_json).collect()))
    }

    /// The stored spec plus `stats`.
    pub(crate) async fn describe_set(&self, name: String) -> ApiResult<Value> {
        self.describe_set_version(name, None).await
    }

    /// The stored spec, or one version of it, plus the set's `stats` (of all its rows).
    pub(crate) async fn describe_set_version(
        &self,
        name: String,
        version: Option<u64>,
    ) -> ApiResult<Value> {
        let store = self.store.clone();
        let (spec, stats) = blocking(move || {
            let spec = match version {
                Some(version) => store.get_version(&name, version)?,
                None => store.get(&name)?.spec.clone(),
            };
            Ok((spec, store.stats(&name)?))
        })
        .await?;
        let mut value = spec_json(&spec);
        value["stats"] = json!({
            "rows": stats.rows,
            "entities": stats.entities,
            "latest_event_timestamp": stats.latest_event_timestamp.map(format_timestamp),
        });
        Ok(value)
    }

    /// The specs of the sets the caller may see.
    pub(crate) fn list_sets(&self, access: &Access) -> Value {
        Value::Array(
            self.store
                .list()
                .iter()
                .filter(|s| access.sees(&s.spec.name))
                .map(|s| spec_json(&s.spec))
                .collect(),
        )
    }

    /// The specs of the sets the caller may see, each with its `stats` as
    /// [`describe_set`](Self::describe_set) gives them plus `freshness_seconds` (now minus
    /// the newest event time). A set deleted meanwhile is left out.
    pub(crate) async fn list_sets_with_stats(&self, access: &Access) -> ApiResult<Value> {
        let sets: Vec<Arc<FeatureSetSpec>> = self
            .store
            .list()
            .iter()
            .filter(|s| access.sees(&s.spec.name))
            .map(|s| s.spec.clone())
            .collect();
        let store = self.store.clone();
        let listed = interruptible(move || {
            let mut listed = Vec::with_capacity(sets.len());
            for spec in sets {
                let stats = match store.stats(&spec.name) {
                    Ok(stats) => stats,
                    Err(e) if e.code() == featherstore_core::ErrorCode::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                let now = featherstore_core::time::now_micros();
                let mut value = spec_json(&spec);
                value["stats"] = json!({
                    "rows": stats.rows,
                    "entities": stats.entities,
                    "latest_event_timestamp": stats.latest_event_timestamp.map(format_timestamp),
                    "freshness_seconds": stats.latest_event_timestamp.map(|latest| {
                        (now - latest) as f64 / featherstore_core::time::MICROS_PER_SECOND as f64
                    }),
                });
                listed.push(value);
            }
            Ok(listed)
        })
        .await?;
        Ok(Value::Array(listed))
    }

    pub(crate) async fn delete_set(&self, name: String) -> ApiResult<()> {
        let store = self.store.clone();
        blocking(move || Ok(store.delete(&name)?)).await
    }

    /// Starts writing a set's latest values from the offline store into its online values
    /// again ([`FeatureStore::rebuild_online`]) on the blocking pool. It runs to its end even
    /// if nobody waits for it any more: a rebuild stopped half way would have to start over.
    pub(crate) async fn rebuild_online(&self, name: String) -> ApiResult<Rebuild> {
        let store = self.store.clone();
        let counted = name.clone();
        let entities = blocking(move || Ok(store.stats(&counted)?.entities)).await?;
        let (report, progress) = mpsc::channel(REBUILD_PROGRESS_QUEUE);
        let store = self.store.clone();
        let span = Span::current();
        let done = crate::priority::spawn_storage_work(move || {
            span.in_scope(|| {
                // A reader that lags misses updates, never holds the rebuild up.
                let rows = store.rebuild_online(&name, &mut |rows| {
                    let _ = report.try_send(rows as u64);
                })?;
                Ok(rows as u64)
            })
        });
        let finished = async move {
            done.await
                .map_err(|e| ApiError::Internal(format!("the rebuild task failed: {e}")))?
        };
        Ok(Rebuild {
            entities,
            progress,
            finished: Box::pin(finished),
        })
    }

    /// Stores one batch durably, as the whole of a request (HTTP); returns its row count.
    pub(crate) async fn ingest(&self, name: String, batch: RecordBatch) -> ApiResult<usize> {
        let bytes = crate::telemetry::metrics::batch_bytes(&batch);
        let stored = self
            .store_run(name, bytes, move || (vec![batch], None))
            .await;
        if let Some(failure) = stored.failure {
            return Err(failure);
        }
        let rows = stored.rows.iter().sum();
        record_count(&Span::current(), "rows", rows);
        Ok(rows)
    }

    /// Stores durably, in order, the batches `decode` gives, on a storage thread: decoding
    /// DoPut messages there keeps their copies (IPC buffers realigned) off the async workers
    /// that answer reads. `decode` returns the batches, and the error that stopped decoding
    /// after them. `bytes` is what the batches hold, for backpressure: they wait for room
    /// among the bytes being stored. Batches that arrived together are stored as one run
    /// ([`FeatureStore::ingest_run`]).
    pub(crate) async fn store_run(
        &self,
        name: String,
        bytes: usize,
        decode: impl FnOnce() -> (Vec<RecordBatch>, Option<ApiError>) + Send + 'static,
    ) -> StoredRun {
        let store = self.store.clone();
        let set = name.clone();
        let room = match self.guards.ingest_bytes(bytes).await {
            Ok(room) => room,
            Err(e) => return StoredRun::failed(e),
        };
        let stored = blocking(move || {
            let _room = room;
            let (batches, undecodable) = decode();
            let (count, outcome) = store.ingest_run(&set, &batches);
            let stored = &batches[..count];
            let bytes = stored
                .iter()
                .map(crate::telemetry::metrics::batch_bytes)
                .sum();
            Ok(StoredRun {
                rows: stored.iter().map(RecordBatch::num_rows).collect(),
                failure: outcome.err().map(ApiError::from).or(undecodable),
                bytes,
            })
        })
        .await;
        match stored {
            Ok(stored) => {
                self.metrics
                    .ingested(&name, stored.rows.iter().sum(), stored.bytes);
                stored
            }
            Err(e) => StoredRun::failed(e),
        }
    }

    /// Checks that a feature set exists (before a stream of work for it starts).
    pub(crate) fn require_set(&self, name: &str) -> ApiResult<()> {
        self.store.get(name).map(|_| ()).map_err(Into::into)
    }
}

/// What [`AppState::store_run`] stored: the rows of each batch stored, in order, and the
/// error that stopped the run (the batches after the stored ones were not stored).
pub(crate) struct StoredRun {
    pub(crate) rows: Vec<usize>,
    pub(crate) failure: Option<ApiError>,
    /// What the stored batches hold in memory.
    bytes: usize,
}

impl StoredRun {
    fn failed(failure: ApiError) -> StoredRun {
        StoredRun {
            rows: Vec::new(),
            failure: Some(failure),
            bytes: 0,
        }
    }
}

/// The feature set a Flight descriptor names: path `[name]`.
pub(crate) fn set_from_path(path: &[String]) -> ApiResult<String> {
    match path {
        [name] => Ok(name.clone()),
        _ => Err(DomainError::invalid(format!(
            "descriptor path {path:?} must be [feature_set_name]"
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_streaming_task_ends_its_stream_with_an_error() {
        let (tx, mut rx) = mpsc::channel::<Result<u32, String>>(1);
        let failure_tx = tx.clone();
        let task = tokio::spawn(async move {
            tx.send(Ok(1)).await.unwrap();
            panic!("a bug in the task");
        });
        report_failure(task, failure_tx, Err);
        assert_eq!(rx.recv().await, Some(Ok(1)));
        let failure = rx.recv().await.unwrap().unwrap_err();
        assert!(failure.contains("a bug in the task"), "{failure}");
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_panic_in_blocking_storage_work_is_an_internal_error_not_the_end() {
        let metrics = Arc::new(Metrics::for_backend("duckdb"));
        let idle = Duration::from_secs(5);
        let counted_as = (Api::Http, "POST /v1/history (stream)");
        let mut batches = stream_blocking(idle, metrics, counted_as, |_| panic!("a storage bug"));
        let error = batches.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), featherstore_core::ErrorCode::Internal);
        assert!(error.to_string().contains("failed"), "{error}");
        assert!(batches.next().await.is_none());
    }
}
