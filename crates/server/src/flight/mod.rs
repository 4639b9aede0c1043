//! The Arrow Flight API: actions for the registry, DoPut for ingest, DoGet for online and
//! history reads, catalog calls. Handlers translate between Flight and domain calls.

mod actions;
mod admission;
mod auth;
mod catalog;
mod exchange;
mod get;
mod put;
mod sql;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use arrow::buffer::Buffer;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use featherstore_core::ipc::{Decoded, MessageDecoder};
use futures::stream::BoxStream;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use arrow_flight::error::FlightError;

use self::auth::{access_of, Authenticated};
use crate::auth::{Authenticator, Operation};
use crate::error::{ApiError, ApiResult};
use crate::service::{parse_name, AppState};
use crate::telemetry::metrics::Api;
use crate::telemetry::traces;

/// Calls that store: exempt from the request timeout.
const WRITES: [&str; 5] = [
    "do_put",
    "create_feature_set",
    "update_feature_set",
    "delete_feature_set",
    "rebuild_online",
];

pub(crate) use admission::AdmissionLayer;
pub(crate) use get::SchemaMessages;

pub(crate) struct FlightApi {
    state: AppState,
    /// Checks the Handshake's credentials; `None`: auth is off.
    authenticator: Option<Arc<Authenticator>>,
}

