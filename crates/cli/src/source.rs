//! Reading data files as a bounded stream of record batches: Parquet, CSV/TSV, Arrow IPC (file
//! or stream) and JSON lines. Nothing reads a whole file into memory: readers decode one batch
//! at a time, re-batched to the requested size and capped in bytes per Flight message.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::BatchCoalescer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use clap::ValueEnum;
use featherstore_core::types::timestamp_type;
use featherstore_core::FeatureSetSpec;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::columns::ColumnMap;
use crate::common::{CliError, CliResult};

/// Largest batch sent in one Flight message, in bytes (the server's default limit is 64 MiB).
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// CSV rows read to infer the types of columns no spec declares.
const CSV_INFER_ROWS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Parquet,
    Csv,
    Tsv,
    /// Arrow IPC, file or stream (told apart by content).
    Arrow,
    /// JSON lines: one object per line.
    Jsonl,
}

impl Format {
    /// The format of a file by its extension.
    pub(crate) fn detect(path: &Path, forced: Option<Format>) -> CliResult<Format> {
        if let Some(format) = forced {
            return Ok(format);
        }
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        Ok(match extension.as_str() {
            "parquet" | "pq" => Format::Parquet,
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "arrow" | "arrows" | "ipc" | "feather" => Format::Arrow,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            _ => {
                return Err(CliError::new(format!(
                    "{}: unknown file type; expected .parquet, .csv, .tsv, .arrow (.arrows, .ipc, \
                     .feather) or .jsonl (.ndjson), or name the format with --format",
                    path.display()
                )))
            }
        })
    }
}

/// How untyped formats (CSV, JSON lines) get their column types.
#[derive(Clone)]
pub(crate) enum Typing {
    /// Ingest: the set's spec types every column it declares, the file's columns taken and
    /// named by the map; batches come conformed to the declared types.
    Spec(Arc<FeatureSetSpec>, Arc<ColumnMap>),
    /// Training data: these columns are typed, the others inferred from the data (CSV).
    Columns(Arc<HashMap<String, DataType>>),
}

