//! The write-ahead log of a set: `NNN….arrows` segments in a directory of its own, each an
//! Arrow IPC stream (a schema message, then one record batch message per append) that any
//! Arrow reader can open.
//!
//! An append is durable once its message is written and the segment fsynced. A crash while
//! writing leaves at most one incomplete message at the end of a segment (a prefix of it, or
//! zeros where the file grew but the data never landed); replay truncates that tail and keeps
//! everything before it. A complete message that does not decode is corruption and fails.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, AsArray, RecordBatch};
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::{Field, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::read_record_batch;
use arrow::ipc::writer::{
    write_message, CompressionContext, DictionaryTracker, IpcDataGenerator, IpcWriteOptions,
};
use arrow::ipc::{root_as_message, MessageHeader};

use crate::durable::{list_dir, remove_quietly, sync_dir, ShortWrites};
use crate::metrics::LogActivity;
use crate::query::sql::{self, INGESTED_AT_COLUMN, SEQ_COLUMN};
use crate::{Error, Result, StorageStats};

const SEGMENT_SUFFIX: &str = ".arrows";
/// Marks every message of the current IPC stream format; its absence where a message should
/// start means the bytes are not a message.
const CONTINUATION: u32 = 0xFFFF_FFFF;

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}{SEGMENT_SUFFIX}"))
}

/// Segments in `dir` with their numbers, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = list_dir(dir)?
        .into_iter()
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    found.sort_by_key(|(number, _)| *number);
    Ok(found)
}

/// Deletes the segments numbered below `number`, once their rows are stored for good.
pub(crate) fn remove_segments_below(dir: &Path, number: u64) -> Result<()> {
    for (_, path) in segments(dir)?.into_iter().filter(|(n, _)| *n < number) {
        remove_quietly(&path);
    }
    Ok(())
}

/// The segments in `dir` and the bytes they take. A segment removed while this runs (a flush
/// finishing) is left out.
pub(crate) fn disk_usage(dir: &Path) -> Result<StorageStats> {
    let mut usage = StorageStats::default();
    for (_, path) in segments(dir)? {
        match path.metadata() {
            Ok(metadata) => {
                usage.files += 1;
                usage.bytes += metadata.len();
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }
    Ok(usage)
}

struct Segment {
    file: File,
    path: PathBuf,
    /// Bytes of complete, durable messages: where the next one starts.
    len: u64,
}

/// Where a segment stood before an append, to take the append back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogMark {
    len: u64,
}

/// Appends batches to the newest segment of one set's log.
pub(crate) struct LogWriter {
    dir: PathBuf,
    schema: SchemaRef,
    /// None until the first append after opening or rolling.
    active: Option<Segment>,
    next_segment: u64,
    options: IpcWriteOptions,
    /// The backend's counters.
    activity: &'static LogActivity,
}

impl LogWriter {
    pub(crate) fn new(
        dir: PathBuf,
        schema: SchemaRef,
        next_segment: u64,
        activity: &'static LogActivity,
    ) -> Self {
        LogWriter {
            dir,
            schema,
            active: None,
            next_segment,
            options: IpcWriteOptions::default(),
            activity,
        }
    }

    /// Appends `batches` as one message each and fsyncs them once: durable when this returns.
    /// On failure the segment is cut back to where it was, so no part of them survives.
    pub(crate) fn append(&mut self, batches: &[RecordBatch]) -> Result<LogMark> {
        if self.active.is_none() {
            self.active = Some(self.create_segment()?);
        }
        let segment = self.active.as_mut().expect("created above");
        let mark = LogMark { len: segment.len };
        match write_batches(segment, batches, &self.options) {
            Ok(len) => {
                self.activity.record_append(len - segment.len);
                segment.len = len;
                Ok(mark)
            }
            Err(e) => {
                self.undo(mark);
                Err(e)
            }
        }
    }

    /// Takes back everything appended since `mark`. If the segment cannot be cut back it is
    /// abandoned: later appends go to a new segment, so they never follow a partial message
    /// (replay drops a torn tail, and would drop them with it).
    pub(crate) fn undo(&mut self, mark: LogMark) {
        let Some(segment) = self.active.as_mut() else {
            return;
        };
        let cut = segment
            .file
            .set_len(mark.len)
            .and_then(|()| segment.file.seek(SeekFrom::Start(mark.len)).map(drop))
            .and_then(|()| segment.file.sync_data());
        match cut {
            Ok(()) => {
                self.activity.record_undo();
                segment.len = mark.len;
            }
            Err(e) => {
                tracing::error!(
                    segment = %segment.path.display(), error = %e,
                    "could not take a failed append back out of the log; abandoning the segment"
                );
                self.active = None;
            }
        }
    }

    /// Closes the active segment: later appends start a new one. Every segment numbered below
    /// the returned number holds only rows appended before this call.
    pub(crate) fn roll(&mut self) -> u64 {
        self.active = None;
        self.next_segment
    }

    /// Rolls, and writes the segments from now on in `schema`: a new version of the set
    /// (replay reads each segment by its own header).
    pub(crate) fn reschema(&mut self, schema: SchemaRef) {
        self.roll();
        self.schema = schema;
    }

    fn create_segment(&mut self) -> Result<Segment> {
        let path = segment_path(&self.dir, self.next_segment);
        // Never reuse a number, even if this attempt fails half way.
        self.next_segment += 1;
        let context = || format!("creating log segment {}", path.display());
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(context()))?;
        let header = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            &self.schema,
            &mut DictionaryTracker::new(false),
            &self.options,
        );
        let written = write_message(&mut file, header, &self.options)
            .map_err(Error::from)
            .and_then(|(len, _)| {
                file.sync_data().map_err(Error::io(context()))?;
                sync_dir(&self.dir)?;
                Ok(len as u64)
            });
        match written {
            Ok(len) => {
                self.activity.record_segment(len);
                Ok(Segment { file, path, len })
            }
            Err(e) => {
                remove_quietly(&path);
                Err(e)
            }
        }
    }
}

