//! The reads of one set's stored rows, run on a connection where they are readable as a
//! relation (see [`OfflineStore::query_relations`](crate::OfflineStore::query_relations)).

use duckdb::Connection;
use featherstore_core::FeatureSetSpec;

use super::sql;
use crate::types::{BatchSink, HistoryQuery, SetStats};
use crate::Result;

/// History rows ordered by entity, event time, then ingest order.
pub(crate) fn history(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    query: &HistoryQuery,
    sink: BatchSink<'_>,
) -> Result<()> {
    let schema = spec.projected_schema(&query.features, false);
    sql::stream_query(conn, &sql::history(spec, relation, query), &schema, sink)
}

/// One row per entity, all features: the greatest event time, ties to the later ingest.
pub(crate) fn latest(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    sink: BatchSink<'_>,
) -> Result<()> {
    let schema = spec.arrow_schema();
    sql::stream_query(conn, &sql::latest(spec, relation), &schema, sink)
}

/// Rows, distinct entities and the greatest event time.
pub(crate) fn stats(conn: &Connection, relation: &str, spec: &FeatureSetSpec) -> Result<SetStats> {
    let stats = conn.query_row(&sql::stats(spec, relation), [], |row| {
        Ok(SetStats {
            rows: row.get::<_, i64>(0)? as u64,
            entities: row.get::<_, i64>(1)? as u64,
            latest_event_timestamp: row.get::<_, Option<i64>>(2)?,
        })
    })?;
    Ok(stats)
}
