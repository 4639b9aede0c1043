//! Arrow IPC messages from clients, checked before arrow decodes them. Every ingest body (HTTP
//! Arrow stream, Flight DoPut, DoExchange entity rows) goes through [`MessageDecoder`].
//!
//! arrow-ipc trusts the metadata it is given: a buffer reaching past the body, a negative or
//! huge length, a malformed schema field, a count of buffers that does not match the schema,
//! a compressed buffer declaring its uncompressed size: each of these panics inside arrow or
//! allocates what the metadata says. So each message is checked here first, with checked
//! arithmetic, and only then handed to arrow's decoder, whose own validation of the array
//! contents (offsets, UTF-8, null counts) then runs on buffers known to lie inside the body.
//!
//! Only the Arrow types some FeatherStore column can be coerced from are accepted (see
//! [`crate::coerce`]): nulls, booleans, integers, floats, strings and binaries (plain, large,
//! view), dates, timestamps, and lists / fixed-size lists of these. Dictionary encoding,
//! structs, maps, unions, run-end encoding, decimals, durations, intervals and IPC body
//! compression are refused with a message naming what was found.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::convert::fb_to_schema;
use arrow::ipc::reader::read_record_batch;
use arrow::ipc::{
    root_as_message, DateUnit, Endianness, Message, MessageHeader, MetadataVersion, Precision,
    TimeUnit, Type,
};

/// The marker before each message's length in an encapsulated stream (arrow keeps its own
/// private).
pub const CONTINUATION_MARKER: [u8; 4] = [0xff; 4];

/// A body that reached arrow's decoder after the checks and was still refused by it, or one
/// the checks refused.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("invalid Arrow IPC data: {0}")]
    Invalid(String),
    #[error("invalid Arrow IPC data: {0}")]
    Decode(#[from] ArrowError),
}

type Result<T, E = IpcError> = std::result::Result<T, E>;

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(IpcError::Invalid(message.into()))
}

/// Every column that carries values needs at least one bit of body per row; only all-null
/// (`Null` type) columns need none. A record batch (and each of its nodes) may therefore
/// declare at most 8 rows per body byte, plus this allowance for small all-null batches:
/// without a bound, a 100-byte message declaring 2^62 null rows would make coercion allocate
/// for each of them.
pub const NULL_ROW_ALLOWANCE: usize = 4096;

fn max_rows(body_len: usize) -> usize {
    body_len
        .saturating_mul(8)
        .saturating_add(NULL_ROW_ALLOWANCE)
}

/// What one message decoded to.
#[derive(Debug)]
pub enum Decoded {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

/// Decodes the messages of one IPC stream in order: the schema first, then record batches.
/// Once it has the schema, a clone decodes the stream's batches as well (elsewhere: on the
/// thread that stores them).
#[derive(Debug, Default, Clone)]
pub struct MessageDecoder {
    schema: Option<SchemaRef>,
}

impl MessageDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the stream's schema message was decoded.
    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// Checks and decodes one message: `header` is the flatbuffer `Message` (Flight's
    /// `data_header`, without the IPC length prefix), `body` its body. `None` for a message
    /// without an IPC header (Flight uses those to carry only metadata).
    pub fn decode(&mut self, header: &[u8], body: &Buffer) -> Result<Option<Decoded>> {
        let message = root_as_message(header)
            .map_err(|e| IpcError::Invalid(format!("malformed message header: {e}")))?;
        if message.version() < MetadataVersion::V4 {
            return invalid(format!(
                "metadata version {:?} is not supported (V4 or V5 expected)",
                message.version()
            ));
        }
        check_body_length(&message, body.len())?;
        match message.header_type() {
            MessageHeader::NONE => Ok(None),
            MessageHeader::Schema => {
                if self.schema.is_some() {
                    return invalid("a second schema message in the stream");
                }
                let schema = Arc::new(checked_schema(&message)?);
                self.schema = Some(schema.clone());
                Ok(Some(Decoded::Schema(schema)))
            }
            MessageHeader::RecordBatch => {
                let Some(schema) = &self.schema else {
                    return invalid("a record batch before the schema message");
                };
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| IpcError::Invalid("record batch header missing".into()))?;
                check_record_batch(&batch, schema, body.len())?;
                let batch = read_record_batch(
                    body,
                    batch,
                    schema.clone(),
                    &HashMap::new(),
                    None,
                    &message.version(),
                )?;
                Ok(Some(Decoded::Batch(batch)))
            }
            MessageHeader::DictionaryBatch => {
                invalid("dictionary batches are not accepted: no column may be dictionary-encoded")
            }
            other => invalid(format!(
                "unexpected {} message in a record batch stream",
                other.variant_name().unwrap_or("unknown")
            )),
        }
    }
}

