//! OpenTelemetry traces: a span per Flight and HTTP request (joined to the caller's trace by
//! its W3C `traceparent`), child spans for storage and index work, exported over OTLP (gRPC
//! or HTTP/protobuf) by a batch exporter on a thread of its own, so export never blocks a
//! request: when the queue is full, spans are dropped.
//!
//! The process has one `tracing` subscriber, installed once, and the OpenTelemetry layer in it
//! ([`layer`]) is always there but switched off: its filter disables every callsite, so spans
//! cost what they cost without it. [`start`] (called by [`crate::start`] when an endpoint is
//! configured) points it at a new tracer provider and switches it on; [`Tracing::shutdown`]
//! flushes what is queued and switches it off again.
//!
//! Sampling is decided per request before its span exists ([`HeadSampler`]): a request that
//! is not sampled never reaches the OpenTelemetry layer, nor do the spans under it, so it
//! costs (almost) what it costs with export off. Its log lines still carry the caller's trace
//! id when the caller sent one.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;

use parking_lot::RwLock;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanBuilder, SpanContext, TraceContextExt, TraceId, TracerProvider as _,
};
use opentelemetry::{Context as OtelContext, InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{OtlpProtocol, TracingConfig};

/// The tracer of the running export, with the generation that installed it.
static TRACER: RwLock<Option<(u64, SdkTracer)>> = RwLock::new(None);
/// The sampler of the running export.
static SAMPLER: RwLock<HeadSampler> = RwLock::new(HeadSampler::OFF);
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Whether spans are exported: read on every span's creation (once per callsite, cached).
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Whether the process's subscriber has our layer.
static LAYER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether request spans are being exported now.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Spans that end after export stopped go to a tracer that samples nothing.
static NO_EXPORT: LazyLock<SdkTracer> = LazyLock::new(|| {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build()
        .tracer("featherstore")
});

/// A tracer that delegates to the current export's, so that the layer can be installed once
/// and exports started and stopped under it.
#[derive(Debug, Clone, Copy)]
pub struct SwitchTracer;

impl opentelemetry::trace::Tracer for SwitchTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &OtelContext) -> Self::Span {
        let current = TRACER.read();
        match current.as_ref() {
            Some((_, tracer)) => tracer.build_with_context(builder, parent_cx),
            None => NO_EXPORT.build_with_context(builder, parent_cx),
        }
    }
}

/// How a request decides whether it is traced: an `OTEL_TRACES_SAMPLER` policy, applied to the
/// caller's trace context before the request's span is created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadSampler {
    /// Follow the caller's sampled flag when there is a caller trace.
    parent_based: bool,
    /// The share of the other requests (of trace ids) that are sampled, 0..=1.
    ratio: f64,
}

impl HeadSampler {
    const OFF: HeadSampler = HeadSampler {
        parent_based: false,
        ratio: 0.0,
    };

    /// From a sampler name of [`SAMPLERS`] and its ratio (1.0 when unset).
    pub fn new(name: &str, arg: Option<f64>) -> HeadSampler {
        let ratio = arg.unwrap_or(1.0);
        let (parent_based, ratio) = match name {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, ratio),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, ratio),
            _ => (true, 1.0), // parentbased_always_on
        };
        HeadSampler {
            parent_based,
            ratio,
        }
    }

    /// Whether a request whose caller's trace context is `parent` is sampled. Ratios apply to
    /// the caller's trace id when there is one (as OpenTelemetry's `TraceIdRatioBased` does, so
    /// that every service sampling at that ratio keeps the same traces), else to a random draw.
    pub fn sample(&self, parent: Option<&SpanContext>) -> bool {
        let parent = parent.filter(|p| p.is_valid());
        if let (true, Some(parent)) = (self.parent_based, parent) {
            return parent.is_sampled();
        }
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        let draw = match parent {
            Some(parent) => {
                let bytes = parent.trace_id().to_bytes();
                u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")) >> 1
            }
            None => random_u64() >> 1,
        };
        draw < (self.ratio * (1u64 << 63) as f64) as u64
    }
}

