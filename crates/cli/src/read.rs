//! Retrieval commands: `get` (online values), `history`, `training-data`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use clap::Args;
use featherstore_client::{AsOf, HistoryRequest, OnlineRequest, Timestamp, TrainingDataOptions};
use featherstore_core::types::timestamp_type;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::common::{fetch_spec, parse_entities, CliError, CliResult, ServerArgs};
use crate::ingest::Progress;
use crate::output::{write_results, OneBatch, OutputArgs};
use crate::source::{self, is_stdin, Format, Typing};

#[derive(Args)]
pub(crate) struct GetArgs {
    /// Feature set name.
    set: String,
    /// Entity keys (integers for an int64 entity).
    #[arg(required = true, value_name = "ENTITY")]
    entities: Vec<String>,
    /// Only these features, in this order (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    features: Option<Vec<String>>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct HistoryArgs {
    /// Feature set name.
    set: String,
    /// Only this entity (repeatable; default all entities).
    #[arg(long = "entity", value_name = "ENTITY")]
    entities: Vec<String>,
    /// Rows with event time >= this (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Rows with event time < this (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "TIME")]
    end: Option<String>,
    /// Only these features, in this order (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    features: Option<Vec<String>>,
    /// Add the column ingested_at: when the server stored each row.
    #[arg(long)]
    with_ingest_time: bool,
    /// Only rows ingested before this instant: the history as known then (RFC 3339).
    #[arg(long, value_name = "TIME")]
    ingested_before: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct TrainingDataArgs {
    /// Entity rows: each referenced set's entity column, the timestamp column, and any other
    /// columns (labels), which pass through. Parquet, CSV/TSV or Arrow IPC; `-` reads standard
    /// input (with --format).
    #[arg(value_name = "ENTITY_FILE", required_unless_present = "entities")]
    entity_file: Option<PathBuf>,
    /// The entity rows file, as a flag (same as ENTITY_FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "entity_file")]
    entities: Option<PathBuf>,
    /// Features to join, as set:feature or set:* (comma-separated, in output order).
    #[arg(
        long,
        required_unless_present = "feature_service",
        value_delimiter = ',',
        value_name = "SET:FEATURE"
    )]
    features: Vec<String>,
    /// Join the features of this stored feature service instead of --features.
    #[arg(long, value_name = "NAME", conflicts_with = "features")]
    feature_service: Option<String>,
    /// Column of the entity rows holding each row's time.
    #[arg(long, default_value = featherstore_core::spec::DEFAULT_TIMESTAMP, value_name = "COLUMN")]
    timestamp: String,
    /// Name appended columns set__feature instead of feature.
    #[arg(long)]
    full_names: bool,
    /// Which rows count at a row's time t: event_time (event time <= t) or ingest_time (also
    /// ingested by t: the data as known at t).
    #[arg(long, value_name = "RULE", default_value = "event_time", value_parser = parse_as_of)]
    as_of: AsOf,
    /// Read the entity file as this format, whatever its extension.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Entity rows per batch sent.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batch_size: u64,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

pub(crate) fn get(args: GetArgs) -> CliResult {
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        let spec = fetch_spec(&client, &args.set).await?;
        let entities = parse_entities(&spec, &args.entities)?;
        let mut request = OnlineRequest::new(&args.set, entities);
        if let Some(features) = &args.features {
            request = request.features(features.iter().cloned());
        }
        let batch = client
            .online(request)
            .await
            .map_err(|e| args.server.describe(e))?;
        write_results(OneBatch::new(batch), &args.output, |e| {
            args.server.describe(e)
        })
        .await?;
        Ok(())
    })
}

fn parse_as_of(text: &str) -> Result<AsOf, String> {
    text.parse::<AsOf>().map_err(|e| e.to_string())
}

fn parse_time(flag: &str, text: &Option<String>) -> CliResult<Option<Timestamp>> {
    text.as_deref()
        .map(|t| Timestamp::parse(t).map_err(|e| CliError::new(format!("--{flag}: {e}"))))
        .transpose()
}

