//! Hostile Arrow IPC bodies over every ingest path (HTTP Arrow body, Flight DoPut, DoExchange
//! entity rows, HTTP training data): each is refused with INVALID_ARGUMENT / 400 and a
//! message, nothing is stored, and the server keeps serving. The bodies are real IPC bytes
//! written by arrow with their flatbuffer metadata patched (`featherstore_core::ipc_testing`).

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, ListArray, RecordBatch, StringArray};
use arrow::datatypes::Field;
use arrow::ipc::CompressionType;
use arrow_flight::{FlightClient, FlightData, FlightDescriptor, PutResult};
use featherstore_core::ipc_testing::{
    join, set_body_length, set_buffer, set_int_bit_width, set_node, split, stream, BatchHeader,
    Frame,
};
use featherstore_testkit::http::{send, ARROW};
use featherstore_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

fn valid_frames() -> Vec<Frame> {
    split(&stream(&[user_batch(&[
        ("u1", Some(31), Some(0.5), 1_767_225_600),
        ("u2", None, None, 1_767_225_600),
    ])]))
}

/// Rebuilds the record batch message (frame 1) with `edit` applied to its metadata.
fn rebuilt(edit: impl FnOnce(&mut BatchHeader)) -> Vec<Frame> {
    let mut frames = valid_frames();
    let mut header = BatchHeader::read(&frames[1].header);
    edit(&mut header);
    frames[1].header = header.encode();
    frames
}

/// Named hostile message sequences (schema and record batch messages, as Flight sends them).
fn hostile_messages() -> Vec<(&'static str, Vec<Frame>)> {
    let mut cases = Vec::new();
    let mut frames = valid_frames();
    set_buffer(&mut frames[1].header, 2, 0, 1 << 60);
    cases.push(("a 2^60-byte buffer", frames));
    let mut frames = valid_frames();
    set_buffer(&mut frames[1].header, 1, -64, 8);
    cases.push(("a negative buffer offset", frames));
    let mut frames = valid_frames();
    let body = frames[1].body.len();
    frames[1].body.truncate(body - 16);
    cases.push(("a body shorter than declared", frames));
    let mut frames = valid_frames();
    set_node(&mut frames[1].header, 0, 1 << 62, 0);
    cases.push(("2^62 declared rows", frames));
    let mut frames = valid_frames();
    set_int_bit_width(&mut frames[0].header, 1, 7);
    cases.push(("a 7-bit integer column", frames));
    cases.push((
        "an LZ4-compressed body",
        rebuilt(|h| h.compression = Some(CompressionType::LZ4_FRAME)),
    ));
    cases.push((
        "a missing buffer",
        rebuilt(|h| {
            h.buffers.pop();
        }),
    ));
    cases.push(("a dictionary batch", rebuilt(|h| h.dictionary_id = Some(0))));
    cases.push((
        "a record batch before the schema",
        valid_frames()[1..].to_vec(),
    ));
    // 40 levels of List<List<...<float>>>.
    let mut deep: ArrayRef = Arc::new(Float32Array::from(vec![1.0]));
    for _ in 0..40 {
        let field = Arc::new(Field::new("item", deep.data_type().clone(), true));
        let offsets = arrow::buffer::OffsetBuffer::from_lengths([deep.len()]);
        deep = Arc::new(ListArray::new(field, offsets, deep, None));
    }
    let deep = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from(vec!["u"])) as ArrayRef,
        ),
        ("age", deep),
    ])
    .unwrap();
    cases.push(("40 levels of nested lists", split(&stream(&[deep]))));
    let empty = RecordBatch::try_new_with_options(
        Arc::new(arrow::datatypes::Schema::empty()),
        vec![],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(1 << 40)),
    )
    .unwrap();
    cases.push(("a schema without columns", split(&stream(&[empty]))));
    cases
}

/// Hostile bodies that exist only as an encapsulated stream (the HTTP body format).
fn hostile_streams() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases: Vec<_> = hostile_messages()
        .into_iter()
        .map(|(name, frames)| (name, join(&frames)))
        .collect();
    let mut bytes = join(&valid_frames());
    bytes[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
    cases.push(("a 2^31-byte metadata length", bytes));
    let mut frames = valid_frames();
    let declared = frames[1].body.len() as i64 + (1 << 40);
    set_body_length(&mut frames[1].header, declared);
    cases.push(("a body length past the stream", join(&frames)));
    let mut bytes = join(&valid_frames());
    bytes.extend_from_slice(b"after the end");
    cases.push(("bytes after the end-of-stream marker", bytes));
    cases
}

