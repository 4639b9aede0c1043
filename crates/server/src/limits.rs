//! Overload protection shared by both APIs: concurrent requests per API, concurrent streams
//! per client (peer IP), ingest bytes in flight, and the timeouts of requests and streams.
//! Every refusal has a [`Rejection`] reason, counted in `featherstore_rejected_requests_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use featherstore_core::ErrorCode;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::telemetry::metrics::Api;

/// Why a request was refused, or ended early, by a limit (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A message, body or entity count over its limit.
    TooLarge,
    /// The request took longer than `request_timeout_seconds`.
    Timeout,
    /// A stream neither sent nor took data for `stream_idle_timeout_seconds`.
    StreamIdle,
    /// The API already serves its maximum of concurrent requests.
    Concurrency,
    /// The client (peer IP) already has its maximum of concurrent streams.
    ClientStreams,
    /// Ingest bytes in flight stayed at their maximum for `ingest_wait_seconds`.
    IngestBackpressure,
    /// No storage connection became free within `storage_wait_seconds`.
    StorageBusy,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::Timeout => "timeout",
            Rejection::StreamIdle => "stream_idle",
            Rejection::Concurrency => "concurrency",
            Rejection::ClientStreams => "client_streams",
            Rejection::IngestBackpressure => "ingest_backpressure",
            Rejection::StorageBusy => "storage_busy",
        }
    }

    pub fn code(self) -> ErrorCode {
        match self {
            Rejection::TooLarge => ErrorCode::TooLarge,
            Rejection::Timeout | Rejection::StreamIdle => ErrorCode::DeadlineExceeded,
            Rejection::ClientStreams => ErrorCode::TooManyRequests,
            Rejection::Concurrency | Rejection::IngestBackpressure | Rejection::StorageBusy => {
                ErrorCode::Unavailable
            }
        }
    }

    /// The reason of an error produced below the API layer, by its code.
    pub fn of_code(code: ErrorCode) -> Option<Rejection> {
        match code {
            ErrorCode::TooLarge => Some(Rejection::TooLarge),
            ErrorCode::Unavailable => Some(Rejection::StorageBusy),
            // Request timeouts are `Rejected` from the start: this is a client that stopped
            // sending.
            ErrorCode::DeadlineExceeded => Some(Rejection::StreamIdle),
            ErrorCode::TooManyRequests => Some(Rejection::ClientStreams),
            _ => None,
        }
    }
}

/// A configured number of seconds as a duration (validated positive at startup).
pub(crate) fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
}

/// The limits in force, and what they count.
pub(crate) struct Guards {
    pub request_timeout: Duration,
    pub stream_idle: Duration,
    /// `/health` reports storage stalled once a call waited this long for a connection.
    pub storage_stall: Duration,
    http: Arc<Semaphore>,
    flight: Arc<Semaphore>,
    max_http: usize,
    max_flight: usize,
    streams_per_client: usize,
    client_streams: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ingest: Arc<Semaphore>,
    ingest_budget: u32,
    ingest_wait: Duration,
}

/// Holds a request's place among the concurrent requests (and the client's streams) until it
/// and its response body are done.
pub(crate) struct RequestPermit {
    _request: OwnedSemaphorePermit,
    _stream: Option<ClientStream>,
}

struct ClientStream {
    ip: IpAddr,
    streams: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        let mut streams = self.streams.lock();
        if let Some(count) = streams.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                streams.remove(&self.ip);
            }
        }
    }
}

