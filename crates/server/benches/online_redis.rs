//! Online reads over HTTP (`POST /v1/online`, JSON), the memory backend and the Redis backend
//! (a real `redis-server` on loopback) side by side in one run: 1 and 100 entities of
//! 16 float32 features, 1 and 16 concurrent clients; p50 and p99 per case.
//!
//! `cargo bench -p featherstore-server --bench online_redis` (needs `redis-server`:
//! scripts/setup-redis.sh)

use std::time::Instant;

use featherstore_server::config::{Backend, OnlineBackend};
use featherstore_testkit::fixtures::{load_average, percentile};
use featherstore_testkit::redis::Redis;
use featherstore_testkit::{flight, TestServer};

const ENTITIES: i64 = 10_000;
const REQUESTS_PER_CLIENT: usize = 500;
const WARM_UP_REQUESTS: usize = 200;

fn body(entities: usize, seed: usize) -> String {
    let keys: Vec<i64> = (0..entities)
        .map(|i| ((seed * 7919 + i * 104_729) as i64) % ENTITIES)
        .collect();
    serde_json::json!({"feature_set": "bench", "entities": keys}).to_string()
}

/// (p50 ms, p99 ms, requests/s) of `clients` clients each sending requests one after another.
async fn measure(base: &str, entities: usize, clients: usize, requests: usize) -> (f64, f64, f64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let url = format!("{base}/v1/online");
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut times = Vec::with_capacity(requests);
                for i in 0..requests {
                    let body = body(entities, client * requests + i);
                    let sent = Instant::now();
                    let response = http.post(&url).body(body).send().await.unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.unwrap();
                    times.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap());
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99), rate)
}

#[tokio::main]
async fn main() {
    let redis = Redis::single();
    let url = redis.url();
    let memory = TestServer::start(Backend::Duckdb).await;
    let on_redis = TestServer::start_with(Backend::Duckdb, move |config| {
        config.online.backend = OnlineBackend::Redis;
        config.online.redis.url = url;
    })
    .await;
    for server in [&memory, &on_redis] {
        flight::fill_float_set(&mut server.flight().await, "bench", ENTITIES).await;
    }
    println!("load: {}", load_average());
    println!("backend  entities  clients  p50_ms  p99_ms  requests/s");
    for entities in [1, 100] {
        for clients in [1, 16] {
            for (name, server) in [("memory", &memory), ("redis", &on_redis)] {
                // Warm-up: connections, caches.
                measure(&server.http, entities, 1, WARM_UP_REQUESTS).await;
                let (p50, p99, rate) =
                    measure(&server.http, entities, clients, REQUESTS_PER_CLIENT).await;
                println!(
                    "{name:<8} {entities:>8}  {clients:>7}  {p50:>6.3}  {p99:>6.3}  {rate:>10.0}"
                );
            }
        }
    }
    println!("load: {}", load_average());
}
