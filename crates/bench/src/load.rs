//! Load generation: one connection per worker, closed loop (each worker sends its next request
//! when the last one is answered) or open loop at a fixed rate (latency counted from the
//! request's intended send time, so time spent queued behind slow answers shows).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::{FlightClient, Ticket};
use bytes::Bytes;
use featherstore_client::Client;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::BenchError;

/// Where the server listens, as the client sees it.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port` of the Flight port.
    pub flight: String,
    /// `http://host:port` of the HTTP port.
    pub http: String,
    /// Bearer token sent on every request, if any.
    pub token: Option<String>,
}

impl Target {
    pub async fn client(&self) -> Result<Client, BenchError> {
        let mut builder = Client::builder(self.flight.clone());
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        Ok(builder.connect().await?)
    }

    fn authority(&self) -> &str {
        self.http
            .trim_start_matches("http://")
            .trim_end_matches('/')
    }

    async fn http_connection(&self) -> Result<SendRequest<Full<Bytes>>, BenchError> {
        let stream = tokio::net::TcpStream::connect(self.authority()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(BenchError::Http)?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// `GET path` on the HTTP port, answering the body (an error unless 200).
    pub async fn http_get(&self, path: &str) -> Result<Bytes, BenchError> {
        let mut connection = self.http_connection().await?;
        http_send(&mut connection, self, &HttpCall::Get(path.into())).await
    }
}

/// One request of a case; `Many` issues its parts together (one connection each) and counts
/// as one request that ends when the last part is answered.
#[derive(Clone, Debug)]
pub enum Call {
    Flight(Ticket),
    Http(HttpCall),
    Many(Vec<Call>),
}

#[derive(Clone, Debug)]
pub enum HttpCall {
    Get(String),
    PostJson(String, Bytes),
}

impl Call {
    fn width(&self) -> usize {
        match self {
            Call::Many(parts) => parts.len(),
            _ => 1,
        }
    }
}

/// A worker's connections: enough of each kind for the widest call of its case.
struct Connections {
    flight: Vec<FlightClient>,
    http: Vec<SendRequest<Full<Bytes>>>,
}

impl Connections {
    async fn open(target: &Target, calls: &[Call]) -> Result<Self, BenchError> {
        let width = calls.iter().map(Call::width).max().unwrap_or(1);
        let flight_wanted = calls.iter().any(|call| call.uses_flight());
        let http_wanted = calls.iter().any(|call| call.uses_http());
        let mut connections = Connections {
            flight: Vec::new(),
            http: Vec::new(),
        };
        for _ in 0..width {
            if flight_wanted {
                connections
                    .flight
                    .push(target.client().await?.flight_client());
            }
            if http_wanted {
                connections.http.push(target.http_connection().await?);
            }
        }
        Ok(connections)
    }
}

impl Call {
    fn uses_flight(&self) -> bool {
        match self {
            Call::Flight(_) => true,
            Call::Http(_) => false,
            Call::Many(parts) => parts.iter().any(Call::uses_flight),
        }
    }

    fn uses_http(&self) -> bool {
        match self {
            Call::Flight(_) => false,
            Call::Http(_) => true,
            Call::Many(parts) => parts.iter().any(Call::uses_http),
        }
    }
}

async fn flight_get(client: &mut FlightClient, ticket: &Ticket) -> Result<usize, BenchError> {
    let batches: Vec<_> = client.do_get(ticket.clone()).await?.try_collect().await?;
    Ok(batches.iter().map(|batch| batch.num_rows()).sum())
}

async fn http_send(
    connection: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    call: &HttpCall,
) -> Result<Bytes, BenchError> {
    let (method, path, body) = match call {
        HttpCall::Get(path) => (http::Method::GET, path, Bytes::new()),
        HttpCall::PostJson(path, body) => (http::Method::POST, path, body.clone()),
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(path.as_str())
        .header(http::header::HOST, target.authority())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = &target.token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(body))?;
    connection.ready().await.map_err(BenchError::Http)?;
    let response = connection
        .send_request(request)
        .await
        .map_err(BenchError::Http)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(BenchError::Http)?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(BenchError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

/// Sends one call; answers the rows of its Flight answers (HTTP answers count as 0: the
/// client does not parse them, as a lean caller would not before using them).
async fn send(
    connections: &mut Connections,
    target: &Target,
    call: &Call,
) -> Result<usize, BenchError> {
    match call {
        Call::Flight(ticket) => flight_get(&mut connections.flight[0], ticket).await,
        Call::Http(call) => http_send(&mut connections.http[0], target, call)
            .await
            .map(|_| 0),
        Call::Many(parts) => {
            let mut flight = connections.flight.iter_mut();
            let mut http = connections.http.iter_mut();
            let mut pending = Vec::with_capacity(parts.len());
            for part in parts {
                let future: futures::future::BoxFuture<'_, Result<usize, BenchError>> = match part {
                    Call::Flight(ticket) => {
                        let client = flight.next().ok_or(BenchError::Connections)?;
                        Box::pin(flight_get(client, ticket))
                    }
                    Call::Http(call) => {
                        let connection = http.next().ok_or(BenchError::Connections)?;
                        Box::pin(
                            async move { http_send(connection, target, call).await.map(|_| 0) },
                        )
                    }
                    Call::Many(_) => return Err(BenchError::Connections),
                };
                pending.push(future);
            }
            let rows = futures::future::try_join_all(pending).await?;
            Ok(rows.into_iter().sum())
        }
    }
}

/// How a case sends its requests.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Closed,
    /// Requests per second over all workers.
    Open {
        rate: f64,
    },
}

/// Latency figures of one case, milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The first error's message, if any request failed.
    pub first_error: Option<String>,
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

struct WorkerResult {
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `calls` (cycled, each worker from its own offset) on `concurrency` connections for
/// `duration`, after a short unrecorded warm-up per worker.
pub async fn run(
    target: &Target,
    calls: Arc<Vec<Call>>,
    concurrency: usize,
    mode: Mode,
    duration: Duration,
) -> Result<Latency, BenchError> {
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        workers.push(Connections::open(target, &calls).await?);
    }
    for (w, connections) in workers.iter_mut().enumerate() {
        for i in 0..3 {
            send(connections, target, &calls[(w + i) % calls.len()]).await?;
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let total = match mode {
        Mode::Closed => usize::MAX,
        Mode::Open { rate } => (rate * duration.as_secs_f64()).ceil() as usize,
    };
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for (w, mut connections) in workers.into_iter().enumerate() {
        let target = target.clone();
        let calls = calls.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = WorkerResult {
                histogram: new_histogram(),
                errors: 0,
                first_error: None,
            };
            let mut own = w * 7919;
            loop {
                let (intended, call) = match mode {
                    Mode::Closed => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        own += 1;
                        (now, &calls[own % calls.len()])
                    }
                    Mode::Open { rate } => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let intended = started + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(intended.into()).await;
                        (intended, &calls[i % calls.len()])
                    }
                };
                let outcome = send(&mut connections, &target, call).await;
                let micros = intended.elapsed().as_micros().max(1) as u64;
                result.histogram.saturating_record(micros);
                if let Err(e) = outcome {
                    result.errors += 1;
                    result.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            result
        }));
    }
    let mut histogram = new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await?;
        histogram
            .add(&result.histogram)
            .expect("same histogram bounds");
        errors += result.errors;
        first_error = first_error.or(result.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1e3;
    Ok(Latency {
        requests: histogram.len(),
        errors,
        seconds,
        requests_per_s: histogram.len() as f64 / seconds,
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
        first_error,
    })
}

/// Sends `call` once on fresh connections and answers its rows (Flight) to check a case
/// before timing it.
pub async fn probe(target: &Target, call: &Call) -> Result<usize, BenchError> {
    let mut connections = Connections::open(target, std::slice::from_ref(call)).await?;
    send(&mut connections, target, call).await
}

/// `POST path` with a JSON body on a fresh connection, answering the body (an error unless
/// 200).
pub async fn probe_http(target: &Target, path: &str, body: Bytes) -> Result<Bytes, BenchError> {
    let mut connection = target.http_connection().await?;
    http_send(
        &mut connection,
        target,
        &HttpCall::PostJson(path.into(), body),
    )
    .await
}
