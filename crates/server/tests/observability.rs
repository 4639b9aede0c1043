//! Traces and metrics end to end: real OTLP receivers (gRPC: opentelemetry-proto's tonic
//! TraceService; HTTP/protobuf: an axum route) started here, servers exporting to them,
//! requests carrying a W3C `traceparent`, then the received spans checked (names, attributes,
//! parents, the propagated trace id); and `/metrics` parsed as Prometheus text.
//!
//! A test binary of its own with one test function: the tracing subscriber and the running
//! trace export are process-wide, so nothing else may run beside it. (The Parquet activity
//! counters are process-wide too: only the Parquet part at the end moves them.)

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arrow_flight::FlightClient;
use axum::body::Bytes;
use featherstore_server::config::{Backend, OtlpProtocol};
use featherstore_testkit::{action, flight, put, user_batch, TestServer, USER_SPEC};
use futures::TryStreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use prost::Message;
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service: Option<String>,
    span: ProtoSpan,
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Received>>>);

impl Collected {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service = resource_spans.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| value_text(kv.value.as_ref()?.value.as_ref()?))
            });
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn grpc_receiver() -> (SocketAddr, Collected) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collected = Collected::default();
    let service = TraceServiceServer::new(collected.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, collected)
}

async fn http_receiver() -> (SocketAddr, Collected) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collected = Collected::default();
    let state = collected.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| async move {
            assert_eq!(
                headers.get(http::header::CONTENT_TYPE).unwrap(),
                "application/x-protobuf"
            );
            state.add(ExportTraceServiceRequest::decode(body).unwrap());
            (
                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, collected)
}

fn value_text(value: &AnyValue) -> Option<String> {
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

fn attr(span: &ProtoSpan, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| value_text(kv.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A caller's trace: `traceparent` with trace id `trace` and span id `span`.
struct Caller {
    trace: String,
    span: String,
}

impl Caller {
    fn new(n: u8) -> Caller {
        Caller {
            trace: format!(
                "{:032x}",
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700u128 + n as u128
            ),
            span: format!("{:016x}", 0x00f0_67aa_0ba9_0200u64 + n as u64),
        }
    }

    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace, self.span)
    }
}

fn set_caller(client: &mut FlightClient, caller: &Caller) {
    client
        .metadata_mut()
        .insert("traceparent", caller.traceparent().parse().unwrap());
}

/// The spans of one trace, by name; panics unless exactly one span has each name asked for.
struct Trace(Vec<ProtoSpan>);

impl Trace {
    fn of(spans: &[Received], caller: &Caller) -> Trace {
        Trace(
            spans
                .iter()
                .filter(|r| hex(&r.span.trace_id) == caller.trace)
                .map(|r| r.span.clone())
                .collect(),
        )
    }

    fn one(&self, name: &str) -> &ProtoSpan {
        let found: Vec<_> = self.0.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one span {name:?} in {:#?}", self.names());
        found[0]
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|s| s.name.as_str()).collect()
    }

    /// The server span: a child of the caller's span, of kind SERVER.
    fn server(&self, name: &str, caller: &Caller) -> &ProtoSpan {
        let span = self.one(name);
        assert_eq!(
            hex(&span.parent_span_id),
            caller.span,
            "{name} joins the caller's span"
        );
        assert_eq!(
            span.kind,
            SpanKind::Server as i32,
            "{name} is a server span"
        );
        let mut keys: Vec<_> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(
            keys.len(),
            before,
            "each attribute once: {:?}",
            span.attributes
        );
        for key in ["rows", "entities", "http.response.status_code"] {
            if let Some(kv) = span.attributes.iter().find(|kv| kv.key == key) {
                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                assert!(
                    matches!(value, Some(AnyValue::IntValue(_))),
                    "{key} is an integer"
                );
            }
        }
        span
    }

    /// A child span of `parent`.
    fn child(&self, name: &str, parent: &ProtoSpan) -> &ProtoSpan {
        let span = self.one(name);
        assert_eq!(
            span.parent_span_id, parent.span_id,
            "{name} is a child of {}",
            parent.name
        );
        span
    }
}

fn assert_attrs(span: &ProtoSpan, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            attr(span, key).as_deref(),
            Some(*value),
            "attribute {key} of {}: {:?}",
            span.name,
            span.attributes
        );
    }
}

