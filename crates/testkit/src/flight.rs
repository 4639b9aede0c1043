//! Flight calls as the suites make them: connect, actions, DoPut with its acknowledgements and
//! final status, DoGet and DoExchange collected (within [`CALL_TIMEOUT`]).

use std::future::Future;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{
    Action, FlightClient, FlightData, FlightDescriptor, FlightInfo, PutResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::server::TestServer;

/// How long one call of these helpers may take before the test fails: a hang becomes a
/// failure that names the call, not a test that never ends.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `call` within `limit`; a timeout panics naming `what`.
pub async fn within<T>(limit: Duration, what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {limit:?}"))
}

/// An arrow-flight client of `address` (`http://host:port`).
pub async fn connect(address: &str) -> FlightClient {
    let channel = tonic::transport::Channel::from_shared(address.to_string())
        .expect("a valid address")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    FlightClient::new(channel)
}

/// The gRPC status of a failed call.
pub fn to_status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}

/// DoAction `name` with `body`: its one JSON result.
pub async fn action(
    client: &mut FlightClient,
    name: &str,
    body: &str,
) -> Result<Value, tonic::Status> {
    let call = async {
        client
            .do_action(Action::new(name, body.to_string()))
            .await?
            .try_collect::<Vec<_>>()
            .await
    };
    let results = within(CALL_TIMEOUT, name, call).await.map_err(to_status)?;
    assert_eq!(results.len(), 1, "{name}: one result");
    Ok(serde_json::from_slice(&results[0]).expect("a JSON action result"))
}

/// Creates a feature set from its JSON spec; panics unless the server takes it.
pub async fn create_set(client: &mut FlightClient, spec: &str) -> Value {
    action(client, "create_feature_set", spec)
        .await
        .unwrap_or_else(|e| panic!("create_feature_set: {e}"))
}

/// ListFlights: every flight listed.
pub async fn list_flights(client: &mut FlightClient) -> Vec<FlightInfo> {
    let call = async { client.list_flights("").await?.try_collect().await };
    within(CALL_TIMEOUT, "ListFlights", call)
        .await
        .unwrap_or_else(|e| panic!("ListFlights: {e}"))
}

/// Creates `name` as [`float_set_spec`](crate::fixtures::float_set_spec) and stores entities
/// `0..entities`, one row each, in batches of 10,000 (the load benchmarks' data).
pub async fn fill_float_set(client: &mut FlightClient, name: &str, entities: i64) {
    create_set(client, &crate::fixtures::float_set_spec(name).to_string()).await;
    let batches = (0..entities)
        .step_by(10_000)
        .map(|first| crate::fixtures::float_batch(first, 10_000.min((entities - first) as usize)))
        .collect();
    put_ok(client, name, batches).await;
}

/// DoPut of raw Flight messages: the PutResults, and the status that ended the call.
pub async fn put_messages(
    client: &mut FlightClient,
    messages: impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
) -> (Vec<PutResult>, Result<(), tonic::Status>) {
    let call = async {
        let mut results = Vec::new();
        let mut responses = match client.do_put(messages).await {
            Ok(responses) => responses,
            Err(e) => return (results, Err(to_status(e))),
        };
        while let Some(next) = responses.next().await {
            match next {
                Ok(result) => results.push(result),
                Err(e) => return (results, Err(to_status(e))),
            }
        }
        (results, Ok(()))
    };
    within(CALL_TIMEOUT, "DoPut", call).await
}

/// The Flight messages of `batches` for `set` (a path descriptor).
pub fn put_data(
    set: &str,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> impl Stream<Item = Result<FlightData, FlightError>> + Send + 'static {
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![set.to_string()])))
        .build(batches)
}

/// DoPut of `batches` into `set`: the acknowledgements, and the error that ended the call.
pub async fn put(
    client: &mut FlightClient,
    set: &str,
    batches: Vec<RecordBatch>,
) -> (Vec<Value>, Option<tonic::Status>) {
    let data = put_data(set, futures::stream::iter(batches.into_iter().map(Ok)));
    let (results, status) = put_messages(client, data).await;
    let acks = results
        .iter()
        .map(|r| serde_json::from_slice(&r.app_metadata).expect("a JSON acknowledgement"))
        .collect();
    (acks, status.err())
}

/// [`put`] that must be stored whole: every row acknowledged (the encoder may split a large
/// batch into several messages, each acknowledged on its own). Its acknowledgements.
pub async fn put_ok(client: &mut FlightClient, set: &str, batches: Vec<RecordBatch>) -> Vec<Value> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let (acks, error) = put(client, set, batches).await;
    assert!(error.is_none(), "DoPut to {set} failed: {error:?}");
    let acknowledged: u64 = acks
        .iter()
        .map(|ack| ack["rows"].as_u64().expect("rows in an acknowledgement"))
        .sum();
    assert_eq!(
        acknowledged, rows as u64,
        "every row put into {set} acknowledged"
    );
    acks
}

/// Collects a stream of record batches (DoGet, DoExchange answers) within [`CALL_TIMEOUT`].
pub async fn collect(
    stream: impl Stream<Item = Result<RecordBatch, FlightError>>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    within(
        CALL_TIMEOUT,
        "reading the answer stream",
        stream.try_collect(),
    )
    .await
    .map_err(to_status)
}

/// DoGet of a JSON `ticket`: every batch of the answer.
pub async fn get(
    client: &mut FlightClient,
    ticket: Value,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let stream = within(
        CALL_TIMEOUT,
        "DoGet",
        client.do_get(Ticket::new(ticket.to_string())),
    )
    .await
    .map_err(to_status)?;
    collect(stream).await
}

/// DoGet of a JSON `ticket`: the number of rows; panics on an error.
pub async fn get_rows(client: &mut FlightClient, ticket: Value) -> usize {
    let batches = get(client, ticket.clone())
        .await
        .unwrap_or_else(|e| panic!("DoGet {ticket}: {e}"));
    rows(&batches)
}

/// DoExchange of a command descriptor with `batches` on `client`: the answer's batches.
pub async fn exchange_on(
    client: &mut FlightClient,
    command: &Value,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let stream = within(CALL_TIMEOUT, "DoExchange", client.do_exchange(data))
        .await
        .map_err(to_status)?;
    collect(stream).await
}

/// DoExchange of a training data `command` with `batches` of entity rows, on a new connection.
pub async fn exchange(
    server: &TestServer,
    command: Value,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    exchange_on(&mut server.flight().await, &command, batches).await
}

/// Load for benchmarks: `clients` connections to `address`, each sending DoGets one after
/// another for `duration` (client `c`'s `n`th ticket is `ticket(c * 1_000_000 + n)`); the
/// number of DoGets answered in all.
pub async fn closed_loop_gets(
    address: &str,
    clients: usize,
    duration: Duration,
    ticket: impl Fn(usize) -> Ticket + Clone + Send + 'static,
) -> usize {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = connect(address).await;
        let ticket = ticket.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut done = 0usize;
            while started.elapsed() < duration {
                let answer = client.do_get(ticket(c * 1_000_000 + done)).await;
                collect(answer.expect("a DoGet answer"))
                    .await
                    .expect("a whole DoGet answer");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("a load client");
    }
    total
}

/// All `batches` as one.
pub fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).expect("batches of one schema")
}

/// The rows of all `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
