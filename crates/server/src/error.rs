//! The API error: every failure a request can meet, mapped to a gRPC status and an HTTP
//! response in one place each, and logged there once.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use featherstore_core::{ErrorCode, ERROR_CODE_METADATA};
use http::StatusCode;

use crate::limits::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] featherstore_store::Error),
    #[error(transparent)]
    Domain(#[from] featherstore_core::Error),
    /// Refused, or ended early, by a configured limit.
    #[error("{message}")]
    Rejected { reason: Rejection, message: String },
    #[error("{0}")]
    Internal(String),
    /// No or an unknown token (auth is on).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without the scope or feature set the request needs.
    #[error("{0}")]
    Forbidden(String),
    /// An HTTP path parameter that does not parse (a set name that is not UTF-8).
    #[error(transparent)]
    Path(#[from] PathRejection),
    /// An HTTP query string that does not parse.
    #[error(transparent)]
    Query(#[from] QueryRejection),
}

impl From<arrow::error::ArrowError> for ApiError {
    fn from(e: arrow::error::ArrowError) -> Self {
        featherstore_core::Error::from(e).into()
    }
}

/// Flight's errors met while answering (building a catalog batch): an Arrow error keeps its
/// type; a transport error cannot happen there and would be the server's fault.
impl From<arrow_flight::error::FlightError> for ApiError {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        match e {
            arrow_flight::error::FlightError::Arrow(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Store(e) => e.code(),
            ApiError::Domain(e) => e.code(),
            ApiError::Rejected { reason, .. } => reason.code(),
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            // A route without the parameter its handler takes: a fault of the server.
            ApiError::Path(PathRejection::MissingPathParams(_)) => ErrorCode::Internal,
            ApiError::Path(_) | ApiError::Query(_) => ErrorCode::InvalidArgument,
        }
    }

    pub fn rejected(reason: Rejection, message: impl Into<String>) -> Self {
        ApiError::Rejected {
            reason,
            message: message.into(),
        }
    }

    /// The limit this error reports, if it is a refusal by one.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            ApiError::Rejected { reason, .. } => Some(*reason),
            other => Rejection::of_code(other.code()),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        featherstore_core::Error::invalid(message).into()
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        featherstore_core::Error::TooLarge(message.into()).into()
    }

    /// Logs the error with its request context: faults of the server as errors, bad requests
    /// at debug level (they are the caller's to fix, and counted in the metrics).
    fn log(&self, api: &str) {
        match self.code() {
            ErrorCode::Internal => tracing::error!(api, error = %self, "request failed"),
            code => tracing::debug!(api, code = code.as_str(), error = %self, "request rejected"),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The gRPC status of each code (PROTOCOL.md's error table and docs/api.md's additions).
fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::TooLarge | ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::Forbidden => tonic::Code::PermissionDenied,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

/// The status with the error's message; its code string travels in the
/// [`ERROR_CODE_METADATA`] entry, as gRPC statuses are coarser than the codes.
impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.log("flight");
        let code = e.code();
        let mut status = tonic::Status::new(grpc_code(code), e.to_string());
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            tonic::metadata::MetadataValue::from_static(code.as_str()),
        );
        status
    }
}

/// The HTTP status of each code (PROTOCOL.md's error table and docs/api.md's additions).
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error": {"code": "...", "message": "..."}}` with PROTOCOL.md's status.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log("http");
        let code = self.code();
        let rejection = self.rejection();
        let body =
            serde_json::json!({"error": {"code": code.as_str(), "message": self.to_string()}});
        let mut response = (http_status(code), axum::Json(body)).into_response();
        if code == ErrorCode::Unauthenticated {
            // RFC 6750: a 401 names the scheme the client must use.
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        // For the request metrics and the span, which see only the response: the code is
        // read from here, never guessed back from the HTTP status.
        response.extensions_mut().insert(code);
        if let Some(reason) = rejection {
            response.extensions_mut().insert(reason);
        }
        response
    }
}