/// Parsed Prometheus text: sample values by name and labels, and the declared family types.
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("a sample line");
            let name = line[..name_end].to_string();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices();
                loop {
                    let (start, c) = chars.next().expect("unterminated labels");
                    if c == '}' {
                        rest = &inner[start + 1..];
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let eq = inner[start..].find('=').expect("label=") + start;
                    let label = inner[start..eq].to_string();
                    let (_, quote) = chars.nth(eq - start).unwrap();
                    assert_eq!(quote, '"', "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value") {
                            (_, '\\') => match chars.next().unwrap().1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            (_, '"') => break,
                            (_, other) => value.push(other),
                        }
                    }
                    labels.insert(label, value);
                }
            }
            let value = rest.trim();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("sample value in {line:?}")),
            };
            samples.push((name, labels, value));
        }
        Scrape { types, samples }
    }

    /// The family a sample belongs to (histogram series end in `_bucket`, `_sum`, `_count`).
    fn family_of<'a>(&self, sample: &'a str) -> Option<&'a str> {
        if self.types.contains_key(sample) {
            return Some(sample);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let family = sample.strip_suffix(suffix)?;
            (self.types.get(family).map(String::as_str) == Some("histogram")).then_some(family)
        })
    }

    fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let values = self.values(name, labels);
        assert_eq!(values.len(), 1, "one sample {name}{labels:?}");
        values[0]
    }

    /// Checks a histogram series: cumulative buckets ending in +Inf = count.
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> (f64, Vec<(f64, f64)>) {
        assert_eq!(self.types.get(name).map(String::as_str), Some("histogram"));
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == &format!("{name}_bucket")
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| {
                let le = l["le"].as_str();
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    *v,
                )
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative: {buckets:?}"
        );
        let count = self.value(&format!("{name}_count"), labels);
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
        (count, buckets)
    }
}

async fn scrape(server: &TestServer) -> Scrape {
    let text = server.metrics_text().await;
    let scrape = Scrape::parse(&text);
    for (name, _, _) in &scrape.samples {
        assert!(scrape.family_of(name).is_some(), "{name} has a # TYPE line");
    }
    scrape
}