/// All record batches of an encapsulated IPC stream (the HTTP body format), with its schema.
pub fn decode_stream(body: &Buffer) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut decoder = MessageDecoder::new();
    let mut batches = Vec::new();
    let mut frames = Frames {
        data: body,
        position: 0,
    };
    while let Some((header, message_body)) = frames.next_frame()? {
        match decoder.decode(header, &message_body)? {
            Some(Decoded::Batch(batch)) => batches.push(batch),
            Some(Decoded::Schema(_)) | None => {}
        }
    }
    let schema = decoder
        .schema
        .ok_or_else(|| IpcError::Invalid("the stream holds no schema message".into()))?;
    Ok((schema, batches))
}

/// The messages of an encapsulated stream, read from `position` on.
struct Frames<'a> {
    data: &'a Buffer,
    position: usize,
}

impl<'a> Frames<'a> {
    /// The next `count` bytes, or an error if the stream ends before.
    fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8]> {
        let bytes: &'a [u8] = self.data.as_slice();
        let start = self.position;
        let end = start
            .checked_add(count)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                IpcError::Invalid(format!(
                    "{what} of {count} bytes at offset {start} runs past the end of the \
                     {}-byte stream",
                    bytes.len()
                ))
            })?;
        self.position = end;
        Ok(&bytes[start..end])
    }

    /// The next message: its flatbuffer header and its body. `None` at the end-of-stream
    /// marker or at the end of the data.
    fn next_frame(&mut self) -> Result<Option<(&'a [u8], Buffer)>> {
        let length = self.data.len();
        if self.position == length {
            return Ok(None); // a stream may end without the end-of-stream marker
        }
        let mut prefix = self.take(4, "message length")?;
        if prefix == CONTINUATION_MARKER {
            prefix = self.take(4, "message length")?;
        }
        let metadata_length = i32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if metadata_length == 0 {
            if self.position != length {
                return invalid(format!(
                    "{} bytes after the end-of-stream marker",
                    length - self.position
                ));
            }
            return Ok(None);
        }
        let metadata_length = usize::try_from(metadata_length)
            .map_err(|_| IpcError::Invalid(format!("negative message length {metadata_length}")))?;
        let header = self.take(metadata_length, "message metadata")?;
        let message = root_as_message(header)
            .map_err(|e| IpcError::Invalid(format!("malformed message header: {e}")))?;
        let body_length = usize::try_from(message.bodyLength()).map_err(|_| {
            IpcError::Invalid(format!(
                "negative message body length {}",
                message.bodyLength()
            ))
        })?;
        let start = self.position;
        self.take(body_length, "message body")?;
        Ok(Some((
            header,
            self.data.slice_with_length(start, body_length),
        )))
    }
}

fn check_body_length(message: &Message<'_>, actual: usize) -> Result<()> {
    let declared = message.bodyLength();
    if usize::try_from(declared).ok() != Some(actual) {
        return invalid(format!(
            "the message declares a {declared}-byte body but {actual} bytes were sent"
        ));
    }
    Ok(())
}

/// The schema of a schema message, every field checked before arrow converts it (its
/// conversion panics on a malformed field).
fn checked_schema(message: &Message<'_>) -> Result<Schema> {
    let schema = message
        .header_as_schema()
        .ok_or_else(|| IpcError::Invalid("schema header missing".into()))?;
    if schema.endianness() != Endianness::Little {
        return invalid("big-endian data is not supported");
    }
    let fields = schema
        .fields()
        .ok_or_else(|| IpcError::Invalid("the schema lists no fields".into()))?;
    if fields.is_empty() {
        return invalid("the schema has no columns");
    }
    for field in fields {
        check_field(&field, 0)?;
    }
    Ok(fb_to_schema(schema))
}

/// Lists nested deeper than this are refused: a vector feature is one level, and each level
/// costs recursion in the checks, in arrow's decoder and in coercion.
pub const MAX_NESTING_DEPTH: usize = 8;

