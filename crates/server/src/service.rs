//! The operations both APIs offer, as domain calls: storage work runs on the blocking pool,
//! results come back as the JSON documents of PROTOCOL.md.

use std::sync::Arc;

use arrow::array::RecordBatch;
use featherstore_core::time::format_timestamp;
use featherstore_core::{Error as DomainError, FeatureSetSpec};
use featherstore_store::{BatchSink, Error as StoreError, FeatureStore};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::telemetry::Metrics;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<FeatureStore>,
    pub metrics: Arc<Metrics>,
    pub max_message_bytes: usize,
}

/// Result batches buffered between a storage thread and the client: bounds memory.
const STREAM_BUFFER: usize = 4;

/// Runs `work` on the blocking pool and streams the batches it produces, as it produces them,
/// ending with its error if it fails. Dropping the stream stops the work at its next batch.
pub fn stream_blocking<F>(work: F) -> ReceiverStream<ApiResult<RecordBatch>>
where
    F: FnOnce(BatchSink) -> featherstore_store::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let failure_tx = tx.clone();
    // The storage work runs in the request's span: its spans are children of it.
    let span = tracing::Span::current();
    let work = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let result = work(&mut |batch| {
            tx.blocking_send(Ok(batch))
                .map_err(|_| StoreError::Cancelled)
        });
        match result {
            Ok(()) | Err(StoreError::Cancelled) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
            }
        }
    });
    report_failure(work, failure_tx, |message| Err(ApiError::Internal(message)));
    ReceiverStream::new(rx)
}

/// Watches a task that streams its answers into the channel of `tx`: should it panic,
/// `failure` is sent as the stream's last item. Without it the task's sender would just be
/// dropped and the stream end as if complete: a client would take a truncated answer (or
/// a DoPut that stored nothing) for a successful one.
pub fn report_failure<T: Send + 'static>(
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

/// Runs blocking storage work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| ApiError::Internal(format!("storage task failed: {e}")))?
}

/// Parses `{"name": ...}`, the body of the get and delete actions.
pub fn parse_name(body: &[u8]) -> ApiResult<String> {
    Ok(featherstore_core::action::parse_name(body)?)
}

fn spec_json(spec: &FeatureSetSpec) -> Value {
    serde_json::to_value(spec).expect("specs serialize")
}

impl AppState {
    /// Creates a set; returns the stored spec and whether it is new.
    pub async fn create_set(&self, body: &[u8]) -> ApiResult<(Value, bool)> {
        let spec = FeatureSetSpec::from_json(body)?;
        let store = self.store.clone();
        let (stored, created) = blocking(move || Ok(store.create(spec)?)).await?;
        Ok((spec_json(&stored), created))
    }

    /// The stored spec plus `stats`.
    pub async fn describe_set(&self, name: String) -> ApiResult<Value> {
        let store = self.store.clone();
        let (spec, stats) = blocking(move || {
            let set = store.get(&name)?;
            Ok((set.spec.clone(), store.stats(&name)?))
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

    pub fn list_sets(&self) -> Value {
        Value::Array(
            self.store
                .list()
                .iter()
                .map(|s| spec_json(&s.spec))
                .collect(),
        )
    }

    pub async fn delete_set(&self, name: String) -> ApiResult<()> {
        let store = self.store.clone();
        blocking(move || Ok(store.delete(&name)?)).await
    }

    /// Stores one batch durably, as the whole of a request (HTTP); returns its row count.
    pub async fn ingest(&self, name: String, batch: RecordBatch) -> ApiResult<usize> {
        let rows = self.store_batch(name, batch).await?;
        tracing::Span::current().record("rows", rows as i64);
        Ok(rows)
    }

    /// Stores one batch durably (one of a stream of them); returns its row count.
    pub async fn store_batch(&self, name: String, batch: RecordBatch) -> ApiResult<usize> {
        let store = self.store.clone();
        let set = name.clone();
        let bytes = crate::telemetry::metrics::batch_bytes(&batch);
        let rows = blocking(move || Ok(store.ingest(&set, &batch)?)).await?;
        self.metrics.ingested(&name, rows, bytes);
        Ok(rows)
    }

    /// Checks that a feature set exists (before a stream of work for it starts).
    pub fn require_set(&self, name: &str) -> ApiResult<()> {
        self.store.get(name).map(|_| ()).map_err(Into::into)
    }
}

/// The feature set a Flight descriptor names: path `[name]`.
pub fn set_from_path(path: &[String]) -> ApiResult<String> {
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
        let mut batches = stream_blocking(|_| panic!("a storage bug"));
        let error = batches.next().await.unwrap().unwrap_err();
        assert_eq!(error.code(), featherstore_core::ErrorCode::Internal);
        assert!(error.to_string().contains("a storage bug"), "{error}");
        assert!(batches.next().await.is_none());
    }
}
