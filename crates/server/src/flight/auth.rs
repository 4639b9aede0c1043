//! Authentication of Flight calls: a wrapper around the tonic service that checks the bearer
//! token and the method's scope before the request message is read, and the `Handshake`,
//! which answers valid credentials with the bearer token (as pyarrow's
//! `authenticate_basic_token` expects).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::HandshakeRequest;
use base64::Engine;
use futures::future::{BoxFuture, FutureExt};
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::{Status, Streaming};

use crate::auth::{authorize, strip_scheme, Access, Authenticator, Grant, Operation, Refusal};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::metrics::Api;
use crate::telemetry::Metrics;

/// The tonic service `S`, behind authentication: each call gets its [`Access`] in its
/// extensions, or is answered UNAUTHENTICATED / PERMISSION_DENIED without reaching `S`.
#[derive(Clone)]
pub(crate) struct Authenticated<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
    metrics: Arc<Metrics>,
}

impl<S> Authenticated<S> {
    pub(crate) fn new(
        inner: S,
        authenticator: Option<Arc<Authenticator>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Authenticated {
            inner,
            authenticator,
            metrics,
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tonic::codegen::Service<http::Request<Body>> for Authenticated<S>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // `/arrow.flight.protocol.FlightService/DoGet`
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        if let Some(operation) = Operation::of_flight_method(method) {
            match authorize(
                self.authenticator.as_deref(),
                &self.metrics,
                Api::Flight,
                request.headers(),
                operation,
            ) {
                Ok(access) => {
                    request.extensions_mut().insert(access);
                }
                Err(e) => {
                    let status = Status::from(e);
                    return futures::future::ready(Ok(status.into_http())).boxed();
                }
            }
        }
        self.inner.call(request).boxed()
    }
}

/// The [`Access`] the wrapper gave a call; its absence is a fault of the server (a handler
/// reached without the wrapper), refused rather than let through.
pub(super) fn access_of(extensions: &tonic::Extensions) -> ApiResult<Access> {
    extensions
        .get::<Access>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("the call reached a handler unauthenticated".into()))
}

/// The outcome of a Handshake: the token to answer with (auth on), or none (auth off).
pub(super) async fn handshake(
    authenticator: Option<&Authenticator>,
    metrics: &Metrics,
    metadata: &MetadataMap,
    mut input: Streaming<HandshakeRequest>,
) -> Result<Option<Vec<u8>>, Status> {
    let Some(authenticator) = authenticator else {
        return Ok(None);
    };
    let header = metadata.get("authorization").map(|v| v.as_bytes().to_vec());
    let credentials = match header {
        Some(value) => value,
        // No header: the token is the payload of the first message.
        None => match input.message().await? {
            Some(request) if !request.payload.is_empty() => request.payload.to_vec(),
            _ => {
                return Err(refuse(
                    metrics,
                    Refusal::MissingCredentials,
                    "Handshake needs credentials: basic `name:token`, a bearer token, or the token as payload",
                ))
            }
        },
    };
    let (grant, token) = handshake_credentials(authenticator, &credentials)
        .map_err(|(reason, message)| refuse(metrics, reason, message))?;
    tracing::debug!(token = %grant.name, "Handshake authenticated");
    Ok(Some(token))
}

/// Why a Handshake failed, and the message for the client.
type HandshakeRefusal = (Refusal, &'static str);

/// Checks Handshake credentials: `Basic base64(name:token)`, `Bearer token`, or a bare token
/// (a payload). Returns the grant and the token to answer with.
fn handshake_credentials(
    authenticator: &Authenticator,
    credentials: &[u8],
) -> Result<(Arc<Grant>, Vec<u8>), HandshakeRefusal> {
    let unknown = (Refusal::UnknownToken, "the credentials are not valid");
    if let Some(encoded) = strip_scheme(credentials, b"basic ") {
        let malformed = (
            Refusal::MalformedCredentials,
            "basic credentials must be base64 of `name:token`",
        );
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| malformed)?;
        let colon = decoded.iter().position(|&b| b == b':').ok_or(malformed)?;
        let (name, token) = (&decoded[..colon], &decoded[colon + 1..]);
        let grant = authenticator.verify(token).ok_or(unknown)?;
        // The name must be the token's: a token is not valid under another name.
        if grant.name.as_bytes() != name {
            return Err(unknown);
        }
        return Ok((grant, token.to_vec()));
    }
    let token = strip_scheme(credentials, b"bearer ").unwrap_or(credentials);
    let grant = authenticator.verify(token).ok_or(unknown)?;
    Ok((grant, token.to_vec()))
}

fn refuse(metrics: &Metrics, reason: Refusal, message: &str) -> Status {
    metrics.auth_failure(Api::Flight.as_str(), reason.as_str());
    Status::from(ApiError::Unauthenticated(message.to_string()))
}

/// `authorization: Bearer <token>`, the Handshake's answer header.
pub(super) fn bearer_header(token: &[u8]) -> ApiResult<MetadataValue<tonic::metadata::Ascii>> {
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(token);
    MetadataValue::try_from(value)
        .map_err(|_| ApiError::Internal("a configured token is not a valid header value".into()))
}
