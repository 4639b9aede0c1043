//! Online DoGet latency and throughput, 1 and 100 entities × 16 float32 features, beside an
//! empty DoGet (no entities) on the same server as the baseline.
//!
//! `cargo bench -p featherstore-server --bench online_read`

use std::time::{Duration, Instant};

use arrow_flight::{FlightClient, Ticket};
use featherstore_server::config::Backend;
use featherstore_testkit::fixtures::{load_average, percentile, FLOAT_FEATURES};
use featherstore_testkit::{flight, TestServer};

const ENTITIES: i64 = 100_000;
const LATENCY_REQUESTS: usize = 5_000;
const THROUGHPUT_CLIENTS: usize = 4;
const THROUGHPUT_TIME: Duration = Duration::from_secs(3);

fn ticket(entities: usize, seed: usize) -> Ticket {
    let keys: Vec<i64> = (0..entities)
        .map(|i| ((seed * 7919 + i * 104_729) as i64) % ENTITIES)
        .collect();
    let ticket = serde_json::json!({"type": "online", "feature_set": "bench", "entities": keys});
    Ticket::new(ticket.to_string())
}

async fn read(client: &mut FlightClient, ticket: Ticket) -> usize {
    let batches = flight::collect(client.do_get(ticket).await.unwrap()).await;
    flight::rows(&batches.unwrap())
}

/// (p50 ms, p99 ms) of sequential requests.
async fn latency(client: &mut FlightClient, entities: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(LATENCY_REQUESTS);
    for i in 0..LATENCY_REQUESTS {
        let ticket = ticket(entities, i);
        let started = Instant::now();
        assert_eq!(read(client, ticket).await, entities);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Requests per second with concurrent clients, each on its own connection.
async fn throughput(server: &TestServer, entities: usize) -> f64 {
    let total = flight::closed_loop_gets(
        &server.flight_addr,
        THROUGHPUT_CLIENTS,
        THROUGHPUT_TIME,
        move |seed| ticket(entities, seed),
    )
    .await;
    total as f64 / THROUGHPUT_TIME.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let server = TestServer::start(Backend::Duckdb).await;
    let mut client = server.flight().await;
    flight::fill_float_set(&mut client, "bench", ENTITIES).await;
    for i in 0..500 {
        read(&mut client, ticket(100, i)).await; // warm up connections and allocator
    }

    println!(
        "online DoGet, {} float32 features, {ENTITIES} entities stored; load average {}",
        FLOAT_FEATURES,
        load_average()
    );
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>12}",
        "request", "p50 ms", "p99 ms", "p50 ratio", "requests/s"
    );
    let (base_p50, base_p99) = latency(&mut client, 0).await;
    let base_rps = throughput(&server, 0).await;
    println!(
        "{:<22} {:>9.3} {:>9.3} {:>10} {:>12.0}",
        "empty (baseline)", base_p50, base_p99, "1.00", base_rps
    );
    for entities in [1, 100] {
        let (p50, p99) = latency(&mut client, entities).await;
        let rps = throughput(&server, entities).await;
        println!(
            "{:<22} {:>9.3} {:>9.3} {:>10.2} {:>12.0}",
            format!("{entities} entities"),
            p50,
            p99,
            p50 / base_p50,
            rps
        );
    }
    server.shutdown().await;
}
