//! Writing result batches: a table for people, JSON lines, or a file (Parquet, CSV, Arrow IPC,
//! JSON lines) chosen by extension. Results are written as they stream in.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use clap::Args;
use featherstore_client::BatchStream;
use featherstore_core::json::cell_to_json;
use futures::{Stream, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

use crate::common::{CliError, CliResult};

/// Rows a table shows unless `--limit` says otherwise.
const TABLE_ROWS: usize = 1000;

#[derive(Args, Clone)]
pub(crate) struct OutputArgs {
    /// Print JSON lines (one object per row) instead of a table.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Write the result to a file: .parquet, .csv, .tsv, .arrow (IPC file), .arrows (IPC
    /// stream) or .jsonl.
    #[arg(short = 'o', long, visible_alias = "out", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Stop after this many rows (a table shows 1000 unless set).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// A result as it arrives: batches, and the schema (known at the end even when empty).
pub(crate) trait Results:
    Stream<Item = featherstore_client::Result<RecordBatch>> + Unpin
{
    fn schema(&self) -> Option<SchemaRef>;
}

impl Results for BatchStream {
    fn schema(&self) -> Option<SchemaRef> {
        BatchStream::schema(self)
    }
}

/// One batch already in hand (online reads).
pub(crate) struct OneBatch {
    schema: SchemaRef,
    batch: Option<RecordBatch>,
}

impl OneBatch {
    pub(crate) fn new(batch: RecordBatch) -> Self {
        OneBatch {
            schema: batch.schema(),
            batch: Some(batch),
        }
    }
}

impl Stream for OneBatch {
    type Item = featherstore_client::Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.batch.take().map(Ok))
    }
}

impl Results for OneBatch {
    fn schema(&self) -> Option<SchemaRef> {
        Some(self.schema.clone())
    }
}

/// Writes `results` as `args` asks; returns the rows written. `on_error` turns a client error
/// into the user's message.
pub(crate) async fn write_results<R: Results>(
    mut results: R,
    args: &OutputArgs,
    on_error: impl Fn(featherstore_client::Error) -> CliError,
) -> CliResult<u64> {
    if let Some(path) = &args.output {
        let mut sink: Option<Box<dyn Sink>> = None;
        let outcome = async {
            let mut rows = 0u64;
            while let Some(batch) = next_limited(&mut results, args.limit, rows, &on_error).await? {
                if sink.is_none() {
                    sink = Some(open_sink(path, batch.schema())?);
                }
                rows += batch.num_rows() as u64;
                sink.as_mut().expect("opened").write(&batch)?;
            }
            let sink = match sink.take() {
                Some(sink) => sink,
                None => open_sink(path, results_schema(&results)?)?,
            };
            sink.finish()?;
            Ok::<_, CliError>(rows)
        }
        .await;
        if outcome.is_err() {
            let _ = std::fs::remove_file(path);
        }
        return outcome.map_err(|e| e.context(path.display()));
    }
    if args.json {
        let stdout = std::io::stdout();
        let mut sink = JsonLinesSink {
            out: BufWriter::new(stdout.lock()),
        };
        let mut rows = 0u64;
        while let Some(batch) = next_limited(&mut results, args.limit, rows, &on_error).await? {
            rows += batch.num_rows() as u64;
            sink.write(&batch)?;
        }
        sink.out.flush()?;
        return Ok(rows);
    }
    // A table: collect up to the limit, then say whether more rows follow.
    let limit = args.limit.unwrap_or(TABLE_ROWS);
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut more = false;
    while rows < limit {
        let Some(batch) = results.next().await else {
            break;
        };
        let batch = batch.map_err(&on_error)?;
        let take = batch.num_rows().min(limit - rows);
        more = take < batch.num_rows();
        rows += take;
        batches.push(batch.slice(0, take));
    }
    if rows >= limit && !more {
        // Whether anything follows the shown rows: one more non-empty batch says so.
        while let Some(batch) = results.next().await {
            if batch.map_err(&on_error)?.num_rows() > 0 {
                more = true;
                break;
            }
        }
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(results_schema(&results)?));
    }
    let batches: Vec<RecordBatch> = batches.iter().map(|b| textual(b, true)).collect();
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    if more {
        println!("(first {rows} rows shown; more follow: use --limit N, --json or --output FILE)");
    } else if rows != 1 {
        println!("({rows} rows)");
    } else {
        println!("(1 row)");
    }
    Ok(rows as u64)
}