/// A cheap per-thread pseudo-random draw (xorshift), for ratio sampling of new traces.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let here = &seed as *const u64 as u64;
            (seed ^ here.rotate_left(32)) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

thread_local! {
    /// Set around the creation of a sampled request's span: the filter's answer for it.
    static SAMPLE_THIS: Cell<bool> = const { Cell::new(false) };
}

/// What goes to OpenTelemetry while export is on: the spans of sampled requests; below them,
/// FeatherStore's spans down to debug level (the storage and index children) and its events at
/// info and above (errors become span events and mark the span failed); and the startup spans
/// that rebuild the online index. Nothing at all while export is off.
#[derive(Debug, Clone, Copy)]
pub struct ExportFilter;

/// The target of the request spans (created in this module).
const REQUEST_TARGET: &str = module_path!();

#[derive(PartialEq)]
enum Kind {
    Request,
    Root,
    Child,
    Event,
}

fn kind(meta: &Metadata<'_>) -> Option<Kind> {
    if !meta.target().starts_with("featherstore") {
        return None;
    }
    if meta.is_span() {
        if meta.target() == REQUEST_TARGET && matches!(meta.name(), "flight" | "http") {
            Some(Kind::Request)
        } else if meta.name() == "index.rebuild" {
            Some(Kind::Root)
        } else {
            (*meta.level() <= Level::DEBUG).then_some(Kind::Child)
        }
    } else {
        (*meta.level() <= Level::INFO).then_some(Kind::Event)
    }
}

impl<S> Filter<S> for ExportFilter
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if !exporting() {
            return false;
        }
        match kind(meta) {
            Some(Kind::Request) => SAMPLE_THIS.get(),
            // Only inside a span this layer has: of a sampled request.
            Some(Kind::Child) | Some(Kind::Event) => cx.lookup_current().is_some(),
            Some(Kind::Root) => true,
            None => false,
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Re-evaluated when export starts or stops (`rebuild_interest_cache`).
        if exporting() && kind(meta).is_some() {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if exporting() {
            LevelFilter::DEBUG
        } else {
            LevelFilter::OFF
        })
    }
}

/// The OpenTelemetry layer, switched off until [`start`]. [`crate::telemetry::logging::init`]
/// installs it; a process that installs its own subscriber adds it there to get traces.
pub fn layer<S>() -> Filtered<OpenTelemetryLayer<S, SwitchTracer>, ExportFilter, S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    LAYER_INSTALLED.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(SwitchTracer)
        // Lean spans: no source locations, thread or target attributes, no busy/idle timing.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(ExportFilter)
}

/// Export settings, resolved from the configuration and the `OTEL_*` environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The full URL spans are sent to.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampler: String,
    pub sampler_arg: Option<f64>,
    /// `None` when `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names the service (the
    /// SDK reads those itself).
    pub service_name: Option<String>,
    pub timeout: Duration,
}