fn check_field(field: &arrow::ipc::Field<'_>, depth: usize) -> Result<()> {
    let name = field.name().unwrap_or_default();
    let refuse = |what: String| invalid(format!("column {name:?}: {what}"));
    if depth > MAX_NESTING_DEPTH {
        return refuse(format!(
            "types nested more than {MAX_NESTING_DEPTH} levels deep are not accepted"
        ));
    }
    if field.dictionary().is_some() {
        return refuse("dictionary-encoded columns are not accepted".into());
    }
    let child_count = field.children().map_or(0, |children| children.len());
    let expect_children = |expected: usize| -> Result<()> {
        if child_count != expected {
            return refuse(format!(
                "a {:?} field needs {expected} child field(s), found {child_count}",
                field.type_type()
            ));
        }
        Ok(())
    };
    let missing = || {
        refuse(format!(
            "{:?} field without its type table",
            field.type_type()
        ))
    };
    match field.type_type() {
        Type::Null
        | Type::Bool
        | Type::Utf8
        | Type::LargeUtf8
        | Type::Utf8View
        | Type::Binary
        | Type::LargeBinary
        | Type::BinaryView => expect_children(0)?,
        Type::Int => {
            let Some(int) = field.type_as_int() else {
                return missing();
            };
            if ![8, 16, 32, 64].contains(&int.bitWidth()) {
                return refuse(format!("integer bit width {}", int.bitWidth()));
            }
            expect_children(0)?;
        }
        Type::FloatingPoint => {
            let Some(float) = field.type_as_floating_point() else {
                return missing();
            };
            if ![Precision::HALF, Precision::SINGLE, Precision::DOUBLE].contains(&float.precision())
            {
                return refuse(format!("floating point precision {:?}", float.precision()));
            }
            expect_children(0)?;
        }
        Type::Date => {
            let Some(date) = field.type_as_date() else {
                return missing();
            };
            if ![DateUnit::DAY, DateUnit::MILLISECOND].contains(&date.unit()) {
                return refuse(format!("date unit {:?}", date.unit()));
            }
            expect_children(0)?;
        }
        Type::Timestamp => {
            let Some(timestamp) = field.type_as_timestamp() else {
                return missing();
            };
            let units = [
                TimeUnit::SECOND,
                TimeUnit::MILLISECOND,
                TimeUnit::MICROSECOND,
                TimeUnit::NANOSECOND,
            ];
            if !units.contains(&timestamp.unit()) {
                return refuse(format!("timestamp unit {:?}", timestamp.unit()));
            }
            expect_children(0)?;
        }
        Type::List | Type::LargeList => expect_children(1)?,
        Type::FixedSizeList => {
            let Some(list) = field.type_as_fixed_size_list() else {
                return missing();
            };
            if list.listSize() < 0 {
                return refuse(format!("negative list size {}", list.listSize()));
            }
            expect_children(1)?;
        }
        other => {
            return refuse(format!(
                "Arrow type {} is not accepted (no feature type is read from it)",
                other.variant_name().unwrap_or("unknown")
            ))
        }
    }
    for child in field.children().into_iter().flatten() {
        check_field(&child, depth + 1)?;
    }
    Ok(())
}

/// Checks a record batch's nodes and buffers against the schema, the way arrow will consume
/// them: the exact counts, every buffer inside the body, every length within bounds.
fn check_record_batch(
    batch: &arrow::ipc::RecordBatch<'_>,
    schema: &Schema,
    body_len: usize,
) -> Result<()> {
    if batch.compression().is_some() {
        return invalid("compressed IPC bodies are not accepted; send uncompressed buffers");
    }
    let rows_allowed = max_rows(body_len);
    let rows = check_length(batch.length(), rows_allowed, "record batch length")?;
    let nodes = batch
        .nodes()
        .ok_or_else(|| IpcError::Invalid("record batch without field nodes".into()))?;
    let buffers = batch
        .buffers()
        .ok_or_else(|| IpcError::Invalid("record batch without buffers".into()))?;
    let mut walk = BatchWalk {
        nodes: nodes.iter().collect(),
        buffers: buffers.iter().map(|b| (b.offset(), b.length())).collect(),
        variadic_counts: batch
            .variadicBufferCounts()
            .map(|counts| counts.iter().collect())
            .unwrap_or_default(),
        body_len,
        rows_allowed,
    };
    for field in schema.fields() {
        let length = walk.field(field.name(), field.data_type())?;
        if length != rows {
            return invalid(format!(
                "column {:?} has {length} rows, the batch declares {rows}",
                field.name()
            ));
        }
    }
    if !walk.nodes.is_empty() || !walk.buffers.is_empty() || !walk.variadic_counts.is_empty() {
        return invalid(format!(
            "the batch carries {} field nodes, {} buffers and {} variadic counts more than \
             its schema uses",
            walk.nodes.len(),
            walk.buffers.len(),
            walk.variadic_counts.len()
        ));
    }
    Ok(())
}