/// The tonic service, with the configured message size limit, behind authentication.
pub(crate) fn service(
    state: AppState,
    authenticator: Option<Arc<Authenticator>>,
) -> Authenticated<FlightServiceServer<FlightApi>> {
    let limit = state.max_message_bytes;
    let metrics = state.metrics.clone();
    let server = FlightServiceServer::new(FlightApi {
        state,
        authenticator: authenticator.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(usize::MAX);
    Authenticated::new(server, authenticator, metrics)
}

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

/// An API error inside a stream of Flight data.
fn flight_error(e: ApiError) -> FlightError {
    FlightError::Tonic(Box::new(Status::from(e)))
}

/// A transport error while reading the client's stream; an oversized message is the
/// documented RESOURCE_EXHAUSTED (tonic reports it as OUT_OF_RANGE). A domain error, as it
/// may travel through the store (entity rows of training data).
fn stream_error(status: Status) -> featherstore_core::Error {
    if status.code() == tonic::Code::OutOfRange {
        featherstore_core::Error::TooLarge(format!(
            "message over the size limit: {}",
            status.message()
        ))
    } else {
        featherstore_core::Error::invalid(format!(
            "reading the request stream failed: {}",
            status.message()
        ))
    }
}

/// Refuses a descriptor's feature set outside the token's (a malformed descriptor is left to
/// the handler's error).
fn require_descriptor_set(extensions: &tonic::Extensions, name: Option<&str>) -> ApiResult<()> {
    let access = access_of(extensions)?;
    name.map_or(Ok(()), |name| access.require_set(name))
}

/// The feature set a path descriptor names, for the call's span.
fn descriptor_set(descriptor: &FlightDescriptor) -> Option<String> {
    match descriptor.path.as_slice() {
        [name] => Some(name.clone()),
        _ => None,
    }
}

/// The client's messages, starting with the `first` one already read, each checked and
/// decoded by `featherstore_core::ipc` (which refuses malformed metadata before arrow reads
/// it): the schema, then record batches. Messages without an IPC header are skipped: pyarrow
/// opens DoExchange with one that carries only the descriptor.
fn decoded_messages(
    first: FlightData,
    rest: Streaming<FlightData>,
) -> BoxStream<'static, featherstore_core::Result<Decoded>> {
    let mut decoder = MessageDecoder::new();
    futures::stream::once(async { Ok(first) })
        .chain(rest)
        .filter_map(move |message| {
            let decoded = match message {
                Ok(message) if message.data_header.is_empty() => Ok(None),
                Ok(message) => decoder
                    .decode(&message.data_header, &Buffer::from(message.data_body))
                    .map_err(featherstore_core::Error::from),
                Err(status) => Err(stream_error(status)),
            };
            futures::future::ready(decoded.transpose())
        })
        .boxed()
}

impl FlightApi {
    /// Runs a handler inside the call's span (joined to the caller's trace by the
    /// `traceparent` metadata) and records its metrics; its error becomes the status, logged
    /// inside the span.
    async fn observed<T>(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        method: &'static str,
        feature_set: Option<&str>,
        work: impl Future<Output = ApiResult<T>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let _in_flight = self.state.metrics.in_flight(Api::Flight);
        let span = traces::flight_span(method, metadata);
        if let Some(name) = feature_set {
            span.record("feature_set", name);
        }
        let work = work.instrument(span.clone());
        // Writes are never cut mid-way (a write reported as failed must not be stored): their
        // waits are bounded instead (stream idle timeout, ingest and storage waits).
        let result = if WRITES.contains(&method) {
            work.await
        } else {
            let timeout = self.state.guards.request_timeout;
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_elapsed) => Err(self.state.guards.timed_out()),
            }
        };
        if let Some(reason) = result.as_ref().err().and_then(ApiError::rejection) {
            self.state.metrics.rejected(Api::Flight, reason);
        }
        let code = result.as_ref().err().map_or("ok", |e| e.code().as_str());
        let elapsed = started.elapsed();
        self.state.metrics.observe("flight", method, code, elapsed);
        traces::finish(&span, code, None, elapsed);
        let _entered = span.enter();
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
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let (metadata, _, input) = request.into_parts();
        let token = auth::handshake(
            self.authenticator.as_deref(),
            &self.state.metrics,
            &metadata,
            input,
        )
        .await?;
        // The token comes back as the payload and in the `authorization` header.
        let header = token
            .as_deref()
            .map(auth::bearer_header)
            .transpose()
            .map_err(Status::from)?;
        let answer = HandshakeResponse {
            payload: token.map(bytes::Bytes::from).unwrap_or_default(),
            ..HandshakeResponse::default()
        };
        let mut response = Response::new(
            Box::pin(futures::stream::once(async { Ok(answer) })) as Self::HandshakeStream
        );
        if let Some(header) = header {
            response.metadata_mut().insert("authorization", header);
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let (metadata, extensions, _) = request.into_parts();
        self.observed(&metadata, "list_flights", None, async {
            catalog::list_flights(&self.state, &access_of(&extensions)?).await
        })
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, extensions, descriptor) = request.into_parts();
        if let Some(command) = sql::command(&descriptor.cmd) {
            let method = command.as_ref().map_or("sql_unsupported", sql::method_name);
            return self
                .observed(&metadata, method, None, async {
                    sql::flight_info(&self.state, &access_of(&extensions)?, command?, descriptor)
                        .await
                })
                .await;
        }
        let name = descriptor_set(&descriptor);
        self.observed(&metadata, "get_flight_info", name.as_deref(), async {
            require_descriptor_set(&extensions, name.as_deref())?;
            catalog::flight_info(&self.state, descriptor).await
        })
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
        let (metadata, extensions, descriptor) = request.into_parts();
        if let Some(command) = sql::command(&descriptor.cmd) {
            return self
                .observed(&metadata, "sql_get_schema", None, async {
                    sql::schema(&self.state, &access_of(&extensions)?, command?).await
                })
                .await;
        }
        let name = descriptor_set(&descriptor);
        self.observed(&metadata, "get_schema", name.as_deref(), async {
            require_descriptor_set(&extensions, name.as_deref())?;
            catalog::schema(&self.state, descriptor).await
        })
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let (metadata, extensions, ticket) = request.into_parts();
        if let Some(command) = sql::command(&ticket.ticket) {
            let method = command.as_ref().map_or("sql_unsupported", sql::method_name);
            return self
                .observed(&metadata, method, None, async {
                    sql::do_get(&self.state, &access_of(&extensions)?, command?).await
                })
                .await;
        }
        self.observed(&metadata, "do_get", None, async {
            get::do_get(&self.state, &access_of(&extensions)?, ticket).await
        })
        .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let (metadata, extensions, input) = request.into_parts();
        self.observed(&metadata, "do_put", None, async {
            put::do_put(self.state.clone(), &access_of(&extensions)?, input).await
        })
        .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let (metadata, extensions, input) = request.into_parts();
        self.observed(&metadata, "do_exchange", None, async {
            exchange::do_exchange(&self.state, &access_of(&extensions)?, input).await
        })
        .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let (metadata, extensions, action) = request.into_parts();
        if sql::is_sql_action(&action.r#type) {
            let method = sql::action_name(&action.r#type);
            return self
                .observed(&metadata, method, None, async {
                    sql::do_action(&self.state, &access_of(&extensions)?, action).await
                })
                .await;
        }
        let method = actions::method_name(&action.r#type);
        // create/update_feature_set: the service checks the name (from the spec).
        let name = match method {
            "delete_feature_set" | "list_feature_set_versions" | "rebuild_online" => {
                parse_name(&action.body).ok()
            }
            "get_feature_set" => featherstore_core::action::parse_name_version(&action.body)
                .ok()
                .map(|(name, _)| name),
            _ => None,
        };
        self.observed(&metadata, method, name.as_deref(), async {
            let access = access_of(&extensions)?;
            access.require(Operation::of_action(&action.r#type))?;
            if let Some(name) = &name {
                access.require_set(name)?;
            }
            actions::do_action(&self.state, &access, action).await
        })
        .await
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let mut actions = actions::list();
        actions.extend(sql::actions());
        Ok(Response::new(Box::pin(futures::stream::iter(
            actions.into_iter().map(Ok),
        ))))
    }
}