/// Writes a message per batch at the segment's end and fsyncs once; returns the new length.
fn write_batches(
    segment: &mut Segment,
    batches: &[RecordBatch],
    options: &IpcWriteOptions,
) -> Result<u64> {
    let mut len = segment.len;
    for batch in batches {
        let (dictionaries, message) = IpcDataGenerator::default().encode(
            batch,
            &mut DictionaryTracker::new(false),
            options,
            &mut CompressionContext::default(),
        )?;
        if !dictionaries.is_empty() {
            // Storage schemas have no dictionary columns; replay does not read dictionary
            // messages.
            return Err(Error::Arrow(ArrowError::NotYetImplemented(
                "dictionary columns in the write-ahead log".into(),
            )));
        }
        // Unbuffered: the few small writes before the body cost nothing next to the fsync.
        let (meta_len, body_len) = write_message(ShortWrites(&mut segment.file), message, options)?;
        len += (meta_len + body_len) as u64;
    }
    segment.file.sync_data().map_err(Error::io(format!(
        "appending to log segment {}",
        segment.path.display()
    )))?;
    Ok(len)
}

/// What replaying a log found.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// Greatest `_seq` of any logged row, flushed or not.
    pub(crate) max_seq: Option<i64>,
    /// The number for the next segment: past every existing one.
    pub(crate) next_segment: u64,
}