fn results_schema<R: Results>(results: &R) -> CliResult<SchemaRef> {
    results
        .schema()
        .ok_or_else(|| CliError::new("the server's answer carried no schema"))
}

/// The next batch, cut to what is left of `limit`; `None` at the end or at the limit.
async fn next_limited<R: Results>(
    results: &mut R,
    limit: Option<usize>,
    written: u64,
    on_error: &impl Fn(featherstore_client::Error) -> CliError,
) -> CliResult<Option<RecordBatch>> {
    let left = limit.map(|l| (l as u64).saturating_sub(written) as usize);
    if left == Some(0) {
        return Ok(None);
    }
    match results.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(on_error(e)),
        Some(Ok(batch)) => Ok(Some(match left {
            Some(left) if left < batch.num_rows() => batch.slice(0, left),
            _ => batch,
        })),
    }
}

trait Sink {
    fn write(&mut self, batch: &RecordBatch) -> CliResult;
    fn finish(self: Box<Self>) -> CliResult;
}

fn open_sink(path: &Path, schema: SchemaRef) -> CliResult<Box<dyn Sink>> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let kind = match extension.as_str() {
        "parquet" | "pq" => 0,
        "csv" => 1,
        "tsv" => 2,
        "arrow" | "ipc" | "feather" => 3,
        "arrows" => 4,
        "jsonl" | "ndjson" | "json" => 5,
        _ => {
            return Err(CliError::new(
                "unknown output type; expected .parquet, .csv, .tsv, .arrow, .arrows or .jsonl",
            ))
        }
    };
    let file = File::create(path)?;
    Ok(match kind {
        0 => {
            let properties = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            Box::new(ArrowWriter::try_new(file, schema, Some(properties))?)
        }
        1 | 2 => {
            let delimiter = if kind == 2 { b'\t' } else { b',' };
            Box::new(CsvSink(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_delimiter(delimiter)
                    .build(BufWriter::new(file)),
            ))
        }
        3 => Box::new(arrow::ipc::writer::FileWriter::try_new(
            BufWriter::new(file),
            &schema,
        )?),
        4 => Box::new(arrow::ipc::writer::StreamWriter::try_new(
            BufWriter::new(file),
            &schema,
        )?),
        _ => Box::new(JsonLinesSink {
            out: BufWriter::new(file),
        }),
    })
}

impl Sink for ArrowWriter<File> {
    fn write(&mut self, batch: &RecordBatch) -> CliResult {
        Ok(ArrowWriter::write(self, batch)?)
    }

    fn finish(self: Box<Self>) -> CliResult {
        self.close()?;
        Ok(())
    }
}

impl Sink for arrow::ipc::writer::FileWriter<BufWriter<File>> {
    fn write(&mut self, batch: &RecordBatch) -> CliResult {
        Ok(arrow::ipc::writer::FileWriter::write(self, batch)?)
    }

    fn finish(mut self: Box<Self>) -> CliResult {
        arrow::ipc::writer::FileWriter::finish(&mut self)?;
        self.get_mut().flush()?;
        Ok(())
    }
}

impl Sink for arrow::ipc::writer::StreamWriter<BufWriter<File>> {
    fn write(&mut self, batch: &RecordBatch) -> CliResult {
        Ok(arrow::ipc::writer::StreamWriter::write(self, batch)?)
    }

    fn finish(mut self: Box<Self>) -> CliResult {
        arrow::ipc::writer::StreamWriter::finish(&mut self)?;
        self.get_mut().flush()?;
        Ok(())
    }
}

/// CSV, with embeddings as JSON arrays and binary as base64 (CSV has no such types).
struct CsvSink(arrow::csv::Writer<BufWriter<File>>);