fn assert_invalid_ipc(case: &str, answer: &(StatusCode, Value)) {
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{case}: {}", answer.1);
    assert_eq!(answer.1["error"]["code"], "invalid_argument", "{case}");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("invalid Arrow IPC data"),
        "{case}: {message}"
    );
}

async fn stored_rows(client: &mut FlightClient) -> usize {
    let ticket = json!({"type": "history", "feature_set": "user_features"});
    flight::get_rows(client, ticket).await
}

#[tokio::test]
async fn http_arrow_bodies_with_malformed_metadata_answer_400_and_store_nothing() {
    for backend in BACKENDS {
        let (server, mut flight) = TestServer::with_set(backend, USER_SPEC).await;
        let client = http();
        let rows_url = format!("{}/v1/feature-sets/user_features/rows", server.http);
        let training_url = format!(
            "{}/v1/training-data?features=user_features:age&full_names=true",
            server.http
        );
        for (case, body) in hostile_streams() {
            let answer = send(
                client
                    .post(&rows_url)
                    .header("content-type", ARROW)
                    .body(body.clone()),
            )
            .await;
            assert_invalid_ipc(case, &answer);
            let answer = send(client.post(&training_url).body(body)).await;
            assert_invalid_ipc(case, &answer);
        }
        assert_eq!(stored_rows(&mut flight).await, 0, "{backend:?}");
        // The server still serves: the unpatched body is stored whole.
        let answer = send(
            client
                .post(&rows_url)
                .header("content-type", ARROW)
                .body(join(&valid_frames())),
        )
        .await;
        assert_eq!(answer, (StatusCode::OK, json!({"rows": 2})));
        assert_eq!(stored_rows(&mut flight).await, 2);
    }
}

fn flight_messages(descriptor: FlightDescriptor, frames: Vec<Frame>) -> Vec<FlightData> {
    let mut messages: Vec<FlightData> = frames
        .into_iter()
        .map(|frame| {
            FlightData::new()
                .with_data_header(frame.header)
                .with_data_body(frame.body)
        })
        .collect();
    messages[0].flight_descriptor = Some(descriptor);
    messages
}

/// The PutResults and the final status of a DoPut of `messages`.
async fn do_put(
    client: &mut FlightClient,
    messages: Vec<FlightData>,
) -> (Vec<PutResult>, Result<(), tonic::Status>) {
    flight::put_messages(client, futures::stream::iter(messages.into_iter().map(Ok))).await
}

#[tokio::test]
async fn do_put_of_malformed_messages_fails_invalid_argument_and_stores_nothing() {
    for backend in BACKENDS {
        let (_server, mut client) = TestServer::with_set(backend, USER_SPEC).await;
        let descriptor = FlightDescriptor::new_path(vec!["user_features".into()]);
        let mut cases = hostile_messages();
        let mut frames = valid_frames();
        frames[1].body.extend_from_slice(&[0; 64]);
        cases.push(("a body longer than declared", frames));
        for (case, frames) in cases {
            let (results, status) =
                do_put(&mut client, flight_messages(descriptor.clone(), frames)).await;
            let status = status.expect_err(case);
            assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status}");
            assert!(
                status.message().contains("invalid Arrow IPC data"),
                "{case}: {status}"
            );
            assert!(results.is_empty(), "{case}: {results:?}");
        }
        assert_eq!(stored_rows(&mut client).await, 0, "{backend:?}");
        let (results, status) =
            do_put(&mut client, flight_messages(descriptor, valid_frames())).await;
        status.unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(stored_rows(&mut client).await, 2);
    }
}

#[tokio::test]
async fn do_exchange_of_malformed_entity_rows_fails_invalid_argument() {
    let (_server, mut client) = TestServer::with_set(BACKENDS[0], USER_SPEC).await;
    let command =
        json!({"type": "training_data", "features": ["user_features:age"], "full_names": true});
    let descriptor = FlightDescriptor::new_cmd(command.to_string());
    for (case, frames) in hostile_messages() {
        let messages = flight_messages(descriptor.clone(), frames);
        let input = futures::stream::iter(messages.into_iter().map(Ok));
        let outcome = match client.do_exchange(input).await {
            Ok(answers) => flight::collect(answers).await.map(|_| ()),
            Err(e) => Err(to_status(e)),
        };
        let status = outcome.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status}");
        assert!(
            status.message().contains("invalid Arrow IPC data"),
            "{case}: {status}"
        );
    }
}