async fn traced_server(endpoint: SocketAddr, protocol: OtlpProtocol) -> TestServer {
    TestServer::start_with(Backend::Duckdb, |config| {
        config.tracing.endpoint = Some(format!("http://{endpoint}"));
        config.tracing.protocol = protocol;
        config.tracing.service_name = "featherstore-test".into();
        // Every request (the default samples a tenth of those without a sampled caller).
        config.tracing.sampler = "parentbased_always_on".into();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_and_metrics() {
    // --- OTLP over gRPC: Flight and HTTP requests, each from its own caller trace.
    let (addr, grpc) = grpc_receiver().await;
    let server = traced_server(addr, OtlpProtocol::Grpc).await;
    let mut client = server.flight().await;
    let http = featherstore_testkit::http();

    let create = Caller::new(1);
    set_caller(&mut client, &create);
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();

    let put = Caller::new(2);
    set_caller(&mut client, &put);
    let batches = vec![
        user_batch(&[
            ("u1", Some(31), Some(0.5), 100),
            ("u2", Some(42), None, 100),
        ]),
        user_batch(&[("u3", Some(23), Some(0.1), 100)]),
    ];
    let (acks, error) = flight::put(&mut client, "user_features", batches).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(acks.len(), 2);

    let online = Caller::new(3);
    set_caller(&mut client, &online);
    let ticket = json!({"type": "online", "feature_set": "user_features", "entities": ["u1", "u3", "nobody"]});
    assert_eq!(flight::get_rows(&mut client, ticket).await, 3);

    let history = Caller::new(4);
    set_caller(&mut client, &history);
    let ticket = json!({"type": "history", "feature_set": "user_features"});
    assert_eq!(flight::get_rows(&mut client, ticket).await, 3);

    let http_online = Caller::new(5);
    let response = http
        .post(format!("{}/v1/online", server.http))
        .header("traceparent", http_online.traceparent())
        .json(&json!({"feature_set": "user_features", "entities": ["u2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let http_ingest = Caller::new(6);
    let response = http
        .post(format!("{}/v1/feature-sets/user_features/rows", server.http))
        .header("traceparent", http_ingest.traceparent())
        .json(&json!({"rows": [{"user_id": "u4", "event_timestamp": "2026-01-01T00:00:00Z", "age": 7}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let missing = Caller::new(7);
    let response = http
        .post(format!("{}/v1/online", server.http))
        .header("traceparent", missing.traceparent())
        .json(&json!({"feature_set": "nope", "entities": ["u1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let training = Caller::new(10);
    set_caller(&mut client, &training);
    let entity_rows = arrow::array::RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(arrow::array::StringArray::from(vec!["u1", "u2"])) as arrow::array::ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![
                200_000, 200_000,
            ])) as arrow::array::ArrayRef,
        ),
    ])
    .unwrap();
    let command = json!({"type": "training_data", "features": ["user_features:age"]});
    let out = flight::exchange_on(&mut client, &command, vec![entity_rows])
        .await
        .unwrap();
    assert_eq!(flight::rows(&out), 2);

    // A caller whose trace is not sampled: neither is the server's part of it.
    let unsampled = Caller::new(11);
    client.metadata_mut().insert(
        "traceparent",
        format!("00-{}-{}-00", unsampled.trace, unsampled.span)
            .parse()
            .unwrap(),
    );
    action(&mut client, "list_feature_sets", "{}")
        .await
        .unwrap();

    // A call without a traceparent starts a trace of its own.
    client.metadata_mut().remove("traceparent");
    client
        .list_flights(Vec::<u8>::new())
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();

    // --- Metrics, while the server runs.
    let metrics = scrape(&server).await;
    assert_eq!(
        metrics.value(
            "featherstore_requests_total",
            &[("api", "flight"), ("method", "do_get"), ("code", "ok")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value(
            "featherstore_requests_total",
            &[
                ("api", "http"),
                ("method", "POST /v1/online"),
                ("code", "not_found")
            ]
        ),
        1.0
    );
    let (count, buckets) = metrics.histogram(
        "featherstore_request_duration_seconds",
        &[("api", "flight"), ("method", "do_get")],
    );
    assert_eq!(count, 2.0);
    assert_eq!(buckets[0].0, 0.000025, "sub-millisecond buckets");
    assert_eq!(
        metrics.value(
            "featherstore_ingested_rows_total",
            &[("feature_set", "user_features")]
        ),
        4.0
    );
    assert!(
        metrics.value(
            "featherstore_ingested_bytes_total",
            &[("feature_set", "user_features")]
        ) > 0.0
    );
    assert_eq!(
        metrics.value(
            "featherstore_online_entities",
            &[("feature_set", "user_features")]
        ),
        4.0
    );
    assert!(
        metrics.value(
            "featherstore_online_index_memory_bytes",
            &[("feature_set", "user_features")]
        ) > 0.0
    );
    assert!(metrics.value("featherstore_storage_bytes", &[("backend", "duckdb")]) > 0.0);
    assert!(metrics.value("featherstore_storage_files", &[("backend", "duckdb")]) >= 1.0);
    // DuckDB keeps all sets in one file: no per-set storage series.
    assert!(metrics.values("featherstore_stored_bytes", &[]).is_empty());
    for api in ["flight", "http"] {
        assert_eq!(
            metrics.value("featherstore_requests_in_flight", &[("api", api)]),
            0.0
        );
    }
    let (lookups, buckets) = metrics.histogram(
        "featherstore_storage_operation_duration_seconds",
        &[("operation", "index_lookup")],
    );
    assert_eq!(lookups, 2.0, "one index lookup per online read");
    assert_eq!(buckets[0].0, 0.000005);
    let (appends, _) = metrics.histogram(
        "featherstore_storage_operation_duration_seconds",
        &[("operation", "append")],
    );
    assert_eq!(appends, 3.0);
    metrics.histogram(
        "featherstore_storage_operation_duration_seconds",
        &[("operation", "scan")],
    );
    assert_eq!(
        metrics.types["featherstore_parquet_flushes_total"],
        "counter"
    );
    assert_eq!(
        metrics.types["featherstore_parquet_flush_seconds_total"],
        "counter"
    );
    assert!(
        metrics.value(
            "featherstore_feature_freshness_seconds",
            &[("feature_set", "user_features")]
        ) > 0.0
    );

    // Shutting down flushes the batch exporter.
    server.shutdown().await;
    let spans = grpc.spans();
    assert!(spans
        .iter()
        .all(|r| r.service.as_deref() == Some("featherstore-test")));

    let trace = Trace::of(&spans, &create);
    let span = trace.server("flight create_feature_set", &create);
    assert_attrs(
        span,
        &[
            ("feature_set", "user_features"),
            ("code", "ok"),
            ("rpc.system", "grpc"),
        ],
    );
    assert_eq!(
        attr(span, "trace_id").unwrap(),
        create.trace,
        "logs carry the trace id"
    );
    trace.child("storage.create_set", span);

    let trace = Trace::of(&spans, &put);
    let span = trace.server("flight do_put", &put);
    assert_attrs(
        span,
        &[
            ("feature_set", "user_features"),
            ("rows", "3"),
            ("code", "ok"),
        ],
    );
    let appends: Vec<_> = trace
        .0
        .iter()
        .filter(|s| s.name == "storage.append")
        .collect();
    assert_eq!(appends.len(), 2, "{:?}", trace.names());
    assert!(appends.iter().all(|s| s.parent_span_id == span.span_id));
    assert_eq!(
        trace.0.iter().filter(|s| s.name == "index.apply").count(),
        2
    );

    let trace = Trace::of(&spans, &online);
    let span = trace.server("flight do_get", &online);
    assert_attrs(
        span,
        &[
            ("feature_set", "user_features"),
            ("entities", "3"),
            ("rows", "3"),
        ],
    );
    assert_eq!(
        trace.names(),
        ["flight do_get"],
        "online reads are one span"
    );

    let trace = Trace::of(&spans, &history);
    let span = trace.server("flight do_get", &history);
    assert_attrs(span, &[("feature_set", "user_features"), ("rows", "3")]);
    assert_attrs(trace.child("storage.scan", span), &[("rows", "3")]);

    let trace = Trace::of(&spans, &training);
    let span = trace.server("flight do_exchange", &training);
    assert_attrs(
        span,
        &[
            ("feature_set", "user_features"),
            ("entities", "2"),
            ("rows", "2"),
        ],
    );
    assert_attrs(
        trace.child("storage.training", span),
        &[("entities", "2"), ("rows", "2")],
    );

    let trace = Trace::of(&spans, &http_online);
    let span = trace.server("POST /v1/online", &http_online);
    assert_attrs(
        span,
        &[
            ("http.request.method", "POST"),
            ("http.route", "/v1/online"),
            ("http.response.status_code", "200"),
            ("feature_set", "user_features"),
            ("entities", "1"),
            ("rows", "1"),
        ],
    );

    let trace = Trace::of(&spans, &http_ingest);
    let span = trace.server("POST /v1/feature-sets/{name}/rows", &http_ingest);
    assert_attrs(span, &[("feature_set", "user_features"), ("rows", "1")]);
    trace.child("storage.append", span);

    let trace = Trace::of(&spans, &missing);
    let span = trace.server("POST /v1/online", &missing);
    assert_attrs(
        span,
        &[
            ("http.response.status_code", "404"),
            ("code", "not_found"),
            ("feature_set", "nope"),
        ],
    );

    assert!(Trace::of(&spans, &unsampled).0.is_empty(), "not sampled");

    let roots: Vec<_> = spans
        .iter()
        .filter(|r| r.span.name == "flight list_flights")
        .collect();
    assert_eq!(roots.len(), 1);
    assert!(roots[0].span.parent_span_id.is_empty(), "a new trace");

    // --- OTLP over HTTP/protobuf.
    let (addr, over_http) = http_receiver().await;
    let server = traced_server(addr, OtlpProtocol::HttpProtobuf).await;
    let mut client = server.flight().await;
    let caller = Caller::new(8);
    set_caller(&mut client, &caller);
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    server.shutdown().await;
    let spans = over_http.spans();
    let trace = Trace::of(&spans, &caller);
    let span = trace.server("flight create_feature_set", &caller);
    assert_attrs(span, &[("feature_set", "user_features")]);

    // --- Without an endpoint nothing is exported (the previous exports are shut down).
    let before = (grpc.spans().len(), over_http.spans().len());
    let server = TestServer::start(Backend::Duckdb).await;
    let mut client = server.flight().await;
    set_caller(&mut client, &Caller::new(9));
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    server.shutdown().await;
    assert_eq!((grpc.spans().len(), over_http.spans().len()), before);

    parquet_storage_metrics().await;
    duckdb_storage_metrics().await;
    training_index_metrics().await;
}

/// Scrapes until `done` holds (the background flush and compaction run on their own clock).
async fn scrape_until(server: &TestServer, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = scrape(server).await;
        if done(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The metric names starting with one of `prefixes` that the docs, the alert rules and the
/// dashboard use.
fn documented_metrics(prefixes: &[&str]) -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut names: Vec<String> = [
        "docs/observability.md",
        "deploy/prometheus/featherstore-alerts.yml",
        "deploy/grafana/featherstore-dashboard.json",
    ]
    .iter()
    .flat_map(|file| {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| prefixes.iter().any(|prefix| word.starts_with(prefix)))
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
    .collect();
    names.sort();
    names.dedup();
    names
}

/// The Parquet backend's counters and the per-set storage gauges move with an ingest, a
/// background flush by age and the compaction that follows it; and every storage metric that
/// the docs, the alert rules and the dashboard name is one the server exports.
async fn parquet_storage_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir, Backend::Parquet, |config| {
        config.storage.parquet.flush_interval_seconds = 1;
        config.storage.parquet.compact_min_files = 2;
    })
    .await;
    let mut client = server.flight().await;
    let set = [("feature_set", "user_features")];
    let parquet = [("backend", "parquet")];
    let counter = |metrics: &Scrape, name: &str| metrics.value(name, &[]);
    let logged = log_two_users(&server, &mut client, "parquet").await;
    // Before the flush the rows are in the log only (unless the flush was quick).
    assert!(logged.value("featherstore_stored_files", &set) >= 1.0);
    assert!(logged.value("featherstore_stored_bytes", &set) > 0.0);

    let flushed = scrape_until(&server, "a flush", |m| {
        counter(m, "featherstore_parquet_flushes_total") >= 1.0
    })
    .await;
    assert!(counter(&flushed, "featherstore_parquet_flushed_rows_total") >= 2.0);
    assert!(counter(&flushed, "featherstore_parquet_flushed_files_total") >= 1.0);
    assert!(counter(&flushed, "featherstore_parquet_flushed_bytes_total") > 0.0);
    assert!(counter(&flushed, "featherstore_parquet_flush_seconds_total") > 0.0);

    // A second small file of the same date: compaction merges the two.
    let (_, error) = put(
        &mut client,
        "user_features",
        vec![user_batch(&[("u3", Some(3), None, 200)])],
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    let metrics = scrape_until(&server, "a compaction", |m| {
        counter(m, "featherstore_parquet_compactions_total") >= 1.0
    })
    .await;
    assert!(counter(&metrics, "featherstore_parquet_flushes_total") >= 2.0);
    assert!(counter(&metrics, "featherstore_parquet_flushed_rows_total") >= 3.0);
    assert!(counter(&metrics, "featherstore_parquet_compacted_input_files_total") >= 2.0);
    assert!(
        counter(
            &metrics,
            "featherstore_parquet_compacted_output_files_total"
        ) >= 1.0
    );
    assert!(counter(&metrics, "featherstore_parquet_compacted_bytes_total") > 0.0);
    assert!(counter(&metrics, "featherstore_parquet_compaction_seconds_total") > 0.0);
    for failures in [
        "featherstore_parquet_flush_failures_total",
        "featherstore_parquet_compaction_failures_total",
    ] {
        assert_eq!(metrics.types[failures], "counter");
        assert_eq!(counter(&metrics, failures), 0.0, "{failures}");
    }
    // All rows in the one merged file; the log is empty.
    assert_eq!(metrics.value("featherstore_stored_files", &set), 1.0);
    let stored = metrics.value("featherstore_stored_bytes", &set);
    assert!(stored > 0.0);
    assert_eq!(metrics.value("featherstore_storage_files", &parquet), 1.0);
    assert_eq!(
        metrics.value("featherstore_storage_bytes", &parquet),
        stored
    );
    let (appends, _) = metrics.histogram(
        "featherstore_storage_operation_duration_seconds",
        &[("operation", "append")],
    );
    assert_eq!(appends, 2.0);

    let documented = documented_metrics(&[
        "featherstore_parquet_",
        "featherstore_storage_",
        "featherstore_stored_",
    ]);
    assert!(documented.len() >= 20, "{documented:?}");
    assert_documented_moved(&metrics, &documented);
    server.server.unwrap().shutdown().await;
}

/// Every name in `documented` is exported, and moved (but the failure counters: the store's
/// tests move those, a healthy run has none).
fn assert_documented_moved(metrics: &Scrape, documented: &[String]) {
    for name in documented {
        let family = metrics
            .family_of(name)
            .unwrap_or_else(|| panic!("{name} is documented but not exported"));
        let moved = metrics
            .samples
            .iter()
            .any(|(sample, _, value)| metrics.family_of(sample) == Some(family) && *value > 0.0);
        // The failure counters are moved by the store's tests (a healthy run has none).
        assert!(
            moved || name.ends_with("_failures_total"),
            "{name} did not move"
        );
    }
}

/// Creates the user set and stores two rows; the `backend`'s log counters count them.
async fn log_two_users(server: &TestServer, client: &mut FlightClient, backend: &str) -> Scrape {
    action(client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    let (_, error) = put(
        client,
        "user_features",
        vec![user_batch(&[
            ("u1", Some(1), None, 100),
            ("u2", Some(2), None, 160),
        ])],
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    let logged = scrape(server).await;
    let counter = |name: &str| logged.value(&format!("featherstore_{backend}_{name}"), &[]);
    assert!(counter("log_appends_total") >= 1.0);
    assert!(counter("log_bytes_total") > 0.0);
    assert!(counter("log_syncs_total") >= 2.0);
    logged
}

/// The DuckDB backend's counters move with an ingest and the background apply that follows
/// it; every `featherstore_duckdb_*` metric the docs name is one the server exports.
async fn duckdb_storage_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir, Backend::Duckdb, |config| {
        config.storage.duckdb.apply_interval_ms = 100;
    })
    .await;
    let mut client = server.flight().await;
    let counter = |metrics: &Scrape, name: &str| metrics.value(name, &[]);
    log_two_users(&server, &mut client, "duckdb").await;
    let metrics = scrape_until(&server, "an apply", |m| {
        counter(m, "featherstore_duckdb_applies_total") >= 1.0
    })
    .await;
    assert!(counter(&metrics, "featherstore_duckdb_applied_rows_total") >= 2.0);
    assert!(counter(&metrics, "featherstore_duckdb_apply_seconds_total") > 0.0);
    assert_eq!(
        metrics.types["featherstore_duckdb_apply_failures_total"],
        "counter"
    );
    assert_eq!(
        counter(&metrics, "featherstore_duckdb_apply_failures_total"),
        0.0
    );
    let documented = documented_metrics(&["featherstore_duckdb_"]);
    assert!(documented.len() >= 7, "{documented:?}");
    assert_documented_moved(&metrics, &documented);
    server.server.unwrap().shutdown().await;
}

/// Entity rows of `user_features` at `seconds`.
fn users_at(rows: &[(&str, i64)]) -> arrow::array::RecordBatch {
    use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    arrow::array::RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.1 * 1_000_000),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

/// The kept training indexes' counters and gauge: a first request indexes the set, the next
/// one reads only the rows stored since, and deleting the set drops its index; every
/// `featherstore_training_index_*` metric the docs name is one the server exports.
async fn training_index_metrics() {
    let server = TestServer::start(Backend::Duckdb).await;
    let mut client = server.flight().await;
    let counter = |metrics: &Scrape, name: &str| metrics.value(name, &[]);
    let before = scrape(&server).await;
    action(&mut client, "create_feature_set", USER_SPEC)
        .await
        .unwrap();
    let command = json!({"type": "training_data", "features": ["user_features:age"]});
    let answer_age = |batches: Vec<arrow::array::RecordBatch>| {
        let out = flight::concat(&batches);
        let age = out.column_by_name("age").unwrap().clone();
        age.as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    };
    flight::put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[("u1", Some(1), None, 100)])],
    )
    .await;
    let rows = vec![users_at(&[("u1", 150), ("u2", 150)])];
    let out = flight::exchange(&server, command.clone(), rows.clone())
        .await
        .unwrap();
    assert_eq!(answer_age(out), [Some(1), None]);
    flight::put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[
            ("u1", Some(2), None, 120),
            ("u2", Some(3), None, 140),
        ])],
    )
    .await;
    let out = flight::exchange(&server, command.clone(), rows.clone())
        .await
        .unwrap();
    assert_eq!(answer_age(out), [Some(2), Some(3)], "the rows stored since");
    let kept = scrape(&server).await;
    let moved = |name: &str| counter(&kept, name) - counter(&before, name);
    assert!(moved("featherstore_training_index_built_total") >= 1.0);
    assert!(moved("featherstore_training_index_reused_total") >= 1.0);
    assert!(moved("featherstore_training_index_built_rows_total") >= 1.0);
    assert!(moved("featherstore_training_index_updated_rows_total") >= 2.0);
    assert!(counter(&kept, "featherstore_training_index_bytes") > 0.0);

    // A pause in ingest brings the kept index up to date before any request asks.
    flight::put_ok(
        &mut client,
        "user_features",
        vec![user_batch(&[("u2", Some(4), None, 145)])],
    )
    .await;
    featherstore_testkit::eventually(std::time::Duration::from_secs(10), "a warm-up", || async {
        let now = scrape(&server).await;
        counter(&now, "featherstore_training_index_warmed_total")
            > counter(&kept, "featherstore_training_index_warmed_total")
    })
    .await;
    // One row to three: the warm-up reads the set whole again (a quarter of the index or
    // more), into one run.
    let warmed = scrape(&server).await;
    assert!(
        counter(&warmed, "featherstore_training_index_built_rows_total")
            >= counter(&kept, "featherstore_training_index_built_rows_total") + 4.0,
        "the set was read whole again, the row stored since with it"
    );
    let out = flight::exchange(&server, command, rows).await.unwrap();
    assert_eq!(answer_age(out), [Some(2), Some(4)], "the warmed index");
    let kept = scrape(&server).await;

    action(
        &mut client,
        "delete_feature_set",
        &json!({"name": "user_features"}).to_string(),
    )
    .await
    .unwrap();
    let dropped = scrape(&server).await;
    assert!(
        counter(&dropped, "featherstore_training_index_evictions_total")
            > counter(&kept, "featherstore_training_index_evictions_total")
    );
    assert_eq!(counter(&dropped, "featherstore_training_index_bytes"), 0.0);
    // Every name but the gauge, emptied by the delete: it moved in `kept`.
    let documented: Vec<String> = documented_metrics(&["featherstore_training_index_"])
        .into_iter()
        .filter(|name| name != "featherstore_training_index_bytes")
        .collect();
    assert!(documented.len() >= 5, "{documented:?}");
    assert_documented_moved(&dropped, &documented);
    server.shutdown().await;
}
