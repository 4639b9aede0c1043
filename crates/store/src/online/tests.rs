use std::sync::Arc;

use arrow::array::{
    Array, AsArray, FixedSizeListBuilder, Float32Builder, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float32Type, Int64Type, TimestampMicrosecondType};
use featherstore_core::coerce::coerce_batch;
use featherstore_core::{EntityKeys, FeatureSetSpec};

use super::OnlineIndex;

fn spec(ttl: Option<u64>) -> Arc<FeatureSetSpec> {
    let mut spec = FeatureSetSpec::from_json(
        br#"{"name": "s", "entity": {"name": "id", "type": "string"},
             "features": [{"name": "n", "type": "int64"}, {"name": "label", "type": "string"},
                          {"name": "e", "type": "float32[2]"}]}"#,
    )
    .unwrap();
    spec.ttl_seconds = ttl;
    Arc::new(spec)
}

fn batch(spec: &FeatureSetSpec, rows: &[(&str, Option<i64>, Option<&str>, i64)]) -> RecordBatch {
    let mut vectors = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    for (_, n, _, _) in rows {
        let x = n.unwrap_or(0) as f32;
        vectors.values().append_slice(&[x, -x]);
        vectors.append(true);
    }
    let input = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as _,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))) as _,
        ),
        (
            "label",
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))) as _,
        ),
        ("e", Arc::new(vectors.finish()) as _),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.3),
            )) as _,
        ),
    ])
    .unwrap();
    coerce_batch(spec, &input).unwrap()
}

fn keys(k: &[&str]) -> EntityKeys {
    EntityKeys::String(k.iter().map(|s| s.to_string()).collect())
}

#[test]
fn newest_event_time_wins_and_ties_go_to_later_ingest() {
    let spec = spec(None);
    let index = OnlineIndex::new(spec.clone());
    index.apply(&batch(
        &spec,
        &[("a", Some(1), Some("x"), 10), ("b", Some(2), None, 10)],
    ));
    // Older event for a: ignored. Tie for b: the later ingest wins, even within one batch.
    index.apply(&batch(
        &spec,
        &[
            ("a", Some(9), Some("old"), 5),
            ("b", Some(3), Some("t1"), 10),
            ("b", Some(4), Some("t2"), 10),
        ],
    ));
    let out = index
        .lookup(&keys(&["b", "a", "zz", "a"]), &[0, 1, 2], 0)
        .unwrap();
    let n = out.column(1).as_primitive::<Int64Type>();
    assert_eq!(
        n.iter().collect::<Vec<_>>(),
        [Some(4), Some(1), None, Some(1)]
    );
    let label = out.column(2).as_string::<i32>();
    assert_eq!(
        label.iter().collect::<Vec<_>>(),
        [Some("t2"), Some("x"), None, Some("x")]
    );
    let e = out.column(3).as_fixed_size_list();
    assert_eq!(
        e.value(0).as_primitive::<Float32Type>().values(),
        &[4.0, -4.0]
    );
    assert!(e.is_null(2));
    let ts = out.column(4).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        ts.iter().collect::<Vec<_>>(),
        [Some(10), Some(10), None, Some(10)]
    );
    assert_eq!(index.entities(), 2);
    assert_eq!(index.latest_event_timestamp(), Some(10));
}

#[test]
fn ttl_hides_values_older_than_now_minus_ttl() {
    let spec = spec(Some(10));
    let index = OnlineIndex::new(spec.clone());
    let second = 1_000_000;
    index.apply(&batch(
        &spec,
        &[
            ("kept", Some(1), None, 100 * second),
            ("gone", Some(2), None, 100 * second - 1),
        ],
    ));
    let out = index
        .lookup(&keys(&["kept", "gone"]), &[0], 110 * second)
        .unwrap();
    let n = out.column(1).as_primitive::<Int64Type>();
    assert_eq!(
        n.iter().collect::<Vec<_>>(),
        [Some(1), None],
        "exactly ttl old is kept"
    );
    assert!(out.column(2).is_null(1), "expired timestamp is null too");
}

#[test]
fn many_entities_across_shards() {
    let spec = spec(None);
    let index = OnlineIndex::new(spec.clone());
    let names: Vec<String> = (0..5000).map(|i| format!("e{i}")).collect();
    let rows: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), Some(i as i64), None, 1))
        .collect();
    index.apply(&batch(&spec, &rows));
    let asked: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    let out = index.lookup(&keys(&asked), &[0], 0).unwrap();
    let n = out.column(1).as_primitive::<Int64Type>();
    assert!(n.iter().zip((0..5000).rev()).all(|(v, i)| v == Some(i)));
}

#[test]
fn empty_and_unknown_lookups_give_aligned_typed_nulls() {
    let spec = spec(None);
    let index = OnlineIndex::new(spec.clone());
    let empty = index.lookup(&keys(&[]), &[0, 1, 2], 0).unwrap();
    assert_eq!(empty.num_rows(), 0);
    empty
        .columns()
        .iter()
        .for_each(|c| c.to_data().validate_full().unwrap());
    let unknown = index.lookup(&keys(&["x"]), &[0, 2], 0).unwrap();
    unknown
        .columns()
        .iter()
        .for_each(|c| c.to_data().validate_full().unwrap());
    assert!(unknown.column(1).is_null(0) && unknown.column(2).is_null(0));
}
