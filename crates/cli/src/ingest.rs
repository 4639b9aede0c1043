//! `featherstore ingest SET FILE…`: files streamed into a feature set over Flight DoPut, one
//! call per file, with a progress bar on a terminal and a summary line at the end.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::columns::{parse_rename, ColumnMap};
use crate::common::{fetch_spec, thousands, CliError, CliResult, ServerArgs};
use crate::source::{self, is_stdin, Format, Typing};

#[derive(Args)]
pub(crate) struct IngestArgs {
    /// Feature set to ingest into.
    set: String,
    /// Parquet, CSV/TSV, Arrow IPC (file or stream) or JSON lines files, by extension; `-`
    /// reads standard input (with --format).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Read every file as this format, whatever its extension.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Rows per batch; each batch is stored whole or not at all, durably before the next is
    /// acknowledged.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batch_size: u64,
    /// Take only these columns of each file (as the file names them), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN,...")]
    columns: Option<Vec<String>>,
    /// Give a column of the files the name of a set column: `--rename ts=event_timestamp`.
    /// Repeatable.
    #[arg(long, value_name = "SRC=DST", value_parser = parse_rename)]
    rename: Vec<(String, String)>,
    /// The files' column holding the event time (the same as `--rename NAME=<the set's
    /// timestamp column>`).
    #[arg(long, value_name = "NAME")]
    timestamp_column: Option<String>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// Batches read ahead of the server (bounds memory to a few batches).
const READ_AHEAD: usize = 2;

/// Progress as acknowledgements arrive: rows stored, and where reading stood.
pub(crate) struct Progress {
    pub(crate) bar: ProgressBar,
    by_rows: bool,
    rows: u64,
    started: Instant,
}

impl Progress {
    pub(crate) fn new(total_rows: Option<u64>, total_bytes: Option<u64>, quiet: bool) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let (bar, by_rows) = match (total_rows, total_bytes) {
            (Some(rows), _) => (
                ProgressBar::new(rows).with_style(style(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} rows ({msg}, ETA {eta})",
                )),
                true,
            ),
            (None, Some(bytes)) => (
                ProgressBar::new(bytes).with_style(style(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {msg} (ETA {eta})",
                )),
                false,
            ),
            (None, None) => (
                ProgressBar::no_length()
                    .with_style(style("{spinner} [{elapsed_precise}] {msg}")),
                false,
            ),
        };
        bar.set_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        if visible {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            by_rows,
            rows: 0,
            started: Instant::now(),
        }
    }

    /// A batch of `rows` is stored; reading had reached `bytes` (summed over files) when it
    /// was produced.
    pub(crate) fn stored(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = thousands((self.rows as f64 / seconds) as u64);
        if self.by_rows {
            self.bar.inc(rows);
            self.bar.set_message(format!("{rate} rows/s"));
        } else {
            self.bar.set_position(bytes);
            self.bar
                .set_message(format!("{} rows, {rate} rows/s", thousands(self.rows)));
        }
    }
}

/// `1 row`, `2,500 rows`.
pub(crate) fn rows(n: u64) -> String {
    format!("{} row{}", thousands(n), if n == 1 { "" } else { "s" })
}

pub(crate) fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

pub(crate) fn run(args: IngestArgs) -> CliResult {
    let files = source::resolve(&args.files, args.format)?;
    let runtime = crate::common::runtime()?;
    runtime.block_on(ingest(args, files))
}

