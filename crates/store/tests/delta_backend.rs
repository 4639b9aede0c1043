//! The Delta Lake backend against a real S3-compatible server (moto, started on loopback by the
//! test kit; `scripts/setup-s3.sh` installs it) and on `file://`: the store contract on S3,
//! several stores writing one set at once, an unreachable object store, compaction,
//! checkpoints and the bounded cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use featherstore_core::{
    ErrorCode, FeatureServiceSpec, FeatureSetSpec, HistoryTicket, OnlineTicket,
};
use featherstore_store::delta::{DeltaOptions, DeltaStore};
use featherstore_store::query::EngineSettings;
use featherstore_store::{FeatureStore, HistoryQuery, Limits, OfflineStore};
use featherstore_testkit::s3::{Proxy, S3Server};

const SECOND: i64 = 1_000_000;
const SPEC: &str = r#"{"name": "s", "entity": {"name": "id", "type": "string"},
    "features": [{"name": "n", "type": "int64"}, {"name": "e", "type": "float32[2]"}]}"#;

fn spec() -> FeatureSetSpec {
    let mut spec = FeatureSetSpec::from_json(SPEC.as_bytes()).unwrap();
    spec.version = Some(1);
    spec
}

fn engine() -> EngineSettings {
    EngineSettings {
        connections: 2,
        ..EngineSettings::default()
    }
}

/// A store on `bucket` of the server at `address`, its cache in `dir`.
fn s3_store(address: std::net::SocketAddr, bucket: &str, dir: &Path) -> DeltaStore {
    let mut options = DeltaOptions::new(format!("s3://{bucket}/features"), dir.join("cache"));
    options.storage_options = S3Server::storage_options(address);
    DeltaStore::open(options, &engine()).unwrap()
}

fn file_options(dir: &Path) -> DeltaOptions {
    DeltaOptions::new(
        format!("file://{}", dir.join("delta").display()),
        dir.join("cache"),
    )
}

/// Canonical rows (id, n, event time in seconds); `e` null.
fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
    let input = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.2 * SECOND),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    featherstore_core::coerce::coerce_batch(&spec(), &input).unwrap()
}

/// (id, n, event seconds) of every history row, in the store's order.
fn scan(store: &dyn OfflineStore) -> featherstore_store::Result<Vec<(String, i64, i64)>> {
    let query = HistoryQuery {
        entities: None,
        start: None,
        end: None,
        features: vec![0],
    };
    let mut rows = Vec::new();
    store.scan(&spec(), &query, &mut |b: RecordBatch| {
        let ids = b.column(0).as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let ts = b
            .column(2)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            rows.push((ids.value(i).to_string(), n.value(i), ts.value(i) / SECOND));
        }
        Ok(())
    })?;
    Ok(rows)
}

#[test]
fn the_store_contract_holds_on_s3() {
    let s3 = S3Server::start();
    s3.create_bucket("contract");
    let dir = tempfile::tempdir().unwrap();
    {
        let store = s3_store(s3.address, "contract", dir.path());
        store.create(&spec()).unwrap();
        // The same definition again is that set (another server on the bucket, told of it
        // by a shared registry, takes it in); another definition under its name is refused.
        store.create(&spec()).unwrap();
        let mut other = spec();
        other.description = Some("another definition".into());
        let again = store.create(&other).unwrap_err();
        assert_eq!(again.code(), ErrorCode::AlreadyExists);
        store
            .append(&spec(), &batch(&[("b", 1, 10), ("a", 2, 20), ("a", 3, 5)]))
            .unwrap();
        store.append(&spec(), &batch(&[("a", 4, 20)])).unwrap();
    }
    // Another server (a fresh cache) on the same bucket sees the same set and rows.
    let other = tempfile::tempdir().unwrap();
    let store = s3_store(s3.address, "contract", other.path());
    assert_eq!(store.load_specs().unwrap(), vec![spec()]);
    assert_eq!(
        scan(&store).unwrap(),
        vec![
            ("a".to_string(), 3, 5),
            ("a".to_string(), 2, 20),
            ("a".to_string(), 4, 20), // a tie on event time goes to the later ingest
            ("b".to_string(), 1, 10),
        ]
    );
    let stats = store.stats(&spec()).unwrap();
    assert_eq!((stats.rows, stats.entities), (4, 2));
    store.delete("s").unwrap();
    assert!(store.load_specs().unwrap().is_empty());
    store.create(&spec()).unwrap();
    assert!(
        scan(&store).unwrap().is_empty(),
        "a re-created set starts empty"
    );
    s3.stop();
}