impl Guards {
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        let ingest_budget =
            u32::try_from(config.max_ingest_bytes_in_flight.max(1)).unwrap_or(u32::MAX);
        Guards {
            request_timeout: seconds(config.request_timeout_seconds),
            stream_idle: seconds(config.stream_idle_timeout_seconds),
            storage_stall: seconds(config.storage_stall_seconds),
            http: Arc::new(Semaphore::new(config.max_concurrent_http_requests)),
            flight: Arc::new(Semaphore::new(config.max_concurrent_flight_requests)),
            max_http: config.max_concurrent_http_requests,
            max_flight: config.max_concurrent_flight_requests,
            streams_per_client: config.max_streams_per_client,
            client_streams: Arc::default(),
            ingest: Arc::new(Semaphore::new(ingest_budget as usize)),
            ingest_budget,
            ingest_wait: seconds(config.ingest_wait_seconds),
        }
    }

    /// Admits a request on `api`, refusing it at once when the API is at its concurrency limit
    /// or, for a stream, when its client is at its stream limit.
    pub(crate) fn admit(
        &self,
        api: Api,
        peer: Option<IpAddr>,
        stream: bool,
    ) -> Result<RequestPermit, ApiError> {
        let (semaphore, max) = match api {
            Api::Http => (&self.http, self.max_http),
            Api::Flight => (&self.flight, self.max_flight),
        };
        let request = semaphore.clone().try_acquire_owned().map_err(|_| {
            ApiError::rejected(
                Rejection::Concurrency,
                format!(
                    "the server is busy: {max} {} requests are in progress; retry later",
                    api.as_str()
                ),
            )
        })?;
        let stream = match peer.filter(|_| stream) {
            None => None,
            Some(ip) => {
                let mut streams = self.client_streams.lock();
                let count = streams.entry(ip).or_default();
                if *count >= self.streams_per_client {
                    return Err(ApiError::rejected(
                        Rejection::ClientStreams,
                        format!(
                            "client {ip} already has {} streams open, the most allowed; retry once one ends",
                            self.streams_per_client
                        ),
                    ));
                }
                *count += 1;
                Some(ClientStream {
                    ip,
                    streams: self.client_streams.clone(),
                })
            }
        };
        Ok(RequestPermit {
            _request: request,
            _stream: stream,
        })
    }

    /// Reserves `bytes` of the ingest budget while a batch is stored: waits up to
    /// `ingest_wait_seconds` for other batches to finish, then refuses. A batch larger than
    /// the whole budget waits for all of it.
    pub(crate) async fn ingest_bytes(
        &self,
        bytes: usize,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let wanted = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.ingest_budget);
        let acquire = self.ingest.clone().acquire_many_owned(wanted);
        match tokio::time::timeout(self.ingest_wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ApiError::Internal("the ingest budget was closed".into())),
            Err(_elapsed) => Err(ApiError::rejected(
                Rejection::IngestBackpressure,
                format!(
                    "ingest is saturated: {} bytes are being stored and this batch of {bytes} \
                     bytes waited {:.1} s for room; retry later",
                    self.ingest_budget,
                    self.ingest_wait.as_secs_f64()
                ),
            )),
        }
    }

    /// The error of a request that ran out of `request_timeout_seconds`.
    pub(crate) fn timed_out(&self) -> ApiError {
        ApiError::rejected(
            Rejection::Timeout,
            format!(
                "the request took longer than {:.1} s",
                self.request_timeout.as_secs_f64()
            ),
        )
    }

    /// The error of a client that sent nothing for `stream_idle_timeout_seconds`; a domain
    /// error, as it may travel through the store (entity rows of training data).
    pub(crate) fn input_idle(&self, what: &str) -> featherstore_core::Error {
        featherstore_core::Error::DeadlineExceeded(format!(
            "{what}: the client sent nothing for {:.1} s",
            self.stream_idle.as_secs_f64()
        ))
    }
}

/// A response body that holds a value (a [`RequestPermit`]) until the body is done.
pub(crate) struct Guarded<B, G> {
    pub body: B,
    /// Dropped with the body.
    pub _guard: G,
}

impl<B, G> http_body::Body for Guarded<B, G>
where
    B: http_body::Body + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guards(adjust: impl FnOnce(&mut LimitsConfig)) -> Guards {
        let mut config = LimitsConfig::default();
        adjust(&mut config);
        Guards::new(&config)
    }

    #[tokio::test]
    async fn ingest_waits_for_room_then_is_refused() {
        let guards = guards(|c| {
            c.max_ingest_bytes_in_flight = 1000;
            c.ingest_wait_seconds = 0.2;
        });
        let first = guards.ingest_bytes(600).await.unwrap();
        let refused = guards.ingest_bytes(600).await.expect_err("no room");
        assert_eq!(refused.rejection(), Some(Rejection::IngestBackpressure));
        assert_eq!(refused.code(), ErrorCode::Unavailable);
        // Room comes back while a batch waits: it goes ahead.
        let waiting = tokio::spawn({
            let ingest = guards.ingest.clone();
            async move { ingest.acquire_many_owned(600).await.map(drop) }
        });
        drop(first);
        waiting.await.unwrap().unwrap();
        // A batch larger than the whole budget waits for all of it, and then goes alone.
        drop(guards.ingest_bytes(5000).await.unwrap());
    }

    #[test]
    fn a_client_has_a_bounded_number_of_streams_and_gets_them_back() {
        let guards = guards(|c| c.max_streams_per_client = 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = guards.admit(Api::Flight, Some(ip), true).unwrap();
        let _b = guards.admit(Api::Http, Some(ip), true).unwrap();
        let refused = guards.admit(Api::Flight, Some(ip), true).err().unwrap();
        assert_eq!(refused.code(), ErrorCode::TooManyRequests);
        guards.admit(Api::Flight, Some(other), true).unwrap();
        guards.admit(Api::Flight, Some(ip), false).unwrap();
        drop(a);
        guards.admit(Api::Flight, Some(ip), true).unwrap();
    }
}
