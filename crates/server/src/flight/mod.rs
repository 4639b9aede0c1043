//! The Arrow Flight API: actions for the registry, DoPut for ingest, DoGet for online and
//! history reads, catalog calls. Handlers translate between Flight and domain calls.

mod actions;
mod catalog;
mod exchange;
mod get;
mod put;

use std::future::Future;
use std::time::Instant;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use arrow_flight::error::FlightError;

use crate::error::{ApiError, ApiResult};
use crate::service::AppState;

pub struct FlightApi {
    state: AppState,
}

/// The tonic service, with the configured message size limit.
pub fn service(state: AppState) -> FlightServiceServer<FlightApi> {
    let limit = state.max_message_bytes;
    FlightServiceServer::new(FlightApi { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
}

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

/// An API error inside a stream of Flight data.
fn flight_error(e: ApiError) -> FlightError {
    FlightError::Tonic(Box::new(Status::from(e)))
}

/// A transport error while reading the client's stream; an oversized message is the
/// documented RESOURCE_EXHAUSTED (tonic reports it as OUT_OF_RANGE).
fn stream_error(status: Status) -> ApiError {
    if status.code() == tonic::Code::OutOfRange {
        ApiError::too_large(format!("message over the size limit: {}", status.message()))
    } else {
        ApiError::invalid(format!(
            "reading the request stream failed: {}",
            status.message()
        ))
    }
}

/// A failure to decode the client's Flight data.
fn decode_error(e: FlightError) -> ApiError {
    match e {
        FlightError::Tonic(status) => stream_error(*status),
        other => ApiError::invalid(format!("undecodable Arrow Flight data: {other}")),
    }
}

impl FlightApi {
    /// Runs a handler inside a span and records its metrics; its error becomes the status.
    async fn observed<T>(
        &self,
        method: &'static str,
        work: impl Future<Output = ApiResult<T>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.instrument(tracing::info_span!("flight", method)).await;
        let code = result.as_ref().err().map_or("ok", |e| e.code().as_str());
        self.state
            .metrics
            .observe("flight", method, code, started.elapsed());
        result.map(Response::new).map_err(Status::from)
    }
}

#[tonic::async_trait]
impl FlightService for FlightApi {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // No authentication yet: the handshake succeeds with an empty answer.
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(HandshakeResponse::default())
        }))))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.observed("list_flights", catalog::list_flights(&self.state))
            .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        self.observed(
            "get_flight_info",
            catalog::flight_info(&self.state, descriptor),
        )
        .await
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info is not supported: every query completes in get_flight_info",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let descriptor = request.into_inner();
        self.observed("get_schema", catalog::schema(&self.state, descriptor))
            .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner();
        self.observed("do_get", get::do_get(&self.state, ticket))
            .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let input = request.into_inner();
        self.observed("do_put", put::do_put(self.state.clone(), input))
            .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let input = request.into_inner();
        self.observed("do_exchange", exchange::do_exchange(&self.state, input))
            .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        let method = actions::method_name(&action.r#type);
        self.observed(method, actions::do_action(&self.state, action))
            .await
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = actions::list();
        Ok(Response::new(Box::pin(futures::stream::iter(
            actions.into_iter().map(Ok),
        ))))
    }
}