/// An opened input: its batches and what is known of its size.
pub(crate) struct Source {
    pub batches: Box<dyn Iterator<Item = CliResult<RecordBatch>> + Send>,
    /// Bytes read so far (for Parquet, in proportion to the rows decoded).
    pub bytes_read: Arc<AtomicU64>,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

pub(crate) fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

fn open_file(path: &Path) -> CliResult<File> {
    File::open(path).map_err(|e| CliError::from(e).context(path.display()))
}

/// Rows in a Parquet file, from its footer.
pub(crate) fn parquet_rows(path: &Path) -> CliResult<u64> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(open_file(path)?)
        .map_err(|e| CliError::from(e).context(path.display()))?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Opens `path` (`-`: standard input) as batches of at most `batch_size` rows.
pub(crate) fn open(
    path: &Path,
    format: Format,
    typing: &Typing,
    batch_size: usize,
) -> CliResult<Source> {
    let label = path.display().to_string();
    let bytes_read = Arc::new(AtomicU64::new(0));
    let stdin = is_stdin(path);
    let (reader, total_bytes): (Box<dyn Read + Send>, Option<u64>) = if stdin {
        if format == Format::Parquet {
            return Err(CliError::new(
                "Parquet cannot be read from standard input; give a file",
            ));
        }
        (Box::new(std::io::stdin()), None)
    } else {
        let file = open_file(path)?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let counted = Counting {
        inner: reader,
        count: bytes_read.clone(),
    };
    let batches: Box<dyn Iterator<Item = CliResult<RecordBatch>> + Send> = match format {
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(open_file(path)?)
                .map_err(|e| CliError::from(e).context(&label))?;
            let rows_total = builder.metadata().file_metadata().num_rows().max(1) as u64;
            let reader = builder
                .with_batch_size(batch_size)
                .build()
                .map_err(|e| CliError::from(e).context(&label))?;
            let count = bytes_read.clone();
            let total = total_bytes.unwrap_or(0);
            let mut rows_done = 0u64;
            Box::new(reader.map(move |batch| {
                let batch = batch?;
                // Progress in bytes, proportional to rows (the reader reads by row group).
                rows_done += batch.num_rows() as u64;
                count.store(total * rows_done / rows_total, Ordering::Relaxed);
                Ok(batch)
            }))
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if format == Format::Tsv { b'\t' } else { b',' };
            csv_batches(counted, delimiter, typing, batch_size, &label)?
        }
        Format::Arrow => {
            if stdin {
                stream_batches(counted)?
            } else {
                let mut file = open_file(path)?;
                let mut magic = [0u8; 6];
                let is_file = file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
                drop(file);
                if is_file {
                    let file = Counting {
                        inner: open_file(path)?,
                        count: bytes_read.clone(),
                    };
                    let reader = arrow::ipc::reader::FileReader::try_new(file, None)
                        .map_err(|e| CliError::from(e).context(&label))?;
                    Box::new(reader.map(|b| b.map_err(CliError::from)))
                } else {
                    stream_batches(counted)?
                }
            }
        }
        Format::Jsonl => match typing {
            Typing::Spec(spec, columns) => Box::new(JsonLines {
                lines: BufReader::with_capacity(1 << 20, counted),
                spec: spec.clone(),
                columns: columns.clone(),
                batch_size,
                line: 0,
                done: false,
            }),
            Typing::Columns(_) => {
                return Err(CliError::new(format!(
                    "{label}: JSON lines cannot carry entity rows (their types are unknown); \
                     use Parquet, Arrow or CSV"
                )))
            }
        },
    };
    let label_for_errors = label.clone();
    let batches = batches.map(|b| b.and_then(drop_pandas_index));
    let batches: Box<dyn Iterator<Item = CliResult<RecordBatch>> + Send> = match typing {
        Typing::Spec(spec, columns) => {
            // JSON lines are mapped line by line, into the set's names already.
            let columns = if format == Format::Jsonl {
                Arc::new(ColumnMap::default())
            } else {
                columns.clone()
            };
            Box::new(conformed(batches, spec.clone(), columns))
        }
        Typing::Columns(_) => Box::new(batches),
    };
    let batches = Rebatch::new(batches, batch_size, MAX_BATCH_BYTES)
        .map(move |b| b.map_err(|e| e.context(&label_for_errors)));
    Ok(Source {
        batches: Box::new(batches),
        bytes_read,
    })
}

/// Batches of a file mapped onto the set's columns (checked once, on the first batch) and
/// conformed to the declared types, rows counted over the whole file.
fn conformed(
    batches: impl Iterator<Item = CliResult<RecordBatch>> + Send,
    spec: Arc<FeatureSetSpec>,
    columns: Arc<ColumnMap>,
) -> impl Iterator<Item = CliResult<RecordBatch>> + Send {
    let mut rows = 0u64;
    batches.map(move |batch| {
        let batch = batch?;
        if rows == 0 {
            let schema = batch.schema();
            let names = schema.fields().iter().map(|f| f.name().as_str());
            columns.check_names(names.clone())?;
            columns.check_declared(&spec, names)?;
        }
        let batch = columns.apply(batch)?;
        let conformed = featherstore_client::conform_rows(&spec, &batch, rows)?;
        rows += batch.num_rows() as u64;
        Ok(conformed)
    })
}

/// Without the index columns pandas writes into Parquet and Arrow files (`__index_level_0__`):
/// they are no data of the set.
fn drop_pandas_index(batch: RecordBatch) -> CliResult<RecordBatch> {
    let is_index = |name: &str| {
        name.strip_prefix("__index_level_")
            .and_then(|rest| rest.strip_suffix("__"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_index(f.name())) {
        return Ok(batch);
    }
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !is_index(schema.field(i).name()))
        .collect();
    Ok(batch.project(&keep)?)
}

fn stream_batches(
    reader: Counting<Box<dyn Read + Send>>,
) -> CliResult<Box<dyn Iterator<Item = CliResult<RecordBatch>> + Send>> {
    let reader =
        arrow::ipc::reader::StreamReader::try_new(BufReader::with_capacity(1 << 20, reader), None)?;
    Ok(Box::new(reader.map(|b| b.map_err(CliError::from))))
}

/// A CSV reader typed by `typing`: spec columns by their declared types (embeddings are not
/// representable in CSV), other columns as text (ingest, where the server names them) or
/// inferred from the first rows (training data).
fn csv_batches(
    reader: Counting<Box<dyn Read + Send>>,
    delimiter: u8,
    typing: &Typing,
    batch_size: usize,
    label: &str,
) -> CliResult<Box<dyn Iterator<Item = CliResult<RecordBatch>> + Send>> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut header = Vec::new();
    reader.read_until(b'\n', &mut header)?;
    if header.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::new(format!(
            "{label}: empty CSV file (no header line)"
        )));
    }
    let format = arrow::csv::reader::Format::default()
        .with_header(true)
        .with_delimiter(delimiter);
    // Rows sampled for inference are read ahead, then parsed again from this buffer.
    let mut sample = Vec::new();
    if matches!(typing, Typing::Columns(_)) {
        for _ in 0..CSV_INFER_ROWS {
            if reader.read_until(b'\n', &mut sample)? == 0 {
                break;
            }
        }
    }
    let (inferred, _) = format
        .infer_schema(
            Cursor::new([&header[..], &sample[..]].concat()),
            Some(CSV_INFER_ROWS),
        )
        .map_err(|e| CliError::from(e).context(label))?;
    let mut fields = Vec::with_capacity(inferred.fields().len());
    for field in inferred.fields() {
        let name = field.name();
        let data_type = match typing {
            Typing::Spec(spec, columns) => {
                let name = columns.target(name);
                if !columns.keeps(field.name()) {
                    DataType::Utf8
                } else if name == spec.entity.name {
                    spec.entity.entity_type.arrow_type()
                } else if name == spec.timestamp {
                    timestamp_type()
                } else if let Some((_, feature)) = spec.feature(name) {
                    let data_type = feature.feature_type.arrow_type();
                    if matches!(data_type, DataType::FixedSizeList(..)) {
                        return Err(CliError::new(format!(
                            "{label}: column {name:?} is an embedding ({}), which CSV cannot \
                             hold; use Parquet, Arrow or JSON lines",
                            feature.feature_type
                        )));
                    }
                    data_type
                } else {
                    DataType::Utf8
                }
            }
            Typing::Columns(columns) => columns
                .get(name)
                .cloned()
                .unwrap_or_else(|| field.data_type().clone()),
        };
        // The CSV parser knows offsets, not zone names (no tz database): "+00:00" is UTC.
        let data_type = match data_type {
            DataType::Timestamp(unit, Some(tz)) if tz.as_ref() == "UTC" => {
                DataType::Timestamp(unit, Some("+00:00".into()))
            }
            other => other,
        };
        fields.push(Field::new(name, data_type, true));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let body = Cursor::new(sample).chain(reader);
    let reader = arrow::csv::ReaderBuilder::new(schema)
        .with_header(false)
        .with_delimiter(delimiter)
        .with_batch_size(batch_size)
        .build(body)?;
    Ok(Box::new(reader.map(|b| b.map_err(csv_error))))
}