/// Two stores (two servers) on one bucket append to the same set at once: every acknowledged
/// batch is stored exactly once, and the ingest order is one total order across both.
#[test]
fn concurrent_writers_on_one_bucket_lose_nothing_and_duplicate_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket("shared");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let stores: Vec<Arc<DeltaStore>> = dirs
        .iter()
        .map(|d| Arc::new(s3_store(s3.address, "shared", d.path())))
        .collect();
    stores[0].create(&spec()).unwrap();
    let stores: Vec<Arc<DeltaStore>> = dirs
        .iter()
        .map(|d| Arc::new(s3_store(s3.address, "shared", d.path())))
        .collect();
    const BATCHES: i64 = 12;
    let writers: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(w, store)| {
            let store = Arc::clone(store);
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for b in 0..BATCHES {
                    let id = format!("w{w}-b{b}");
                    // Both rows at the same event time: only the ingest order separates them.
                    let rows = batch(&[(id.as_str(), 2 * b, 100), (id.as_str(), 2 * b + 1, 100)]);
                    if store.append(&spec(), &rows).is_ok() {
                        acknowledged.push(id);
                    }
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(acknowledged.len() as i64, 2 * BATCHES, "no batch refused");
    let reader = tempfile::tempdir().unwrap();
    let rows = scan(&s3_store(s3.address, "shared", reader.path())).unwrap();
    let mut per_batch: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, n, _) in rows {
        per_batch.entry(id).or_default().push(n);
    }
    assert_eq!(per_batch.len(), acknowledged.len());
    for id in &acknowledged {
        let n = &per_batch[id];
        // Exactly its two rows, once each, in the order they were given.
        assert_eq!(n.len(), 2, "{id}: {n:?}");
        assert_eq!(n[1], n[0] + 1, "{id}: ingest order within the batch");
    }
    s3.stop();
}

/// With the object store unreachable, ingest fails (UNAVAILABLE) and stores nothing, history
/// fails UNAVAILABLE, online reads go on from memory; once it is back, everything works again
/// without a restart.
#[test]
fn an_unreachable_object_store_fails_ingest_and_history_but_not_online_reads() {
    let s3 = S3Server::start();
    s3.create_bucket("faults");
    let proxy = Proxy::start(s3.address);
    let dir = tempfile::tempdir().unwrap();
    let offline = s3_store(proxy.address, "faults", dir.path());
    let store =
        FeatureStore::open(Box::new(offline), Limits::default(), dir.path().join("tmp")).unwrap();
    store.create(spec()).unwrap();
    store.ingest("s", &batch(&[("a", 1, 10)])).unwrap();

    proxy.set_cut(true);
    let failed = store.ingest("s", &batch(&[("a", 2, 20)])).unwrap_err();
    assert_eq!(failed.code(), ErrorCode::Unavailable, "{failed}");
    let unreadable = history(&store).unwrap_err();
    assert_eq!(unreadable.code(), ErrorCode::Unavailable, "{unreadable}");
    assert_eq!(online_n(&store, "a"), Some(1), "online reads go on");

    proxy.set_cut(false);
    store.ingest("s", &batch(&[("a", 3, 30)])).unwrap();
    assert_eq!(
        history(&store).unwrap(),
        vec![1, 3],
        "the failed batch is not stored; the next is"
    );
    assert_eq!(online_n(&store, "a"), Some(3));
    drop(store);
    s3.stop();
}

fn history(store: &FeatureStore) -> featherstore_store::Result<Vec<i64>> {
    let ticket: HistoryTicket =
        serde_json::from_value(serde_json::json!({"feature_set": "s", "features": ["n"]})).unwrap();
    let (set, query, view) = store.plan_history(&ticket)?;
    let mut out = Vec::new();
    store.scan_history(&set, &query, &view, &mut |b| {
        let n = b.column_by_name("n").unwrap().as_primitive::<Int64Type>();
        out.extend((0..n.len()).map(|i| n.value(i)));
        Ok(())
    })?;
    Ok(out)
}

fn online_n(store: &FeatureStore, id: &str) -> Option<i64> {
    let ticket = OnlineTicket {
        feature_set: "s".into(),
        entities: vec![serde_json::json!(id)],
        features: Some(vec!["n".into()]),
    };
    let batch = store.online(&ticket).unwrap();
    let n = batch
        .column_by_name("n")
        .unwrap()
        .as_primitive::<Int64Type>();
    n.is_valid(0).then(|| n.value(0))
}

