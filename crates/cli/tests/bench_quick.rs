//! The benchmark suite's quick profile (`featherstore-bench --quick`) against this crate's
//! debug binary: every case runs, answers what it should, and is in the JSON, so the suite
//! cannot rot unnoticed. Figures of a debug build are not checked, only that each budget line
//! was measured.

use std::time::Duration;

use clap::Parser;
use featherstore_bench::server::ServeCommand;
use featherstore_bench::{run_suite, Args};
use serde_json::Value;

/// Every case id of the quick profile (all groups run).
fn expected_cases() -> Vec<String> {
    let mut cases = Vec::new();
    for concurrency in [1, 16, 64] {
        cases.push(format!("floor.flight.c{concurrency}"));
        cases.push(format!("floor.http.c{concurrency}"));
    }
    for protocol in ["flight", "http"] {
        for entities in [1, 10, 100, 1000] {
            for concurrency in [1, 16, 64] {
                cases.push(format!("online.{protocol}.e{entities}.c{concurrency}"));
            }
        }
        for entities in [1, 100] {
            cases.push(format!("open.{protocol}.e{entities}"));
            cases.push(format!("ingest_reads.{protocol}.e{entities}.c1"));
        }
        for backend in ["memory", "redis"] {
            for entities in [1, 100] {
                for concurrency in [1, 16] {
                    cases.push(format!(
                        "backends.{backend}.{protocol}.e{entities}.c{concurrency}"
                    ));
                }
            }
        }
        cases.push(format!("service.{protocol}.one_set"));
        cases.push(format!("service.{protocol}.three_sets"));
    }
    for case in [
        "memory",
        "ingest",
        "history",
        "training.1",
        "training.2",
        "startup",
    ] {
        cases.push(case.into());
    }
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_profile_runs_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let args = Args::try_parse_from([
        "featherstore-bench",
        "--quick",
        "--server-bin",
        env!("CARGO_BIN_EXE_featherstore"),
        "--json",
        json.to_str().unwrap(),
    ])
    .unwrap();
    run_suite(args).await.unwrap();

    let document: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let cases = document["cases"].as_array().unwrap();
    for expected in expected_cases() {
        let case = cases
            .iter()
            .find(|case| case["case"] == expected.as_str())
            .unwrap_or_else(|| panic!("case {expected} missing from the JSON"));
        if let Some(latency) = case.get("latency") {
            assert!(
                latency["requests"].as_u64().unwrap() > 0,
                "{expected}: {latency}"
            );
            assert_eq!(latency["errors"], 0, "{expected}: {latency}");
            assert!(latency["p99_ms"].as_f64().unwrap() > 0.0, "{expected}");
        } else {
            assert!(
                !case["figures"].as_object().unwrap().is_empty(),
                "{expected}"
            );
        }
    }
    let budget = document["budget"].as_array().unwrap();
    assert!(budget.len() >= 15, "{budget:?}");
    for line in budget {
        assert!(
            line["pass"].is_boolean(),
            "budget line not measured: {line}"
        );
    }
    assert!(document["machine"]["load_before"].is_string());
}

/// Against a running server, the figures name the backend the server reports, whatever
/// `--backend` (a started server's choice) says.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_is_measured_under_its_own_backend() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeCommand {
        bin: env!("CARGO_BIN_EXE_featherstore").into(),
        backend: "parquet".into(),
        data_dir: dir.path().join("data"),
        startup_timeout: Duration::from_secs(120),
        online: None,
    }
    .spawn()
    .unwrap();
    let json = dir.path().join("bench.json");
    let args = Args::try_parse_from([
        "featherstore-bench",
        "--quick",
        "--backend",
        "duckdb",
        "--flight",
        &server.target.flight,
        "--http",
        &server.target.http,
        "--skip",
        "redis,open,service,ingest_reads,history,training,startup,memory",
        "--json",
        json.to_str().unwrap(),
    ])
    .unwrap();
    run_suite(args).await.unwrap();
    server.stop().unwrap();

    let document: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(document["profile"]["backend"], "parquet");
    let ingest = document["budget"]
        .as_array()
        .unwrap()
        .iter()
        .find(|line| {
            line["budget"]
                .as_str()
                .unwrap_or("")
                .starts_with("durable ingest")
        })
        .unwrap_or_else(|| panic!("no ingest line: {}", document["budget"]));
    assert!(
        ingest["budget"]
            .as_str()
            .unwrap()
            .contains("parquet backend"),
        "{ingest}"
    );
}