fn check_length(value: i64, allowed: usize, what: &str) -> Result<usize> {
    match usize::try_from(value) {
        Ok(length) if length <= allowed => Ok(length),
        _ => invalid(format!(
            "{what} {value} is out of range (0 to {allowed} for this body size)"
        )),
    }
}

/// The field nodes, buffers and variadic buffer counts of a record batch, consumed field by
/// field in the order arrow's decoder reads them.
struct BatchWalk<'a> {
    nodes: VecDeque<&'a arrow::ipc::FieldNode>,
    buffers: VecDeque<(i64, i64)>,
    variadic_counts: VecDeque<i64>,
    body_len: usize,
    rows_allowed: usize,
}

impl BatchWalk<'_> {
    /// Consumes the node and buffers of a column of type `data_type`; its row count.
    fn field(&mut self, name: &str, data_type: &DataType) -> Result<usize> {
        let node = self.nodes.pop_front().ok_or_else(|| {
            IpcError::Invalid(format!("column {name:?}: the batch lacks its field node"))
        })?;
        let length = check_length(node.length(), self.rows_allowed, "field node length")?;
        let nulls = check_length(node.null_count(), length, "field node null count")?;
        // The validity bitmap is every non-null type's first buffer; arrow reads it into a
        // bitmap of `length` bits (asserting its size) whenever the node declares nulls.
        let validity_bytes = match data_type {
            DataType::Null => {
                if nulls != length {
                    return invalid(format!(
                        "column {name:?}: a null column of {length} rows declares {nulls} nulls"
                    ));
                }
                None
            }
            DataType::Utf8 | DataType::Binary => Some(self.buffers(name, 3, 4)?),
            DataType::LargeUtf8 | DataType::LargeBinary => Some(self.buffers(name, 3, 8)?),
            DataType::Utf8View | DataType::BinaryView => {
                let count = self.variadic_counts.pop_front().ok_or_else(|| {
                    IpcError::Invalid(format!("column {name:?}: missing variadic buffer count"))
                })?;
                let count = usize::try_from(count)
                    .ok()
                    .and_then(|count| count.checked_add(2))
                    .filter(|count| *count <= self.buffers.len())
                    .ok_or_else(|| {
                        IpcError::Invalid(format!(
                            "column {name:?}: variadic buffer count {count} out of range"
                        ))
                    })?;
                Some(self.buffers(name, count, 16)?)
            }
            DataType::List(item) | DataType::LargeList(item) => {
                let offset_width = if matches!(data_type, DataType::List(_)) {
                    4
                } else {
                    8
                };
                let validity = self.buffers(name, 2, offset_width)?;
                self.field(item.name(), item.data_type())?;
                Some(validity)
            }
            DataType::FixedSizeList(item, size) => {
                let validity = self.buffers(name, 1, 1)?;
                let values = self.field(item.name(), item.data_type())?;
                let needed = usize::try_from(*size)
                    .ok()
                    .and_then(|size| size.checked_mul(length));
                if needed.is_none_or(|needed| needed > values) {
                    return invalid(format!(
                        "column {name:?}: {length} lists of {size} values need {} values, \
                         the batch has {values}",
                        needed.map_or_else(|| "too many".to_string(), |n| n.to_string())
                    ));
                }
                Some(validity)
            }
            // Booleans and fixed-width primitives: validity and values.
            _ => Some(self.buffers(name, 2, 1)?),
        };
        if let Some(validity_bytes) = validity_bytes {
            if nulls > 0 && validity_bytes < length.div_ceil(8) {
                return invalid(format!(
                    "column {name:?}: {nulls} nulls declared with a {validity_bytes}-byte \
                     validity bitmap for {length} rows"
                ));
            }
        }
        Ok(length)
    }

    /// Consumes `count` (at least one) buffers, checking each lies inside the body, and that
    /// the second (offsets or views, which arrow reads as a whole slice of its element type)
    /// is a whole number of `second_width`-byte elements; the byte length of the first.
    fn buffers(&mut self, name: &str, count: usize, second_width: usize) -> Result<usize> {
        let mut first = None;
        for index in 0..count {
            let (offset, length) = self.buffers.pop_front().ok_or_else(|| {
                IpcError::Invalid(format!(
                    "column {name:?}: the batch has fewer buffers than its schema needs"
                ))
            })?;
            let extent = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(length).ok())
                .filter(|(offset, length)| {
                    offset
                        .checked_add(*length)
                        .is_some_and(|end| end <= self.body_len)
                });
            let Some((_, length)) = extent else {
                return invalid(format!(
                    "column {name:?}: buffer at offset {offset} of length {length} lies \
                     outside the {}-byte body",
                    self.body_len
                ));
            };
            if index == 1 && length % second_width != 0 {
                return invalid(format!(
                    "column {name:?}: a {length}-byte buffer of {second_width}-byte offsets \
                     or views"
                ));
            }
            first.get_or_insert(length);
        }
        Ok(first.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, DictionaryArray, FixedSizeListArray, Float32Array, Int32Array, Int64Array,
        ListArray, NullArray, RecordBatchOptions, StringArray, StringViewArray, StructArray,
    };
    use arrow::datatypes::{Field, Int32Type};
    use arrow::ipc::CompressionType;

    use super::*;
    use crate::ipc_testing::{
        join, set_body_length, set_buffer, set_int_bit_width, set_node, split, stream, BatchHeader,
        Frame,
    };

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn sample() -> RecordBatch {
        batch(vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["u1", "u2", "u3"])) as ArrayRef,
            ),
            (
                "age",
                Arc::new(Int64Array::from(vec![Some(31), None, Some(7)])),
            ),
        ])
    }

    fn decode(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        decode_stream(&Buffer::from(bytes))
    }

    /// The error message of a refused stream; fails the test if it was accepted.
    fn refused(bytes: Vec<u8>) -> String {
        match decode(bytes) {
            Ok(_) => panic!("the stream was accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// The sample stream's frames: schema, then one record batch.
    fn sample_frames() -> Vec<Frame> {
        split(&stream(&[sample()]))
    }

    #[test]
    fn a_valid_stream_decodes_to_its_batches() {
        let batches = [sample(), sample()];
        let (schema, decoded) = decode(stream(&batches)).unwrap();
        assert_eq!(schema, sample().schema());
        assert_eq!(decoded, batches);
        // The same messages one by one, as Flight sends them.
        let mut decoder = MessageDecoder::new();
        let mut frames = split(&stream(&batches)).into_iter();
        let schema = frames.next().unwrap();
        let decoded = decoder
            .decode(&schema.header, &Buffer::from(schema.body))
            .unwrap();
        assert!(matches!(decoded, Some(Decoded::Schema(_))));
        for frame in frames {
            let decoded = decoder
                .decode(&frame.header, &Buffer::from(frame.body))
                .unwrap();
            assert!(matches!(decoded, Some(Decoded::Batch(b)) if b == sample()));
        }
    }

    #[test]
    fn a_buffer_declared_far_past_the_body_is_refused() {
        let mut frames = sample_frames();
        set_buffer(&mut frames[1].header, 2, 0, 1 << 60);
        let message = refused(join(&frames));
        assert!(message.contains("outside the"), "{message}");
    }

    #[test]
    fn buffers_with_negative_or_overflowing_extents_are_refused() {
        for (offset, length) in [(-8, 8), (8, -1), (i64::MAX, 16), (i64::MAX - 4, 8)] {
            let mut frames = sample_frames();
            set_buffer(&mut frames[1].header, 1, offset, length);
            let message = refused(join(&frames));
            assert!(
                message.contains("outside the"),
                "{offset} {length}: {message}"
            );
        }
    }

    #[test]
    fn a_body_shorter_than_declared_is_refused() {
        let frames = sample_frames();
        let mut decoder = MessageDecoder::new();
        decoder
            .decode(&frames[0].header, &Buffer::from(frames[0].body.clone()))
            .unwrap();
        let short = &frames[1].body[..frames[1].body.len() - 8];
        let message = decoder
            .decode(&frames[1].header, &Buffer::from(short.to_vec()))
            .unwrap_err()
            .to_string();
        assert!(message.contains("bytes were sent"), "{message}");
        // In a stream, the declared body runs past the data.
        let mut frames = sample_frames();
        let declared = frames[1].body.len() as i64 + 64;
        set_body_length(&mut frames[1].header, declared);
        let message = refused(join(&frames));
        assert!(message.contains("runs past the end"), "{message}");
        set_body_length(&mut frames[1].header, i64::MIN);
        let message = refused(join(&frames));
        assert!(
            message.contains("negative message body length"),
            "{message}"
        );
    }

    #[test]
    fn huge_or_negative_metadata_lengths_are_refused_before_allocating() {
        let mut bytes = stream(&[sample()]);
        bytes[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(refused(bytes).contains("runs past the end"));
        let mut bytes = stream(&[sample()]);
        bytes[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(refused(bytes).contains("negative message length"));
        assert!(refused(vec![0xff, 0xff, 0xff]).contains("runs past the end"));
    }

    #[test]
    fn huge_row_counts_are_refused() {
        let nulls = batch(vec![("n", Arc::new(NullArray::new(3)) as ArrayRef)]);
        let mut frames = split(&stream(&[nulls]));
        set_node(&mut frames[1].header, 0, 1 << 62, 1 << 62);
        let message = refused(join(&frames));
        assert!(message.contains("field node length"), "{message}");

        let mut frames = sample_frames();
        let mut header = BatchHeader::read(&frames[1].header);
        header.length = -1;
        frames[1].header = header.encode();
        assert!(refused(join(&frames)).contains("record batch length"));

        let mut frames = sample_frames();
        set_node(&mut frames[1].header, 1, 3, 4);
        assert!(refused(join(&frames)).contains("null count"));
    }

    /// Found by the arrow_ipc fuzz target: arrow builds the validity bitmap of a node that
    /// declares nulls before validating the array, asserting the buffer is large enough.
    #[test]
    fn a_validity_bitmap_too_short_for_the_declared_nulls_is_refused() {
        let mut frames = sample_frames();
        // Column "age" (node 1, buffers 3 and 4) has one null: empty its validity bitmap.
        set_buffer(&mut frames[1].header, 3, 0, 0);
        let message = refused(join(&frames));
        assert!(message.contains("validity bitmap"), "{message}");
    }

    /// Found by the arrow_ipc fuzz target: arrow's offset validation reads the whole offsets
    /// buffer as a slice of its type, asserting its length is a multiple of the width.
    #[test]
    fn an_offsets_buffer_of_partial_offsets_is_refused() {
        let mut frames = sample_frames();
        // Column "user_id": buffer 1 holds its 4 i32 offsets (16 bytes).
        set_buffer(&mut frames[1].header, 1, 0, 15);
        let message = refused(join(&frames));
        assert!(message.contains("offsets"), "{message}");
    }

    #[test]
    fn a_schema_without_columns_is_refused() {
        let options = RecordBatchOptions::new().with_row_count(Some(5));
        let empty =
            RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &options).unwrap();
        assert!(refused(stream(&[empty])).contains("no columns"));
    }

    #[test]
    fn a_malformed_schema_field_is_refused_not_a_panic() {
        let mut frames = sample_frames();
        let ints = batch(vec![("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]);
        frames[0] = split(&stream(&[ints]))[0].clone();
        set_int_bit_width(&mut frames[0].header, 0, 7);
        let message = refused(join(&frames[..1]));
        assert!(message.contains("integer bit width 7"), "{message}");
    }

    #[test]
    fn unsupported_types_and_dictionaries_are_refused() {
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![1]));
        let structs = StructArray::from(vec![(
            Arc::new(Field::new("s", DataType::Utf8, true)),
            strings.clone(),
        )]);
        let message = refused(stream(&[batch(vec![(
            "st",
            Arc::new(structs) as ArrayRef,
        )])]));
        assert!(message.contains("Struct_"), "{message}");

        let dictionary: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let message = refused(stream(&[batch(vec![(
            "d",
            Arc::new(dictionary) as ArrayRef,
        )])]));
        assert!(message.contains("dictionary-encoded"), "{message}");

        // A dictionary batch in a stream whose schema has no dictionary column.
        let mut frames = split(&stream(&[batch(vec![("x", ints)])]));
        let mut header = BatchHeader::read(&frames[1].header);
        header.dictionary_id = Some(0);
        frames[1].header = header.encode();
        assert!(refused(join(&frames)).contains("dictionary batches are not accepted"));
    }

    #[test]
    fn buffer_and_node_counts_must_match_the_schema() {
        let frames = sample_frames();
        let original = BatchHeader::read(&frames[1].header);
        let mut fewer = original.clone();
        fewer.buffers.pop();
        let mut more = original.clone();
        more.buffers.push((0, 0));
        let mut fewer_nodes = original.clone();
        fewer_nodes.nodes.pop();
        let mut more_nodes = original.clone();
        more_nodes.nodes.push((3, 0));
        for (header, expected) in [
            (fewer, "fewer buffers"),
            (more, "more than"),
            (fewer_nodes, "lacks its field node"),
            (more_nodes, "more than"),
        ] {
            let mut frames = frames.clone();
            frames[1].header = header.encode();
            let message = refused(join(&frames));
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn variadic_buffer_counts_are_checked() {
        let views: ArrayRef = Arc::new(StringViewArray::from(vec![
            "a string longer than twelve bytes",
            "b",
        ]));
        let frames = split(&stream(&[batch(vec![("v", views)])]));
        let original = BatchHeader::read(&frames[1].header);
        assert!(decode(join(&frames)).is_ok());
        for counts in [None, Some(vec![i64::MAX]), Some(vec![-3]), Some(vec![1, 1])] {
            let mut header = original.clone();
            header.variadic_counts = counts.clone();
            let mut frames = frames.clone();
            frames[1].header = header.encode();
            let message = refused(join(&frames));
            assert!(message.contains("variadic"), "{counts:?}: {message}");
        }
    }

    #[test]
    fn compressed_bodies_are_refused() {
        let mut frames = sample_frames();
        let mut header = BatchHeader::read(&frames[1].header);
        header.compression = Some(CompressionType::LZ4_FRAME);
        // A buffer whose 8-byte prefix declares a huge uncompressed length.
        frames[1].body[..8].copy_from_slice(&(1i64 << 60).to_le_bytes());
        frames[1].header = header.encode();
        assert!(refused(join(&frames)).contains("compressed"));
    }

    #[test]
    fn fixed_size_lists_must_hold_length_times_size_values() {
        let values = Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0]));
        let field = Arc::new(Field::new("item", DataType::Float32, true));
        let vectors = FixedSizeListArray::try_new(field, 2, values, None).unwrap();
        let frames = split(&stream(&[batch(vec![(
            "v",
            Arc::new(vectors) as ArrayRef,
        )])]));
        assert!(decode(join(&frames)).is_ok());
        let mut frames = frames;
        set_node(&mut frames[1].header, 1, 1, 0);
        assert!(refused(join(&frames)).contains("need 4 values"));
    }

    #[test]
    fn lists_nested_deeper_than_the_limit_are_refused() {
        let mut array: ArrayRef = Arc::new(Float32Array::from(vec![1.0]));
        for depth in 1..=40 {
            let field = Arc::new(Field::new("item", array.data_type().clone(), true));
            let offsets = arrow::buffer::OffsetBuffer::from_lengths([array.len()]);
            array = Arc::new(ListArray::new(field, offsets, array, None));
            let result = decode(stream(&[batch(vec![("deep", array.clone())])]));
            if depth <= MAX_NESTING_DEPTH {
                assert!(result.is_ok(), "depth {depth}: {result:?}");
            } else {
                // Far deeper, flatbuffers' own depth limit may refuse the header first.
                let message = result.unwrap_err().to_string();
                assert!(
                    message.contains("nested more than") || depth > 12,
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn framing_errors_are_refused() {
        let mut bytes = stream(&[sample()]);
        bytes.extend_from_slice(b"trailing");
        assert!(refused(bytes).contains("after the end-of-stream marker"));
        // A record batch before any schema.
        let frames = sample_frames();
        assert!(refused(join(&frames[1..])).contains("before the schema"));
        assert!(refused(join(&[frames[0].clone(), frames[0].clone()])).contains("second schema"));
        assert!(refused(Vec::new()).contains("no schema"));
        let mut garbage = stream(&[sample()]);
        garbage[12..40].fill(0xAB);
        assert!(decode(garbage).is_err());
    }
}