async fn ingest(args: IngestArgs, files: Vec<(PathBuf, Format)>) -> CliResult {
    let client = args.server.connect().await?;
    let spec = fetch_spec(&client, &args.set).await?;
    let columns = ColumnMap::new(
        &spec,
        args.columns.clone(),
        args.rename.clone(),
        args.timestamp_column.clone(),
    )?;
    let typing = Typing::Spec(Arc::new(spec), Arc::new(columns));
    let batch_size = args.batch_size as usize;

    // Totals for the progress bar: rows when every file is Parquet, else bytes.
    let all_parquet = files.iter().all(|(_, f)| *f == Format::Parquet);
    let mut total_rows = all_parquet.then_some(0u64);
    let mut total_bytes = Some(0u64);
    for (path, format) in &files {
        if is_stdin(path) {
            total_bytes = None;
        } else {
            if let (Some(total), Format::Parquet) = (total_rows.as_mut(), format) {
                *total += source::parquet_rows(path)?;
            }
            let size = std::fs::metadata(path)?.len();
            total_bytes = total_bytes.map(|t| t + size);
        }
    }
    let mut progress = Progress::new(total_rows, total_bytes, args.quiet);
    let started = Instant::now();
    let mut batches = 0u64;
    let mut bytes_before = 0u64;
    for (path, format) in &files {
        let label = path.display().to_string();
        let rows_before = progress.rows;
        let outcome = ingest_file(
            &client,
            |e| args.server.describe(e),
            &args.set,
            path.clone(),
            *format,
            &typing,
            batch_size,
            bytes_before,
            &mut progress,
        )
        .await;
        match outcome {
            Ok((file_batches, file_bytes)) => {
                batches += file_batches;
                bytes_before += file_bytes;
            }
            Err(e) => {
                progress.bar.finish_and_clear();
                let stored = progress.rows - rows_before;
                let mut message = if e.0.starts_with(&format!("{label}: ")) {
                    e.0
                } else {
                    format!("{label}: {e}")
                };
                if stored > 0 || progress.rows > 0 {
                    message.push_str(&format!(
                        " ({} of {label} stored before the error; {} in all)",
                        rows(stored),
                        rows(progress.rows)
                    ));
                }
                return Err(CliError::new(message));
            }
        }
    }
    progress.bar.finish_and_clear();
    let elapsed = started.elapsed();
    let rate = progress.rows as f64 / elapsed.as_secs_f64().max(1e-3);
    println!(
        "ingested {} into {} from {} file{} ({} batch{}) in {:.2}s, {} rows/s",
        rows(progress.rows),
        args.set,
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        thousands(batches),
        if batches == 1 { "" } else { "es" },
        elapsed.as_secs_f64(),
        thousands(rate as u64),
    );
    Ok(())
}

/// Streams one file; answers the batches stored and the bytes read.
#[allow(clippy::too_many_arguments)]
async fn ingest_file(
    client: &featherstore_client::Client,
    describe: impl Fn(featherstore_client::Error) -> CliError,
    set: &str,
    path: PathBuf,
    format: Format,
    typing: &Typing,
    batch_size: usize,
    bytes_before: u64,
    progress: &mut Progress,
) -> CliResult<(u64, u64)> {
    let typing = typing.clone();
    let (tx, rx) = mpsc::channel::<CliResult<(RecordBatch, u64)>>(READ_AHEAD);
    // Reading and decoding run on a blocking thread, a few batches ahead of the upload.
    let reader = tokio::task::spawn_blocking(move || {
        let source = match source::open(&path, format, &typing, batch_size) {
            Ok(source) => source,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return 0;
            }
        };
        for batch in source.batches {
            let item = batch.map(|b| (b, source.bytes_read.load(Ordering::Relaxed)));
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
        source.bytes_read.load(Ordering::Relaxed)
    });
    // Sent batches, oldest first: acknowledgements arrive in the same order.
    let sent: Arc<Mutex<VecDeque<(u64, u64)>>> = Arc::default();
    let record = sent.clone();
    let input = ReceiverStream::new(rx).map(move |item| match item {
        Ok((batch, bytes)) => {
            record.lock().push_back((batch.num_rows() as u64, bytes));
            Ok(batch)
        }
        Err(e) => Err(featherstore_client::Error::InvalidArgument(e.0)),
    });
    let mut acks = client.ingest_stream(set, input).await.map_err(&describe)?;
    let mut batches = 0u64;
    while let Some(ack) = acks.try_next().await.map_err(&describe)? {
        let (_, bytes) = sent.lock().pop_front().unwrap_or((ack.rows, 0));
        progress.stored(ack.rows, bytes_before + bytes);
        batches += 1;
    }
    let bytes = reader
        .await
        .map_err(|e| CliError::new(format!("reading failed: {e}")))?;
    Ok((batches, bytes))
}