/// The CSV parser counts data rows from 0 ("at line 0" is the row under the header): name the
/// file's line instead.
fn csv_error(e: arrow::error::ArrowError) -> CliError {
    let message = e.to_string();
    let marker = " at line ";
    if let Some(at) = message.find(marker) {
        let rest = &message[at + marker.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if let Ok(row) = rest[..digits].parse::<u64>() {
            return CliError::new(format!(
                "{}{marker}{}{}",
                &message[..at],
                row + 2,
                &rest[digits..]
            ));
        }
    }
    CliError::new(message)
}

/// JSON lines decoded against a spec, `batch_size` lines at a time.
struct JsonLines<R> {
    lines: R,
    spec: Arc<FeatureSetSpec>,
    columns: Arc<ColumnMap>,
    batch_size: usize,
    line: usize,
    done: bool,
}

impl<R: BufRead> JsonLines<R> {
    /// The line with its keys taken and named by the column map (`None`: unchanged), or an
    /// error naming its undeclared keys and the flags that skip them.
    fn map_line(&self, line: &str) -> CliResult<Option<String>> {
        if self.columns.is_identity() {
            // Only the keys, for the error that names the flags (the values are read once,
            // by the rows builder).
            type Keys = std::collections::BTreeMap<String, serde::de::IgnoredAny>;
            if let Ok(keys) = serde_json::from_str::<Keys>(line) {
                let keys = keys.keys().map(String::as_str);
                self.columns.check_undeclared(&self.spec, keys)?;
            }
            return Ok(None);
        }
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str(line) else {
            return Ok(None); // Not an object: the rows builder says what is wrong.
        };
        self.columns
            .check_undeclared(&self.spec, object.keys().map(String::as_str))?;
        let mapped: serde_json::Map<String, serde_json::Value> = object
            .into_iter()
            .filter(|(key, _)| self.columns.keeps(key))
            .map(|(key, value)| (self.columns.target(&key).to_string(), value))
            .collect();
        Ok(Some(serde_json::Value::Object(mapped).to_string()))
    }

    fn next_batch(&mut self) -> CliResult<Option<RecordBatch>> {
        let mut rows = featherstore_core::json::RowsBuilder::new(&self.spec);
        let mut text = String::new();
        while rows.rows() < self.batch_size {
            text.clear();
            if self.lines.read_line(&mut text)? == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let trimmed = text.trim();
            if trimmed.is_empty() {
                continue;
            }
            let line = self.line;
            let mapped = self
                .map_line(trimmed)
                .map_err(|e| CliError::new(format!("line {line}: {e}")))?;
            rows.push_json(mapped.as_deref().unwrap_or(trimmed))
                .map_err(|e| {
                    // The core names the row within the batch ("row 3: ..."); name the file line.
                    let message = e.to_string();
                    let detail = message
                        .strip_prefix("row ")
                        .and_then(|rest| rest.split_once(':'))
                        .map_or(message.as_str(), |(_, rest)| rest.trim_start());
                    CliError::new(format!("line {}: {detail}", self.line))
                })?;
        }
        if rows.rows() == 0 {
            return Ok(None);
        }
        Ok(Some(rows.finish()?))
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = CliResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_batch() {
            Ok(batch) => batch.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Re-batches to `target` rows (small batches coalesced, large ones split), then splits any
/// batch over `max_bytes`. An input error comes after the rows read before it.
struct Rebatch<I> {
    inner: I,
    coalescer: Option<BatchCoalescer>,
    target: usize,
    max_bytes: usize,
    ready: VecDeque<RecordBatch>,
    error: Option<CliError>,
    done: bool,
}

impl<I> Rebatch<I> {
    fn new(inner: I, target: usize, max_bytes: usize) -> Self {
        Rebatch {
            inner,
            coalescer: None,
            target,
            max_bytes,
            ready: VecDeque::new(),
            error: None,
            done: false,
        }
    }

    fn drain(&mut self) {
        let Some(coalescer) = self.coalescer.as_mut() else {
            return;
        };
        while let Some(batch) = coalescer.next_completed_batch() {
            let bytes = batch.get_array_memory_size();
            let pieces = bytes.div_ceil(self.max_bytes).max(1);
            if pieces == 1 {
                self.ready.push_back(batch);
                continue;
            }
            let rows = batch.num_rows().div_ceil(pieces).max(1);
            let mut offset = 0;
            while offset < batch.num_rows() {
                let length = rows.min(batch.num_rows() - offset);
                self.ready.push_back(batch.slice(offset, length));
                offset += length;
            }
        }
    }

    fn finish(&mut self) -> CliResult {
        self.done = true;
        if let Some(coalescer) = self.coalescer.as_mut() {
            coalescer.finish_buffered_batch()?;
        }
        self.drain();
        Ok(())
    }
}

impl<I: Iterator<Item = CliResult<RecordBatch>>> Iterator for Rebatch<I> {
    type Item = CliResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if let Some(error) = self.error.take() {
                return Some(Err(error));
            }
            if self.done {
                return None;
            }
            match self.inner.next() {
                Some(Ok(batch)) => {
                    let target = self.target;
                    let coalescer = self
                        .coalescer
                        .get_or_insert_with(|| BatchCoalescer::new(batch.schema(), target));
                    if coalescer.schema() != batch.schema() {
                        // A new schema mid-stream: flush what was buffered under the old one.
                        if let Err(e) = self.finish() {
                            self.error = Some(e);
                            continue;
                        }
                        self.done = false;
                        self.coalescer = Some(BatchCoalescer::new(batch.schema(), target));
                    }
                    let coalescer = self.coalescer.as_mut().expect("set above");
                    if let Err(e) = coalescer.push_batch(batch) {
                        self.error = Some(e.into());
                        self.done = true;
                    }
                    self.drain();
                }
                Some(Err(e)) => {
                    if let Err(flush) = self.finish() {
                        self.error = Some(flush);
                    } else {
                        self.error = Some(e);
                    }
                }
                None => {
                    if let Err(e) = self.finish() {
                        self.error = Some(e);
                    }
                }
            }
        }
    }
}

/// The files named on the command line, checked to exist, with their formats.
pub(crate) fn resolve(
    files: &[PathBuf],
    forced: Option<Format>,
) -> CliResult<Vec<(PathBuf, Format)>> {
    files
        .iter()
        .map(|path| {
            if is_stdin(path) {
                let format = forced
                    .ok_or_else(|| CliError::new("reading standard input (-) needs --format"))?;
                return Ok((path.clone(), format));
            }
            let format = Format::detect(path, forced)?;
            if !path.is_file() {
                return Err(CliError::new(format!("{}: no such file", path.display())));
            }
            Ok((path.clone(), format))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};

    fn batch(values: std::ops::Range<i64>) -> CliResult<RecordBatch> {
        Ok(RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(values)) as ArrayRef,
        )])?)
    }

    #[test]
    fn rebatches_to_target_rows_and_bytes() {
        let input = vec![batch(0..3), batch(3..5), batch(5..12)];
        let sizes: Vec<usize> = Rebatch::new(input.into_iter(), 4, usize::MAX)
            .map(|b| b.unwrap().num_rows())
            .collect();
        assert_eq!(sizes, [4, 4, 4]);
        // 1000 int64 = 8000 bytes, capped at 3000 bytes: 3 pieces.
        let sizes: Vec<usize> = Rebatch::new(vec![batch(0..1000)].into_iter(), 1000, 3000)
            .map(|b| b.unwrap().num_rows())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(sizes.len() >= 3, "{sizes:?}");
    }

    #[test]
    fn rows_before_an_error_come_first() {
        let input = vec![batch(0..3), Err(CliError::new("broken")), batch(3..4)];
        let out: Vec<_> = Rebatch::new(input.into_iter(), 10, usize::MAX).collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().num_rows(), 3);
        assert_eq!(out[1].as_ref().unwrap_err().0, "broken");
    }

    #[test]
    fn drops_pandas_index_columns() {
        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            (
                "__index_level_0__",
                Arc::new(Int64Array::from(vec![0])) as ArrayRef,
            ),
            (
                "__index_level_x__",
                Arc::new(Int64Array::from(vec![0])) as ArrayRef,
            ),
        ])
        .unwrap();
        let kept = drop_pandas_index(batch).unwrap();
        let names: Vec<_> = kept
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["x", "__index_level_x__"]);
    }

    #[test]
    fn detects_formats() {
        assert_eq!(
            Format::detect(Path::new("a.PARQUET"), None).unwrap(),
            Format::Parquet
        );
        assert_eq!(
            Format::detect(Path::new("a.ndjson"), None).unwrap(),
            Format::Jsonl
        );
        assert_eq!(
            Format::detect(Path::new("a.txt"), Some(Format::Csv)).unwrap(),
            Format::Csv
        );
        assert!(Format::detect(Path::new("a.txt"), None).is_err());
    }
}
