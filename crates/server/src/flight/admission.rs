//! Admission of Flight calls (a tower layer around the service): the per-API concurrency
//! limit and the per-client stream limit, decided before a call starts and held until its
//! response stream ends. A refused call gets its status at once, with no body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::limits::{Guarded, Guards};
use crate::telemetry::metrics::Api;
use crate::telemetry::Metrics;

/// Flight methods that stream results or input: counted against the client's streams.
const STREAMS: [&str; 3] = ["/DoGet", "/DoPut", "/DoExchange"];

#[derive(Clone)]
pub(crate) struct AdmissionLayer {
    pub guards: Arc<Guards>,
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<Request<Body>> for Admission<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let stream = STREAMS.iter().any(|method| path.ends_with(method));
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|addr| addr.ip());
        let permit = match self.layer.guards.admit(Api::Flight, peer, stream) {
            Ok(permit) => permit,
            Err(refused) => {
                if let Some(reason) = refused.rejection() {
                    self.layer.metrics.rejected(Api::Flight, reason);
                }
                let status = tonic::Status::from(refused);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| {
                Body::new(Guarded {
                    body,
                    _guard: permit,
                })
            }))
        })
    }
}
