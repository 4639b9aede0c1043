//! Test support (unit tests, the server's hostile-client tests, fuzz seeds): real Arrow IPC
//! bytes written by arrow, split into messages, and hostile variants of them made by patching
//! the flatbuffer metadata in place or rebuilding a record batch header with other nodes and
//! buffers. Panics on input that is not a well-formed stream: it is only given arrow's output.

use arrow::array::RecordBatch;
use arrow::ipc::writer::StreamWriter;
use arrow::ipc::{
    root_as_message, BodyCompressionBuilder, CompressionType, DictionaryBatchBuilder, FieldNode,
    MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder,
};
use flatbuffers::{FlatBufferBuilder, Table, VOffsetT};

use crate::ipc::CONTINUATION_MARKER;

/// One encapsulated message: its flatbuffer `Message` and its body (a Flight `FlightData`'s
/// `data_header` and `data_body`).
#[derive(Debug, Clone)]
pub struct Frame {
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

/// The IPC stream arrow writes for `batches` (schema, batches, end-of-stream marker).
pub fn stream(batches: &[RecordBatch]) -> Vec<u8> {
    let schema = batches.first().expect("at least one batch").schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).expect("stream writer");
    for batch in batches {
        writer.write(batch).expect("write batch");
    }
    writer.finish().expect("finish stream");
    writer.into_inner().expect("stream bytes")
}

/// The messages of a stream arrow wrote, without the end-of-stream marker.
pub fn split(stream: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.starts_with(&CONTINUATION_MARKER) {
            rest = &rest[4..];
        }
        let length = i32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if length == 0 {
            return frames;
        }
        let header = rest[..length].to_vec();
        let body_length = root_as_message(&header).expect("message").bodyLength() as usize;
        let body = rest[length..length + body_length].to_vec();
        rest = &rest[length + body_length..];
        frames.push(Frame { header, body });
    }
}

/// An encapsulated stream of `frames`, headers padded to 8 bytes, with the end marker.
pub fn join(frames: &[Frame]) -> Vec<u8> {
    let mut stream = Vec::new();
    for frame in frames {
        let padded = frame.header.len().div_ceil(8) * 8;
        stream.extend_from_slice(&CONTINUATION_MARKER);
        stream.extend_from_slice(&(padded as i32).to_le_bytes());
        stream.extend_from_slice(&frame.header);
        stream.resize(stream.len() + padded - frame.header.len(), 0);
        stream.extend_from_slice(&frame.body);
    }
    stream.extend_from_slice(&CONTINUATION_MARKER);
    stream.extend_from_slice(&0i32.to_le_bytes());
    stream
}

/// Where a scalar field of a flatbuffer table lies in its buffer (it must be present).
fn scalar_position(table: &Table<'_>, field: VOffsetT) -> usize {
    let offset = table.vtable().get(field);
    assert_ne!(offset, 0, "the field is absent from the table");
    table.loc() + offset as usize
}

fn put_i64(header: &mut [u8], position: usize, value: i64) {
    header[position..position + 8].copy_from_slice(&value.to_le_bytes());
}

/// Sets the `bodyLength` a message declares.
pub fn set_body_length(header: &mut [u8], value: i64) {
    let message = root_as_message(header).expect("message");
    let position = scalar_position(&message._tab, arrow::ipc::Message::VT_BODYLENGTH);
    put_i64(header, position, value);
}

/// Which vector of 16-byte structs of a record batch message to patch.
#[derive(Clone, Copy)]
enum BatchVector {
    Nodes,
    Buffers,
}

/// Where entry `index` of a record batch message's nodes or buffers lies in `header`.
fn entry_position(header: &[u8], vector: BatchVector, index: usize) -> usize {
    let message = root_as_message(header).expect("message");
    let batch = message.header_as_record_batch().expect("a record batch");
    let entries = match vector {
        BatchVector::Nodes => batch.nodes().expect("nodes").bytes(),
        BatchVector::Buffers => batch.buffers().expect("buffers").bytes(),
    };
    entries.as_ptr() as usize - header.as_ptr() as usize + index * 16
}

/// Sets buffer `index` of a record batch message to `offset` and `length`.
pub fn set_buffer(header: &mut [u8], index: usize, offset: i64, length: i64) {
    let position = entry_position(header, BatchVector::Buffers, index);
    put_i64(header, position, offset);
    put_i64(header, position + 8, length);
}