#[test]
fn compaction_merges_small_files_and_checkpoints_follow_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = file_options(dir.path());
    options.compact_min_files = 3;
    options.checkpoint_interval = 4;
    // Only `maintain` below runs it.
    options.maintenance_interval = Duration::from_secs(3600);
    let store = DeltaStore::open(options, &engine()).unwrap();
    store.create(&spec()).unwrap();
    for i in 0..5 {
        store
            .append(&spec(), &batch(&[("a", i, 10), ("b", 10 + i, 10 + i)]))
            .unwrap();
    }
    let before = scan(&store).unwrap();
    assert_eq!(store.data_files("s").unwrap(), 5);
    store.maintain().unwrap();
    assert_eq!(store.data_files("s").unwrap(), 1, "one partition, one file");
    assert_eq!(scan(&store).unwrap(), before, "same rows, same order");
    let log = dir.path().join("delta/s/_delta_log");
    assert!(
        log.join("_last_checkpoint").exists(),
        "a checkpoint after {} commits",
        5
    );
    // The ingest order goes on after compaction: a tie goes to the newer row.
    store.append(&spec(), &batch(&[("a", 99, 10)])).unwrap();
    let latest_a = scan(&store)
        .unwrap()
        .into_iter()
        .rfind(|r| r.0 == "a")
        .unwrap();
    assert_eq!(latest_a, ("a".to_string(), 99, 10));
    drop(store);
    // Reopened from the checkpoint and the commits after it.
    let store = DeltaStore::open(file_options(dir.path()), &engine()).unwrap();
    assert_eq!(scan(&store).unwrap().len(), before.len() + 1);
}

#[test]
fn the_cache_keeps_no_more_than_its_bound_between_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = file_options(dir.path());
    options.cache_max_bytes = 1;
    let store = DeltaStore::open(options, &engine()).unwrap();
    store.create(&spec()).unwrap();
    for i in 0..3 {
        store.append(&spec(), &batch(&[("a", i, i)])).unwrap();
    }
    // Every query still reads every file (pinned while it runs)...
    assert_eq!(scan(&store).unwrap().len(), 3);
    assert_eq!(scan(&store).unwrap().len(), 3);
    // ...and none stays once it is done.
    assert_eq!(store.cache_usage(), (0, 0));
}

/// The registry's folder sits beside the tables: a set of its name is refused, not written
/// into the registry.
#[test]
fn a_set_named_as_the_registry_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeltaStore::open(file_options(dir.path()), &engine()).unwrap();
    store.create(&spec()).unwrap();
    let mut clash = spec();
    clash.name = "_featherstore".into();
    let refused = store.create(&clash).unwrap_err();
    assert!(
        matches!(&refused, featherstore_store::Error::Domain(e) if e.to_string().contains("reserved")),
        "{refused:?}"
    );
    // The registry is intact: the first set is still listed, alone.
    let reopened = DeltaStore::open(file_options(dir.path()), &engine()).unwrap();
    let names: Vec<String> = reopened
        .load_specs()
        .unwrap()
        .into_iter()
        .map(|spec| spec.name)
        .collect();
    assert_eq!(names, [spec().name]);
}

fn service(name: &str, features: &[&str], created_at: &str) -> FeatureServiceSpec {
    FeatureServiceSpec {
        name: name.into(),
        features: features.iter().map(|f| f.to_string()).collect(),
        description: None,
        tags: Default::default(),
        created_at: Some(created_at.into()),
    }
}

/// Feature services live in the bucket beside the specs: every server on it sees them, the
/// same definition stored again (by another server) is no error, a different one under a
/// taken name is refused rather than silently replacing what the other servers serve.
#[test]
fn feature_services_are_shared_through_the_bucket_with_conditional_puts() {
    let s3 = S3Server::start();
    s3.create_bucket("services");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = s3_store(s3.address, "services", dirs[0].path());
    let second = s3_store(s3.address, "services", dirs[1].path());
    assert!(first.load_services().unwrap().is_empty());
    let b = service("b", &["s:*"], "2026-01-01T00:00:00Z");
    let a = service("a", &["s:n"], "2026-01-01T00:00:00Z");
    first.save_service(&b).unwrap();
    first.save_service(&a).unwrap();
    assert_eq!(second.load_services().unwrap(), [a.clone(), b.clone()]);

    second
        .save_service(&service("a", &["s:n"], "2026-02-02T00:00:00Z"))
        .unwrap();
    let clash = second
        .save_service(&service("a", &["s:e"], "2026-02-02T00:00:00Z"))
        .unwrap_err();
    assert_eq!(clash.code(), ErrorCode::AlreadyExists, "{clash}");
    assert_eq!(first.load_services().unwrap(), [a, b.clone()], "unchanged");

    second.delete_service("a").unwrap();
    second.delete_service("a").unwrap();
    assert_eq!(first.load_services().unwrap(), [b]);
    s3.stop();
}
