//! `featherstore apply` with feature services, and `featherstore service` (list, describe,
//! get, delete), against a real `featherstore serve` child process.

use featherstore_testkit::child::{ChildServer, Run, Serve};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_featherstore");

const DECLARED: &str = "\
feature_sets:
  - name: user_features
    entity: {name: user_id, type: string}
    features:
      - {name: age, type: int64}
  - name: merchant_features
    entity: {name: merchant_id, type: int64}
    features:
      - {name: risk, type: float64}
feature_services:
  - name: fraud_model
    features: ['user_features:age', 'merchant_features:*']
    description: fraud scoring
";

fn run(server: &ChildServer, args: &[&str]) -> Run {
    Run::new(
        BIN,
        args,
        &[("FEATHERSTORE_FLIGHT", Some(server.flight.as_str()))],
        None,
    )
}

#[test]
fn apply_declares_services_beside_sets_and_service_commands_use_them() {
    let server = Serve::new(BIN).start();
    let file = server.file("declared.yaml", DECLARED);
    let applied = run(&server, &["apply", "-f", &file]).ok();
    assert!(
        applied.contains("created       service fraud_model"),
        "{applied}"
    );
    let again = run(&server, &["apply", "-f", &file, "--json"]).ok();
    let report: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(report[2]["kind"], "feature_service");
    assert_eq!(report[2]["status"], "unchanged");
    let changed = server.file(
        "changed.yaml",
        &DECLARED.replace("'merchant_features:*'", "'merchant_features:risk'"),
    );
    let conflict = run(&server, &["apply", "-f", &changed]).failed();
    assert!(
        conflict.contains("feature sets and services have changes"),
        "{conflict}"
    );
    let unknown = server.file(
        "unknown.yaml",
        "feature_services:\n  - {name: broken, features: ['ghosts:x']}\n",
    );
    let missing = run(&server, &["apply", "-f", &unknown]).fails();
    assert!(missing.contains("ghosts"), "{missing}");

    let users = server.file(
        "users.csv",
        "user_id,age,event_timestamp\nu1,31,2026-01-01T00:00:00Z\n",
    );
    run(&server, &["ingest", "user_features", &users]).ok();
    let merchants = server.file(
        "merchants.csv",
        "merchant_id,risk,event_timestamp\n7,0.25,2026-01-01T00:00:00Z\n",
    );
    run(&server, &["ingest", "merchant_features", &merchants]).ok();

    let listed = run(&server, &["service", "list"]).ok();
    assert!(
        listed.contains("fraud_model") && listed.contains("fraud scoring"),
        "{listed}"
    );
    let described: Value =
        serde_json::from_str(&run(&server, &["service", "describe", "fraud_model"]).ok()).unwrap();
    assert_eq!(described["features"][1], "merchant_features:*");

    let rows = run(
        &server,
        &[
            "service",
            "get",
            "fraud_model",
            "--entity",
            "user_id=u1,nobody",
            "--entity",
            "merchant_id=7,7",
            "--json",
        ],
    )
    .ok();
    let rows: Vec<Value> = rows
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["user_id"], "u1");
    assert_eq!(rows[0]["age"], 31);
    assert_eq!(rows[0]["risk"], 0.25);
    assert_eq!(rows[1]["age"], Value::Null);
    let bad_key = run(
        &server,
        &[
            "service",
            "get",
            "fraud_model",
            "--entity",
            "merchant_id=seven",
            "--entity",
            "user_id=u1",
        ],
    )
    .fails();
    assert!(bad_key.contains("not an integer"), "{bad_key}");

    let refused = run(&server, &["delete", "merchant_features"]).fails();
    assert!(refused.contains("fraud_model"), "{refused}");
    run(&server, &["service", "delete", "fraud_model"]).ok();
    let none = run(&server, &["service", "list"]).ok();
    assert!(none.contains("no feature services"), "{none}");
    run(&server, &["delete", "merchant_features"]).ok();
}