pub(crate) fn history(args: HistoryArgs) -> CliResult {
    let start = parse_time("start", &args.start)?;
    let end = parse_time("end", &args.end)?;
    let ingested_before = parse_time("ingested-before", &args.ingested_before)?;
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        let mut request = HistoryRequest::new(&args.set);
        if !args.entities.is_empty() {
            let spec = fetch_spec(&client, &args.set).await?;
            request = request.entities(parse_entities(&spec, &args.entities)?);
        }
        if let Some(start) = start {
            request = request.start(start);
        }
        if let Some(end) = end {
            request = request.end(end);
        }
        if let Some(features) = &args.features {
            request = request.features(features.iter().cloned());
        }
        request = request.with_ingest_time(args.with_ingest_time);
        if let Some(instant) = ingested_before {
            request = request.ingested_before(instant);
        }
        let results = client
            .history(request)
            .await
            .map_err(|e| args.server.describe(e))?;
        write_results(results, &args.output, |e| args.server.describe(e)).await?;
        Ok(())
    })
}

pub(crate) fn training_data(args: TrainingDataArgs) -> CliResult {
    let file = args
        .entity_file
        .clone()
        .or_else(|| args.entities.clone())
        .expect("clap requires one of them");
    let (path, format) = source::resolve(std::slice::from_ref(&file), args.format)?
        .pop()
        .expect("one file");
    // Progress of entity rows sent: by rows for Parquet (known up front), else by bytes read.
    let total_rows = match format {
        Format::Parquet if !is_stdin(&path) => Some(source::parquet_rows(&path)?),
        _ => None,
    };
    let total_bytes = (!is_stdin(&path))
        .then(|| std::fs::metadata(&path).map(|m| m.len()))
        .transpose()?;
    let progress = Arc::new(parking_lot::Mutex::new(Progress::new(
        total_rows,
        total_bytes,
        args.output.output.is_none(),
    )));
    let runtime = crate::common::runtime()?;
    runtime.block_on(async {
        let client = args.server.connect().await?;
        // Column types of untyped files: each referenced set's entity column, the timestamp.
        let specs = client
            .list_feature_sets()
            .await
            .map_err(|e| args.server.describe(e))?;
        let features = match &args.feature_service {
            Some(name) => {
                client
                    .get_feature_service(name)
                    .await
                    .map_err(|e| args.server.describe(e))?
                    .features
            }
            None => args.features.clone(),
        };
        let mut columns = HashMap::new();
        columns.insert(args.timestamp.clone(), timestamp_type());
        for feature in &features {
            let set = feature.split_once(':').map_or(feature.as_str(), |(s, _)| s);
            if let Some(spec) = specs.iter().find(|s| s.name == set) {
                columns.insert(
                    spec.entity.name.clone(),
                    spec.entity.entity_type.arrow_type(),
                );
            }
        }
        let typing = Typing::Columns(Arc::new(columns));
        let batch_size = args.batch_size as usize;
        let (tx, rx) = mpsc::channel::<CliResult<RecordBatch>>(2);
        let sent = progress.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let source = match source::open(&path, format, &typing, batch_size) {
                Ok(source) => source,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for batch in source.batches {
                let failed = batch.is_err();
                if let Ok(batch) = &batch {
                    let bytes = source.bytes_read.load(std::sync::atomic::Ordering::Relaxed);
                    sent.lock().stored(batch.num_rows() as u64, bytes);
                }
                if tx.blocking_send(batch).is_err() || failed {
                    break;
                }
            }
        });
        let input = ReceiverStream::new(rx)
            .map(|item| item.map_err(|e| featherstore_client::Error::InvalidArgument(e.0)));
        let options = TrainingDataOptions::default()
            .timestamp(&args.timestamp)
            .full_names(args.full_names)
            .as_of(args.as_of);
        let results = match &args.feature_service {
            // By name, not by its features listed above: the server reads the service as
            // stored when the join runs.
            Some(name) => {
                client
                    .training_data_stream_for_service(input, name, options)
                    .await
            }
            None => client.training_data_stream(input, features, options).await,
        }
        .map_err(|e| args.server.describe(e))?;
        let written = write_results(results, &args.output, |e| args.server.describe(e)).await;
        progress.lock().bar.finish_and_clear();
        written?;
        drop(reader); // it stops at the end of its file, or when the call is gone
        Ok(())
    })
}
