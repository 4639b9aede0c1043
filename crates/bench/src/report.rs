//! The suite's output: one record per case, the table, the budget lines of issue 11 with
//! PASS/FAIL, and the JSON document.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::{Latency, Mode};
use crate::Profile;

/// One measured case.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// A stable id (`online.http.e100.c16`): the JSON's key for scripts and the smoke test.
    pub case: String,
    /// What was measured, for people.
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities_per_request: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities_per_s: Option<f64>,
    /// Figures of the throughput, startup and memory cases (`rows_per_s`, `seconds`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, f64>,
}

impl Record {
    pub fn figures(case: impl Into<String>, label: impl Into<String>) -> Self {
        Record {
            case: case.into(),
            label: label.into(),
            mode: None,
            concurrency: None,
            entities_per_request: None,
            latency: None,
            entities_per_s: None,
            figures: BTreeMap::new(),
        }
    }

    pub fn latency(
        case: impl Into<String>,
        label: impl Into<String>,
        mode: Mode,
        concurrency: usize,
        entities: usize,
        latency: Latency,
    ) -> Self {
        Record {
            entities_per_s: Some(latency.requests_per_s * entities as f64),
            mode: Some(mode),
            concurrency: Some(concurrency),
            entities_per_request: Some(entities),
            latency: Some(latency),
            ..Record::figures(case, label)
        }
    }

    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.figures.insert(name.into(), value);
        self
    }
}

/// One budget line of issue 11, as measured.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetLine {
    pub budget: String,
    /// What was compared, with the cases it came from.
    pub measured: String,
    pub value: f64,
    pub limit: f64,
    /// `">="` or `"<="`: `value` against `limit`.
    pub comparison: &'static str,
    /// `None` when a case it needs did not run (skipped, or no child server to measure).
    pub pass: Option<bool>,
}

#[derive(Serialize)]
pub struct Document<'a> {
    pub machine: Machine,
    pub profile: &'a Profile,
    pub server: String,
    pub cases: &'a [Record],
    pub budget: &'a [BudgetLine],
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub load_before: String,
    pub load_after: String,
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn find<'a>(records: &'a [Record], case: &str) -> Option<&'a Record> {
    records.iter().find(|record| record.case == case)
}

fn latency<'a>(records: &'a [Record], case: &str) -> Option<&'a Latency> {
    find(records, case)?.latency.as_ref()
}

fn line(
    budget: &str,
    measured: String,
    value: Option<f64>,
    comparison: &'static str,
    limit: f64,
) -> BudgetLine {
    let pass = value.map(|value| match comparison {
        ">=" => value >= limit,
        _ => value <= limit,
    });
    BudgetLine {
        budget: budget.into(),
        measured,
        value: value.unwrap_or(f64::NAN),
        limit,
        comparison,
        pass,
    }
}