const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` semantics: the signal's path is appended for HTTP.
fn base_endpoint(endpoint: &str, protocol: OtlpProtocol) -> String {
    let endpoint = with_scheme(endpoint);
    match protocol {
        OtlpProtocol::Grpc => endpoint,
        OtlpProtocol::HttpProtobuf if endpoint.trim_end_matches('/').ends_with("/v1/traces") => {
            endpoint
        }
        OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

/// Resolves the export settings; `None` when export is off (no endpoint, or
/// `OTEL_SDK_DISABLED=true`). The standard variables win over the configuration.
pub fn resolve(
    config: &TracingConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Settings>, String> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v)))
    {
        None => config.protocol,
        Some((_, v)) if v.trim() == "grpc" => OtlpProtocol::Grpc,
        Some((_, v)) if v.trim() == "http/protobuf" => OtlpProtocol::HttpProtobuf,
        Some((name, v)) => {
            return Err(format!(
                "{name}={v:?} is not supported; use grpc or http/protobuf"
            ))
        }
    };
    let endpoint = if let Some(endpoint) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        with_scheme(endpoint.trim())
    } else if let Some(endpoint) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        base_endpoint(endpoint.trim(), protocol)
    } else if let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        base_endpoint(endpoint.trim(), protocol)
    } else {
        return Ok(None);
    };
    endpoint
        .parse::<http::Uri>()
        .map_err(|e| format!("invalid OTLP endpoint {endpoint:?}: {e}"))?;
    let (sampler, sampler_arg) = match env("OTEL_TRACES_SAMPLER") {
        Some(sampler) => {
            let arg = env("OTEL_TRACES_SAMPLER_ARG")
                .map(|a| {
                    a.trim().parse::<f64>().map_err(|_| {
                        format!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a number in 0..=1")
                    })
                })
                .transpose()?;
            (sampler.trim().to_string(), arg)
        }
        None => (config.sampler.clone(), config.sampler_arg),
    };
    if !SAMPLERS.contains(&sampler.as_str()) {
        return Err(format!(
            "unknown trace sampler {sampler:?}; expected one of {}",
            SAMPLERS.join(", ")
        ));
    }
    if let Some(arg) = sampler_arg.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(format!("the trace sampler ratio {arg} is not in 0..=1"));
    }
    let service_named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    let timeout_ms = env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(10_000);
    Ok(Some(Settings {
        endpoint,
        protocol,
        sampler,
        sampler_arg,
        service_name: (!service_named).then(|| config.service_name.clone()),
        timeout: Duration::from_millis(timeout_ms),
    }))
}

/// A running export; [`Tracing::shutdown`] flushes it.
pub struct Tracing {
    provider: SdkTracerProvider,
    generation: u64,
}

/// Starts exporting spans if an endpoint is configured. Runs inside the Tokio runtime that
/// serves requests: the exporters' connections live on it.
pub fn start(config: &TracingConfig) -> Result<Option<Tracing>, String> {
    let Some(settings) = resolve(config, |name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    if !LAYER_INSTALLED.load(Ordering::Relaxed) {
        // No `logging::init` in this process (tests, embedding): a subscriber of our own.
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(layer());
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            LAYER_INSTALLED.store(false, Ordering::Relaxed);
            tracing::warn!(
                "trace export is configured, but this process's tracing subscriber lacks \
                 featherstore_server::telemetry::traces::layer(): no spans will be exported"
            );
        }
    }
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.timeout)
            .with_http_client(RuntimeHttpClient::new(settings.timeout))
            .build(),
    }
    .map_err(|e| format!("building the OTLP span exporter: {e}"))?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(name) = &settings.service_name {
        resource = resource.with_service_name(name.clone());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Requests are sampled before their spans exist (`HeadSampler`): what reaches the
        // provider is to be recorded.
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder("featherstore")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    *SAMPLER.write() = HeadSampler::new(&settings.sampler, settings.sampler_arg);
    *TRACER.write() = Some((generation, tracer));
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(
        endpoint = %settings.endpoint,
        protocol = match settings.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        },
        sampler = %settings.sampler,
        "exporting traces"
    );
    Ok(Some(Tracing {
        provider,
        generation,
    }))
}

impl Tracing {
    /// Stops exporting (unless a later export took over), then exports what is queued.
    pub async fn shutdown(self) {
        {
            let mut current = TRACER.write();
            if current.as_ref().is_some_and(|(g, _)| *g == self.generation) {
                *current = None;
                EXPORTING.store(false, Ordering::Relaxed);
                drop(current);
                tracing::callsite::rebuild_interest_cache();
            }
        }
        let provider = self.provider;
        // Joins the exporter thread, which may wait on this runtime: off the async workers.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces at shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces at shutdown failed"),
        }
    }
}

/// W3C trace context (`traceparent`, `tracestate`) from gRPC metadata or HTTP headers.
struct Carrier<'a, F: Fn(&str) -> Option<&'a str>>(F);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Carrier<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        ["traceparent", "tracestate"]
            .into_iter()
            .filter(|k| (self.0)(k).is_some())
            .collect()
    }
}

/// Creates a request's span with `make`, sampled or not (see [`HeadSampler`]), joined to the
/// caller's trace, with its trace id recorded for the logs: every line logged inside the
/// request carries it. An unsampled request (or any, with export off) records the caller's
/// trace id if there is one, so that its logs can still be matched with the caller's trace.
fn request_span<'a>(header: impl Fn(&str) -> Option<&'a str>, make: impl FnOnce() -> Span) -> Span {
    let parent = header("traceparent")
        .is_some()
        .then(|| TraceContextPropagator::new().extract(&Carrier(header)));
    let caller = parent.as_ref().map(|cx| cx.span().span_context().clone());
    let sampled = exporting() && SAMPLER.read().sample(caller.as_ref());
    SAMPLE_THIS.set(sampled);
    let span = make();
    SAMPLE_THIS.set(false);
    if span.is_disabled() {
        return span;
    }
    let trace_id = if sampled {
        if let Some(parent) = parent {
            let _ = span.set_parent(parent);
        }
        span.context().span().span_context().trace_id()
    } else {
        caller.map_or(TraceId::INVALID, |c| c.trace_id())
    };
    if trace_id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// The span of a Flight call. `feature_set`, `entities` and `rows` are recorded by the
/// handler and the store as they learn them.
pub fn flight_span(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> Span {
    let header = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
    request_span(header, || {
        tracing::info_span!(
            "flight",
            otel.name = format!("flight {method}").as_str(),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            feature_set = Empty,
            entities = Empty,
            rows = Empty,
            code = Empty,
            trace_id = Empty,
        )
    })
}

/// The span of an HTTP request; `name` is `METHOD /route` (the `method` label).
pub fn http_span(name: &str, method: &http::Method, route: &str, headers: &HeaderMap) -> Span {
    let header = |key: &str| headers.get(key).and_then(|v| v.to_str().ok());
    request_span(header, || {
        tracing::info_span!(
            "http",
            method = name,
            otel.name = name,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            http.route = route,
            http.response.status_code = Empty,
            feature_set = Empty,
            entities = Empty,
            rows = Empty,
            code = Empty,
            trace_id = Empty,
        )
    })
}

/// Records a request's outcome on its span, and logs the request's line (debug level).
pub fn finish(span: &Span, code: &str, status: Option<StatusCode>, elapsed: Duration) {
    if span.is_disabled() {
        return;
    }
    span.record("code", code);
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status.as_u16()));
    }
    if code == "internal" {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        parent: span,
        code,
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
}

/// Polls a response stream inside the request's span: errors met while streaming are logged
/// with the request's context, and the span lasts until the stream ends.
pub fn in_span<T: Send + 'static>(
    span: Span,
    mut stream: BoxStream<'static, T>,
) -> BoxStream<'static, T> {
    if span.is_disabled() {
        return stream;
    }
    futures::stream::poll_fn(move |cx| {
        let _entered = span.enter();
        stream.poll_next_unpin(cx)
    })
    .boxed()
}

/// The OTLP/HTTP client: hyper (already in the build for tonic and axum) on the server's Tokio
/// runtime. The batch exporter calls it from its own thread; requests are spawned onto the
/// runtime the export was started on.
#[derive(Debug)]
struct RuntimeHttpClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

/// Collector answers are small; more than this is not read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

impl RuntimeHttpClient {
    fn new(timeout: Duration) -> Self {
        RuntimeHttpClient {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
            runtime: tokio::runtime::Handle::current(),
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let (parts, body) = request.into_parts();
            let response = client
                .request(Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        self.runtime
            .spawn(async move {
                tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| HttpError::from(format!("no answer within {timeout:?}")))?
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(
        config: &TracingConfig,
        vars: &[(&str, &str)],
    ) -> Result<Option<Settings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(config, |name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        let config = TracingConfig::default();
        assert_eq!(resolve_with(&config, &[]).unwrap(), None);
        let config = TracingConfig {
            endpoint: Some("http://c:4318".into()),
            ..TracingConfig::default()
        };
        assert_eq!(
            resolve_with(&config, &[("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
    }

    #[test]
    fn environment_wins_over_configuration() {
        let config = TracingConfig {
            endpoint: Some("http://configured:4318".into()),
            ..TracingConfig::default()
        };
        let s = resolve_with(&config, &[]).unwrap().unwrap();
        assert_eq!(s.endpoint, "http://configured:4318/v1/traces");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            (s.sampler.as_str(), s.sampler_arg),
            ("parentbased_traceidratio", Some(0.1))
        );
        assert_eq!(s.service_name.as_deref(), Some("featherstore"));
        assert_eq!(s.timeout, Duration::from_secs(10));

        let s = resolve_with(
            &config,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_SERVICE_NAME", "fs-eu"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://collector:4317");
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(
            (s.sampler.as_str(), s.sampler_arg),
            ("parentbased_traceidratio", Some(0.1))
        );
        assert_eq!(
            s.service_name, None,
            "the SDK reads OTEL_SERVICE_NAME itself"
        );
        assert_eq!(s.timeout, Duration::from_millis(2500));

        // A sampler from the environment takes its ratio from there too (the spec's 1.0 if
        // unset), not from the configuration.
        let s = resolve_with(&config, &[("OTEL_TRACES_SAMPLER", "traceidratio")])
            .unwrap()
            .unwrap();
        assert_eq!((s.sampler.as_str(), s.sampler_arg), ("traceidratio", None));

        // The per-signal endpoint is taken as it is.
        let s = resolve_with(
            &TracingConfig::default(),
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://c:9999/custom");
    }

    #[test]
    fn head_sampling_follows_the_caller_then_the_ratio() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceState};
        let caller = |trace: u128, sampled: bool| {
            SpanContext::new(
                TraceId::from(trace),
                SpanId::from(1u64),
                if sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                true,
                TraceState::default(),
            )
        };
        let default = HeadSampler::new("parentbased_traceidratio", Some(0.1));
        assert!(default.sample(Some(&caller(u128::MAX, true))));
        assert!(!default.sample(Some(&caller(1, false))));
        let roots = (0..20_000).filter(|_| default.sample(None)).count();
        assert!((1_500..2_500).contains(&roots), "about a tenth: {roots}");

        let always = HeadSampler::new("parentbased_always_on", None);
        assert!(always.sample(None));
        assert!(!always.sample(Some(&caller(7, false))));
        assert!(!HeadSampler::new("always_off", None).sample(Some(&caller(7, true))));
        assert!(HeadSampler::new("always_on", None).sample(Some(&caller(7, false))));
        // A ratio applies to the caller's trace id: the same decision every time.
        let ratio = HeadSampler::new("traceidratio", Some(0.5));
        assert!(
            ratio.sample(Some(&caller(1, false))),
            "a low trace id is kept"
        );
        assert!(!ratio.sample(Some(&caller(u128::MAX, true))));
    }

    #[test]
    fn bad_settings_are_errors() {
        let config = TracingConfig {
            endpoint: Some("http://c:4317".into()),
            ..TracingConfig::default()
        };
        let err =
            resolve_with(&config, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(err.contains("http/json"), "{err}");
        let err = resolve_with(&config, &[("OTEL_TRACES_SAMPLER", "sometimes")]).unwrap_err();
        assert!(err.contains("sometimes"), "{err}");
        let bad_ratio = TracingConfig {
            sampler: "traceidratio".into(),
            sampler_arg: Some(2.0),
            ..config
        };
        assert!(resolve_with(&bad_ratio, &[]).is_err());
    }
}