/// Sets field node `index` of a record batch message to `length` rows, `null_count` nulls.
pub fn set_node(header: &mut [u8], index: usize, length: i64, null_count: i64) {
    let position = entry_position(header, BatchVector::Nodes, index);
    put_i64(header, position, length);
    put_i64(header, position + 8, null_count);
}

/// Sets the bit width of the integer column `index` of a schema message.
pub fn set_int_bit_width(header: &mut [u8], index: usize, bit_width: i32) {
    let position = {
        let message = root_as_message(header).expect("message");
        let schema = message.header_as_schema().expect("a schema");
        let field = schema.fields().expect("fields").get(index);
        let int = field.type_as_int().expect("an integer column");
        scalar_position(&int._tab, arrow::ipc::Int::VT_BITWIDTH)
    };
    header[position..position + 4].copy_from_slice(&bit_width.to_le_bytes());
}

/// The metadata of a record batch message, to rebuild it with other values.
#[derive(Debug, Clone)]
pub struct BatchHeader {
    pub length: i64,
    /// `(length, null_count)` per field node.
    pub nodes: Vec<(i64, i64)>,
    /// `(offset, length)` per buffer.
    pub buffers: Vec<(i64, i64)>,
    pub variadic_counts: Option<Vec<i64>>,
    pub compression: Option<CompressionType>,
    pub body_length: i64,
    /// Rebuilt as a dictionary batch of this id rather than a record batch.
    pub dictionary_id: Option<i64>,
}

impl BatchHeader {
    /// The metadata of the record batch message `header`.
    pub fn read(header: &[u8]) -> Self {
        let message = root_as_message(header).expect("message");
        let batch = message.header_as_record_batch().expect("a record batch");
        BatchHeader {
            length: batch.length(),
            nodes: batch
                .nodes()
                .expect("nodes")
                .iter()
                .map(|n| (n.length(), n.null_count()))
                .collect(),
            buffers: batch
                .buffers()
                .expect("buffers")
                .iter()
                .map(|b| (b.offset(), b.length()))
                .collect(),
            variadic_counts: batch.variadicBufferCounts().map(|c| c.iter().collect()),
            compression: batch.compression().map(|c| c.codec()),
            body_length: message.bodyLength(),
            dictionary_id: None,
        }
    }

    /// The flatbuffer `Message` of this metadata.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let nodes: Vec<FieldNode> = self
            .nodes
            .iter()
            .map(|(length, nulls)| FieldNode::new(*length, *nulls))
            .collect();
        let nodes = fbb.create_vector(&nodes);
        let buffers: Vec<arrow::ipc::Buffer> = self
            .buffers
            .iter()
            .map(|(offset, length)| arrow::ipc::Buffer::new(*offset, *length))
            .collect();
        let buffers = fbb.create_vector(&buffers);
        let variadic = self
            .variadic_counts
            .as_ref()
            .map(|counts| fbb.create_vector(counts.as_slice()));
        let compression = self.compression.map(|codec| {
            let mut compression = BodyCompressionBuilder::new(&mut fbb);
            compression.add_codec(codec);
            compression.finish()
        });
        let mut batch = RecordBatchBuilder::new(&mut fbb);
        batch.add_length(self.length);
        batch.add_nodes(nodes);
        batch.add_buffers(buffers);
        if let Some(variadic) = variadic {
            batch.add_variadicBufferCounts(variadic);
        }
        if let Some(compression) = compression {
            batch.add_compression(compression);
        }
        let batch = batch.finish();
        let (header_type, header) = match self.dictionary_id {
            Some(id) => {
                let mut dictionary = DictionaryBatchBuilder::new(&mut fbb);
                dictionary.add_id(id);
                dictionary.add_data(batch);
                let dictionary = dictionary.finish();
                (MessageHeader::DictionaryBatch, dictionary.as_union_value())
            }
            None => (MessageHeader::RecordBatch, batch.as_union_value()),
        };
        let mut message = MessageBuilder::new(&mut fbb);
        message.add_version(MetadataVersion::V5);
        message.add_header_type(header_type);
        message.add_header(header);
        message.add_bodyLength(self.body_length);
        let message = message.finish();
        fbb.finish(message, None);
        fbb.finished_data().to_vec()
    }
}
