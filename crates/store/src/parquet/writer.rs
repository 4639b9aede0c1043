//! Writes sorted rows into data files, one per UTC date, each durable before it gets its final
//! name. A written file is not live until a manifest lists it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use featherstore_core::time::{day_of, format_date};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::manifest::{data_file_path, FileEntry};
use crate::durable::{
    create_dir_durably, parent, remove_quietly, rename_durably, tmp_path, ShortWrites,
};
use crate::query::sql::INGESTED_AT_COLUMN;
use crate::{Error, Result};

/// A data file written and durable under its final name, with what it holds.
pub(super) struct WrittenFile {
    pub(super) entry: FileEntry,
    pub(super) bytes: u64,
}

/// Rows, files and bytes of some written files.
pub(super) struct Totals {
    pub(super) rows: u64,
    pub(super) files: u64,
    pub(super) bytes: u64,
}

pub(super) fn totals(written: &[WrittenFile]) -> Totals {
    Totals {
        rows: written.iter().map(|f| f.entry.rows).sum(),
        files: written.len() as u64,
        bytes: written.iter().map(|f| f.bytes).sum(),
    }
}

/// One data file being written under its temporary name; removed if never finished.
struct PartWriter {
    /// Some until finished.
    writer: Option<ArrowWriter<ShortWrites<File>>>,
    tmp: PathBuf,
    path: PathBuf,
    relative: String,
    rows: u64,
    finished: bool,
}

impl PartWriter {
    fn create(
        set_dir: &Path,
        date: &str,
        number: u64,
        schema: SchemaRef,
        properties: WriterProperties,
    ) -> Result<Self> {
        let relative = data_file_path(date, number);
        let path = set_dir.join(&relative);
        create_dir_durably(parent(&path))?;
        let tmp = tmp_path(&path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(Error::io(format!("creating {}", tmp.display())))?;
        // Built before the writer, so that a failure below still removes the file.
        let mut part = PartWriter {
            writer: None,
            tmp,
            path,
            relative,
            rows: 0,
            finished: false,
        };
        part.writer = Some(ArrowWriter::try_new(
            ShortWrites(file),
            schema,
            Some(properties),
        )?);
        Ok(part)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            writer.write(batch)?;
            self.rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// Writes the footer, fsyncs, and renames the file into place.
    fn finish(mut self) -> Result<WrittenFile> {
        let mut bytes = 0;
        if let Some(writer) = self.writer.take() {
            let file = writer.into_inner()?.into_inner();
            let context = || format!("syncing {}", self.tmp.display());
            file.sync_all().map_err(Error::io(context()))?;
            bytes = file.metadata().map_err(Error::io(context()))?.len();
        }
        rename_durably(&self.tmp, &self.path)?;
        self.finished = true;
        Ok(WrittenFile {
            entry: FileEntry {
                path: self.relative.clone(),
                rows: self.rows,
                without_ingest_times: false,
            },
            bytes,
        })
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Under either name, depending on where it failed.
            remove_quietly(&self.tmp);
            remove_quietly(&self.path);
        }
    }
}

/// Writes the rows that `batches` yields, sorted by UTC date first, into one new file per
/// date, numbered from `next_file`. On error every file it wrote is removed again.
pub(super) fn write_by_date(
    set_dir: &Path,
    schema: &SchemaRef,
    properties: &WriterProperties,
    next_file: &mut u64,
    batches: impl FnMut() -> Result<Option<RecordBatch>>,
) -> Result<Vec<WrittenFile>> {
    let mut done = Vec::new();
    let written = write_parts(set_dir, schema, properties, next_file, batches, &mut done);
    if let Err(e) = written {
        for file in &done {
            remove_quietly(&set_dir.join(&file.entry.path));
        }
        return Err(e);
    }
    Ok(done)
}

fn write_parts(
    set_dir: &Path,
    schema: &SchemaRef,
    properties: &WriterProperties,
    next_file: &mut u64,
    mut batches: impl FnMut() -> Result<Option<RecordBatch>>,
    done: &mut Vec<WrittenFile>,
) -> Result<()> {
    // Storage order: entity, features, event time, ingest time, `_seq`.
    let ts_index = schema.index_of(INGESTED_AT_COLUMN)?.saturating_sub(1);
    let mut current: Option<(i64, PartWriter)> = None;
    while let Some(batch) = batches()? {
        for (day, rows) in day_runs(&batch, ts_index) {
            if current.as_ref().is_some_and(|(d, _)| *d != day) {
                if let Some((_, part)) = current.take() {
                    done.push(part.finish()?);
                }
            }
            if current.is_none() {
                let number = *next_file;
                *next_file += 1;
                // Days since the epoch of i64 microseconds always fit in an i32.
                let date = format_date(day as i32);
                let part =
                    PartWriter::create(set_dir, &date, number, schema.clone(), properties.clone())?;
                current = Some((day, part));
            }
            if let Some((_, part)) = current.as_mut() {
                part.write(&rows)?;
            }
        }
    }
    if let Some((_, part)) = current {
        done.push(part.finish()?);
    }
    Ok(())
}

/// Splits a batch sorted by date into runs of one UTC date each.
fn day_runs(batch: &RecordBatch, ts_index: usize) -> Vec<(i64, RecordBatch)> {
    let times = batch
        .column(ts_index)
        .as_primitive::<TimestampMicrosecondType>();
    let mut runs = Vec::new();
    let mut start = 0;
    for row in 1..=batch.num_rows() {
        let day = day_of(times.value(start));
        if row == batch.num_rows() || day_of(times.value(row)) != day {
            runs.push((day, batch.slice(start, row - start)));
            start = row;
        }
    }
    runs
}