impl Sink for CsvSink {
    fn write(&mut self, batch: &RecordBatch) -> CliResult {
        Ok(self.0.write(&textual(batch, false))?)
    }

    fn finish(self: Box<Self>) -> CliResult {
        self.0.into_inner().flush()?;
        Ok(())
    }
}

/// Columns as text where the output needs it: timestamps as RFC 3339 in UTC (`...Z`; arrow's
/// formatters cannot name the zone "UTC" without a time zone database), and for CSV, which
/// has no such types, lists as JSON arrays and binary as base64.
fn textual(batch: &RecordBatch, for_table: bool) -> RecordBatch {
    let needs_text = |t: &DataType| match t {
        DataType::Timestamp(..) => true,
        DataType::FixedSizeList(..)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => !for_table,
        _ => false,
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| needs_text(f.data_type()))
    {
        return batch.clone();
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if needs_text(field.data_type()) {
            let column = jsonable(column);
            let text: StringArray = (0..column.len())
                .map(|row| match cell_to_json(column.as_ref(), row) {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                })
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text) as ArrayRef);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("same lengths")
}

struct JsonLinesSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> Sink for JsonLinesSink<W> {
    fn write(&mut self, batch: &RecordBatch) -> CliResult {
        let schema = batch.schema();
        let columns: Vec<ArrayRef> = batch.columns().iter().map(jsonable).collect();
        for row in 0..batch.num_rows() {
            let mut object = Map::with_capacity(columns.len());
            for (field, column) in schema.fields().iter().zip(&columns) {
                object.insert(field.name().clone(), json_cell(column, row));
            }
            serde_json::to_writer(&mut self.out, &object)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> CliResult {
        self.out.flush()?;
        Ok(())
    }
}

/// A column cast to a type the JSON encoder of the core knows, where one exists (training
/// data passes the caller's columns through, of any type).
fn jsonable(column: &ArrayRef) -> ArrayRef {
    let target = match column.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(DataType::Int64),
        DataType::Float16 => Some(DataType::Float64),
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..) => Some(DataType::Utf8),
        DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond || tz.is_none() => {
            // Arrow stores instants in UTC whatever the zone; no zone means UTC here.
            let micros = cast(
                column,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            );
            return match micros {
                Ok(micros) => Arc::new(
                    micros
                        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                        .clone()
                        .with_timezone("UTC"),
                ),
                Err(_) => column.clone(),
            };
        }
        _ => None,
    };
    target
        .and_then(|t| cast(column, &t).ok())
        .unwrap_or_else(|| column.clone())
}

fn json_cell(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    match column.data_type() {
        DataType::Boolean
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Date32
        | DataType::Timestamp(TimeUnit::Microsecond, _)
        | DataType::FixedSizeList(..) => cell_to_json(column.as_ref(), row),
        DataType::UInt64 => Value::from(
            column
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(row),
        ),
        _ => match ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()) {
            Ok(formatter) => Value::String(formatter.value(row).to_string()),
            Err(_) => Value::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeListBuilder, Float32Builder, Int8Array, TimestampNanosecondArray};

    #[test]
    fn json_cells_of_passthrough_types() {
        let small: ArrayRef = Arc::new(Int8Array::from(vec![Some(-3), None]));
        let small = jsonable(&small);
        assert_eq!(json_cell(&small, 0), Value::from(-3));
        assert_eq!(json_cell(&small, 1), Value::Null);
        let nanos: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![1_500_000_000]));
        assert_eq!(
            json_cell(&jsonable(&nanos), 0),
            Value::from("1970-01-01T00:00:01.500Z")
        );
    }

    #[test]
    fn csv_text_for_embeddings() {
        let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        embedding.values().append_slice(&[1.0, 2.5]);
        embedding.append(true);
        let batch =
            RecordBatch::try_from_iter([("e", Arc::new(embedding.finish()) as ArrayRef)]).unwrap();
        let text = textual(&batch, false);
        assert_eq!(text.column(0).as_string::<i32>().value(0), "[1.0,2.5]");
    }
}