/// The budget lines of issue 11 (and issue 13's Redis lines) that the suite measures.
pub fn budget(records: &[Record], profile: &Profile) -> Vec<BudgetLine> {
    let mut lines = Vec::new();
    let http_one = latency(records, "online.http.e1.c16");
    let health = latency(records, "floor.http.c16");
    lines.push(line(
        "HTTP online, 1 entity, 16 connections: >= 0.8x GET /health",
        "requests/s of online.http.e1.c16 / floor.http.c16".into(),
        http_one
            .zip(health)
            .map(|(read, floor)| read.requests_per_s / floor.requests_per_s),
        ">=",
        0.8,
    ));
    for protocol in ["http", "flight"] {
        let case = format!("online.{protocol}.e100.c1");
        lines.push(line(
            &format!("{protocol} online, 100 entities, concurrency 1: p99 <= 1 ms"),
            format!("p99 ms of {case}"),
            latency(records, &case).map(|l| l.p99_ms),
            "<=",
            1.0,
        ));
        let case = format!("online.{protocol}.e100.c16");
        lines.push(line(
            &format!("{protocol} online, 100 entities, concurrency 16: >= 1.5M entities/s"),
            format!("entities/s of {case}, in millions"),
            find(records, &case)
                .and_then(|r| r.entities_per_s)
                .map(|e| e / 1e6),
            ">=",
            1.5,
        ));
    }
    for protocol in ["flight", "http"] {
        let one = latency(records, &format!("service.{protocol}.one_set"));
        let three = find(records, &format!("service.{protocol}.three_sets"));
        let what = three.map_or("3-set read".into(), |r| r.label.clone());
        lines.push(line(
            &format!(
                "{protocol}: a 3-set service read of 1 entity row: p50 within 1.5x of a 1-set read"
            ),
            format!("p50 of {what} / p50 of one 1-set read"),
            one.zip(three.and_then(|r| r.latency.as_ref()))
                .map(|(one, three)| three.p50_ms / one.p50_ms),
            "<=",
            1.5,
        ));
    }
    for protocol in ["flight", "http"] {
        for entities in [1, 100] {
            let busy = format!("ingest_reads.{protocol}.e{entities}.c1");
            let idle = format!("online.{protocol}.e{entities}.c1");
            let busy_latency = latency(records, &busy);
            lines.push(line(
                &format!("{protocol} {entities} entities while full-speed ingest runs: p99 <= 2x idle p99"),
                format!("p99 of {busy} / p99 of {idle}"),
                busy_latency
                    .zip(latency(records, &idle))
                    .map(|(busy, idle)| busy.p99_ms / idle.p99_ms),
                "<=",
                2.0,
            ));
            lines.push(line(
                &format!("{protocol} {entities} entities while full-speed ingest runs: no read over 10 ms"),
                format!("max ms of {busy}"),
                busy_latency.map(|l| l.max_ms),
                "<=",
                10.0,
            ));
        }
    }
    for (entities, limit) in [(1, 1.0), (100, 3.0)] {
        let case = format!("backends.redis.http.e{entities}.c1");
        lines.push(line(
            &format!(
                "HTTP online from Redis (loopback), {entities} entit{}, concurrency 1: p99 <= {limit} ms",
                if entities == 1 { "y" } else { "ies" }
            ),
            format!("p99 ms of {case} (memory: backends.memory.http.e{entities}.c1)"),
            latency(records, &case).map(|l| l.p99_ms),
            "<=",
            limit,
        ));
    }
    let startup_rows = find(records, "startup").and_then(|r| r.figures.get("stored_rows"));
    lines.push(line(
        "startup with 10M stored rows: serving within 3 s",
        format!(
            "seconds from spawn to an online read answering the stored latest, {} stored rows",
            startup_rows.map_or("?".into(), |rows| format!("{rows:.0}"))
        ),
        find(records, "startup").and_then(|r| r.figures.get("seconds").copied()),
        "<=",
        3.0,
    ));
    lines.push(line(
        "online index <= 1.5x the raw bytes of the latest values",
        "featherstore_online_index_memory_bytes / raw bytes (key + values + timestamp per entity)"
            .into(),
        find(records, "memory").and_then(|r| r.figures.get("index_over_raw").copied()),
        "<=",
        1.5,
    ));
    lines.push(line(
        &format!(
            "durable ingest (Rust client DoPut, 64k-row batches, {} backend): >= 2M rows/s",
            profile.backend
        ),
        "rows/s of ingest, in millions".into(),
        find(records, "ingest")
            .and_then(|r| r.figures.get("rows_per_s"))
            .map(|r| r / 1e6),
        ">=",
        2.0,
    ));
    let first_training = find(records, "training.1");
    lines.push(line(
        "training data 1M entity rows x 1M feature rows (Rust client DoExchange): <= 0.4 s",
        first_training.map_or("training.1".into(), |r| {
            format!(
                "seconds of training.1 ({:.0} entity rows x {:.0} feature rows)",
                r.figures.get("entity_rows").copied().unwrap_or_default(),
                r.figures.get("feature_rows").copied().unwrap_or_default()
            )
        }),
        first_training.and_then(|r| r.figures.get("seconds").copied()),
        "<=",
        0.4,
    ));
    lines
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// The human table: latency cases, then the figure cases, then the budget.
pub fn print(records: &[Record], budget: &[BudgetLine]) {
    println!(
        "{:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>6}",
        "case",
        "conc",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "requests/s",
        "entities/s",
        "errors"
    );
    for record in records {
        if let Some(l) = &record.latency {
            println!(
                "{:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>10.0} {:>12.0} {:>6}",
                record.case,
                record.concurrency.unwrap_or(1),
                ms(l.p50_ms),
                ms(l.p99_ms),
                ms(l.p999_ms),
                ms(l.max_ms),
                l.requests_per_s,
                record.entities_per_s.unwrap_or_default(),
                l.errors
            );
        }
    }
    println!();
    for record in records {
        if !record.figures.is_empty() {
            let figures: Vec<String> = record
                .figures
                .iter()
                .map(|(name, value)| format!("{name}={}", human(*value)))
                .collect();
            println!("{:<20} {}", record.case, figures.join(" "));
        }
    }
    println!();
    for record in records {
        if record.label.contains("stand-in") {
            println!("note: {}: {}", record.case, record.label);
        }
    }
    println!("budget (issues 11 and 13):");
    for line in budget {
        let verdict = match line.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        println!(
            "  {verdict} {:<85} measured {} {} {} ({})",
            line.budget,
            human(line.value),
            line.comparison,
            human(line.limit),
            line.measured
        );
    }
}

fn human(value: f64) -> String {
    if value.is_nan() {
        "n/a".into()
    } else if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}
