//! The cost of trace export on online reads: 1-entity online DoGets (16 float32 features,
//! 100,000 entities stored) with export off and on, at the default sampling
//! (`parentbased_traceidratio`, 0.1: a tenth of these requests, which carry no caller trace,
//! are sampled; `OTEL_TRACES_SAMPLER=parentbased_always_on` for all), exporting with the default
//! protocol (OTLP HTTP/protobuf; `BENCH_OTLP=grpc` for gRPC) to a receiver in this process that
//! drops what it gets without decoding it. Logging is on at the default level (info), as in
//! production. Off and on alternate, a fresh server each round on the same data, to spread
//! drift over both. The standard `OTEL_*` variables apply (e.g. `OTEL_TRACES_SAMPLER`).
//!
//! `cargo bench -p featherstore-server --bench tracing_overhead`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::{FlightClient, Ticket};
use featherstore_server::config::{Backend, Config, OtlpProtocol};
use featherstore_server::telemetry::{logging, traces};
use featherstore_testkit::fixtures::{load_average, percentile, FLOAT_FEATURES};
use featherstore_testkit::flight;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;

const ENTITIES: i64 = 100_000;
const ROUNDS: usize = 7;
const LATENCY_REQUESTS: usize = 4_000;
const THROUGHPUT_CLIENTS: usize = 4;
const THROUGHPUT_TIME: Duration = Duration::from_secs(3);

/// Counts the spans it receives and drops them.
#[derive(Clone, Default)]
struct DropReceiver(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for DropReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP/HTTP: takes the body and drops it; counts the bytes.
async fn http_receiver() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let bytes = received.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            // An empty body is an empty ExportTraceServiceResponse.
            [(http::header::CONTENT_TYPE, "application/x-protobuf")]
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, received)
}

/// OTLP/gRPC: tonic's TraceService (which decodes); counts the spans.
async fn grpc_receiver() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = DropReceiver::default();
    let received = receiver.0.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

fn ticket(seed: usize) -> Ticket {
    let key = ((seed * 104_729) as i64) % ENTITIES;
    let ticket = serde_json::json!({"type": "online", "feature_set": "bench", "entities": [key]});
    Ticket::new(ticket.to_string())
}

async fn read(client: &mut FlightClient, ticket: Ticket) -> usize {
    let batches = flight::collect(client.do_get(ticket).await.unwrap()).await;
    flight::rows(&batches.unwrap())
}

async fn connect(server: &featherstore_server::RunningServer) -> FlightClient {
    flight::connect(&format!("http://{}", server.flight_addr)).await
}

struct Round {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    /// CPU time of the server's threads (its runtime, and the span exporter's thread) per
    /// request in the throughput phase: unlike requests/s, hardly moved by other processes.
    cpu_us: f64,
    /// The part of it on the span exporter's thread.
    export_cpu_us: f64,
}

/// The server runs on a runtime of its own, whose threads are named so, to measure its CPU
/// apart from the clients' and the receiver's.
const SERVER_THREADS: &str = "fs-server";
/// The OpenTelemetry batch span processor's thread (names are cut to 15 bytes).
const EXPORTER_THREAD: &str = "OpenTelemetry";

/// User + system CPU time so far of the server's threads and of the exporter's thread among
/// them, in microseconds (10 ms ticks).
fn server_cpu_us() -> (f64, f64) {
    let (mut total, mut exporter) = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, _)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, name)| name);
        if !(name.starts_with(SERVER_THREADS) || name.starts_with(EXPORTER_THREAD)) {
            continue;
        }
        let ticks = featherstore_testkit::process::stat_cpu_ticks(&stat).unwrap_or(0);
        let us = ticks as f64 * 10_000.0;
        total += us;
        if name.starts_with(EXPORTER_THREAD) {
            exporter += us;
        }
    }
    (total, exporter)
}

