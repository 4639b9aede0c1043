//! What calls answer: ingest acknowledgements, stored specs with their statistics, and streams
//! of record batches.

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use featherstore_core::FeatureSetSpec;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::request::Timestamp;
use crate::{Error, Result};

/// The acknowledgement of one ingested batch: it is stored and durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAck {
    /// Index of the batch within its call, counting from 0.
    pub batch: u64,
    /// Rows stored.
    pub rows: u64,
}

/// What a call of [`Client::ingest_batches`](crate::Client::ingest_batches) stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    pub batches: u64,
    pub rows: u64,
}

/// A stream of [`IngestAck`]s, one per batch, in order, each sent once its batch is durable.
/// The first rejected batch ends it with an error; batches acknowledged before stay stored.
pub type AckStream = BoxStream<'static, Result<IngestAck>>;

/// How far a [`Client::rebuild_online`](crate::Client::rebuild_online) has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildProgress {
    /// Latest values written to the online store so far.
    pub rows: u64,
    /// The set's entities when the rebuild started: the rows it writes (one each).
    pub entities: u64,
    /// The rebuild is over: `rows` were written.
    #[serde(default)]
    pub done: bool,
}

/// A stored feature set: its spec (with `version` and `created_at`) and statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureSetInfo {
    #[serde(flatten)]
    pub spec: FeatureSetSpec,
    pub stats: FeatureSetStats,
}

/// Statistics of a stored feature set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeatureSetStats {
    /// Rows stored.
    pub rows: u64,
    /// Distinct entities.
    pub entities: u64,
    /// Greatest event time stored, if any row is.
    pub latest_event_timestamp: Option<Timestamp>,
}

impl FeatureSetInfo {
    /// Splits the `get_feature_set` answer: the spec's fields plus `"stats"`.
    pub(crate) fn from_json(mut value: serde_json::Value) -> Result<Self> {
        #[derive(Deserialize)]
        struct Stats {
            rows: u64,
            entities: u64,
            latest_event_timestamp: Option<String>,
        }
        let stats = value
            .as_object_mut()
            .and_then(|o| o.remove("stats"))
            .ok_or_else(|| Error::protocol("get_feature_set answered without \"stats\""))?;
        let stats: Stats = serde_json::from_value(stats)
            .map_err(|e| Error::protocol(format!("invalid feature set stats: {e}")))?;
        let spec: FeatureSetSpec = serde_json::from_value(value)
            .map_err(|e| Error::protocol(format!("invalid feature set spec: {e}")))?;
        let latest = stats
            .latest_event_timestamp
            .as_deref()
            .map(|t| {
                Timestamp::parse(t)
                    .map_err(|_| Error::protocol(format!("invalid latest_event_timestamp {t:?}")))
            })
            .transpose()?;
        Ok(FeatureSetInfo {
            spec,
            stats: FeatureSetStats {
                rows: stats.rows,
                entities: stats.entities,
                latest_event_timestamp: latest,
            },
        })
    }
}

/// A stream of result batches (history, training data), read from the server as it is
/// consumed: memory stays bounded by a few batches however large the result.
///
/// ```no_run
/// # async fn run(client: featherstore_client::Client) -> featherstore_client::Result<()> {
/// use futures::TryStreamExt;
/// use featherstore_client::HistoryRequest;
///
/// let mut batches = client.history(HistoryRequest::new("user_features")).await?;
/// while let Some(batch) = batches.try_next().await? {
///     println!("{} rows", batch.num_rows());
/// }
/// # Ok(())
/// # }
/// ```
pub struct BatchStream {
    inner: FlightRecordBatchStream,
}

impl std::fmt::Debug for BatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchStream")
            .field("schema", &self.schema())
            .finish_non_exhaustive()
    }
}

impl BatchStream {
    pub(crate) fn new(inner: FlightRecordBatchStream) -> Self {
        BatchStream { inner }
    }

    /// The result schema, once the server has sent it (at the latest after the first batch,
    /// and after the end of an empty result).
    pub fn schema(&self) -> Option<SchemaRef> {
        self.inner.schema().cloned()
    }

    /// Reads every batch.
    pub async fn collect_batches(self) -> Result<Vec<RecordBatch>> {
        self.try_collect().await
    }

    /// Reads every batch and concatenates them into one; an empty result is an empty batch
    /// with the result schema.
    pub async fn concat(mut self) -> Result<RecordBatch> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        let schema = match (batches.first(), self.schema()) {
            (Some(first), _) => first.schema(),
            (None, Some(schema)) => schema,
            (None, None) => return Err(Error::protocol("the result stream carried no schema")),
        };
        match batches.len() {
            1 => Ok(batches.pop().expect("one batch")),
            _ => Ok(arrow::compute::concat_batches(&schema, &batches)?),
        }
    }
}

impl Stream for BatchStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx).map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_spec_and_stats() {
        let answer = json!({
            "name": "s", "entity": {"name": "id", "type": "int64"}, "timestamp": "ts",
            "features": [{"name": "x", "type": "float32"}], "version": 1,
            "created_at": "2026-01-01T00:00:00Z",
            "stats": {"rows": 3, "entities": 2, "latest_event_timestamp": "2026-01-02T00:00:00Z"}
        });
        let info = FeatureSetInfo::from_json(answer.clone()).unwrap();
        assert_eq!(info.spec.version, Some(1));
        assert_eq!(info.stats.rows, 3);
        assert_eq!(
            info.stats.latest_event_timestamp,
            Some(Timestamp::from_secs(1_767_312_000))
        );
        assert_eq!(serde_json::to_value(&info).unwrap(), answer);
        assert!(FeatureSetInfo::from_json(json!({"name": "s"})).is_err());
    }
}

/// The answer of `update_feature_set`: the stored spec (a new version when anything changed)
/// and what changed, empty when the spec was the stored one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FeatureSetUpdate {
    pub spec: FeatureSetSpec,
    pub changes: Vec<featherstore_core::evolution::Change>,
}
