//! The reads of one set's stored rows, run on a connection where they are readable as a
//! relation (see [`OfflineStore::query_relations`](crate::OfflineStore::query_relations)).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use duckdb::Connection;
use featherstore_core::FeatureSetSpec;

use super::sql;
use crate::types::{BatchSink, HistoryQuery, IngestView, SetStats};
use crate::Result;

/// History rows ordered by entity, event time, then ingest order.
pub(crate) fn history(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    query: &HistoryQuery,
    view: &IngestView,
    sink: BatchSink<'_>,
) -> Result<()> {
    let schema = history_schema(spec, &query.features, view);
    sql::stream_query(
        conn,
        &sql::history(spec, relation, query, view),
        &schema,
        sink,
    )
}

/// The columns of a history answer: as online, plus `ingested_at` last when asked for.
pub fn history_schema(spec: &FeatureSetSpec, features: &[usize], view: &IngestView) -> SchemaRef {
    let schema = spec.projected_schema(features, false);
    if !view.with_ingest_time {
        return schema;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(
        sql::INGESTED_AT_OUTPUT,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// The greatest ingest time of the relation's rows, UTC microseconds.
pub(crate) fn max_ingested_at(conn: &Connection, relation: &str) -> Result<Option<i64>> {
    Ok(conn.query_row(&sql::max_ingested_at(relation), [], |row| {
        row.get::<_, Option<i64>>(0)
    })?)
}

/// One row per entity, all features: the greatest event time, ties to the later ingest;
/// only among rows ingested after sequence `after` when given.
pub(crate) fn latest(
    conn: &Connection,
    relation: &str,
    spec: &FeatureSetSpec,
    after: Option<i64>,
    sink: BatchSink<'_>,
) -> Result<()> {
    let schema = spec.arrow_schema();
    sql::stream_query(conn, &sql::latest(spec, relation, after), &schema, sink)
}

/// The greatest ingest sequence of the relation's rows.
pub(crate) fn max_seq(conn: &Connection, relation: &str) -> Result<Option<i64>> {
    Ok(conn.query_row(&sql::max_seq(relation), [], |row| {
        row.get::<_, Option<i64>>(0)
    })?)
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