async fn measure(runtime: &tokio::runtime::Runtime, config: &Config) -> Round {
    let config = config.clone();
    let server = runtime
        .spawn(async move { featherstore_server::start(&config).await })
        .await
        .unwrap()
        .expect("server starts");
    let mut client = connect(&server).await;
    for i in 0..500 {
        read(&mut client, ticket(i)).await; // warm up
    }
    let mut times = Vec::with_capacity(LATENCY_REQUESTS);
    for i in 0..LATENCY_REQUESTS {
        let started = Instant::now();
        assert_eq!(read(&mut client, ticket(i)).await, 1);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let address = format!("http://{}", server.flight_addr);
    let cpu_before = server_cpu_us();
    let total =
        flight::closed_loop_gets(&address, THROUGHPUT_CLIENTS, THROUGHPUT_TIME, ticket).await;
    let cpu_after = server_cpu_us();
    let cpu_us = (cpu_after.0 - cpu_before.0) / total as f64;
    let export_cpu_us = (cpu_after.1 - cpu_before.1) / total as f64;
    runtime.spawn(server.shutdown()).await.unwrap();
    Round {
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        rps: total as f64 / THROUGHPUT_TIME.as_secs_f64(),
        cpu_us,
        export_cpu_us,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    // As `featherstore serve` does, at the default level; this bench's own output is stdout.
    logging::init(&Default::default());
    let dir = tempfile::tempdir().unwrap();
    let off = Config::ephemeral(dir.path(), Backend::Duckdb);
    {
        let server = featherstore_testkit::server::start_config(&off).await;
        let mut client = connect(&server).await;
        flight::fill_float_set(&mut client, "bench", ENTITIES).await;
        server.shutdown().await;
    }
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let grpc = std::env::var("BENCH_OTLP").is_ok_and(|p| p == "grpc");
    let (addr, received) = if grpc {
        grpc_receiver().await
    } else {
        http_receiver().await
    };
    let mut on = off.clone();
    on.tracing.endpoint = Some(format!("http://{addr}"));
    on.tracing.protocol = if grpc {
        OtlpProtocol::Grpc
    } else {
        OtlpProtocol::HttpProtobuf
    };

    println!(
        "online DoGet, 1 entity, {} float32 features, {ENTITIES} entities; trace export off vs on \
         (OTLP {}, sampler {}); load average {}",
        FLOAT_FEATURES,
        if grpc { "gRPC" } else { "HTTP/protobuf" },
        std::env::var("OTEL_TRACES_SAMPLER").map_or_else(
            |_| format!(
                "{} {:?}",
                on.tracing.sampler,
                on.tracing.sampler_arg.unwrap_or(1.0)
            ),
            |s| format!(
                "{s} {}",
                std::env::var("OTEL_TRACES_SAMPLER_ARG").unwrap_or_default()
            ),
        ),
        load_average()
    );
    println!(
        "{:<10} {:>9} {:>9} {:>12} {:>18} {:>12}",
        "round", "p50 ms", "p99 ms", "requests/s", "server CPU µs/req", "of it export"
    );
    let (mut off_rounds, mut on_rounds) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Off first in even rounds, on first in odd ones: neither gains from going second.
        let mut order = [("off", &off), ("on", &on)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (name, config) in order {
            let r = measure(&server_runtime, config).await;
            println!(
                "{:<10} {:>9.3} {:>9.3} {:>12.0} {:>18.1} {:>12.1}",
                format!("{name} #{}", round + 1),
                r.p50_ms,
                r.p99_ms,
                r.rps,
                r.cpu_us,
                r.export_cpu_us
            );
            if name == "off" {
                off_rounds.push(r);
            } else {
                on_rounds.push(r);
            }
        }
    }
    let summary = |rounds: &[Round]| {
        (
            median(rounds.iter().map(|r| r.p50_ms).collect()),
            median(rounds.iter().map(|r| r.p99_ms).collect()),
            median(rounds.iter().map(|r| r.rps).collect()),
            median(rounds.iter().map(|r| r.cpu_us).collect()),
        )
    };
    let (off_p50, off_p99, off_rps, off_cpu) = summary(&off_rounds);
    let (on_p50, on_p99, on_rps, on_cpu) = summary(&on_rounds);
    println!("medians of {ROUNDS} rounds:");
    println!(
        "{:<10} {off_p50:>9.3} {off_p99:>9.3} {off_rps:>12.0} {off_cpu:>18.1}",
        "off"
    );
    println!(
        "{:<10} {on_p50:>9.3} {on_p99:>9.3} {on_rps:>12.0} {on_cpu:>18.1}",
        "on"
    );
    // Each round's on/off pair ran back to back: the median of the pairs' ratios is less moved
    // by the machine's other work than the ratio of the medians.
    let paired = |value: fn(&Round) -> f64| {
        median(
            on_rounds
                .iter()
                .zip(&off_rounds)
                .map(|(on, off)| value(on) / value(off))
                .collect(),
        )
    };
    println!(
        "on/off, median of paired rounds: p50 latency x{:.3}, p99 latency x{:.3}, throughput \
         x{:.3} ({:.1}% fewer requests/s), server CPU per request x{:.3}; {} received: {}",
        paired(|r| r.p50_ms),
        paired(|r| r.p99_ms),
        paired(|r| r.rps),
        (1.0 - paired(|r| r.rps)) * 100.0,
        paired(|r| r.cpu_us),
        if grpc { "spans" } else { "bytes" },
        received.load(Ordering::Relaxed)
    );
    // The request path's own cost of a span, without the network: create a Flight request
    // span, record its attributes, close it (export happens on the exporter's thread).
    let metadata = tonic::metadata::MetadataMap::new();
    let span_cost = |n: usize| {
        let started = Instant::now();
        for i in 0..n {
            let span = traces::flight_span("do_get", &metadata);
            span.record("feature_set", "bench");
            span.record("entities", 1i64);
            span.record("rows", i as i64 & 1);
            traces::finish(&span, "ok", None, Duration::from_micros(100));
        }
        started.elapsed().as_secs_f64() * 1e9 / n as f64
    };
    let off_ns = median((0..5).map(|_| span_cost(20_000)).collect());
    let config = on.clone();
    let server = server_runtime
        .spawn(async move { featherstore_server::start(&config).await })
        .await
        .unwrap()
        .expect("server starts");
    let on_ns = median((0..5).map(|_| span_cost(20_000)).collect());
    server_runtime.spawn(server.shutdown()).await.unwrap();
    println!(
        "request span on the request path: {off_ns:.0} ns with export off, {on_ns:.0} ns on \
         (+{:.1} µs per request)",
        (on_ns - off_ns) / 1e3
    );
    println!("load average after: {}", load_average());
    server_runtime.shutdown_background();
}
