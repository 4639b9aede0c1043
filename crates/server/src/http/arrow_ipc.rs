//! Arrow IPC stream bodies: decoding ingest requests, encoding answers chunk by chunk.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

use crate::error::{ApiError, ApiResult};

fn invalid(e: arrow::error::ArrowError) -> ApiError {
    ApiError::invalid(format!("invalid Arrow IPC stream body: {e}"))
}

/// A reader of an IPC stream body; its schema is read (and checked) at once.
pub fn reader(body: Bytes) -> ApiResult<StreamReader<Cursor<Bytes>>> {
    StreamReader::try_new(Cursor::new(body), None).map_err(invalid)
}

/// All record batches of an IPC stream as one batch: one HTTP request is one ingest batch.
pub fn decode(body: Bytes) -> ApiResult<RecordBatch> {
    let reader = reader(body)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Writes an IPC stream incrementally: each call returns the bytes produced since the last.
pub struct IpcChunks {
    writer: StreamWriter<Vec<u8>>,
}

impl IpcChunks {
    /// Starts a stream; the schema message is in the first chunk taken.
    pub fn new(schema: &SchemaRef) -> ApiResult<Self> {
        Ok(IpcChunks {
            writer: StreamWriter::try_new(Vec::new(), schema)?,
        })
    }

    pub fn batch(&mut self, batch: &RecordBatch) -> ApiResult<Bytes> {
        self.writer.write(batch)?;
        Ok(self.take())
    }

    /// Ends the stream (end-of-stream marker) and returns the last bytes.
    pub fn finish(&mut self) -> ApiResult<Bytes> {
        self.writer.finish()?;
        Ok(self.take())
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.get_mut()))
    }
}