/// Hands every logged row with `_seq > flushed_seq` to `visit`, in log order, one batch (or
/// the unflushed end of one) at a time. Torn tails are truncated away; segments holding no
/// unflushed row are deleted. Batches come in `schema`: a segment logged by an earlier version
/// of the set lacks the features added since (null), and one logged before ingest times lacks
/// `_ingested_at` (`legacy_ingested_at` then).
pub(crate) fn replay(
    dir: &Path,
    schema: &SchemaRef,
    flushed_seq: i64,
    legacy_ingested_at: Option<i64>,
    mut visit: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<Replayed> {
    let mut replayed = Replayed {
        max_seq: None,
        next_segment: 0,
    };
    for (number, path) in segments(dir)? {
        replayed.next_segment = number + 1;
        let mut reader = SegmentReader::open(&path)?;
        let mut live = false;
        if let Some(logged) = reader.read_schema(schema)? {
            while let Some(batch) = reader.next_batch(&logged)? {
                let batch = widen(batch, schema, legacy_ingested_at)?;
                let Some((first, last)) = seq_range(&batch) else {
                    continue;
                };
                if last.checked_sub(first) != Some(batch.num_rows() as i64 - 1)
                    || replayed.max_seq.is_some_and(|max| first <= max)
                {
                    return Err(reader.corrupt("ingest sequence numbers out of order"));
                }
                replayed.max_seq = Some(last);
                if last > flushed_seq {
                    // Consecutive numbers: the flushed ones are a prefix.
                    let skip = (flushed_seq + 1).saturating_sub(first).max(0) as usize;
                    visit(batch.slice(skip, batch.num_rows() - skip))?;
                    live = true;
                }
            }
        }
        if !live {
            remove_quietly(&path);
        }
    }
    Ok(replayed)
}

/// A logged batch in `schema`: its columns by name, null for the features it predates, and
/// `legacy_ingested_at` (UTC µs) as the ingest time of a segment logged before ingest times.
fn widen(
    batch: RecordBatch,
    schema: &SchemaRef,
    legacy_ingested_at: Option<i64>,
) -> Result<RecordBatch> {
    if batch.schema_ref().fields() == schema.fields() {
        return Ok(batch);
    }
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(column.clone()),
            None if field.name() == INGESTED_AT_COLUMN => legacy_ingested_at
                .map(|at| sql::ingest_time_column(at, rows))
                .ok_or_else(|| {
                    Error::Corrupt(
                        "a log segment without ingest times in a set written with them".into(),
                    )
                }),
            None => Ok(new_null_array(field.data_type(), rows)),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// First and last `_seq` (the last column) of a batch, when it has rows. Within a batch they
/// are consecutive, which lets replay skip a flushed prefix by slicing.
fn seq_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let seq = batch
        .column_by_name(SEQ_COLUMN)?
        .as_primitive_opt::<Int64Type>()?;
    if seq.is_empty() {
        return None;
    }
    Some((seq.value(0), seq.value(seq.len() - 1)))
}

/// One message as framed in the stream: header flatbuffer and body.
enum Frame {
    Message {
        meta: Vec<u8>,
        body: Buffer,
    },
    /// Nothing after the last complete message.
    End,
    /// An incomplete message at the end (a crash mid-append), now truncated away.
    Torn,
}

struct SegmentReader {
    reader: BufReader<File>,
    path: PathBuf,
    len: u64,
    /// Start of the next message.
    offset: u64,
}

impl SegmentReader {
    fn open(path: &Path) -> Result<Self> {
        // Writable, to truncate a torn tail.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io(format!("opening log segment {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(Error::io(format!("reading log segment {}", path.display())))?
            .len();
        Ok(SegmentReader {
            reader: BufReader::new(file),
            path: path.to_path_buf(),
            len,
            offset: 0,
        })
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> Error {
        Error::Corrupt(format!(
            "log segment {} at byte {}: {why}",
            self.path.display(),
            self.offset
        ))
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> Error {
        Error::io(format!("reading log segment {}", self.path.display()))
    }

    /// Reads the stream's schema message: the logged columns, typed as the same columns of
    /// `expected`. A segment logged by an earlier version of the set lacks the features added
    /// since (`widen` fills them). `None` when the segment ends before a schema (a crash while
    /// creating it: it never held a batch).
    fn read_schema(&mut self, expected: &SchemaRef) -> Result<Option<SchemaRef>> {
        let Frame::Message { meta, .. } = self.next_frame()? else {
            return Ok(None);
        };
        let message = root_as_message(&meta).map_err(|e| self.corrupt(e))?;
        let schema = message
            .header_as_schema()
            .ok_or_else(|| self.corrupt("the stream does not start with a schema"))?;
        // Names only: decoding every batch against `expected` checks the types.
        let names: Vec<&str> = schema
            .fields()
            .map(|fields| fields.iter().map(|f| f.name().unwrap_or("")).collect())
            .unwrap_or_default();
        let wanted: Vec<&str> = expected
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let logged: Option<Vec<Field>> = names
            .iter()
            .map(|name| expected.field_with_name(name).ok().cloned())
            .collect();
        let Some(logged) = logged else {
            return Err(self.corrupt(format!(
                "logged columns {names:?} are not among the set's {wanted:?}"
            )));
        };
        self.offset = self.reader.stream_position().map_err(self.io())?;
        Ok(Some(Arc::new(Schema::new(logged))))
    }

    fn next_batch(&mut self, schema: &SchemaRef) -> Result<Option<RecordBatch>> {
        let (meta, body) = match self.next_frame()? {
            Frame::Message { meta, body } => (meta, body),
            Frame::End | Frame::Torn => return Ok(None),
        };
        let message = root_as_message(&meta).map_err(|e| self.corrupt(e))?;
        if message.header_type() != MessageHeader::RecordBatch {
            return Err(self.corrupt(format!("unexpected {:?} message", message.header_type())));
        }
        let batch_header = message
            .header_as_record_batch()
            .ok_or_else(|| self.corrupt("record batch message without header"))?;
        // The IPC decoder trusts buffer offsets in the header and panics on some damaged ones;
        // a damaged file must be an error, never a crash of the server.
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            read_record_batch(
                &body,
                batch_header,
                schema.clone(),
                &HashMap::new(),
                None,
                &message.version(),
            )
        }));
        let batch = match decoded {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => return Err(self.corrupt(e)),
            Err(_) => return Err(self.corrupt("undecodable record batch")),
        };
        self.offset = self.reader.stream_position().map_err(self.io())?;
        Ok(Some(batch))
    }

    /// Reads the message at `offset`, or finds the end of the segment. Lengths are checked
    /// against the file's size before anything is allocated.
    fn next_frame(&mut self) -> Result<Frame> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Ok(Frame::End);
        }
        if remaining < 8 {
            return self.torn();
        }
        let mut prefix = [0u8; 8];
        self.reader.read_exact(&mut prefix).map_err(self.io())?;
        let continuation = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes"));
        let meta_len = i32::from_le_bytes(prefix[4..].try_into().expect("4 bytes"));
        if continuation != CONTINUATION {
            // The file grew but its data never reached the disk: zeros to the end.
            return if self.rest_is_zero()? {
                self.torn()
            } else {
                Err(self.corrupt("no message starts here"))
            };
        }
        let meta_len = u64::try_from(meta_len).map_err(|_| self.corrupt("negative length"))?;
        if 8 + meta_len > remaining {
            return self.torn();
        }
        let mut meta = vec![0u8; meta_len as usize];
        self.reader.read_exact(&mut meta).map_err(self.io())?;
        let body_len = root_as_message(&meta)
            .map_err(|e| self.corrupt(e))?
            .bodyLength();
        let body_len = u64::try_from(body_len).map_err(|_| self.corrupt("negative length"))?;
        if 8 + meta_len + body_len > remaining {
            return self.torn();
        }
        // 64-byte aligned, so the decoder can use the arrays in place.
        let mut body = MutableBuffer::from_len_zeroed(body_len as usize);
        self.reader
            .read_exact(body.as_slice_mut())
            .map_err(self.io())?;
        Ok(Frame::Message {
            meta,
            body: body.into(),
        })
    }

    fn rest_is_zero(&mut self) -> Result<bool> {
        self.reader
            .seek(SeekFrom::Start(self.offset))
            .map_err(self.io())?;
        let mut chunk = [0u8; 8192];
        loop {
            match self.reader.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) if chunk[..n].iter().all(|&b| b == 0) => {}
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io()(e)),
            }
        }
    }

    /// Cuts the incomplete message off, so later replays see a clean end.
    fn torn(&mut self) -> Result<Frame> {
        tracing::warn!(
            segment = %self.path.display(),
            bytes = self.len - self.offset,
            "ignoring the incomplete last append of a log segment (interrupted write)"
        );
        let file = self.reader.get_mut();
        file.set_len(self.offset)
            .and_then(|()| file.sync_data())
            .map_err(Error::io(format!(
                "truncating log segment {}",
                self.path.display()
            )))?;
        self.len = self.offset;
        Ok(Frame::Torn)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::metrics::PARQUET;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("_seq", DataType::Int64, false),
        ]))
    }

    fn batch(ids: &[&str], first_seq: i64) -> RecordBatch {
        let seqs = first_seq..first_seq + ids.len() as i64;
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(Int64Array::from_iter_values(seqs)),
            ],
        )
        .unwrap()
    }

    fn replay_ids(dir: &Path, flushed_seq: i64) -> Result<(Vec<String>, Replayed)> {
        let mut ids = Vec::new();
        let replayed = replay(dir, &schema(), flushed_seq, None, |b| {
            let column = b.column(0).as_string::<i32>();
            ids.extend(column.iter().map(|id| id.unwrap_or_default().to_string()));
            Ok(())
        })?;
        Ok((ids, replayed))
    }

    #[test]
    fn undo_takes_an_append_back_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::new(dir.path().to_path_buf(), schema(), 0, &PARQUET.log);
        log.append(&[batch(&["a", "b"], 0)]).unwrap();
        let mark = log
            .append(&[batch(&["c"], 2), batch(&["x", "y"], 3)])
            .unwrap();
        log.undo(mark);
        log.append(&[batch(&["d"], 3), batch(&["e", "f"], 4)])
            .unwrap();
        let (ids, replayed) = replay_ids(dir.path(), -1).unwrap();
        assert_eq!(
            ids,
            ["a", "b", "d", "e", "f"],
            "an append of two batches is undone whole"
        );
        assert_eq!(replayed.max_seq, Some(5));
        assert_eq!(replayed.next_segment, 1);
    }

    #[test]
    fn replay_skips_flushed_rows_and_drops_flushed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::new(dir.path().to_path_buf(), schema(), 0, &PARQUET.log);
        log.append(&[batch(&["a", "b"], 0)]).unwrap();
        assert_eq!(log.roll(), 1);
        log.append(&[batch(&["c", "d", "e"], 2)]).unwrap();
        log.roll();
        log.append(&[batch(&["f"], 5)]).unwrap();
        let (ids, replayed) = replay_ids(dir.path(), 3).unwrap();
        assert_eq!(
            ids,
            ["e", "f"],
            "the flushed prefix of a batch is sliced off"
        );
        assert_eq!(replayed.max_seq, Some(5));
        assert_eq!(replayed.next_segment, 3);
        let left: Vec<u64> = segments(dir.path())
            .unwrap()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(left, [1, 2], "segment 0 held only flushed rows");
        remove_segments_below(dir.path(), 2).unwrap();
        assert_eq!(replay_ids(dir.path(), 3).unwrap().0, ["f"]);
    }

    #[test]
    fn damage_is_corruption_or_a_torn_tail_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::new(dir.path().to_path_buf(), schema(), 0, &PARQUET.log);
        log.append(&[batch(&["a"], 0)]).unwrap();
        log.append(&[batch(&["b", "c"], 1)]).unwrap();
        let path = segment_path(dir.path(), 0);
        let original = fs::read(&path).unwrap();
        for position in 0..original.len() {
            let mut damaged = original.clone();
            damaged[position] ^= 0xFF;
            fs::write(&path, &damaged).unwrap();
            match replay_ids(dir.path(), -1) {
                // Padding, or values that are still valid; or a length now past the end of
                // the file, which cannot be told from an interrupted write.
                Ok((ids, _)) => assert!(ids.len() <= 3, "byte {position}: {ids:?}"),
                Err(Error::Corrupt(message)) => {
                    assert!(message.contains("00000000000000000000.arrows"), "{message}")
                }
                Err(e) => panic!("byte {position}: {e}"),
            }
        }
    }
}
