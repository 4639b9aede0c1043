//! The cost of trace export on online reads: 1-entity online DoGets (16 float32 features,
//! 100,000 entities stored) with export off and on, at the default sampling
//! (`parentbased_always_on`: every request is a sampled root span, plus its index lookup
//! child), exporting over OTLP/gRPC to a receiver in this process that drops what it gets.
//! Logging is on at the default level (info), as in production. Off and on alternate, a fresh
//! server each round on the same data, to spread drift over both.
//!
//! `cargo bench -p featherstore-server --bench tracing_overhead`

#[allow(dead_code)] // shared with the other benches
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::{FlightClient, Ticket};
use featherstore_server::config::{Backend, Config, OtlpProtocol};
use featherstore_server::telemetry::logging;
use futures::TryStreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;

const ENTITIES: i64 = 100_000;
const ROUNDS: usize = 3;
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

async fn receiver() -> (SocketAddr, Arc<AtomicU64>) {
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
    let batches: Vec<_> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

struct Round {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
}

async fn measure(config: &Config) -> Round {
    let server = featherstore_server::start(config).await.expect("server starts");
    let mut client = support::client(&server).await;
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
    let mut tasks = Vec::new();
    for c in 0..THROUGHPUT_CLIENTS {
        let mut client = support::client(&server).await;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut done = 0usize;
            while started.elapsed() < THROUGHPUT_TIME {
                read(&mut client, ticket(c * 1_000_000 + done)).await;
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    server.shutdown().await;
    Round {
        p50_ms: support::percentile(&times, 0.5),
        p99_ms: support::percentile(&times, 0.99),
        rps: total as f64 / THROUGHPUT_TIME.as_secs_f64(),
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
        let server = featherstore_server::start(&off).await.expect("server starts");
        let mut client = support::client(&server).await;
        support::create_set(&mut client, "bench").await;
        let batches = (0..ENTITIES)
            .step_by(10_000)
            .map(|first| support::batch(first, 10_000))
            .collect();
        support::put(&mut client, "bench", batches).await;
        server.shutdown().await;
    }
    let (addr, received) = receiver().await;
    let mut on = off.clone();
    on.tracing.endpoint = Some(format!("http://{addr}"));
    on.tracing.protocol = OtlpProtocol::Grpc;

    println!(
        "online DoGet, 1 entity, {} float32 features, {ENTITIES} entities; trace export off vs on \
         (OTLP/gRPC, sampler parentbased_always_on); load average {}",
        support::FEATURES,
        support::load_average()
    );
    println!(
        "{:<10} {:>9} {:>9} {:>12}",
        "round", "p50 ms", "p99 ms", "requests/s"
    );
    let (mut off_rounds, mut on_rounds) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for (name, config, rounds) in [("off", &off, &mut off_rounds), ("on", &on, &mut on_rounds)]
        {
            let r = measure(config).await;
            println!(
                "{:<10} {:>9.3} {:>9.3} {:>12.0}",
                format!("{name} #{}", round + 1),
                r.p50_ms,
                r.p99_ms,
                r.rps
            );
            rounds.push(r);
        }
    }
    let summary = |rounds: &[Round]| {
        (
            median(rounds.iter().map(|r| r.p50_ms).collect()),
            median(rounds.iter().map(|r| r.p99_ms).collect()),
            median(rounds.iter().map(|r| r.rps).collect()),
        )
    };
    let (off_p50, off_p99, off_rps) = summary(&off_rounds);
    let (on_p50, on_p99, on_rps) = summary(&on_rounds);
    println!("medians of {ROUNDS} rounds:");
    println!("{:<10} {off_p50:>9.3} {off_p99:>9.3} {off_rps:>12.0}", "off");
    println!("{:<10} {on_p50:>9.3} {on_p99:>9.3} {on_rps:>12.0}", "on");
    println!(
        "on/off: p50 latency x{:.3}, p99 latency x{:.3}, throughput x{:.3} \
         ({:.1}% fewer requests/s); spans received: {}",
        on_p50 / off_p50,
        on_p99 / off_p99,
        on_rps / off_rps,
        (1.0 - on_rps / off_rps) * 100.0,
        received.load(Ordering::Relaxed)
    );
    println!("load average after: {}", support::load_average());
}
