//! `featherstore-bench`: the serving benchmark suite of issue 11, measured against the floor
//! of the same run (Flight DoGet of an empty online ticket, HTTP `GET /health`).
//!
//! It targets a running server (`--flight`, `--http`, `--token`) or starts `featherstore
//! serve` itself on a temporary directory (`--backend`), loads the data, runs every case,
//! prints a table and the budget lines of issue 11 with PASS/FAIL, and writes JSON
//! (`--json FILE`). `--quick` runs in well under a minute (the CI smoke profile).

pub mod cases;
pub mod data;
pub mod load;
pub mod redis;
pub mod report;
pub mod server;

pub use cases::run_suite;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] featherstore_client::Error),
    #[error(transparent)]
    Flight(#[from] arrow_flight::error::FlightError),
    #[error("HTTP: {0}")]
    Http(hyper::Error),
    #[error("HTTP request: {0}")]
    Request(#[from] http::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    #[error("a call wider than the worker's connections")]
    Connections,
    #[error("{0}")]
    Setup(String),
    #[error("{case}: {message}")]
    Check { case: String, message: String },
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "featherstore-bench",
    about = "Serving benchmark suite: online reads against the floor, online reads from memory and from Redis, reads during ingest, ingest, history, training data, startup, memory"
)]
pub struct Args {
    /// Flight address of a running server (`http://host:port`); without it the suite starts
    /// `featherstore serve` itself.
    #[arg(long, requires = "http")]
    pub flight: Option<String>,
    /// HTTP address of the running server (`http://host:port`).
    #[arg(long, requires = "flight")]
    pub http: Option<String>,
    /// Bearer token for a running server with auth on.
    #[arg(long, env = "FEATHERSTORE_TOKEN")]
    pub token: Option<String>,
    /// PID of a running server, for its RSS (a started server is measured always).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The `featherstore` binary to start (default: the one beside this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Backend of a started server (a running server reports its own, which the figures name).
    #[arg(long, default_value = "duckdb")]
    pub backend: String,
    /// The CI smoke profile: small data, short cases (well under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Entities of the online sets (default 100,000; quick 5,000).
    #[arg(long)]
    pub entities: Option<u64>,
    /// float32 features per online set.
    #[arg(long, default_value_t = 16)]
    pub features: usize,
    /// Seconds per latency case (default 2; quick 0.1).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Request rate of the open-loop cases, requests/s.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Rows of the ingest case (default 1,048,576; quick 131,072).
    #[arg(long)]
    pub ingest_rows: Option<usize>,
    /// Entity rows of the training-data cases (default 1,000,000; quick 20,000).
    #[arg(long)]
    pub training_rows: Option<usize>,
    /// Stored feature rows of the training-data cases, comma-separated (default
    /// 1000000,10000000; quick 20000,40000); the largest is also the startup case's data.
    #[arg(long, value_delimiter = ',')]
    pub training_feature_rows: Option<Vec<usize>>,
    /// Entities of the memory case (default 1,000,000; quick 20,000).
    #[arg(long)]
    pub index_entities: Option<u64>,
    /// Case groups to skip, comma-separated: redis, open, service, ingest_reads, ingest,
    /// history, training, startup, memory.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Write every figure as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The sizes of one run, from the profile and the flags.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    pub quick: bool,
    pub backend: String,
    pub entities: u64,
    pub features: usize,
    pub duration_s: f64,
    pub open_rate: f64,
    pub ingest_rows: usize,
    pub training_rows: usize,
    pub training_feature_rows: Vec<usize>,
    pub index_entities: u64,
    pub skip: Vec<String>,
}

/// The quick profile's size, or the full one.
fn pick<T>(quick: bool, full: T, small: T) -> T {
    if quick {
        small
    } else {
        full
    }
}

impl Profile {
    fn from_args(args: &Args) -> Self {
        let quick = args.quick;
        Profile {
            quick,
            backend: args.backend.clone(),
            entities: args.entities.unwrap_or(pick(quick, 100_000, 5_000)),
            features: args.features,
            duration_s: args.duration.unwrap_or(pick(quick, 2.0, 0.1)),
            open_rate: args.rate,
            ingest_rows: args.ingest_rows.unwrap_or(pick(quick, 1 << 20, 1 << 17)),
            training_rows: args.training_rows.unwrap_or(pick(quick, 1_000_000, 20_000)),
            training_feature_rows: args
                .training_feature_rows
                .clone()
                .unwrap_or_else(|| pick(quick, vec![1_000_000, 10_000_000], vec![20_000, 40_000])),
            index_entities: args
                .index_entities
                .unwrap_or(pick(quick, 1_000_000, 20_000)),
            skip: args.skip.clone(),
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    pub fn runs(&self, group: &str) -> bool {
        !self.skip.iter().any(|skipped| skipped == group)
    }
}
