//! Arrow IPC stream bodies: decoding ingest requests, encoding answers chunk by chunk.

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use featherstore_core::ipc::decode_stream;

use crate::error::ApiResult;

/// The schema and record batches of an IPC stream body, every message checked before it is
/// decoded (`featherstore_core::ipc`).
pub(super) fn decode_batches(body: Bytes) -> ApiResult<(SchemaRef, Vec<RecordBatch>)> {
    Ok(decode_stream(&Buffer::from(body)).map_err(featherstore_core::Error::from)?)
}

/// All record batches of an IPC stream as one batch: one HTTP request is one ingest batch.
pub(super) fn decode(body: Bytes) -> ApiResult<RecordBatch> {
    let (schema, batches) = decode_batches(body)?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Writes an IPC stream incrementally: each call returns the bytes produced since the last.
pub(super) struct IpcChunks {
    writer: StreamWriter<Vec<u8>>,
}

impl IpcChunks {
    /// Starts a stream; the schema message is in the first chunk taken.
    pub(super) fn new(schema: &SchemaRef) -> ApiResult<Self> {
        Ok(IpcChunks {
            writer: StreamWriter::try_new(Vec::new(), schema)?,
        })
    }

    pub(super) fn batch(&mut self, batch: &RecordBatch) -> ApiResult<Bytes> {
        self.writer.write(batch)?;
        Ok(self.take())
    }

    /// Ends the stream (end-of-stream marker) and returns the last bytes.
    pub(super) fn finish(&mut self) -> ApiResult<Bytes> {
        self.writer.finish()?;
        Ok(self.take())
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.get_mut()))
    }
}
